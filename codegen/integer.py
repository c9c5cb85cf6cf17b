"""Fully integer inference for MCUs without an FPU: a quantized pass over the lowered IR.

int8 activations (one scale and zero point per tensor, calibrated on sample data), int8 weights
(symmetric per output channel), int32 accumulation (bias as int32 at scale in_scale * w_scale),
fixed-point requantization (int32 multiplier + shift, TFLite's MultiplyByQuantizedMultiplier
rounding) and ReLU/ReLU6 fused as clamping. The emitted C (``runtime_c/sc_int8.h``,
``templates/model_int8.c.j2``) uses no float at run time in ``<prefix>_run_int8``;
``<prefix>_run`` keeps its float signature (it quantizes the input, runs the integer path and
dequantizes the output).

Steps (``build_integer``):

1. trace + lower as usual (BatchNorm folded, activations fused);
2. calibrate: run the traced model (torch.fx Interpreter) on the calibration data and record the
   min/max of every node; an IR value gets the union of the ranges of the fx nodes it stands for;
3. rewrite the IR for integer kernels: a standalone BatchNorm becomes a depthwise 1x1 conv; a fused
   activation other than ReLU/ReLU6 is split back out (its pre-activation range comes from the fx
   node before it) and becomes a 256-entry lookup table, like every standalone activation;
4. choose activation quantization: scale = (max - min) / 255 with 0 in [min, max] (float32),
   zero point = round(-128 - min / scale); max pooling, average pooling, padding and copies keep
   their input's scale and zero point;
5. quantize weights per output channel (w_scale = max|w| / 127, q = round(w / w_scale)), biases
   (round(b / (in_scale * w_scale))) and multipliers (``quantize_multiplier``); encode q with the
   int8 encodings of ``codegen.formats`` (dense, CSR, relative index: the smallest the
   representation allows; their float scale array is dropped, the requantization constants
   replace it). Every const array is a ``formats.CArray``, so MODEL_WEIGHT_BYTES and report.json
   count exactly the bytes emitted;
6. plan the int8 arena with ``codegen.memory.plan_graph`` (values of 1 byte per element).

``IntegerModel.run`` is the bit-exact numpy (int64) reference of the C.

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
>>> qm = build_integer(net, torch.zeros(1, 4), torch.randn(64, 4))
>>> qm.run(qm.quantize_input(torch.randn(1, 4).numpy())).dtype
dtype('int8')

Supported ops: Conv1d/Conv2d (groups, depthwise, stride, padding, dilation), Linear, BatchNorm
(folded or standalone), ReLU/ReLU6 (fused clamps), other elementwise activations (LUT), max and
average pooling (incl. adaptive/global and mean over spatial dims), add, mul, concat, flatten and
views, constant padding. Softmax and ops without an integer kernel are refused with an error
naming the layer.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx

from codegen import formats, ir
from codegen.errors import CodegenError, UnsupportedConfigError
from codegen.formats import CArray, Encoded
from codegen.lower import c_identifier, lower
from codegen.memory import GraphMemory, plan_graph
from codegen.trace import example_from, prepare_model, trace

log = logging.getLogger(__name__)

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
ADD_LEFT_SHIFT = 20  # headroom of the int8 add (TFLite uses 20 for int8)
RUNTIME = ("sc_int8.h",)
# largest stack scratch of the SMLAD conv kernel (column + start values); larger convs use the plain kernel
DSP_SCRATCH_MAX_BYTES = 8192
# weight encodings each representation may use in integer mode (the smallest wins)
INTEGER_ENCODINGS = {
    "dense": ("int8",),
    "csr": ("int8", "int8_csr"),
    "int8": ("int8", "int8_csr", "int8_rel"),
    "auto": ("int8", "int8_csr", "int8_rel"),
}


# ---- fixed-point arithmetic: the numpy (int64) reference of runtime_c/sc_int8.h ------------------


def quantize_multiplier(m: float) -> tuple[int, int]:
    """(mult, shift) with mult in [2^30, 2^31) and m ~= mult * 2^(shift - 31) (TFLite's QuantizeMultiplier).

    >>> quantize_multiplier(0.5)
    (1073741824, 0)
    """
    if not math.isfinite(m) or m < 0:
        raise CodegenError(f"requantization multiplier {m} is not a finite non-negative number (bug)")
    if m == 0.0:
        return 0, 0
    frac, exp = math.frexp(m)
    q = int(math.floor(frac * (1 << 31) + 0.5))
    if q == 1 << 31:
        q //= 2
        exp += 1
    if exp < -31:
        return 0, 0
    if exp > 30:
        raise CodegenError(f"requantization multiplier {m:g} is too large for an int32 fixed-point multiplier")
    return q, exp


def srdhm(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """SaturatingRoundingDoublingHighMul on int64 arrays holding int32 values."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b
    v = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    q = np.where(v >= 0, v >> 31, -((-v) >> 31))
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, q)


def rdbpot(x: np.ndarray, e: np.ndarray | int) -> np.ndarray:
    """RoundingDivideByPOT: x / 2^e rounded to nearest, ties away from zero."""
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(e, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    rem = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (rem > threshold)


def mbqm(x: np.ndarray, mult: np.ndarray | int, shift: np.ndarray | int) -> np.ndarray:
    """MultiplyByQuantizedMultiplier with a saturating left shift (as sc_i8_mbqm)."""
    x = np.asarray(x, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    x = np.clip(x * (np.int64(1) << left), INT32_MIN, INT32_MAX)
    return rdbpot(srdhm(x, mult), right)


def _clamp8(v: np.ndarray, lo: int = -128, hi: int = 127) -> np.ndarray:
    return np.clip(v, lo, hi).astype(np.int64)


# ---- quantization parameters ---------------------------------------------------------------------


@dataclass(frozen=True)
class QParams:
    """real = scale * (q - zero_point); scale is a float32 value."""

    scale: float
    zero_point: int

    @staticmethod
    def from_range(lo: float, hi: float) -> QParams:
        lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
        scale = float(np.float32((hi - lo) / 255.0))
        if not scale > 0:
            scale = float(np.float32(1.0 / 255.0))
        zp = int(np.clip(round(-128.0 - lo / scale), -128, 127))
        return QParams(scale, zp)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """float32 -> int8 exactly as the emitted C (<prefix>_quantize_input): v = x / scale in
        float32, clamped to [-256, 256] (NaN -> -256), rounded half away from zero, + zero point."""
        v = np.asarray(x, dtype=np.float32) / np.float32(self.scale)
        v = np.where(v > np.float32(-256.0), v, np.float32(-256.0)).astype(np.float32)
        v = np.minimum(v, np.float32(256.0))
        r = np.where(v >= 0, np.floor(v + np.float32(0.5)), -np.floor(np.float32(0.5) - v)).astype(np.int64)
        return np.clip(r + self.zero_point, -128, 127).astype(np.int8)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """int8 -> float32 exactly as the emitted C: (float)(q - zero_point) * scale."""
        return (np.asarray(q, dtype=np.int64) - self.zero_point).astype(np.float32) * np.float32(self.scale)

    def as_dict(self) -> dict:
        return {"scale": self.scale, "zero_point": self.zero_point}


def _act_bounds(act: ir.Activation, q: QParams, where: str) -> tuple[int, int]:
    if act.kind == "none":
        return -128, 127
    lo = max(-128, q.zero_point)
    if act.kind == "relu":
        return lo, 127
    if act.kind == "relu6":
        return lo, int(min(127, q.zero_point + round(6.0 / q.scale)))
    raise CodegenError(f"layer {where}: fused activation {act.kind} reached the integer kernels (bug)")


_ACT_FUNCS = {
    "none": lambda x, a: x,
    "relu": lambda x, a: np.maximum(x, 0.0),
    "relu6": lambda x, a: np.clip(x, 0.0, 6.0),
    "leaky_relu": lambda x, a: np.where(x >= 0, x, x * a),
    "sigmoid": lambda x, a: 1.0 / (1.0 + np.exp(-x)),
    "tanh": lambda x, a: np.tanh(x),
    "hardswish": lambda x, a: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "hardsigmoid": lambda x, a: np.clip(x + 3.0, 0.0, 6.0) / 6.0,
}


def activation_lut(act: ir.Activation, qin: QParams, qout: QParams) -> np.ndarray:
    """The int8 -> int8 table of an elementwise activation (index x + 128)."""
    x = qin.scale * (np.arange(-128, 128, dtype=np.float64) - qin.zero_point)
    y = _ACT_FUNCS[act.kind](x, act.alpha)
    return _clamp8(np.round(y / qout.scale) + qout.zero_point).astype(np.int8)


# ---- calibration ----------------------------------------------------------------------------------


class _RangeRecorder(fx.Interpreter):
    """Runs the traced model and records min/max of every floating-point node output."""

    def __init__(self, gm: fx.GraphModule, ranges: dict[str, list[float]]):
        super().__init__(gm)
        self.ranges = ranges

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if isinstance(out, torch.Tensor) and out.is_floating_point() and out.numel():
            t = out.detach()
            if not bool(torch.isfinite(t).all()):
                where = n.target if n.op == "call_module" else n.name
                raise CodegenError(
                    f"layer '{where}': its output on the calibration data is not finite (NaN or inf); "
                    "check the model and the calibration data"
                )
            lo, hi = float(t.min()), float(t.max())
            r = self.ranges.get(n.name)
            self.ranges[n.name] = [min(lo, r[0]), max(hi, r[1])] if r else [lo, hi]
        return out


def _calibration_batches(data, sample_shape: tuple[int, ...]) -> Iterable[torch.Tensor]:
    if data is None:
        raise CodegenError(
            "integer=True needs calibration_data: a tensor of N sample inputs (N, "
            + ", ".join(map(str, sample_shape))
            + ") or a DataLoader yielding such batches (or (inputs, targets) pairs), e.g. "
            "calibration_data=train_x[:256]; the activation scales and zero points are calibrated on it"
        )
    if isinstance(data, torch.Tensor):
        batches: Iterable = [data]
    elif isinstance(data, np.ndarray):
        batches = [torch.from_numpy(data)]
    else:
        batches = data
    seen = 0
    for b in batches:
        if isinstance(b, (list, tuple)):
            b = b[0]
        if isinstance(b, np.ndarray):
            b = torch.from_numpy(b)
        if not isinstance(b, torch.Tensor):
            raise CodegenError(f"calibration_data must hold tensors; got a batch of type {type(b).__name__}")
        b = b.detach().to("cpu").float()
        if tuple(b.shape[1:]) != tuple(sample_shape):
            raise CodegenError(
                f"calibration_data has samples of shape {tuple(b.shape[1:])}; the model input is "
                f"{tuple(sample_shape)} (give a tensor (N, {', '.join(map(str, sample_shape))}))"
            )
        bad = int(b.numel() - int(torch.isfinite(b).sum()))
        if bad:
            raise CodegenError(
                f"calibration_data holds {bad} non-finite value(s) (NaN or inf); remove or repair those samples"
            )
        for i in range(0, b.shape[0], 64):
            seen += min(64, b.shape[0] - i)
            yield b[i : i + 64]
    if seen == 0:
        raise CodegenError("calibration_data is empty; give at least one sample (N >= 1)")


def calibrate(gm: fx.GraphModule, data, sample_shape: tuple[int, ...]) -> tuple[dict[str, list[float]], int]:
    """min/max of every fx node over the calibration data, and the number of samples."""
    ranges: dict[str, list[float]] = {}
    n = 0
    rec = _RangeRecorder(gm, ranges)
    with torch.no_grad():
        for b in _calibration_batches(data, sample_shape):
            try:
                rec.run(b)
            except CodegenError:
                raise
            except Exception:  # a model written for batch 1 only: one sample at a time
                for i in range(b.shape[0]):
                    rec.run(b[i : i + 1])
            n += int(b.shape[0])
    return ranges, n


# ---- the integer model ----------------------------------------------------------------------------


@dataclass
class QOp:
    """Integer constants of one IR op (template variables and reference inputs)."""

    kind: str  # conv, linear, maxpool, avgpool, add, mul, concat, lut, pad, copy
    op: ir.Op
    consts: dict[str, np.ndarray] = field(default_factory=dict)  # int arrays (also in op.encoded)
    scalars: dict[str, int] = field(default_factory=dict)


@dataclass
class IntegerModel:
    """The quantized graph: IR ops + per-value QParams + per-op integer constants."""

    graph: ir.Graph
    qparams: dict[str, QParams]
    qops: list[QOp]
    memory: GraphMemory | None = None
    calibration_samples: int = 0

    @property
    def input_q(self) -> QParams:
        return self.qparams[self.graph.input]

    @property
    def output_q(self) -> QParams:
        return self.qparams[self.graph.output]

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """float input(s) (..., *input shape) -> int8, exactly as the C helper."""
        return self.input_q.quantize(x)

    def dequantize_output(self, q: np.ndarray) -> np.ndarray:
        return self.output_q.dequantize(q)

    def run(self, x_q: np.ndarray) -> np.ndarray:
        """Bit-exact reference of <prefix>_run_int8 for one sample (or a batch (N, *input shape))."""
        x_q = np.asarray(x_q)
        shape = self.graph.input_value.shape
        if x_q.shape == shape or x_q.size == math.prod(shape):
            return self._run1(x_q.reshape(-1)).reshape(self.graph.output_value.shape)
        return np.stack([self._run1(s.reshape(-1)) for s in x_q.reshape(x_q.shape[0], -1)]).reshape(
            (x_q.shape[0], *self.graph.output_value.shape)
        )

    def run_float(self, x: np.ndarray) -> np.ndarray:
        """quantize -> integer reference -> dequantize (what <prefix>_run computes)."""
        return self.dequantize_output(self.run(self.quantize_input(x)))

    def _run1(self, x: np.ndarray) -> np.ndarray:
        env = {self.graph.input: np.asarray(x, dtype=np.int64)}
        for qo in self.qops:
            ins = [env[v] for v in qo.op.inputs]
            env[qo.op.output] = _REFERENCE[qo.kind](qo, ins).reshape(-1)
        return env[self.graph.output].astype(np.int8)


# ---- reference kernels (int64) ----------------------------------------------------------------------


def _ref_conv(qo: QOp, ins: list[np.ndarray]) -> np.ndarray:
    op: ir.Conv2d = qo.op  # type: ignore[assignment]
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
    y = mbqm(acc, qo.consts["mult"][:, None, None], qo.consts["shift"][:, None, None]) + s["out_zp"]
    return _clamp8(y, s["act_min"], s["act_max"])


def _ref_linear(qo: QOp, ins: list[np.ndarray]) -> np.ndarray:
    op: ir.Linear = qo.op  # type: ignore[assignment]
    s = qo.scalars
    x = ins[0].reshape(op.rows, op.in_features)
    acc = x @ qo.consts["q"].astype(np.int64).T
    if "bias" in qo.consts:
        acc = acc + qo.consts["bias"].astype(np.int64)[None, :]
    y = mbqm(acc, qo.consts["mult"][None, :], qo.consts["shift"][None, :]) + s["out_zp"]
    return _clamp8(y, s["act_min"], s["act_max"])


def _pool_windows(op: ir.Pool2d):
    c, h, w = op.in_shape
    _, ho, wo = op.out_shape
    for oy in range(ho):
        for ox in range(wo):
            yield oy, ox


def _ref_maxpool(qo: QOp, ins: list[np.ndarray]) -> np.ndarray:
    op: ir.Pool2d = qo.op  # type: ignore[assignment]
    c, h, w = op.in_shape
    _, ho, wo = op.out_shape
    x = ins[0].reshape(c, h, w)
    out = np.full((c, ho, wo), -128, dtype=np.int64)
    for oy, ox in _pool_windows(op):
        ys = [oy * op.stride[0] - op.padding[0] + k * op.dilation[0] for k in range(op.kernel[0])]
        xs = [ox * op.stride[1] - op.padding[1] + k * op.dilation[1] for k in range(op.kernel[1])]
        ys = [y for y in ys if 0 <= y < h]
        xs = [x_ for x_ in xs if 0 <= x_ < w]
        if ys and xs:
            out[:, oy, ox] = np.maximum(x[:, ys][:, :, xs].reshape(c, -1).max(axis=1), -128)
    return out


def _ref_avgpool(qo: QOp, ins: list[np.ndarray]) -> np.ndarray:
    op: ir.Pool2d = qo.op  # type: ignore[assignment]
    zp = qo.scalars["zp"]
    c, h, w = op.in_shape
    _, ho, wo = op.out_shape
    x = ins[0].reshape(c, h, w) - zp
    out = np.zeros((c, ho, wo), dtype=np.int64)
    for oy, ox in _pool_windows(op):
        hs, ws = oy * op.stride[0] - op.padding[0], ox * op.stride[1] - op.padding[1]
        he, we = min(hs + op.kernel[0], h + op.padding[0]), min(ws + op.kernel[1], w + op.padding[1])
        n = (he - hs) * (we - ws)
        hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
        total = x[:, hs:he, ws:we].reshape(c, -1).sum(axis=1)
        if op.divisor:
            n = op.divisor
        elif not op.count_include_pad:
            n = (he - hs) * (we - ws)
        n = max(n, 1)
        pos = total > 0
        num = np.where(pos, total + n // 2, total - n // 2)
        q = np.where(num >= 0, num // n, -((-num) // n))  # C division truncates toward zero
        out[:, oy, ox] = _clamp8(q + zp)
    return out


def _ref_add(qo: QOp, ins: list[np.ndarray]) -> np.ndarray:
    s = qo.scalars
    a = mbqm((ins[0] - s["a_zp"]) << s["left_shift"], s["a_mult"], s["a_shift"])
    b = mbqm((ins[1] - s["b_zp"]) << s["left_shift"], s["b_mult"], s["b_shift"])
    return _clamp8(mbqm(a + b, s["out_mult"], s["out_shift"]) + s["out_zp"], s["act_min"], s["act_max"])


def _ref_mul(qo: QOp, ins: list[np.ndarray]) -> np.ndarray:
    s = qo.scalars
    prod = (ins[0] - s["a_zp"]) * (ins[1] - s["b_zp"])
    return _clamp8(mbqm(prod, s["mult"], s["shift"]) + s["out_zp"], s["act_min"], s["act_max"])


def _ref_concat(qo: QOp, ins: list[np.ndarray]) -> np.ndarray:
    op: ir.Concat = qo.op  # type: ignore[assignment]
    parts = []
    for i, (x, size) in enumerate(zip(ins, op.sizes)):
        r = qo.consts["requant"][i]
        parts.append(_clamp8(mbqm(x.reshape(op.outer, size) - r[0], r[1], r[2]) + r[3]))
    return np.concatenate(parts, axis=1)


def _ref_lut(qo: QOp, ins: list[np.ndarray]) -> np.ndarray:
    return qo.consts["lut"].astype(np.int64)[ins[0] + 128]


def _ref_pad(qo: QOp, ins: list[np.ndarray]) -> np.ndarray:
    op: ir.Pad2d = qo.op  # type: ignore[assignment]
    c, h, w = op.in_shape
    _, ho, wo = op.out_shape
    out = np.full((c, ho, wo), qo.scalars["value"], dtype=np.int64)
    t, left = op.padding
    ys, xs = slice(max(t, 0), min(t + h, ho)), slice(max(left, 0), min(left + w, wo))
    out[:, ys, xs] = ins[0].reshape(c, h, w)[:, ys.start - t : ys.stop - t, xs.start - left : xs.stop - left]
    return out


def _ref_copy(qo: QOp, ins: list[np.ndarray]) -> np.ndarray:
    return ins[0].copy()


_REFERENCE = {
    "conv": _ref_conv, "linear": _ref_linear, "maxpool": _ref_maxpool, "avgpool": _ref_avgpool,
    "add": _ref_add, "mul": _ref_mul, "concat": _ref_concat, "lut": _ref_lut, "pad": _ref_pad,
    "copy": _ref_copy,
}  # fmt: skip


# ---- graph rewriting ---------------------------------------------------------------------------------


def _unique_name(g: ir.Graph, base: str) -> str:
    taken = {op.name for op in g.ops}
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    return name


def _affine_to_conv(g: ir.Graph) -> None:
    """A standalone BatchNorm (y = x * scale[c] + shift[c]) becomes a depthwise 1x1 conv."""
    for i, op in enumerate(g.ops):
        if isinstance(op, ir.ChannelAffine):
            c, inner = op.channels, op.inner
            g.ops[i] = ir.Conv2d(
                name=op.name, source=op.source, torch_op=op.torch_op, inputs=list(op.inputs), output=op.output,
                params={"weight": op.params["scale"].reshape(c, 1).astype(np.float32),
                        "bias": op.params["shift"].astype(np.float32)},
                in_shape=(c, 1, inner), out_shape=(c, 1, inner), kernel=(1, 1), groups=c, act=op.act,
            )  # fmt: skip


def _split_activations(g: ir.Graph, gm: fx.GraphModule, env: dict[str, str], ranges: dict[str, list[float]],
                       value_ranges: dict[str, list[float]]) -> None:  # fmt: skip
    """Fused activations other than ReLU/ReLU6 become standalone Act ops again (integer LUTs); the
    pre-activation range is the fx node feeding the activation node."""
    produced = {op.output for op in g.ops}
    for op in list(g.ops):
        act = getattr(op, "act", ir.NO_ACT)
        if isinstance(op, ir.Act) or act.kind in ("none", "relu", "relu6"):
            continue
        pre = None
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
        new = ir.Act(name=_unique_name(g, c_identifier(src)), source=src,
                     torch_op=f"{act.kind} (split from {op.source} for its integer lookup table)",
                     inputs=[v], output=op.output, numel=g.values[v].numel, act=act)  # fmt: skip
        op.output = v
        op.act = ir.NO_ACT
        g.ops.insert(g.ops.index(op) + 1, new)


def _kind(op: ir.Op) -> str:
    if isinstance(op, ir.Conv2d):
        return "conv"
    if isinstance(op, ir.Linear):
        return "linear"
    if isinstance(op, ir.Pool2d):
        return op.mode + "pool"
    if isinstance(op, ir.Binary):
        return op.mode
    if isinstance(op, ir.Concat):
        return "concat"
    if isinstance(op, ir.Act):
        return "lut"
    if isinstance(op, ir.Pad2d):
        return "pad"
    if isinstance(op, ir.Copy):
        return "copy"
    if isinstance(op, ir.Softmax):
        raise UnsupportedConfigError(
            f"layer '{op.source}': {op.describe()} has no integer kernel. Remove it from the model before "
            "integer export (the argmax is unchanged) and apply it to the dequantized output on the host, "
            "or emit without integer=True"
        )
    raise UnsupportedConfigError(
        f"layer '{op.source}': {op.describe()} ({op.torch_op}) has no integer kernel; integer mode supports "
        "conv, linear, batchnorm, activations, pooling, add, mul, concat, pad and views. Emit without "
        "integer=True or replace the layer"
    )


# ---- weights, biases and multipliers -----------------------------------------------------------------


def quantize_weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q int64 [rows, cols] in [-127, 127], w_scale float64 [rows]) symmetric per output channel;
    the scale is float32(max|w[row]| / 127) as ``codegen.quantize.int8_quantize_array``."""
    w2 = np.asarray(w, dtype=np.float64).reshape(w.shape[0], -1)
    scale = (np.abs(w2).max(axis=1, initial=0.0) / 127.0).astype(np.float32).astype(np.float64)
    safe = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.rint(w2 / safe[:, None]), -127, 127).astype(np.int64)
    return q, scale


def _encode_q(q: np.ndarray, base: str, representation: str, layer: str) -> Encoded:
    """Encodes int8 q with the smallest int8 encoding allowed, without the float scale array."""
    allowed = INTEGER_ENCODINGS[representation]
    qf = q.astype(np.float32)
    best = min(allowed, key=lambda n: (formats.ENCODINGS[n].tensor_nbytes(qf), allowed.index(n)))
    enc = formats.ENCODINGS[best].encode(qf, base)
    scale = enc.arrays.pop("scale").values
    if not np.all((scale == 1) | (scale == 0)):  # pragma: no cover - q rows have max |q| = 127
        raise CodegenError(f"layer '{layer}': int8 re-encoding changed the weights (bug)")
    enc.runtime = ()
    return enc


def dsp_column_words(op: ir.Op, weight_kernel: str) -> int:
    """uint32 words of the column buffer of the SMLAD conv kernel (``sc_i8_conv_q8_dsp``, compiled when
    the C is built with SC_INT8_DSP): 2 output positions x row_len int8 rounded up to 4. The kernel's
    stack scratch is this column plus cout int32 start values. 0 where that kernel is not used:
    grouped/depthwise convs, sparse weights, or scratch above ``DSP_SCRATCH_MAX_BYTES``."""
    if not isinstance(op, ir.Conv2d) or op.groups != 1 or weight_kernel != "q8":
        return 0
    words = (op.in_shape[0] * op.kernel[0] * op.kernel[1] + 3) // 4 * 2
    return words if 4 * (words + op.out_shape[0]) <= DSP_SCRATCH_MAX_BYTES else 0


def dw_pad_bytes(op: ir.Op, weight_kernel: str) -> int:
    """int8 bytes of the in_zp-padded input plane of the depthwise kernel (``sc_i8_conv_q8_dwp``; the
    template declares it on the stack): the extent the outputs read, plus 3 slack bytes (as
    ``SC_I8_DW_PAD_BYTES``). 0 where that kernel is not used: not depthwise (groups == cin == cout),
    sparse weights, or a plane above ``DSP_SCRATCH_MAX_BYTES`` (the clipping kernel runs instead)."""
    if not isinstance(op, ir.Conv2d) or weight_kernel != "q8":
        return 0
    c = op.in_shape[0]
    if not (op.groups == c == op.out_shape[0] and c > 1):
        return 0
    hp = (op.out_shape[1] - 1) * op.stride[0] + (op.kernel[0] - 1) * op.dilation[0] + 1
    wp = (op.out_shape[2] - 1) * op.stride[1] + (op.kernel[1] - 1) * op.dilation[1] + 1
    n = hp * wp + 3
    return n if n <= DSP_SCRATCH_MAX_BYTES else 0


def _bias_and_multipliers(op: ir.Op, q: np.ndarray, w_scale: np.ndarray, qin: QParams, qout: QParams
                          ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:  # fmt: skip
    rows = q.shape[0]
    b = op.params.get("bias")
    b = np.zeros(rows) if b is None else b.astype(np.float64)
    acc_scale = qin.scale * w_scale
    zero_rows = w_scale == 0
    # an all-zero row outputs its bias: give its accumulator a scale that holds the bias exactly enough
    acc_scale = np.where(zero_rows, np.where(b != 0, np.abs(b) / 65536.0, qin.scale), acc_scale)
    bias_q = np.rint(b / acc_scale)
    if np.any(np.abs(bias_q) > INT32_MAX):
        log.warning("layer '%s': a bias does not fit in int32 at scale in_scale*w_scale; clamped", op.source)
    bias_q = np.clip(bias_q, INT32_MIN, INT32_MAX).astype(np.int64)
    ms = [quantize_multiplier(float(s / qout.scale)) for s in acc_scale]
    mult = np.array([m for m, _ in ms], dtype=np.int64)
    shift = np.array([s for _, s in ms], dtype=np.int64)
    has_bias = "bias" in op.params or bool(np.any(zero_rows & (b != 0)))
    return (bias_q if has_bias else None), mult, shift


def _quantize_ops(g: ir.Graph, qp: dict[str, QParams], representation: str, prefix: str) -> list[QOp]:
    qops = []
    for op in g.ops:
        kind = _kind(op)
        base = f"{prefix}_{op.name}"
        qin = qp[op.inputs[0]] if op.inputs else None
        qout = qp[op.output]
        qo = QOp(kind, op)
        enc: dict[str, Encoded] = {}

        def int_array(role: str, suffix: str, ctype: str, values: np.ndarray, enc=enc, base=base) -> None:
            v = np.asarray(values, dtype=np.int64)
            enc[role] = Encoded("dense", v.size, 1, int(np.count_nonzero(v)), {"values": CArray(base + suffix, ctype, v)})

        if kind in ("conv", "linear"):
            q, w_scale = quantize_weight(op.params["weight"])
            enc["weight"] = _encode_q(q, base + "_w", representation, op.source)
            bias_q, mult, shift = _bias_and_multipliers(op, q, w_scale, qin, qout)
            if kind == "linear" and qin.zero_point != 0:  # fold -in_zp * sum(q) into the bias
                bias_q = (bias_q if bias_q is not None else np.zeros(q.shape[0], np.int64)) - qin.zero_point * q.sum(1)
            qo.consts.update(q=q, mult=mult, shift=shift)
            if bias_q is not None:
                if np.any(np.abs(bias_q) > INT32_MAX):
                    raise CodegenError(f"layer '{op.source}': the int32 bias overflows; the layer is too large")
                qo.consts["bias"] = bias_q
                int_array("bias", "_b", "int32_t", bias_q)
            int_array("mult", "_m", "int32_t", mult)
            int_array("shift", "_sh", "int8_t", shift)
            lo, hi = _act_bounds(op.act, qout, f"'{op.source}'")
            qo.scalars.update(in_zp=qin.zero_point, out_zp=qout.zero_point, act_min=lo, act_max=hi)
            if kind == "conv":
                qo.scalars["dsp_col"] = dsp_column_words(op, enc["weight"].kernel)
                qo.scalars["dw_pad"] = dw_pad_bytes(op, enc["weight"].kernel)
        elif kind in ("maxpool", "avgpool", "pad", "copy"):
            qo.scalars["zp"] = qin.zero_point
            if kind == "pad":
                qo.scalars["value"] = int(qin.quantize(np.float32(op.value)))
        elif kind == "add":
            qa, qb = qin, qp[op.inputs[1]]
            twice = 2.0 * max(qa.scale, qb.scale)
            am, ash = quantize_multiplier(qa.scale / twice)
            bm, bsh = quantize_multiplier(qb.scale / twice)
            om, osh = quantize_multiplier(twice / ((1 << ADD_LEFT_SHIFT) * qout.scale))
            lo, hi = _act_bounds(op.act, qout, f"'{op.source}'")
            qo.scalars.update(a_zp=qa.zero_point, a_mult=am, a_shift=ash, b_zp=qb.zero_point, b_mult=bm, b_shift=bsh,
                              left_shift=ADD_LEFT_SHIFT, out_mult=om, out_shift=osh, out_zp=qout.zero_point,
                              act_min=lo, act_max=hi)  # fmt: skip
        elif kind == "mul":
            qa, qb = qin, qp[op.inputs[1]]
            m, sh = quantize_multiplier(qa.scale * qb.scale / qout.scale)
            lo, hi = _act_bounds(op.act, qout, f"'{op.source}'")
            qo.scalars.update(a_zp=qa.zero_point, b_zp=qb.zero_point, mult=m, shift=sh, out_zp=qout.zero_point,
                              act_min=lo, act_max=hi)  # fmt: skip
        elif kind == "concat":
            rows = []
            for v in op.inputs:
                m, sh = quantize_multiplier(qp[v].scale / qout.scale)
                rows.append((qp[v].zero_point, m, sh, qout.zero_point))
            qo.consts["requant"] = np.array(rows, dtype=np.int64)
        elif kind == "lut":
            lut = activation_lut(op.act, qin, qout)
            qo.consts["lut"] = lut.astype(np.int64)
            int_array("lut", "_lut", "int8_t", lut)
        op.encoded = enc
        op.runtime = RUNTIME  # instance attribute: the integer kernels live in sc_int8.h
        qops.append(qo)
    return qops


# ---- building --------------------------------------------------------------------------------------


class _Int8Value(ir.Value):
    """A Value whose elements are int8 (for the arena planner)."""

    @property
    def nbytes(self) -> int:
        return self.numel


def plan_int8(g: ir.Graph) -> GraphMemory:
    """The arena of the integer path: the ordinary planner over 1-byte elements (offsets in bytes)."""
    gq = ir.Graph({k: _Int8Value(v.name, v.shape, "int8") for k, v in g.values.items()}, g.ops, g.input, g.output)
    return plan_graph(gq)


def build_integer(
    model: torch.nn.Module,
    example_input: torch.Tensor | tuple[int, ...],
    calibration_data,
    representation: str = "int8",
    prefix: str = "model",
    leaf_modules: tuple[type, ...] = (),
    concrete_args: dict | None = None,
) -> IntegerModel:
    """Traces, lowers, calibrates and quantizes a model for the integer path (see the module docstring)."""
    if representation not in INTEGER_ENCODINGS:
        raise CodegenError(
            f"representation {representation!r} cannot be used with integer=True: the weights are int8; "
            f"choose one of {sorted(INTEGER_ENCODINGS)} ('int8': dense, CSR or relative-index int8, the smallest)"
        )
    m = prepare_model(model)
    x = example_from(example_input)
    gm = trace(m, x, leaf_modules, concrete_args)
    env: dict[str, str] = {}
    g = lower(gm, env)
    ranges, n = calibrate(gm, calibration_data, tuple(x.shape[1:]))
    value_ranges: dict[str, list[float]] = {}
    for node_name, v in env.items():
        if node_name in ranges:
            r = ranges[node_name]
            cur = value_ranges.get(v)
            value_ranges[v] = [min(cur[0], r[0]), max(cur[1], r[1])] if cur else list(r)
    _affine_to_conv(g)
    _split_activations(g, gm, env, ranges, value_ranges)
    for op in g.ops:
        _kind(op)  # refuse unsupported ops before any other work, naming the layer
    qp: dict[str, QParams] = {g.input: QParams.from_range(*value_ranges[g.input])}
    for op in g.ops:
        k = _kind(op)
        if k in ("maxpool", "avgpool", "pad", "copy"):
            qp[op.output] = qp[op.inputs[0]]
        elif op.output in value_ranges:
            qp[op.output] = QParams.from_range(*value_ranges[op.output])
        else:  # pragma: no cover - every op output maps to an fx node
            raise CodegenError(f"layer '{op.source}': no calibration range for its output (bug)")
    qops = _quantize_ops(g, qp, representation, prefix)
    qm = IntegerModel(g, qp, qops, calibration_samples=n)
    qm.memory = plan_int8(g)
    return qm


# ---- emission --------------------------------------------------------------------------------------


def template_context(qm: IntegerModel, prefix: str) -> dict:
    """The ``integer`` variable of the templates (model.h.j2, model.c.j2 -> model_int8.c.j2)."""
    mem = qm.memory
    assert mem is not None

    def qbuf(value: str) -> str:
        s = mem.storage[value]
        if s.kind == "arena":
            return f"(arena + {s.offset})" if s.offset else "arena"
        return s.kind

    from codegen.emit import cfloat

    return {
        "input_scale": cfloat(qm.input_q.scale),
        "input_zero_point": qm.input_q.zero_point,
        "output_scale": cfloat(qm.output_q.scale),
        "output_zero_point": qm.output_q.zero_point,
        "qops": qm.qops,
        "buf": qbuf,
        "arena_bytes": mem.arena_bytes,
    }


def integer_report(qm: IntegerModel) -> dict:
    return {
        "activations": "int8 per tensor (scale, zero point), calibrated min/max",
        "weights": "int8 symmetric per output channel",
        "calibration_samples": qm.calibration_samples,
        "input": qm.input_q.as_dict(),
        "output": qm.output_q.as_dict(),
        "values": {v: q.as_dict() for v, q in sorted(qm.qparams.items())},
    }


INT8_FLOAT_RTOL = 0.08  # the int8 output may differ from PyTorch's float output by 8 % of max|output|
INT8_FLOAT_STEPS = 2.0  # plus 2 output quantization steps (the rounding of the output itself)


def float_tolerance(y: np.ndarray, output_scale: float) -> float:
    """The bound of the integer self-test against PyTorch's float output:
    ``0.08 x max|y| + 2 x output_scale``.

    int8 activations and weights move the output by a few percent (measured on the e2e zoo of
    tests/models.py with 32 calibration samples: 0.6 % to 4.8 % of max|output|); a broken
    quantization (a bad scale, a saturated layer, calibration data unlike the input) gives errors of
    the order of the output itself, which this bound catches.
    """
    scale = float(np.max(np.abs(y))) if y.size else 0.0
    return INT8_FLOAT_RTOL * scale + INT8_FLOAT_STEPS * float(output_scale)


FLOAT_TOLERANCE_DOC = (f"max abs error against PyTorch's float output <= {INT8_FLOAT_RTOL:g} x max|output| + "
                       f"{INT8_FLOAT_STEPS:g} x output scale (codegen.integer.float_tolerance)")


def save_integer_model(
    model: torch.nn.Module,
    representation: str,
    input_data: torch.Tensor | None,
    directory,
    *,
    calibration_data,
    input_shape: tuple[int, ...] | None = None,
    prefix: str = "model",
    overwrite: bool = False,
    leaf_modules: tuple[type, ...] = (),
    concrete_args: dict | None = None,
    tolerance: float | None = None,
):
    """``save_compressed_model(..., integer=True, calibration_data=...)``: emits the integer path.

    headers/input.h then holds the sample input and the output the integer reference
    (``IntegerModel.run_float``) computes for it, with tolerance 0: the self-test checks the C is
    bit-exact. It also holds PyTorch's float output, and the self-test checks the C's output is
    within ``tolerance`` of it (default ``float_tolerance``: 8 % of max|output| + 2 output steps) and
    fails with a message saying so otherwise. report.json gets an "integer" section (scales, zero
    points) and, under "test", the error against PyTorch's float output and its bound.
    """
    from codegen import api, emit

    api._check_prefix(prefix)
    if input_data is None and input_shape is None:
        raise CodegenError("give input_data (a sample of batch size 1) or input_shape, e.g. (1, 1, 28, 28)")
    example = example_from(input_data if input_data is not None else tuple(input_shape))
    qm = build_integer(model, example, calibration_data, representation, prefix, leaf_modules, concrete_args)
    g, mem = qm.graph, qm.memory
    assert mem is not None
    name = type(model).__name__
    report = api._report(g, mem, prefix, representation, name)
    report["integer"] = integer_report(qm)
    test_io = None
    if input_data is not None:
        with torch.no_grad():
            y = prepare_model(model)(example).detach().float().numpy()
        x = example.numpy().astype(np.float32)
        yq = qm.run_float(x).astype(np.float32).reshape(y.shape)
        err = float(np.max(np.abs(yq.astype(np.float64) - y))) if y.size else 0.0
        doc = ("output of the integer reference (codegen.integer.IntegerModel.run_float) for the sample: the C "
               "must be bit-exact")  # fmt: skip
        test_io = (x, yq, 0.0, doc)
        ftol = float_tolerance(y, qm.output_q.scale) if tolerance is None else float(tolerance)
        fdoc = FLOAT_TOLERANCE_DOC if tolerance is None else "given by the caller"
        report["test"] = {"tolerance": 0.0, "max_abs_output": float(np.max(np.abs(yq))) if yq.size else 0.0,
                          "float_model_max_abs_error": err,
                          "float_model_max_abs_output": float(np.max(np.abs(y))) if y.size else 0.0,
                          "float_model_tolerance": ftol, "float_model_tolerance_doc": fdoc}  # fmt: skip
        if not err <= ftol:
            log.warning("%s: the int8 output is %.4g away from PyTorch's float output on the sample, above the bound "
                        "%.4g: `make check` will fail", name, err, ftol)  # fmt: skip
        float_ctx = {"float_expected": CArray(f"{prefix}_test_float_expected", "float", y.reshape(-1)),
                     "float_tolerance": ftol, "float_tolerance_doc": fdoc}  # fmt: skip
    rendered = emit.render(
        g, mem, prefix=prefix, representation=representation, model_name=name, version=api.VERSION,
        report=report, test_io=test_io,
        extra_context={"integer": template_context(qm, prefix), **(float_ctx if input_data is not None else {})},
    )  # fmt: skip
    path = emit.write_directory(rendered, directory, overwrite)
    log.info("emitted integer %s to %s: %d weight bytes, %d arena bytes", name, path,
             report["totals"]["weight_bytes"], mem.arena_bytes)  # fmt: skip
    res = api.EmitResult(path, report)
    res.integer_model = qm  # type: ignore[attr-defined]
    return res
