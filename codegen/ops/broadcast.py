"""Elementwise add, sub, mul, div of two tensors whose shapes broadcast (the squeeze-excite gate
(C,1,1) x (C,H,W), (C,1) x (C,L), (1,H,W) x (C,H,W), either order), and sub/div of equal shapes:
IR op, lowering helper (called by the binary lowering of codegen/ops/eltwise.py), int8 forms (add and
sub as TFLite's add with its requantization, mul as TFLite's mul, div (TFLite has none) as one
requantization per element whose multiplier a 256-entry table gives for the divisor's int8 value).

The shapes are reduced at generation time to at most ``MAX_DIMS`` dims of output sizes and per-operand
element strides (0 on a broadcast dim); adjacent dims that walk both operands contiguously are merged,
so the SE gate becomes (C, H*W) with strides (1, 0) for the gate.

Float kernels: runtime_c/sc_strided.h; template templates/ops/strided.j2.
Integer kernels: runtime_c/sc_strided.h (int8 section: sc_i8_s_add, sc_i8_s_mul, sc_i8_s_div);
template templates/ops_int8/strided.j2.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch.fx as fx

from codegen import integer, ir
from codegen.lowering import LowerContext, tensor_meta

MAX_DIMS = 4


@dataclass
class Broadcast(ir.Op):
    """out[i] = a[i . sa] (mode) b[i . sb] over an index space of ``sizes`` (C order)."""

    mode: str = "add"  # add, sub, mul, div
    sizes: tuple[int, ...] = (1, 1, 1, 1)
    a_strides: tuple[int, ...] = (0, 0, 0, 0)
    b_strides: tuple[int, ...] = (0, 0, 0, 0)

    kind: ClassVar[str] = "eltwise"
    template: ClassVar[str] = "strided.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_strided.h",)
    inplace: ClassVar[bool] = True  # a full-size operand is read at the index written

    def describe(self) -> str:
        return f"{self.mode} (broadcast)"


def _strides(shape: tuple[int, ...], out: tuple[int, ...]) -> list[int]:
    """Element strides of an operand of ``shape`` read at the index space ``out`` (right-aligned)."""
    shape = (1,) * (len(out) - len(shape)) + tuple(shape)
    st, acc = [0] * len(out), 1
    for i in range(len(out) - 1, -1, -1):
        st[i] = 0 if shape[i] == 1 else acc
        acc *= shape[i]
    return st


def broadcast_plan(a: tuple[int, ...], b: tuple[int, ...], out: tuple[int, ...]):
    """(sizes, a_strides, b_strides) with dims of size 1 dropped and mergeable neighbours merged."""
    sa, sb = _strides(a, out), _strides(b, out)
    dims = [(n, x, y) for n, x, y in zip(out, sa, sb) if n != 1]
    merged: list[tuple[int, int, int]] = []
    for n, x, y in dims:
        if merged:
            pn, px, py = merged[-1]
            if px == x * n and py == y * n:  # (including both 0): one walk over pn * n elements
                merged[-1] = (pn * n, x, y)
                continue
        merged.append((n, x, y))
    if not merged:
        merged = [(1, 0, 0)]
    return tuple(m[0] for m in merged), tuple(m[1] for m in merged), tuple(m[2] for m in merged)


def lower_broadcast(ctx: LowerContext, node: fx.Node, a: fx.Node, b: fx.Node, mode: str) -> None:
    """Emits a Broadcast op for ``mode`` of the tensors a, b (their shapes broadcast to the node's)."""
    full_a, full_b = tuple(tensor_meta(a).shape), tuple(tensor_meta(b).shape)
    out = tuple(int(d) for d in tensor_meta(node).shape)
    if len(out) == 0 or out[0] != 1 or len(full_a) != len(out) or len(full_b) != len(out):
        raise ctx.fail(node, f"{mode} of shapes {full_a} and {full_b}: both operands must keep the batch "
                       "dimension first", "Give both operands the same number of dimensions (x.view(1, C, 1, 1))")  # fmt: skip
    sizes, sa, sb = broadcast_plan(full_a[1:], full_b[1:], out[1:])
    if len(sizes) > MAX_DIMS:
        raise ctx.fail(node, f"{mode} of shapes {full_a} and {full_b} broadcasts over {len(sizes)} dims",
                       f"Reshape so that at most {MAX_DIMS} dims alternate between broadcast and not")  # fmt: skip
    pad = MAX_DIMS - len(sizes)
    ctx.emit(node, Broadcast(**ctx.common(node, [a, b]), mode=mode, sizes=(1,) * pad + sizes,
                             a_strides=(0,) * pad + sa, b_strides=(0,) * pad + sb))  # fmt: skip


def gather(x: np.ndarray, sizes: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
    """The operand's value at every output index (numpy reference of the C's strided walk)."""
    idx = np.zeros(sizes, dtype=np.int64)
    for d, (n, s) in enumerate(zip(sizes, strides)):
        shape = [1] * len(sizes)
        shape[d] = n
        idx = idx + (np.arange(n, dtype=np.int64) * s).reshape(shape)
    return x.reshape(-1)[idx.reshape(-1)]


# ---- int8 (codegen/integer.py, runtime_c/sc_strided.h, templates/ops_int8/strided.j2) -----------------


@integer.register_int8(Broadcast)
class BroadcastInt8(integer.Int8Handler):
    """add/sub and mul in int32 with plain integer multipliers and one rounding shift
    (``integer.add_constants`` / ``mul_constants``; sub negates b's multiplier)."""

    template = "strided.j2"
    runtime = ("sc_strided.h",)

    def kind_of(self, op: Broadcast) -> str:
        return op.mode

    def rewrite(self, op: Broadcast) -> ir.Op:
        if op.mode == "div":  # its own handler: another kernel header and per-divisor tables
            return BroadcastDiv(**{f.name: getattr(op, f.name) for f in dataclasses.fields(op)})
        return op

    def quantize(self, op: Broadcast, ctx: integer.Int8Context, qo: integer.QOp) -> None:
        qa, qb, qout = ctx.qin(op, 0), ctx.qin(op, 1), ctx.qout(op)
        what = f"'{op.source}'"
        if op.mode in ("add", "sub"):
            qo.scalars.update(integer.add_constants(qa, qb, qout, what, sub=op.mode == "sub"))
        else:
            qo.scalars.update(integer.mul_constants(qa, qb, qout, what))

    def reference(self, qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        op: Broadcast = qo.op  # type: ignore[assignment]
        a = gather(ins[0], op.sizes, op.a_strides)
        b = gather(ins[1], op.sizes, op.b_strides)
        fn = integer.add_reference if op.mode in ("add", "sub") else integer.mul_reference
        return integer.clamp8(fn(a, b, qo.scalars))


@dataclass
class BroadcastDiv(Broadcast):
    """a / b over broadcast shapes in the integer path (``BroadcastInt8.rewrite``; the float path never
    makes it)."""


def div_tables(qa: integer.QParams, qb: integer.QParams, qout: integer.QParams) -> tuple[np.ndarray, np.ndarray]:
    """(mult int32[256], shift int8[256]): for each int8 divisor b, the fixed-point form of
    |s_a / (s_out * s_b * (b - b_zp))| (the kernel negates a - a_zp for b < b_zp). A zero divisor (b == b_zp) and factors
    beyond the multiplier's range get the largest one: the quotient saturates by the sign of a, as a / 0
    is +-inf in PyTorch (0 / 0 gives the output zero point)."""
    mult = np.zeros(256, dtype=np.int64)
    shift = np.zeros(256, dtype=np.int64)
    for k in range(256):
        d = k - 128 - qb.zero_point
        f = math.inf if d == 0 else qa.scale / (qout.scale * qb.scale * abs(d))
        m, s = (integer.INT32_MAX, 30) if f >= 2.0**30 else integer.quantize_multiplier(f)
        mult[k], shift[k] = m, s
    return mult, shift


@integer.register_int8(BroadcastDiv)
class BroadcastDivInt8(integer.Int8Handler):
    """y = mbqm(+-(a - a_zp), mult[b], shift[b]) + out_zp (negated for b < b_zp): one requantization per
    element, its multiplier looked up by the divisor's int8 value (``div_tables``)."""

    kind = "div"
    template = "strided.j2"
    runtime = ("sc_strided.h",)

    def quantize(self, op: Broadcast, ctx: integer.Int8Context, qo: integer.QOp) -> None:
        qa, qb, qout = ctx.qin(op, 0), ctx.qin(op, 1), ctx.qout(op)
        mult, shift = div_tables(qa, qb, qout)
        qo.consts.update(mult=mult, shift=shift)
        ctx.int_array("mult", "_m", "int32_t", mult)
        ctx.int_array("shift", "_sh", "int8_t", shift)
        qo.scalars.update(a_zp=qa.zero_point, b_zp=qb.zero_point, out_zp=qout.zero_point)

    def reference(self, qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        op: Broadcast = qo.op  # type: ignore[assignment]
        s = qo.scalars
        a = gather(ins[0], op.sizes, op.a_strides)
        b = gather(ins[1], op.sizes, op.b_strides)
        d = np.where(b < s["b_zp"], s["a_zp"] - a, a - s["a_zp"])
        y = integer.mbqm(d, qo.consts["mult"][b + 128], qo.consts["shift"][b + 128]) + s["out_zp"]
        return integer.clamp8(y)
