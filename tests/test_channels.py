"""Structured channel pruning (issue 19): the torch.fx dependency analysis (which channel groups may lose
channels, and which may not), the shape surgery (a pruned model computes exactly what the original did when
the removed channels contribute nothing; it emits through codegen and matches PyTorch through gcc), and the
compressor stage (triggered by the bytes, within budget, reported, undone on interruption)."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
import torch.nn as nn
from helpers import emit_and_verify, nm_weight_bytes
from torch.utils.data import DataLoader, TensorDataset

import sparsecomp.compress as compress_mod
from codegen import save_compressed_model, weight_bytes
from codegen.quantize import quantize_int8_
from sparsecomp import compress_NN_models
from sparsecomp.channels import channel_groups, channel_scores, keep_top, prune_channels_
from sparsecomp.folding import fold_batchnorm_

torch.set_num_threads(1)
needs_cc = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="needs a C compiler")


def _ds(width: int = 8, bn: bool = True) -> nn.Sequential:
    """A tiny DS-CNN: conv, one depthwise-separable block, global pool, classifier."""
    def norm(c):
        return [nn.BatchNorm2d(c)] if bn else []

    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=not bn), *norm(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, groups=width, bias=not bn), *norm(width), nn.ReLU6(),
        nn.Conv2d(width, 2 * width, 1, bias=not bn), *norm(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 3),
    )


def _randomize_bn_(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


X = torch.randn(1, 1, 8, 8)


def test_ds_cnn_groups_follow_bn_activation_depthwise_and_global_pool():
    groups, why = channel_groups(_ds(), X)
    got = {g.producer: (g.channels, g.followers, g.consumers) for g in groups}
    assert got == {"0": (8, ["1", "3", "4"], ["6"]), "6": (16, ["7"], ["11"])}
    assert why == {"11": "its output is the model output"}
    folded = _ds()
    fold_batchnorm_(folded)  # the compressor's quantized path: BatchNorm folded into the convs
    groups, _ = channel_groups(folded, X)
    assert {g.producer: (g.followers, g.consumers) for g in groups} == {"0": (["3"], ["6"]), "6": ([], ["11"])}


def test_mlp_groups_and_batchnorm1d():
    mlp = nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Dropout(0.1), nn.Linear(12, 5),
                        nn.Tanh(), nn.Linear(5, 2))
    groups, why = channel_groups(mlp, torch.randn(2, 6))
    assert [(g.producer, g.followers, g.consumers) for g in groups] == [("0", ["1"], ["4"]), ("4", [], ["6"])]
    assert set(why) == {"6"}


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.body = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 2, 1)
        self.tail = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        return self.tail(self.head(x + self.body(x)))


class _Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 3, 3, padding=1)
        self.b = nn.Conv2d(1, 3, 3, padding=1)
        self.c = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        return self.c(torch.cat([self.a(x), self.b(x)], dim=1))


class _View(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 36, 2)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.fc(y.reshape(-1, 4 * 36))


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.c = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.c(self.b(self.b(self.a(x))))


def test_residual_add_concat_view_and_shared_modules_are_unprunable():
    groups, why = channel_groups(_Residual(), X)
    assert [g.producer for g in groups] == ["head"]  # only head -> tail is a plain chain
    assert "add" in why["stem"] and "add" in why["body"]
    groups, why = channel_groups(_Concat(), X)
    assert groups == [] and "cat" in why["a"] and "cat" in why["b"]
    groups, why = channel_groups(_View(), X)
    assert groups == [] and "reshape" in why["conv"]
    groups, why = channel_groups(_Twice(), X)
    assert groups == [] and "more than once" in why["a"] and "more than once" in why["b"]


def test_grouped_conv_spatial_flatten_and_untraceable_models_are_unprunable():
    grouped = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(4, 2, 1))
    groups, why = channel_groups(grouped, X)
    assert groups == [] and "Conv2d" in why["0"]  # a grouped conv is neither per-channel nor a producer
    assert set(why) == {"0", "3"}
    flat = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2))
    groups, why = channel_groups(flat, X)
    assert groups == [] and "flattens" in why["0"]

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x

    groups, why = channel_groups(Branchy(), X)
    assert groups == [] and "torch.fx cannot trace" in why["*"]


@pytest.mark.parametrize("folded", [False, True])
def test_surgery_keeps_the_function_when_removed_channels_contribute_nothing(folded):
    """Zero the consumers' weights on some channels: removing exactly those channels (from the producer,
    its BatchNorm, the depthwise conv and the consumer) gives the same outputs, and the scores rank them
    last."""
    model = _randomize_bn_(_ds())
    if folded:
        fold_batchnorm_(model)
    groups, _ = channel_groups(model, X)
    drop = {"0": [1, 4, 6], "6": [0, 3, 9, 10, 15]}
    with torch.no_grad():
        model[6].weight[:, drop["0"]] = 0
        model[11].weight[:, drop["6"]] = 0
    x = torch.randn(5, 1, 8, 8)
    loader = DataLoader(TensorDataset(x, torch.zeros(5, dtype=torch.long)), batch_size=5)
    scores = channel_scores(model, groups, loader)
    for p, idx in drop.items():  # nothing reaches the consumers on those channels: they score 0, the lowest
        assert float(scores[p][idx].abs().max()) == 0.0 and float(scores[p].min()) >= 0.0
    assert keep_top(torch.tensor([3.0, 0.0, 5.0, 1.0]), 2) == [0, 2]
    keep = {g.producer: [c for c in range(g.channels) if c not in drop[g.producer]] for g in groups}
    ref = model(x)
    before = {n: p for n, p in model.named_parameters()}
    changed = prune_channels_(model, keep, groups)
    assert changed == [("0", 8, 5), ("6", 16, 11)]
    assert model[0].out_channels == model[3].groups == model[3].in_channels == model[6].in_channels == 5
    assert model[6].out_channels == model[11].in_features == 11
    if not folded:
        assert model[1].num_features == model[4].num_features == 5 and model[7].running_var.shape == (11,)
    assert all(p.dtype == before[n].dtype and p.requires_grad for n, p in model.named_parameters())
    torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-6)


def test_prune_channels_rejects_bad_requests():
    model = _ds()
    groups, _ = channel_groups(model, X)
    with pytest.raises(ValueError, match="not the producer"):
        prune_channels_(model, {"11": [0]}, groups)
    with pytest.raises(ValueError, match="non-empty subset"):
        prune_channels_(model, {"0": []}, groups)
    with pytest.raises(ValueError, match="non-empty subset"):
        prune_channels_(model, {"0": [8]}, groups)
    with pytest.raises(ValueError, match="an example input"):
        prune_channels_(model, {"0": [1]})
    assert prune_channels_(model, {"0": [1, 2]}, example=X) == [("0", 8, 2)] and model[3].groups == 2


@needs_cc
@pytest.mark.parametrize("rep", ["csr", "int8"])
def test_channel_pruned_model_emits_and_matches_pytorch(rep, tmp_path):
    model = _randomize_bn_(_ds())
    groups, _ = channel_groups(model, X)
    prune_channels_(model, {"0": [0, 2, 3, 7], "6": list(range(0, 16, 3))}, groups)
    if rep == "int8":
        fold_batchnorm_(model)
        quantize_int8_(model)
    emit_and_verify(model, (1, 1, 8, 8), rep, tmp_path)


def _ds_task(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).long() + (x[:, 0, :, :4].mean((1, 2)) > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=32)


TINY = dict(num_epochs=1, max_rounds=1, sensitivity_batches=1, quant_epochs=1, progress=False,
            sensitivity_sparsities=(0.5, 0.9))


@needs_cc
@pytest.mark.parametrize("rep", ["per-layer", "csr"])
def test_compressor_removes_channels_when_the_budget_leaves_few_weights_per_row(rep, tmp_path):
    torch.manual_seed(0)
    model = _ds(width=16)
    loader = _ds_task()
    budget = int(weight_bytes(model.eval(), X, "csr").total / 8)
    report = compress_NN_models(model, f"{budget}B", loader, loader, val_loader=loader, representation=rep, **TINY)
    rec = [d for d in report.decompositions if d.method == "channels"]
    assert rec and all(d.accepted for d in rec), report
    assert rec[0].layer == "*" and "removed" in rec[0].reason and "11 not prunable: its output is the model output" \
        in rec[0].reason
    assert {d.layer for d in rec[1:]} <= {"0", "6"}
    assert model[0].out_channels == rec[1].ranks[0] < 16
    assert f"0: 16 -> {rec[1].ranks[0]} output channels (" in str(report)
    assert report.initial_bytes == weight_bytes(_ds(width=16).eval(), X, "csr").total  # the given model's
    out = tmp_path / "emit"
    res = save_compressed_model(model.eval(), input_data=X, directory=out)
    assert res.weight_bytes == report.final_bytes <= budget
    assert nm_weight_bytes(out) == report.final_bytes


def test_no_channel_pruning_when_pruning_keeps_enough_weights_per_row_or_when_disabled():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))
    x = torch.randn(96, 64)
    mlp_loader = DataLoader(TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()), batch_size=32)
    budget = int(weight_bytes(mlp.eval(), x[:1], "csr").total / 3)
    report = compress_NN_models(mlp, f"{budget}B", mlp_loader, mlp_loader, val_loader=mlp_loader,
                                representation="csr", **TINY)
    rec = [d for d in report.decompositions if d.method == "channels"]
    assert len(rec) == 1 and not rec[0].accepted and "weights per output row" in rec[0].reason, report
    assert "*: channel pruning skipped: pruning alone keeps" in str(report)
    assert mlp[0].out_features == 64
    model = _ds(width=16)
    loader = _ds_task()
    budget = int(weight_bytes(model.eval(), X, "csr").total / 4)  # would remove channels (csr at 6x does)
    report = compress_NN_models(model, f"{budget}B", loader, loader, val_loader=loader,
                                representation="csr", channel_pruning=False, **TINY)
    assert not [d for d in report.decompositions if d.method == "channels"] and model[0].out_channels == 16


def test_an_interrupted_call_gives_back_the_model_with_all_its_channels(monkeypatch):
    torch.manual_seed(0)
    model = _ds(width=16)
    original = copy.deepcopy(model)
    loader = _ds_task()
    budget = int(weight_bytes(model.eval(), X, "csr").total / 8)

    def interrupted(*a, **k):
        assert model[0].out_channels < 16  # the channels are gone when the interruption comes
        raise KeyboardInterrupt

    monkeypatch.setattr(compress_mod, "sensitivity_analysis", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compress_NN_models(model, f"{budget}B", loader, loader, val_loader=loader, representation="int8", **TINY)
    assert [type(m) for m in model.modules()] == [type(m) for m in original.modules()]
    sa, sb = model.state_dict(), original.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.board
def test_channel_pruned_compressed_model_runs_on_the_emulated_board(tmp_path):
    """The compressor's channel-pruned, pruned and quantized DS-CNN (per-layer: int8 / codebook weights) on
    the emulated Cortex-M4F gives PyTorch's outputs; its weight bytes there are the report's."""
    from test_board import require_board

    from codegen import board as cboard

    require_board()
    torch.manual_seed(0)
    model = _ds(width=16)
    loader = _ds_task()
    budget = int(weight_bytes(model.eval(), X, "csr").total / 8)
    report = compress_NN_models(model, f"{budget}B", loader, loader, val_loader=loader, representation="per-layer",
                                **TINY)
    assert model[0].out_channels < 16, report
    x = next(iter(loader))[0][:1]
    d = tmp_path / "model"
    res = save_compressed_model(model.eval(), input_data=x, directory=d)
    with torch.no_grad():
        expected = model(x).numpy().reshape(-1)
    result = cboard.run(d, "m4")
    assert result.passed, result.stdout + result.stderr
    torch.testing.assert_close(torch.from_numpy(result.outputs), torch.from_numpy(expected), rtol=0,
                               atol=res.report["test"]["tolerance"])
    assert cboard.measure(d).weight_bytes_nm == report.final_bytes <= budget
