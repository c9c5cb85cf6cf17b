"""Parity through gcc (PyTorch as the oracle) of the functional forms with parameter operands
(F.conv1d/F.conv2d, F.linear, F.batch_norm, torch.batch_norm), broadcasting and scalar elementwise
ops (codegen/ops/broadcast.py, codegen/ops/unary.py) and the activations of codegen/ops/unary.py,
on awkward shapes. Their int8 forms are in tests/test_integer.py OPS."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import randomize_batchnorm
from test_ops import run

from codegen import save_compressed_model
from codegen.api import build_graph, weight_bytes
from codegen.errors import CodegenError, UnsupportedOpError

# ---- functional forms with parameter operands ------------------------------------------------------


class FConv(nn.Conv2d):
    """A conv subclass whose forward calls F.conv2d (as timm's Conv2dSame/StdConv do)."""

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class FConv1d(nn.Conv1d):
    def forward(self, x):
        return F.conv1d(x, self.weight, self.bias, stride=self.stride, padding=self.padding, dilation=self.dilation,
                        groups=self.groups)  # fmt: skip


class FLinear(nn.Linear):
    """timm.layers.Linear: F.linear with the module's parameters."""

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class BNAct(nn.BatchNorm2d):
    """timm.layers.BatchNormAct2d: F.batch_norm with the module's statistics, then an activation."""

    def __init__(self, c, act=nn.ReLU, torch_form=False):
        super().__init__(c)
        self.act = act()
        self.torch_form = torch_form

    def forward(self, x):
        if self.torch_form:
            x = torch.batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var, False, 0.1,
                                 self.eps, False)  # fmt: skip
        else:
            x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.1, self.eps)
        return self.act(x)


FUNCTIONAL = {
    "conv2d_bnact": (lambda: nn.Sequential(FConv(3, 5, 3, stride=2, padding=1, bias=False), BNAct(5)), (1, 3, 9, 7)),
    "conv2d_dw_dil_bnact_silu": (lambda: nn.Sequential(FConv(4, 4, 3, padding=2, dilation=2, groups=4),
                                                       BNAct(4, nn.SiLU)), (1, 4, 7, 8)),  # fmt: skip
    "conv2d_same": (lambda: nn.Sequential(FConv(2, 3, 4, padding="same"), nn.ReLU6()), (1, 2, 6, 5)),
    "conv1d": (lambda: nn.Sequential(FConv1d(3, 4, 5, stride=2, padding=2), nn.ReLU()), (1, 3, 13)),
    "linear_rows": (lambda: nn.Sequential(FLinear(7, 5), nn.Hardswish()), (1, 3, 7)),
    "linear_nobias": (lambda: nn.Sequential(nn.Flatten(), FLinear(12, 3, bias=False)), (1, 3, 4)),
    "standalone_batch_norm": (lambda: nn.Sequential(nn.MaxPool2d(2), BNAct(3, nn.Identity)), (1, 3, 6, 7)),
    "torch_batch_norm": (lambda: nn.Sequential(nn.Conv2d(2, 3, 3), BNAct(3, nn.Hardswish, torch_form=True)),
                         (1, 2, 5, 6)),  # fmt: skip
}


@pytest.mark.parametrize("rep", ["dense", "csr"])
@pytest.mark.parametrize("name", list(FUNCTIONAL))
def test_functional_with_parameters(name, rep, tmp_path):
    make, shape = FUNCTIONAL[name]
    run(make(), shape, rep, tmp_path)


def test_functional_forms_lower_to_the_module_ops():
    """F.conv2d + F.batch_norm + act is ONE conv (BN folded, activation fused) with the same weight bytes
    as the module form; no get_attr constant is reported unsupported."""
    torch.manual_seed(0)
    mod = nn.Sequential(nn.Conv2d(3, 5, 3, bias=False), nn.BatchNorm2d(5), nn.ReLU()).eval()
    fun = nn.Sequential(FConv(3, 5, 3, bias=False), BNAct(5)).eval()
    randomize_batchnorm(mod, 1)
    fun[0].load_state_dict(mod[0].state_dict())
    fun[1].load_state_dict(mod[1].state_dict())
    g_mod, g_fun = build_graph(mod, (1, 3, 8, 8))[0], build_graph(fun, (1, 3, 8, 8))[0]
    assert [op.kind for op in g_fun.ops] == [op.kind for op in g_mod.ops] == ["conv"]
    assert g_fun.ops[0].act.kind == "relu" and "BatchNorm folded" in g_fun.ops[0].torch_op
    assert weight_bytes(fun, (1, 3, 8, 8), "dense").total == weight_bytes(mod, (1, 3, 8, 8), "dense").total
    assert weight_bytes(fun, (1, 3, 8, 8), "dense").total == (5 * 27 + 5) * 4
    assert (g_fun.ops[0].params["weight"] == g_mod.ops[0].params["weight"]).all()


def test_batch_norm_in_training_mode_is_refused(tmp_path):
    class Train(nn.BatchNorm2d):
        def forward(self, x):
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True)

    with pytest.raises(CodegenError, match="training=True"):
        save_compressed_model(nn.Sequential(Train(2)).eval(), "dense", torch.randn(1, 2, 3, 3), tmp_path / "m")


def test_constant_operand_of_an_unsupported_op_is_still_listed(tmp_path):
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(3, 1, 1))

        def forward(self, x):
            return torch.addcmul(x, x, self.s)

    with pytest.raises(UnsupportedOpError, match="self.s"):
        save_compressed_model(Scale().eval(), "dense", torch.randn(1, 3, 4, 4), tmp_path / "m")


# ---- broadcasting and scalar elementwise ops -------------------------------------------------------


class Gate(nn.Module):
    """fn(features, gate, x): features (5, 5, 7) from a conv, a gate of another shape from convs of them."""

    GATES = {"se": lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(5, 5, 1), nn.Sigmoid()),  # (5, 1, 1)
             "spatial": lambda: nn.Sequential(nn.Conv2d(5, 1, 3, padding=1), nn.Sigmoid()),  # (1, 5, 7)
             "row": lambda: nn.Conv2d(5, 5, (5, 1)),  # (5, 1, 7)
             "col": lambda: nn.Conv2d(5, 1, (1, 7))}  # (1, 5, 1)  # fmt: skip

    def __init__(self, fn, gate="se"):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.g = self.GATES[gate]()
        self.fn = fn

    def forward(self, x):
        f = self.conv(x)
        return self.fn(f, self.g(f), x)


def _augmented(f, g):
    """x += y, x -= y, x *= y, x /= y (torch.fx records them as out-of-place ops)."""
    f = f * 1.0
    f += g
    f -= g * 0.25
    f *= g
    f /= 2
    return f


BROADCAST = {
    "se_mul": ("se", lambda f, g, x: f * g),
    "se_mul_gate_first": ("se", lambda f, g, x: g * f),
    "se_torch_mul": ("se", lambda f, g, x: torch.mul(g, f)),
    "se_add": ("se", lambda f, g, x: f + g),
    "se_sub_both_orders": ("se", lambda f, g, x: (f - g) * (g - f)),
    "se_div": ("se", lambda f, g, x: f / (g + 1.0)),
    "se_gate_div": ("se", lambda f, g, x: g / (f.abs() + 1.0)),
    "spatial_mul": ("spatial", lambda f, g, x: f * g),
    "spatial_first_sub": ("spatial", lambda f, g, x: torch.sub(g, f)),
    "row_add": ("row", lambda f, g, x: g + f),
    "col_mul": ("col", lambda f, g, x: f.mul(g)),
    "augmented_assignment": ("se", lambda f, g, x: _augmented(f, g)),
    "equal_sub": ("se", lambda f, g, x: f - torch.relu(f)),
    "equal_div": ("se", lambda f, g, x: f.div(torch.sigmoid(f) + 0.5)),
}


@pytest.mark.parametrize("name", list(BROADCAST))
def test_broadcast(name, tmp_path):
    gate, fn = BROADCAST[name]
    run(Gate(fn, gate), (1, 3, 5, 7), "dense", tmp_path)


class Seq1d(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3)  # (4, 9)
        self.pool = nn.AdaptiveAvgPool1d(1)  # (4, 1)
        self.one = nn.Conv1d(4, 1, 1)  # (1, 9)
        self.fn = fn

    def forward(self, x):
        f = self.conv(x)
        return self.fn(f, self.pool(f), self.one(f))


@pytest.mark.parametrize("fn", [lambda f, c, r: f * c, lambda f, c, r: c - f, lambda f, c, r: r + f,
                                lambda f, c, r: c * r],
                         ids=["cl_x_c1", "c1_minus_cl", "1l_plus_cl", "c1_x_1l"])  # fmt: skip
def test_broadcast_1d(fn, tmp_path):
    run(Seq1d(fn), (1, 2, 11), "dense", tmp_path)


SCALAR = {
    "x*0.5": lambda x: x * 0.5,
    "x+3": lambda x: x + 3,
    "0+x": lambda x: 0 + x,
    "1-x": lambda x: 1 - x,
    "x-2.5": lambda x: x - 2.5,
    "x/6": lambda x: x / 6,
    "6/x": lambda x: 6.0 / (x.abs() + 1),
    "2*x": lambda x: 2 * x,
    "torch.add_scalar": lambda x: torch.add(x, 1.5),
    "torch.mul_scalar": lambda x: torch.mul(x, -3),
    "Tensor.div_scalar": lambda x: x.div(7),
    "torch.rsub": lambda x: torch.rsub(x, 2.0),
    "hardswish_by_hand": lambda x: x * F.relu6(x + 3) / 6,
    "clamp": lambda x: torch.clamp(x, -0.5, 0.7),
    "clamp_min": lambda x: torch.clamp(x, min=0.1),
    "clamp_max_method": lambda x: x.clamp_max(0.2),
    "clamp_min_fn": lambda x: torch.clamp_min(x, -0.3),
    "clip": lambda x: x.clip(-1, 1),
    "hardtanh": lambda x: F.hardtanh(x, -0.5, 0.5),
    "abs": lambda x: torch.abs(x),
    "abs_builtin": lambda x: abs(x),
    "neg": lambda x: -x,
    "Tensor.neg": lambda x: x.neg(),
    "augmented_scalar": lambda x: _augmented(x, 0.5),
}


class Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.conv(x))


@pytest.mark.parametrize("fn", SCALAR.values(), ids=SCALAR.keys())
def test_scalar_and_unary(fn, tmp_path):
    run(Fn(fn), (1, 2, 6, 5), "dense", tmp_path)


ACTIVATIONS = {
    "silu": nn.SiLU(),
    "F.silu": F.silu,
    "swish_by_hand": lambda x: x * torch.sigmoid(x),
    "gelu": nn.GELU(),
    "gelu_tanh": nn.GELU(approximate="tanh"),
    "F.gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "mish": nn.Mish(),
    "softplus": nn.Softplus(),
    "softplus_beta_threshold": nn.Softplus(beta=2.0, threshold=1.5),
    "F.softplus": lambda x: F.softplus(x, 0.5, 3.0),
    "elu": nn.ELU(),
    "elu_alpha": nn.ELU(alpha=0.3),
    "F.elu": lambda x: F.elu(x, 1.7),
    "prelu_one": nn.PReLU(init=0.2),
    "prelu_channels": nn.PReLU(3, init=-0.4),
    "F.hardswish": F.hardswish,
    "F.hardsigmoid": F.hardsigmoid,
    "F.relu6": F.relu6,
    "F.leaky_relu": lambda x: F.leaky_relu(x, 0.3),
    "silu_inplace": nn.SiLU(inplace=True),
}


@pytest.mark.parametrize("act", ACTIVATIONS.values(), ids=ACTIVATIONS.keys())
def test_activation(act, tmp_path):
    if isinstance(act, nn.PReLU):
        with torch.no_grad():
            act.weight.uniform_(-0.5, 0.5)
    run(Fn(act), (1, 2, 7, 6), "dense", tmp_path, scale=3.0)


def test_prelu_on_linear_features(tmp_path):
    run(nn.Sequential(nn.Linear(5, 4), nn.PReLU(4)), (1, 5), "dense", tmp_path, scale=3.0)
