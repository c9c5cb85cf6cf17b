"""Per-op parity through gcc: every supported op (module and functional forms) on awkward shapes,
in both representations where the op has weights, with PyTorch as the oracle.

For representation "csr" the weights are pruned to density 0.4 first, so that CSR is the smaller
encoding and the sparse kernels run (the test checks that CSR was chosen). The tolerance is the
one documented in tests/helpers.py.
"""

from __future__ import annotations

import copy
import shutil
import subprocess

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import (
    assert_parity,
    emit_and_verify,
    parity_error,
    randomize_batchnorm,
    require_sanitizer,
    sparsify_,
)

from codegen.api import verify

REPS = ["dense", "csr"]
WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Linear)


def run(model: nn.Module, x_shape, rep: str, tmp_path, *, scale: float = 1.0, n_inputs: int = 3, seed: int = 0,
        sanitize: bool = False, extra_flags: tuple[str, ...] = ()):  # fmt: skip
    """Seeds, prunes for CSR, randomizes BatchNorm statistics, emits, builds, runs and compares."""
    torch.manual_seed(seed)
    model = model.eval()
    randomize_batchnorm(model, seed)
    if rep == "csr":
        for i, m in enumerate(model.modules()):
            if isinstance(m, WEIGHTED):
                sparsify_(m.weight, 0.4, seed + i)
    gen = torch.Generator().manual_seed(seed + 1)
    inputs = torch.randn((n_inputs, *x_shape[1:]), generator=gen) * scale
    res = emit_and_verify(model, x_shape, rep, tmp_path, inputs=inputs, sanitize=sanitize, extra_flags=extra_flags)
    if rep == "csr":
        for ly in res.report["layers"]:
            if ly["format"] not in ("-",) and ly["weight_shape"] is not None:
                assert ly["format"] == "csr", f"layer {ly['source']} at density 0.4 should be CSR: {ly}"
    return res


# ---- convolution ---------------------------------------------------------------------------------
# (cin, cout, kernel, stride, padding, dilation, groups, bias, (H, W))
CONV2D = {
    "1x1": (3, 5, 1, 1, 0, 1, 1, True, (5, 7)),
    "1x1_stride2": (3, 3, 1, 2, 0, 1, 1, True, (6, 7)),
    "3x3_pad1": (3, 4, 3, 1, 1, 1, 1, True, (8, 8)),
    "stride_gt_kernel": (2, 3, 2, 3, 0, 1, 1, True, (9, 11)),
    "stride2_odd_nobias": (3, 4, 3, 2, 1, 1, 1, False, (7, 9)),
    "asym_k_s_p": (2, 3, (3, 1), (1, 2), (1, 0), 1, 1, True, (6, 7)),
    "dilation2_pad2": (2, 3, 3, 1, 2, 2, 1, True, (7, 8)),
    "dilation_asym_stride2": (2, 2, 3, 2, (1, 2), (2, 3), 1, True, (9, 10)),
    "groups2": (4, 6, 3, 1, 1, 1, 2, True, (6, 6)),
    "depthwise": (4, 4, 3, 1, 1, 1, 4, True, (7, 7)),
    "depthwise_mult2_stride2": (3, 6, 3, 2, 1, 1, 3, False, (8, 9)),
    "depthwise_5x5": (4, 4, 5, 1, 2, 1, 4, True, (5, 6)),
    "same_odd": (2, 3, 3, 1, "same", 1, 1, True, (5, 6)),
    "same_even_dilated": (2, 3, (2, 4), 1, "same", (1, 2), 1, True, (6, 7)),
    "valid": (2, 2, 3, 1, "valid", 1, 1, True, (5, 5)),
    "kernel_is_input": (2, 3, (4, 5), 1, 0, 1, 1, True, (4, 5)),
    "pad_gt_kernel": (1, 2, 3, 2, 3, 1, 1, True, (4, 4)),
    "one_pixel_input": (3, 2, 3, 1, 1, 1, 1, True, (1, 1)),
}

CONV1D = {
    "k1": (3, 4, 1, 1, 0, 1, 1, True, 9),
    "k3_pad1": (2, 5, 3, 1, 1, 1, 1, True, 11),
    "stride_gt_kernel": (2, 3, 2, 3, 0, 1, 1, False, 13),
    "stride2_dilation3": (3, 2, 3, 2, 2, 3, 1, True, 17),
    "groups": (4, 6, 3, 1, 1, 1, 2, True, 8),
    "depthwise": (5, 5, 5, 1, 2, 1, 5, True, 9),
    "same_even": (2, 3, 4, 1, "same", 1, 1, True, 7),
    "same_dilated": (2, 2, 3, 1, "same", 2, 1, True, 6),
    "length1": (2, 3, 3, 1, 1, 1, 1, True, 1),
}


@pytest.mark.parametrize("rep", REPS)
@pytest.mark.parametrize("cfg", CONV2D.values(), ids=CONV2D.keys())
def test_conv2d(cfg, rep, tmp_path):
    cin, cout, k, s, p, d, g, bias, hw = cfg
    m = nn.Sequential(nn.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d, groups=g, bias=bias))
    run(m, (1, cin, *hw), rep, tmp_path)


@pytest.mark.parametrize("rep", REPS)
@pytest.mark.parametrize("cfg", CONV1D.values(), ids=CONV1D.keys())
def test_conv1d(cfg, rep, tmp_path):
    cin, cout, k, s, p, d, g, bias, length = cfg
    m = nn.Sequential(nn.Conv1d(cin, cout, k, stride=s, padding=p, dilation=d, groups=g, bias=bias))
    run(m, (1, cin, length), rep, tmp_path)


# ---- linear --------------------------------------------------------------------------------------
LINEAR = {
    "1to1": (1, 1, True, (1, 1)),
    "7to3": (7, 3, True, (1, 7)),
    "17to1_nobias": (17, 1, False, (1, 17)),
    "rows_3d_input": (8, 5, True, (1, 4, 8)),
    "wide_300": (300, 4, True, (1, 300)),
    "rows_4d_input": (5, 3, True, (1, 2, 3, 5)),
}


@pytest.mark.parametrize("rep", REPS)
@pytest.mark.parametrize("cfg", LINEAR.values(), ids=LINEAR.keys())
def test_linear(cfg, rep, tmp_path):
    fin, fout, bias, shape = cfg
    run(nn.Sequential(nn.Linear(fin, fout, bias=bias)), shape, rep, tmp_path)


# ---- compact kernels of -Os builds (SC_SMALL_CODE, runtime_c/sc_runtime.h) -----------------------
# gcc -Os selects them (__OPTIMIZE_SIZE__); the suite builds at -O2, so force them here. A fused ReLU
# also exercises the activation in their epilogue.
SMALL = ("-DSC_SMALL_CODE=1",)


@pytest.mark.parametrize("cfg", CONV2D.values(), ids=CONV2D.keys())
def test_conv2d_small_code(cfg, tmp_path):
    cin, cout, k, s, p, d, g, bias, hw = cfg
    m = nn.Sequential(nn.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d, groups=g, bias=bias), nn.ReLU())
    run(m, (1, cin, *hw), "dense", tmp_path, extra_flags=SMALL)


@pytest.mark.parametrize("cfg", CONV1D.values(), ids=CONV1D.keys())
def test_conv1d_small_code(cfg, tmp_path):
    cin, cout, k, s, p, d, g, bias, length = cfg
    m = nn.Sequential(nn.Conv1d(cin, cout, k, stride=s, padding=p, dilation=d, groups=g, bias=bias))
    run(m, (1, cin, length), "dense", tmp_path, extra_flags=SMALL)


@pytest.mark.parametrize("cfg", LINEAR.values(), ids=LINEAR.keys())
def test_linear_small_code(cfg, tmp_path):
    fin, fout, bias, shape = cfg
    run(nn.Sequential(nn.Linear(fin, fout, bias=bias), nn.ReLU()), shape, "dense", tmp_path, extra_flags=SMALL)


# ---- batch norm ----------------------------------------------------------------------------------
class ConvNotFolded(nn.Module):
    """The conv output has two users, so its BatchNorm stays standalone."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


BATCHNORM = {
    "conv2d_bn_folded": (
        lambda: nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)),
        (1, 3, 6, 7),
        1,
    ),
    "conv2d_bias_bn_relu": (
        lambda: nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU()),
        (1, 2, 5, 5),
        1,
    ),
    "conv1d_bn_folded": (lambda: nn.Sequential(nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4)), (1, 2, 9), 1),
    "depthwise_bn_folded": (
        lambda: nn.Sequential(nn.Conv2d(3, 3, 3, groups=3), nn.BatchNorm2d(3)),
        (1, 3, 5, 6),
        1,
    ),
    "linear_bn_folded": (lambda: nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5)), (1, 6), 1),
    "bn2d_on_input": (lambda: nn.Sequential(nn.BatchNorm2d(3)), (1, 3, 5, 4), 1),
    "bn1d_on_features": (lambda: nn.Sequential(nn.BatchNorm1d(7)), (1, 7), 1),
    "bn1d_on_signal": (lambda: nn.Sequential(nn.BatchNorm1d(3), nn.Tanh()), (1, 3, 6), 1),
    "bn_after_pool": (
        lambda: nn.Sequential(nn.Conv2d(2, 3, 3), nn.MaxPool2d(2), nn.BatchNorm2d(3)),
        (1, 2, 8, 8),
        3,
    ),
    "bn_after_relu": (
        lambda: nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.BatchNorm2d(3)),
        (1, 2, 6, 6),
        2,
    ),
    "bn_no_affine": (
        lambda: nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3, affine=False)),
        (1, 2, 4, 4),
        1,
    ),
    "bn_not_folded_two_users": (ConvNotFolded, (1, 2, 5, 5), 3),
}


@pytest.mark.parametrize("rep", REPS)
@pytest.mark.parametrize("cfg", BATCHNORM.values(), ids=BATCHNORM.keys())
def test_batchnorm(cfg, rep, tmp_path):
    make, shape, n_layers = cfg
    res = run(make(), shape, rep, tmp_path)
    assert len(res.report["layers"]) == n_layers, [ly["op"] for ly in res.report["layers"]]


# ---- activations ---------------------------------------------------------------------------------
ACTS = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "leaky_relu_default": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "hardswish": nn.Hardswish,
    "hardsigmoid": nn.Hardsigmoid,
}


class ActEverywhere(nn.Module):
    """One activation standalone on the input and fused into conv, linear, batchnorm and add."""

    def __init__(self, act):
        super().__init__()
        self.a_in, self.a_conv, self.a_bn, self.a_add, self.a_lin = (act() for _ in range(5))
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.bn = nn.BatchNorm2d(3)
        self.lin = nn.Linear(3 * 3 * 3, 7)

    def forward(self, x):
        x = self.a_in(x)  # standalone: its input is the model input
        y = self.a_conv(self.conv(x))  # fused into conv
        y = self.a_bn(self.bn(self.pool(y)))  # batchnorm after a pool stays standalone; act fused
        y = self.a_add(y + y)  # fused into the add
        return self.a_lin(self.lin(y.flatten(1)))  # fused into linear


@pytest.mark.parametrize("rep", REPS)
@pytest.mark.parametrize("act", ACTS.values(), ids=ACTS.keys())
def test_activation_module(act, rep, tmp_path):
    res = run(ActEverywhere(act), (1, 2, 6, 6), rep, tmp_path, scale=4.0, n_inputs=4)
    kinds = [ly["activation"] for ly in res.report["layers"]]
    assert kinds.count("none") <= 1, kinds  # only the pool has no activation
    assert len(kinds) == 6, res.report["layers"]


FUNCTIONAL_ACTS = {
    "F.relu": F.relu,
    "torch.relu": torch.relu,
    "Tensor.relu": lambda x: x.relu(),
    "F.relu6": F.relu6,
    "F.leaky_relu": lambda x: F.leaky_relu(x, 0.3),
    "F.leaky_relu_kw": lambda x: F.leaky_relu(x, negative_slope=0.05),
    "F.leaky_relu_default": F.leaky_relu,
    "torch.sigmoid": torch.sigmoid,
    "F.sigmoid": F.sigmoid,
    "Tensor.sigmoid": lambda x: x.sigmoid(),
    "torch.tanh": torch.tanh,
    "F.tanh": F.tanh,
    "Tensor.tanh": lambda x: x.tanh(),
    "F.hardswish": F.hardswish,
    "F.hardsigmoid": F.hardsigmoid,
}


class FnAct(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.conv = nn.Conv1d(2, 3, 3)

    def forward(self, x):
        return self.fn(self.conv(self.fn(x)))


@pytest.mark.parametrize("fn", FUNCTIONAL_ACTS.values(), ids=FUNCTIONAL_ACTS.keys())
def test_activation_functional(fn, tmp_path):
    res = run(FnAct(fn), (1, 2, 9), "dense", tmp_path, scale=4.0)
    assert len(res.report["layers"]) == 2


# ---- pooling -------------------------------------------------------------------------------------
POOLS = {
    "max2d_2": (lambda: nn.MaxPool2d(2), (1, 2, 7, 9)),
    "max2d_3s2p1": (lambda: nn.MaxPool2d(3, stride=2, padding=1), (1, 2, 7, 8)),
    "max2d_asym": (lambda: nn.MaxPool2d((2, 3), stride=(1, 2)), (1, 3, 5, 8)),
    "max2d_ceil": (lambda: nn.MaxPool2d(3, stride=2, ceil_mode=True), (1, 2, 8, 6)),
    "max2d_ceil_pad": (lambda: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (1, 1, 6, 8)),
    "max2d_dilation": (lambda: nn.MaxPool2d(2, dilation=2), (1, 2, 7, 7)),
    "max2d_same_size": (lambda: nn.MaxPool2d(3, 1, 1), (1, 2, 4, 5)),
    "max2d_stride_gt_kernel": (lambda: nn.MaxPool2d(2, stride=3), (1, 2, 8, 10)),
    "avg2d_2": (lambda: nn.AvgPool2d(2), (1, 2, 7, 9)),
    "avg2d_pad_include": (lambda: nn.AvgPool2d(3, 2, 1), (1, 2, 7, 8)),
    "avg2d_pad_exclude": (lambda: nn.AvgPool2d(3, 2, 1, count_include_pad=False), (1, 2, 7, 8)),
    "avg2d_ceil_include": (lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True), (1, 2, 6, 8)),
    "avg2d_ceil_exclude": (
        lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
        (1, 2, 6, 8),
    ),
    "avg2d_ceil_nopad": (lambda: nn.AvgPool2d(2, ceil_mode=True), (1, 2, 5, 7)),
    "avg2d_divisor": (lambda: nn.AvgPool2d(2, divisor_override=3), (1, 2, 6, 6)),
    "avg2d_divisor_pad": (lambda: nn.AvgPool2d(3, 2, 1, divisor_override=7), (1, 2, 5, 6)),
    "avg2d_asym": (lambda: nn.AvgPool2d((2, 3), stride=(2, 1), padding=(1, 1)), (1, 2, 5, 6)),
    "avg2d_stride_gt_kernel": (lambda: nn.AvgPool2d(2, stride=3), (1, 2, 8, 9)),
    "max1d_3s2p1": (lambda: nn.MaxPool1d(3, 2, 1), (1, 3, 11)),
    "max1d_ceil": (lambda: nn.MaxPool1d(2, ceil_mode=True), (1, 2, 9)),
    "max1d_dilation": (lambda: nn.MaxPool1d(3, dilation=2), (1, 2, 12)),
    "avg1d_pad": (lambda: nn.AvgPool1d(3, 2, 1), (1, 3, 10)),
    "avg1d_ceil_exclude": (
        lambda: nn.AvgPool1d(3, 2, 1, ceil_mode=True, count_include_pad=False),
        (1, 2, 10),
    ),
    "avg1d_4": (lambda: nn.AvgPool1d(4), (1, 2, 13)),
    "adaptive2d_1": (lambda: nn.AdaptiveAvgPool2d(1), (1, 3, 5, 7)),
    "adaptive2d_2x3": (lambda: nn.AdaptiveAvgPool2d((2, 3)), (1, 2, 6, 9)),
    "adaptive2d_3x1": (lambda: nn.AdaptiveAvgPool2d((3, 1)), (1, 2, 6, 4)),
    "adaptive2d_same": (lambda: nn.AdaptiveAvgPool2d((4, 4)), (1, 2, 4, 4)),
    "adaptive1d_1": (lambda: nn.AdaptiveAvgPool1d(1), (1, 3, 7)),
    "adaptive1d_4": (lambda: nn.AdaptiveAvgPool1d(4), (1, 2, 12)),
}


class Fn(nn.Module):
    """Wraps a function of the input as a model (for functional forms)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


FUNCTIONAL_POOLS = {
    "F.max_pool2d": (lambda x: F.max_pool2d(x, 2), (1, 2, 6, 7)),
    "F.max_pool2d_full": (lambda x: F.max_pool2d(x, 3, 2, 1, 1, True), (1, 2, 6, 8)),
    "F.max_pool2d_kw": (
        lambda x: F.max_pool2d(x, kernel_size=3, stride=2, padding=1, ceil_mode=True),
        (1, 2, 7, 6),
    ),
    "F.avg_pool2d_exclude": (lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), (1, 2, 7, 8)),
    "F.avg_pool2d_divisor": (lambda x: F.avg_pool2d(x, 2, divisor_override=5), (1, 2, 6, 6)),
    "F.max_pool1d": (lambda x: F.max_pool1d(x, 3, stride=2, padding=1), (1, 2, 10)),
    "F.avg_pool1d": (lambda x: F.avg_pool1d(x, 3, 2, 1, True, False), (1, 2, 10)),
    "F.adaptive_avg_pool2d": (lambda x: F.adaptive_avg_pool2d(x, 1), (1, 3, 5, 5)),
    "F.adaptive_avg_pool2d_2": (lambda x: F.adaptive_avg_pool2d(x, (2, 2)), (1, 3, 6, 4)),
    "F.adaptive_avg_pool1d": (lambda x: F.adaptive_avg_pool1d(x, 2), (1, 2, 8)),
}


@pytest.mark.parametrize("cfg", POOLS.values(), ids=POOLS.keys())
def test_pool_module(cfg, tmp_path):
    make, shape = cfg
    run(nn.Sequential(make()), shape, "dense", tmp_path)


@pytest.mark.parametrize("cfg", FUNCTIONAL_POOLS.values(), ids=FUNCTIONAL_POOLS.keys())
def test_pool_functional(cfg, tmp_path):
    fn, shape = cfg
    run(Fn(fn), shape, "dense", tmp_path)


# ---- mean over spatial dims ------------------------------------------------------------------------
MEANS = {
    "mean_23": (lambda x: x.mean((2, 3)), (1, 3, 5, 6)),
    "mean_neg_keepdim_flatten": (lambda x: x.mean(dim=[-2, -1], keepdim=True).flatten(1), (1, 3, 4, 5)),
    "torch.mean_signal": (lambda x: torch.mean(x, 2), (1, 4, 7)),
    "mean_last_only": (lambda x: x.mean(-1), (1, 2, 3, 5)),
}


@pytest.mark.parametrize("cfg", MEANS.values(), ids=MEANS.keys())
def test_mean(cfg, tmp_path):
    fn, shape = cfg
    run(Fn(fn), shape, "dense", tmp_path)


# ---- reshapes ------------------------------------------------------------------------------------
class ViewNet(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(2, 3, 3)
        self.fc = nn.Linear(3 * 3 * 4, 5)

    def forward(self, x):
        y = self.conv(x)
        if self.how == "view":
            y = y.view(y.size(0), -1)
        elif self.how == "reshape":
            y = y.reshape(y.shape[0], -1)
        elif self.how == "torch.reshape":
            y = torch.reshape(y, (-1, 36))
        elif self.how == "torch.flatten":
            y = torch.flatten(y, 1)
        elif self.how == "Tensor.flatten":
            y = y.flatten(1)
        elif self.how == "contiguous":
            y = y.contiguous().view(1, -1)
        return self.fc(y)


@pytest.mark.parametrize(
    "how", ["view", "reshape", "torch.reshape", "torch.flatten", "Tensor.flatten", "contiguous"]
)
def test_flatten_forms(how, tmp_path):
    run(ViewNet(how), (1, 2, 5, 6), "dense", tmp_path)


class SqueezeNet1d(nn.Module):
    """Conv1d -> unsqueeze -> Conv2d with a (1, k) kernel -> squeeze -> Conv1d."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(2, 3, 3)
        self.c2 = nn.Conv2d(3, 4, (1, 3), padding=(0, 1))
        self.c3 = nn.Conv1d(4, 2, 1)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        y = self.c1(x).unsqueeze(2)
        y = torch.squeeze(self.c2(y), 2)
        y = torch.unsqueeze(self.drop(y), 1).squeeze(1)
        return self.c3(y)


def test_squeeze_unsqueeze_dropout(tmp_path):
    run(SqueezeNet1d(), (1, 2, 9), "dense", tmp_path)


def test_unflatten_identity(tmp_path):
    m = nn.Sequential(
        nn.Linear(12, 24), nn.Unflatten(1, (2, 3, 4)), nn.Identity(), nn.Conv2d(2, 2, 2), nn.Flatten()
    )
    run(m, (1, 12), "dense", tmp_path)


@pytest.mark.parametrize("mod", [nn.Flatten, nn.Identity], ids=["flatten", "identity"])
def test_model_returns_view_of_input(mod, tmp_path):
    run(nn.Sequential(mod()), (1, 3, 2, 2), "dense", tmp_path)


# ---- elementwise add/mul and concatenation ---------------------------------------------------------
class TwoBranch(nn.Module):
    def __init__(self, combine, in_ch=2):
        super().__init__()
        self.combine = combine
        self.a = nn.Conv2d(in_ch, 3, 3, padding=1)
        self.b = nn.Conv2d(in_ch, 3, 1)

    def forward(self, x):
        return self.combine(self.a(x), self.b(x), x)


BINARY = {
    "x+y": lambda a, b, x: a + b,
    "torch.add": lambda a, b, x: torch.add(a, b),
    "Tensor.add": lambda a, b, x: a.add(b),
    "x*y": lambda a, b, x: a * b,
    "torch.mul": lambda a, b, x: torch.mul(a, b),
    "Tensor.mul": lambda a, b, x: a.mul(b),
    "add_relu": lambda a, b, x: F.relu(a + b),
    "residual_on_input": lambda a, b, x: x + a,
    "square_input": lambda a, b, x: x * x,
    "add_same_value": lambda a, b, x: a + a,
    "add_chain": lambda a, b, x: (a + b) * a + b,
    "mul_then_sigmoid": lambda a, b, x: torch.sigmoid(a * b),
}

CAT = {
    "cat_channels": lambda a, b, x: torch.cat([a, b], 1),
    "cat_three_with_input": lambda a, b, x: torch.cat((a, x, b), dim=1),
    "cat_neg_dim": lambda a, b, x: torch.cat([b, a], dim=-3),
    "cat_same_twice": lambda a, b, x: torch.cat([a, a], 1),
    "cat_then_relu": lambda a, b, x: F.relu(torch.cat([a, b], 1)),
    "cat_height": lambda a, b, x: torch.cat([a, b, a], 2),
    "cat_width": lambda a, b, x: torch.cat([b, a], dim=-1),
}


@pytest.mark.parametrize("fn", BINARY.values(), ids=BINARY.keys())
def test_binary(fn, tmp_path):
    run(TwoBranch(fn, in_ch=3), (1, 3, 5, 6), "dense", tmp_path)


def test_binary_sparse_branches(tmp_path):
    run(TwoBranch(lambda a, b, x: F.relu(a + b) * b, in_ch=3), (1, 3, 5, 6), "csr", tmp_path)


@pytest.mark.parametrize("fn", CAT.values(), ids=CAT.keys())
def test_cat(fn, tmp_path):
    run(TwoBranch(fn), (1, 2, 5, 6), "dense", tmp_path)


class Cat1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv1d(2, 3, 3, padding=1)

    def forward(self, x):
        return torch.cat([self.a(x), x, F.relu(x)], dim=1)


def test_cat_signal(tmp_path):
    run(Cat1d(), (1, 2, 7), "dense", tmp_path)


# ---- softmax -------------------------------------------------------------------------------------
SOFTMAX = {
    "Softmax": (lambda: nn.Softmax(dim=-1), (1, 10), 1.0),
    "Softmax_dim1": (lambda: nn.Softmax(dim=1), (1, 7), 1.0),
    "LogSoftmax": (lambda: nn.LogSoftmax(dim=1), (1, 10), 1.0),
    "Softmax_large": (lambda: nn.Softmax(dim=-1), (1, 9), 60.0),
    "LogSoftmax_large": (lambda: nn.LogSoftmax(dim=-1), (1, 9), 60.0),
    "F.softmax_rows": (lambda: Fn(lambda x: F.softmax(x, -1)), (1, 3, 5), 1.0),
    "F.log_softmax": (lambda: Fn(lambda x: F.log_softmax(x, dim=-1)), (1, 2, 3, 4), 1.0),
    "torch.softmax": (lambda: Fn(lambda x: torch.softmax(x, -1)), (1, 6), 1.0),
    "torch.log_softmax": (lambda: Fn(lambda x: torch.log_softmax(x, dim=-1)), (1, 6), 1.0),
    "Tensor.softmax": (lambda: Fn(lambda x: x.softmax(-1)), (1, 4, 3), 1.0),
    "Tensor.log_softmax": (lambda: Fn(lambda x: x.log_softmax(dim=-1)), (1, 5), 1.0),
    "single_class": (lambda: nn.Softmax(dim=-1), (1, 1), 1.0),
}


@pytest.mark.parametrize("cfg", SOFTMAX.values(), ids=SOFTMAX.keys())
def test_softmax(cfg, tmp_path):
    make, shape, scale = cfg
    run(make(), shape, "dense", tmp_path, scale=scale)


def test_linear_log_softmax(tmp_path):
    run(nn.Sequential(nn.Linear(6, 4), nn.LogSoftmax(dim=1)), (1, 6), "csr", tmp_path)


# ---- padding -------------------------------------------------------------------------------------
PADS = {
    "ZeroPad2d": (lambda: nn.ZeroPad2d((1, 2, 0, 3)), (1, 2, 4, 5)),
    "ZeroPad2d_int": (lambda: nn.ZeroPad2d(1), (1, 2, 3, 3)),
    "ConstantPad2d": (lambda: nn.ConstantPad2d(2, 0.5), (1, 2, 3, 4)),
    "ConstantPad2d_asym": (lambda: nn.ConstantPad2d((0, 1, 2, 0), -1.25), (1, 1, 3, 2)),
    "ConstantPad1d": (lambda: nn.ConstantPad1d((3, 1), -1.0), (1, 2, 5)),
    "ConstantPad1d_int": (lambda: nn.ConstantPad1d(2, 3.5), (1, 3, 4)),
    "ZeroPad1d": (lambda: nn.ZeroPad1d((2, 1)), (1, 3, 4)),
    "F.pad_2d": (lambda: Fn(lambda x: F.pad(x, (1, 1, 2, 0))), (1, 2, 3, 4)),
    "F.pad_value": (lambda: Fn(lambda x: F.pad(x, (2, 3), value=1.5)), (1, 2, 3, 4)),
    "F.pad_1d_kw": (lambda: Fn(lambda x: F.pad(x, pad=(0, 2), mode="constant", value=-2.0)), (1, 2, 5)),
    "F.pad_zero": (lambda: Fn(lambda x: F.pad(x, (0, 0, 0, 0))), (1, 2, 3, 3)),
    "F.pad_features": (lambda: Fn(lambda x: F.pad(x, (1, 2), value=0.25)), (1, 5)),
    "F.pad_channels_of_signal": (lambda: Fn(lambda x: F.pad(x, (1, 0, 2, 1))), (1, 2, 4)),
}


@pytest.mark.parametrize("cfg", PADS.values(), ids=PADS.keys())
def test_pad(cfg, tmp_path):
    make, shape = cfg
    run(make(), shape, "dense", tmp_path)


def test_pad_minus_inf_then_maxpool(tmp_path):
    run(
        Fn(lambda x: F.max_pool2d(F.pad(x, (1, 1, 1, 1), value=float("-inf")), 3, 2)),
        (1, 2, 5, 5),
        "dense",
        tmp_path,
    )


class PadConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))  # TF-style "same" for stride 2
        self.conv = nn.Conv2d(2, 3, 3, stride=2)

    def forward(self, x):
        return self.conv(self.pad(x))


@pytest.mark.parametrize("rep", REPS)
def test_pad_then_conv(rep, tmp_path):
    run(PadConv(), (1, 2, 6, 7), rep, tmp_path)


# ---- the tests can fail ------------------------------------------------------------------------------
def test_helper_detects_wrong_reference():
    ref = np.linspace(-2, 3, 24, dtype=np.float32).reshape(2, 12)
    assert_parity(ref + 1e-5, ref)  # 1e-5 <= 1e-4 * 3 + 1e-6
    wrong = ref.copy()
    wrong[1, 7] += 0.01
    with pytest.raises(AssertionError, match=r"index \(1, 7\)"):
        assert_parity(wrong, ref, "wrong")
    with pytest.raises(AssertionError, match="max abs error"):
        assert_parity(ref[:, ::-1], ref)
    nan = ref.copy()
    nan[0, 0] = np.nan
    with pytest.raises(AssertionError):
        assert_parity(nan, ref)
    with pytest.raises(AssertionError, match="shape"):
        assert_parity(ref.reshape(-1), ref)
    assert parity_error(np.zeros(3), np.zeros(3)) == (0.0, 1e-6)


def test_wrong_model_is_detected_through_gcc(tmp_path):
    """C built from one model compared with a model that differs in one weight must fail parity."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))
    x = torch.randn(3, 2, 6, 6)
    res = emit_and_verify(m, (1, 2, 6, 6), "csr", tmp_path, inputs=x)
    assert res.max_abs_error <= res.tolerance
    other = copy.deepcopy(m)
    with torch.no_grad():
        other[3].weight[2, 5] += 0.5
    v = verify(other, res.directory, x)
    with pytest.raises(AssertionError, match="differs from PyTorch"):
        assert_parity(v.outputs, v.reference)


# ---- sanitizers --------------------------------------------------------------------------------------
class ResidualCat(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.pw = nn.Conv2d(4, 4, 1)
        self.side = nn.Conv2d(4, 2, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        y = F.relu6(self.bn(self.stem(x)))
        y = y + self.pw(F.hardswish(self.dw(y)))
        y = torch.cat([y, self.side(y)], 1)
        return F.log_softmax(self.fc(torch.flatten(self.pool(y), 1)), dim=1)


SANITIZED = {
    "lenet_like": (lambda: nn.Sequential(nn.Conv2d(1, 4, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3),
                                         nn.Tanh(), nn.AvgPool2d(2, ceil_mode=True), nn.Flatten(), nn.Linear(6 * 2 * 2, 10)),
                   (1, 1, 12, 12), "csr"),
    "residual_depthwise_cat": (ResidualCat, (1, 3, 9, 9), "csr"),
    "conv1d_stack": (lambda: nn.Sequential(nn.Conv1d(2, 4, 5, stride=2, padding="valid", dilation=2), nn.BatchNorm1d(4),
                                           nn.LeakyReLU(0.1), nn.MaxPool1d(3, 2, 1, ceil_mode=True),
                                           nn.Conv1d(4, 4, 3, padding="same", groups=4), nn.AdaptiveAvgPool1d(1),
                                           nn.Flatten(), nn.Linear(4, 3), nn.Softmax(dim=-1)), (1, 2, 31), "dense"),
    "pads_and_pools": (lambda: nn.Sequential(nn.ConstantPad2d((1, 0, 2, 1), 0.25), nn.Conv2d(2, 3, 2, stride=3),
                                             nn.AvgPool2d(3, 2, 1, count_include_pad=False, ceil_mode=True),
                                             nn.ZeroPad2d(1), nn.MaxPool2d(2, dilation=2)), (1, 2, 11, 10), "csr"),
    "wide_linear": (lambda: nn.Sequential(nn.Linear(300, 40), nn.Hardsigmoid(), nn.Linear(40, 1)), (1, 300), "csr"),
    "mean_sigmoid": (lambda: Fn(lambda x: torch.sigmoid(x).mean((2, 3))), (1, 3, 4, 5), "dense"),
}  # fmt: skip


@pytest.mark.parametrize("cfg", SANITIZED.values(), ids=SANITIZED.keys())
def test_sanitized(cfg, tmp_path):
    require_sanitizer()
    make, shape, rep = cfg
    run(make(), shape, rep, tmp_path, sanitize=True, n_inputs=2)


# ---- in-place activations (torch mutates the input tensor; later users must see the new values) -----------
class InplaceReuse(nn.Module):
    def __init__(self, act, on_input=False):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.act = act
        self.on_input = on_input

    def forward(self, x):
        y = x if self.on_input else self.conv(x)
        flat = y.flatten(1)  # a view: torch's in-place activation changes it too
        z = self.act(y)
        return (y + z).flatten(1) * flat


INPLACE = {
    "nn.ReLU": lambda: nn.ReLU(inplace=True),
    "nn.LeakyReLU": lambda: nn.LeakyReLU(0.1, inplace=True),
    "nn.Hardswish": lambda: nn.Hardswish(inplace=True),
    "F.relu": lambda: Fn(lambda x: F.relu(x, inplace=True)),
    "F.leaky_relu": lambda: Fn(lambda x: F.leaky_relu(x, 0.2, True)),
    "F.relu6_kw": lambda: Fn(lambda x: F.relu6(x, inplace=True)),
}


@pytest.mark.parametrize("act", INPLACE.values(), ids=INPLACE.keys())
def test_inplace_activation_reused(act, tmp_path):
    run(InplaceReuse(act()), (1, 3, 4, 5), "dense", tmp_path, scale=3.0)


def test_inplace_activation_on_model_input(tmp_path):
    run(
        InplaceReuse(nn.LeakyReLU(0.1, inplace=True), on_input=True),
        (1, 3, 4, 5),
        "dense",
        tmp_path,
        scale=3.0,
    )


class Reused(nn.Module):
    """One conv, batchnorm and relu module applied twice: the first BatchNorm folds into the first use
    of the conv only (its weights must not leak into the second use)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.bn(self.relu(self.conv(self.relu(self.bn(self.conv(x))))))


@pytest.mark.parametrize("rep", REPS)
def test_module_used_twice(rep, tmp_path):
    res = run(Reused(), (1, 3, 5, 5), rep, tmp_path)
    assert [ly["op"] for ly in res.report["layers"]] == ["conv", "conv", "batchnorm"]


# ---- activations: only the used ones are compiled; NaN propagates like torch -----------------------
@pytest.mark.skipif(shutil.which("nm") is None, reason="binutils (nm) not available")
def test_only_the_activations_a_model_uses_are_linked(tmp_path):
    """model.c defines SC_ACT_MASK from the model's activations, so a ReLU model's object needs no
    expf/tanhf (on a Cortex-M that is about 1.5 KB of libm), and a sigmoid/tanh model still gets them."""
    relu = nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(15, 2))
    smooth = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Sigmoid(), nn.Flatten(), nn.Linear(15, 2), nn.Tanh())
    for name, model, want in (("relu", relu, set()), ("smooth", smooth, {"expf", "tanhf"})):
        res = run(model, (1, 2, 7), "dense", tmp_path / name)
        proc = subprocess.run(["make", "-s", "-C", str(res.directory), "object"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        undefined = subprocess.run(["nm", "-u", str(res.directory / "build" / "host" / "model.o")],
                                   capture_output=True, text=True, check=True).stdout.split()
        assert {s for s in undefined if s in ("expf", "tanhf", "expm1f", "logf")} == want, (name, undefined)


def test_relu_of_nan_is_nan_as_in_torch(tmp_path):
    m = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2), nn.ReLU6()).eval()
    d = tmp_path / "m"
    from codegen import save_compressed_model

    save_compressed_model(m, "dense", input_data=torch.ones(1, 4), directory=d)
    x = torch.tensor([[1.0, float("nan"), 2.0, 3.0], [-1.0, -2.0, -3.0, -4.0]])
    v = verify(m, d, x)
    with torch.no_grad():
        ref = m(x).numpy()
    assert np.isnan(ref[0]).all() and np.isnan(v.outputs[0]).all(), v.outputs
    assert_parity(v.outputs[1], ref[1], "finite row")
