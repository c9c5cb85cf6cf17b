"""Linear (over the last dimension): IR op, lowering, int8 form.

Kernels: runtime_c/sc_linear.h, float (dense, CSR), weight-only (int8 / codebook weights) and int8 sections;
templates templates/ops/linear.j2 and templates/ops_int8/linear.j2.
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
from codegen.lowering import LowerContext, accepts_constants, f32, register_lowering


@dataclass
class Linear(ir.Op):
    """y = W x + b over the last dimension, repeated for ``rows`` leading positions."""

    in_features: int = 0
    out_features: int = 0
    rows: int = 1
    act: ir.Activation = ir.NO_ACT

    kind: ClassVar[str] = "linear"
    template: ClassVar[str] = "linear.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_linear.h",)
    encodable: ClassVar[tuple[str, ...]] = ("weight",)

    def macs(self) -> int:
        return self.rows * self.in_features * self.out_features

    def kernel_choice(self, in_place: bool = False) -> ir.KernelChoice | None:
        """The weight-only kernel when it is not ``sc_linear_<encoding kernel>``: dense codebook weights
        with in_features % 8 == 0 (every row starts on a byte) read 8 indices per step (``sc_linear_cb8``,
        runtime_c/sc_linear.h). None otherwise (the template names the kernel from the encoding)."""
        w = (self.encoded or {}).get("weight")
        if self.runtime == Linear.runtime and w is not None and w.kernel == "cb" and self.in_features % 8 == 0:
            return ir.KernelChoice("sc_linear_cb8")
        return None


def linear_op(ctx: LowerContext, node: fx.Node, x: fx.Node, weight, bias) -> Linear:
    """The Linear op of nn.Linear or of F.linear (one IR op for both forms)."""
    params = {"weight": f32(weight)}
    if bias is not None:
        params["bias"] = f32(bias)
    return Linear(
        **ctx.common(node, [x]),
        params=params,
        in_features=int(weight.shape[1]),
        out_features=int(weight.shape[0]),
        rows=prod(ctx.shape(x)[:-1]),
    )


@register_lowering(nn.Linear)
def lower_linear(ctx: LowerContext, node: fx.Node) -> None:
    m = ctx.module(node)
    ctx.emit(node, linear_op(ctx, node, ctx.tensor_arg(node, 0, "input"), m.weight, m.bias))


@register_lowering(F.linear)
def lower_linear_functional(ctx: LowerContext, node: fx.Node) -> None:
    """F.linear whose weight (and bias) are module parameters (get_attr constants): timm's Linear."""
    x = ctx.tensor_arg(node, 0, "input")
    weight = ctx.constant(node, 1, "weight")
    if weight.dim() != 2:
        raise ctx.fail(node, f"its weight has shape {tuple(weight.shape)}", "Give a 2-D (out, in) weight")
    ctx.emit(node, linear_op(ctx, node, x, weight, ctx.constant(node, 2, "bias", optional=True)))


accepts_constants(F.linear)


# ---- int8 (codegen/integer.py, the int8 section of the runtime header, templates/ops_int8/) ---------


@integer.register_int8(Linear)
class LinearInt8(integer.Int8Handler):
    runtime = ("sc_linear.h",)
    kind = "linear"
    template = "linear.j2"

    def quantize(self, op: Linear, ctx: integer.Int8Context, qo: integer.QOp) -> None:
        integer.quantize_weighted(op, ctx, qo, fold_input_zp=True)

    def reference(self, qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        op: Linear = qo.op  # type: ignore[assignment]
        s = qo.scalars
        x = ins[0].reshape(op.rows, op.in_features)
        acc = x @ qo.consts["q"].astype(np.int64).T
        if "bias" in qo.consts:
            acc = acc + qo.consts["bias"].astype(np.int64)[None, :]
        y = integer.mbqm(acc, qo.consts["mult"][None, :], qo.consts["shift"][None, :]) + s["out_zp"]
        return integer.clamp8(y, s["act_min"], s["act_max"])
