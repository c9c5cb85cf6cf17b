"""Recurrent layers (nn.LSTM, nn.GRU; batch_first=True, any number of layers, bidirectional, with or
without bias): IR ops and lowering. Float only (integer mode refuses them by name).

Each layer is one ``Recurrent`` op unrolled over the sequence in C (templates/ops/recurrent.j2): per step
the input and hidden projections W_ih x + b_ih and W_hh h + b_hh run through the Linear kernel of each
weight's encoding (dense, CSR, int8 / codebook weight-only: ``encodable``), then sc_lstm_cell /
sc_gru_cell (runtime_c/sc_recurrent.h) update h (and c) in the op's arena scratch; h is copied into the
output sequence (T, D*H). The final hidden states h_n are gathered from the sequences by ``RnnState``
(only when the model uses them); the LSTM's final cell state c_n is not computed (refused if used).

The lowering stores the node's tuple in ``ctx.tuples`` (LSTM: [out, [h_n, c_n]], GRU: [out, h_n]; out is a
value name, h_n and c_n are items that lower themselves when used) so that ``operator.getitem`` (``ops.gather``) aliases
``out, (h, c) = self.lstm(x)`` and ``h[-1]``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import ClassVar

import torch.fx as fx
import torch.nn as nn

from codegen import ir
from codegen.lowering import LowerContext, f32, register_lowering, tensor_meta


@dataclass
class Recurrent(ir.Op):
    """One LSTM or GRU layer over a (T, input_size) sequence, output (T, directions * hidden)."""

    cell: str = "lstm"
    seq_len: int = 1
    input_size: int = 0
    hidden: int = 0
    directions: int = 1

    kind: ClassVar[str] = "recurrent"
    template: ClassVar[str] = "recurrent.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_linear.h", "sc_recurrent.h")
    encodable: ClassVar[tuple[str, ...]] = ("weight", "weight_hh", "weight_r", "weight_hh_r")

    @property
    def gates(self) -> int:
        return 4 if self.cell == "lstm" else 3

    def describe(self) -> str:
        return self.cell

    def macs(self) -> int:
        return self.directions * self.seq_len * self.gates * self.hidden * (self.input_size + self.hidden)

    def kernel_choice(self, in_place: bool = False) -> ir.KernelChoice:
        n = 2 * self.gates * self.hidden + (2 if self.cell == "lstm" else 1) * self.hidden
        return ir.KernelChoice("sc_" + self.cell + "_cell",
                               ir.Scratch("float", "gx", n, "input and hidden gates, h (and c)", arena=True))  # fmt: skip


@dataclass
class RnnState(ir.Op):
    """Final hidden states of recurrent layers: ``rows`` = (input index, float offset) of each state."""

    hidden: int = 0
    rows: list[tuple[int, int]] = field(default_factory=list)

    kind: ClassVar[str] = "rnn_state"
    template: ClassVar[str] = "rnn_state.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_recurrent.h",)


@dataclass
class _StateRows:
    """What ``h_n`` of a recurrent node is made of: per (layer, direction), the value of the layer's
    output sequence and the float offset of the final state in it. A tuple item that lowers itself
    (``ops.gather._pick`` calls ``lower_item``)."""

    hidden: int
    rows: list[tuple[str, int]]

    def lower_item(self, ctx: LowerContext, node: fx.Node) -> None:
        if not node.users:
            return
        whole = [u for u in node.users if u.target is not operator.getitem or not isinstance(u.args[1], int)]
        if len(self.rows) > 1 and whole:
            raise ctx.fail(node, f"it uses h_n of {len(self.rows)} stacked layers/directions whole: PyTorch stacks "
                           "them in dim 0, where the generated C keeps the batch",
                           "Index it (h_n[-1], h_n[0]) or use the output sequence")  # fmt: skip
        if len(self.rows) == 1 and whole:
            _emit_state(ctx, node, self)
        ctx.tuples[node.name] = [_StateRows(self.hidden, [r]) for r in self.rows]  # h_n[i]


@dataclass
class _CellState:
    """The LSTM's c_n: not computed; refused if the model uses it."""

    def lower_item(self, ctx: LowerContext, node: fx.Node) -> None:
        if node.users:
            raise ctx.fail(node, "it uses the LSTM's final cell state c_n, which the generated C does not keep",
                           "Use the output sequence or the final hidden state h_n")  # fmt: skip


def _emit_state(ctx: LowerContext, node: fx.Node, st: _StateRows) -> None:
    srcs = list(dict.fromkeys(v for v, _ in st.rows))
    out = ctx.value_names("v_" + node.name)
    ctx.values[out] = ir.Value(out, ctx.shape(node))
    ctx.ops.append(RnnState(name=ctx.layer_names(node.name), source=node.name, torch_op="final hidden state",
                            inputs=srcs, output=out, hidden=st.hidden,
                            rows=[(srcs.index(v), off) for v, off in st.rows]))  # fmt: skip
    ctx.env[node.name] = out


@register_lowering(nn.LSTM, nn.GRU)
def lower_recurrent(ctx: LowerContext, node: fx.Node) -> None:
    m = ctx.module(node)
    cell = "lstm" if isinstance(m, nn.LSTM) else "gru"
    if not m.batch_first:
        raise ctx.fail(node, "batch_first=False puts the sequence before the batch dimension, and the generated C "
                       "keeps the batch first", "Construct the layer with batch_first=True and feed it (N, T, features)")  # fmt: skip
    if getattr(m, "proj_size", 0):
        raise ctx.fail(node, f"proj_size={m.proj_size} (LSTM with projections) is not supported", "Use proj_size=0")
    if len(node.args) > 1 or node.kwargs:
        raise ctx.fail(node, "an initial state (h0, c0) is given", "Call the layer with the input only (zero initial state)")
    x = ctx.tensor_arg(node, 0, "input")
    xs = ctx.shape(x)
    if len(xs) != 2:
        raise ctx.fail(node, f"its input has shape {tuple(tensor_meta(x).shape)}",
                       "Give a batched sequence (N, T, features) with batch_first=True")  # fmt: skip
    T, size = xs
    H, D = int(m.hidden_size), 2 if m.bidirectional else 1
    src = str(node.target)
    cur = ctx.value(x)
    states: list[tuple[str, int]] = []
    for layer in range(m.num_layers):
        params = {}
        for d, sfx in enumerate(["", "_r"][:D]):
            w = f"_l{layer}" + ("_reverse" if d else "")
            params["weight" + sfx] = f32(getattr(m, "weight_ih" + w))
            params["weight_hh" + sfx] = f32(getattr(m, "weight_hh" + w))
            if m.bias:
                params["bias_ih" + sfx] = f32(getattr(m, "bias_ih" + w))
                params["bias_hh" + sfx] = f32(getattr(m, "bias_hh" + w))
        out = ctx.value_names(f"v_{node.name}_l{layer}")
        ctx.values[out] = ir.Value(out, (T, D * H))
        op = Recurrent(
            name=ctx.layer_names(f"{src}_l{layer}" if m.num_layers > 1 else src), source=src,
            torch_op=repr(m).split("\n")[0] + (f" layer {layer}" if m.num_layers > 1 else ""),
            inputs=[cur], output=out, params=params, cell=cell, seq_len=T, input_size=size, hidden=H, directions=D,
        )  # fmt: skip
        ctx.emit(node, op)
        states += [(out, (T - 1) * D * H)] + ([(out, H)] if D == 2 else [])
        cur, size = out, D * H
    ctx.env[node.name] = cur
    h_n = _StateRows(H, states)
    ctx.tuples[node.name] = [cur, [h_n, _CellState()] if cell == "lstm" else h_n]
