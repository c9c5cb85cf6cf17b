"""auto's dominance (issue 19 item 3): when probes lie within their noise of the best, the finalists run in
full, each exactly the call with its representation on a copy, and the model ends as the most accurate one
(by validation accuracy; ties: preference order), within a bound on the extra effort.

The selection rule runs with monkeypatched probes and full runs (so it can fail on any rule change); one real
small run checks that the model and the loaders' shuffling generator end exactly as the winning call alone
leaves them."""

from __future__ import annotations

import copy
import random
import types

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

import sparsecomp.compress as compress_mod
from codegen import weight_bytes
from sparsecomp import BudgetError, compress_NN_models
from sparsecomp.report import CompressionReport, ProbeRecord

torch.set_num_threads(1)
TINY = dict(num_epochs=1, max_rounds=1, max_batches_per_epoch=1, sensitivity_batches=1, quant_epochs=1,
            progress=False, sensitivity_sparsities=(0.5, 0.9))
MARK = {"int8": 1.0, "per-layer": 2.0, "codebook": 3.0, "csr": 4.0, "huffman": 5.0}
# digits at 15x (docs/compressor.md): the probes tie int8/codebook/huffman, per-layer probes 1.1 points lower
# (one standard error at 269 validation samples) and ends best in full
DIGITS_PROBES = {"int8": 0.9591, "per-layer": 0.9480, "codebook": 0.9591, "csr": 0.7175, "huffman": 0.9591}
DIGITS_FULL = {"int8": 0.9703, "per-layer": 0.9814, "codebook": 0.9777, "csr": 0.9182, "huffman": 0.9777}


def _fake_run(monkeypatch, probes: dict, full: dict, n_val: int, seconds: float = 0.0, baseline: float | None = None):
    """Probes report ``probes``; a full run (on its model) sets the first weight to the representation's
    MARK and reports ``full`` (None: BudgetError).  Returns the list of full runs made.  With ``seconds``, the
    compressor reads a fake clock that each full run advances by ``seconds`` (no wall-clock dependence)."""
    ran: list[str] = []
    clock = [1000.0]
    if seconds:
        monkeypatch.setattr(compress_mod, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))

    def probe(model, pcfg, data):
        if baseline is not None:  # what a real probe records: the model's validation accuracy
            pcfg.cache.setdefault("val_baseline", baseline)
        return ProbeRecord(pcfg.representation, probes[pcfg.representation], pcfg.budget - 5, 1.0, "")

    def full_run(model, cfg, data, t0):
        ran.append(cfg.representation)
        clock[0] += seconds
        if full[cfg.representation] is None:
            raise BudgetError("not in full", 10**6)
        with torch.no_grad():
            next(model.parameters()).fill_(MARK[cfg.representation])
        model.extra = nn.Linear(1, 1)  # a layer the run added: the model ends with it too
        return CompressionReport(target_bytes=cfg.budget, initial_bytes=10**6, final_bytes=cfg.budget - 1,
                                 representation=cfg.codegen_representation, success=True,
                                 stopped_reason="criterion met", val_accuracy_after=full[cfg.representation])

    monkeypatch.setattr(compress_mod, "_probe", probe)
    monkeypatch.setattr(compress_mod, "_compress", full_run)
    monkeypatch.setattr(compress_mod, "_num_samples", lambda loader: n_val)
    return ran


def _task():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
    loader = DataLoader(TensorDataset(torch.randn(32, 16), torch.randint(0, 3, (32,))), batch_size=8)
    return model, loader


def test_digits_case_runs_the_close_probes_in_full_and_keeps_the_most_accurate(monkeypatch):
    ran = _fake_run(monkeypatch, DIGITS_PROBES, DIGITS_FULL, n_val=269)
    model, loader = _task()
    params = [id(p) for p in model.parameters()]
    first = model[0]
    report = compress_NN_models(model, "500B", loader, loader, val_loader=loader, **TINY)
    # the probe choice first, then the others within 2 standard errors, best probe first (ties: preference)
    assert ran == ["int8", "codebook", "huffman", "per-layer"]
    assert report.representation == "auto" and report.val_accuracy_after == DIGITS_FULL["per-layer"]
    assert [(p.representation, p.val_accuracy) for p in report.finalists] == [(r, DIGITS_FULL[r]) for r in ran]
    assert [p.representation for p in report.probes] == list(DIGITS_PROBES)
    # the model is the winning run's, the caller's parameter and submodule objects still in it
    assert torch.all(model[0].weight == MARK["per-layer"]) and isinstance(model.extra, nn.Linear)
    assert model[0] is first and [id(p) for p in model.parameters()][:len(params)] == params
    assert "auto finalists" in str(report) and "per-layer" in str(report)


@pytest.mark.parametrize("probes, full, n_val, expected_runs, winner", [
    # probes far apart at 20,000 validation samples: the probe choice alone runs
    ({"int8": 0.90, "per-layer": 0.95, "codebook": 0.80, "csr": 0.5, "huffman": 0.81},
     {"int8": 0.99, "per-layer": 0.96, "codebook": 0.99, "csr": 0.99, "huffman": 0.99}, 20000,
     ["per-layer"], "per-layer"),
    # equal full accuracy: the first in preference order wins, whatever ran first (int8 probed 1.1 standard
    # errors below the best: not the probe choice, but a finalist)
    ({"int8": 0.90, "per-layer": 0.91, "codebook": 0.91, "csr": 0.5, "huffman": 0.90},
     {"int8": 0.95, "per-layer": 0.94, "codebook": 0.95, "csr": 0.5, "huffman": 0.95}, 1000,
     ["per-layer", "codebook", "int8", "huffman"], "int8"),
    # a finalist that cannot reach the budget in full drops out
    ({"int8": 0.90, "per-layer": 0.90, "codebook": 0.89, "csr": 0.5, "huffman": 0.70},
     {"int8": 0.93, "per-layer": None, "codebook": 0.92, "csr": 0.5, "huffman": 0.99}, 1000,
     ["int8", "per-layer", "codebook"], "int8"),
    # csr is a finalist like any other when its probe is close
    ({"int8": 0.80, "per-layer": 0.70, "codebook": 0.79, "csr": 0.81, "huffman": 0.60},
     {"int8": 0.85, "per-layer": 0.5, "codebook": 0.84, "csr": 0.86, "huffman": 0.5}, 1000,
     ["int8", "csr", "codebook"], "csr"),
])
def test_finalist_selection_rule(probes, full, n_val, expected_runs, winner, monkeypatch):
    ran = _fake_run(monkeypatch, probes, full, n_val)
    model, loader = _task()
    report = compress_NN_models(model, "500B", loader, loader, val_loader=loader, **TINY)
    assert ran == expected_runs
    assert torch.all(model[0].weight == MARK[winner])
    assert report.val_accuracy_after == full[winner]
    dropped = [p for p in report.finalists if p.val_accuracy is None]
    assert all("not possible" in p.note for p in dropped) and len(dropped) == sum(full[r] is None for r in ran)


# the kws2d DS-CNN at 15x (benchmarks/auto_vs_single.py): after channel pruning, one partial epoch leaves every
# probe far below the model's 89 %; the single calls end at 87-92.5 % in an order the probes do not show
KWS_PROBES = {"int8": 0.698, "per-layer": 0.735, "codebook": 0.427, "csr": 0.582, "huffman": 0.107}
KWS_FULL = {"int8": 0.895, "per-layer": 0.9167, "codebook": 0.925, "csr": 0.8717, "huffman": 0.9167}


@pytest.mark.parametrize("baseline, expected_runs, winner", [
    (0.89, ["per-layer", "int8", "csr", "codebook"], "codebook"),  # unsettled: every probe, up to MAX_FINALISTS
    (0.76, ["per-layer"], "per-layer"),  # within UNSETTLED_PROBES of the model: the 2-standard-error rule
    (None, ["per-layer"], "per-layer"),  # no baseline recorded: the 2-standard-error rule
])  # fmt: skip
def test_unsettled_probes_make_every_probe_a_finalist(baseline, expected_runs, winner, monkeypatch):
    ran = _fake_run(monkeypatch, KWS_PROBES, KWS_FULL, n_val=600, baseline=baseline)
    model, loader = _task()
    report = compress_NN_models(model, "500B", loader, loader, val_loader=loader, **TINY)
    assert ran == expected_runs and report.val_accuracy_after == KWS_FULL[winner]
    assert torch.all(model[0].weight == MARK[winner])


def test_extra_finalists_are_bounded_by_count_time_and_deadline(monkeypatch):
    model, loader = _task()
    ran = _fake_run(monkeypatch, DIGITS_PROBES, DIGITS_FULL, n_val=269, seconds=0.05)
    report = compress_NN_models(copy.deepcopy(model), "500B", loader, loader, val_loader=loader, finalists=2, **TINY)
    assert ran == ["int8", "codebook"] and report.val_accuracy_after == DIGITS_FULL["codebook"]
    assert [p.note for p in report.finalists[2:]] == ["not run: finalists=2"] * 2

    ran.clear()  # by default the extra runs must fit FINALIST_SECONDS, estimated by the first run's time
    monkeypatch.setattr(compress_mod, "FINALIST_SECONDS", 0.12)
    report = compress_NN_models(copy.deepcopy(model), "500B", loader, loader, val_loader=loader, **TINY)
    assert ran == ["int8", "codebook", "huffman"]
    assert "not run: estimated" in report.finalists[3].note and report.val_accuracy_after == DIGITS_FULL["codebook"]

    ran.clear()  # an explicit count overrides FINALIST_SECONDS, not the time_limit
    report = compress_NN_models(copy.deepcopy(model), "500B", loader, loader, val_loader=loader, finalists=4,
                                **TINY)
    assert ran == ["int8", "codebook", "huffman", "per-layer"]
    ran.clear()
    report = compress_NN_models(copy.deepcopy(model), "500B", loader, loader, val_loader=loader, finalists=4,
                                time_limit=0.08, **TINY)
    assert ran == ["int8"] and all("time_limit" in p.note for p in report.finalists[1:])
    with pytest.raises(ValueError, match="finalists"):
        compress_NN_models(model, "500B", loader, loader, val_loader=loader, finalists=0, **TINY)


def _shuffled_task(seed: int):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    c = rng.randint(4, 8)
    model = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c, 3),
                          nn.ReLU(), nn.Flatten(), nn.Linear(c * 36, 4))
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 4, (64,), generator=g)
    ds = TensorDataset(x, y)
    return model, ds


def test_real_auto_ends_as_the_winning_call_alone_with_the_same_data_order():
    """A real small run with a shuffling loader: several finalists run; the model, the report and the loader's
    generator end exactly as the call with the winning representation alone leaves them."""
    model, ds = _shuffled_task(7)
    example = ds[0][0][None]
    budget = int(weight_bytes(copy.deepcopy(model).eval(), example, "csr").total * 0.25)
    val = DataLoader(ds, batch_size=16)

    def train_loader():
        return DataLoader(ds, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(3))

    kw = dict(val_loader=val, layers_factorization=False, **{**TINY, "max_batches_per_epoch": 2})
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    la, lb = train_loader(), train_loader()
    ra = compress_NN_models(a, f"{budget}B", la, val, **kw)
    done = [p for p in ra.finalists if p.val_accuracy is not None]
    assert len(done) >= 2, str(ra)
    best = max(p.val_accuracy for p in done)
    winner = next(p.representation for p in done if p.val_accuracy == best)
    assert ra.val_accuracy_after == best
    rb = compress_NN_models(b, f"{budget}B", lb, val, representation=winner, **kw)
    assert (ra.val_accuracy_after, ra.test_accuracy_after, ra.final_bytes) == (
        rb.val_accuracy_after, rb.test_accuracy_after, rb.final_bytes)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [type(m) for m in a.modules()] == [type(m) for m in b.modules()]
    assert torch.equal(la.generator.get_state(), lb.generator.get_state())
    assert weight_bytes(a.eval(), example, ra.representation).total == ra.final_bytes <= budget
