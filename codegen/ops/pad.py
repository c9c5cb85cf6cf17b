"""Constant padding of the last one or two dimensions: IR op, lowerings, int8 form.

Float kernel: runtime_c/sc_eltwise.h; template templates/ops/pad.j2.
Integer kernel: the int8 section of runtime_c/sc_eltwise.h; template templates/ops_int8/pad.j2.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import ClassVar

import numpy as np
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from codegen import integer, ir
from codegen.lowering import LowerContext, register_lowering


@dataclass
class Pad2d(ir.Op):
    """Constant padding of the last two dimensions (1-D pads have h == 1)."""

    in_shape: tuple[int, int, int] = (0, 0, 0)
    out_shape: tuple[int, int, int] = (0, 0, 0)
    padding: tuple[int, int] = (0, 0)  # top, left
    value: float = 0.0

    kind: ClassVar[str] = "pad"
    template: ClassVar[str] = "pad.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_eltwise.h",)


def _pad(ctx: LowerContext, node: fx.Node, pads: tuple[int, ...], value: float) -> None:
    x = ctx.tensor_arg(node, 0, "input")
    if len(pads) not in (2, 4) or any(p < 0 for p in pads):
        raise ctx.fail(node, f"padding {pads}", "Only non-negative constant padding of the last 1 or 2 dims")
    shape, out = ctx.shape(x), ctx.shape(node)

    def chw(s: tuple[int, ...]) -> tuple[int, int, int]:
        return (prod(s[:-2]), s[-2], s[-1]) if len(s) >= 2 else (1, 1, s[-1])

    top = pads[2] if len(pads) == 4 else 0
    if len(pads) == 2 and len(shape) >= 2:
        shape, out = shape[:-1] + (1,) + shape[-1:], out[:-1] + (1,) + out[-1:]
    ctx.emit(
        node,
        Pad2d(**ctx.common(node, [x]), in_shape=chw(shape), out_shape=chw(out), padding=(top, pads[0]), value=float(value)),
    )


@register_lowering(nn.ZeroPad1d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d)
def lower_pad_module(ctx: LowerContext, node: fx.Node) -> None:
    m = ctx.module(node)
    _pad(ctx, node, tuple(int(p) for p in m.padding), float(getattr(m, "value", 0.0)))


@register_lowering(F.pad)
def lower_pad_function(ctx: LowerContext, node: fx.Node) -> None:
    mode = ctx.arg(node, 2, "mode", "constant")
    if mode != "constant":
        raise ctx.fail(node, f"F.pad mode '{mode}'", "Only mode='constant' is emitted")
    value = ctx.arg(node, 3, "value", 0.0) or 0.0
    _pad(ctx, node, tuple(int(p) for p in ctx.arg(node, 1, "pad")), float(value))


# ---- int8 (codegen/integer.py, the int8 section of the runtime header, templates/ops_int8/) ---------


@integer.register_int8(Pad2d)
class PadInt8(integer.Int8Handler):
    runtime = ("sc_eltwise.h",)
    kind = "pad"
    template = "pad.j2"
    keeps_qparams = True

    def quantize(self, op: Pad2d, ctx: integer.Int8Context, qo: integer.QOp) -> None:
        qin = ctx.qin(op)
        qo.scalars["zp"] = qin.zero_point
        qo.scalars["value"] = int(qin.quantize(np.float32(op.value)))

    def reference(self, qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        op: Pad2d = qo.op  # type: ignore[assignment]
        c, h, w = op.in_shape
        _, ho, wo = op.out_shape
        out = np.full((c, ho, wo), qo.scalars["value"], dtype=np.int64)
        t, left = op.padding
        ys, xs = slice(max(t, 0), min(t + h, ho)), slice(max(left, 0), min(left + w, wo))
        out[:, ys, xs] = ins[0].reshape(c, h, w)[:, ys.start - t : ys.stop - t, xs.start - left : xs.stop - left]
        return out
