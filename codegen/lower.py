"""Lowering: fx nodes -> typed IR ops, then BN folding, activation fusion and dead-op removal.

Each supported torch target (an nn.Module class, a function such as F.relu or operator.add, or a
Tensor method such as torch.Tensor.view) maps to ONE lowering function in ``LOWERINGS``.
Registering a target twice is an error. See docs/architecture.md, "Adding an op".
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
from codegen.errors import CodegenError, UnsupportedConfigError, UnsupportedOpError

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
                raise ValueError(f"a lowering for {_target_name(t)} is already registered")
            LOWERINGS[t] = fn
        return fn

    return deco


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


def _target_name(t: Any) -> str:
    if isinstance(t, type):
        if t.__module__.startswith("torch.nn.modules"):
            return f"nn.{t.__qualname__}"
        return f"{t.__module__}.{t.__qualname__}"
    name = _pretty_names().get(id(t))
    if name:
        return name
    return getattr(t, "__qualname__", None) or getattr(t, "__name__", None) or repr(t)


def supported_ops() -> list[str]:
    """Human-readable names of every registered target, sorted."""
    return sorted({_target_name(t) for t in LOWERINGS})


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


def _meta(node: fx.Node) -> TensorMetadata | None:
    m = node.meta.get("tensor_meta")
    return m if isinstance(m, TensorMetadata) else None


def _module_path(node: fx.Node) -> str:
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
        self.ops: list[ir.Op] = []
        self.layer_names = NameAllocator()
        self.value_names = NameAllocator()

    # ---- helpers for lowering functions -------------------------------------------------------
    def module(self, node: fx.Node) -> nn.Module:
        return self.modules[str(node.target)]

    def shape(self, node: fx.Node) -> tuple[int, ...]:
        """Shape of a node's tensor without the batch dimension."""
        m = _meta(node)
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
        if not isinstance(a, fx.Node) or _meta(a) is None:
            raise UnsupportedConfigError(
                f"node '{node.name}' ({_target_name(lowering_key(node, self.modules))}): argument "
                f"'{name}' must be a tensor computed from the model input, got {a!r}"
            )
        return a

    def value(self, node: fx.Node) -> str:
        if node.name not in self.env:
            raise CodegenError(f"node '{node.name}' is used before it is computed")
        return self.env[node.name]

    def where(self, node: fx.Node) -> str:
        path = _module_path(node)
        return f"'{path}'" if node.op == "call_module" else f"'{node.name}'" + (f" in '{path}'" if path else "")

    def fail(self, node: fx.Node, why: str, fix: str) -> UnsupportedConfigError:
        return UnsupportedConfigError(f"layer {self.where(node)}: {why}. {fix}")

    def common(self, node: fx.Node, inputs: list[fx.Node] | None = None) -> dict[str, Any]:
        """name/source/torch_op/inputs/output fields for an op produced by this node."""
        if inputs is None:
            inputs = [self.tensor_arg(node, 0, "input")]
        src = str(node.target) if node.op == "call_module" else node.name
        if node.op == "call_module":
            torch_op = repr(self.module(node)).split("\n")[0]
        else:
            torch_op = _target_name(lowering_key(node, self.modules))
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
        for role, arr in op.params.items():
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            if bad:
                raise CodegenError(
                    f"layer {self.where(node)}: {role} has {bad} non-finite value(s) (NaN or inf). "
                    "Retrain or repair the weights before emitting C."
                )
        self.ops.append(op)
        self.env[node.name] = op.output

    def alias(self, node: fx.Node, src: fx.Node) -> None:
        """The node's result is the same memory as src's (reshape, flatten, dropout, identity)."""
        self.env[node.name] = self.value(src)


def _f32(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().to(torch.float32).cpu().numpy().copy()


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1])) if len(v) == 2 else (int(v[0]), int(v[0]))
    return (int(v), int(v))


def _as_chw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) view of a (C, L) or (C, H, W) activation."""
    if len(shape) == 2:
        return (shape[0], 1, shape[1])
    if len(shape) == 3:
        return shape  # type: ignore[return-value]
    raise UnsupportedConfigError(f"expected a (C, L) or (C, H, W) activation, got shape {shape}")


# ---- convolution and linear -------------------------------------------------------------------
@register_lowering(nn.Conv1d, nn.Conv2d)
def lower_conv(ctx: LowerContext, node: fx.Node) -> None:
    m = ctx.module(node)
    dims = 1 if isinstance(m, nn.Conv1d) else 2
    if m.padding_mode != "zeros":
        raise ctx.fail(node, f"padding_mode='{m.padding_mode}' is not supported", "Use padding_mode='zeros'")
    x = ctx.tensor_arg(node, 0, "input")
    in_shape, out_shape = _as_chw(ctx.shape(x)), _as_chw(ctx.shape(node))
    k = (1, m.kernel_size[0]) if dims == 1 else tuple(m.kernel_size)
    s = (1, m.stride[0]) if dims == 1 else tuple(m.stride)
    d = (1, m.dilation[0]) if dims == 1 else tuple(m.dilation)
    if isinstance(m.padding, str):
        if m.padding == "valid":
            p = (0, 0)
        else:  # "same": torch puts the extra element of an odd total on the bottom/right
            p = tuple(d[i] * (k[i] - 1) // 2 for i in range(2))
    else:
        p = (0, m.padding[0]) if dims == 1 else tuple(m.padding)
    w = _f32(m.weight)
    bias = _f32(m.bias) if m.bias is not None else None
    op = ir.Conv2d(
        **ctx.common(node, [x]),
        params={"weight": w.reshape(w.shape[0], -1), **({"bias": bias} if bias is not None else {})},
        in_shape=in_shape,
        out_shape=out_shape,
        kernel=k,
        stride=s,
        padding=p,
        dilation=d,
        groups=int(m.groups),
        dims=dims,
    )
    ctx.emit(node, op)


@register_lowering(nn.Linear)
def lower_linear(ctx: LowerContext, node: fx.Node) -> None:
    m = ctx.module(node)
    x = ctx.tensor_arg(node, 0, "input")
    shape = ctx.shape(x)
    params = {"weight": _f32(m.weight)}
    if m.bias is not None:
        params["bias"] = _f32(m.bias)
    ctx.emit(
        node,
        ir.Linear(
            **ctx.common(node, [x]),
            params=params,
            in_features=m.in_features,
            out_features=m.out_features,
            rows=prod(shape[:-1]),
        ),
    )


@register_lowering(nn.BatchNorm1d, nn.BatchNorm2d)
def lower_batchnorm(ctx: LowerContext, node: fx.Node) -> None:
    m = ctx.module(node)
    if m.running_mean is None or m.running_var is None:
        raise ctx.fail(
            node,
            "BatchNorm without running statistics (track_running_stats=False) uses batch statistics",
            "Train it with track_running_stats=True",
        )
    mean = m.running_mean.detach().double()
    var = m.running_var.detach().double()
    gamma = m.weight.detach().double() if m.weight is not None else torch.ones_like(mean)
    beta = m.bias.detach().double() if m.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + m.eps)
    shift = beta - mean * scale
    x = ctx.tensor_arg(node, 0, "input")
    shape = ctx.shape(x)
    ctx.emit(
        node,
        ir.ChannelAffine(
            **ctx.common(node, [x]),
            params={"scale": _f32(scale), "shift": _f32(shift)},
            channels=shape[0],
            inner=prod(shape[1:]),
        ),
    )


# ---- activations ----------------------------------------------------------------------------
def _act_of(ctx: LowerContext, node: fx.Node) -> ir.Activation:
    key = lowering_key(node, ctx.modules)
    kind = _ACT_KIND[key]
    alpha = 0.0
    if kind == "leaky_relu":
        if node.op == "call_module":
            alpha = float(ctx.module(node).negative_slope)
        else:
            alpha = float(ctx.arg(node, 1, "negative_slope", 0.01))
    return ir.Activation(kind, alpha)


_ACT_KIND: dict[Any, str] = {
    nn.ReLU: "relu", F.relu: "relu", torch.relu: "relu", torch.Tensor.relu: "relu",
    nn.ReLU6: "relu6", F.relu6: "relu6",
    nn.LeakyReLU: "leaky_relu", F.leaky_relu: "leaky_relu",
    nn.Sigmoid: "sigmoid", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.Tensor.sigmoid: "sigmoid",
    nn.Tanh: "tanh", torch.tanh: "tanh", F.tanh: "tanh", torch.Tensor.tanh: "tanh",
    nn.Hardswish: "hardswish", F.hardswish: "hardswish",
    nn.Hardsigmoid: "hardsigmoid", F.hardsigmoid: "hardsigmoid",
}  # fmt: skip


_INPLACE_ARG = {F.relu: 1, F.relu6: 1, F.leaky_relu: 2, F.hardswish: 1, F.hardsigmoid: 1}


def _is_inplace(ctx: LowerContext, node: fx.Node) -> bool:
    """nn.ReLU(inplace=True), F.relu(x, inplace=True), ...: the activation overwrites its input."""
    if node.op == "call_module":
        return bool(getattr(ctx.module(node), "inplace", False))
    index = _INPLACE_ARG.get(node.target)
    return index is not None and bool(ctx.arg(node, index, "inplace", False))


@register_lowering(*dict.fromkeys(_ACT_KIND))
def lower_activation(ctx: LowerContext, node: fx.Node) -> None:
    x = ctx.tensor_arg(node, 0, "input")
    old = ctx.value(x)
    ctx.emit(node, ir.Act(**ctx.common(node, [x]), numel=ctx.numel(x), act=_act_of(ctx, node)))
    if _is_inplace(ctx, node):
        # torch mutated x (and every view of it): later users of x read the activated values.
        for name, value in list(ctx.env.items()):
            if value == old:
                ctx.env[name] = ctx.env[node.name]


# ---- layout-preserving ops: no code, the result is the same memory ------------------------------
@register_lowering(
    nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout,
    F.dropout, torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze,
    torch.Tensor.view, torch.Tensor.reshape, torch.Tensor.flatten, torch.Tensor.squeeze,
    torch.Tensor.unsqueeze, torch.Tensor.contiguous,
)  # fmt: skip
def lower_view(ctx: LowerContext, node: fx.Node) -> None:
    ctx.alias(node, ctx.tensor_arg(node, 0, "input"))


# ---- elementwise binary ops and concatenation -------------------------------------------------
_BINARY = {operator.add: "add", torch.add: "add", torch.Tensor.add: "add",
           operator.mul: "mul", torch.mul: "mul", torch.Tensor.mul: "mul"}  # fmt: skip


@register_lowering(*_BINARY)
def lower_binary(ctx: LowerContext, node: fx.Node) -> None:
    a, b = ctx.arg(node, 0, "input"), ctx.arg(node, 1, "other")
    if not all(isinstance(t, fx.Node) and _meta(t) is not None for t in (a, b)):
        raise ctx.fail(
            node,
            f"{_BINARY[lowering_key(node, ctx.modules)]} with a constant operand ({a!r}, {b!r}) is not supported",
            "Only elementwise add/mul of two tensors of equal shape are emitted",
        )
    if ctx.shape(a) != ctx.shape(b):
        raise ctx.fail(
            node,
            f"operands have shapes {ctx.shape(a)} and {ctx.shape(b)}; broadcasting is not supported",
            "Make both operands the same shape",
        )
    if node.kwargs.get("alpha", 1) != 1:
        raise ctx.fail(node, "torch.add with alpha != 1 is not supported", "Scale the operand explicitly")
    mode = _BINARY[lowering_key(node, ctx.modules)]
    ctx.emit(node, ir.Binary(**ctx.common(node, [a, b]), mode=mode, numel=ctx.numel(node)))


@register_lowering(torch.cat)
def lower_cat(ctx: LowerContext, node: fx.Node) -> None:
    parts = ctx.arg(node, 0, "tensors")
    dim = int(ctx.arg(node, 1, "dim", 0))
    if not isinstance(parts, (list, tuple)) or not all(isinstance(p, fx.Node) and _meta(p) for p in parts):
        raise ctx.fail(node, "torch.cat of non-tensor operands", "Concatenate tensors computed by the model")
    full = _meta(node).shape
    dim = dim % len(full)
    if dim == 0:
        raise ctx.fail(node, "torch.cat along the batch dimension", "Concatenate along dim=1 (channels)")
    outer = prod(int(d) for d in full[1:dim])
    sizes = tuple(ctx.numel(p) // outer for p in parts)
    ctx.emit(node, ir.Concat(**ctx.common(node, list(parts)), sizes=sizes, outer=outer))


# ---- pooling ----------------------------------------------------------------------------------
def _pool(ctx: LowerContext, node: fx.Node, mode: str, dims: int, kernel: Any, stride: Any, padding: Any,
          dilation: Any = 1, ceil_mode: bool = False, count_include_pad: bool = True,
          divisor: int | None = None) -> None:  # fmt: skip
    x = ctx.tensor_arg(node, 0, "input")
    in_shape, out_shape = _as_chw(ctx.shape(x)), _as_chw(ctx.shape(node))
    if stride is None or stride == [] or stride == ():
        stride = kernel

    def two(v: Any) -> tuple[int, int]:
        return (1, _pair(v)[0]) if dims == 1 else _pair(v)

    ctx.emit(
        node,
        ir.Pool2d(
            **ctx.common(node, [x]),
            mode=mode,
            in_shape=in_shape,
            out_shape=out_shape,
            kernel=two(kernel),
            stride=two(stride),
            padding=(0, _pair(padding)[0]) if dims == 1 else _pair(padding),
            dilation=two(dilation),
            count_include_pad=bool(count_include_pad),
            divisor=int(divisor or 0),
        ),
    )


@register_lowering(nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)
def lower_pool_module(ctx: LowerContext, node: fx.Node) -> None:
    m = ctx.module(node)
    dims = 1 if isinstance(m, (nn.MaxPool1d, nn.AvgPool1d)) else 2
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
        if m.return_indices:
            raise ctx.fail(node, "return_indices=True is not supported", "Use return_indices=False")
        _pool(ctx, node, "max", dims, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
    else:
        _pool(ctx, node, "avg", dims, m.kernel_size, m.stride, m.padding, 1, m.ceil_mode,
              m.count_include_pad, getattr(m, "divisor_override", None))  # fmt: skip


@register_lowering(F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d)
def lower_pool_function(ctx: LowerContext, node: fx.Node) -> None:
    f = node.target
    dims = 1 if f in (F.max_pool1d, F.avg_pool1d) else 2
    k = ctx.arg(node, 1, "kernel_size")
    s = ctx.arg(node, 2, "stride", None)
    p = ctx.arg(node, 3, "padding", 0)
    if f in (F.max_pool1d, F.max_pool2d):
        if ctx.arg(node, 6, "return_indices", False):
            raise ctx.fail(node, "return_indices=True is not supported", "Use return_indices=False")
        _pool(ctx, node, "max", dims, k, s, p, ctx.arg(node, 4, "dilation", 1), ctx.arg(node, 5, "ceil_mode", False))
    else:
        _pool(ctx, node, "avg", dims, k, s, p, 1, ctx.arg(node, 4, "ceil_mode", False),
              ctx.arg(node, 5, "count_include_pad", True), ctx.arg(node, 6, "divisor_override", None))  # fmt: skip


@register_lowering(nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d)
def lower_adaptive_avg(ctx: LowerContext, node: fx.Node) -> None:
    x = ctx.tensor_arg(node, 0, "input")
    c, h, w = _as_chw(ctx.shape(x))
    _, oh, ow = _as_chw(ctx.shape(node))
    if h % oh or w % ow:
        raise ctx.fail(
            node,
            f"adaptive average pooling from {h}x{w} to {oh}x{ow} has uneven windows",
            "Use an output size that divides the input size (or 1)",
        )
    dims = 1 if len(ctx.shape(x)) == 2 else 2
    k = (h // oh, w // ow)
    _pool(ctx, node, "avg", 2, k, k, 0)
    del dims


@register_lowering(torch.mean, torch.Tensor.mean)
def lower_mean(ctx: LowerContext, node: fx.Node) -> None:
    x = ctx.tensor_arg(node, 0, "input")
    full = len(_meta(x).shape)
    dim = ctx.arg(node, 1, "dim", None)
    dims = sorted({int(d) % full for d in (dim if isinstance(dim, (list, tuple)) else [dim])}) if dim is not None else []
    if not dims or dims[0] == 0 or dims != list(range(dims[0], full)) or dims[0] < 2:
        raise ctx.fail(
            node,
            f"mean over dims {dim} is not supported",
            "Only a mean over all trailing spatial dims (e.g. x.mean((2, 3)) on NCHW) is emitted",
        )
    shape = ctx.shape(x)
    c_outer = prod(shape[: dims[0] - 1])
    inner = prod(shape[dims[0] - 1 :])
    op = ir.Pool2d(
        **ctx.common(node, [x]),
        mode="avg",
        in_shape=(c_outer, 1, inner),
        out_shape=(c_outer, 1, 1),
        kernel=(1, inner),
        stride=(1, inner),
    )
    ctx.emit(node, op)


# ---- softmax and padding -------------------------------------------------------------------
@register_lowering(nn.Softmax, nn.LogSoftmax, F.softmax, F.log_softmax, torch.softmax, torch.log_softmax,
                   torch.Tensor.softmax, torch.Tensor.log_softmax)  # fmt: skip
def lower_softmax(ctx: LowerContext, node: fx.Node) -> None:
    x = ctx.tensor_arg(node, 0, "input")
    key = lowering_key(node, ctx.modules)
    log_ = key in (nn.LogSoftmax, F.log_softmax, torch.log_softmax, torch.Tensor.log_softmax)
    dim = ctx.module(node).dim if node.op == "call_module" else ctx.arg(node, 1, "dim", None)
    full = tuple(int(d) for d in _meta(x).shape)
    if dim is None:
        dim = 0 if len(full) in (0, 1, 3) else 1
    dim = int(dim) % len(full)
    if dim == 0 or prod(full[dim + 1 :]) != 1:
        raise ctx.fail(node, f"softmax over dim {dim} of a {full} tensor", "Softmax is emitted over the last dim")
    ctx.emit(
        node,
        ir.Softmax(**ctx.common(node, [x]), rows=prod(full[1:dim]), cols=full[dim], log=log_),
    )


def _pad(ctx: LowerContext, node: fx.Node, pads: tuple[int, ...], value: float) -> None:
    x = ctx.tensor_arg(node, 0, "input")
    if len(pads) not in (2, 4) or any(p < 0 for p in pads):
        raise ctx.fail(node, f"padding {pads}", "Only non-negative constant padding of the last 1 or 2 dims")
    shape, out = ctx.shape(x), ctx.shape(node)

    def chw(s: tuple[int, ...]) -> tuple[int, int, int]:
        return (prod(s[:-2]), s[-2], s[-1]) if len(s) >= 2 else (1, 1, s[-1])

    top = pads[2] if len(pads) == 4 else 0
    if len(pads) == 2 and len(shape) >= 2:
        shape, out = shape[:-1] + (1,) + shape[-1:], out[:-1] + (1,) + out[-1:]
    ctx.emit(
        node,
        ir.Pad2d(**ctx.common(node, [x]), in_shape=chw(shape), out_shape=chw(out), padding=(top, pads[0]), value=float(value)),
    )


@register_lowering(nn.ZeroPad1d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d)
def lower_pad_module(ctx: LowerContext, node: fx.Node) -> None:
    m = ctx.module(node)
    _pad(ctx, node, tuple(int(p) for p in m.padding), float(getattr(m, "value", 0.0)))


@register_lowering(F.pad)
def lower_pad_function(ctx: LowerContext, node: fx.Node) -> None:
    mode = ctx.arg(node, 2, "mode", "constant")
    if mode != "constant":
        raise ctx.fail(node, f"F.pad mode '{mode}'", "Only mode='constant' is emitted")
    value = ctx.arg(node, 3, "value", 0.0) or 0.0
    _pad(ctx, node, tuple(int(p) for p in ctx.arg(node, 1, "pad")), float(value))


# ---- the driver -----------------------------------------------------------------------------
def _owner_class(node: fx.Node) -> str:
    """The qualified class of the innermost user module (not torch.nn's own) whose forward() made ``node``."""
    stack = node.meta.get("nn_module_stack") or {}
    for entry in reversed(list(stack.values())):
        cls = entry[1] if isinstance(entry, tuple) and len(entry) > 1 else None
        if isinstance(cls, type):
            if cls.__module__.startswith("torch.nn.modules"):
                return ""  # torch.nn modules are lowered (or listed) as such
            return f"{cls.__module__}.{cls.__qualname__}"
    return ""


def check_supported(gm: fx.GraphModule) -> None:
    """Raises ONE UnsupportedOpError listing every node that has no lowering (grouped by op in its message)."""
    modules = dict(gm.named_modules())
    bad, owners, consumers = [], [], []
    for node in gm.graph.nodes:
        if node.op == "get_attr" and _meta(node) is not None:
            bad.append((node.name, f"constant tensor self.{node.target}", _module_path(node)))
            users = [u for u in node.users if u.op in ("call_module", "call_function", "call_method")]
            owners.append(next((o for o in map(_owner_class, users) if o), _owner_class(node)))
            consumers.append([_target_name(lowering_key(u, modules)) for u in users])
        if node.op not in ("call_module", "call_function", "call_method"):
            continue
        if "tensor_meta" not in node.meta:
            continue  # shape arithmetic (x.size(0), getattr) only feeds reshape arguments
        key = lowering_key(node, modules)
        if key not in LOWERINGS:
            bad.append((node.name, _target_name(key), _module_path(node)))
            owners.append(_owner_class(node))
            consumers.append([])
    if bad:
        raise UnsupportedOpError(bad, supported_ops(), owners, consumers)


def lower(gm: fx.GraphModule, env_out: dict[str, str] | None = None) -> ir.Graph:
    """Lowers a traced, shape-propagated GraphModule to the IR and runs the IR passes.

    ``env_out``, if given, receives fx node name -> IR value name (views map to their input's value).
    """
    check_supported(gm)
    ctx = LowerContext(gm)
    graph_in = graph_out = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            graph_in = ctx.value_names("input")
            ctx.values[graph_in] = ir.Value(graph_in, ctx.shape(node))
            ctx.env[node.name] = graph_in
        elif node.op == "output":
            res = node.args[0]
            if not isinstance(res, fx.Node) or _meta(res) is None:
                raise CodegenError(
                    "the model must return one tensor; it returns "
                    f"{type(res).__name__}. Wrap it so forward() returns a single tensor."
                )
            graph_out = ctx.value(res)
        elif node.op in ("call_module", "call_function", "call_method") and "tensor_meta" in node.meta:
            LOWERINGS[lowering_key(node, ctx.modules)](ctx, node)
    assert graph_in is not None and graph_out is not None
    if env_out is not None:
        env_out.update(ctx.env)
    g = ir.Graph(ctx.values, ctx.ops, graph_in, graph_out)
    if g.output == g.input:  # the model returns its input (or a view of it)
        out = ctx.value_names("v_output")
        g.values[out] = ir.Value(out, g.values[g.input].shape)
        g.ops.append(ir.Copy(name=ctx.layer_names("copy"), source="output", torch_op="copy",
                             inputs=[g.input], output=out, numel=g.values[out].numel))  # fmt: skip
        g.output = out
    for p in PASSES:
        p(g)
    log.debug("lowered to %d ops", len(g.ops))
    return g


# ---- IR passes ---------------------------------------------------------------------------------
def _single_consumer(g: ir.Graph, value: str) -> ir.Op | None:
    users = g.consumers(value)
    return users[0] if len(users) == 1 and value != g.output else None


def remove_dead_ops(g: ir.Graph) -> None:
    """Drops ops whose result is never used."""
    changed = True
    while changed:
        used = {v for op in g.ops for v in op.inputs} | {g.output}
        keep = [op for op in g.ops if op.output in used]
        changed = len(keep) != len(g.ops)
        g.ops[:] = keep


def fold_batchnorm(g: ir.Graph) -> None:
    """BatchNorm right after a conv/linear (and used only there) is folded into its weights."""
    for bn in [op for op in g.ops if isinstance(op, ir.ChannelAffine)]:
        prod_op = g.producer(bn.inputs[0])
        if not isinstance(prod_op, (ir.Conv2d, ir.Linear)) or prod_op.act.kind != "none":
            continue
        if _single_consumer(g, prod_op.output) is not bn:
            continue
        if isinstance(prod_op, ir.Linear) and not (bn.channels == prod_op.out_features and bn.inner == 1):
            continue
        if isinstance(prod_op, ir.Conv2d) and bn.channels != prod_op.out_shape[0]:
            continue
        scale, shift = bn.params["scale"].astype(np.float64), bn.params["shift"].astype(np.float64)
        w = prod_op.params["weight"].astype(np.float64) * scale[:, None]
        b = prod_op.params.get("bias")
        b = (b.astype(np.float64) if b is not None else np.zeros_like(scale)) * scale + shift
        prod_op.params["weight"] = w.astype(np.float32)
        prod_op.params["bias"] = b.astype(np.float32)
        prod_op.torch_op += f" + {bn.source} (BatchNorm folded)"
        prod_op.output = bn.output
        g.ops.remove(bn)


def fuse_activations(g: ir.Graph) -> None:
    """A standalone activation whose input has no other use is fused into the producing op."""
    for act in [op for op in g.ops if isinstance(op, ir.Act)]:
        prod_op = g.producer(act.inputs[0])
        if not isinstance(prod_op, (ir.Conv2d, ir.Linear, ir.ChannelAffine, ir.Binary)):
            continue
        if prod_op.act.kind != "none" or _single_consumer(g, prod_op.output) is not act:
            continue
        prod_op.act = act.act
        prod_op.torch_op += f" + {act.source} ({act.act.kind} fused)"
        prod_op.output = act.output
        g.ops.remove(act)


PASSES: list[Callable[[ir.Graph], None]] = [remove_dead_ops, fold_batchnorm, fuse_activations, remove_dead_ops]
