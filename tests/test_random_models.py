"""Randomly generated architectures (hypothesis): stacks of conv / depthwise conv / pool / pad /
batchnorm / activation / residual add / channel concat blocks with random but valid
hyperparameters, then a flatten, global-pool or mean head with linear layers — parity through gcc
in both representations (CSR with random per-layer densities, empty layers included).

Reproducible: derandomized (the examples depend only on the test code), no example database.
Shrinking is off to bound the run time; on failure the architecture is printed (hypothesis
``note``) — paste it into a test_ops.py case to debug. Set SPARSECOMP_HYPOTHESIS_EXAMPLES to run more;
set SPARSECOMP_HYPOTHESIS_EXPLORE=1 (with pytest --hypothesis-seed=N) to explore other examples.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn as nn
from helpers import emit_and_verify, randomize_batchnorm, require_sanitizer, sparsify_
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("SPARSECOMP_HYPOTHESIS_EXAMPLES", "8"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("SPARSECOMP_HYPOTHESIS_EXPLORE"),
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
ACTS = [nn.ReLU, nn.ReLU6, lambda: nn.LeakyReLU(0.15), nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid]
DENSITIES = [0.0, 0.1, 0.4, 0.8, 1.0]


class Residual(nn.Module):
    """y = x + act(conv(x)) with a shape-preserving conv."""

    def __init__(self, conv: nn.Module, act: nn.Module):
        super().__init__()
        self.conv, self.act = conv, act

    def forward(self, x):
        return x + self.act(self.conv(x))


class CatBranch(nn.Module):
    """y = cat([x, conv1x1(x)], dim=1)."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return torch.cat([x, self.conv(x)], 1)


class Mean(nn.Module):
    """x.mean over the spatial dims (2,) or (2, 3)."""

    def __init__(self, dims: int):
        super().__init__()
        self.dims = tuple(range(2, 2 + dims))

    def forward(self, x):
        return x.mean(self.dims)


def _shape(layers: list[nn.Module], x_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """Output shape of the stack, or None if these hyperparameters are invalid for it."""
    try:
        with torch.no_grad():
            y = nn.Sequential(*layers).eval()(torch.randn(x_shape))
    except RuntimeError:
        return None
    # a max pool whose window lies entirely in the padding (possible with dilation) gives -inf in torch too
    return tuple(y.shape) if y.numel() and bool(torch.isfinite(y).all()) else None


def _block(draw, dims: int, c: int):
    """One random block for a (C, L) (dims=1) or (C, H, W) (dims=2) activation with c channels."""
    Conv = nn.Conv1d if dims == 1 else nn.Conv2d
    kind = draw(
        st.sampled_from(["conv", "conv", "dwconv", "maxpool", "avgpool", "bn", "act", "pad", "res", "cat"])
    )
    if kind == "conv":
        cout = draw(st.integers(1, 6))
        stride = draw(st.integers(1, 3))
        dilation = draw(st.integers(1, 2))
        k = draw(st.integers(1, 4))
        if stride == 1 and draw(st.booleans()):
            padding = draw(st.sampled_from(["same", "valid"]))
        else:
            padding = draw(st.integers(0, 2))
        groups = draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0 and cout % g == 0]))
        return Conv(c, cout, k, stride=stride, padding=padding, dilation=dilation, groups=groups,
                    bias=draw(st.booleans()))  # fmt: skip
    if kind == "dwconv":
        mult = draw(st.integers(1, 2))
        k = draw(st.integers(2, 5))
        return Conv(
            c, c * mult, k, stride=draw(st.integers(1, 2)), padding=draw(st.integers(0, k // 2)), groups=c
        )
    if kind in ("maxpool", "avgpool"):
        k = draw(st.integers(1, 3))
        stride = draw(st.integers(1, 3))
        pad = draw(st.integers(0, k // 2))
        ceil = draw(st.booleans())
        if kind == "maxpool":
            Pool = nn.MaxPool1d if dims == 1 else nn.MaxPool2d
            return Pool(k, stride, pad, dilation=draw(st.integers(1, 2)), ceil_mode=ceil)
        if dims == 1:
            return nn.AvgPool1d(k, stride, pad, ceil_mode=ceil, count_include_pad=draw(st.booleans()))
        div = draw(st.sampled_from([None, None, 3]))
        return nn.AvgPool2d(
            k, stride, pad, ceil_mode=ceil, count_include_pad=draw(st.booleans()), divisor_override=div
        )
    if kind == "bn":
        return (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(c)
    if kind == "act":
        return draw(st.sampled_from(ACTS))()
    if kind == "pad":
        n = 2 * dims
        pads = tuple(draw(st.integers(0, 2)) for _ in range(n))
        value = draw(st.sampled_from([0.0, 0.5, -1.0]))
        return (nn.ConstantPad1d if dims == 1 else nn.ConstantPad2d)(pads, value)
    if kind == "res":
        k = draw(st.sampled_from([1, 3]))
        return Residual(Conv(c, c, k, padding=k // 2), draw(st.sampled_from(ACTS))())
    return CatBranch(Conv(c, draw(st.integers(1, 3)), 1))


def _head(draw, layers: list[nn.Module], shape: tuple[int, ...]) -> None:
    dims = len(shape) - 2
    kind = draw(st.sampled_from(["flatten", "gap", "mean", "none"]))
    if kind == "none":
        return
    if kind == "flatten":
        layers.append(nn.Flatten())
        feat = 1
        for d in shape[1:]:
            feat *= d
    else:
        if kind == "gap":
            layers.append(nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1))
            layers.append(nn.Flatten())
        else:
            layers.append(Mean(dims))
        feat = shape[1]
    _linear_stack(draw, layers, feat)


def _linear_stack(draw, layers: list[nn.Module], feat: int) -> None:
    """1-2 Linear layers, each maybe with BatchNorm1d and an activation, maybe a final (log-)softmax."""
    for _ in range(draw(st.integers(1, 2))):
        out = draw(st.integers(1, 10))
        layers.append(nn.Linear(feat, out, bias=draw(st.booleans())))
        if draw(st.booleans()):
            layers.append(nn.BatchNorm1d(out))
        if draw(st.booleans()):
            layers.append(draw(st.sampled_from(ACTS))())
        feat = out
    final = draw(st.sampled_from([None, None, "softmax", "log_softmax"]))
    if final:
        layers.append(nn.Softmax(dim=-1) if final == "softmax" else nn.LogSoftmax(dim=-1))


def _architecture(draw, dims: int) -> tuple[nn.Sequential, tuple[int, ...]]:
    c = draw(st.integers(1, 4))
    spatial = tuple(draw(st.integers(3, 12 if dims == 2 else 24)) for _ in range(dims))
    x_shape = (1, c, *spatial)
    layers: list[nn.Module] = []
    shape = x_shape
    for _ in range(draw(st.integers(1, 5))):
        for _attempt in range(5):
            blk = _block(draw, dims, shape[1])
            new = _shape([*layers, blk], x_shape)
            if new is not None and math.prod(new[1:]) <= 4096:
                layers.append(blk)
                shape = new
                break
    _head(draw, layers, shape)
    return nn.Sequential(*layers), x_shape


def _check(data, dims: int, rep: str, tmp_path_factory, seed: int, sanitize: bool = False) -> None:
    torch.manual_seed(seed)
    model, x_shape = _architecture(data.draw, dims)
    randomize_batchnorm(model, seed)
    if rep == "csr":
        for i, m in enumerate(model.modules()):
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                sparsify_(
                    m.weight, data.draw(st.sampled_from(DENSITIES), label=f"density of module {i}"), seed + i
                )
    note(f"input {x_shape}, representation {rep}:\n{model}")
    emit_and_verify(
        model, x_shape, rep, tmp_path_factory.mktemp("rand"), n_inputs=2, seed=seed, sanitize=sanitize
    )


@SETTINGS
@given(data=st.data())
def test_random_conv2d_dense(data, tmp_path_factory):
    _check(data, 2, "dense", tmp_path_factory, 10)


@SETTINGS
@given(data=st.data())
def test_random_conv2d_csr(data, tmp_path_factory):
    _check(data, 2, "csr", tmp_path_factory, 20)


@SETTINGS
@given(data=st.data())
def test_random_conv1d_dense(data, tmp_path_factory):
    _check(data, 1, "dense", tmp_path_factory, 30)


@SETTINGS
@given(data=st.data())
def test_random_conv1d_csr(data, tmp_path_factory):
    _check(data, 1, "csr", tmp_path_factory, 40)


@settings(SETTINGS, max_examples=max(1, EXAMPLES * 3 // 8))
@given(data=st.data())
def test_random_sanitized(data, tmp_path_factory):
    """Random 1-D and 2-D architectures built with AddressSanitizer + UBSan (out-of-bounds reads of
    the input, output and weight arrays, signed overflow, misaligned access)."""
    require_sanitizer()
    dims = data.draw(st.sampled_from([1, 2]))
    _check(data, dims, data.draw(st.sampled_from(["dense", "csr"])), tmp_path_factory, 60, sanitize=True)


@SETTINGS
@given(data=st.data())
def test_random_mlp(data, tmp_path_factory):
    torch.manual_seed(50)
    feat = data.draw(st.integers(1, 40))
    layers: list[nn.Module] = []
    _linear_stack(data.draw, layers, feat)
    model = nn.Sequential(*layers)
    randomize_batchnorm(model, 50)
    rep = data.draw(st.sampled_from(["dense", "csr"]))
    for i, m in enumerate(model.modules()):
        if isinstance(m, nn.Linear):
            sparsify_(m.weight, data.draw(st.sampled_from(DENSITIES)), 50 + i)
    note(f"input (1, {feat}), representation {rep}:\n{model}")
    emit_and_verify(model, (1, feat), rep, tmp_path_factory.mktemp("mlp"), n_inputs=2)
