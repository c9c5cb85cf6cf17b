"""Product of two activations (torch.matmul / @ / torch.bmm): IR op and lowering. A parameter operand
(x @ W with W a parameter or folded constant) is a Linear over the rows of x instead.

Float kernel: runtime_c/sc_matmul.h (``sc_matmul``); template templates/ops/matmul.j2. No int8 form: with
``integer=True`` the op is refused naming the layer. Attention (F.scaled_dot_product_attention,
nn.MultiheadAttention, nn.TransformerEncoderLayer) reaches it through codegen/attention.py.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from math import prod
from typing import ClassVar

import torch
import torch.fx as fx

from codegen import integer, ir
from codegen.errors import UnsupportedConfigError
from codegen.lowering import LowerContext, accepts_constants, register_lowering
from codegen.ops.linear import linear_op


@dataclass
class MatMul(ir.Op):
    """out[b] = a[b] @ c[b] for b < batch: a[b] (m, k), c[b] (k, n); a_stride / c_stride 0 = broadcast."""

    batch: int = 1
    m: int = 1
    k: int = 1
    n: int = 1
    a_stride: int = 0
    c_stride: int = 0

    kind: ClassVar[str] = "matmul"
    template: ClassVar[str] = "matmul.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_matmul.h",)

    def macs(self) -> int:
        return self.batch * self.m * self.k * self.n


_MATMUL = (torch.matmul, operator.matmul, torch.bmm, torch.Tensor.matmul, torch.Tensor.bmm)


@register_lowering(*_MATMUL)
def lower_matmul(ctx: LowerContext, node: fx.Node) -> None:
    a, c = ctx.arg(node, 0, "input"), ctx.arg(node, 1, "other")
    if isinstance(a, fx.Node) and a.op == "get_attr":
        raise ctx.fail(node, f"a parameter (self.{a.target}) times an activation",
                       "Write the activation first (x @ W), or use nn.Linear")  # fmt: skip
    x = ctx.tensor_arg(node, 0, "input")
    if isinstance(c, fx.Node) and c.op == "get_attr":  # x @ W: a Linear with weight W^T over x's rows
        w = ctx.constant(node, 1, "other")
        if w.dim() != 2:
            raise ctx.fail(node, f"x @ W with W of shape {tuple(w.shape)}", "Use a 2-D (in, out) parameter")
        ctx.emit(node, linear_op(ctx, node, x, w.t().contiguous(), None))
        return
    y = ctx.tensor_arg(node, 1, "other")
    sa, sc, so = ctx.shape(x), ctx.shape(y), ctx.shape(node)  # batch dim excluded
    if len(sa) < 2 or len(sc) < 2:
        raise ctx.fail(node, f"a product of shapes {sa} and {sc} (batch dim excluded): a vector operand",
                       "Give both operands a matrix shape (..., m, k) and (..., k, n)")  # fmt: skip
    m, k, n = sa[-2], sa[-1], sc[-1]
    lead, lead_a, lead_c = prod(so[:-2]), prod(sa[:-2]), prod(sc[:-2])
    if sc[-2] != k or so[-2:] != (m, n):
        raise ctx.fail(node, f"shapes {sa} and {sc} do not multiply", "Check the operands")  # pragma: no cover
    for name, part in (("first", lead_a), ("second", lead_c)):
        if part not in (1, lead):
            raise ctx.fail(node, f"the {name} operand's leading dims broadcast partly ({sa} @ {sc})",
                           "Expand the operand to the full leading shape first")  # fmt: skip
    ctx.emit(node, MatMul(**ctx.common(node, [x, y]), batch=lead, m=m, k=k, n=n,
                          a_stride=m * k if lead_a == lead else 0, c_stride=k * n if lead_c == lead else 0))


accepts_constants(*_MATMUL)  # x @ W with W a parameter: a Linear


@integer.register_int8(MatMul)
class MatMulInt8(integer.Int8Handler):
    """Refused: no int8 kernel for the product of two activations yet."""

    supported = False

    def check(self, op: ir.Op) -> None:
        raise UnsupportedConfigError(
            f"layer '{op.source}': matmul ({op.torch_op}, a product of two activations, e.g. attention) has no "
            "integer kernel. Emit without integer=True (float, or int8 weights with representation='int8')"
        )
