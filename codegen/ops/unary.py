"""Elementwise functions that are not fused into a producer: SiLU, GELU (erf and tanh), Mish, Softplus,
ELU, abs, neg, clamp, and arithmetic with a Python scalar (``x * 0.5``, ``1 - x``, ``x / 6``); PReLU
(one slope or one per channel, a weight). IR ops, lowerings, int8 forms (a 256-entry lookup table for
``Unary``; TFLite's two-multiplier form for ``PReLU``).

Float kernels: runtime_c/sc_unary.h; templates templates/ops/unary.j2, prelu.j2.
Integer kernels: sc_i8_lut, sc_i8_prelu (runtime_c/sc_unary.h, int8 section);
templates templates/ops_int8/unary.j2, prelu.j2.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from math import prod
from typing import Any, ClassVar

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from codegen import integer, ir
from codegen.lowering import LowerContext, f32, lowering_key, register_lowering


@dataclass
class Unary(ir.Op):
    """y = fn(x; a, b) elementwise. ``fn`` names the kernel sc_u_<fn> (runtime_c/sc_unary.h)."""

    fn: str = "silu"
    numel: int = 0
    a: float = 0.0
    b: float = 0.0

    kind: ClassVar[str] = "unary"
    template: ClassVar[str] = "unary.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_unary.h",)
    inplace: ClassVar[bool] = True

    def describe(self) -> str:
        return self.fn


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _softplus(x: np.ndarray, beta: float, threshold: float) -> np.ndarray:
    return np.where(x * beta > threshold, x, np.log1p(np.exp(np.minimum(x * beta, threshold))) / beta)


# fn -> float64 numpy reference (the int8 lookup tables are computed from it)
FUNCS: dict[str, Callable[[np.ndarray, float, float], np.ndarray]] = {
    "silu": lambda x, a, b: x / (1.0 + np.exp(-x)),
    "gelu": lambda x, a, b: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "gelu_tanh": lambda x, a, b: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3))),
    "mish": lambda x, a, b: x * np.tanh(_softplus(x, 1.0, 20.0)),
    "softplus": lambda x, a, b: _softplus(x, a, b),
    "elu": lambda x, a, b: np.where(x > 0, x, a * np.expm1(np.minimum(x, 0.0))),
    "abs": lambda x, a, b: np.abs(x),
    "neg": lambda x, a, b: -x,
    "clamp": lambda x, a, b: np.minimum(np.maximum(x, a), b),
    "clamp_min": lambda x, a, b: np.maximum(x, a),
    "clamp_max": lambda x, a, b: np.minimum(x, b),
    "add_s": lambda x, a, b: x + a,
    "sub_s": lambda x, a, b: x - a,
    "rsub_s": lambda x, a, b: a - x,
    "mul_s": lambda x, a, b: x * a,
    "div_s": lambda x, a, b: x / a,
    "rdiv_s": lambda x, a, b: a / x,
}


def _module_or_arg(ctx: LowerContext, node: fx.Node, attr: str, index: int, default: Any) -> Any:
    if node.op == "call_module":
        return getattr(ctx.module(node), attr)
    return ctx.arg(node, index, attr, default)


def _params(ctx: LowerContext, node: fx.Node, fn: str) -> tuple[float, float]:
    if fn == "gelu":
        approx = _module_or_arg(ctx, node, "approximate", 1, "none")
        if approx not in ("none", "tanh"):
            raise ctx.fail(node, f"GELU approximate={approx!r}", "Use approximate='none' or 'tanh'")
    if fn == "softplus":
        return float(_module_or_arg(ctx, node, "beta", 1, 1.0)), float(_module_or_arg(ctx, node, "threshold", 2, 20.0))
    if fn == "elu":
        return float(_module_or_arg(ctx, node, "alpha", 1, 1.0)), 0.0
    return 0.0, 0.0


_ACTIVATIONS: dict[Any, str] = {
    nn.SiLU: "silu", F.silu: "silu",
    nn.GELU: "gelu", F.gelu: "gelu",
    nn.Mish: "mish", F.mish: "mish",
    nn.Softplus: "softplus", F.softplus: "softplus",
    nn.ELU: "elu", F.elu: "elu",
    torch.abs: "abs", torch.Tensor.abs: "abs", operator.abs: "abs",
    torch.neg: "neg", torch.Tensor.neg: "neg", operator.neg: "neg",
}  # fmt: skip
_INPLACE_ARG = {F.silu: 1, F.elu: 2, F.mish: 1}


def _rebind_inplace(ctx: LowerContext, node: fx.Node, x: fx.Node, old: str) -> None:
    """torch mutated x (and every view of it): later users of x read the new values."""
    inplace = (getattr(ctx.module(node), "inplace", False) if node.op == "call_module"
               else node.target in _INPLACE_ARG and ctx.arg(node, _INPLACE_ARG[node.target], "inplace", False))  # fmt: skip
    if inplace or (node.op == "call_method" and str(node.target).endswith("_")):
        for name, value in list(ctx.env.items()):
            if value == old:
                ctx.env[name] = ctx.env[node.name]


def emit_unary(ctx: LowerContext, node: fx.Node, x: fx.Node, fn: str, a: float = 0.0, b: float = 0.0) -> None:
    old = ctx.value(x)
    ctx.emit(node, Unary(**ctx.common(node, [x]), fn=fn, numel=ctx.numel(x), a=a, b=b))
    _rebind_inplace(ctx, node, x, old)


@register_lowering(*_ACTIVATIONS)
def lower_unary(ctx: LowerContext, node: fx.Node) -> None:
    fn = _ACTIVATIONS[lowering_key(node, ctx.modules)]
    a, b = _params(ctx, node, fn)
    if fn == "gelu" and _module_or_arg(ctx, node, "approximate", 1, "none") == "tanh":
        fn = "gelu_tanh"
    emit_unary(ctx, node, ctx.tensor_arg(node, 0, "input"), fn, a, b)


_CLAMP = (torch.clamp, torch.Tensor.clamp, torch.clip, torch.Tensor.clip, torch.clamp_min, torch.Tensor.clamp_min,
          torch.clamp_max, torch.Tensor.clamp_max, torch.Tensor.clamp_, nn.Hardtanh, F.hardtanh)  # fmt: skip


def _number(ctx: LowerContext, node: fx.Node, v: Any, what: str) -> float | None:
    if v is None or isinstance(v, (int, float)) and not isinstance(v, bool):
        return None if v is None else float(v)
    raise ctx.fail(node, f"its {what} is {v.name if isinstance(v, fx.Node) else repr(v)}, not a number",
                   "Clamp to Python numbers")  # fmt: skip


@register_lowering(*_CLAMP)
def lower_clamp(ctx: LowerContext, node: fx.Node) -> None:
    x = ctx.tensor_arg(node, 0, "input")
    key = lowering_key(node, ctx.modules)
    if key is nn.Hardtanh:
        m = ctx.module(node)
        lo, hi = float(m.min_val), float(m.max_val)
    elif key is F.hardtanh:
        lo, hi = float(ctx.arg(node, 1, "min_val", -1.0)), float(ctx.arg(node, 2, "max_val", 1.0))
    elif key in (torch.clamp_min, torch.Tensor.clamp_min):
        lo, hi = _number(ctx, node, ctx.arg(node, 1, "min"), "min"), None
    elif key in (torch.clamp_max, torch.Tensor.clamp_max):
        lo, hi = None, _number(ctx, node, ctx.arg(node, 1, "max"), "max")
    else:
        lo = _number(ctx, node, ctx.arg(node, 1, "min"), "min")
        hi = _number(ctx, node, ctx.arg(node, 2, "max"), "max")
    if lo is None and hi is None:
        raise ctx.fail(node, "clamp without min or max", "Give min and/or max")
    fn = "clamp" if lo is not None and hi is not None else ("clamp_min" if lo is not None else "clamp_max")
    emit_unary(ctx, node, x, fn, lo if lo is not None else 0.0, hi if hi is not None else 0.0)


# ---- PReLU -----------------------------------------------------------------------------------------


@dataclass
class PReLU(ir.Op):
    """y = x >= 0 ? x : w[c] * x with one slope per channel (dim 1) or one for all."""

    channels: int = 1
    inner: int = 1  # elements per channel
    act: ir.Activation = ir.NO_ACT

    kind: ClassVar[str] = "prelu"
    template: ClassVar[str] = "prelu.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_unary.h",)
    inplace: ClassVar[bool] = True


@register_lowering(nn.PReLU)
def lower_prelu(ctx: LowerContext, node: fx.Node) -> None:
    x = ctx.tensor_arg(node, 0, "input")
    w = f32(ctx.module(node).weight).reshape(-1)
    shape = ctx.shape(x)
    if w.size != 1 and (len(shape) == 0 or w.size != shape[0]):
        raise ctx.fail(node, f"it has {w.size} slopes for an input of shape {shape}", "Use 1 or C slopes")
    ctx.emit(node, PReLU(**ctx.common(node, [x]), params={"weight": w}, channels=shape[0] if w.size > 1 else 1,
                         inner=prod(shape[1:]) if w.size > 1 else prod(shape)))  # fmt: skip


# ---- int8 ------------------------------------------------------------------------------------------


@integer.register_int8(Unary)
class UnaryInt8(integer.Int8Handler):
    """Any elementwise function of one input: a 256-entry table computed at generation time."""
    runtime = ("sc_unary.h",)

    kind = "lut"
    template = "unary.j2"

    def quantize(self, op: Unary, ctx: integer.Int8Context, qo: integer.QOp) -> None:
        qin, qout = ctx.qin(op), ctx.qout(op)
        x = qin.scale * (np.arange(-128, 128, dtype=np.float64) - qin.zero_point)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            y = FUNCS[op.fn](x, op.a, op.b)
        y = np.nan_to_num(y / qout.scale, nan=0.0, posinf=1e9, neginf=-1e9)
        lut = integer.clamp8(np.round(y) + qout.zero_point).astype(np.int8)
        qo.consts["lut"] = lut.astype(np.int64)
        ctx.int_array("lut", "_lut", "int8_t", lut)

    def reference(self, qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        return qo.consts["lut"][ins[0] + 128]


@integer.register_int8(PReLU)
class PReLUInt8(integer.Int8Handler):
    """TFLite's PReLU: x >= in_zp: requant(x - in_zp, s_in / s_out); else requant((x - in_zp) * w_q[c],
    s_in * s_w / s_out), slopes symmetric int8 with one scale."""

    kind = "prelu"
    template = "prelu.j2"
    runtime = ("sc_unary.h",)

    def quantize(self, op: PReLU, ctx: integer.Int8Context, qo: integer.QOp) -> None:
        qin, qout = ctx.qin(op), ctx.qout(op)
        w = op.params["weight"].astype(np.float64)
        sw = float(np.float32(max(float(np.abs(w).max()), 1e-12) / 127.0))
        wq = np.clip(np.round(w / sw), -127, 127).astype(np.int64)
        pm, ps = integer.quantize_multiplier(qin.scale / qout.scale)
        nm, ns = integer.quantize_multiplier(qin.scale * sw / qout.scale)
        qo.consts["w"] = wq
        qo.scalars.update(in_zp=qin.zero_point, pos_mult=pm, pos_shift=ps, neg_mult=nm, neg_shift=ns,
                          out_zp=qout.zero_point)  # fmt: skip
        ctx.int_array("weight", "_w", "int8_t", wq)

    def reference(self, qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        op: PReLU = qo.op  # type: ignore[assignment]
        s = qo.scalars
        x = ins[0].reshape(op.channels, op.inner) - s["in_zp"]
        pos = integer.mbqm(x, s["pos_mult"], s["pos_shift"])
        neg = integer.mbqm(x * qo.consts["w"][:, None], s["neg_mult"], s["neg_shift"])
        return integer.clamp8(np.where(x >= 0, pos, neg) + s["out_zp"]).reshape(-1)

