"""Max and average pooling (1-D and 2-D, adaptive with even windows, mean over trailing dims): IR op,
lowerings, int8 form. Adaptive pools with uneven windows and other means are in ops/reduce.py.

Float kernels: runtime_c/sc_pool.h; template templates/ops/pool.j2.
Integer kernels: the int8 section of runtime_c/sc_pool.h; template templates/ops_int8/pool.j2.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any, ClassVar

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from codegen import integer, ir
from codegen.lowering import LowerContext, as_chw, register_lowering, tensor_meta, window_pair
from codegen.ops.reduce import emit_reduce, lower_adaptive


@dataclass
class Pool2d(ir.Windowed):
    """Max or average pooling (1-D pools have h == 1)."""

    mode: str = "max"
    count_include_pad: bool = True
    divisor: int = 0  # avg pool divisor_override; 0 = none

    kind: ClassVar[str] = "pool"
    template: ClassVar[str] = "pool.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_pool.h",)

    def describe(self) -> str:
        return f"{self.mode}pool"

    def overwrites_input(self) -> bool:
        """Without padding, output k's window starts at input index >= k and outputs are written
        in order after their window is read, so the float kernels (sc_pool.h) run in place."""
        return not self.integer and tuple(self.padding) == (0, 0)


def _pool(ctx: LowerContext, node: fx.Node, mode: str, dims: int, kernel: Any, stride: Any, padding: Any,
          dilation: Any = 1, ceil_mode: bool = False, count_include_pad: bool = True,
          divisor: int | None = None) -> None:  # fmt: skip
    x = ctx.tensor_arg(node, 0, "input")
    in_shape, out_shape = as_chw(ctx.shape(x)), as_chw(ctx.shape(node))
    if stride is None or stride == [] or stride == ():
        stride = kernel

    ctx.emit(
        node,
        Pool2d(
            **ctx.common(node, [x]),
            mode=mode,
            in_shape=in_shape,
            out_shape=out_shape,
            kernel=window_pair(kernel, dims),
            stride=window_pair(stride, dims),
            padding=window_pair(padding, dims, 0),
            dilation=window_pair(dilation, dims),
            count_include_pad=bool(count_include_pad),
            divisor=int(divisor or 0),
        ),
    )


@register_lowering(nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)
def lower_pool_module(ctx: LowerContext, node: fx.Node) -> None:
    m = ctx.module(node)
    dims = 1 if isinstance(m, (nn.MaxPool1d, nn.AvgPool1d)) else 2
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
        if m.return_indices:
            raise ctx.fail(node, "return_indices=True is not supported", "Use return_indices=False")
        _pool(ctx, node, "max", dims, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
    else:
        _pool(ctx, node, "avg", dims, m.kernel_size, m.stride, m.padding, 1, m.ceil_mode,
              m.count_include_pad, getattr(m, "divisor_override", None))  # fmt: skip


@register_lowering(F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d)
def lower_pool_function(ctx: LowerContext, node: fx.Node) -> None:
    f = node.target
    dims = 1 if f in (F.max_pool1d, F.avg_pool1d) else 2
    k = ctx.arg(node, 1, "kernel_size")
    s = ctx.arg(node, 2, "stride", None)
    p = ctx.arg(node, 3, "padding", 0)
    if f in (F.max_pool1d, F.max_pool2d):
        if ctx.arg(node, 6, "return_indices", False):
            raise ctx.fail(node, "return_indices=True is not supported", "Use return_indices=False")
        _pool(ctx, node, "max", dims, k, s, p, ctx.arg(node, 4, "dilation", 1), ctx.arg(node, 5, "ceil_mode", False))
    else:
        _pool(ctx, node, "avg", dims, k, s, p, 1, ctx.arg(node, 4, "ceil_mode", False),
              ctx.arg(node, 5, "count_include_pad", True), ctx.arg(node, 6, "divisor_override", None))  # fmt: skip


@register_lowering(nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d)
def lower_adaptive_avg(ctx: LowerContext, node: fx.Node) -> None:
    x = ctx.tensor_arg(node, 0, "input")
    c, h, w = as_chw(ctx.shape(x))
    _, oh, ow = as_chw(ctx.shape(node))
    if h % oh or w % ow:  # uneven windows
        lower_adaptive(ctx, node, "avg")
        return
    dims = 1 if len(ctx.shape(x)) == 2 else 2
    k = (h // oh, w // ow)
    _pool(ctx, node, "avg", 2, k, k, 0)
    del dims


@register_lowering(nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, F.adaptive_max_pool1d, F.adaptive_max_pool2d)
def lower_adaptive_max(ctx: LowerContext, node: fx.Node) -> None:
    indices = ctx.module(node).return_indices if node.op == "call_module" else ctx.arg(node, 2, "return_indices", False)
    if indices:
        raise ctx.fail(node, "return_indices=True is not supported", "Use return_indices=False")
    x = ctx.tensor_arg(node, 0, "input")
    _, h, w = as_chw(ctx.shape(x))
    _, oh, ow = as_chw(ctx.shape(node))
    if h % oh or w % ow:  # uneven windows
        lower_adaptive(ctx, node, "max")
    else:
        _pool(ctx, node, "max", 2, (h // oh, w // ow), (h // oh, w // ow), 0)


@register_lowering(torch.mean, torch.Tensor.mean)
def lower_mean(ctx: LowerContext, node: fx.Node) -> None:
    x = ctx.tensor_arg(node, 0, "input")
    full = len(tensor_meta(x).shape)
    dim = ctx.arg(node, 1, "dim", None)
    dims = sorted({int(d) % full for d in (dim if isinstance(dim, (list, tuple)) else [dim])}) if dim is not None else []
    if not dims or dims[0] == 0 or dims != list(range(dims[0], full)) or dims[0] < 2:
        emit_reduce(ctx, node, "mean", dim)  # any other run of adjacent dims (ops/reduce.py)
        return
    shape = ctx.shape(x)
    c_outer = prod(shape[: dims[0] - 1])
    inner = prod(shape[dims[0] - 1 :])
    op = Pool2d(
        **ctx.common(node, [x]),
        mode="avg",
        in_shape=(c_outer, 1, inner),
        out_shape=(c_outer, 1, 1),
        kernel=(1, inner),
        stride=(1, inner),
    )
    ctx.emit(node, op)


# ---- int8 (codegen/integer.py, the int8 section of the runtime header, templates/ops_int8/) ---------


def _pool_windows(op: Pool2d):
    c, h, w = op.in_shape
    _, ho, wo = op.out_shape
    for oy in range(ho):
        for ox in range(wo):
            yield oy, ox


@integer.register_int8(Pool2d)
class PoolInt8(integer.Int8Handler):
    """Max and average pooling keep their input's scale and zero point."""
    runtime = ("sc_pool.h",)

    template = "pool.j2"
    keeps_qparams = True

    def kind_of(self, op: Pool2d) -> str:
        return op.mode + "pool"

    def quantize(self, op: Pool2d, ctx: integer.Int8Context, qo: integer.QOp) -> None:
        qo.scalars["zp"] = ctx.qin(op).zero_point

    def reference(self, qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        return (self._max if qo.kind == "maxpool" else self._avg)(qo, ins)

    @staticmethod
    def _max(qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        op: Pool2d = qo.op  # type: ignore[assignment]
        c, h, w = op.in_shape
        _, ho, wo = op.out_shape
        x = ins[0].reshape(c, h, w)
        out = np.full((c, ho, wo), -128, dtype=np.int64)
        for oy, ox in _pool_windows(op):
            ys = [oy * op.stride[0] - op.padding[0] + k * op.dilation[0] for k in range(op.kernel[0])]
            xs = [ox * op.stride[1] - op.padding[1] + k * op.dilation[1] for k in range(op.kernel[1])]
            ys = [y for y in ys if 0 <= y < h]
            xs = [x_ for x_ in xs if 0 <= x_ < w]
            if ys and xs:
                out[:, oy, ox] = np.maximum(x[:, ys][:, :, xs].reshape(c, -1).max(axis=1), -128)
        return out

    @staticmethod
    def _avg(qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        op: Pool2d = qo.op  # type: ignore[assignment]
        zp = qo.scalars["zp"]
        c, h, w = op.in_shape
        _, ho, wo = op.out_shape
        x = ins[0].reshape(c, h, w) - zp
        out = np.zeros((c, ho, wo), dtype=np.int64)
        for oy, ox in _pool_windows(op):
            hs, ws = oy * op.stride[0] - op.padding[0], ox * op.stride[1] - op.padding[1]
            he, we = min(hs + op.kernel[0], h + op.padding[0]), min(ws + op.kernel[1], w + op.padding[1])
            n = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            total = x[:, hs:he, ws:we].reshape(c, -1).sum(axis=1)
            if op.divisor:
                n = op.divisor
            elif not op.count_include_pad:
                n = (he - hs) * (we - ws)
            n = max(n, 1)
            pos = total > 0
            num = np.where(pos, total + n // 2, total - n // 2)
            q = np.where(num >= 0, num // n, -((-num) // n))  # C division truncates toward zero
            out[:, oy, ox] = integer.clamp8(q + zp)
        return out
