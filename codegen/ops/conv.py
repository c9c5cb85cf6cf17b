"""Convolution (Conv1d, Conv2d, grouped and depthwise): IR op, lowering, kernel choice, int8 form.

Kernels: runtime_c/sc_conv.h, float (dense, CSR), weight-only (int8 / codebook weights) and int8 sections;
templates templates/ops/conv.j2 and templates/ops_int8/conv.j2.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from codegen import integer, ir
from codegen.errors import CodegenError
from codegen.lowering import (
    LowerContext,
    accepts_constants,
    as_chw,
    check_zeros_padding,
    f32,
    register_lowering,
    window_pair,
)

# A CSR 1x1 conv run in place gathers PWC_BLOCK positions (SC_PWC_BLOCK in sc_conv.h) of its
# C_in channels into a stack buffer first; at most PWC_MAX_CBUF_BYTES of it.
PWC_BLOCK = 8
PWC_MAX_CBUF_BYTES = 4096
# The dense conv with dilation 1 copies 4 output windows into an arena column (sc_conv_dense_mm) when the
# column takes at most MM_COL_MAX_BYTES; larger windows keep sc_conv_dense_d1, which needs no scratch.
MM_COL_MAX_BYTES = 8192
# The weight-only (int8 / codebook) 1x1 kernels gather WQ_PW_BLOCK positions (SC_WQ_PW_BLOCK in sc_conv.h).
WQ_PW_BLOCK = 8


@dataclass
class Conv2d(ir.Windowed):
    """Convolution (also Conv1d with h == 1). Weight is viewed as [C_out, C_in/groups*kh*kw]."""

    groups: int = 1
    act: ir.Activation = ir.NO_ACT
    dims: int = 2
    column: bool = True  # dense, dilation 1: the column kernel may run (False once the planner dropped its scratch)

    kind: ClassVar[str] = "conv"
    template: ClassVar[str] = "conv.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_conv.h",)
    encodable: ClassVar[tuple[str, ...]] = ("weight",)

    def macs(self) -> int:
        c_out, h, w = self.out_shape
        return c_out * h * w * (self.in_shape[0] // self.groups) * self.kernel[0] * self.kernel[1]

    @property
    def depthwise(self) -> bool:
        """One group per input channel (any channel multiplier): the "depthwise_conv" of reports."""
        return self.groups == self.in_shape[0] and self.groups > 1

    @property
    def depthwise_1to1(self) -> bool:
        """Depthwise with one output channel per input channel: the depthwise kernels' shape."""
        return self.depthwise and self.out_shape[0] == self.in_shape[0]

    @property
    def pointwise(self) -> bool:
        """1x1, stride 1, no padding: the pointwise kernels' shape."""
        return tuple(self.kernel) == (1, 1) and tuple(self.stride) == (1, 1) and tuple(self.padding) == (0, 0)

    def describe(self) -> str:
        return "depthwise_conv" if self.depthwise else "conv"

    def pad_plane_floats(self) -> int:
        """Floats of the zero-padded input plane of the float depthwise kernels (dilation 1)."""
        return (((self.out_shape[1] - 1) * self.stride[0] + self.kernel[0])
                * ((self.out_shape[2] - 1) * self.stride[1] + self.kernel[1]))  # fmt: skip

    def kernel_choice(self, in_place: bool = False) -> ir.KernelChoice:
        """The kernel (runtime_c/sc_conv.h), most specific for the shape first, its
        scratch, and whether it may write over its input (``KernelChoice.in_place``, which the planner
        reads through ``overwrites_input``). ``in_place``: the planner gave the output the input's
        storage (the CSR 1x1 conv then gathers columns first: sc_conv_pwc_*)."""
        w = self.encoded["weight"]
        if self.integer:  # the int8 section of sc_conv.h
            if int8_pointwise(self, w.kernel):  # 2 positions of the input channels gathered first
                col = ir.Scratch("uint32_t", "col", pw_column_words(self),
                                 "2 positions of the input channels as int16 pairs", arena=True)  # fmt: skip
                return ir.KernelChoice("sc_i8_conv_q8_pw", col)
            if int8_c1k5(self, w.kernel):  # the input plane copied with in_zp borders first
                pad8 = ir.Scratch("int8_t", "pad", c1k5_pad_bytes(self), "input plane with in_zp borders", arena=True)
                return ir.KernelChoice("sc_i8_conv_q8_c1k5", pad8)
            if int8_k3(self, w.kernel):  # the kernel rows of each output row copied with in_zp borders first
                k3 = ir.Scratch("uint32_t", "scratch", k3_scratch_words(self),
                                "2 windows as int16 pairs, then the kernel rows' input rows", arena=True)  # fmt: skip
                return ir.KernelChoice("sc_i8_conv_q8_k3", k3)
            pad_bytes = dw_pad_bytes(self, w.kernel)
            if pad_bytes:  # depthwise: each channel copied into an in_zp-padded plane first
                pad8 = ir.Scratch("int8_t", "pad", pad_bytes, "input plane padded with in_zp, + 3 slack bytes", arena=True)
                return ir.KernelChoice("sc_i8_conv_q8_dwp", pad8)
            words = dsp_column_words(self, w.kernel)
            if words:  # the SMLAD kernel (built with SC_INT8_DSP): start values and the widened column
                col = ir.Scratch("uint32_t", "scratch", words, "start values and 2 windows as int16 pairs", arena=True)
                return ir.KernelChoice("sc_i8_conv_q8_dsp", col)
            return ir.KernelChoice(f"sc_i8_conv_{w.kernel}")
        dw = self.depthwise_1to1 and tuple(self.dilation) == (1, 1)
        # depthwise: each channel is copied to the padded plane before its outputs are written
        dw_in_place = self.out_shape[1] * self.out_shape[2] <= self.in_shape[1] * self.in_shape[2]
        same_shape = tuple(self.out_shape) == tuple(self.in_shape)
        pad = ir.Scratch("float", "pad", self.pad_plane_floats(), "zero-padded input plane", arena=True)
        if w.encoding == "dense":
            if tuple(self.dilation) != (1, 1):
                return ir.KernelChoice("sc_conv_dense_any")
            if self.pointwise:  # 4 positions gathered into the column first
                col = ir.Scratch("float", "col", 4 * self.in_shape[0] // self.groups,
                                 "4 positions of the input channels", arena=True)  # fmt: skip
                return ir.KernelChoice("sc_conv_dense_pw", col, in_place=same_shape)
            if dw:
                dw3 = tuple(self.kernel) == (3, 3) and tuple(self.stride) == (1, 1)
                return ir.KernelChoice("sc_conv_dense_dw3" if dw3 else "sc_conv_dense_dw", pad, in_place=dw_in_place)
            col_floats = 4 * self.in_shape[0] // self.groups * self.kernel[0] * self.kernel[1]
            if self.column and 4 * col_floats <= MM_COL_MAX_BYTES:  # 4 windows as a column, then sc_mm44
                col = ir.Scratch("float", "col", col_floats, "4 output windows as a column", arena=True)
                return ir.KernelChoice("sc_conv_dense_mm", col, optional=True)
            return ir.KernelChoice("sc_conv_dense_d1")
        if w.kernel in ("q8", "cb") and self.groups == 1 and self.pointwise:  # weight-only 1x1 (sc_conv.h)
            col = ir.Scratch("float", "col", WQ_PW_BLOCK * self.in_shape[0],
                             f"{WQ_PW_BLOCK} positions of the input channels", arena=True)  # fmt: skip
            return ir.KernelChoice(f"sc_conv_{w.kernel}_pw", col, in_place=same_shape)
        if w.kernel in ("q8", "cb") and dw:  # weight-only depthwise: channel weights decoded next to the plane
            dw3 = tuple(self.kernel) == (3, 3) and tuple(self.stride) == (1, 1)
            wpad = ir.Scratch("float", "pad", self.pad_plane_floats() + self.kernel[0] * self.kernel[1],
                              "zero-padded input plane, then the channel's decoded weights", arena=True)  # fmt: skip
            return ir.KernelChoice(f"sc_conv_{w.kernel}_dw3" if dw3 else f"sc_conv_{w.kernel}_dw", wpad,
                                   in_place=dw_in_place)  # fmt: skip
        if w.encoding == "csr":
            # groups == 1: SC_PWC_BLOCK positions gathered first, within PWC_MAX_CBUF_BYTES of stack
            pwc_ok = self.groups == 1 and 4 * self.pwc_cbuf_floats() <= PWC_MAX_CBUF_BYTES and same_shape
            if self.pointwise and self.groups == 1 and in_place:
                cbuf = ir.Scratch("float", "cbuf", self.pwc_cbuf_floats(),
                                  "SC_PWC_BLOCK positions of the input channels (stack): in place")  # fmt: skip
                return ir.KernelChoice(f"sc_conv_pwc_{w.kernel}", cbuf, in_place=pwc_ok)
            if self.pointwise:
                return ir.KernelChoice(f"sc_conv_pw_{w.kernel}", in_place=pwc_ok or (dw and dw_in_place))
            if dw:
                return ir.KernelChoice(f"sc_conv_dw_{w.kernel}", pad, in_place=dw_in_place)
        return ir.KernelChoice(f"sc_conv_{w.kernel}")  # CSR generic; int8 / codebook forms (weight-only section)

    def pwc_cbuf_floats(self) -> int:
        """Floats of the stack column buffer of the in-place CSR 1x1 kernel (sc_conv_pwc_csr_*)."""
        return PWC_BLOCK * self.in_shape[0]

    def drop_optional_scratch(self, drop: bool) -> None:
        self.column = not drop

    def overwrites_input(self) -> bool:
        """What the kernel choice says (one place decides the kernel, its scratch and in-place)."""
        return self.kernel_choice().in_place


def _conv_op(ctx: LowerContext, node: fx.Node, x: fx.Node, weight: torch.Tensor, bias: torch.Tensor | None,
             stride, padding, dilation, groups: int, dims: int) -> Conv2d:  # fmt: skip
    """The Conv2d op of a conv module or of F.conv1d/F.conv2d (one IR op for both forms)."""
    in_shape, out_shape = as_chw(ctx.shape(x)), as_chw(ctx.shape(node))
    k, s, d = (window_pair(v, dims) for v in (tuple(weight.shape[2:]), stride, dilation))
    if isinstance(padding, str):
        if padding == "valid":
            p = (0, 0)
        else:  # "same": torch puts the extra element of an odd total on the bottom/right
            p = tuple(d[i] * (k[i] - 1) // 2 for i in range(2))
    else:
        p = window_pair(padding, dims, 0)
    w = f32(weight)
    b = f32(bias) if bias is not None else None
    return Conv2d(
        **ctx.common(node, [x]),
        params={"weight": w.reshape(w.shape[0], -1), **({"bias": b} if b is not None else {})},
        in_shape=in_shape,
        out_shape=out_shape,
        kernel=k,
        stride=s,
        padding=p,
        dilation=d,
        groups=int(groups),
        dims=dims,
    )


@register_lowering(nn.Conv1d, nn.Conv2d)
def lower_conv(ctx: LowerContext, node: fx.Node) -> None:
    m = ctx.module(node)
    dims = 1 if isinstance(m, nn.Conv1d) else 2
    check_zeros_padding(ctx, node, m)
    x = ctx.tensor_arg(node, 0, "input")
    ctx.emit(node, _conv_op(ctx, node, x, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups, dims))


@register_lowering(F.conv1d, F.conv2d)
def lower_conv_functional(ctx: LowerContext, node: fx.Node) -> None:
    """F.conv1d / F.conv2d whose weight (and bias) are module parameters (get_attr constants)."""
    dims = 1 if node.target is F.conv1d else 2
    x = ctx.tensor_arg(node, 0, "input")
    weight = ctx.constant(node, 1, "weight")
    if weight.dim() != dims + 2:
        raise ctx.fail(node, f"its weight has shape {tuple(weight.shape)}", f"Give a {dims + 2}-D conv weight")
    bias = ctx.constant(node, 2, "bias", optional=True)
    ctx.emit(node, _conv_op(ctx, node, x, weight, bias, ctx.arg(node, 3, "stride", 1), ctx.arg(node, 4, "padding", 0),
                            ctx.arg(node, 5, "dilation", 1), int(ctx.arg(node, 6, "groups", 1)), dims))  # fmt: skip


accepts_constants(F.conv1d, F.conv2d)


# ---- int8 (codegen/integer.py, runtime_c/sc_conv.h int8 section, templates/ops_int8/conv.j2) ------


def int8_pointwise(op: ir.Op, weight_kernel: str) -> bool:
    """The int8 pointwise kernel (``sc_i8_conv_q8_pw``) runs: 1x1, stride 1, no padding, groups == 1,
    dense int8 weights. Its bias holds -in_zp * sum(q) (folded at generation time)."""
    return isinstance(op, Conv2d) and op.pointwise and op.groups == 1 and weight_kernel == "q8"


def int8_c1k5(op: ir.Op, weight_kernel: str) -> bool:
    """The int8 single-input-channel 5-wide kernel (``sc_i8_conv_q8_c1k5``) runs: C_in == 1, groups == 1,
    kernel width 5, stride 1, dilation 1, dense int8 weights. Its bias holds -in_zp * sum(q)."""
    return (isinstance(op, Conv2d) and op.in_shape[0] == 1 and op.groups == 1 and op.kernel[1] == 5
            and tuple(op.stride) == (1, 1) and tuple(op.dilation) == (1, 1) and weight_kernel == "q8")  # fmt: skip


def c1k5_pad_bytes(op: Conv2d) -> int:
    """int8 bytes of the padded plane of ``sc_i8_conv_q8_c1k5`` (``SC_I8_C1_PAD_BYTES``)."""
    wp = (op.out_shape[2] + 3) // 4 * 4 + 4
    return (op.out_shape[1] + op.kernel[0] - 1) * wp


def k3_groups(op: Conv2d) -> int:
    """4-tap weight groups per output channel of the 3-wide kernel (``SC_I8_K3_GROUPS``): 3 per block of 4
    kernel rows (C_in x kh rows), 1 per remaining row."""
    rows = op.in_shape[0] * op.kernel[0]
    return rows // 4 * 3 + rows % 4


def k3_scratch_words(op: Conv2d) -> int:
    """uint32 words of the 3-wide kernel's arena scratch (``SC_I8_K3_SCRATCH_WORDS``): the column of 2
    positions (4 words per group) and the band of kernel rows, each (W_out - 1) * stride + 4 bytes."""
    wp = (op.out_shape[2] - 1) * op.stride[1] + 4
    return 4 * k3_groups(op) + (op.in_shape[0] * op.kernel[0] * wp + 3) // 4


def int8_k3(op: ir.Op, weight_kernel: str) -> bool:
    """The int8 3-wide kernel (``sc_i8_conv_q8_k3``) runs: groups == 1, kernel width 3, dilation 1 along x
    (any height, stride, padding), dense int8 weights (stored in ``k3_weight_order``), neither pointwise nor
    C_in == 1 5-wide, scratch within ``integer.DSP_SCRATCH_MAX_BYTES``. Its bias holds -in_zp * sum(q)."""
    return (isinstance(op, Conv2d) and op.groups == 1 and op.kernel[1] == 3 and op.dilation[1] == 1
            and weight_kernel == "q8" and 4 * k3_scratch_words(op) <= integer.DSP_SCRATCH_MAX_BYTES)  # fmt: skip


K3_BLOCK_ORDER = ((0, 0), (1, 0), (0, 2), (1, 2), (2, 0), (3, 0), (2, 2), (3, 2), (0, 1), (2, 1), (1, 1), (3, 1))


def k3_weight_order(q: np.ndarray, op: Conv2d) -> np.ndarray:
    """The weights [C_out, C_in * kh * 3] as ``sc_i8_conv_q8_k3`` reads them, 4 * ``k3_groups`` bytes per
    output channel: per block of 4 kernel rows r0..r3 the 12 bytes w0(r0) w0(r1) w2(r0) w2(r1) w0(r2) w0(r3)
    w2(r2) w2(r3) w1(r0) w1(r2) w1(r1) w1(r3) (wk(r): tap k of row r, ``K3_BLOCK_ORDER``), then per remaining
    row w0 w1 w2 0."""
    co = q.shape[0]
    rows = q.reshape(co, -1, 3)
    n4 = rows.shape[1] // 4 * 4
    b = rows[:, :n4].reshape(co, n4 // 4, 4, 3)  # [co, block, row in block, tap]
    blocks = np.stack([b[:, :, r, k] for r, k in K3_BLOCK_ORDER], axis=2).reshape(co, -1)
    tail = np.concatenate([rows[:, n4:], np.zeros((co, rows.shape[1] - n4, 1), q.dtype)], axis=2).reshape(co, -1)
    return np.concatenate([blocks, tail], axis=1)


def int8_folds_input_zp(op: ir.Op, weight_kernel: str) -> bool:
    """The int8 conv kernel multiplies raw inputs (its bias holds -in_zp * sum(q))."""
    return int8_pointwise(op, weight_kernel) or int8_c1k5(op, weight_kernel) or int8_k3(op, weight_kernel)


def pw_column_words(op: Conv2d) -> int:
    """uint32 words of the pointwise kernel's column (``SC_I8_PW_COL_WORDS``): 2 positions x C_in int16."""
    return (op.in_shape[0] + 3) // 4 * 4


def dsp_column_words(op: ir.Op, weight_kernel: str) -> int:
    """uint32 words of the arena scratch of the SMLAD conv kernel (``sc_i8_conv_q8_dsp``, compiled when the C
    is built with SC_INT8_DSP; ``SC_I8_DSP_SCRATCH_WORDS``): C_out int32 start values, then the column of 2
    output positions x row_len taps as int16, row_len rounded up to 4. 0 where that kernel is not used:
    grouped/depthwise convs, sparse weights, the kernels that fold in_zp into the bias (pointwise, C_in == 1
    5-wide) or scratch above ``integer.DSP_SCRATCH_MAX_BYTES``."""
    if not isinstance(op, Conv2d) or op.groups != 1 or weight_kernel != "q8" or int8_folds_input_zp(op, weight_kernel):
        return 0
    words = op.out_shape[0] + (op.in_shape[0] * op.kernel[0] * op.kernel[1] + 3) // 4 * 4
    return words if 4 * words <= integer.DSP_SCRATCH_MAX_BYTES else 0


def dw_pad_bytes(op: ir.Op, weight_kernel: str) -> int:
    """int8 bytes of the in_zp-padded input plane of the depthwise kernel (``sc_i8_conv_q8_dwp``; arena
    scratch of ``Conv2d.kernel_choice``): the extent the outputs read, plus 3 slack bytes (as
    ``SC_I8_DW_PAD_BYTES``). 0 where that kernel is not used: not depthwise (groups == cin == cout),
    sparse weights, or a plane above ``integer.DSP_SCRATCH_MAX_BYTES`` (the clipping kernel runs instead)."""
    if not isinstance(op, Conv2d) or weight_kernel != "q8":
        return 0
    if not op.depthwise_1to1:
        return 0
    hp = (op.out_shape[1] - 1) * op.stride[0] + (op.kernel[0] - 1) * op.dilation[0] + 1
    wp = (op.out_shape[2] - 1) * op.stride[1] + (op.kernel[1] - 1) * op.dilation[1] + 1
    n = hp * wp + 3
    return n if n <= integer.DSP_SCRATCH_MAX_BYTES else 0



@integer.register_int8(Conv2d)
class ConvInt8(integer.Int8Handler):
    runtime = ("sc_conv.h",)
    kind = "conv"
    template = "conv.j2"

    def quantize(self, op: Conv2d, ctx: integer.Int8Context, qo: integer.QOp) -> None:
        integer.quantize_weighted(op, ctx, qo, fold_input_zp=lambda kernel: int8_folds_input_zp(op, kernel))
        if int8_k3(op, ctx.encoded["weight"].kernel):  # stored in the kernel's order (the reference keeps q)
            ctx.encoded["weight"] = integer.encode_q(k3_weight_order(qo.consts["q"], op), ctx.base + "_w",
                                                     ctx.representation, op.source, encoding=ctx.encoded["weight"].encoding)  # fmt: skip
        qo.scalars["pw"] = int(int8_pointwise(op, ctx.encoded["weight"].kernel))
        qo.scalars["folded"] = int(int8_folds_input_zp(op, ctx.encoded["weight"].kernel))
        qo.scalars["dsp_col"] = dsp_column_words(op, ctx.encoded["weight"].kernel)
        qo.scalars["dw_pad"] = dw_pad_bytes(op, ctx.encoded["weight"].kernel)

    def tile_form(self, qo: integer.QOp, op: Conv2d) -> integer.QOp:  # type: ignore[override]
        """On a tile only the depthwise kernel's padded plane changes size (the folded bias and the
        kernel choice depend on channels, kernel, stride: the same on every tile)."""
        kernel = op.encoded["weight"].kernel
        if int(int8_folds_input_zp(op, kernel)) != qo.scalars["folded"]:  # pragma: no cover - padding stays 0
            raise CodegenError(f"layer '{op.source}': its int8 kernel changes on a tile (bug)")
        return dataclasses.replace(qo, op=op, scalars={**qo.scalars, "dw_pad": dw_pad_bytes(op, kernel)})

    def reference(self, qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        op: Conv2d = qo.op  # type: ignore[assignment]
        s = qo.scalars
        c, h, w = op.in_shape
        co, ho, wo = op.out_shape
        kh, kw = op.kernel
        x = torch.from_numpy((ins[0].reshape(c, h, w) - s["in_zp"]).astype(np.float64))[None]
        pt, pl = op.padding
        pb = max(0, (ho - 1) * op.stride[0] + (kh - 1) * op.dilation[0] + 1 - h - pt)
        pr = max(0, (wo - 1) * op.stride[1] + (kw - 1) * op.dilation[1] + 1 - w - pl)
        x = F.pad(x, (pl, pr, pt, pb))
        wq = torch.from_numpy(qo.consts["q"].astype(np.float64)).reshape(co, c // op.groups, kh, kw)
        acc = F.conv2d(x, wq, None, op.stride, 0, op.dilation, op.groups)[0, :, :ho, :wo].numpy()
        acc = np.rint(acc).astype(np.int64)  # exact: integer sums below 2^53
        if "bias" in qo.consts:
            acc = acc + qo.consts["bias"].astype(np.int64)[:, None, None]
        if s["folded"]:  # the bias holds -in_zp * sum(q): the sum over the padded input x - in_zp adds it back
            acc = acc + s["in_zp"] * qo.consts["q"].astype(np.int64).sum(1)[:, None, None]
        y = integer.mbqm(acc, qo.consts["mult"][:, None, None], qo.consts["shift"][:, None, None]) + s["out_zp"]
        return integer.clamp8(y, s["act_min"], s["act_max"])
