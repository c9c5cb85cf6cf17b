"""Normalizations with statistics computed at run time: ``nn.LayerNorm`` / ``F.layer_norm`` (over the
last dims, elementwise affine) and ``nn.GroupNorm`` / ``F.group_norm`` (per-channel affine). Both
normalize rows of contiguous values: y = (x - mean) / sqrt(var + eps) (biased variance) * w + b.
No int8 form (refused naming the layer).

Float kernels: runtime_c/sc_norm.h; templates templates/ops/layernorm.j2, groupnorm.j2.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import ClassVar

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


@integer.register_int8(LayerNorm, GroupNorm)
class NormInt8(integer.Int8Handler):
    def check(self, op: ir.Op) -> None:
        raise UnsupportedConfigError(
            f"layer '{op.source}': {op.kind} ({op.torch_op}) has no integer kernel (its statistics are computed "
            "at run time). Emit without integer=True, or replace it by BatchNorm (folded into the conv)"
        )


accepts_constants(F.layer_norm, F.group_norm)  # weight/bias as parameter operands (get_attr), read by _affine
