"""Layout-preserving ops (flatten, view, reshape, squeeze, dropout, identity): no code, the result
aliases its input. ``Copy`` is emitted only when the model returns its input (or a view of it).

Float kernel: runtime_c/sc_eltwise.h; template templates/ops/copy.j2.
Integer kernel: the int8 section of runtime_c/sc_eltwise.h; template templates/ops_int8/copy.j2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from codegen import integer, ir
from codegen.lowering import LowerContext, register_lowering


@dataclass
class Copy(ir.Op):
    """Copies a tensor (only when the model's output is its input, or a view of it)."""

    numel: int = 0

    kind: ClassVar[str] = "copy"
    template: ClassVar[str] = "copy.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_eltwise.h",)


@register_lowering(
    nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout,
    F.dropout, torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze,
    torch.Tensor.view, torch.Tensor.reshape, torch.Tensor.flatten, torch.Tensor.squeeze,
    torch.Tensor.unsqueeze, torch.Tensor.contiguous,
)  # fmt: skip
def lower_view(ctx: LowerContext, node: fx.Node) -> None:
    ctx.alias(node, ctx.tensor_arg(node, 0, "input"))


# ---- int8 (codegen/integer.py, the int8 section of the runtime header, templates/ops_int8/) ---------


@integer.register_int8(Copy)
class CopyInt8(integer.Int8Handler):
    runtime = ("sc_eltwise.h",)
    kind = "copy"
    template = "copy.j2"
    keeps_qparams = True

    def quantize(self, op: Copy, ctx: integer.Int8Context, qo: integer.QOp) -> None:
        qo.scalars["zp"] = ctx.qin(op).zero_point

    def reference(self, qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        return ins[0].copy()
