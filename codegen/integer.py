"""Fully integer inference for MCUs without an FPU: a quantized pass over the lowered IR.

int8 activations (one scale and zero point per tensor, calibrated on sample data), int8 weights
(symmetric per output channel), int32 accumulation (bias as int32 at scale in_scale * w_scale),
fixed-point requantization (int32 multiplier + shift, TFLite's MultiplyByQuantizedMultiplier
rounding) and ReLU/ReLU6 fused as clamping. The emitted C (``runtime_c/sc_fixed.h`` and the int8 sections of the family headers,
``templates/model_int8.c.j2``) uses no float at run time in ``<prefix>_run_int8``;
``<prefix>_run`` keeps its float signature (it quantizes the input, runs the integer path and
dequantizes the output).

Steps (``codegen.integer_emit.build_integer`` drives them; this module holds the math, the
calibration, the registry of int8 forms and the quantization pass ``quantize_graph``):

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


Each op family gives its int8 form through the registry here (``register_int8``, an ``Int8Handler``
per IR op class, next to the op in ``codegen/ops/<family>.py``): its kind, template (under
``templates/ops_int8/``), quantization (constants and scalars of a ``QOp``) and bit-exact numpy
reference. An op registered outside the package gets integer emission the same way.

Supported ops: Conv1d/Conv2d (groups, depthwise, stride, padding, dilation), Linear, BatchNorm
(folded or standalone), ReLU/ReLU6 (fused clamps), other elementwise activations (LUT), max and
average pooling (incl. adaptive/global and mean over spatial dims), add, mul, concat, flatten and
views, constant padding, slices/transposes/expands as copies, max/min/mean reductions, softmax.
log_softmax, LayerNorm and ops without an integer kernel are refused with an error naming the layer.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import fx

from codegen import formats, ir
from codegen.errors import CodegenError, UnsupportedConfigError
from codegen.formats import CArray, Encoded
from codegen.memory import GraphMemory

log = logging.getLogger(__name__)

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
# the int8 add / mul (sc_i8_add, sc_i8_mul, sc_i8_s_add, sc_i8_s_mul) compute in int32 with plain integer
# multipliers below 2^bits and one rounding right shift (``shift_multipliers``): |(x - zp) * m| < 2^29 for
# the add (two terms + rounding < 2^31), |(a - a_zp)(b - b_zp) * m| < 2^30 for the mul (|product| < 2^16)
ADD_MULT_BITS = 21
MUL_MULT_BITS = 14

# largest stack scratch of the SMLAD conv kernel (column + start values); larger convs use the plain kernel
DSP_SCRATCH_MAX_BYTES = 8192



# ---- fixed-point arithmetic: the numpy (int64) reference of runtime_c/sc_fixed.h ------------------


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



def shift_multipliers(ratios: Sequence[float], bits: int, what: str, max_shift: int = 30) -> tuple[list[int], int]:
    """Integer multipliers ``m_i = round(r_i * 2^s)`` with ``|m_i| < 2^bits`` at the largest shift
    ``s <= max_shift``: the int8 add and mul compute ``(sum_i x_i m_i + 2^(s-1)) >> s`` in int32 (one multiply
    per operand, no 64-bit product). For an output within int8 range the result differs from the exact
    rescaling by less than 255 * 2^-s of an output step plus the rounding (the largest ratio is at least
    2^(bits-1-s)).

    >>> shift_multipliers([0.5, 0.25], 21, "add")
    ([1048576, 524288], 21)
    """
    top = max((abs(r) for r in ratios), default=0.0)
    if not all(math.isfinite(r) for r in ratios):
        raise CodegenError(f"{what}: rescaling factors {list(ratios)} are not finite (bug)")
    s = max_shift
    while s > 0 and math.floor(top * 2.0**s + 0.5) >= 1 << bits:
        s -= 1
    if math.floor(top * 2.0**s + 0.5) >= 1 << bits:
        raise UnsupportedConfigError(f"{what}: an input scale is {top:g} times the output's, beyond the int8 "
                                     f"kernels' range (2^{bits}); calibrate with data that covers the output "
                                     "range or keep this model in float")
    return [int(math.copysign(math.floor(abs(r) * 2.0**s + 0.5), r)) for r in ratios], s


def rounding_term(shift: int) -> int:
    """2^(shift-1): added before the right shift so that it rounds half up (0 for no shift)."""
    return 1 << (shift - 1) if shift > 0 else 0


def add_constants(qa: QParams, qb: QParams, qout: QParams, what: str, sub: bool = False) -> dict[str, int]:
    """The int8 add (``sub``: a - b) of sc_i8_add / sc_i8_s_add:
    ``y = ((k + a * a_mult + b * b_mult) >> shift) + out_zp`` with ``a_mult ~= 2^shift s_a / s_out``,
    ``b_mult ~= -+2^shift s_b / s_out`` and ``k = 2^(shift-1) - a_zp a_mult - b_zp b_mult`` (the zero points
    folded at generation time)."""
    (am, bm), sh = shift_multipliers([qa.scale / qout.scale, (-1.0 if sub else 1.0) * qb.scale / qout.scale],
                                     ADD_MULT_BITS, what)
    return dict(k=rounding_term(sh) - qa.zero_point * am - qb.zero_point * bm, a_mult=am, b_mult=bm, shift=sh,
                out_zp=qout.zero_point)


def add_reference(a: np.ndarray, b: np.ndarray, s: dict) -> np.ndarray:
    """int64 reference of ``add_constants``' arithmetic (before the clamp)."""
    acc = s["k"] + np.asarray(a, dtype=np.int64) * s["a_mult"] + np.asarray(b, dtype=np.int64) * s["b_mult"]
    return (acc >> s["shift"]) + s["out_zp"]


def mul_constants(qa: QParams, qb: QParams, qout: QParams, what: str) -> dict[str, int]:
    """The int8 mul of sc_i8_mul / sc_i8_s_mul: ``y = (((a - a_zp)(b - b_zp) mult + round) >> shift) + out_zp``
    with ``mult ~= 2^shift s_a s_b / s_out`` below 2^14."""
    (m,), sh = shift_multipliers([qa.scale * qb.scale / qout.scale], MUL_MULT_BITS, what)
    return dict(a_zp=qa.zero_point, b_zp=qb.zero_point, mult=m, round=rounding_term(sh), shift=sh,
                out_zp=qout.zero_point)


def mul_reference(a: np.ndarray, b: np.ndarray, s: dict) -> np.ndarray:
    """int64 reference of ``mul_constants``' arithmetic (before the clamp)."""
    prod = (np.asarray(a, dtype=np.int64) - s["a_zp"]) * (np.asarray(b, dtype=np.int64) - s["b_zp"])
    return ((prod * s["mult"] + s["round"]) >> s["shift"]) + s["out_zp"]


def clamp8(v: np.ndarray, lo: int = -128, hi: int = 127) -> np.ndarray:
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



def act_bounds(act: ir.Activation, q: QParams, where: str) -> tuple[int, int]:
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
    return clamp8(np.round(y / qout.scale) + qout.zero_point).astype(np.int8)



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


# ---- the int8 form of each op: a registry keyed by IR op class --------------------------------------


@dataclass
class QOp:
    """Integer constants of one IR op (template variables and reference inputs)."""

    kind: str  # what the layer comment names: conv, linear, maxpool, avgpool, add, mul, concat, lut, pad, copy
    op: ir.Op
    consts: dict[str, np.ndarray] = field(default_factory=dict)  # int arrays (also in op.encoded)
    scalars: dict[str, int] = field(default_factory=dict)
    template: str = ""  # under templates/ops_int8/ (or the op's extension_dir/ops_int8/)


@dataclass
class Int8Context:
    """What an ``Int8Handler.quantize`` gets: the quantization of every value, the weight
    representation, the C name of the layer and the encodings it fills (role -> Encoded)."""

    qparams: dict[str, QParams]
    representation: str
    base: str  # "<prefix>_<layer name>": the prefix of the layer's array names
    encoded: dict[str, Encoded] = field(default_factory=dict)

    def qin(self, op: ir.Op, i: int = 0) -> QParams:
        return self.qparams[op.inputs[i]]

    def qout(self, op: ir.Op) -> QParams:
        return self.qparams[op.output]

    def int_array(self, role: str, suffix: str, ctype: str, values: np.ndarray) -> None:
        """A dense integer const array ``<base><suffix>`` stored as the layer's ``role``."""
        v = np.asarray(values, dtype=np.int64)
        self.encoded[role] = Encoded("dense", v.size, 1, int(np.count_nonzero(v)), {"values": CArray(self.base + suffix, ctype, v)})


class Int8Handler:
    """The int8 form of one IR op family. Subclass, set ``kind``/``template``, implement ``quantize``
    and ``reference``, and register with ``@register_int8(MyOp)``.

    ``keeps_qparams``: the output keeps input 0's scale and zero point (pooling, padding, copies).
    ``supported``: False for a handler registered only to refuse the op with a tailored message (GroupNorm);
    README's int8 column (``codegen.supported_ops``) leaves those out.
    ``runtime``: the headers of the int8 kernels (under runtime_c/ or the op's extension_dir): the op
    family's header, whose int8 section includes the fixed-point math (runtime_c/sc_fixed.h).
    """

    kind: ClassVar[str] = ""
    template: ClassVar[str] = ""
    keeps_qparams: ClassVar[bool] = False
    supported: ClassVar[bool] = True
    runtime: ClassVar[tuple[str, ...]] = ()

    def kind_of(self, op: ir.Op) -> str:
        """The QOp kind (printed in the layer comment)."""
        return self.kind

    def template_of(self, op: ir.Op) -> str:
        """The template under templates/ops_int8/ that renders the call."""
        return self.template

    def check(self, op: ir.Op) -> None:
        """Raise UnsupportedConfigError naming the layer if this op cannot go int8."""

    def rewrite(self, op: ir.Op) -> ir.Op:
        """An equivalent op with an int8 kernel, before calibration (default: the op itself)."""
        return op

    def quantize(self, op: ir.Op, ctx: Int8Context, qo: QOp) -> None:
        """Fills ``qo.consts``/``qo.scalars`` and the encodings (``ctx.int_array``, ``ctx.encoded``)."""
        raise NotImplementedError

    def reference(self, qo: QOp, ins: list[np.ndarray]) -> np.ndarray:
        """The bit-exact numpy (int64) result of the C kernel for one sample."""
        raise NotImplementedError

    def tile_form(self, qo: QOp, op: ir.Op) -> QOp:
        """The QOp of this layer run on one tile (codegen/tiling.py): ``op`` is its tile-local form
        (shapes, top/left padding). Override when a scalar depends on the spatial shape."""
        return dataclasses.replace(qo, op=op)


INT8_HANDLERS: dict[type, Int8Handler] = {}


def register_int8(*op_classes: type) -> Callable[[type[Int8Handler]], type[Int8Handler]]:
    """Class decorator: registers an ``Int8Handler`` subclass as the int8 form of each IR op class."""

    def deco(cls: type[Int8Handler]) -> type[Int8Handler]:
        for c in op_classes:
            if c in INT8_HANDLERS:
                raise ValueError(f"an int8 handler for {c.__qualname__} is already registered")
            INT8_HANDLERS[c] = cls()
        return cls

    return deco


def int8_handler(op: ir.Op) -> Int8Handler:
    """The registered handler of an op (nearest class in its MRO), or an error naming the layer."""
    for c in type(op).__mro__:
        h = INT8_HANDLERS.get(c)
        if h is not None:
            h.check(op)
            return h
    raise UnsupportedConfigError(
        f"layer '{op.source}': {op.describe()} ({op.torch_op}) has no integer kernel; integer mode supports "
        "conv, linear, batchnorm, activations, pooling, add, mul, concat, pad and views. Emit without "
        "integer=True or replace the layer"
    )


@dataclass
class Calibration:
    """What an int8 graph pass may read: the traced model, fx node -> IR value, node ranges and the
    value ranges it may extend."""

    gm: fx.GraphModule
    env: dict[str, str]
    ranges: dict[str, list[float]]
    value_ranges: dict[str, list[float]]
    producers: dict[str, str] = field(default_factory=dict)  # IR value -> the fx node that computed it


def value_ranges_of(env: dict[str, str], producers: dict[str, str], ranges: dict[str, list[float]]
                    ) -> dict[str, list[float]]:  # fmt: skip
    """IR value -> calibrated [min, max]: the range of the fx node whose lowering computed the value
    (``producers``); a value without one (the graph input, the items of a tuple-valued node) takes the
    union of the ranges of the nodes ``env`` maps to it (views of it).

    ``env`` alone is not enough: an in-place activation (``nn.SiLU(inplace=True)``, timm's default)
    redirects the nodes of the tensor it overwrote to its result, and those nodes' recorded ranges are the
    values before the activation (the conv/BatchNorm output), not the activation's.
    """
    out: dict[str, list[float]] = {}
    for v, node_name in producers.items():
        if node_name in ranges:
            out[v] = list(ranges[node_name])
    done = set(out)
    for node_name, v in env.items():
        if v in done or node_name not in ranges:
            continue
        r, cur = ranges[node_name], out.get(v)
        out[v] = [min(cur[0], r[0]), max(cur[1], r[1])] if cur else list(r)
    return out


# graph passes run after each op's rewrite, before quantization (e.g. splitting fused activations)
INT8_PASSES: list[Callable[[ir.Graph, Calibration], None]] = []


def register_int8_pass(fn: Callable[[ir.Graph, Calibration], None]) -> Callable[[ir.Graph, Calibration], None]:
    INT8_PASSES.append(fn)
    return fn


def unique_op_name(g: ir.Graph, base: str) -> str:
    taken = {op.name for op in g.ops}
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    return name


# ---- the integer model ----------------------------------------------------------------------------


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
            env[qo.op.output] = int8_handler(qo.op).reference(qo, ins).reshape(-1)
        return env[self.graph.output].astype(np.int8)


# ---- weights, biases and multipliers (shared by the weighted ops) ------------------------------------


def quantize_weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q int64 [rows, cols] in [-127, 127], w_scale float64 [rows]) symmetric per output channel;
    the scale is float32(max|w[row]| / 127) as ``codegen.quantize.int8_quantize_array``."""
    w2 = np.asarray(w, dtype=np.float64).reshape(w.shape[0], -1)
    scale = (np.abs(w2).max(axis=1, initial=0.0) / 127.0).astype(np.float32).astype(np.float64)
    safe = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.rint(w2 / safe[:, None]), -127, 127).astype(np.int64)
    return q, scale



def encode_q(q: np.ndarray, base: str, representation: str, layer: str, encoding: str | None = None) -> Encoded:
    """Encodes int8 q with the smallest int8 encoding the representation allows in integer mode
    (``formats.REPRESENTATIONS[representation].integer``), or with ``encoding``, without the float scale
    array."""
    allowed = formats.REPRESENTATIONS[representation].integer
    qf = q.astype(np.float32)
    best = encoding or min(allowed, key=lambda n: (formats.ENCODINGS[n].tensor_nbytes(qf), allowed.index(n)))
    enc = formats.ENCODINGS[best].encode(qf, base)
    scale = enc.arrays.pop("scale").values
    if not np.all((scale == 1) | (scale == 0)):  # pragma: no cover - q rows have max |q| = 127
        raise CodegenError(f"layer '{layer}': int8 re-encoding changed the weights (bug)")
    enc.runtime = ()
    return enc



def bias_and_multipliers(op: ir.Op, q: np.ndarray, w_scale: np.ndarray, qin: QParams, qout: QParams
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



def quantize_weighted(op: ir.Op, ctx: Int8Context, qo: QOp, fold_input_zp: bool | Callable[[str], bool] = False
                      ) -> None:  # fmt: skip
    """int8 weights per output channel, int32 bias, multipliers and shifts, clamps of the fused ReLU/ReLU6
    (conv and linear). ``fold_input_zp``: -in_zp * sum(q) goes into the bias (the kernel skips it); a
    callable decides from the weight's kernel (``Encoded.kernel``, e.g. "q8")."""
    qin, qout = ctx.qin(op), ctx.qout(op)
    q, w_scale = quantize_weight(op.params["weight"])
    ctx.encoded["weight"] = encode_q(q, ctx.base + "_w", ctx.representation, op.source)
    bias_q, mult, shift = bias_and_multipliers(op, q, w_scale, qin, qout)
    if callable(fold_input_zp):
        fold_input_zp = fold_input_zp(ctx.encoded["weight"].kernel)
    if fold_input_zp and qin.zero_point != 0:
        bias_q = (bias_q if bias_q is not None else np.zeros(q.shape[0], np.int64)) - qin.zero_point * q.sum(1)
    qo.consts.update(q=q, mult=mult, shift=shift)
    if bias_q is not None:
        if np.any(np.abs(bias_q) > INT32_MAX):
            raise CodegenError(f"layer '{op.source}': the int32 bias overflows; the layer is too large")
        qo.consts["bias"] = bias_q
        ctx.int_array("bias", "_b", "int32_t", bias_q)
    ctx.int_array("mult", "_m", "int32_t", mult)
    ctx.int_array("shift", "_sh", "int8_t", shift)
    lo, hi = act_bounds(op.act, qout, f"'{op.source}'")
    qo.scalars.update(in_zp=qin.zero_point, out_zp=qout.zero_point, act_min=lo, act_max=hi)


def quantize_graph(g: ir.Graph, value_ranges: dict[str, list[float]], representation: str, prefix: str
                   ) -> tuple[dict[str, QParams], list[QOp]]:  # fmt: skip
    """The int8 pass: every value's QParams from its calibrated range (or its input's, for ops that keep
    them), then each op's int8 form from its registered handler. Sets op.encoded and op.runtime."""
    qp: dict[str, QParams] = {g.input: QParams.from_range(*value_ranges[g.input])}
    for op in g.ops:
        if int8_handler(op).keeps_qparams:
            qp[op.output] = qp[op.inputs[0]]
        elif op.output in value_ranges:
            qp[op.output] = QParams.from_range(*value_ranges[op.output])
        else:  # pragma: no cover - every op output maps to an fx node
            raise CodegenError(f"layer '{op.source}': no calibration range for its output (bug)")
    qops = []
    for op in g.ops:
        h = int8_handler(op)
        qo = QOp(h.kind_of(op), op, template=h.template_of(op))
        ctx = Int8Context(qp, representation, f"{prefix}_{op.name}")
        h.quantize(op, ctx, qo)
        op.encoded = ctx.encoded
        if not h.runtime:
            raise CodegenError(f"layer '{op.source}': the int8 handler {type(h).__name__} names no runtime header "
                               "(set its runtime to the header holding its int8 kernel)")
        op.runtime = h.runtime  # instance attributes: the int8 kernels (the family header's int8 section)
        op.integer = True
        qops.append(qo)
    return qp, qops


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
