"""Elementwise binary ops (add, mul of equal shapes) and concatenation: IR ops, lowerings, int8 forms.

Float kernels: runtime_c/sc_eltwise.h; templates templates/ops/binary.j2, concat.j2.
Integer kernels: runtime_c/sc_int8.h; templates templates/ops_int8/add.j2, mul.j2, concat.j2.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from math import prod
from typing import ClassVar

import numpy as np
import torch
import torch.fx as fx

from codegen import integer, ir
from codegen.lowering import LowerContext, lowering_key, register_lowering, tensor_meta


@dataclass
class Binary(ir.Op):
    """Elementwise add or mul of two tensors of equal shape (residual blocks)."""

    mode: str = "add"
    numel: int = 0
    act: ir.Activation = ir.NO_ACT

    kind: ClassVar[str] = "eltwise"
    template: ClassVar[str] = "binary.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_eltwise.h",)
    inplace: ClassVar[bool] = True

    def describe(self) -> str:
        return self.mode


@dataclass
class Concat(ir.Op):
    """Concatenation along the channel (first non-batch) dimension: contiguous blocks."""

    sizes: tuple[int, ...] = ()  # elements each input contributes per outer index
    outer: int = 1  # product of the dims before the concatenation dim

    kind: ClassVar[str] = "concat"
    template: ClassVar[str] = "concat.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_eltwise.h",)


_BINARY = {operator.add: "add", torch.add: "add", torch.Tensor.add: "add",
           operator.mul: "mul", torch.mul: "mul", torch.Tensor.mul: "mul"}  # fmt: skip


@register_lowering(*_BINARY)
def lower_binary(ctx: LowerContext, node: fx.Node) -> None:
    a, b = ctx.arg(node, 0, "input"), ctx.arg(node, 1, "other")
    if not all(isinstance(t, fx.Node) and tensor_meta(t) is not None for t in (a, b)):
        raise ctx.fail(
            node,
            f"{_BINARY[lowering_key(node, ctx.modules)]} with a constant operand ({a!r}, {b!r}) is not supported",
            "Only add/mul of two tensors computed by the model are emitted: fold the constant into the layer "
            "that computes the other operand (scale its weight and bias, or add it to the bias)",
        )
    if ctx.shape(a) != ctx.shape(b):
        raise ctx.fail(
            node,
            f"operands have shapes {ctx.shape(a)} and {ctx.shape(b)}; broadcasting is not supported",
            "Give both operands the same shape as computed by layers (expand/expand_as/repeat are not emitted "
            "either), or register a lowering for the broadcast (docs/architecture.md, 'Adding an op')",
        )
    if node.kwargs.get("alpha", 1) != 1:
        raise ctx.fail(node, "torch.add with alpha != 1 is not supported", "Use alpha=1 and fold the scale into the layer "
                       "that computes the operand (its weight and bias)")
    mode = _BINARY[lowering_key(node, ctx.modules)]
    ctx.emit(node, Binary(**ctx.common(node, [a, b]), mode=mode, numel=ctx.numel(node)))


@register_lowering(torch.cat)
def lower_cat(ctx: LowerContext, node: fx.Node) -> None:
    parts = ctx.arg(node, 0, "tensors")
    dim = int(ctx.arg(node, 1, "dim", 0))
    if not isinstance(parts, (list, tuple)) or not all(isinstance(p, fx.Node) and tensor_meta(p) for p in parts):
        raise ctx.fail(node, "torch.cat of non-tensor operands", "Concatenate tensors computed by the model")
    full = tensor_meta(node).shape
    dim = dim % len(full)
    if dim == 0:
        raise ctx.fail(node, "torch.cat along the batch dimension", "Concatenate along dim=1 (channels)")
    outer = prod(int(d) for d in full[1:dim])
    sizes = tuple(ctx.numel(p) // outer for p in parts)
    ctx.emit(node, Concat(**ctx.common(node, list(parts)), sizes=sizes, outer=outer))


# ---- int8 (codegen/integer.py, runtime_c/sc_int8.h, templates/ops_int8/) ---------------------------


@integer.register_int8(Binary)
class BinaryInt8(integer.Int8Handler):
    def kind_of(self, op: Binary) -> str:
        return op.mode

    def template_of(self, op: Binary) -> str:
        return f"{op.mode}.j2"

    def quantize(self, op: Binary, ctx: integer.Int8Context, qo: integer.QOp) -> None:
        qa, qb, qout = ctx.qin(op, 0), ctx.qin(op, 1), ctx.qout(op)
        lo, hi = integer.act_bounds(op.act, qout, f"'{op.source}'")
        if op.mode == "add":
            twice = 2.0 * max(qa.scale, qb.scale)
            am, ash = integer.quantize_multiplier(qa.scale / twice)
            bm, bsh = integer.quantize_multiplier(qb.scale / twice)
            om, osh = integer.quantize_multiplier(twice / ((1 << integer.ADD_LEFT_SHIFT) * qout.scale))
            qo.scalars.update(a_zp=qa.zero_point, a_mult=am, a_shift=ash, b_zp=qb.zero_point, b_mult=bm, b_shift=bsh,
                              left_shift=integer.ADD_LEFT_SHIFT, out_mult=om, out_shift=osh, out_zp=qout.zero_point,
                              act_min=lo, act_max=hi)  # fmt: skip
        else:
            m, sh = integer.quantize_multiplier(qa.scale * qb.scale / qout.scale)
            qo.scalars.update(a_zp=qa.zero_point, b_zp=qb.zero_point, mult=m, shift=sh, out_zp=qout.zero_point,
                              act_min=lo, act_max=hi)  # fmt: skip

    def reference(self, qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        s = qo.scalars
        if qo.kind == "add":
            a = integer.mbqm((ins[0] - s["a_zp"]) << s["left_shift"], s["a_mult"], s["a_shift"])
            b = integer.mbqm((ins[1] - s["b_zp"]) << s["left_shift"], s["b_mult"], s["b_shift"])
            y = integer.mbqm(a + b, s["out_mult"], s["out_shift"]) + s["out_zp"]
        else:
            y = integer.mbqm((ins[0] - s["a_zp"]) * (ins[1] - s["b_zp"]), s["mult"], s["shift"]) + s["out_zp"]
        return integer.clamp8(y, s["act_min"], s["act_max"])


@integer.register_int8(Concat)
class ConcatInt8(integer.Int8Handler):
    kind = "concat"
    template = "concat.j2"

    def quantize(self, op: Concat, ctx: integer.Int8Context, qo: integer.QOp) -> None:
        rows = []
        qout = ctx.qout(op)
        for v in op.inputs:
            m, sh = integer.quantize_multiplier(ctx.qparams[v].scale / qout.scale)
            rows.append((ctx.qparams[v].zero_point, m, sh, qout.zero_point))
        qo.consts["requant"] = np.array(rows, dtype=np.int64)

    def reference(self, qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        op: Concat = qo.op  # type: ignore[assignment]
        parts = []
        for i, (x, size) in enumerate(zip(ins, op.sizes)):
            r = qo.consts["requant"][i]
            parts.append(integer.clamp8(integer.mbqm(x.reshape(op.outer, size) - r[0], r[1], r[2]) + r[3]))
        return np.concatenate(parts, axis=1)
