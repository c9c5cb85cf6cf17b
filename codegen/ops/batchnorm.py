"""Standalone BatchNorm (y = x * scale[c] + shift[c]): IR op, lowering, int8 form (a depthwise 1x1
conv). BatchNorm right after a conv/linear is folded into it (codegen/passes.py).

Float kernel: runtime_c/sc_eltwise.h; template templates/ops/affine.j2.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import ClassVar

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from codegen import integer, ir
from codegen.lowering import LowerContext, accepts_constants, f32, register_lowering
from codegen.ops.conv import Conv2d


@dataclass
class ChannelAffine(ir.Op):
    """Standalone BatchNorm in inference form: y = x * scale[c] + shift[c]; also a parameter operand of
    add/sub/mul/div (codegen/ops/eltwise.py) with ``mode`` "shift" (y = x + shift[c], no scale stored) or
    "scale" (y = x * scale[c], no shift stored)."""

    channels: int = 0
    inner: int = 1  # elements per channel
    act: ir.Activation = ir.NO_ACT
    mode: str = "affine"  # "affine" | "shift" | "scale": which of params "scale" / "shift" exist

    def scale_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, shift) float32 of every mode (the identity for the one not stored)."""
        scale = self.params.get("scale")
        shift = self.params.get("shift")
        scale = np.ones(self.channels, np.float32) if scale is None else scale
        shift = np.zeros(self.channels, np.float32) if shift is None else shift
        return scale, shift

    kind: ClassVar[str] = "batchnorm"
    template: ClassVar[str] = "affine.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_eltwise.h",)
    inplace: ClassVar[bool] = True


def _affine_op(ctx: LowerContext, node: fx.Node, x: fx.Node, mean, var, weight, bias, eps: float) -> ChannelAffine:
    """The ChannelAffine op of a BatchNorm module or of F.batch_norm (one IR op for both forms)."""
    mean = mean.detach().double()
    var = var.detach().double()
    gamma = weight.detach().double() if weight is not None else torch.ones_like(mean)
    beta = bias.detach().double() if bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + eps)
    shift = beta - mean * scale
    shape = ctx.shape(x)
    if shape[0] != mean.numel():
        raise ctx.fail(node, f"its statistics have {mean.numel()} channels, the input {shape[0]}",
                       "Give one statistic per channel (dim 1)")  # fmt: skip
    return ChannelAffine(
        **ctx.common(node, [x]),
        params={"scale": f32(scale), "shift": f32(shift)},
        channels=shape[0],
        inner=prod(shape[1:]),
    )


@register_lowering(nn.BatchNorm1d, nn.BatchNorm2d)
def lower_batchnorm(ctx: LowerContext, node: fx.Node) -> None:
    m = ctx.module(node)
    if m.running_mean is None or m.running_var is None:
        raise ctx.fail(
            node,
            "BatchNorm without running statistics (track_running_stats=False) uses batch statistics",
            "Train it with track_running_stats=True",
        )
    x = ctx.tensor_arg(node, 0, "input")
    ctx.emit(node, _affine_op(ctx, node, x, m.running_mean, m.running_var, m.weight, m.bias, m.eps))


# argument positions of (running_mean, running_var, weight, bias, training, eps)
_BN_ARGS = {F.batch_norm: (1, 2, 3, 4, 5, 7), torch.batch_norm: (3, 4, 1, 2, 5, 7)}


@register_lowering(*_BN_ARGS)
def lower_batchnorm_functional(ctx: LowerContext, node: fx.Node) -> None:
    """F.batch_norm / torch.batch_norm in inference form whose statistics and affine parameters are
    module buffers/parameters (get_attr constants): timm's BatchNormAct2d."""
    i_mean, i_var, i_w, i_b, i_train, i_eps = _BN_ARGS[node.target]
    x = ctx.tensor_arg(node, 0, "input")
    if ctx.arg(node, i_train, "training", False) is not False:
        raise ctx.fail(node, "batch_norm with training=True (or no running statistics) uses batch statistics",
                       "Call model.eval() and keep track_running_stats=True")  # fmt: skip
    mean = ctx.constant(node, i_mean, "running_mean")
    var = ctx.constant(node, i_var, "running_var")
    weight = ctx.constant(node, i_w, "weight", optional=True)
    bias = ctx.constant(node, i_b, "bias", optional=True)
    eps = float(ctx.arg(node, i_eps, "eps", 1e-5))
    ctx.emit(node, _affine_op(ctx, node, x, mean, var, weight, bias, eps))


accepts_constants(*_BN_ARGS)


# ---- int8 (codegen/integer.py, the int8 section of the runtime header, templates/ops_int8/) ---------


@integer.register_int8(ChannelAffine)
class AffineInt8(integer.Int8Handler):
    """Runs as a depthwise 1x1 conv (the conv's int8 form)."""

    runtime = ("sc_conv.h",)

    def rewrite(self, op: ChannelAffine) -> ir.Op:
        c, inner = op.channels, op.inner
        scale, shift = op.scale_shift()
        return Conv2d(
            name=op.name, source=op.source, torch_op=op.torch_op, inputs=list(op.inputs), output=op.output,
            params={"weight": scale.reshape(c, 1).astype(np.float32), "bias": shift.astype(np.float32)},
            in_shape=(c, 1, inner), out_shape=(c, 1, inner), kernel=(1, 1), groups=c, act=op.act,
        )  # fmt: skip
