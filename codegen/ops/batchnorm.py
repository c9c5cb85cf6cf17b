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

from codegen import integer, ir
from codegen.lowering import LowerContext, f32, register_lowering
from codegen.ops.conv import Conv2d


@dataclass
class ChannelAffine(ir.Op):
    """Standalone BatchNorm in inference form: y = x * scale[c] + shift[c]."""

    channels: int = 0
    inner: int = 1  # elements per channel
    act: ir.Activation = ir.NO_ACT

    kind: ClassVar[str] = "batchnorm"
    template: ClassVar[str] = "affine.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_eltwise.h",)
    inplace: ClassVar[bool] = True


@register_lowering(nn.BatchNorm1d, nn.BatchNorm2d)
def lower_batchnorm(ctx: LowerContext, node: fx.Node) -> None:
    m = ctx.module(node)
    if m.running_mean is None or m.running_var is None:
        raise ctx.fail(
            node,
            "BatchNorm without running statistics (track_running_stats=False) uses batch statistics",
            "Train it with track_running_stats=True",
        )
    mean = m.running_mean.detach().double()
    var = m.running_var.detach().double()
    gamma = m.weight.detach().double() if m.weight is not None else torch.ones_like(mean)
    beta = m.bias.detach().double() if m.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + m.eps)
    shift = beta - mean * scale
    x = ctx.tensor_arg(node, 0, "input")
    shape = ctx.shape(x)
    ctx.emit(
        node,
        ChannelAffine(
            **ctx.common(node, [x]),
            params={"scale": f32(scale), "shift": f32(shift)},
            channels=shape[0],
            inner=prod(shape[1:]),
        ),
    )


# ---- int8 (codegen/integer.py, runtime_c/sc_int8.h, templates/ops_int8/) ---------------------------


@integer.register_int8(ChannelAffine)
class AffineInt8(integer.Int8Handler):
    """Runs as a depthwise 1x1 conv (the conv's int8 form)."""

    def rewrite(self, op: ChannelAffine) -> ir.Op:
        c, inner = op.channels, op.inner
        return Conv2d(
            name=op.name, source=op.source, torch_op=op.torch_op, inputs=list(op.inputs), output=op.output,
            params={"weight": op.params["scale"].reshape(c, 1).astype(np.float32),
                    "bias": op.params["shift"].astype(np.float32)},
            in_shape=(c, 1, inner), out_shape=(c, 1, inner), kernel=(1, 1), groups=c, act=op.act,
        )  # fmt: skip
