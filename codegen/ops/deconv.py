"""Transposed convolution (ConvTranspose1d, ConvTranspose2d: stride, padding, output_padding, dilation,
groups, bias): IR op, lowering, int8 form.

The weight [C_in, C_out/groups, kh, kw] is stored as the matrix [C_out, C_in/groups*kh*kw] (rows are
output channels, as every conv), encoded dense or CSR like a conv weight and counted once. The kernels
(runtime_c/sc_deconv.h) scatter each nonzero over the output plane (weight-stationary), so a CSR weight
costs its nonzeros. Template templates/ops/deconv.j2. The int8 form (dense int8 weights per output
channel, output-stationary gather, TFLite requantization) is in the int8 section of the same header;
template templates/ops_int8/deconv.j2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from codegen import integer, ir
from codegen.errors import CodegenError
from codegen.lowering import LowerContext, as_chw, check_zeros_padding, f32, register_lowering, window_pair


@dataclass
class ConvTranspose2d(ir.Windowed):
    """Transposed convolution (also ConvTranspose1d with h == 1); output_padding is in out_shape."""

    groups: int = 1
    dims: int = 2
    act: ir.Activation = ir.NO_ACT  # the int8 form clamps with it (no float fusion pass targets this op)

    kind: ClassVar[str] = "conv_transpose"
    template: ClassVar[str] = "deconv.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_deconv.h",)
    encodable: ClassVar[tuple[str, ...]] = ("weight",)

    def macs(self) -> int:
        c, h, w = self.in_shape
        return c * h * w * (self.out_shape[0] // self.groups) * self.kernel[0] * self.kernel[1]

    def kernel_choice(self, in_place: bool = False) -> ir.KernelChoice:
        w = self.encoded["weight"]
        if self.integer:  # the int8 section of sc_deconv.h (ConvTranspose2dInt8)
            return ir.KernelChoice(f"sc_i8_deconv_{w.kernel}")
        if w.encoding not in ("dense", "csr"):
            raise CodegenError(
                f"layer '{self.source}' ({self.torch_op}): transposed convolutions have dense and CSR float "
                f"kernels only, not the '{w.encoding}' weight encoding. Emit with representation 'dense' or 'csr'"
            )
        return ir.KernelChoice(f"sc_deconv_{w.kernel}")


@register_lowering(nn.ConvTranspose1d, nn.ConvTranspose2d)
def lower_conv_transpose(ctx: LowerContext, node: fx.Node) -> None:
    m = ctx.module(node)
    dims = 1 if isinstance(m, nn.ConvTranspose1d) else 2
    check_zeros_padding(ctx, node, m)
    x = ctx.tensor_arg(node, 0, "input")
    in_shape, out_shape = as_chw(ctx.shape(x)), as_chw(ctx.shape(node))
    k, s, d = (window_pair(v, dims) for v in (m.kernel_size, m.stride, m.dilation))
    p = window_pair(m.padding, dims, 0)
    g = int(m.groups)
    w = f32(m.weight).reshape(in_shape[0], out_shape[0] // g, k[0], k[1])  # [C_in, C_out/g, kh, kw]
    cin_g, cout_g = in_shape[0] // g, out_shape[0] // g
    # rows = output channels: W2[g*cout_g + o, (i, ky, kx)] = w[g*cin_g + i, o, ky, kx]
    w2 = w.reshape(g, cin_g, cout_g, k[0] * k[1]).transpose(0, 2, 1, 3).reshape(out_shape[0], cin_g * k[0] * k[1])
    params = {"weight": np.ascontiguousarray(w2)}
    if m.bias is not None:
        params["bias"] = f32(m.bias)
    ctx.emit(node, ConvTranspose2d(**ctx.common(node, [x]), params=params, in_shape=in_shape, out_shape=out_shape,
                                   kernel=k, stride=s, padding=p, dilation=d, groups=g, dims=dims))  # fmt: skip


# ---- int8 (codegen/integer.py; the int8 section of runtime_c/sc_deconv.h) ------------------------------


@integer.register_int8(ConvTranspose2d)
class ConvTranspose2dInt8(integer.Int8Handler):
    kind = "conv_transpose"
    template = "deconv.j2"
    runtime = ("sc_deconv.h",)

    def quantize(self, op: ConvTranspose2d, ctx: integer.Int8Context, qo: integer.QOp) -> None:
        ctx.representation = "dense"  # the int8 kernel reads dense int8 weights (sc_i8_deconv_q8)
        integer.quantize_weighted(op, ctx, qo)

    def reference(self, qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        op: ConvTranspose2d = qo.op  # type: ignore[assignment]
        s = qo.scalars
        c, h, w = op.in_shape
        co, ho, wo = op.out_shape
        kh, kw = op.kernel
        g = op.groups
        x = torch.from_numpy((ins[0].reshape(c, h, w) - s["in_zp"]).astype(np.float64))[None]
        # [C_out, C_in/g*kh*kw] back to torch's [C_in, C_out/g, kh, kw]
        q = qo.consts["q"].astype(np.float64).reshape(g, co // g, c // g, kh, kw).transpose(0, 2, 1, 3, 4)
        wq = torch.from_numpy(np.ascontiguousarray(q).reshape(c, co // g, kh, kw))
        out_pad = tuple(int(o - ((i - 1) * st - 2 * p + dl * (k - 1) + 1)) for o, i, st, p, dl, k in
                        zip((ho, wo), (h, w), op.stride, op.padding, op.dilation, op.kernel))  # fmt: skip
        acc = F.conv_transpose2d(x, wq, None, op.stride, op.padding, out_pad, g, op.dilation)[0].numpy()
        acc = np.rint(acc).astype(np.int64)  # exact: integer sums below 2^53
        if "bias" in qo.consts:
            acc = acc + qo.consts["bias"].astype(np.int64)[:, None, None]
        y = integer.mbqm(acc, qo.consts["mult"][:, None, None], qo.consts["shift"][:, None, None]) + s["out_zp"]
        return integer.clamp8(y, s["act_min"], s["act_max"])
