"""The budget is a hard guarantee (issue 19): whatever the model, budget and representation, the bytes
codegen emits for the compressed model (with the representation recorded on it) are <= the budget;
no training step revives a pruned weight; a failed run hands the model back as it was (issue 12).

The property loop runs many tiny random models with one training batch per step, so it is fast."""

from __future__ import annotations

import copy
import random
import shutil

import pytest
import torch
import torch.nn as nn
from helpers import nm_weight_bytes
from torch.utils.data import DataLoader, TensorDataset

import sparsecomp.compress as compress_mod
from codegen import save_compressed_model, weight_bytes
from codegen.api import EMIT_ATTR, emit_representation
from codegen.errors import CodegenError
from sparsecomp import BudgetError, CompressionError, compress_NN_models, fine_tune_shared_

torch.set_num_threads(1)
TINY = dict(num_epochs=1, max_rounds=1, max_batches_per_epoch=1, sensitivity_batches=1, quant_epochs=1,
            progress=False, sensitivity_sparsities=(0.5, 0.9))
REPRESENTATIONS = ("csr", "dense", "int8", "codebook", "auto", "huffman")


def _random_task(rng: random.Random):
    """A small random model (MLP, 1-D or 2-D CNN, optional BatchNorm) and random data for it."""
    kind = rng.choice(["mlp", "conv1d", "conv2d"])
    n_cls = rng.randint(2, 5)
    if kind == "mlp":
        d, h = rng.randint(4, 40), rng.randint(4, 48)
        layers = [nn.Linear(d, h), nn.ReLU()]
        if rng.random() < 0.5:
            layers += [nn.Linear(h, h), nn.BatchNorm1d(h), nn.ReLU()]
        model, shape = nn.Sequential(*layers, nn.Linear(h, n_cls)), (d,)
    elif kind == "conv1d":
        c, length = rng.randint(2, 12), rng.randint(8, 24)
        model = nn.Sequential(nn.Conv1d(1, c, 3, padding=1), nn.BatchNorm1d(c), nn.ReLU(), nn.Conv1d(c, c, 3),
                              nn.ReLU(), nn.Flatten(), nn.Linear(c * (length - 2), n_cls))
        shape = (1, length)
    else:
        c = rng.randint(2, 10)
        model = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3), nn.ReLU(),
                              nn.Flatten(), nn.Linear(c * 36, n_cls))
        shape = (1, 8, 8)
    g = torch.Generator().manual_seed(rng.randint(0, 10**6))
    x = torch.randn(48, *shape, generator=g)
    y = torch.randint(0, n_cls, (48,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    return model, loader


def test_emitted_bytes_never_exceed_the_budget():
    """Random tiny models x budgets x representations: emitted bytes <= budget, counted by codegen with
    the representation the model carries, and equal to the report; budgets below the reachable floor
    are refused (BudgetError up front, CompressionError when only rejected factorizations could reach
    them) with the model untouched."""
    rng = random.Random(19)
    checked = refused = 0
    for case in range(24):
        model, loader = _random_task(rng)
        rep = REPRESENTATIONS[case % len(REPRESENTATIONS)]
        example = next(iter(loader))[0][:1]
        float_bytes = weight_bytes(model.eval(), example, "csr").total
        budget = max(64, int(float_bytes * rng.uniform(0.04, 0.7)))
        original = copy.deepcopy(model.train())
        try:
            report = compress_NN_models(model, f"{budget}B", loader, loader, val_loader=loader, representation=rep,
                                        layers_factorization=rng.random() < 0.5, seed=case, **TINY)
        except (BudgetError, CompressionError) as exc:  # refused up front, or unreachable once factorizations
            # were rejected (a dense layer shrinks only by factorization): an error, never an oversize model
            assert isinstance(exc, BudgetError) or "cannot fit" in str(exc)
            refused += 1
            assert _same_model(model, original)
            continue
        checked += 1
        emitted = weight_bytes(model.eval(), example, emit_representation(model, None)).total
        assert emitted <= budget, (case, rep, budget, emitted, report.stopped_reason)
        assert emitted == report.final_bytes
        recorded = getattr(model, EMIT_ATTR)["representation"]
        assert recorded == rep or rep == "auto" and recorded in ("int8", "auto", "codebook", "csr", "huffman")
        if report.success:
            assert "OVER" not in report.stopped_reason
    assert checked >= 15, (checked, refused)


def _same_model(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return (
        [type(m) for m in a.modules()] == [type(m) for m in b.modules()]
        and sa.keys() == sb.keys()
        and all(torch.equal(sa[k], sb[k]) for k in sa)
        and [m.training for m in a.modules()] == [m.training for m in b.modules()]
    )


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="needs a C compiler")
@pytest.mark.parametrize("rep", ["auto", "int8", "csr", "huffman"])
def test_default_emission_matches_the_budget_checked_with_nm(rep, tmp_path):
    """save_compressed_model(model, input_data=...) with no representation emits what was budgeted:
    the object's weight symbols (nm) == the report's bytes <= budget."""
    model, loader = _random_task(random.Random(3))
    example = next(iter(loader))[0][:1]
    budget = int(weight_bytes(model.eval(), example, "csr").total * 0.3)
    report = compress_NN_models(model, f"{budget}B", loader, loader, val_loader=loader, representation=rep,
                                layers_factorization=False, **TINY)
    out = tmp_path / rep
    res = save_compressed_model(model.eval(), input_data=example, directory=out)
    assert res.weight_bytes == report.final_bytes <= budget
    assert nm_weight_bytes(out) == report.final_bytes


def test_layer_separation_within_estimate_still_quantizes_and_fits(monkeypatch):
    """The LeNet-5 case: after factorization the quantized estimate fit the budget, nothing else ran and
    the float model was emitted at twice the budget.  Now every path ends quantized as planned and
    measured with codegen, and the SVD rank comes from the budget: the model ends near the budget, not at
    the ~1.6 KB of the rank-4 factorization the accuracy tolerance alone would pick."""
    monkeypatch.setattr(compress_mod, "FACTORIZE_BELOW_DENSITY", 1.0)  # separate even at this mild budget
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 4))
    with torch.no_grad():  # a rank-4 first layer: SVD keeps it exactly
        model[0].weight.copy_(torch.randn(96, 4) @ torch.randn(4, 64) / 8)
    x = torch.randn(64, 64)
    loader = DataLoader(TensorDataset(x, model(x).argmax(1)), batch_size=32)
    budget = 2000  # float after SVD ~ 4 KB, int8 after SVD ~ 1.6 KB
    report = compress_NN_models(model, f"{budget}B", loader, loader, val_loader=loader, representation="auto",
                                factorization_min_params=64, channel_pruning=False,  # the separation alone
                                **{**TINY, "quant_epochs": 0})
    kept = [d for d in report.decompositions if d.accepted]
    assert kept and kept[0].ranks[0] > 4, report
    assert weight_bytes(model, torch.randn(1, 64), "auto").total == report.final_bytes <= budget
    assert report.final_bytes >= 0.9 * budget, report


def test_no_layer_separation_when_pruning_alone_reaches_the_budget_easily():
    """A budget that pruning reaches keeping far more than FACTORIZE_BELOW_DENSITY of the weights: no
    factorization is tried (it would only spend accuracy), and the report says why."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 4))
    x = torch.randn(64, 64)
    loader = DataLoader(TensorDataset(x, model(x).argmax(1)), batch_size=32)
    report = compress_NN_models(model, "3000B", loader, loader, val_loader=loader, representation="int8",
                                factorization_min_params=64, **TINY)
    separation = [d for d in report.decompositions if d.method != "channels"]  # channel pruning: test_channels.py
    assert [d.method for d in separation] == ["none"]
    assert "skipped: pruning alone" in separation[0].reason
    assert isinstance(model[0], nn.Linear) and isinstance(model[2], nn.Linear), "no layer was replaced"
    assert report.final_bytes <= 3000


def _ctx(model, loader):
    return compress_mod._Ctx(model, loader, loader, nn.CrossEntropyLoss(), torch.device("cpu"),
                             compress_mod.top1, "adam", None, False, None, torch.randn(1, 16), "csr")


def test_training_without_masks_keeps_pruned_weights_zero():
    """_train with an empty mask set (as the quantized fine-tuning used to call it) cannot revive zeros."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
    with torch.no_grad():
        model[0].weight[:, ::2] = 0
    zeros = model[0].weight == 0
    loader = DataLoader(TensorDataset(torch.randn(32, 16), torch.randint(0, 3, (32,))), batch_size=8)
    compress_mod._train(_ctx(model, loader), compress_mod._Masks(), 2, 1e-2, desc="t")
    assert bool((model[0].weight[zeros] == 0).all())
    assert bool((model[2].weight != 0).all())  # a layer with no zeros is not frozen


def test_fine_tune_shared_keeps_zeros_of_layers_it_does_not_share():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
    with torch.no_grad():
        model[0].weight[:, 1::2] = 0
    zeros = model[0].weight == 0
    before = model[0].weight.detach().clone()
    loader = DataLoader(TensorDataset(torch.randn(32, 16), torch.randint(0, 3, (32,))), batch_size=8)
    fine_tune_shared_(model, loader, bits={"2": 2}, epochs=2, lr=1e-2, train_other=True)
    assert bool((model[0].weight[zeros] == 0).all())
    assert not torch.equal(model[0].weight, before)  # it did train the unshared layer


class _Boom(Exception):
    pass


class _FailingLoader:
    """Yields ``good`` batches, then raises (a user's DataLoader failing mid-run)."""

    def __init__(self, x, y, good, exc):
        self.x, self.y, self.good, self.exc, self.calls = x, y, good, exc, 0

    def __len__(self):
        return 4

    def __iter__(self):
        for i in range(4):
            self.calls += 1
            if self.calls > self.good:
                raise self.exc
            yield self.x[i * 8:(i + 1) * 8], self.y[i * 8:(i + 1) * 8]


@pytest.mark.parametrize("exc", [_Boom("loader broke"), KeyboardInterrupt()])
@pytest.mark.parametrize("rep", ["csr", "auto"])
def test_any_exception_restores_the_model(exc, rep):
    """KeyboardInterrupt or an error from the user's loader mid-run: the model is the one given (structure,
    BatchNorm not folded, weights, train/eval mode, parameter objects) and the exception propagates."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Linear(56, 3))
    model.eval()
    model[0].train()
    original = copy.deepcopy(model)
    params = [id(p) for p in model.parameters()]
    x, y = torch.randn(32, 1, 16), torch.randint(0, 3, (32,))
    val = DataLoader(TensorDataset(x, y), batch_size=8)
    raised = 0
    for good in (1, 2, 3, 5, 9):  # fail at different stages (setup, analysis, training)
        loader = _FailingLoader(x, y, good, exc)
        try:
            compress_NN_models(model, "300B", loader, val, val_loader=val, representation=rep,
                               **{**TINY, "max_batches_per_epoch": None, "num_epochs": 2})
        except type(exc):
            raised += 1
        else:
            continue
        assert _same_model(model, original), good
        assert [id(p) for p in model.parameters()] == params
        assert not hasattr(model, EMIT_ATTR)
    assert raised >= 2


def test_out_of_range_label_is_a_clear_error_and_restores():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    original = copy.deepcopy(model)
    y = torch.randint(0, 3, (32,))
    y[5] = 7
    loader = DataLoader(TensorDataset(torch.randn(32, 8), y), batch_size=8)
    with pytest.raises(CompressionError, match=r"labels lie in \[0, 7\].*3 outputs.*\[0, 2\]"):
        compress_NN_models(model, "200B", loader, loader, val_loader=loader, **TINY)
    assert _same_model(model, original)


def test_explicit_representation_that_does_not_fit_the_weights_is_an_error(tmp_path):
    model = nn.Sequential(nn.Linear(8, 4))
    with pytest.raises(CodegenError, match="int8"):
        save_compressed_model(model, "int8", input_data=torch.randn(1, 8), directory=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_auto_is_exactly_the_run_of_the_representation_it_chose():
    """auto's full run is the very call with the chosen representation (same seed, same analysis), so
    its accuracy is that representation's: auto can only lose to another one through the probe ranking."""
    model, loader = _random_task(random.Random(5))
    example = next(iter(loader))[0][:1]
    budget = int(weight_bytes(model.eval(), example, "csr").total * 0.2)
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    kw = dict(val_loader=loader, layers_factorization=False, **{**TINY, "max_rounds": 2})
    ra = compress_NN_models(a, f"{budget}B", loader, loader, representation="auto", **kw)
    chosen = next(p.representation for p in ra.probes if p.representation == ra.representation
                  or (p.representation == "per-layer" and ra.representation == "auto"))
    rb = compress_NN_models(b, f"{budget}B", loader, loader, representation=chosen, **kw)
    assert ra.val_accuracy_after == rb.val_accuracy_after and ra.final_bytes == rb.final_bytes
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("accs, n_val, expected", [
    ({"int8": 0.90, "per-layer": 0.905, "codebook": 0.95, "csr": 0.50, "huffman": 0.951}, 2000, "codebook"),
    ({"int8": 0.90, "per-layer": 0.902, "codebook": 0.89, "csr": 0.50, "huffman": 0.89}, 2000, "int8"),  # noise
    ({"int8": None, "per-layer": 0.80, "codebook": 0.85, "csr": 0.84, "huffman": 0.85}, 100000, "codebook"),
    ({"int8": 0.90, "per-layer": 0.90, "codebook": 0.92, "csr": 0.50, "huffman": 0.96}, 2000, "huffman"),
])
@pytest.mark.parametrize("prefer_speed", [False, True])
def test_auto_picks_the_best_probe_within_its_noise(accs, n_val, expected, prefer_speed, monkeypatch):
    """Of the probes within one standard error of the best, the first in preference order is the first
    finalist (with finalists=1 the only full run; tests/test_auto_finalists.py has the others); the
    Huffman-coded codebook (slower kernels) is probed after the others, last in preference, and not with
    prefer_speed."""
    from sparsecomp.report import CompressionReport

    ran = []

    def fake(model, cfg, data, t0):
        ran.append((cfg.representation, cfg.max_rounds))
        acc = accs[cfg.representation]
        if acc is None:
            raise BudgetError("too small", 10**6)
        return CompressionReport(target_bytes=cfg.budget, initial_bytes=10**6, final_bytes=cfg.budget - 1,
                                 representation=cfg.codegen_representation, success=True,
                                 stopped_reason="max_rounds=1 reached", val_accuracy_after=acc)

    monkeypatch.setattr(compress_mod, "_compress", fake)
    monkeypatch.setattr(compress_mod, "_num_samples", lambda loader: n_val)
    model, loader = _random_task(random.Random(1))
    report = compress_NN_models(model, "100B", loader, loader, val_loader=loader, prefer_speed=prefer_speed,
                                finalists=1, **TINY)
    probed = ["int8", "per-layer", "codebook", "csr"] + ([] if prefer_speed else ["huffman"])
    if prefer_speed and expected == "huffman":
        expected = "codebook"
    assert ran[-1] == (expected, 1) and [r for r, _ in ran[:-1]] == probed
    assert [p.val_accuracy for p in report.probes] == [accs[r] for r in probed]


def test_auto_does_not_probe_huffman_when_the_codebook_model_fits_unpruned(monkeypatch):
    """Huffman coding buys bytes only where pruning would otherwise remove weights: when the codebook
    model fits without pruning it cannot be more accurate, so it is not probed."""
    from sparsecomp.report import CompressionReport

    ran = []

    def fake(model, cfg, data, t0):
        ran.append(cfg.representation)
        return CompressionReport(target_bytes=cfg.budget, initial_bytes=10**6, final_bytes=cfg.budget - 1,
                                 representation=cfg.codegen_representation, success=True,
                                 stopped_reason="model within budget once quantized; no pruning needed",
                                 val_accuracy_after=0.9)

    monkeypatch.setattr(compress_mod, "_compress", fake)
    model, loader = _random_task(random.Random(1))
    compress_NN_models(model, "100B", loader, loader, val_loader=loader, **TINY)
    assert "huffman" not in ran


def test_default_epochs_scale_with_the_data():
    from sparsecomp.compress import default_epochs

    def loader(n_batches):
        return DataLoader(TensorDataset(torch.zeros(n_batches * 4, 1), torch.zeros(n_batches * 4)), batch_size=4)

    assert default_epochs(loader(10)) == 6  # small data: more passes (capped)
    assert default_epochs(loader(500)) == 3  # 1,500 steps
    assert default_epochs(loader(5000)) == 2  # large data: at least two passes
    assert default_epochs(loader(5000), max_batches=300) == 5


def test_distillation_default_leaves_regression_losses_alone():
    """KD (on by default) applies to class logits with integer labels; a regression target trains on
    the user's criterion only."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    ctx = _ctx(model, None)
    ctx.teacher, ctx.distill_alpha = copy.deepcopy(model), 0.5
    ctx.criterion = nn.MSELoss()
    x, y = torch.randn(4, 8), torch.randn(4, 2)
    out = model(x) + 1.0
    assert torch.equal(ctx.loss(out, x, y), nn.MSELoss()(out, y))
    ctx.criterion = nn.CrossEntropyLoss()
    labels = torch.tensor([0, 1, 1, 0])
    assert not torch.equal(ctx.loss(out, x, labels), nn.CrossEntropyLoss()(out, labels))
