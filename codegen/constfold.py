"""Graph simplifications on the traced GraphModule, before lowering (``codegen.export_frontend.trace_model``).

- **Eval-mode identities**: ``torchvision.ops.stochastic_depth(x, p, mode, training=False)`` (torchvision's
  EfficientNet, ConvNeXt, Swin, RegNet blocks) is ``x``.
- **Constant folding**: every maximal computation on parameters and buffers alone (no model input) -- a
  layer-scale ``self.gamma.reshape(1, -1, 1, 1)``, a weight built as ``self.weight * self.mask``, a
  ``torch.arange`` -- is computed once, here, with PyTorch, and becomes one constant (a buffer of the
  GraphModule read by a get_attr node).  The value is the one PyTorch computes at run time (same op, same
  inputs), so folding adds no error.  Random ops and in-place methods are never folded.

Example::

    >>> import torch, torch.nn as nn
    >>> class M(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.gamma = nn.Parameter(torch.ones(4))
    ...     def forward(self, x):
    ...         return x * self.gamma.reshape(1, -1, 1, 1)
    >>> gm = torch.fx.symbolic_trace(M())
    >>> fold_constants(gm)
    1
    >>> [n.op for n in gm.graph.nodes]
    ['placeholder', 'get_attr', 'call_function', 'output']
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.fx as fx
from torch.fx.node import map_arg
from torch.fx.passes.shape_prop import ShapeProp

from codegen.trace import recompile

log = logging.getLogger(__name__)

# never folded: their value changes from call to call
_RANDOM = {"rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like", "normal",
           "bernoulli", "multinomial", "poisson", "dropout", "alpha_dropout", "feature_alpha_dropout",
           "dropout1d", "dropout2d", "dropout3d", "uniform_", "normal_", "exponential_"}  # fmt: skip


def _name(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", "")


def _foldable(node: fx.Node, constant: set[fx.Node]) -> bool:
    if node.op not in ("call_function", "call_method"):
        return False  # module calls (and placeholders) are computations of the model
    name = _name(node.target)
    if name in _RANDOM or (node.op == "call_method" and name.endswith("_")):
        return False
    return all(i in constant for i in node.all_input_nodes)


def _fetch(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def simplify_graph(gm: fx.GraphModule, x: torch.Tensor) -> None:
    """What every front end does to its traced graph before lowering: attention rewritten
    (``codegen.attention``; shapes propagated again on ``x``), eval-mode identities removed, parameter-only
    computations folded."""
    from codegen.attention import decompose_attention

    if decompose_attention(gm):
        with torch.no_grad():
            ShapeProp(gm).propagate(x.clone())
    remove_eval_identities(gm)
    fold_constants(gm)


def remove_eval_identities(gm: fx.GraphModule) -> int:
    """Replaces torchvision's stochastic_depth in eval mode (training=False, or p=0) by its input."""
    n = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or _name(node.target) != "stochastic_depth":
            continue
        if not str(getattr(node.target, "__module__", "")).startswith("torchvision"):
            continue
        x = node.kwargs.get("input", node.args[0] if node.args else None)
        p = node.kwargs.get("p", node.args[1] if len(node.args) > 1 else None)
        training = node.kwargs.get("training", node.args[3] if len(node.args) > 3 else True)
        if isinstance(x, fx.Node) and (training is False or p == 0):
            node.replace_all_uses_with(x)
            gm.graph.erase_node(node)
            n += 1
    if n:
        recompile(gm)
    return n


def fold_constants(gm: fx.GraphModule) -> int:
    """Folds every maximal parameter/buffer-only computation of ``gm`` into one buffer; returns how many
    constants it made.  Node metadata (shapes from ShapeProp, the module stack) moves to the new node."""
    graph = gm.graph
    constant: set[fx.Node] = set()
    values: dict[fx.Node, Any] = {}
    for node in graph.nodes:
        if node.op == "get_attr":
            constant.add(node)
        elif _foldable(node, constant):
            constant.add(node)
    frontier = [n for n in graph.nodes if n in constant and n.op != "get_attr"
                and any(u not in constant for u in n.users)]

    def value(node: fx.Node) -> Any:
        if node not in values:
            if node.op == "get_attr":
                values[node] = _fetch(gm, str(node.target))
            else:
                args = map_arg(node.args, value)
                kwargs = map_arg(node.kwargs, value)
                if node.op == "call_function":
                    values[node] = node.target(*args, **kwargs)
                else:
                    values[node] = getattr(args[0], node.target)(*args[1:], **kwargs)
        return values[node]

    made = 0
    with torch.no_grad():
        for node in frontier:
            try:
                v = value(node)
            except Exception as exc:  # noqa: BLE001 - left to the lowering, which reports it per node
                log.debug("not folding %s: %s", node.name, exc)
                continue
            if not isinstance(v, torch.Tensor):
                continue  # shape arithmetic (ints, sizes) is read by the lowerings as it is
            attr = f"_sc_folded_{made}"
            while hasattr(gm, attr):
                attr += "_"
            gm.register_buffer(attr, v.detach().clone().contiguous())
            with graph.inserting_before(node):
                new = graph.get_attr(attr)
            new.meta = dict(node.meta)
            node.replace_all_uses_with(new)
            made += 1
    dead = 0
    for node in reversed(list(graph.nodes)):  # what only fed the folded values, and unused constants
        if node in constant and not node.users:
            graph.erase_node(node)
            dead += 1
    if made or dead:
        recompile(gm)
    log.debug("folded %d constant subgraph(s)", made)
    return made
