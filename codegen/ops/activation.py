"""Elementwise activations (ReLU, ReLU6, LeakyReLU, sigmoid, tanh, hardswish, hardsigmoid): the
standalone op, its lowering, its int8 form (a 256-entry lookup table) and the int8 pass that splits
fused activations other than ReLU/ReLU6 back out. ``ir.Activation`` is the fused form.

Float kernel: runtime_c/sc_eltwise.h (sc_act in sc_runtime.h); template templates/ops/act.j2.
Integer kernel: sc_i8_lut (runtime_c/sc_unary.h, int8 section); template templates/ops_int8/lut.j2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from codegen import integer, ir
from codegen.errors import UnsupportedConfigError
from codegen.lowering import LowerContext, c_identifier, lowering_key, register_lowering


@dataclass
class Act(ir.Op):
    """A standalone activation that could not be fused into its producer."""

    numel: int = 0
    act: ir.Activation = ir.NO_ACT

    kind: ClassVar[str] = "activation"
    template: ClassVar[str] = "act.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_eltwise.h",)
    inplace: ClassVar[bool] = True

    def describe(self) -> str:
        return self.act.kind


def _act_of(ctx: LowerContext, node: fx.Node) -> ir.Activation:
    key = lowering_key(node, ctx.modules)
    kind = _ACT_KIND[key]
    alpha = 0.0
    if kind == "leaky_relu":
        if node.op == "call_module":
            alpha = float(ctx.module(node).negative_slope)
        else:
            alpha = float(ctx.arg(node, 1, "negative_slope", 0.01))
    return ir.Activation(kind, alpha)


_ACT_KIND: dict[Any, str] = {
    nn.ReLU: "relu", F.relu: "relu", torch.relu: "relu", torch.Tensor.relu: "relu",
    nn.ReLU6: "relu6", F.relu6: "relu6",
    nn.LeakyReLU: "leaky_relu", F.leaky_relu: "leaky_relu",
    nn.Sigmoid: "sigmoid", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.Tensor.sigmoid: "sigmoid",
    nn.Tanh: "tanh", torch.tanh: "tanh", F.tanh: "tanh", torch.Tensor.tanh: "tanh",
    nn.Hardswish: "hardswish", F.hardswish: "hardswish",
    nn.Hardsigmoid: "hardsigmoid", F.hardsigmoid: "hardsigmoid",
}  # fmt: skip


_INPLACE_ARG = {F.relu: 1, F.relu6: 1, F.leaky_relu: 2, F.hardswish: 1, F.hardsigmoid: 1}


def _is_inplace(ctx: LowerContext, node: fx.Node) -> bool:
    """nn.ReLU(inplace=True), F.relu(x, inplace=True), ...: the activation overwrites its input."""
    if node.op == "call_module":
        return bool(getattr(ctx.module(node), "inplace", False))
    index = _INPLACE_ARG.get(node.target)
    return index is not None and bool(ctx.arg(node, index, "inplace", False))


@register_lowering(*dict.fromkeys(_ACT_KIND))
def lower_activation(ctx: LowerContext, node: fx.Node) -> None:
    x = ctx.tensor_arg(node, 0, "input")
    old = ctx.value(x)
    ctx.emit(node, Act(**ctx.common(node, [x]), numel=ctx.numel(x), act=_act_of(ctx, node)))
    if _is_inplace(ctx, node):
        # torch mutated x (and every view of it): later users of x read the activated values.
        for name, value in list(ctx.env.items()):
            if value == old:
                ctx.env[name] = ctx.env[node.name]


# ---- int8 (codegen/integer.py, the int8 section of the runtime header, templates/ops_int8/) ---------


@integer.register_int8(Act)
class ActInt8(integer.Int8Handler):
    runtime = ("sc_unary.h",)
    kind = "lut"
    template = "lut.j2"

    def quantize(self, op: Act, ctx: integer.Int8Context, qo: integer.QOp) -> None:
        lut = integer.activation_lut(op.act, ctx.qin(op), ctx.qout(op))
        qo.consts["lut"] = lut.astype(np.int64)
        ctx.int_array("lut", "_lut", "int8_t", lut)

    def reference(self, qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        return qo.consts["lut"].astype(np.int64)[ins[0] + 128]


@integer.register_int8_pass
def split_activations(g: ir.Graph, cal: integer.Calibration) -> None:
    """Fused activations other than ReLU/ReLU6 become standalone Act ops again (integer LUTs); the
    pre-activation range is the one of the fx node feeding the activation node, which computed the fused
    op's output (``Calibration.producers``: fuse_activations gave the op the activation's result). The
    recorded range of that input node is the value before the activation even when the activation ran in
    place (``nn.Hardswish(inplace=True)``): the calibration records each node's output when it runs."""
    gm, env, ranges, value_ranges = cal.gm, cal.env, cal.ranges, cal.value_ranges
    nodes = {n.name: n for n in gm.graph.nodes}
    modules = dict(gm.named_modules())
    produced = {op.output for op in g.ops}
    for op in list(g.ops):
        act = getattr(op, "act", ir.NO_ACT)
        if isinstance(op, Act) or act.kind in ("none", "relu", "relu6"):
            continue
        pre = None
        node = nodes.get(cal.producers.get(op.output, ""))
        if node is not None and _ACT_KIND.get(lowering_key(node, modules)) == act.kind and node.args \
                and isinstance(node.args[0], fx.Node) and node.args[0].name in ranges:  # fmt: skip
            pre = node.args[0]
        else:  # a Calibration without producers (an extension's own build): the first node feeding op.output
            for node in gm.graph.nodes:
                if env.get(node.name) == op.output and node.args and isinstance(node.args[0], fx.Node):
                    src = node.args[0]
                    if src.name in ranges and env.get(src.name) not in produced:
                        pre = src
                        break
        if pre is None:
            raise UnsupportedConfigError(
                f"layer '{op.source}': cannot find the input range of its fused {act.kind} for integer "
                "quantization; apply the activation as a separate module"
            )
        v = f"{op.output}_pre"
        while v in g.values:
            v += "_"
        g.values[v] = ir.Value(v, g.values[op.output].shape)
        value_ranges[v] = list(ranges[pre.name])
        src = str(node.target) if node.op == "call_module" else node.name
        new = Act(name=integer.unique_op_name(g, c_identifier(src)), source=src,
                     torch_op=f"{act.kind} (split from {op.source} for its integer lookup table)",
                     inputs=[v], output=op.output, numel=g.values[v].numel, act=act)  # fmt: skip
        op.output = v
        op.act = ir.NO_ACT
        g.ops.insert(g.ops.index(op) + 1, new)
