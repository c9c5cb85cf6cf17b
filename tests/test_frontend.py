"""The front ends: torch.export as the fallback of torch.fx (codegen/export_frontend.py), and the
driver's one-pass error for everything a model uses that cannot be emitted (codegen/lower.py)."""

import inspect
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import emit_and_verify, randomize_batchnorm
from models import DataDependent

from codegen import UnsupportedConfigError, UnsupportedOpError, UntraceableModelError, save_compressed_model
from codegen.api import build_graph
from codegen.export_frontend import export_graph
from codegen.trace import prepare_model, trace


class Conv2dSame(nn.Conv2d):
    """timm's Conv2dSame: TensorFlow 'SAME' padding computed from the input size in Python."""

    def forward(self, x):
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        ph = max((math.ceil(ih / self.stride[0]) - 1) * self.stride[0] + (kh - 1) * self.dilation[0] + 1 - ih, 0)
        pw = max((math.ceil(iw / self.stride[1]) - 1) * self.stride[1] + (kw - 1) * self.dilation[1] + 1 - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class BatchNormAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d: forward calls F.batch_norm with its own parameters, then the activation."""

    def forward(self, x):
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return F.relu6(x)


class ShapeDependent(nn.Module):
    """Untraceable by torch.fx twice over: SAME padding arithmetic and an `if` on a shape."""

    def __init__(self):
        super().__init__()
        self.stem = Conv2dSame(3, 8, 3, stride=2, bias=False)
        self.bn1 = BatchNormAct(8)
        self.dw = Conv2dSame(8, 8, 5, stride=2, groups=8)
        self.bn2 = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 12, 1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = self.bn1(self.stem(x))
        y = F.relu(self.bn2(self.dw(x)))
        x = self.pw(y + F.max_pool2d(x, 2, 2, ceil_mode=True))
        if x.shape[-1] > 2:  # shape-dependent control flow
            x = self.pool(x)
        return self.fc(x.mean((2, 3)))


def test_fx_cannot_trace_the_shape_dependent_model():
    with pytest.raises(UntraceableModelError):
        trace(prepare_model(ShapeDependent()), torch.randn(1, 3, 15, 13))


def test_untraceable_model_emits_through_torch_export(tmp_path):
    model = randomize_batchnorm(ShapeDependent().eval())
    res = emit_and_verify(model, (1, 3, 15, 13), "dense", tmp_path)
    assert res.max_rel_error < 1e-4
    layers = {ly["name"]: ly for ly in res.report["layers"]}
    # the parameter ops became the standard layers, named after the module that made them; the
    # BatchNorms (functional and module) are folded into the convs before them
    assert {"stem", "dw", "pw", "fc"} <= set(layers), sorted(layers)
    assert "BatchNorm folded" in layers["stem"]["torch"] and "BatchNorm folded" in layers["dw"]["torch"]


def test_export_front_end_gives_the_fx_front_end_ir():
    """A traceable model through both front ends: the same ops, weights and shapes, so the same C."""
    model = randomize_batchnorm(nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 6, 3, groups=6),
        nn.Hardswish(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4), nn.Softmax(dim=-1),
    ).eval())  # fmt: skip
    x = torch.randn(1, 3, 10, 10)
    from codegen.lower import lower

    m = prepare_model(model)
    g_fx, g_ex = lower(trace(m, x)), lower(export_graph(m, x))
    assert [type(op).__name__ for op in g_fx.ops] == [type(op).__name__ for op in g_ex.ops]
    for a, b in zip(g_fx.ops, g_ex.ops):
        assert sorted(a.params) == sorted(b.params)
        for role in a.params:
            assert (a.params[role] == b.params[role]).all(), (a.name, role)
        assert [g_fx.values[v].shape for v in a.inputs] == [g_ex.values[v].shape for v in b.inputs]


class AliasedInplace(nn.Module):
    """torch.fx records `b += x` as out of place (its graph disagrees with forward); torch.export does not."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 3)

    def forward(self, x):
        a = self.fc(x)
        b = a
        b += x
        return self.fc2(a)


def test_inplace_alias_model_emits_through_torch_export(tmp_path):
    emit_and_verify(AliasedInplace().eval(), (1, 4), "dense", tmp_path)


def test_model_neither_front_end_takes_names_both_failures(tmp_path):
    with pytest.raises(UntraceableModelError) as ei:
        save_compressed_model(DataDependent(), "dense", torch.randn(1, 4), tmp_path / "m")
    msg = str(ei.value)
    src, start = inspect.getsourcelines(DataDependent.forward)
    line = start + next(i for i, s in enumerate(src) if "if x.sum() > 0" in s)
    assert "torch.fx could not trace" in msg and "torch.export could not export" in msg
    assert msg.count(f"at {inspect.getsourcefile(DataDependent)}:{line}, in forward (if x.sum() > 0:)") == 2, msg
    assert list(tmp_path.iterdir()) == []


class ShapeDependentNorms(nn.Module):
    """Through torch.export (an `if` on a shape): aten.group_norm / aten.layer_norm carry a sixth argument
    (cudnn_enable) that F.group_norm / F.layer_norm do not take; a layer scale on a parameter is folded."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gn = nn.GroupNorm(2, 8)
        self.ln = nn.LayerNorm(7)
        self.gamma = nn.Parameter(torch.rand(8) + 0.5)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.gn(self.conv(x))
        if x.shape[-1] > 2:
            x = self.ln(torch.relu(x))
        x = x * self.gamma.reshape(1, -1, 1, 1)
        return self.fc(x.mean((2, 3)))


def test_export_front_end_translates_norms_and_folds_parameters(tmp_path):
    with pytest.raises(UntraceableModelError):
        trace(prepare_model(ShapeDependentNorms()), torch.randn(1, 3, 6, 7))
    torch.manual_seed(0)
    res = emit_and_verify(ShapeDependentNorms().eval(), (1, 3, 6, 7), "dense", tmp_path)
    assert res.max_rel_error < 1e-4


class UntraceableWithGelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = Conv2dSame(2, 4, 3)

    def forward(self, x):
        return torch.erf(self.conv(x))


def test_export_front_end_names_untranslated_aten_ops():
    with pytest.raises(UnsupportedOpError) as ei:
        build_graph(UntraceableWithGelu(), torch.randn(1, 2, 5, 5))
    assert [n[1] for n in ei.value.nodes] == ["aten.erf.default"]


# ---- one error for the whole model ------------------------------------------------------------------


class ManyProblems(nn.Module):
    """Ops without a lowering and refused arguments, and layers computed from their results (which must not
    be reported again)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        x = self.conv(x)
        a = torch.add(x, x, alpha=2)  # refused: alpha
        b = torch.add(x, x, alpha=3)  # refused again: same reason
        c = torch.div(x, 2.0, rounding_mode="floor")  # refused: rounding_mode
        d = torch.erf(x)  # no lowering
        e = torch.erf(x + 1.0)  # no lowering (listed); the scalar add lowers
        y = a + b + c + d + e  # computed from refused results: skipped, not reported
        return self.fc(y.flatten(1))


def test_unsupported_ops_and_arguments_in_one_error():
    with pytest.raises(UnsupportedOpError) as ei:
        build_graph(ManyProblems(), torch.randn(1, 3, 6, 6))
    err = ei.value
    assert [n[1] for n in err.nodes] == ["torch.erf", "torch.erf"]
    refused = [op for op, _ in err.config_errors]
    assert refused == ["torch.add", "torch.add", "torch.div"], refused
    msg = str(err).split("Supported operations")[0]
    assert "torch.erf: 2 node(s)" in msg
    assert "alpha != 1" in msg and "rounding_mode" in msg
    assert "5 node(s) in the model cannot be emitted as C" in msg, msg


class TwoAlphas(nn.Module):
    def forward(self, x):
        return (torch.add(x, x, alpha=2) + torch.add(x, x, alpha=3)).relu()


def test_only_unsupported_arguments_give_one_grouped_config_error():
    with pytest.raises(UnsupportedConfigError) as ei:
        build_graph(TwoAlphas(), torch.randn(1, 3, 4, 4))
    err = ei.value
    assert len(err.errors) == 2
    msg = str(err)
    assert msg.startswith("2 node(s) use supported operations with arguments that cannot be emitted"), msg
    assert "torch.add with unsupported arguments (2 node(s); also 'add_1'" in msg, msg
    assert msg.count("alpha != 1 is not supported") == 1, msg  # grouped: quoted once


def test_a_single_refused_argument_keeps_its_own_message():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(UnsupportedConfigError, match=r"^layer '0': padding_mode='reflect'.*padding_mode='zeros'$"):
        build_graph(net, torch.randn(1, 1, 5, 5))
