"""The typed IR: a graph of small dataclasses with every shape resolved.

Shapes never include the batch dimension (the generated C runs one sample at a time).
Activations are float32, laid out in C order: (C,) for features, (C, L) for 1-D signals and
(C, H, W) for images. 1-D convolutions and pools are represented as 2-D ones with H == 1, so
one C kernel serves both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import ClassVar

import numpy as np

from codegen.formats import Encoded

ACTIVATIONS = ("none", "relu", "relu6", "leaky_relu", "sigmoid", "tanh", "hardswish", "hardsigmoid")


@dataclass(frozen=True)
class Activation:
    """An elementwise activation, applied standalone or fused into its producer."""

    kind: str = "none"
    alpha: float = 0.0  # negative slope of leaky_relu

    def __post_init__(self) -> None:
        if self.kind not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.kind!r}")

    @property
    def c_enum(self) -> str:
        return "SC_ACT_" + self.kind.upper()


NO_ACT = Activation()


@dataclass
class Value:
    """An activation tensor of one sample. Reshape-like ops reuse the Value of their input."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * 4


@dataclass
class Op:
    """Base class of IR ops. Subclasses add their resolved attributes.

    ``template``: the Jinja2 template (under templates/ops/) that renders the C call.
    ``runtime``: the runtime headers (under runtime_c/) whose kernels the call uses.
    ``inplace``: the output may share storage with input 0 (elementwise ops).
    ``params``: float32 constant tensors by role ("weight", "bias", "scale", ...).
    ``encodable``: the roles whose storage format is chosen by codegen.formats
    (the others are always dense float32).
    ``extension_dir``: for ops defined outside codegen, a directory holding the op's template
    (``ops/<template>``) and its runtime headers; searched before the packaged ones.
    """

    name: str  # unique C identifier of the layer
    source: str  # torch module path or fx node name, for comments, reports and errors
    torch_op: str  # what the user wrote, e.g. "Conv2d(1, 6, kernel_size=(5, 5))"
    inputs: list[str]
    output: str
    params: dict[str, np.ndarray] = field(default_factory=dict)
    encoded: dict[str, Encoded] = field(default_factory=dict)  # role -> storage, set by codegen.formats

    kind: ClassVar[str] = "op"
    template: ClassVar[str] = ""
    runtime: ClassVar[tuple[str, ...]] = ()
    inplace: ClassVar[bool] = False
    encodable: ClassVar[tuple[str, ...]] = ()
    extension_dir: ClassVar[str | None] = None

    def macs(self) -> int:
        return 0

    def describe(self) -> str:
        return self.kind

    def overwrites_input(self) -> bool:
        """The output may take input 0's storage (when input 0 dies here). True for elementwise
        ops (``inplace``, same size) and for kernels that read everything each output needs, and
        every later output needs, before writing it (output no larger than the input)."""
        return self.inplace


# A CSR 1x1 conv run in place gathers PWC_BLOCK positions (SC_PWC_BLOCK in sc_conv.h) of its
# C_in channels into a stack buffer first; at most PWC_MAX_CBUF_BYTES of it.
PWC_BLOCK = 8
PWC_MAX_CBUF_BYTES = 4096


@dataclass
class Conv2d(Op):
    """Convolution (also Conv1d with h == 1). Weight is viewed as [C_out, C_in/groups*kh*kw]."""

    in_shape: tuple[int, int, int] = (0, 0, 0)
    out_shape: tuple[int, int, int] = (0, 0, 0)
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)  # top, left (bottom/right follow from the output size)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    act: Activation = NO_ACT
    dims: int = 2

    kind: ClassVar[str] = "conv"
    template: ClassVar[str] = "conv.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_conv.h",)
    encodable: ClassVar[tuple[str, ...]] = ("weight",)

    def macs(self) -> int:
        c_out, h, w = self.out_shape
        return c_out * h * w * (self.in_shape[0] // self.groups) * self.kernel[0] * self.kernel[1]

    def describe(self) -> str:
        return "depthwise_conv" if self.groups == self.in_shape[0] and self.groups > 1 else "conv"

    def pwc_cbuf_floats(self) -> int:
        """Floats of the stack column buffer of the in-place CSR 1x1 kernel (sc_conv_pwc_csr_*)."""
        return PWC_BLOCK * self.in_shape[0]

    def overwrites_input(self) -> bool:
        """Float depthwise, dense or CSR (channel copied to a padding buffer first), and 1x1
        stride-1 (dense: 4 positions gathered into a column buffer first; CSR, groups == 1: 8
        positions, when the buffer stays within PWC_MAX_CBUF_BYTES of stack) run in place
        (sc_conv.h)."""
        w = self.encoded.get("weight")
        if (w is None or w.encoding not in ("dense", "csr") or self.runtime != Conv2d.runtime
                or tuple(self.dilation) != (1, 1)):
            return False
        c, h, wd = self.in_shape
        if self.groups == c and self.out_shape[0] == c and c > 1:
            return self.out_shape[1] * self.out_shape[2] <= h * wd
        if w.encoding == "csr" and (self.groups != 1 or 4 * self.pwc_cbuf_floats() > PWC_MAX_CBUF_BYTES):
            return False
        return (tuple(self.kernel) == (1, 1) and tuple(self.stride) == (1, 1) and tuple(self.padding) == (0, 0)
                and tuple(self.out_shape) == tuple(self.in_shape))


@dataclass
class Linear(Op):
    """y = W x + b over the last dimension, repeated for ``rows`` leading positions."""

    in_features: int = 0
    out_features: int = 0
    rows: int = 1
    act: Activation = NO_ACT

    kind: ClassVar[str] = "linear"
    template: ClassVar[str] = "linear.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_linear.h",)
    encodable: ClassVar[tuple[str, ...]] = ("weight",)

    def macs(self) -> int:
        return self.rows * self.in_features * self.out_features


@dataclass
class Pool2d(Op):
    """Max or average pooling (1-D pools have h == 1)."""

    mode: str = "max"
    in_shape: tuple[int, int, int] = (0, 0, 0)
    out_shape: tuple[int, int, int] = (0, 0, 0)
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    count_include_pad: bool = True
    divisor: int = 0  # avg pool divisor_override; 0 = none

    kind: ClassVar[str] = "pool"
    template: ClassVar[str] = "pool.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_pool.h",)

    def describe(self) -> str:
        return f"{self.mode}pool"

    def overwrites_input(self) -> bool:
        """Without padding, output k's window starts at input index >= k and outputs are written
        in order after their window is read, so the float kernels (sc_pool.h) run in place."""
        return self.runtime == Pool2d.runtime and tuple(self.padding) == (0, 0)


@dataclass
class ChannelAffine(Op):
    """Standalone BatchNorm in inference form: y = x * scale[c] + shift[c]."""

    channels: int = 0
    inner: int = 1  # elements per channel
    act: Activation = NO_ACT

    kind: ClassVar[str] = "batchnorm"
    template: ClassVar[str] = "affine.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_eltwise.h",)
    inplace: ClassVar[bool] = True


@dataclass
class Act(Op):
    """A standalone activation that could not be fused into its producer."""

    numel: int = 0
    act: Activation = NO_ACT

    kind: ClassVar[str] = "activation"
    template: ClassVar[str] = "act.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_eltwise.h",)
    inplace: ClassVar[bool] = True

    def describe(self) -> str:
        return self.act.kind


@dataclass
class Binary(Op):
    """Elementwise add or mul of two tensors of equal shape (residual blocks)."""

    mode: str = "add"
    numel: int = 0
    act: Activation = NO_ACT

    kind: ClassVar[str] = "eltwise"
    template: ClassVar[str] = "binary.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_eltwise.h",)
    inplace: ClassVar[bool] = True

    def describe(self) -> str:
        return self.mode


@dataclass
class Concat(Op):
    """Concatenation along the channel (first non-batch) dimension: contiguous blocks."""

    sizes: tuple[int, ...] = ()  # elements each input contributes per outer index
    outer: int = 1  # product of the dims before the concatenation dim

    kind: ClassVar[str] = "concat"
    template: ClassVar[str] = "concat.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_eltwise.h",)


@dataclass
class Softmax(Op):
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
class Pad2d(Op):
    """Constant padding of the last two dimensions (1-D pads have h == 1)."""

    in_shape: tuple[int, int, int] = (0, 0, 0)
    out_shape: tuple[int, int, int] = (0, 0, 0)
    padding: tuple[int, int] = (0, 0)  # top, left
    value: float = 0.0

    kind: ClassVar[str] = "pad"
    template: ClassVar[str] = "pad.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_eltwise.h",)


@dataclass
class Copy(Op):
    """Copies a tensor (only when the model's output is its input, or a view of it)."""

    numel: int = 0

    kind: ClassVar[str] = "copy"
    template: ClassVar[str] = "copy.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_eltwise.h",)


@dataclass
class Graph:
    """The lowered model: values, ops in execution order, one input and one output."""

    values: dict[str, Value]
    ops: list[Op]
    input: str
    output: str

    @property
    def input_value(self) -> Value:
        return self.values[self.input]

    @property
    def output_value(self) -> Value:
        return self.values[self.output]

    def consumers(self, value: str) -> list[Op]:
        return [op for op in self.ops if value in op.inputs]

    def producer(self, value: str) -> Op | None:
        for op in self.ops:
            if op.output == value:
                return op
        return None
