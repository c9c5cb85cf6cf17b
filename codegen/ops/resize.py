"""Upsampling (nn.Upsample, F.interpolate; nearest, nearest-exact, linear, bilinear; 1-D and 2-D): IR op,
lowerings, int8 form.

The source indices and interpolation weights of each output row and column are computed here, once,
with PyTorch's own float32 arithmetic (``_axis_table``), and emitted as small const tables: the C only
gathers (nearest) or blends four neighbours (bilinear). Float kernels: runtime_c/sc_resize.h (float
section); template templates/ops/resize.j2. Integer kernels: the int8 section of runtime_c/sc_resize.h;
template templates/ops_int8/resize.j2. The int8 bilinear form follows TFLite's ResizeBilinearInteger:
weights in 1/1024 steps, products at 2^-20, rounded half away from zero; output keeps the input's
scale and zero point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from codegen import integer, ir
from codegen.lowering import LowerContext, as_chw, register_lowering

MODES = ("nearest", "nearest-exact", "linear", "bilinear")
INT8_FRAC_BITS = 10  # TFLite ResizeBilinearInteger: weights in steps of 2^-10


@dataclass
class Resize(ir.Op):
    """Nearest or (bi)linear resize of a (C, H, W) activation (1-D: H == 1). ``params`` hold the
    per-axis tables: ``y_idx``/``x_idx`` (source index; nearest: the only one, linear: the lower one) and,
    for linear, ``y_lam``/``x_lam`` (weight of the upper neighbour, index + 1 clamped to the edge)."""

    mode: str = "nearest"  # "nearest" (also nearest-exact: only the tables differ) or "linear"
    in_shape: tuple[int, int, int] = (0, 0, 0)
    out_shape: tuple[int, int, int] = (0, 0, 0)

    kind: ClassVar[str] = "resize"
    template: ClassVar[str] = "resize.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_resize.h",)

    def describe(self) -> str:
        return f"resize_{self.mode}"

    def macs(self) -> int:
        return self.out_shape[0] * self.out_shape[1] * self.out_shape[2] * (4 if self.mode == "linear" else 0)


def _scale(n_in: int, n_out: int, align_corners: bool, scale: float | None) -> np.float32:
    """PyTorch's area_pixel_compute_scale (float opmath for float32 tensors)."""
    if align_corners:
        return np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(0)
    if scale is not None and scale > 0:
        return np.float32(1.0 / scale)
    return np.float32(n_in) / np.float32(n_out)


def _axis_table(mode: str, n_in: int, n_out: int, align_corners: bool, scale: float | None
                ) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
    """(source index, upper weight or None) per output position along one axis, exactly as ATen
    (aten/src/ATen/native/UpSample.h: nearest_idx, nearest_neighbor_exact_compute_source_index,
    area_pixel_compute_source_index, guard_index_and_lambda) in float32."""
    dst = np.arange(n_out)
    if mode in ("nearest", "nearest-exact"):
        if n_in == n_out:
            return dst, None
        if mode == "nearest" and n_out == 2 * n_in:
            return dst >> 1, None
        s = np.float32(1.0 / scale) if scale is not None and scale > 0 else np.float32(n_in) / np.float32(n_out)
        if mode == "nearest":
            src = np.floor(dst.astype(np.float32) * s)
        else:  # (dst + 0.5) is a double there; the product is rounded to float before floorf
            src = np.floor(((dst + 0.5) * np.float64(s)).astype(np.float32))
        return np.minimum(src.astype(np.int64), n_in - 1), None
    if n_in == n_out:
        return dst, np.zeros(n_out, dtype=np.float32)
    s = _scale(n_in, n_out, align_corners, scale)
    d = dst.astype(np.float32)
    if align_corners:
        src = s * d
    else:
        src = s * (d + np.float32(0.5)) - np.float32(0.5)
        src = np.maximum(src, np.float32(0))
    idx = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    lam = np.clip(src - idx.astype(np.float32), np.float32(0), np.float32(1)).astype(np.float32)
    return idx, lam


def _resize(ctx: LowerContext, node: fx.Node, mode: str, size: Any, scale_factor: Any, align_corners: Any,
            recompute_scale_factor: Any, antialias: bool = False) -> None:  # fmt: skip
    x = ctx.tensor_arg(node, 0, "input")
    rank = len(ctx.shape(x))
    if mode not in MODES:
        raise ctx.fail(node, f"interpolation mode '{mode}' is not supported",
                       "Use mode 'nearest', 'nearest-exact', 'linear' (1-D) or 'bilinear' (2-D)")  # fmt: skip
    if antialias:
        raise ctx.fail(node, "antialias=True is not supported", "Use antialias=False")
    if rank not in (2, 3) or (mode == "linear" and rank != 2) or (mode == "bilinear" and rank != 3):
        raise ctx.fail(node, f"mode '{mode}' on a {rank + 1}-D tensor is not supported",
                       "Resize (N, C, L) tensors with 'nearest'/'linear' and (N, C, H, W) ones with "
                       "'nearest'/'bilinear'")  # fmt: skip
    if align_corners and mode in ("nearest", "nearest-exact"):
        raise ctx.fail(node, "align_corners is only valid for linear modes", "Remove align_corners")
    in_shape, out_shape = as_chw(ctx.shape(x)), as_chw(ctx.shape(node))
    scales: list[float | None] = [None, None]
    if scale_factor is not None and not recompute_scale_factor:
        sf = scale_factor if isinstance(scale_factor, (tuple, list)) else [scale_factor] * (rank - 1)
        scales = [None, float(sf[0])] if rank == 2 else [float(sf[0]), float(sf[-1])]
    del size  # the output shape comes from shape propagation
    kind = "nearest" if mode in ("nearest", "nearest-exact") else "linear"
    params = {}
    for axis, n_in, n_out, s in (("y", in_shape[1], out_shape[1], scales[0]), ("x", in_shape[2], out_shape[2], scales[1])):
        idx, lam = _axis_table(mode, n_in, n_out, bool(align_corners), s)
        params[f"{axis}_idx"] = idx.astype(np.float32)
        if lam is not None:
            params[f"{axis}_lam"] = lam
    ctx.emit(node, Resize(**ctx.common(node, [x]), params=params, mode=kind, in_shape=in_shape, out_shape=out_shape))


@register_lowering(nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
def lower_upsample(ctx: LowerContext, node: fx.Node) -> None:
    m = ctx.module(node)
    _resize(ctx, node, m.mode, m.size, m.scale_factor, m.align_corners, getattr(m, "recompute_scale_factor", None))


@register_lowering(F.interpolate)  # F.upsample, F.upsample_nearest/bilinear trace to F.interpolate
def lower_interpolate(ctx: LowerContext, node: fx.Node) -> None:
    _resize(ctx, node, ctx.arg(node, 3, "mode", "nearest"), ctx.arg(node, 1, "size"), ctx.arg(node, 2, "scale_factor"),
            ctx.arg(node, 4, "align_corners"), ctx.arg(node, 5, "recompute_scale_factor"),
            bool(ctx.arg(node, 6, "antialias", False)))  # fmt: skip


# ---- int8 (codegen/integer.py; kernels in the int8 section of runtime_c/sc_resize.h) ---------------


def _index_ctype(n: int) -> str:
    return "uint8_t" if n <= 0xFF else "uint16_t" if n <= 0xFFFF else "int32_t"


@integer.register_int8(Resize)
class ResizeInt8(integer.Int8Handler):
    """Nearest: a gather of int8 values. Bilinear: TFLite's integer form (weights of 2^-10, rounding
    half away from zero at 2^-20); both keep the input's scale and zero point."""

    template = "resize.j2"
    keeps_qparams = True
    runtime = ("sc_resize.h",)

    def kind_of(self, op: Resize) -> str:
        return f"resize_{op.mode}"

    def quantize(self, op: Resize, ctx: integer.Int8Context, qo: integer.QOp) -> None:
        one = 1 << INT8_FRAC_BITS
        ctype = _index_ctype(max(op.in_shape[1], op.in_shape[2]))  # one type for both tables: one kernel
        for axis in ("y", "x"):
            idx = op.params[f"{axis}_idx"].astype(np.int64)
            qo.consts[f"{axis}_idx"] = idx
            ctx.int_array(f"{axis}_idx", f"_{axis}i", ctype, idx)
            if op.mode == "linear":
                w1 = np.rint(op.params[f"{axis}_lam"].astype(np.float64) * one).astype(np.int64)
                qo.consts[f"{axis}_w"] = w1
                ctx.int_array(f"{axis}_w", f"_{axis}w", "int16_t", w1)

    def reference(self, qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        op: Resize = qo.op  # type: ignore[assignment]
        c, h, w = op.in_shape
        x = ins[0].reshape(c, h, w).astype(np.int64)
        yi, xi = qo.consts["y_idx"], qo.consts["x_idx"]
        if op.mode == "nearest":
            return x[:, yi][:, :, xi]
        one = 1 << INT8_FRAC_BITS
        y1 = np.minimum(yi + 1, h - 1)
        x1 = np.minimum(xi + 1, w - 1)
        wy1, wx1 = qo.consts["y_w"][None, :, None], qo.consts["x_w"][None, None, :]
        wy0, wx0 = one - wy1, one - wx1
        acc = (x[:, yi][:, :, xi] * wy0 * wx0 + x[:, yi][:, :, x1] * wy0 * wx1
               + x[:, y1][:, :, xi] * wy1 * wx0 + x[:, y1][:, :, x1] * wy1 * wx1)  # fmt: skip
        half = 1 << (2 * INT8_FRAC_BITS - 1)
        num = acc + np.where(acc > 0, half, -half)
        q = np.where(num >= 0, num >> (2 * INT8_FRAC_BITS), -((-num) >> (2 * INT8_FRAC_BITS)))  # C division
        return integer.clamp8(q)
