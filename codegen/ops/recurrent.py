"""Recurrent layers (nn.LSTM, nn.GRU; batch_first=True, any number of layers, bidirectional, with or
without bias): IR ops, lowering and int8 forms.

Each layer is one ``Recurrent`` op unrolled over the sequence in C (templates/ops/recurrent.j2): per step
the input and hidden projections W_ih x + b_ih and W_hh h + b_hh run through the Linear kernel of each
weight's encoding (dense, CSR, int8 / codebook weight-only: ``encodable``), then sc_lstm_cell /
sc_gru_cell (runtime_c/sc_recurrent.h) update h (and c) in the op's arena scratch; h is copied into the
output sequence (T, D*H). The final hidden states h_n are gathered from the sequences by ``RnnState``
(only when the model uses them); the LSTM's final cell state c_n is not computed (refused if used).

The lowering stores the node's tuple in ``ctx.tuples`` (LSTM: [out, [h_n, c_n]], GRU: [out, h_n]; out is a
value name, h_n and c_n are items that lower themselves when used) so that ``operator.getitem`` (``ops.gather``) aliases
``out, (h, c) = self.lstm(x)`` and ``h[-1]``.

int8 (``RecurrentInt8``; kernels sc_i8_rnn_* in runtime_c/sc_recurrent.h, templates/ops_int8/recurrent.j2):
int8 weights per gate row, the input at its calibrated scale, the hidden state (and so the output
sequence) at the fixed scale 1/128 (h is in (-1, 1)); per step each projection is an int32 dot product
requantized to Q12 plus the bias in Q12, sigmoid/tanh come from 513-point Q15 tables over [-8, 8] with
linear interpolation, the LSTM cell state is int32 Q15. ``RnnState`` copies int8 rows.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch.fx as fx
import torch.nn as nn

from codegen import integer, ir
from codegen.errors import CodegenError
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


# ---- int8 (codegen/integer.py, runtime_c/sc_recurrent.h, templates/ops_int8/recurrent.j2) -------------

H_RANGE = [-1.0, 127.0 / 128.0]  # the hidden state's range: QParams(1/128, 0)
GATE_BITS = 12  # gate pre-activations in Q12 (int16 range: [-8, 8))
LUT_POINTS = 513  # f(-8 + i / 32), i = 0..512


def rnn_lut(fn: str) -> np.ndarray:
    """sigmoid or tanh at -8 + i/32 in Q15, clipped to int16."""
    x = -8.0 + np.arange(LUT_POINTS, dtype=np.float64) / 32.0
    y = 1.0 / (1.0 + np.exp(-x)) if fn == "sigmoid" else np.tanh(x)
    return np.clip(np.rint(y * 32768.0), -32768, 32767).astype(np.int64)


def rnn_act(lut: np.ndarray, v: np.ndarray) -> np.ndarray:
    """sc_i8_rnn_act: the table interpolated at v / 2^12 (v saturated to int16)."""
    u = np.clip(v, -32768, 32767) + 32768
    i = u >> 7
    return lut[i] + (((lut[i + 1] - lut[i]) * (u & 127) + 64) >> 7)


def rshr(v: np.ndarray, n: int) -> np.ndarray:
    """sc_i8_rshr64: v / 2^n rounded half away from zero."""
    half = np.int64(1) << (n - 1)
    return np.where(v >= 0, (v + half) >> n, -((-v + half) >> n))


def _proj(x: np.ndarray, c: dict, key: str, zp: int) -> np.ndarray:
    acc = c["w" + key] @ (x - zp)
    b = c.get("b" + key)
    return integer.mbqm(acc, c["m" + key], c["s" + key]) + (0 if b is None else b)


@integer.register_int8_pass
def recurrent_state_ranges(g: ir.Graph, cal: integer.Calibration) -> None:
    """The output sequence of an LSTM/GRU layer holds its hidden states, in (-1, 1): quantized at 1/128
    (the kernel's fixed state format), whatever the calibration saw."""
    for op in g.ops:
        if isinstance(op, Recurrent):
            cal.value_ranges[op.output] = list(H_RANGE)


MM_EMAX = 21  # SC_I8_MM_EMAX (runtime_c/sc_fixed.h): the largest right shift of the SMMLAR requantization


@integer.register_int8(Recurrent)
class RecurrentInt8(integer.Int8Handler):
    """One LSTM/GRU layer: per step gx = W_ih (x - zp_x) and gh = W_hh h requantized to Q12 (+ bias in Q12),
    then sc_i8_lstm_cell / sc_i8_gru_cell; h at scale 1/128 is the output sequence's int8 value."""

    kind = "recurrent"
    template = "recurrent.j2"
    runtime = ("sc_recurrent.h",)

    def quantize(self, op: Recurrent, ctx: integer.Int8Context, qo: integer.QOp) -> None:
        qin, qout = ctx.qin(op), ctx.qout(op)
        if (qout.scale, qout.zero_point) != (float(np.float32(1 / 128)), 0):  # pragma: no cover - the pass sets it
            raise CodegenError(f"layer '{op.source}': the hidden state is not at scale 1/128 (bug)")
        one = float(1 << GATE_BITS)
        for sfx in ["", "_r"][: op.directions]:
            for key, src, s_in in (("x", "weight", qin.scale), ("h", "weight_hh", 1.0 / 128.0)):
                q, sw = integer.quantize_weight(op.params[src + sfx])
                ms = [(integer.INT32_MAX, 30) if f >= 2.0**30 else integer.quantize_multiplier(f)
                      for f in (s_in * sw * one)]  # fmt: skip
                k = key + sfx
                qo.consts["w" + k] = q
                qo.consts["m" + k] = np.array([m for m, _ in ms], dtype=np.int64)
                qo.consts["s" + k] = np.array([s for _, s in ms], dtype=np.int64)
                ctx.int_array(src + sfx, f"_w{k}", "int8_t", q.reshape(-1))
                ctx.int_array("mult_" + k, f"_m{k}", "int32_t", qo.consts["m" + k])
                ctx.int_array("shift_" + k, f"_s{k}", "int8_t", qo.consts["s" + k])
                # every row's requantization takes sc_i8_rnn_proj's SMMLAR form (its `mm` argument)
                qo.scalars["mm_" + k] = int(all(-MM_EMAX <= v <= -1 for v in qo.consts["s" + k]) and q.shape[1] < 2**15)
                b = op.params.get(("bias_ih" if key == "x" else "bias_hh") + sfx)
                if b is not None:
                    bq = np.clip(np.rint(b.astype(np.float64) * one), -(2**30), 2**30).astype(np.int64)
                    qo.consts["b" + k] = bq
                    ctx.int_array("bias_" + k, f"_b{k}", "int32_t", bq)
        for fn in ("sigmoid", "tanh"):
            qo.consts[fn] = rnn_lut(fn)
            ctx.int_array(fn, "_" + fn[:3], "int16_t", qo.consts[fn])
        qo.scalars["x_zp"] = qin.zero_point

    def reference(self, qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        op: Recurrent = qo.op  # type: ignore[assignment]
        c, H, T, D = qo.consts, op.hidden, op.seq_len, op.directions
        x = ins[0].reshape(T, op.input_size).astype(np.int64)
        out = np.zeros((T, D * H), dtype=np.int64)
        for d, sfx in enumerate(["", "_r"][:D]):
            h = np.zeros(H, dtype=np.int64)
            cell = np.zeros(H, dtype=np.int64)
            for t in range(T):
                s = T - 1 - t if d else t
                gx = _proj(x[s], c, "x" + sfx, qo.scalars["x_zp"])
                gh = _proj(h, c, "h" + sfx, 0)
                a = gx + gh
                if op.cell == "lstm":
                    i, f = rnn_act(c["sigmoid"], a[:H]), rnn_act(c["sigmoid"], a[H : 2 * H])
                    g, o = rnn_act(c["tanh"], a[2 * H : 3 * H]), rnn_act(c["sigmoid"], a[3 * H :])
                    cell = np.clip(rshr(f * cell + i * g, 15), -(1 << 30), 1 << 30)
                    hv = rshr(o * rnn_act(c["tanh"], rshr(cell, 3)), 23)
                else:
                    r, z = rnn_act(c["sigmoid"], a[:H]), rnn_act(c["sigmoid"], a[H : 2 * H])
                    m = rnn_act(c["tanh"], gx[2 * H :] + rshr(r * gh[2 * H :], 15))
                    hv = rshr((32768 - z) * m + z * (h * 256), 23)
                h = integer.clamp8(hv)
                out[s, d * H : (d + 1) * H] = h
        return out.reshape(-1)


@integer.register_int8(RnnState)
class RnnStateInt8(integer.Int8Handler):
    """Final hidden states: int8 rows copied out of the sequences (all at the hidden state's 1/128)."""

    kind = "copy"
    template = "rnn_state.j2"
    keeps_qparams = True
    runtime = ("sc_recurrent.h",)

    def quantize(self, op: RnnState, ctx: integer.Int8Context, qo: integer.QOp) -> None:
        """Nothing to quantize: a copy."""

    def reference(self, qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        op: RnnState = qo.op  # type: ignore[assignment]
        return np.concatenate([ins[src][row : row + op.hidden] for src, row in op.rows])

