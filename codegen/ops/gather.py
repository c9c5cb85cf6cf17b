"""Data movement: tensor indexing (``x[:, a:b]``, ``x[:, :, :-p]``, ``y[:, -1]``, steps, ``None``,
``...``), ``chunk``/``split``/``unbind`` (tuple outputs), ``transpose``/``permute``/``movedim``,
``narrow``/``select``, ``expand``/``expand_as`` and ``torch.stack``; and ``operator.getitem`` on the
tuple-valued nodes of any family (``ctx.tuples``).

Prepare in Python, compute in C: each op is run once in PyTorch on an index tensor (``arange``) with a
batch of 2; the result is the input index of every output element. It must be an affine function of
the output coordinates (always true for these ops) and keep the batch dimension first (checked: the
second sample must read the second input sample). The map is reduced to an offset and at most four
(count, stride) pairs (size-1 dims dropped, contiguous dims merged) that ``sc_gather`` walks; a map
that is the identity emits no code (the result aliases the input).

Float kernel: runtime_c/sc_gather.h; template templates/ops/gather.j2.
Integer kernel: runtime_c/sc_gather.h (int8 section); template templates/ops_int8/gather.j2. Copies
keep their input's scale and zero point.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from math import prod
from typing import Any, ClassVar

import numpy as np
import torch
import torch.fx as fx

from codegen import integer, ir
from codegen.lowering import LowerContext, lowering_key, register_lowering, target_name, tensor_meta
from codegen.ops.eltwise import Concat

GATHER_DIMS = 4  # (count, stride) pairs of sc_gather


@dataclass
class Gather(ir.Op):
    """out[i0][i1][i2][i3] = in[offset + i0*s0 + i1*s1 + i2*s2 + i3*s3], out contiguous."""

    offset: int = 0
    counts: tuple[int, ...] = (1, 1, 1, 1)
    strides: tuple[int, ...] = (0, 0, 0, 0)

    kind: ClassVar[str] = "gather"
    template: ClassVar[str] = "gather.j2"
    runtime: ClassVar[tuple[str, ...]] = ("sc_gather.h",)

    def describe(self) -> str:
        return "gather"

    def source_index(self) -> np.ndarray:
        """The input index of every output element (the numpy form of sc_gather)."""
        idx = np.full(self.counts, self.offset, dtype=np.int64)
        for k, (n, s) in enumerate(zip(self.counts, self.strides)):
            shape = [1] * len(self.counts)
            shape[k] = n
            idx = idx + np.arange(n, dtype=np.int64).reshape(shape) * s
        return idx.reshape(-1)


def _no_nodes(ctx: LowerContext, node: fx.Node, values: Any) -> None:
    """Refuses arguments computed at run time (the map is prepared once, in Python)."""
    flat: list[Any] = []

    def walk(v: Any) -> None:
        if isinstance(v, (list, tuple)):
            for e in v:
                walk(e)
        elif isinstance(v, slice):
            walk([v.start, v.stop, v.step])
        elif isinstance(v, dict):
            walk(list(v.values()))
        else:
            flat.append(v)

    walk(values)
    for v in flat:
        if isinstance(v, fx.Node):
            what = "a tensor index (advanced indexing)" if tensor_meta(v) is not None else "a value computed from x.size()"
            raise ctx.fail(
                node, f"its arguments hold {what} ('{v.name}'); only constant indices, slices and dims are emitted",
                "Use Python int constants (e.g. x[:, 2:5] or x.narrow(1, 2, 3)) in the model's forward",
            )  # fmt: skip


def index_maps(ctx: LowerContext, node: fx.Node, x: fx.Node, fn: Any) -> list[np.ndarray]:
    """Runs ``fn`` on an index tensor of x's shape with a batch of 2; returns, per result tensor, the
    input index (within one sample) of every element of one sample's output. Refuses results that
    move data across samples."""
    full = tuple(int(d) for d in tensor_meta(x).shape)
    per = prod(full[1:])
    src = torch.arange(2 * per, dtype=torch.int64).reshape((2, *full[1:]))
    try:
        res = fn(src)
    except (RuntimeError, IndexError, ValueError, TypeError) as exc:
        raise ctx.fail(node, f"it does not keep the batch dimension first ({exc})",
                       "Keep dim 0 (the batch) untouched: index, split and permute the other dims") from exc  # fmt: skip
    outs = list(res) if isinstance(res, (list, tuple)) else [res]
    maps = []
    for r in outs:
        if r.dim() == 0 or r.shape[0] != 2 or not torch.equal(r[1] - r[0], torch.full_like(r[0], per)):
            raise ctx.fail(
                node, "it moves data across the batch dimension (the C runs one sample at a time)",
                "Keep dim 0 (the batch) first and untouched: index, split and permute the other dims",
            )  # fmt: skip
        maps.append(r[0].numpy().astype(np.int64))
    return maps


def affine(idx: np.ndarray) -> tuple[int, list[tuple[int, int]]] | None:
    """(offset, [(count, stride), ...]) with contiguous dims merged and size-1 dims dropped, or None
    if ``idx`` is not an affine function of its coordinates."""
    if idx.size == 0:
        return None
    base = int(idx.reshape(-1)[0])
    dims = []
    recon = np.full(idx.shape, base, dtype=np.int64)
    for k, n in enumerate(idx.shape):
        if n == 1:
            continue
        unit = [0] * idx.ndim
        unit[k] = 1
        s = int(idx[tuple(unit)]) - base
        shape = [1] * idx.ndim
        shape[k] = n
        recon = recon + np.arange(n, dtype=np.int64).reshape(shape) * s
        dims.append((int(n), s))
    if not np.array_equal(recon, idx):
        return None
    merged: list[tuple[int, int]] = []
    for n, s in dims:
        if merged and merged[-1][1] == n * s:
            merged[-1] = (merged[-1][0] * n, s)
        else:
            merged.append((n, s))
    return base, merged


def emit_gather(ctx: LowerContext, node: fx.Node, x: fx.Node, idx: np.ndarray, piece: int | None = None) -> str:
    """Emits one gather of x (or aliases x when ``idx`` reads it whole, in order); returns the value name."""
    numel_in = ctx.numel(x)
    a = affine(idx)
    if a is None:  # pragma: no cover - basic indexing, views and permutations are affine
        raise ctx.fail(node, "its element map is not a strided copy", "Use slices, permute or expand")
    offset, dims = a
    if idx.size == numel_in and offset == 0 and dims in ([(numel_in, 1)], []):
        return ctx.value(x)
    if len(dims) > GATHER_DIMS:
        raise ctx.fail(
            node, f"it reads its input with {len(dims)} independent strides (at most {GATHER_DIMS} are emitted)",
            "Split the permutation in two steps (two transposes) or make some dims contiguous first",
        )  # fmt: skip
    dims = [(1, 0)] * (GATHER_DIMS - len(dims)) + dims
    shape = tuple(int(d) for d in idx.shape)
    suffix = "" if piece is None else f"_{piece}"
    out = ctx.value_names(f"v_{node.name}{suffix}")
    ctx.values[out] = ir.Value(out, shape)
    op = Gather(
        name=ctx.layer_names(node.name + suffix), source=node.name + suffix,
        torch_op=target_name(lowering_key(node, ctx.modules)), inputs=[ctx.value(x)], output=out,
        offset=offset, counts=tuple(n for n, _ in dims), strides=tuple(s for _, s in dims),
    )  # fmt: skip
    ctx.emit(node, op)  # checks the op; sets env[node.name] (a tuple node has no single value: removed)
    if piece is not None:
        ctx.env.pop(node.name, None)
    return out


def _call(node: fx.Node, t: torch.Tensor) -> Any:
    """The node's own op applied to t in place of its first argument."""
    if node.op == "call_method":
        return getattr(t, str(node.target))(*node.args[1:], **node.kwargs)
    return node.target(t, *node.args[1:], **node.kwargs)


def _lower_movement(ctx: LowerContext, node: fx.Node, fn: Any) -> None:
    x = ctx.tensor_arg(node, 0, "input")
    _no_nodes(ctx, node, (node.args[1:], node.kwargs))
    maps = index_maps(ctx, node, x, fn)
    if tensor_meta(node) is not None:  # one tensor
        ctx.env[node.name] = emit_gather(ctx, node, x, maps[0])
    else:  # a tuple (chunk, split, unbind): one value per piece, picked by operator.getitem
        ctx.tuples[node.name] = [emit_gather(ctx, node, x, m, piece=i) for i, m in enumerate(maps)]


_FIELDS = {"values": 0, "indices": 1}  # torch.return_types of max/min(dim)


@register_lowering(getattr)
def lower_getattr(ctx: LowerContext, node: fx.Node) -> None:
    """``torch.max(x, dim).values``: a named field of a tuple result."""
    src, attr = node.args[0], node.args[1]
    if not (isinstance(src, fx.Node) and src.name in ctx.tuples and attr in _FIELDS):
        raise ctx.fail(node, f"attribute {attr!r} of a tensor is not supported", "Use tensor ops")
    _pick(ctx, node, src, _FIELDS[attr])


def _pick(ctx: LowerContext, node: fx.Node, src: fx.Node, index: Any) -> None:
    if not isinstance(index, int):
        raise ctx.fail(node, f"it indexes a tuple result with {index!r}", "Index tuple results with an int")
    item = ctx.tuples[src.name][index]
    if item is None and not node.users:
        return  # `values, _ = torch.max(x, dim)`: the indices are unpacked but never used
    if item is None:
        raise ctx.fail(
            node, f"it uses result {index} of '{src.name}', which is not computed (e.g. the indices of "
            "torch.max(x, dim))", "Use the values only (torch.amax(x, dim)) or compute the indices on the host",
        )  # fmt: skip
    if isinstance(item, str):
        ctx.env[node.name] = item  # alias
    elif isinstance(item, list):
        ctx.tuples[node.name] = item
    else:  # an item that lowers itself when used (the LSTM's h_n / c_n, codegen/ops/recurrent.py)
        item.lower_item(ctx, node)


@register_lowering(operator.getitem)
def lower_getitem(ctx: LowerContext, node: fx.Node) -> None:
    src, index = node.args[0], node.args[1]
    if isinstance(src, fx.Node) and src.name in ctx.tuples:
        _pick(ctx, node, src, index)
        return
    if not isinstance(src, fx.Node) or tensor_meta(src) is None:
        raise ctx.fail(node, f"it indexes {src!r}, which is not a tensor computed from the model input",
                       "Index tensors computed by the model")  # fmt: skip
    _no_nodes(ctx, node, index)
    _lower_movement(ctx, node, lambda t: t[index])


_MOVEMENT = (
    torch.transpose, torch.Tensor.transpose, torch.permute, torch.Tensor.permute, torch.movedim,
    torch.Tensor.movedim, torch.swapaxes, torch.Tensor.swapaxes, torch.swapdims, torch.Tensor.swapdims,
    torch.narrow, torch.Tensor.narrow, torch.select, torch.Tensor.select, torch.chunk, torch.Tensor.chunk,
    torch.split, torch.Tensor.split, torch.unbind, torch.Tensor.unbind, torch.tensor_split,
    torch.Tensor.tensor_split,
)  # fmt: skip


@register_lowering(*_MOVEMENT)
def lower_movement(ctx: LowerContext, node: fx.Node) -> None:
    _lower_movement(ctx, node, lambda t: _call(node, t))


@register_lowering(torch.Tensor.expand, torch.Tensor.expand_as, torch.broadcast_to, torch.Tensor.broadcast_to)
def lower_expand(ctx: LowerContext, node: fx.Node) -> None:
    x = ctx.tensor_arg(node, 0, "input")
    out = tuple(int(d) for d in tensor_meta(node).shape)
    if len(out) and out[0] != 1:
        raise ctx.fail(node, f"it expands the batch dimension to {out[0]}", "Keep the batch dimension 1")
    src = tuple(int(d) for d in tensor_meta(x).shape)
    if len(src) != len(out):  # expand adds leading dims: the batch would move
        raise ctx.fail(node, f"it expands a {src} tensor to {out} (new leading dims)",
                       "Give the operand the same number of dims first (x.view(1, C, 1, 1))")  # fmt: skip
    maps = index_maps(ctx, node, x, lambda t: t.expand(t.shape[0], *out[1:]))
    ctx.env[node.name] = emit_gather(ctx, node, x, maps[0])


@register_lowering(torch.stack)
def lower_stack(ctx: LowerContext, node: fx.Node) -> None:
    parts = ctx.arg(node, 0, "tensors")
    if not isinstance(parts, (list, tuple)) or not all(isinstance(p, fx.Node) and tensor_meta(p) for p in parts):
        raise ctx.fail(node, "torch.stack of non-tensor operands", "Stack tensors computed by the model")
    full = tuple(int(d) for d in tensor_meta(node).shape)
    dim = int(ctx.arg(node, 1, "dim", 0)) % len(full)
    if dim == 0:
        raise ctx.fail(node, "torch.stack along the batch dimension", "Stack along dim=1 or later")
    outer = prod(full[1:dim])
    sizes = tuple(ctx.numel(p) // outer for p in parts)
    ctx.emit(node, Concat(**ctx.common(node, list(parts)), sizes=sizes, outer=outer))


# ---- int8 ------------------------------------------------------------------------------------------


@integer.register_int8(Gather)
class GatherInt8(integer.Int8Handler):
    """A copy: the output keeps the input's scale and zero point."""

    kind = "gather"
    template = "gather.j2"
    keeps_qparams = True
    runtime = ("sc_gather.h",)

    def quantize(self, op: Gather, ctx: integer.Int8Context, qo: integer.QOp) -> None:
        qo.scalars["zp"] = ctx.qin(op).zero_point

    def reference(self, qo: integer.QOp, ins: list[np.ndarray]) -> np.ndarray:
        return ins[0][qo.op.source_index()]  # type: ignore[attr-defined]
