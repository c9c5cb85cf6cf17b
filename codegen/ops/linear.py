"""Linear (over the last dimension): IR op, lowering, int8 form.

Float kernels: runtime_c/sc_linear.h (dense, CSR), runtime_c/sc_quant.h (int8 / codebook weights); template
templates/ops/linear.j2. Integer kernels: runtime_c/sc_int8.h; template templates/ops_int8/linear.j2.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import ClassVar

import numpy as np
import torch.fx as fx
import torch.nn as nn

from codegen import integer, ir
from codegen.lowering import LowerContext, f32, register_lowering


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


@register_lowering(nn.Linear)
def lower_linear(ctx: LowerContext, node: fx.Node) -> None:
    m = ctx.module(node)
    x = ctx.tensor_arg(node, 0, "input")
    shape = ctx.shape(x)
    params = {"weight": f32(m.weight)}
    if m.bias is not None:
        params["bias"] = f32(m.bias)
    ctx.emit(
        node,
        Linear(
            **ctx.common(node, [x]),
            params=params,
            in_features=m.in_features,
            out_features=m.out_features,
            rows=prod(shape[:-1]),
        ),
    )


# ---- int8 (codegen/integer.py, runtime_c/sc_int8.h, templates/ops_int8/) ---------------------------


@integer.register_int8(Linear)
class LinearInt8(integer.Int8Handler):
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
