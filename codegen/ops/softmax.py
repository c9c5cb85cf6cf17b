"""Softmax and log-softmax over any non-batch dim: IR ops, lowering, int8 forms.

Float kernels: runtime_c/sc_eltwise.h (last dim: ``sc_softmax``), runtime_c/sc_softmax.h (any dim:
``sc_softmax_axis``); templates templates/ops/softmax.j2, softmax_axis.j2.
Integer kernel: runtime_c/sc_softmax.h (``sc_i8_softmax``); template templates/ops_int8/softmax.j2.
All integer: e = exp_table[max - x] (Q15, prepared in Python from the input scale), S = sum e,
q = floor((2 e K + S 2^k) / (S 2^(k+1))) + out_zp with K = round(2^k / out_scale) (int64).
log-softmax (``LogSoftmaxInt8``, ``sc_i8_log_softmax`` in runtime_c/sc_softmax.h, template
templates/ops_int8/log_softmax.j2): the same exp table and sum S, ln(S / 2^15) from S's leading bit and a
256-entry table of its next 8 bits (error <= 0.002), q = out_zp - round(((max - x) s_in + ln) / s_out).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from math import prod
from typing import ClassVar

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from codegen import integer, ir
from codegen.errors import UnsupportedConfigError
from codegen.lowering import LowerContext, lowering_key, register_lowering, tensor_meta

EXP_ONE = 1 << 15  # exp_table[0]: Q15
SOFTMAX_MAX_COLS = 65535  # keeps the int32 sum of Q15 values below 2^31


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


@dataclass
class SoftmaxAxis(Softmax):
    """Softmax or log-softmax over a dim that is not the last: (rows, cols, inner), reduced over cols."""

    inner: int = 1

    template: ClassVar[str] = "softmax_axis.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_softmax.h",)


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
    if dim == 0:
        raise ctx.fail(node, f"softmax over dim 0 (the batch) of a {full} tensor", "Apply softmax over dim 1 or later")
    rows, cols, inner = prod(full[1:dim]), full[dim], prod(full[dim + 1 :])
    if inner == 1:
        ctx.emit(node, Softmax(**ctx.common(node, [x]), rows=rows, cols=cols, log=log_))
    else:
        ctx.emit(node, SoftmaxAxis(**ctx.common(node, [x]), rows=rows, cols=cols, log=log_, inner=inner))


# ---- int8 ------------------------------------------------------------------------------------------


def exp_table(in_scale: float) -> np.ndarray:
    """exp(-d * in_scale) in Q15 for d = max - x in 0..255."""
    return np.rint(np.exp(-np.arange(256, dtype=np.float64) * in_scale) * EXP_ONE).astype(np.int64)


def output_multiplier(out_scale: float) -> tuple[int, int]:
    """(K, k): K = round(2^k / out_scale) < 2^31 with k <= 16 as large as possible."""
    k = 16
    while k > 0 and round(2.0**k / out_scale) >= 2**31:
        k -= 1
    K = round(2.0**k / out_scale)
    if K >= 2**31:
        raise UnsupportedConfigError(f"softmax output scale {out_scale:g} is too small for the int8 kernel")
    return int(K), k


@integer.register_int8(Softmax)
class SoftmaxInt8(integer.Int8Handler):
    kind = "softmax"
    template = "softmax.j2"
    runtime = ("sc_softmax.h",)

    def rewrite(self, op: Softmax) -> ir.Op:
        if op.log and not isinstance(op, LogSoftmaxQ):  # its own kernel and header (LogSoftmaxInt8)
            fields = {f.name: getattr(op, f.name) for f in dataclasses.fields(Softmax)}
            return LogSoftmaxQ(**fields, inner=getattr(op, "inner", 1))
        return op

    def check(self, op: Softmax) -> None:
        if op.cols > SOFTMAX_MAX_COLS:
            raise UnsupportedConfigError(f"layer '{op.source}': int8 softmax over {op.cols} values (at most "
                                         f"{SOFTMAX_MAX_COLS}); emit without integer=True")  # fmt: skip

    def quantize(self, op: Softmax, ctx: integer.Int8Context, qo: integer.QOp) -> None:
        qin, qout = ctx.qin(op), ctx.qout(op)
        table = exp_table(qin.scale)
        qo.consts["exp"] = table
        ctx.int_array("exp", "_exp", "int32_t", table)
        K, k = output_multiplier(qout.scale)
        qo.scalars.update(mult=K, shift=k, out_zp=qout.zero_point, inner=getattr(op, "inner", 1))

    def reference(self, qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        op: Softmax = qo.op  # type: ignore[assignment]
        s = qo.scalars
        x = ins[0].reshape(op.rows, op.cols, s["inner"])
        e = qo.consts["exp"][x.max(axis=1, keepdims=True) - x]
        total = e.sum(axis=1, keepdims=True)
        q = (2 * e * s["mult"] + (total << s["shift"])) // (total << (s["shift"] + 1))
        return integer.clamp8(q + s["out_zp"])


@dataclass
class LogSoftmaxQ(Softmax):
    """log-softmax (rows, cols, inner) in the integer path (``SoftmaxInt8.rewrite``; never in float)."""

    inner: int = 1


LN_BITS = 16  # the log and the (max - x) term carry 16 fractional bits of the output scale


@integer.register_int8(LogSoftmaxQ)
class LogSoftmaxInt8(SoftmaxInt8):
    """y = out_zp - round(((max - x) s_in + ln(S / 2^15)) / s_out), S the sum of the Q15 exp table."""

    kind = "log_softmax"
    template = "log_softmax.j2"
    runtime = ("sc_softmax.h",)

    def rewrite(self, op: Softmax) -> ir.Op:
        return op

    def quantize(self, op: LogSoftmaxQ, ctx: integer.Int8Context, qo: integer.QOp) -> None:
        qin, qout = ctx.qin(op), ctx.qout(op)
        one = 1 << LN_BITS
        table = exp_table(qin.scale)
        ln_q = np.array([round(math.log1p((i + 0.5) / 256) / qout.scale * one) for i in range(256)], dtype=np.int64)
        ln2_q = round(math.log(2.0) / qout.scale * one)
        c1 = round(qin.scale / qout.scale * one)
        if max(ln2_q, c1, int(ln_q[-1])) >= 2**31:
            raise UnsupportedConfigError(f"layer '{op.source}': the log-softmax output scale {qout.scale:g} is too "
                                         "small for the int8 kernel; emit without integer=True")  # fmt: skip
        qo.consts.update(exp=table, ln=ln_q)
        ctx.int_array("exp", "_exp", "int32_t", table)
        ctx.int_array("ln", "_ln", "int32_t", ln_q)
        qo.scalars.update(ln2=ln2_q, c1=c1, out_zp=qout.zero_point, inner=op.inner)

    def reference(self, qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        op: LogSoftmaxQ = qo.op  # type: ignore[assignment]
        s = qo.scalars
        x = ins[0].reshape(op.rows, op.cols, s["inner"])
        a = x.max(axis=1, keepdims=True) - x
        total = qo.consts["exp"][a].sum(axis=1, keepdims=True)
        n = np.floor(np.log2(total.astype(np.float64))).astype(np.int64)  # exact: total < 2^31
        n = n - (total < (np.int64(1) << n)) + (total >= (np.int64(1) << (n + 1)))  # guard the float log2
        lq = (n - 15) * s["ln2"] + qo.consts["ln"][(total >> (n - 8)) & 255]
        q = s["out_zp"] - ((a * s["c1"] + lq + (1 << (LN_BITS - 1))) >> LN_BITS)
        return integer.clamp8(q)
