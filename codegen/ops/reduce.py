"""Reductions over any run of adjacent dims, with or without keepdim: ``sum``, ``mean`` (the means
that are not a global pool; those stay in ops/pool.py), ``amax``/``amin``, ``torch.max(x, dim)`` /
``torch.min(x, dim)`` values (the indices are refused when used), and adaptive max/avg pooling with
uneven windows. The input is viewed as (outer, n, inner): the n reduced values of output (o, i) are
``x[o*n*inner + j*inner + i]``.

Float kernels: runtime_c/sc_reduce.h; templates templates/ops/reduce.j2, adaptive_pool.j2.
Integer kernels: runtime_c/sc_reduce.h (int8 section); templates templates/ops_int8/reduce.j2,
adaptive_pool.j2. max, min and mean keep their input's scale and zero point (mean rounds half away
from zero, as the int8 average pool); sum (TFLite's int8 Sum: the int32 sum of x - zp requantized by
s_in / s_out to its own calibrated range) is sc_i8_reduce_sum (runtime_c/sc_reduce.h),
templates/ops_int8/reduce_sum.j2.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from math import prod
from typing import ClassVar

import numpy as np
import torch
import torch.fx as fx

from codegen import integer, ir
from codegen.errors import UnsupportedConfigError
from codegen.lowering import LowerContext, as_chw, lowering_key, register_lowering, tensor_meta

REDUCE_MODES = ("sum", "mean", "max", "min")  # the C enum SC_REDUCE_* in sc_reduce.h, in this order


@dataclass
class Reduce(ir.Op):
    """out[o][i] = reduce_j x[o][j][i] over (outer, n, inner)."""

    mode: str = "max"
    outer: int = 1
    n: int = 1
    inner: int = 1

    kind: ClassVar[str] = "reduce"
    template: ClassVar[str] = "reduce.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_reduce.h",)

    def describe(self) -> str:
        return f"reduce_{self.mode}"

    @property
    def c_mode(self) -> str:
        return "SC_REDUCE_" + self.mode.upper()


@dataclass
class AdaptivePool(ir.Op):
    """Adaptive max/avg pooling of (C, H, W) to (C, OH, OW) with PyTorch's windows
    [floor(i*H/OH), ceil((i+1)*H/OH)) (uneven when OH does not divide H)."""

    mode: str = "max"
    in_shape: tuple[int, int, int] = (1, 1, 1)
    out_hw: tuple[int, int] = (1, 1)

    kind: ClassVar[str] = "adaptive_pool"
    template: ClassVar[str] = "adaptive_pool.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_reduce.h",)

    def describe(self) -> str:
        return f"adaptive_{self.mode}pool"

    @property
    def c_mode(self) -> str:
        return "SC_REDUCE_" + ("MEAN" if self.mode == "avg" else "MAX")


def reduce_dims(ctx: LowerContext, node: fx.Node, x: fx.Node, dim) -> tuple[int, int, int]:
    """(outer, n, inner) of a reduction of x over ``dim`` (an int or a sequence of adjacent dims)."""
    full = tuple(int(d) for d in tensor_meta(x).shape)
    if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0):
        raise ctx.fail(node, "it reduces over every dim, the batch included",
                       "Reduce over the non-batch dims, e.g. x.amax(dim=(1, 2, 3))")  # fmt: skip
    dims = sorted({int(d) % len(full) for d in (dim if isinstance(dim, (list, tuple)) else [dim])})
    if dims[0] == 0:
        raise ctx.fail(node, "it reduces over the batch dimension", "Reduce over dims 1 and later")
    if dims != list(range(dims[0], dims[-1] + 1)):
        raise ctx.fail(node, f"it reduces over dims {tuple(dims)}, which are not adjacent",
                       "Reduce over adjacent dims (or in two steps)")  # fmt: skip
    return prod(full[1 : dims[0]]), prod(full[dims[0] : dims[-1] + 1]), prod(full[dims[-1] + 1 :])


def emit_reduce(ctx: LowerContext, node: fx.Node, mode: str, dim) -> None:
    x = ctx.tensor_arg(node, 0, "input")
    outer, n, inner = reduce_dims(ctx, node, x, dim)
    common = ctx.common(node, [x])
    ctx.emit(node, Reduce(**common, mode=mode, outer=outer, n=n, inner=inner))


_AMAX = {torch.amax: "max", torch.Tensor.amax: "max", torch.amin: "min", torch.Tensor.amin: "min",
         torch.sum: "sum", torch.Tensor.sum: "sum"}  # fmt: skip


@register_lowering(*_AMAX)
def lower_amax(ctx: LowerContext, node: fx.Node) -> None:
    mode = _AMAX[lowering_key(node, ctx.modules)]
    if mode == "sum" and ctx.arg(node, 3, "dtype", None) is not None:
        raise ctx.fail(node, "sum with a dtype is not supported", "Sum in float32 (drop dtype=)")
    emit_reduce(ctx, node, mode, ctx.arg(node, 1, "dim", None))


@register_lowering(torch.max, torch.Tensor.max, torch.min, torch.Tensor.min)
def lower_max(ctx: LowerContext, node: fx.Node) -> None:
    mode = "max" if lowering_key(node, ctx.modules) in (torch.max, torch.Tensor.max) else "min"
    dim = ctx.arg(node, 1, "dim", None)
    if isinstance(dim, fx.Node) or dim is None:
        raise ctx.fail(
            node, f"torch.{mode} without dim (a full reduction) or of two tensors is not supported",
            f"Use torch.a{mode}(x, dim=...) over the non-batch dims, or torch.maximum/minimum for two tensors",
        )  # fmt: skip
    x = ctx.tensor_arg(node, 0, "input")
    outer, n, inner = reduce_dims(ctx, node, x, dim)
    if tensor_meta(node) is not None:  # pragma: no cover - torch.max(x, dim) returns (values, indices)
        raise ctx.fail(node, "unexpected single result", "Use torch.amax")
    keep = bool(ctx.arg(node, 2, "keepdim", False))
    full = list(int(d) for d in tensor_meta(x).shape)
    d = int(dim) % len(full)
    shape = tuple(full[1:d] + ([1] if keep else []) + full[d + 1 :])
    out = ctx.value_names(f"v_{node.name}")
    ctx.values[out] = ir.Value(out, shape)
    op = Reduce(name=ctx.layer_names(node.name), source=node.name, torch_op=f"torch.{mode}(dim={d})",
                inputs=[ctx.value(x)], output=out, mode=mode, outer=outer, n=n, inner=inner)  # fmt: skip
    ctx.emit(node, op)
    ctx.env.pop(node.name, None)
    ctx.tuples[node.name] = [out, None]  # (values, indices): the indices are not computed


def lower_adaptive(ctx: LowerContext, node: fx.Node, mode: str) -> None:
    """Adaptive pooling with uneven windows (the even ones are plain pools, ops/pool.py)."""
    x = ctx.tensor_arg(node, 0, "input")
    _, oh, ow = as_chw(ctx.shape(node))
    ctx.emit(node, AdaptivePool(**ctx.common(node, [x]), mode=mode, in_shape=as_chw(ctx.shape(x)), out_hw=(oh, ow)))


# ---- int8 ------------------------------------------------------------------------------------------


def round_div(total: np.ndarray, n: int) -> np.ndarray:
    """total / n rounded half away from zero, as the C (and the int8 average pool)."""
    num = np.where(total > 0, total + n // 2, total - n // 2)
    return np.where(num >= 0, num // n, -((-num) // n))


@integer.register_int8(Reduce)
class ReduceInt8(integer.Int8Handler):
    """max, min, mean: the output keeps the input's scale and zero point."""

    template = "reduce.j2"
    keeps_qparams = True
    runtime = ("sc_reduce.h",)

    def kind_of(self, op: Reduce) -> str:
        return f"reduce_{op.mode}"

    def rewrite(self, op: Reduce) -> ir.Op:
        if type(op) is Reduce and op.mode == "sum":  # its own range: another handler (ReduceSumInt8)
            return ReduceSum(**{f.name: getattr(op, f.name) for f in dataclasses.fields(op)})
        return op

    def quantize(self, op: Reduce, ctx: integer.Int8Context, qo: integer.QOp) -> None:
        qo.scalars["zp"] = ctx.qin(op).zero_point

    def reference(self, qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        op: Reduce = qo.op  # type: ignore[assignment]
        x = ins[0].reshape(op.outer, op.n, op.inner)
        if op.mode == "max":
            return x.max(axis=1)
        if op.mode == "min":
            return x.min(axis=1)
        zp = qo.scalars["zp"]
        return integer.clamp8(round_div((x - zp).sum(axis=1), op.n) + zp)


@dataclass
class ReduceSum(Reduce):
    """A sum in the integer path (``ReduceInt8.rewrite``; the float path never makes it)."""


@integer.register_int8(ReduceSum)
class ReduceSumInt8(integer.Int8Handler):
    """TFLite's int8 Sum: y = mbqm(sum_j (x_j - in_zp), s_in / s_out) + out_zp (int32 accumulator)."""

    kind = "reduce_sum"
    template = "reduce_sum.j2"
    runtime = ("sc_reduce.h",)

    def check(self, op: Reduce) -> None:
        if op.n * 255 > integer.INT32_MAX:
            raise UnsupportedConfigError(f"layer '{op.source}': an int8 sum of {op.n} values overflows its int32 "
                                         "accumulator; sum in steps or emit without integer=True")  # fmt: skip

    def quantize(self, op: Reduce, ctx: integer.Int8Context, qo: integer.QOp) -> None:
        qin, qout = ctx.qin(op), ctx.qout(op)
        m, s = integer.quantize_multiplier(qin.scale / qout.scale)
        qo.scalars.update(zp=qin.zero_point, mult=m, shift=s, out_zp=qout.zero_point)

    def reference(self, qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        op: Reduce = qo.op  # type: ignore[assignment]
        s = qo.scalars
        total = (ins[0].reshape(op.outer, op.n, op.inner) - s["zp"]).sum(axis=1)
        return integer.clamp8(integer.mbqm(total, s["mult"], s["shift"]) + s["out_zp"])


def adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


@integer.register_int8(AdaptivePool)
class AdaptivePoolInt8(ReduceInt8):
    """The output keeps the input's scale and zero point (avg rounds half away from zero)."""

    template = "adaptive_pool.j2"

    def kind_of(self, op: AdaptivePool) -> str:  # type: ignore[override]
        return f"adaptive_{op.mode}pool"

    def check(self, op: AdaptivePool) -> None:  # type: ignore[override]
        """max and avg both have a kernel."""

    def reference(self, qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        op: AdaptivePool = qo.op  # type: ignore[assignment]
        c, h, w = op.in_shape
        x = ins[0].reshape(c, h, w)
        zp = qo.scalars["zp"]
        out = np.zeros((c, *op.out_hw), dtype=np.int64)
        for oy, (y0, y1) in enumerate(adaptive_windows(h, op.out_hw[0])):
            for ox, (x0, x1) in enumerate(adaptive_windows(w, op.out_hw[1])):
                win = x[:, y0:y1, x0:x1].reshape(c, -1)
                if op.mode == "max":
                    out[:, oy, ox] = win.max(axis=1)
                else:
                    out[:, oy, ox] = integer.clamp8(round_div((win - zp).sum(axis=1), win.shape[1]) + zp)
        return out

