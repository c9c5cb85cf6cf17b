"""Lowering machinery: the registry {torch target -> lowering function}, the context a lowering
function works with, and C name sanitizing. The lowering functions themselves live with their op
family in ``codegen/ops/<family>.py``; ``codegen.lower.lower`` drives them.
"""

from __future__ import annotations

import hashlib
import logging
import operator
import re
from collections.abc import Callable
from math import prod
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import TensorMetadata

from codegen import ir
from codegen.errors import CodegenError, UnsupportedConfigError

log = logging.getLogger(__name__)

Lowering = Callable[["LowerContext", fx.Node], None]
LOWERINGS: dict[Any, Lowering] = {}


def register_lowering(*targets: Any) -> Callable[[Lowering], Lowering]:
    """Registers ``fn(ctx, node)`` as the lowering of each target (module class, function or Tensor method).

    Example:
        >>> @register_lowering(MySwish)                       # doctest: +SKIP
        ... def lower_swish(ctx, node):
        ...     ctx.emit(node, MySwishOp(**ctx.common(node), numel=ctx.numel(node)))
    """

    def deco(fn: Lowering) -> Lowering:
        for t in targets:
            if t in LOWERINGS:
                raise ValueError(f"a lowering for {target_name(t)} is already registered")
            LOWERINGS[t] = fn
        return fn

    return deco


# Targets whose lowering reads get_attr constants (module parameters/buffers) as parameter operands
# (F.conv2d's weight, F.batch_norm's running stats, a broadcast operand): check_supported does not
# list such constants as unsupported when every user of theirs is one of these.
CONSTANT_OPERANDS: set[Any] = set()


def accepts_constants(*targets: Any) -> None:
    """Declares that the lowerings of ``targets`` take get_attr constants as operands."""
    CONSTANT_OPERANDS.update(targets)


_PRETTY: dict[int, str] = {}


def _pretty_names() -> dict[int, str]:
    """id(callable) -> the name a user writes: F.relu, torch.cat, Tensor.view, operator.add."""
    if not _PRETTY:
        for ns, label in ((torch.Tensor, "Tensor"), (torch, "torch"), (F, "F"), (operator, "operator")):
            for attr in dir(ns):
                if attr.startswith("_"):
                    continue
                obj = getattr(ns, attr, None)
                if callable(obj) and not isinstance(obj, type):
                    _PRETTY[id(obj)] = f"{label}.{attr}"  # later namespaces win: F over torch
    return _PRETTY


def target_name(t: Any) -> str:
    if isinstance(t, type):
        if t.__module__.startswith("torch.nn.modules"):
            return f"nn.{t.__qualname__}"
        return f"{t.__module__}.{t.__qualname__}"
    if isinstance(t, torch._ops.OpOverload):  # an ATen op the torch.export front end could not translate
        return str(t)
    name = _pretty_names().get(id(t))
    if name:
        return name
    return getattr(t, "__qualname__", None) or getattr(t, "__name__", None) or repr(t)


def supported_ops() -> list[str]:
    """Human-readable names of every registered target, sorted."""
    return sorted({target_name(t) for t in LOWERINGS})


C_KEYWORDS = frozenset(
    "auto break case char const continue default do double else enum extern float for goto if inline int "
    "long register restrict return short signed sizeof static struct switch typedef union unsigned void "
    "volatile while _Bool _Complex _Imaginary main".split()
)


RESERVED_NAMES = frozenset({"input", "output", "headers", "arena", "model", "runtime"})
MAX_IDENTIFIER = 48  # characters of a layer name made from a module path


def c_identifier(text: str) -> str:
    """Sanitizes a module path or node name into a C identifier ("features.0" -> "features_0")."""
    s = re.sub(r"[^0-9A-Za-z_]", "_", text)
    s = re.sub(r"_+", "_", s).strip("_")
    if len(s) > MAX_IDENTIFIER:  # names a file too (headers/<name>.h): keep it short, unique by a hash
        s = s[: MAX_IDENTIFIER - 9].rstrip("_") + "_" + hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()[:8]
    if not s or s[0].isdigit():
        s = "l_" + s
    if s in C_KEYWORDS or s.lower() in RESERVED_NAMES:
        s += "_"
    return s


class NameAllocator:
    """Gives unique, deterministic C identifiers, unique even ignoring case (they also name files
    and upper-case include guards: 'fc' and 'FC' must not both become headers/fc.h / MODEL_FC_H)."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def __call__(self, text: str) -> str:
        base = c_identifier(text)
        name, i = base, 2
        while name.lower() in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name.lower())
        return name


def tensor_meta(node: fx.Node) -> TensorMetadata | None:
    m = node.meta.get("tensor_meta")
    return m if isinstance(m, TensorMetadata) else None


def module_path(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        last = list(stack.values())[-1]
        path = last[0] if isinstance(last, tuple) else str(last)
        return path
    return ""


def lowering_key(node: fx.Node, modules: dict[str, nn.Module]) -> Any:
    """The registry key of a node: module class, function object or torch.Tensor method."""
    if node.op == "call_module":
        return type(modules[str(node.target)])
    if node.op == "call_function":
        return node.target
    if node.op == "call_method":
        return getattr(torch.Tensor, str(node.target), str(node.target))
    return None


class LowerContext:
    """State of one lowering run, with the helpers lowering functions use."""

    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.values: dict[str, ir.Value] = {}
        self.env: dict[str, str] = {}  # fx node name -> value name
        # value name -> the fx node whose lowering computed it (emit). Unlike env, never redirected by an
        # in-place activation (which makes the nodes of the mutated tensor name its result), so the int8
        # calibration reads each value's range from the node that produced it
        self.producers: dict[str, str] = {}
        self.ops: list[ir.Op] = []
        self.layer_names = NameAllocator()
        self.value_names = NameAllocator()
        # tuple-valued nodes (chunk, split, torch.max(x, dim), nn.LSTM: [out, [h_n, c_n]]): fx node name ->
        # items, each a value name (str), a nested list, None (not computed), or an object with
        # lower_item(ctx, node) (codegen/ops/recurrent.py); operator.getitem picks one (ops/gather.py)
        self.tuples: dict[str, list] = {}

    # ---- helpers for lowering functions -------------------------------------------------------
    def module(self, node: fx.Node) -> nn.Module:
        return self.modules[str(node.target)]

    def shape(self, node: fx.Node) -> tuple[int, ...]:
        """Shape of a node's tensor without the batch dimension."""
        m = tensor_meta(node)
        if m is None:
            raise UnsupportedConfigError(f"node '{node.name}' does not produce a single tensor")
        return tuple(int(d) for d in m.shape[1:])

    def numel(self, node: fx.Node) -> int:
        return prod(self.shape(node))

    def arg(self, node: fx.Node, index: int, name: str, default: Any = None) -> Any:
        if len(node.args) > index:
            return node.args[index]
        return node.kwargs.get(name, default)

    def tensor_arg(self, node: fx.Node, index: int, name: str) -> fx.Node:
        a = self.arg(node, index, name)
        if not isinstance(a, fx.Node) or tensor_meta(a) is None:
            raise UnsupportedConfigError(
                f"node '{node.name}' ({target_name(lowering_key(node, self.modules))}): argument "
                f"'{name}' must be a tensor computed from the model input, got {a!r}"
            )
        return a

    def constant(self, node: fx.Node, index: int, name: str, optional: bool = False) -> torch.Tensor | None:
        """The module parameter/buffer (a get_attr node) passed as argument ``name``; None when absent
        and ``optional``."""
        a = self.arg(node, index, name)
        if a is None and optional:
            return None
        if not (isinstance(a, fx.Node) and a.op == "get_attr"):
            raise self.fail(node, f"its argument '{name}' must be a parameter or buffer of the model, got "
                            f"{a.name if isinstance(a, fx.Node) else repr(a)}",
                            "Pass a module parameter (self.weight) or use the nn module form")  # fmt: skip
        obj: Any = self.gm
        for part in str(a.target).split("."):
            obj = getattr(obj, part)
        if not isinstance(obj, torch.Tensor):
            raise self.fail(node, f"its argument '{name}' (self.{a.target}) is not a tensor", "Pass a tensor")
        return obj.detach()

    def value(self, node: fx.Node) -> str:
        if node.name not in self.env:
            raise CodegenError(f"node '{node.name}' is used before it is computed")
        return self.env[node.name]

    def where(self, node: fx.Node) -> str:
        path = module_path(node)
        return f"'{path}'" if node.op == "call_module" else f"'{node.name}'" + (f" in '{path}'" if path else "")

    def fail(self, node: fx.Node, why: str, fix: str) -> UnsupportedConfigError:
        where = self.where(node)
        return UnsupportedConfigError(f"layer {where}: {why}. {fix}", layer=where, why=why, fix=fix)

    def common(self, node: fx.Node, inputs: list[fx.Node] | None = None) -> dict[str, Any]:
        """name/source/torch_op/inputs/output fields for an op produced by this node."""
        if inputs is None:
            inputs = [self.tensor_arg(node, 0, "input")]
        src = str(node.target) if node.op == "call_module" else node.name
        if node.op == "call_module":
            torch_op = repr(self.module(node)).split("\n")[0]
        else:
            torch_op = target_name(lowering_key(node, self.modules))
        out = self.value_names("v_" + node.name)
        self.values[out] = ir.Value(out, self.shape(node))
        return dict(
            name=self.layer_names(src),
            source=src,
            torch_op=torch_op,
            inputs=[self.value(i) for i in inputs],
            output=out,
        )

    def emit(self, node: fx.Node, op: ir.Op) -> None:
        for v in [*op.inputs, op.output]:
            if self.values[v].numel == 0:
                raise self.fail(
                    node, f"it has a tensor with no element (shape {self.values[v].shape}, batch dim excluded)",
                    "Remove the layer or give every dimension at least one element (C has no zero-size arrays)",
                )
        for role, arr in op.params.items():
            if np.size(arr) == 0:
                raise self.fail(node, f"its {role} has no element (shape {np.shape(arr)})",
                                "Remove the layer or give it at least one input and one output feature")  # fmt: skip
        for role, arr in op.params.items():
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            if bad:
                raise CodegenError(
                    f"layer {self.where(node)}: {role} has {bad} non-finite value(s) (NaN or inf). "
                    "Retrain or repair the weights before emitting C."
                )
        self.ops.append(op)
        self.env[node.name] = op.output
        self.producers[op.output] = node.name

    def alias(self, node: fx.Node, src: fx.Node) -> None:
        """The node's result is the same memory as src's (reshape, flatten, dropout, identity)."""
        self.env[node.name] = self.value(src)


def f32(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().to(torch.float32).cpu().numpy().copy()


def pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1])) if len(v) == 2 else (int(v[0]), int(v[0]))
    return (int(v), int(v))


def window_pair(v: Any, dims: int, one: int = 1) -> tuple[int, int]:
    """(h, w) of a conv or pool argument (an int or a 1- or 2-sequence); a 1-D op's h is ``one`` (1 for the
    kernel, stride and dilation, 0 for the padding)."""
    return (one, pair(v)[0]) if dims == 1 else pair(v)


def check_zeros_padding(ctx: LowerContext, node: fx.Node, m: Any) -> None:
    """Conv and transposed conv modules: only padding_mode='zeros' lowers."""
    if m.padding_mode != "zeros":
        raise ctx.fail(node, f"padding_mode='{m.padding_mode}' is not supported", "Use padding_mode='zeros'")


def as_chw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) view of a (C, L) or (C, H, W) activation."""
    if len(shape) == 2:
        return (shape[0], 1, shape[1])
    if len(shape) == 3:
        return shape  # type: ignore[return-value]
    raise UnsupportedConfigError(f"expected a (C, L) or (C, H, W) activation, got shape {shape}")

