"""Structured channel pruning with shape surgery (issue 19): remove whole channels of a model.

At a tight byte budget a network with few weights per channel (a depthwise-separable CNN) spends most of
its bytes on per-channel costs -- biases (folded BatchNorm), quantization scales, one weight per output row
-- and unstructured pruning has to take its pointwise convolutions down to a few weights per row.
Removing whole channels removes their per-channel costs, and the weights of a layer between two pruned
channel sets shrink quadratically.

:func:`channel_groups` finds, with torch.fx, the channels that can be removed, conservatively.  A
*channel group* is the output channels of a Conv1d/Conv2d (``groups == 1``) or Linear -- the *producer*
-- whose output reaches, through per-channel operations only (BatchNorm, element-wise activations,
dropout, pooling, a depthwise convolution with ``groups == in_channels == out_channels`` and its
BatchNorm/activation, a Flatten of a ``[N, C, 1, ...]`` tensor after a global pool), nothing but the
inputs of convolutions (``groups == 1``) and Linear layers on ``[N, C]`` tensors -- the *consumers*.
Anything else on the way (add, concat, mul, view/reshape, a grouped convolution other than depthwise, the
model output, a module called twice) makes the group unprunable; :func:`channel_groups` says why.

:func:`channel_scores` ranks a group's channels by their contribution to the consumers (mean absolute
activation reaching them times the norm of the consumers' weights on that channel, on a few batches), and
:func:`prune_channels_` keeps the given channels of each group: the producer, the per-channel modules and
the consumers are replaced in place by modules of the same class with fewer channels (same dtype, device,
``requires_grad``; the kept weights copied).  No new op appears, so the model emits with codegen as before.

Example::

    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    >>> groups, why = channel_groups(net, torch.zeros(1, 1, 6, 6))
    >>> [(g.producer, g.channels, g.followers, g.consumers) for g in groups], why
    ([('0', 8, ['1'], ['3'])], {'3': 'its output is the model output'})
    >>> prune_channels_(net, {"0": [0, 2, 5]}, groups)
    [('0', 8, 3)]
    >>> net(torch.zeros(2, 1, 6, 6)).shape, net[1].num_features, net[3].in_channels
    (torch.Size([2, 4, 4, 4]), 3, 3)
"""

from __future__ import annotations

import copy
import logging
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .pruning import replace_module
from .training import split_batch

logger = logging.getLogger(__name__)

_CONV = (nn.Conv1d, nn.Conv2d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
# element-wise, per-element modules: a channel in is the same channel out
_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid,
                nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Mish, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)
_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
         nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
_ELEMENTWISE_FN = {F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.hardswish,
                   F.hardsigmoid, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.hardtanh, F.mish, F.dropout,
                   F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d,
                   F.adaptive_avg_pool2d}
_ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "contiguous"}


@dataclass
class ChannelGroup:
    """The output channels of ``producer`` (``channels`` of them): removing channel c removes it from the
    per-channel modules ``followers`` (BatchNorm, depthwise convolutions) and the input channel c of every
    ``consumer`` (Conv / Linear)."""

    producer: str
    channels: int
    followers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)


class _Unprunable(Exception):
    pass


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, _CONV) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _trace(model: nn.Module, example: torch.Tensor) -> fx.GraphModule:
    from torch.fx.passes.shape_prop import ShapeProp

    gm = fx.symbolic_trace(model)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example)
    finally:
        for m, t in modes:
            m.training = t
    return gm


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def channel_groups(model: nn.Module, example: torch.Tensor) -> tuple[list[ChannelGroup], dict[str, str]]:
    """The channel groups of ``model`` (traced with torch.fx, shapes from ``example``) that can be pruned,
    and for every other conv/linear producer why it cannot (``{layer: reason}``).  A model fx cannot trace
    has no groups (the reason is under ``"*"``)."""
    try:
        gm = _trace(model, example)
    except Exception as exc:  # noqa: BLE001 - any tracing failure: nothing is prunable, say why
        return [], {"*": f"torch.fx cannot trace the model ({type(exc).__name__}: {exc})"}
    mods = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[n.target] = calls.get(n.target, 0) + 1
    groups: list[ChannelGroup] = []
    why: dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        m = mods[node.target]
        if not (isinstance(m, nn.Linear) or (isinstance(m, _CONV) and m.groups == 1)):
            continue
        shape = _shape(node)
        channels = m.out_features if isinstance(m, nn.Linear) else m.out_channels
        try:
            if calls[node.target] > 1:
                raise _Unprunable("the module is called more than once")
            if shape is None or len(shape) < 2 or shape[1] != channels or (isinstance(m, nn.Linear) and len(shape) != 2):
                raise _Unprunable(f"its output {shape} does not hold its channels in dimension 1")
            g = ChannelGroup(node.target, channels)
            _follow(node, channels, g, mods, calls)
        except _Unprunable as exc:
            why[node.target] = str(exc)
            continue
        if not g.consumers:
            why[node.target] = "its channels reach no conv/linear input"
            continue
        groups.append(g)
    return groups, why


def _follow(node: fx.Node, channels: int, g: ChannelGroup, mods: Mapping[str, nn.Module],
            calls: Mapping[str, int]) -> None:
    """Walk every use of ``node`` (a tensor whose dimension 1 is the group's channels) to the consumers."""
    for user in node.users:
        if user.op == "output":
            raise _Unprunable("its output is the model output")
        if user.op == "call_module":
            m = mods[user.target]
            if calls[user.target] > 1:
                raise _Unprunable(f"{user.target} ({type(m).__name__}) is called more than once")
            if user.args[0] is not node or len(user.args) + len(user.kwargs) != 1:
                raise _Unprunable(f"{user.target} ({type(m).__name__}) takes it as more than its one input")
            if isinstance(m, _BN) and m.num_features == channels:
                g.followers.append(user.target)
                _follow(user, channels, g, mods, calls)
            elif _is_depthwise(m) and m.in_channels == channels:
                g.followers.append(user.target)
                _follow(user, channels, g, mods, calls)
            elif isinstance(m, _ELEMENTWISE + _POOL) or (isinstance(m, nn.PReLU) and m.num_parameters == 1):
                _follow(user, channels, g, mods, calls)
            elif isinstance(m, nn.Flatten):
                _flatten(node, user, m.start_dim, m.end_dim, channels, g, mods, calls)
            elif isinstance(m, _CONV) and m.groups == 1 and m.in_channels == channels:
                g.consumers.append(user.target)
            elif isinstance(m, nn.Linear) and m.in_features == channels and len(_shape(node) or ()) == 2:
                g.consumers.append(user.target)
            else:
                raise _Unprunable(f"{user.target} ({type(m).__name__}) uses its channels in a way not understood")
        elif user.op == "call_function" and user.target in _ELEMENTWISE_FN and _only_first(user, node):
            _follow(user, channels, g, mods, calls)
        elif user.op == "call_method" and user.target in _ELEMENTWISE_METHODS and _only_first(user, node):
            _follow(user, channels, g, mods, calls)
        elif user.op == "call_function" and user.target is torch.flatten and _only_first(user, node):
            start = user.args[1] if len(user.args) > 1 else user.kwargs.get("start_dim", 0)
            end = user.args[2] if len(user.args) > 2 else user.kwargs.get("end_dim", -1)
            _flatten(node, user, start, end, channels, g, mods, calls)
        else:
            name = getattr(user.target, "__name__", str(user.target))
            if user.target in (operator.add, torch.add, torch.cat, torch.concat, operator.mul, torch.mul):
                raise _Unprunable(f"{name} combines it with another tensor ({user.name})")
            raise _Unprunable(f"{user.op} {name} ({user.name}) is not a per-channel operation")


def _only_first(user: fx.Node, node: fx.Node) -> bool:
    """``node`` is ``user``'s first argument and no other argument is a graph value."""
    rest = list(user.args[1:]) + list(user.kwargs.values())
    return bool(user.args) and user.args[0] is node and not any(isinstance(a, fx.Node) for a in rest)


def _flatten(node: fx.Node, user: fx.Node, start: int, end: int, channels: int, g: ChannelGroup,
             mods: Mapping[str, nn.Module], calls: Mapping[str, int]) -> None:
    shape = _shape(node) or ()
    if start != 1 or end not in (-1, len(shape) - 1) or any(d != 1 for d in shape[2:]):
        raise _Unprunable(f"{user.name} flattens a {list(shape)} tensor: channel c is not element c afterwards")
    _follow(user, channels, g, mods, calls)


# --------------------------------------------------------------------------------------
# ranking
# --------------------------------------------------------------------------------------
@torch.no_grad()
def channel_scores(model: nn.Module, groups: Sequence[ChannelGroup], loader: Iterable | None = None,
                   max_batches: int = 4, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """A score per channel of every group (higher: more important): the mean absolute value that reaches
    the consumers on that channel (measured on ``max_batches`` batches of ``loader``, eval mode; 1 without
    data) times the L2 norm of the consumers' weights on that channel, summed over the consumers."""
    consumers = {c: g for g in groups for c in g.consumers}
    act: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(_m, inputs):
            x = inputs[0].detach()
            a = x.abs().transpose(0, 1).reshape(x.shape[1], -1).mean(dim=1).double()
            act[name] = act.get(name, 0) + a
        return fn

    handles = [model.get_submodule(c).register_forward_pre_hook(hook(c)) for c in consumers]
    modes = [(m, m.training) for m in model.modules()]
    try:
        if loader is not None:
            model.eval()
            for b, batch in enumerate(loader):
                if b >= max_batches:
                    break
                x, _ = split_batch(batch)
                model(x.to(device))
    finally:
        for h in handles:
            h.remove()
        for m, t in modes:
            m.training = t
    scores: dict[str, torch.Tensor] = {}
    for g in groups:
        s = torch.zeros(g.channels, dtype=torch.float64)
        for c in g.consumers:
            w = model.get_submodule(c).weight.detach().double().cpu()
            col = w.transpose(0, 1).reshape(g.channels, -1).norm(dim=1)
            a = act.get(c)
            s += col * (a.cpu() if a is not None else 1.0)
        scores[g.producer] = s
    return scores


def keep_top(scores: torch.Tensor, n_keep: int) -> list[int]:
    """The indices of the ``n_keep`` highest scores, in channel order (ties: the lower index)."""
    n_keep = max(1, min(int(n_keep), scores.numel()))
    order = sorted(range(scores.numel()), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:n_keep])


# --------------------------------------------------------------------------------------
# shape surgery
# --------------------------------------------------------------------------------------
def _param(old: torch.Tensor | None, new: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(new.detach().clone(), requires_grad=old.requires_grad if old is not None else True)


@torch.no_grad()
def _sliced(m: nn.Module, out_idx: list[int] | None, in_idx: list[int] | None) -> nn.Module:
    """A copy of ``m`` (Conv/Linear/BatchNorm) keeping output channels ``out_idx`` and input channels
    ``in_idx`` (None: all)."""
    new = copy.deepcopy(m)
    dev = m.weight.device if getattr(m, "weight", None) is not None else None

    def ix(idx):
        return torch.as_tensor(idx, dtype=torch.long, device=dev)

    if isinstance(m, _BN):
        idx = ix(out_idx)
        for name in ("weight", "bias"):
            p = getattr(m, name)
            if p is not None:
                setattr(new, name, _param(p, p[idx]))
        for name in ("running_mean", "running_var"):
            b = getattr(m, name)
            if b is not None:
                new.register_buffer(name, b[idx].clone())
        new.num_features = len(out_idx)
        return new
    w = m.weight
    if out_idx is not None:
        w = w[ix(out_idx)]
        if m.bias is not None:
            new.bias = _param(m.bias, m.bias[ix(out_idx)])
    if _is_depthwise(m):  # one input channel per output channel: both go together
        new.in_channels = new.out_channels = new.groups = len(out_idx)
    elif in_idx is not None:
        w = w[:, ix(in_idx)]
    new.weight = _param(m.weight, w)
    if isinstance(m, nn.Linear):
        new.out_features, new.in_features = w.shape
    elif not _is_depthwise(m):
        new.out_channels, new.in_channels = w.shape[0], w.shape[1]
    return new


def prune_channels_(model: nn.Module, keep: Mapping[str, Sequence[int]],
                    groups: Sequence[ChannelGroup] | None = None, example: torch.Tensor | None = None
                    ) -> list[tuple[str, int, int]]:
    """Keep, for each group's producer in ``keep``, only those output channels (the list of indices), in
    place: the producer, the group's per-channel modules and its consumers are replaced by smaller modules
    of the same class (same dtype, device and ``requires_grad``; the kept weights copied).  ``groups``
    default to :func:`channel_groups` of ``model`` on ``example`` (one of the two is needed).  Returns ``(producer, channels
    before, after)`` per group changed."""
    if groups is None:
        if example is None:
            raise ValueError("prune_channels_ needs the channel groups or an example input to find them")
        groups, _ = channel_groups(model, example)
    by_producer = {g.producer: g for g in groups}
    out_idx: dict[str, list[int]] = {}
    in_idx: dict[str, list[int]] = {}
    changed = []
    for prod, idx in keep.items():
        g = by_producer.get(prod)
        if g is None:
            raise ValueError(f"{prod!r} is not the producer of a prunable channel group")
        idx = sorted({int(i) for i in idx})
        if not idx or idx[0] < 0 or idx[-1] >= g.channels:
            raise ValueError(f"{prod!r}: channels to keep must be a non-empty subset of 0..{g.channels - 1}")
        if len(idx) == g.channels:
            continue
        out_idx[prod] = idx
        for f in g.followers:
            out_idx[f] = idx
        for c in g.consumers:
            in_idx[c] = idx
        changed.append((prod, g.channels, len(idx)))
    new = {name: _sliced(model.get_submodule(name), out_idx.get(name), in_idx.get(name))
           for name in dict.fromkeys([*out_idx, *in_idx])}
    for name, m in new.items():
        replace_module(model, name, m)
    return changed
