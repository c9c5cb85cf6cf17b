"""Normalizations with statistics computed at run time: ``nn.LayerNorm`` / ``F.layer_norm`` (over the
last dims, elementwise affine) and ``nn.GroupNorm`` / ``F.group_norm`` (per-channel affine). Both
normalize rows of contiguous values: y = (x - mean) / sqrt(var + eps) (biased variance) * w + b.
int8 form of LayerNorm (``LayerNormInt8``): integer mean and variance, an exact integer square root and
one rounded 64-bit division per element, then a per-column requantization; GroupNorm has none (refused
naming the layer).

Float kernels: runtime_c/sc_norm.h; templates templates/ops/layernorm.j2, groupnorm.j2.
Integer kernel: sc_i8_layernorm (runtime_c/sc_norm.h, int8 section); template templates/ops_int8/layernorm.j2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from math import prod
from typing import ClassVar

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from codegen import integer, ir
from codegen.errors import UnsupportedConfigError
from codegen.lowering import LowerContext, accepts_constants, f32, register_lowering, tensor_meta


@dataclass
class LayerNorm(ir.Op):
    """Each of ``rows`` rows of ``cols`` values normalized; weight/bias (cols,) elementwise."""

    rows: int = 1
    cols: int = 1
    eps: float = 1e-5

    kind: ClassVar[str] = "layernorm"
    template: ClassVar[str] = "layernorm.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_norm.h",)
    inplace: ClassVar[bool] = True


@dataclass
class GroupNorm(ir.Op):
    """(C, inner) in ``groups`` groups of C/groups channels normalized; weight/bias (C,) per channel."""

    groups: int = 1
    channels: int = 1
    inner: int = 1
    eps: float = 1e-5

    kind: ClassVar[str] = "groupnorm"
    template: ClassVar[str] = "groupnorm.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_norm.h",)
    inplace: ClassVar[bool] = True


def _affine(ctx: LowerContext, node: fx.Node, weight, bias, n: int) -> dict:
    params = {}
    for role, t in (("weight", weight), ("bias", bias)):
        if t is None:
            continue
        if isinstance(t, fx.Node):
            if t.op != "get_attr":
                raise ctx.fail(node, f"its {role} is computed at run time", "Give it a parameter tensor")
            t = ctx.gm.get_parameter(str(t.target)) if str(t.target) in dict(ctx.gm.named_parameters()) \
                else ctx.gm.get_buffer(str(t.target))  # fmt: skip
        arr = f32(torch.as_tensor(t)).reshape(-1)
        if arr.size != n:
            raise ctx.fail(node, f"its {role} has {arr.size} values for {n}", "Give one value per normalized element")
        params[role] = arr
    return params


@register_lowering(nn.LayerNorm, F.layer_norm)
def lower_layernorm(ctx: LowerContext, node: fx.Node) -> None:
    x = ctx.tensor_arg(node, 0, "input")
    if node.op == "call_module":
        m = ctx.module(node)
        shape, w, b, eps = tuple(m.normalized_shape), m.weight, m.bias, m.eps
    else:
        shape = ctx.arg(node, 1, "normalized_shape")
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        w, b, eps = ctx.arg(node, 2, "weight"), ctx.arg(node, 3, "bias"), ctx.arg(node, 4, "eps", 1e-5)
    full = tuple(int(d) for d in tensor_meta(x).shape)
    if len(shape) >= len(full):
        raise ctx.fail(node, f"it normalizes over {shape}, the batch dim included",
                       "Normalize over the last dims only")  # fmt: skip
    cols = prod(int(d) for d in shape)
    rows = prod(full[1:]) // cols
    params = _affine(ctx, node, w, b, cols)
    ctx.emit(node, LayerNorm(**ctx.common(node, [x]), params=params, rows=rows, cols=cols, eps=float(eps)))


@register_lowering(nn.GroupNorm, F.group_norm)
def lower_groupnorm(ctx: LowerContext, node: fx.Node) -> None:
    x = ctx.tensor_arg(node, 0, "input")
    if node.op == "call_module":
        m = ctx.module(node)
        groups, w, b, eps = m.num_groups, m.weight, m.bias, m.eps
    else:
        groups = int(ctx.arg(node, 1, "num_groups"))
        w, b, eps = ctx.arg(node, 2, "weight"), ctx.arg(node, 3, "bias"), ctx.arg(node, 4, "eps", 1e-5)
    shape = ctx.shape(x)
    c = shape[0]
    params = _affine(ctx, node, w, b, c)
    ctx.emit(node, GroupNorm(**ctx.common(node, [x]), params=params, groups=int(groups), channels=c,
                             inner=prod(shape[1:]), eps=float(eps)))  # fmt: skip


@integer.register_int8(GroupNorm)
class NormInt8(integer.Int8Handler):
    """GroupNorm: refused (no int8 kernel yet)."""

    supported = False

    def check(self, op: ir.Op) -> None:
        raise UnsupportedConfigError(
            f"layer '{op.source}': {op.kind} ({op.torch_op}) has no integer kernel (its statistics are computed "
            "at run time). Emit without integer=True, or replace it by BatchNorm (folded into the conv)"
        )


def layernorm_shifts(cols: int, eps_q: int) -> tuple[int, int]:
    """(F, P): fractional bits of the root and of the normalized value, as large as the int64 and int32
    intermediates of sc_i8_layernorm allow. V < cols^2 127.5^2 (the d_j lie in a window of 255), the
    numerator |cols d_j - S| <= 255 cols, the normalized value |z| <= sqrt(cols)."""
    vmax = cols * cols * 16257 + eps_q
    frac = max(0, (62 - vmax.bit_length()) // 2)
    prec = 16
    while prec > 0 and (math.isqrt(cols) + 1) << prec >= 1 << 30:
        prec -= 1
    while frac > 0 and (255 * cols).bit_length() + prec + frac > 62:
        frac -= 1
    return frac, prec


@integer.register_int8(LayerNorm)
class LayerNormInt8(integer.Int8Handler):
    """Per row, d = x - in_zp: S = sum d, V = cols sum d^2 - S^2 = cols^2 var / s_in^2, root =
    isqrt((V + eps_q) 2^2F), z_j = round((cols d_j - S) 2^(P+F) / root) = 2^P (x_j - mean) / sqrt(var + eps);
    y_j = +-mbqm(z_j, |w_j| / (2^P s_out)) + round(b_j / s_out) + out_zp. All integer (int64 for the row
    statistics and the division)."""

    kind = "layernorm"
    template = "layernorm.j2"
    runtime = ("sc_norm.h",)

    def quantize(self, op: LayerNorm, ctx: integer.Int8Context, qo: integer.QOp) -> None:
        qin, qout = ctx.qin(op), ctx.qout(op)
        cols = op.cols
        eps_q = min(int(round(op.eps * cols * cols / (qin.scale * qin.scale))), 1 << 44)
        frac, prec = layernorm_shifts(cols, eps_q)
        w = op.params["weight"].astype(np.float64) if "weight" in op.params else np.ones(cols)
        b = op.params["bias"].astype(np.float64) if "bias" in op.params else np.zeros(cols)
        mult, shift = np.zeros(cols, np.int64), np.zeros(cols, np.int64)
        for j in range(cols):
            f = abs(w[j]) / (2.0**prec * qout.scale)
            mult[j], shift[j] = (integer.INT32_MAX, 30) if f >= 2.0**30 else integer.quantize_multiplier(f)
        sign = np.where(w < 0, -1, 1).astype(np.int64)
        bias = np.clip(np.rint(b / qout.scale), integer.INT32_MIN // 2, integer.INT32_MAX // 2).astype(np.int64)
        qo.consts.update(mult=mult, shift=shift, sign=sign, bias=bias)
        qo.scalars.update(in_zp=qin.zero_point, out_zp=qout.zero_point, eps_q=eps_q, frac=frac, prec=prec)
        ctx.int_array("mult", "_m", "int32_t", mult)
        ctx.int_array("shift", "_sh", "int8_t", shift)
        ctx.int_array("sign", "_sg", "int8_t", sign)
        ctx.int_array("bias", "_b", "int32_t", bias)

    def reference(self, qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        op: LayerNorm = qo.op  # type: ignore[assignment]
        s, c = qo.scalars, qo.consts
        d = ins[0].reshape(op.rows, op.cols).astype(np.int64) - s["in_zp"]
        out = np.empty_like(d)
        for r in range(op.rows):
            tot, sq = int(d[r].sum()), int((d[r] * d[r]).sum())
            root = math.isqrt((op.cols * sq - tot * tot + s["eps_q"]) << (2 * s["frac"]))
            num = (op.cols * d[r] - tot) * (1 << (s["prec"] + s["frac"]))
            if root == 0:
                z = np.zeros_like(num)
            else:
                z = np.where(num >= 0, (num + root // 2) // root, -((-num + root // 2) // root))
            o = integer.mbqm(z, c["mult"], c["shift"])
            out[r] = np.where(c["sign"] < 0, -o, o) + c["bias"] + s["out_zp"]
        return integer.clamp8(out).reshape(-1)


accepts_constants(F.layer_norm, F.group_norm)  # weight/bias as parameter operands (get_attr), read by _affine
