"""Elementwise binary ops (add, mul of equal shapes) and concatenation: IR ops, lowerings, int8 forms.
The binary lowering also dispatches sub/div, broadcasting (codegen/ops/broadcast.py) and scalar
operands (codegen/ops/unary.py).

Float kernels: runtime_c/sc_eltwise.h; templates templates/ops/binary.j2, concat.j2.
Integer kernels: the int8 section of runtime_c/sc_eltwise.h; templates templates/ops_int8/add.j2, mul.j2, concat.j2.
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
from codegen.lowering import LowerContext, accepts_constants, lowering_key, register_lowering, tensor_meta
from codegen.ops.batchnorm import ChannelAffine
from codegen.ops.broadcast import lower_broadcast
from codegen.ops.unary import emit_unary


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
# sub/div, the in-place forms (x += y) and Tensor.add_: broadcasting or with a scalar (codegen/ops/broadcast.py,
# codegen/ops/unary.py); equal-shape add/mul stay Binary
_MORE = {operator.sub: "sub", torch.sub: "sub", torch.Tensor.sub: "sub", torch.subtract: "sub",
         operator.truediv: "div", torch.div: "div", torch.Tensor.div: "div", torch.divide: "div",
         torch.true_divide: "div", torch.Tensor.true_divide: "div",
         operator.iadd: "add", operator.isub: "sub", operator.imul: "mul", operator.itruediv: "div",
         torch.Tensor.add_: "add", torch.Tensor.sub_: "sub", torch.Tensor.mul_: "mul", torch.Tensor.div_: "div",
         torch.rsub: "rsub"}  # fmt: skip
_INPLACE = {operator.iadd, operator.isub, operator.imul, operator.itruediv,
            torch.Tensor.add_, torch.Tensor.sub_, torch.Tensor.mul_, torch.Tensor.div_}  # fmt: skip
# scalar operand -> Unary fn: (tensor (op) scalar, scalar (op) tensor)
_SCALAR_FN = {"add": ("add_s", "add_s"), "sub": ("sub_s", "rsub_s"), "mul": ("mul_s", "mul_s"),
              "div": ("div_s", "rdiv_s")}  # fmt: skip


def _is_tensor(t: object) -> bool:
    return isinstance(t, fx.Node) and tensor_meta(t) is not None


@register_lowering(*_BINARY, *_MORE)
def lower_binary(ctx: LowerContext, node: fx.Node) -> None:
    key = lowering_key(node, ctx.modules)
    mode = _BINARY.get(key) or _MORE[key]
    a, b = ctx.arg(node, 0, "input"), ctx.arg(node, 1, "other")
    if mode == "rsub":  # torch.rsub(x, y) = y - x
        a, b, mode = b, a, "sub"
    if node.kwargs.get("alpha", 1) != 1 or len(node.args) > 2:
        raise ctx.fail(node, f"{mode} with alpha != 1 is not supported", "Scale the operand explicitly")
    if node.kwargs.get("rounding_mode") is not None:
        raise ctx.fail(node, "division with a rounding_mode is not supported", "Use true division")
    if _is_constant(a) or _is_constant(b):
        _lower_constant_operand(ctx, node, a, b, mode)
        return
    if key in _BINARY and _is_tensor(a) and _is_tensor(b) and ctx.shape(a) == ctx.shape(b):
        ctx.emit(node, Binary(**ctx.common(node, [a, b]), mode=mode, numel=ctx.numel(node)))
        return
    number = (int, float)
    if _is_tensor(a) and _is_tensor(b):
        old = ctx.value(a)
        lower_broadcast(ctx, node, a, b, mode)
    elif _is_tensor(a) and isinstance(b, number) and not isinstance(b, bool):
        old = ctx.value(a)
        emit_unary(ctx, node, a, _SCALAR_FN[mode][0], float(b))
    elif _is_tensor(b) and isinstance(a, number) and not isinstance(a, bool):
        old = ctx.value(b)
        emit_unary(ctx, node, b, _SCALAR_FN[mode][1], float(a))
    else:
        raise ctx.fail(
            node, f"{mode} of {_operand(a)} and {_operand(b)} is not supported",
            "Elementwise ops take tensors computed from the model input (shapes that broadcast) or Python "
            "numbers; for a parameter, use a module (e.g. a 1x1 depthwise conv or nn.BatchNorm2d)",
        )  # fmt: skip
    if key in _INPLACE:  # x += y: later users of x read the sum
        for name, value in list(ctx.env.items()):
            if value == old:
                ctx.env[name] = ctx.env[node.name]


def _is_constant(t: object) -> bool:
    return isinstance(t, fx.Node) and t.op == "get_attr"


def _lower_constant_operand(ctx: LowerContext, node: fx.Node, a: object, b: object, mode: str) -> None:
    """``x (op) c`` / ``c (op) x`` with ``c`` a parameter or buffer (after codegen.constfold, e.g. a layer
    scale ``self.gamma.reshape(1, -1, 1, 1)``, a position embedding): a one-element ``c`` is a scalar; a ``c``
    that varies over dims 1..j (all of each) and not after is a ChannelAffine storing only the operand
    (x + t or x * s: the C rounds once, as PyTorch does)."""
    first = _is_constant(a)
    x, c_node = (b, a) if first else (a, b)
    index = 0 if first else 1
    if not _is_tensor(x):
        raise ctx.fail(node, f"{mode} of {_operand(a)} and {_operand(b)} is not supported",
                       "One operand must be computed from the model input")  # fmt: skip
    c = ctx.constant(node, index, "input" if first else "other")
    shape = ctx.shape(x)
    if ctx.shape(node) != shape:
        raise ctx.fail(node, f"{mode} of a tensor of shape {shape} and {_operand(c_node)} of shape "
                       f"{tuple(c.shape)} broadcasts the tensor to {ctx.shape(node)}",
                       "Give the constant the tensor's shape or one that broadcasts into it")  # fmt: skip
    if c.dtype != torch.float32:
        raise ctx.fail(node, f"{_operand(c_node)} has dtype {c.dtype}", "Use a float32 constant")
    if c.numel() == 1:
        v = float(c.reshape(()))
        fn = _SCALAR_FN[mode][1 if first else 0]
        emit_unary(ctx, node, x, fn, v)
        return
    full = (1, *shape)
    cs = (1,) * (len(full) - c.dim()) + tuple(c.shape)
    # the constant must vary over a leading block of dims (1..j) and be constant after it: "channels" are
    # that block's elements (one per channel for a (1, C, 1, 1) layer scale, every element for a (T, D)
    # position embedding), "inner" the elements each value covers
    j = max((i for i, d in enumerate(cs) if d != 1), default=0)
    if len(cs) != len(full) or cs[0] != 1 or tuple(cs[1 : j + 1]) != tuple(full[1 : j + 1]):
        raise ctx.fail(
            node, f"{mode} with {_operand(c_node)} of shape {tuple(c.shape)} on a tensor of shape {shape} "
            "(batch dimension excluded) is supported only for a constant that varies along dim 1 (one value per "
            "channel, e.g. shape (1, C, 1, 1)), along dims 1..j in full (e.g. a position embedding of the "
            "tensor's shape) or is a single value",
            "Reshape or expand the constant to one of those shapes, or use a module (nn.BatchNorm2d, a 1x1 "
            "depthwise conv)",
        )  # fmt: skip
    channels, inner = prod(full[1 : j + 1]), prod(full[j + 1 :])
    v = np.ascontiguousarray(c.detach().reshape(-1).numpy().astype(np.float32))
    if mode == "mul":
        amode, params = "scale", {"scale": v}
    elif mode == "add":
        amode, params = "shift", {"shift": v}
    elif mode == "sub" and not first:  # x - c = x + (-c): exact
        amode, params = "shift", {"shift": -v}
    elif mode == "sub":  # c - x = (-x) + c: exact
        amode, params = "affine", {"scale": -np.ones_like(v), "shift": v}
    else:  # div: exact only as a multiplication by an exact reciprocal
        recip = (np.float32(1) / v).astype(np.float32)
        if first or not np.all(np.isfinite(recip)) or not np.array_equal(recip.astype(np.float64) * v, np.ones_like(v)):
            raise ctx.fail(node, f"division by {_operand(c_node)} is not exact as a multiplication",
                           "Multiply by the reciprocal in the model (x * (1 / c))")  # fmt: skip
        amode, params = "scale", {"scale": recip}
    ctx.emit(node, ChannelAffine(**ctx.common(node, [x]), params=params, channels=channels, inner=inner,
                                 mode=amode))  # fmt: skip


def _operand(t: object) -> str:
    if isinstance(t, fx.Node):
        return f"self.{t.target} (a constant tensor)" if t.op == "get_attr" else f"'{t.name}' (not a tensor)"
    return repr(t)


accepts_constants(*_BINARY, *_MORE)  # a parameter operand: _lower_constant_operand


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


# ---- int8 (codegen/integer.py, the int8 section of the runtime header, templates/ops_int8/) ---------


@integer.register_int8(Binary)
class BinaryInt8(integer.Int8Handler):
    runtime = ("sc_eltwise.h",)
    def kind_of(self, op: Binary) -> str:
        return op.mode

    def template_of(self, op: Binary) -> str:
        return f"{op.mode}.j2"

    def quantize(self, op: Binary, ctx: integer.Int8Context, qo: integer.QOp) -> None:
        qa, qb, qout = ctx.qin(op, 0), ctx.qin(op, 1), ctx.qout(op)
        what = f"'{op.source}'"
        lo, hi = integer.act_bounds(op.act, qout, what)
        if op.mode == "add":
            qo.scalars.update(integer.add_constants(qa, qb, qout, what), act_min=lo, act_max=hi)
        else:
            qo.scalars.update(integer.mul_constants(qa, qb, qout, what), act_min=lo, act_max=hi)

    def reference(self, qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        s = qo.scalars
        y = (integer.add_reference if qo.kind == "add" else integer.mul_reference)(ins[0], ins[1], s)
        return integer.clamp8(y, s["act_min"], s["act_max"])


@integer.register_int8(Concat)
class ConcatInt8(integer.Int8Handler):
    runtime = ("sc_eltwise.h",)
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
