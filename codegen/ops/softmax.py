"""Softmax and log-softmax over the last dimension: IR op and lowering. No int8 form (refused with
what to do).

Float kernel: runtime_c/sc_eltwise.h; template templates/ops/softmax.j2.
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
from codegen.lowering import LowerContext, lowering_key, register_lowering, tensor_meta


@dataclass
class Softmax(ir.Op):
    """Softmax or log-softmax over the last dimension."""

    rows: int = 1
    cols: int = 1
    log: bool = False

    kind: ClassVar[str] = "softmax"
    template: ClassVar[str] = "softmax.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_eltwise.h",)

    def describe(self) -> str:
        return "log_softmax" if self.log else "softmax"


@register_lowering(nn.Softmax, nn.LogSoftmax, F.softmax, F.log_softmax, torch.softmax, torch.log_softmax,
                   torch.Tensor.softmax, torch.Tensor.log_softmax)  # fmt: skip
def lower_softmax(ctx: LowerContext, node: fx.Node) -> None:
    x = ctx.tensor_arg(node, 0, "input")
    key = lowering_key(node, ctx.modules)
    log_ = key in (nn.LogSoftmax, F.log_softmax, torch.log_softmax, torch.Tensor.log_softmax)
    dim = ctx.module(node).dim if node.op == "call_module" else ctx.arg(node, 1, "dim", None)
    full = tuple(int(d) for d in tensor_meta(x).shape)
    if dim is None:
        dim = 0 if len(full) in (0, 1, 3) else 1
    dim = int(dim) % len(full)
    if dim == 0 or prod(full[dim + 1 :]) != 1:
        raise ctx.fail(node, f"softmax over dim {dim} of a {full} tensor", "Softmax is emitted over the last "
                       "dim (later dims of size 1 are fine): use dim=-1 there, or apply it on the host to the output")
    ctx.emit(
        node,
        Softmax(**ctx.common(node, [x]), rows=prod(full[1:dim]), cols=full[dim], log=log_),
    )


# ---- int8 (codegen/integer.py, runtime_c/sc_int8.h, templates/ops_int8/) ---------------------------


@integer.register_int8(Softmax)
class SoftmaxInt8(integer.Int8Handler):
    def check(self, op: Softmax) -> None:
        raise UnsupportedConfigError(
            f"layer '{op.source}': {op.describe()} has no integer kernel. Remove it from the model before "
            "integer export (the argmax is unchanged) and apply it to the dequantized output on the host, "
            "or emit without integer=True"
        )
