"""Lowering driver: a traced, shape-propagated fx graph -> the IR (``codegen.ir``), then the IR passes
(``codegen.passes``). The registry and the context lowering functions use are in ``codegen.lowering``;
the lowering functions live with their op family in ``codegen/ops/``.
"""

from __future__ import annotations

import logging
import operator

import torch.fx as fx

from codegen import ir
from codegen.errors import CodegenError, UnsupportedConfigError, UnsupportedOpError
from codegen.lowering import (  # noqa: F401 - the public lowering API, also importable from here
    CONSTANT_OPERANDS,
    LOWERINGS,
    LowerContext,
    NameAllocator,
    c_identifier,
    lowering_key,
    module_path,
    register_lowering,
    supported_ops,
    target_name,
    tensor_meta,
)
from codegen.ops import Copy
from codegen.passes import PASSES

log = logging.getLogger(__name__)


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


def _scan_unsupported(gm: fx.GraphModule) -> tuple[list[tuple[str, str, str]], list[str], list[list[str]]]:
    """(node name, target, module path), owner class and consumers of every node that has no lowering."""
    modules = dict(gm.named_modules())
    bad, owners, consumers = [], [], []
    for node in gm.graph.nodes:
        if node.op == "get_attr" and tensor_meta(node) is not None:
            if node.users and all(lowering_key(u, modules) in CONSTANT_OPERANDS for u in node.users):
                continue  # a parameter operand of a functional op (F.conv2d's weight): lowered with it
            bad.append((node.name, f"constant tensor self.{node.target}", module_path(node)))
            users = [u for u in node.users if u.op in ("call_module", "call_function", "call_method")]
            owners.append(next((o for o in map(_owner_class, users) if o), _owner_class(node)))
            consumers.append([target_name(lowering_key(u, modules)) for u in users])
        if node.op not in ("call_module", "call_function", "call_method"):
            continue
        if "tensor_meta" not in node.meta:
            continue  # shape arithmetic (x.size(0), getattr) only feeds reshape arguments
        key = lowering_key(node, modules)
        if key not in LOWERINGS:
            bad.append((node.name, target_name(key), module_path(node)))
            owners.append(_owner_class(node))
            consumers.append([])
    return bad, owners, consumers


def check_supported(gm: fx.GraphModule) -> None:
    """Raises ONE UnsupportedOpError listing every node that has no lowering (grouped by op in its message)."""
    bad, owners, consumers = _scan_unsupported(gm)
    if bad:
        raise UnsupportedOpError(bad, supported_ops(), owners, consumers)


def _check_batch_dim(ctx: LowerContext, node: fx.Node) -> None:
    """Every tensor keeps the batch dimension first, of size 1 (the C runs one sample): a view such as
    ``x.view(-1, 4)`` or ``x.view(-1)`` that folds the batch into another dimension would make the C
    compute a part of what PyTorch does."""
    m = tensor_meta(node)
    if m is not None and (len(m.shape) == 0 or int(m.shape[0]) != 1):
        raise ctx.fail(
            node, f"its result has shape {tuple(int(d) for d in m.shape)} for a batch of 1: it folds the batch "
            "dimension into another one",
            "Keep the batch dimension first, e.g. x.view(x.size(0), -1, 4) or x.flatten(1) instead of "
            "x.view(-1, 4) or x.view(-1)",
        )  # fmt: skip


def lower(gm: fx.GraphModule, env_out: dict[str, str] | None = None,
          producers_out: dict[str, str] | None = None) -> ir.Graph:
    """Lowers a traced, shape-propagated GraphModule to the IR and runs the IR passes.

    ``env_out``, if given, receives fx node name -> IR value name (views map to their input's value).
    ``producers_out``, if given, receives IR value name -> the fx node whose lowering computed it
    (``LowerContext.producers``; the int8 calibration reads ranges through it).

    Everything unsupported is found in ONE pass: nodes without a lowering (``_scan_unsupported``) and
    lowerings that refuse their arguments (UnsupportedConfigError) are collected, their results marked
    unknown so that the nodes computed from them are skipped rather than reported as well, and one error
    is raised at the end: UnsupportedOpError (its message also lists the refused arguments) when an op
    has no lowering, else UnsupportedConfigError (``UnsupportedConfigError.grouped``).
    """
    bad, owners, consumers = _scan_unsupported(gm)
    unknown = {name for name, _, _ in bad}  # fx nodes whose result the C cannot compute
    refused: list[tuple[str, UnsupportedConfigError]] = []
    ctx = LowerContext(gm)
    graph_in = graph_out = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            graph_in = ctx.value_names("input")
            ctx.values[graph_in] = ir.Value(graph_in, ctx.shape(node))
            if ctx.values[graph_in].numel == 0:
                raise CodegenError(f"the model input has shape {ctx.shape(node)} (batch dim excluded) with no "
                                   "element; give an input with at least one element")  # fmt: skip
            ctx.env[node.name] = graph_in
        elif node.op == "output":
            res = node.args[0]
            if not isinstance(res, fx.Node) or tensor_meta(res) is None:
                raise CodegenError(
                    "the model must return one tensor; it returns "
                    f"{type(res).__name__}. Wrap it so forward() returns a single tensor."
                )
            if res.name not in unknown:
                graph_out = ctx.value(res)
        elif node.op in ("call_module", "call_function", "call_method") and "tensor_meta" in node.meta:
            if node.name in unknown or any(i.name in unknown for i in node.all_input_nodes):
                unknown.add(node.name)
                continue
            key = lowering_key(node, ctx.modules)
            try:
                if not (node.target is operator.getitem and tensor_meta(node.args[0]) is None):  # tuple items: h_n
                    _check_batch_dim(ctx, node)
                LOWERINGS[key](ctx, node)
            except UnsupportedConfigError as exc:
                refused.append((target_name(key), exc))
                unknown.add(node.name)
        elif unknown and any(i.name in unknown for i in node.all_input_nodes):
            unknown.add(node.name)  # shape arithmetic on an unknown result
    if bad:
        raise UnsupportedOpError(bad, supported_ops(), owners, consumers, refused)
    if refused:
        raise UnsupportedConfigError.grouped(refused)
    assert graph_in is not None and graph_out is not None
    if env_out is not None:
        env_out.update(ctx.env)
    if producers_out is not None:
        producers_out.update(ctx.producers)
    g = ir.Graph(ctx.values, ctx.ops, graph_in, graph_out)
    if g.output == g.input:  # the model returns its input (or a view of it)
        out = ctx.value_names("v_output")
        g.values[out] = ir.Value(out, g.values[g.input].shape)
        g.ops.append(Copy(name=ctx.layer_names("copy"), source="output", torch_op="copy",
                             inputs=[g.input], output=out, numel=g.values[out].numel))  # fmt: skip
        g.output = out
    for p in PASSES:
        p(g)
    log.debug("lowered to %d ops", len(g.ops))
    return g
