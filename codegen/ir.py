"""The typed IR core: values, the Op base class and the graph. Every op family (its dataclass, lowering,
kernel choice and int8 form) lives in ``codegen/ops/<family>.py``.

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


@dataclass(frozen=True)
class Scratch:
    """A scratch buffer a kernel needs, declared by the template before the call."""

    ctype: str
    name: str
    count: int
    comment: str
    arena: bool = False  # planned in the arena (grows with the layer); False: a bounded stack array

    @property
    def nbytes(self) -> int:
        return self.count * (1 if self.ctype in ("int8_t", "uint8_t") else 4)


@dataclass(frozen=True)
class KernelChoice:
    """The C function an op calls (greppable full name) and its scratch buffer, if any."""

    name: str
    scratch: Scratch | None = None
    in_place: bool = False  # the kernel may write its output over input 0 (the planner reads it)
    # the scratch only buys speed: the planner drops it (Op.drop_optional_scratch) when it raises the arena
    optional: bool = False


@dataclass
class Op:
    """Base class of IR ops. Subclasses add their resolved attributes.

    ``template``: the Jinja2 template (under templates/ops/) that renders the C call.
    ``runtime``: the runtime headers (under runtime_c/) whose kernels the call uses: the op family's
    header (sc_conv.h, sc_linear.h, ...), which holds its float, weight-only and int8 sections.
    ``integer``: the op runs its int8 kernels (set by the integer pass, codegen/integer.py).
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
    integer: ClassVar[bool] = False
    inplace: ClassVar[bool] = False
    encodable: ClassVar[tuple[str, ...]] = ()
    extension_dir: ClassVar[str | None] = None

    def macs(self) -> int:
        return 0

    def describe(self) -> str:
        return self.kind

    def kernel_choice(self, in_place: bool = False) -> KernelChoice | None:
        """The C kernel this op calls and the scratch it needs, decided here once (the template prints
        it). ``in_place``: the planner gave the output input 0's storage. None: the template decides
        alone (ops with a single kernel)."""
        return None

    def arena_scratch_bytes(self) -> int:
        """Bytes of scratch the op's kernel needs in the arena during the op (the planner reserves them,
        MODEL_ARENA_BYTES counts them): the kernel choice's scratch when it grows with the layer."""
        kc = self.kernel_choice()
        return kc.scratch.nbytes if kc is not None and kc.scratch is not None and kc.scratch.arena else 0

    def drop_optional_scratch(self, drop: bool) -> None:
        """Run the kernel that needs no scratch instead of one whose scratch is ``optional`` (True), or
        the faster one again (False). codegen.memory.plan_graph drops it when it raises the arena."""

    def overwrites_input(self) -> bool:
        """The output may take input 0's storage (when input 0 dies here). True for elementwise
        ops (``inplace``, same size) and for kernels that read everything each output needs, and
        every later output needs, before writing it (output no larger than the input)."""
        return self.inplace


@dataclass
class Windowed(Op):
    """An op sliding a kh x kw window over a (C, H, W) input (1-D ops have H == 1): the geometry that
    convolution, transposed convolution and pooling share (codegen/ops/conv.py, deconv.py, pool.py)."""

    in_shape: tuple[int, int, int] = (0, 0, 0)
    out_shape: tuple[int, int, int] = (0, 0, 0)
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)  # top, left (bottom/right follow from the output size)
    dilation: tuple[int, int] = (1, 1)


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

