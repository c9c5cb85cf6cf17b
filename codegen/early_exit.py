"""Early-exit emission: a backbone split into stages at exit points, plus exit heads, as C.

An early-exit model (``sparsecomp.early_exit``) adds exits to a trained backbone: at each exit
point the feature map is average-pooled to a small fixed size and flattened. ``global`` exits
("gNet") concatenate the pooled features of every exit point, zeros for the stages not reached,
and one classifier answers from whatever has been computed; ``branch`` exits give every exit
point its own small head.

Emission (``save_compressed_early_exit_model``) writes ONE directory:

* ``model.c`` / ``model.h`` — the baseline (the backbone, weights once), split into stages at the
  exit points: ``<prefix>_stage(k, input, output)`` runs stage k, ``<prefix>_run`` runs them all.
* ``model_ee.c`` / ``model_ee.h`` — the exit part: pooling, the heads (weights in
  ``headers/<head>_ee.h``, all included by ``headers/headers_ee.h``: SparseComp's layout), the one-shot ``<prefix>_ee_run(input, output, exit)`` and the
  incremental ``<prefix>_ee_begin / _step / _exit`` for energy-adaptive devices.

Stages and the arena (``plan_stages``): the IR ops are cut after the op producing each exit
point's value; stage k ends with exit k, a last stage holds the rest of the backbone (if any).
ONE arena holds the backbone's activations and the exit path's buffers (the input copy, the
backbone output, the pooled exit features, the heads' scratch). To make a stage restartable after
a power loss, every buffer a stage reads that an earlier stage wrote stays intact until the stage
ends (no in-place op or reuse over it inside the stage); the exit features, the input copy and the
backbone output live from ``begin`` to the answer.

The exit model is read through a small protocol (so codegen does not depend on sparsecomp):
``exit_model.backbone`` (the backbone module), ``exit_model.exit_spec()`` -> ``ExitSpec`` and
``exit_model(x, exit_index=k, simulate_exit=fn)`` -> the output of exit k (k == number of exits:
the backbone's own output).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import prod
from pathlib import Path

import numpy as np
import torch
import torch.fx as fx

from codegen import api, emission, emit, formats, ir, tiling
from codegen import intermittent as nvm
from codegen.constfold import simplify_graph
from codegen.errors import CodegenError
from codegen.formats import CArray
from codegen.lower import lower
from codegen.lowering import tensor_meta
from codegen.memory import GraphMemory, plan_graph
from codegen.ops import Copy, Linear
from codegen.trace import example_from, prepare_model, trace

log = logging.getLogger(__name__)

EXIT_KINDS = ("global", "branch")
HEAD_ACTS = ("none", "relu")


# ---- what the exit model tells codegen ------------------------------------------------------------
@dataclass
class HeadLayer:
    """One fully connected layer of an exit head: y = act(W x + b), W [out, in]."""

    weight: np.ndarray
    bias: np.ndarray | None = None
    act: str = "none"  # "none" or "relu"


@dataclass
class ExitSpec:
    """The exit part of an early-exit model, in plain numbers.

    ``pool_sizes[k]``: output size of the average pooling at exit k: (h, w) for (C, H, W) features,
    (1, l) for (C, L), () for flat (C,) features (no pooling). ``heads``: one head (a list of
    layers) for ``global``, one per exit for ``branch``; the first layer of the global head reads
    the concatenated pooled features of all exits.
    """

    kind: str
    exit_points: list[str]
    pool_sizes: list[tuple[int, ...]]
    heads: list[list[HeadLayer]]
    num_classes: int


def check_spec(spec: ExitSpec) -> None:
    if spec.kind not in EXIT_KINDS:
        raise CodegenError(f"exit kind {spec.kind!r} is not supported; use one of {EXIT_KINDS}")
    if not spec.exit_points:
        raise CodegenError("an early-exit model needs at least one exit point")
    want = 1 if spec.kind == "global" else len(spec.exit_points)
    if len(spec.heads) != want or len(spec.pool_sizes) != len(spec.exit_points):
        raise CodegenError(
            f"{spec.kind} exits need {want} head(s) and one pool size per exit point; got {len(spec.heads)} "
            f"head(s) and {len(spec.pool_sizes)} pool size(s) for {len(spec.exit_points)} exit points"
        )
    for head in spec.heads:
        if not head:
            raise CodegenError("an exit head has no layer")
        for layer in head:
            if layer.act not in HEAD_ACTS:
                raise CodegenError(f"exit head activation {layer.act!r} is not supported; use one of {HEAD_ACTS}")


# ---- exit points -> fx nodes -> IR values -----------------------------------------------------------
def _scope_paths(node: fx.Node) -> list[str]:
    stack = node.meta.get("nn_module_stack") or {}
    return [v[0] if isinstance(v, tuple) else str(v) for v in stack.values()]


def _tensor_node(n: fx.Node) -> bool:
    return n.op in ("call_module", "call_function", "call_method") and tensor_meta(n) is not None


def resolve_exit_nodes(gm: fx.GraphModule, exit_points: Sequence[str]) -> list[fx.Node]:
    """The fx node whose value each exit point names: a module name (its output; a container
    module's output is the one value of its scope used outside it) or an fx node name."""
    nodes = [n for n in gm.graph.nodes if _tensor_node(n)]
    by_name = {n.name: n for n in nodes}
    out = []
    for point in exit_points:
        if not isinstance(point, str) or not point:
            raise CodegenError(f"exit point {point!r}: give a module name (e.g. 'features.3') or an fx node name")
        calls = [n for n in nodes if n.op == "call_module" and str(n.target) == point]
        if len(calls) > 1:
            raise CodegenError(
                f"exit point '{point}': the module is called {len(calls)} times; name one call by its fx "
                f"node name: {', '.join(n.name for n in calls)}"
            )
        if calls:
            out.append(calls[0])
            continue
        if point in by_name:
            out.append(by_name[point])
            continue
        scope = [n for n in nodes if point in _scope_paths(n)]
        leaving = [n for n in scope if any(u not in scope or u.op == "output" for u in n.users)]
        if len(leaving) == 1:
            out.append(leaving[0])
            continue
        if leaving:
            raise CodegenError(
                f"exit point '{point}': the module has {len(leaving)} outputs used outside it "
                f"({', '.join(n.name for n in leaving)}); name one of them (an fx node name)"
            )
        modules = sorted({str(n.target) for n in nodes if n.op == "call_module"})
        raise CodegenError(
            f"exit point '{point}' does not exist in {type(gm).__name__}: it is neither a module name nor an "
            f"fx node name. Modules: {', '.join(modules[:30]) or '-'}; nodes: "
            f"{', '.join(list(by_name)[:30])}{' ...' if len(by_name) > 30 else ''}"
        )
    return out


def lower_with_env(gm: fx.GraphModule) -> tuple[ir.Graph, dict[str, str]]:
    """``codegen.lower.lower`` that also returns fx node name -> IR value name (same IR)."""
    env: dict[str, str] = {}
    g = lower(gm, env_out=env)
    if any(isinstance(op, Copy) for op in g.ops):  # lower() adds a copy only for output == input
        raise CodegenError("the backbone returns its input; an early-exit backbone must compute something")
    return g, env


@dataclass
class ExitPoint:
    index: int
    name: str  # as the user gave it
    node: str  # fx node name
    value: str  # IR value
    shape: tuple[int, ...]  # without batch
    op_index: int  # IR op producing the value (the last op of stage `index`)


def locate_exits(g: ir.Graph, env: dict[str, str], nodes: list[fx.Node], names: Sequence[str]) -> list[ExitPoint]:
    """Maps exit nodes to IR values; refuses values fused away, the input, and a wrong order."""
    producer = {op.output: i for i, op in enumerate(g.ops)}
    points = []
    for k, (node, name) in enumerate(zip(nodes, names)):
        value = env.get(node.name)
        if value == g.input:
            raise CodegenError(f"exit point '{name}' is the model input (or a view of it); exit after a layer")
        if value is None or value not in producer:
            follow = ", ".join(f"'{u.target if u.op == 'call_module' else u.name}'" for u in node.users) or "-"
            raise CodegenError(
                f"exit point '{name}' has no value of its own in the generated C: it is fused into the next "
                f"layer (BatchNorm folding or activation fusion). Use the layer that follows it as the exit "
                f"point ({follow})"
            )
        points.append(ExitPoint(k, name, node.name, value, tuple(g.values[value].shape), producer[value]))
    for a, b in zip(points, points[1:]):
        if b.op_index <= a.op_index:
            raise CodegenError(
                f"exit points must be distinct and in execution order: '{b.name}' (layer {b.op_index}) does not "
                f"come after '{a.name}' (layer {a.op_index})"
            )
    return points


# ---- stages -----------------------------------------------------------------------------------------
@dataclass
class Stage:
    index: int
    start: int  # first op index
    end: int  # one past the last op index
    exit: int | None  # the exit that becomes available when this stage is done
    macs: int = 0


def split_stages(g: ir.Graph, points: list[ExitPoint]) -> list[Stage]:
    """Stage k = ops after exit k-1's op up to exit k's op; then the rest of the backbone (if any)."""
    stages, start = [], 0
    for p in points:
        stages.append(Stage(p.index, start, p.op_index + 1, p.index))
        start = p.op_index + 1
    if start < len(g.ops):
        stages.append(Stage(len(stages), start, len(g.ops), None))
    for s in stages:
        s.macs = sum(op.macs() for op in g.ops[s.start : s.end])
    return stages


@dataclass
class StagePlan:
    """The one arena of an early-exit emission: backbone storage plus the exit path's buffers (bytes)."""

    memory: GraphMemory  # storage of every backbone value (input/output: the stage's pointers)
    input_offset: int  # the copy of the input made by <prefix>_ee_begin
    output_offset: int  # the backbone's output in incremental/early-exit use
    features_offset: int  # pooled exit features, concatenated
    scratch_offset: int  # heads' hidden layers
    baseline_arena_bytes: int  # plan_graph's arena for the plain model, for comparison


def plan_stages(g: ir.Graph, stages: list[Stage], points: list[ExitPoint], features_bytes: int,
                scratch_bytes: int, alignment: int = 4, tiled: Sequence[tiling.StagePlan] = ()) -> StagePlan:  # fmt: skip
    """Plans ONE arena for the staged backbone and the exit path (see the module docstring).

    Time: op i runs at 2i; exit k's pooling at 2 * (exit op) + 1; the answer at 2n + 1. A value read
    in a later stage than the one producing it lives to the end of the reading stage, so a stage
    never overwrites what it reads from earlier stages (stages are restartable); in-place ops then
    only happen over values of the same stage.

    ``tiled``: tiled stages (codegen/tiling.py, each inside one exit stage): the values made inside one
    live in its tile workspace (an extra buffer from its first to its last op), its input stays live and
    its output is written from its first op on.
    """
    n = len(g.ops)
    t_end = 2 * n + 1
    stage_of = {}
    for s in stages:
        for i in range(s.start, s.end):
            stage_of[i] = s
    producer = {op.output: i for i, op in enumerate(g.ops)}

    def stage_end_time(i: int) -> int:
        return 2 * (stage_of[i].end - 1) + 1

    first = {v: (-1 if v == g.input else 2 * producer[v]) for v in g.values if v == g.input or v in producer}
    last = {v: -1 for v in first}
    for i, op in enumerate(g.ops):
        for v in op.inputs:
            src = producer.get(v)
            cross = src is None or stage_of[src] is not stage_of[i]
            last[v] = max(last[v], stage_end_time(i) if cross else 2 * i)
    for p in points:
        last[p.value] = max(last[p.value], 2 * p.op_index + 1)
    last[g.output] = t_end
    ops = list(g.ops)
    tile_extra = []
    for k, tp in enumerate(tiled):
        f, la = tp.stage.first, tp.stage.last
        for i in range(f, la + 1):  # planned as plain steps: no in-place, no kernel scratch of the whole layer
            op = g.ops[i]
            ops[i] = tiling.StageOp(op.name, "stage", op.source, list(op.inputs), op.output)
            if i < la:
                first[op.output], last[op.output] = t_end + 1, -1  # in the workspace, not the arena
        first[tp.output] = 2 * f
        last[tp.input] = max(last[tp.input], 2 * la)
        tile_extra.append((f"tile{k}.workspace", tp.workspace_bytes, 2 * f, 2 * la, 0))

    # The exit path's own buffers: the input copy (incremental API), the backbone's answer (kept
    # from the first op that may write it to the end), the pooled features and the head's scratch.
    extra = [
        ("ee_input", g.input_value.nbytes, -1, max(last[g.input], 0), 1),
        ("ee_output", g.output_value.nbytes, -1, t_end, 1),
        ("ee_features", features_bytes, -1, t_end, 1),
    ]
    if scratch_bytes:
        extra.append(("ee_scratch", scratch_bytes, -1, t_end, 1))
    planned = ir.Graph(g.values, ops, g.input, g.output)
    mem = plan_graph(planned, alignment, lifetimes=(first, last), op_time=lambda i: 2 * i, extra=extra + tile_extra)
    for k, tp in enumerate(tiled):
        tiling.place_workspace(mem, tp, mem.extra_offsets[f"tile{k}.workspace"])
    plan = mem.extra_offsets
    return StagePlan(
        mem, plan["ee_input"], plan["ee_output"], plan["ee_features"], plan.get("ee_scratch", 0),
        plan_graph(g, alignment).arena_bytes,
    )  # fmt: skip


# ---- analysis shared by emission and by sparsecomp's evaluation -------------------------------------
@dataclass
class Analysis:
    graph: ir.Graph
    points: list[ExitPoint]
    stages: list[Stage]


def analyze_backbone(backbone: torch.nn.Module, example_input, exit_points: Sequence[str],
                     leaf_modules: tuple[type, ...] = (), concrete_args: dict | None = None) -> Analysis:  # fmt: skip
    """Traces and lowers the backbone, finds the exit points and splits the IR into stages.

    Raises CodegenError for an exit point that does not exist, is fused away or is out of order.
    """
    if isinstance(exit_points, str):
        exit_points = [exit_points]
    exit_points = list(exit_points)
    if not exit_points:
        raise CodegenError("give at least one exit point (a module name or an fx node name)")
    m = prepare_model(backbone)
    x = example_from(example_input)
    gm = trace(m, x, leaf_modules, concrete_args)
    simplify_graph(gm, x)
    nodes = resolve_exit_nodes(gm, exit_points)
    g, env = lower_with_env(gm)
    points = locate_exits(g, env, nodes, exit_points)
    return Analysis(g, points, split_stages(g, points))


def feature_size(shape: tuple[int, ...], pool: tuple[int, ...]) -> int:
    """Floats of an exit's pooled, flattened features."""
    if len(shape) == 1 or not pool:
        return prod(shape)
    return shape[0] * prod(pool)


def head_macs(head: list[HeadLayer]) -> int:
    return sum(int(np.prod(layer.weight.shape)) for layer in head)


def exit_macs(analysis: Analysis, spec: ExitSpec) -> list[int]:
    """MACs of exit k (k < number of exits): backbone stages 0..k plus the head; then the full path."""
    out, acc = [], 0
    for s in analysis.stages:
        acc += s.macs
        if s.exit is not None:
            head = spec.heads[0] if spec.kind == "global" else spec.heads[s.exit]
            out.append(acc + head_macs(head))
    out.append(sum(s.macs for s in analysis.stages))
    return out


# ---- emission -----------------------------------------------------------------------------------------
def _check_pool(p: ExitPoint, pool: tuple[int, ...]) -> tuple[int, int, int, int, int]:
    """(C, H, W, OH, OW) of the pooling at one exit; refuses an impossible size."""
    shape = p.shape
    if len(shape) == 1:
        if pool:
            raise CodegenError(f"exit point '{p.name}' has flat features {shape}; give pool size None for it")
        return (shape[0], 1, 1, 1, 1)
    if len(shape) == 2:
        c, h, w = shape[0], 1, shape[1]
    elif len(shape) == 3:
        c, h, w = shape
    else:
        c, h, w = shape[0], 1, prod(shape[1:])
        if pool:
            raise CodegenError(f"exit point '{p.name}' has features of shape {shape}; only (C,), (C, L), (C, H, W)")
    if not pool:
        return (c * h * w, 1, 1, 1, 1)  # no pooling: the whole map, flattened
    oh, ow = (1, pool[-1]) if len(pool) == 1 or len(shape) == 2 else (pool[0], pool[1])
    if not (1 <= oh <= h and 1 <= ow <= w):
        raise CodegenError(
            f"exit point '{p.name}': pool size {pool} is larger than its feature map {shape[1:]}; "
            "use a smaller pool size for this exit"
        )
    return (c, h, w, oh, ow)


def _check_backbone_matches(baseline: torch.nn.Module, exit_model) -> None:
    backbone = getattr(exit_model, "backbone", None)
    if not isinstance(backbone, torch.nn.Module):
        raise CodegenError("exit_model has no .backbone module; build it with sparsecomp.early_exit.build_exit_model")
    a, b = baseline.state_dict(), backbone.state_dict()
    if list(a) != list(b):
        raise CodegenError(
            "the exit model's backbone is not the baseline: their state_dict keys differ "
            f"({sorted(set(a) ^ set(b))[:5]}); pass the backbone the exit model was built from"
        )
    for k in a:
        if a[k].shape != b[k].shape or not torch.equal(a[k].detach().cpu(), b[k].detach().cpu()):
            raise CodegenError(
                f"the exit model's backbone differs from the baseline at '{k}': the exit path reuses the "
                "baseline's stages and weights, so they must be equal. Train the exits with the backbone frozen "
                "(the default), or pass exit_model.backbone as the baseline"
            )


def _check_simulate_exit(fn: Callable, spec: ExitSpec, sizes: list[int]) -> None:
    """The C zeroes the features of the exits after the one taken (global) and reads exit k's own
    features (branch); simulate_exit must mask the same way, or PyTorch and the C would disagree."""
    n = len(sizes)
    for k in range(n):
        feats = [torch.full((1, s), 1.0 + i) for i, s in enumerate(sizes)]
        try:
            res = fn(feats, k, training=False)
        except TypeError:
            res = fn(feats, k)
        if not (isinstance(res, (tuple, list)) and len(res) == 2):
            raise CodegenError("simulate_exit must return (masked features, exit index)")
        masked, taken = res
        if int(taken) != k:
            raise CodegenError(f"simulate_exit was asked for exit {k} and took exit {int(taken)}")
        for i, (f, s) in enumerate(zip(masked, sizes)):
            want = torch.full((1, s), 1.0 + i) if i <= k else torch.zeros(1, s)
            if spec.kind == "branch" and i != k:
                continue
            if tuple(f.shape) != (1, s) or not torch.equal(f.detach().float(), want):
                raise CodegenError(
                    f"simulate_exit at exit {k} gives features of exit {i} that differ from what the C computes: "
                    f"the C keeps the pooled features of exits 0..{k} unchanged and zeroes the others "
                    f"({spec.kind} exits). Make simulate_exit mask that way"
                )


def _head_graph(spec: ExitSpec, sizes: list[int], hidden_scratch: dict[str, int]) -> tuple[ir.Graph, list[list[Linear]]]:
    values: dict[str, ir.Value] = {}
    ops: list[ir.Op] = []
    heads: list[list[Linear]] = []
    for h, head in enumerate(spec.heads):
        base = "gnet" if spec.kind == "global" else f"exit{h}"
        in_name = f"features{h}"
        n_in = sum(sizes) if spec.kind == "global" else sizes[h]
        values[in_name] = ir.Value(in_name, (n_in,))
        layer_ops = []
        for j, layer in enumerate(head):
            w = np.asarray(layer.weight, dtype=np.float32)
            if w.ndim != 2 or w.shape[1] != n_in:
                raise CodegenError(f"exit head {base}: layer {j} takes {w.shape[1] if w.ndim == 2 else w.shape} "
                                   f"inputs, expected {n_in}")  # fmt: skip
            name = base if len(head) == 1 else f"{base}_fc{j}"
            out = f"{name}_out" if j < len(head) - 1 else "output"
            values.setdefault(out, ir.Value(out, (w.shape[0],)))
            params = {"weight": w}
            if layer.bias is not None:
                params["bias"] = np.asarray(layer.bias, dtype=np.float32).reshape(-1)
            for role, arr in params.items():
                if not np.all(np.isfinite(arr)):
                    raise CodegenError(f"exit head {name}: {role} has non-finite values (NaN or inf)")
            op = Linear(name=name, source=f"exit.{name}", torch_op=f"Linear({w.shape[1]}, {w.shape[0]})",
                           inputs=[in_name], output=out, params=params, in_features=w.shape[1],
                           out_features=w.shape[0], rows=1, act=ir.Activation(layer.act))  # fmt: skip
            if j < len(head) - 1:
                hidden_scratch[out] = w.shape[0]
            ops.append(op)
            layer_ops.append(op)
            n_in = w.shape[0]
            in_name = out
        if n_in != spec.num_classes:
            raise CodegenError(f"exit head {base} gives {n_in} outputs, expected {spec.num_classes}")
        heads.append(layer_ops)
    return ir.Graph(values, ops, "features0", "output"), heads


class EarlyExitResult(emission.EmitResult):
    @property
    def ee_weight_bytes(self) -> int:
        return int(self.report["early_exit"]["weight_bytes"])


def _as_spec(exit_model) -> ExitSpec:
    fn = getattr(exit_model, "exit_spec", None)
    if fn is None:
        raise CodegenError("exit_model has no exit_spec(); build it with sparsecomp.early_exit.build_exit_model")
    spec = fn()
    check_spec(spec)
    return spec


def exit_weight_bytes(exit_model, representation: str = "csr", feature_sizes: Sequence[int] | None = None) -> int:
    """Exact bytes of the exit heads' weight arrays (``<PREFIX>_EE_WEIGHT_BYTES``) as
    :func:`save_compressed_early_exit_model` emits them with ``representation`` -- the count the compressor
    budgets them with.  ``feature_sizes``: the pooled features of every exit (default: the exit model's).

    >>> exit_weight_bytes(ee, "int8")  # doctest: +SKIP
    """
    spec = _as_spec(exit_model)
    sizes = list(feature_sizes if feature_sizes is not None else exit_model.feature_sizes)
    hg, _ = _head_graph(spec, sizes, {})
    api.encode_graph(hg, representation, "model_ee")
    return int(emission.byte_report(hg).total)


@dataclass
class _Build:
    """Both halves of an early-exit emission, encoded and planned: the backbone (graph, exit points, stages),
    the exit heads (graph, layers per exit), each exit's pooled features and the shared arena."""

    an: Analysis
    pools: list[tuple[int, int, int, int, int]]  # per exit: c, h, w, pooled h, pooled w
    sizes: list[int]  # per exit: features (c * pooled h * pooled w)
    hg: ir.Graph
    heads: list[list[Linear]]
    plan: StagePlan
    schedule: tiling.Schedule | None = None  # ram_budget given: the tiling schedule (maybe no stage)


def _resolve_arguments(baseline: torch.nn.Module, exit_model, simulate_exit: Callable | None, input_data,
                       input_shape) -> tuple[ExitSpec, Callable]:  # fmt: skip
    """The exit spec and the simulate_exit function (by default the exit model's own), after checking the
    arguments; the errors name what to pass."""
    if input_data is None and input_shape is None:
        raise CodegenError("give input_data (a sample of batch size 1) or input_shape, e.g. (1, 1, 8, 8)")
    spec = _as_spec(exit_model)
    _check_backbone_matches(baseline, exit_model)
    if simulate_exit is None:
        simulate_exit = getattr(exit_model, "simulate_exit", None)
    if simulate_exit is None or not callable(simulate_exit):
        raise CodegenError("give simulate_exit (e.g. sparsecomp.early_exit.simulate_exit)")
    return spec, simulate_exit


def _build(baseline: torch.nn.Module, spec: ExitSpec, simulate_exit: Callable, example: torch.Tensor,
           rep: formats.Representation, prefix: str, leaf_modules: tuple[type, ...], concrete_args: dict | None,
           ram_budget: int | None = None) -> _Build:  # fmt: skip
    """Traces, encodes and plans the backbone and the exit heads; checks the exits against simulate_exit."""
    an = analyze_backbone(baseline, example, spec.exit_points, leaf_modules, concrete_args)
    g, points, stages = an.graph, an.points, an.stages
    api.encode_graph(g, rep, prefix)
    if g.output_value.numel != spec.num_classes:
        raise CodegenError(
            f"the backbone gives {g.output_value.numel} outputs and the exits {spec.num_classes}; the full path "
            "(exit index = number of exits) answers with the backbone's output, so they must be equal"
        )
    pools = [_check_pool(p, tuple(spec.pool_sizes[p.index] or ())) for p in points]
    sizes = [c * oh * ow for c, _, _, oh, ow in pools]
    _check_simulate_exit(simulate_exit, spec, sizes)
    scratch: dict[str, int] = {}
    hg, heads = _head_graph(spec, sizes, scratch)
    api.encode_graph(hg, rep, f"{prefix}_ee")
    scratch_floats = max(scratch.values(), default=0)
    plan = plan_stages(g, stages, points, 4 * sum(sizes), 4 * scratch_floats)
    schedule = None
    if ram_budget is not None:
        schedule = _tiled_schedule(g, stages, points, 4 * sum(sizes), 4 * scratch_floats, plan, int(ram_budget))
        if schedule.stages:
            plan = plan_stages(g, stages, points, 4 * sum(sizes), 4 * scratch_floats, tiled=schedule.stages)
    return _Build(an, pools, sizes, hg, heads, plan, schedule)


def _tiled_schedule(g: ir.Graph, stages: list[Stage], points: list[ExitPoint], features_bytes: int,
                    scratch_bytes: int, untiled: StagePlan, ram_budget: int) -> tiling.Schedule:  # fmt: skip
    """The schedule of fewest extra MACs whose early-exit arena fits ``ram_budget`` (tiling.choose_schedule
    with this arena): tiled stages lie inside one exit stage and keep every exit point's value out of their
    tiles; CodegenError with the smallest arena reachable otherwise."""
    stage_of = {i: s.index for s in stages for i in range(s.start, s.end)}
    exits = {p.value for p in points}
    layerwise = untiled.baseline_arena_bytes

    def allowed(st: tiling.Stage) -> bool:
        made = {op.output for op in st.ops(g)} - {g.ops[st.last].output}
        return stage_of[st.first] == stage_of[st.last] and not (made & exits)

    def plan_fn(tiled: list[tiling.Stage]) -> tiling.Schedule:
        if not tiled:
            return tiling.Schedule([], untiled.memory, layerwise)
        plans = [search.stage(t, f"t{k}") for k, t in enumerate(sorted(tiled, key=lambda t: t.first))]
        sp = plan_stages(g, stages, points, features_bytes, scratch_bytes, tiled=plans)
        return tiling.Schedule(plans, sp.memory, layerwise)

    search = tiling.Search(g, plan_fn, allowed)
    try:
        return tiling.choose_schedule(g, ram_budget, search)
    except CodegenError as exc:
        raise CodegenError(f"early-exit emission (stages restartable, the exits' features kept in the arena, "
                           f"tiles only inside a stage): {exc}") from None


def _check_name_clashes(g: ir.Graph, hg: ir.Graph, prefix: str) -> None:
    """Names must not clash between the two halves (symbols, header files, guards)."""
    P = prefix.upper()
    base_arrays = {a.name for op in g.ops for e in op.encoded.values() for a in e.arrays.values()}
    ee_arrays = {a.name for op in hg.ops for e in op.encoded.values() for a in e.arrays.values()}
    base_files = {f"{op.name}.h" for op in g.ops if op.encoded} | {"headers.h", "input.h"}
    ee_files = {f"{op.name}_ee.h" for op in hg.ops} | {"input_ee.h", "headers_ee.h"}
    base_guards = {f"{P}_{op.name.upper()}_H" for op in g.ops if op.encoded} | {f"{P}_H", f"{P}_HEADERS_H", f"{P}_INPUT_H"}
    ee_guards = {f"{P}_EE_{op.name.upper()}_H" for op in hg.ops} | {f"{P}_EE_H", f"{P}_EE_INPUT_H",
                                                                    f"{P}_EE__HEADERS_H"}
    for what, a, b in (("array", base_arrays, ee_arrays), ("header", base_files, ee_files),
                       ("include guard", base_guards, ee_guards)):  # fmt: skip
        if a & b:
            raise CodegenError(
                f"the backbone and the exit heads would both define the {what} {sorted(a & b)[0]}; rename the "
                "backbone layer that ends with '_ee' or choose another prefix"
            )


def _pytorch_answers(baseline: torch.nn.Module, exit_model, simulate_exit: Callable, example: torch.Tensor,
                     n_exits: int, tolerance: float | None, report: dict):  # fmt: skip
    """PyTorch's answers for the self-test: (test_io of the baseline, (every exit's outputs, tolerances));
    records the test tolerance in the report."""
    m = prepare_model(baseline)
    em = prepare_model(exit_model)
    with torch.no_grad():
        y = m(example).detach().float().numpy()
        ys = [em(example, exit_index=k, simulate_exit=simulate_exit).detach().float().numpy().reshape(-1)
              for k in range(n_exits + 1)]  # fmt: skip
    for k, yk in enumerate([y.reshape(-1), *ys]):
        if not np.all(np.isfinite(yk)):
            raise CodegenError(f"PyTorch's output for input_data is not finite at exit {k - 1}; check the model")
    if not np.array_equal(ys[-1], y.reshape(-1)):
        raise CodegenError("the exit model's full path (exit index = number of exits) differs from the baseline")
    tol = emission.default_tolerance(y) if tolerance is None else float(tolerance)
    doc = "given by the caller" if tolerance is not None else (
        f"max abs error <= {emission.RTOL:g} x max|output| + {emission.ATOL:g} (codegen.api.default_tolerance)")  # fmt: skip
    test_io = (example.numpy().astype(np.float32), y.astype(np.float32), tol, doc)
    report["test"] = {"tolerance": tol, "max_abs_output": float(np.max(np.abs(y)))}
    tols = [emission.default_tolerance(yk) if tolerance is None else float(tolerance) for yk in ys]
    return test_io, (np.stack(ys).astype(np.float32), tols)


def _early_exit_report(b: _Build, spec: ExitSpec, report: dict, ee_bytes) -> dict:
    """The report's "early_exit" section (exits, stages, heads, arena) with its state magic."""
    points, stages, mem = b.an.points, b.an.stages, b.plan.memory
    macs = exit_macs(b.an, spec)
    features_off = 0
    exits_rep = []
    for p, pool in zip(points, b.pools):
        c, h, w, oh, ow = pool
        exits_rep.append({
            "index": p.index, "exit_point": p.name, "fx_node": p.node, "value": p.value, "stage": p.index,
            "feature_shape": list(p.shape), "pool": [oh, ow], "features_offset": features_off,
            "features": c * oh * ow, "macs": macs[p.index],
        })  # fmt: skip
        features_off += c * oh * ow
    head_rep = [
        {"name": op.name, "in": op.in_features, "out": op.out_features, "activation": op.act.kind,
         "format": op.encoded["weight"].encoding, "bytes": sum(e.nbytes for e in op.encoded.values()),
         "arrays": [{"name": a.name, "ctype": a.ctype, "count": a.count, "bytes": a.nbytes}
                    for e in op.encoded.values() for a in e.arrays.values() if a.count]}
        for op in b.hg.ops
    ]  # fmt: skip
    magic = zlib.crc32(json.dumps([report["layers"], exits_rep, head_rep], sort_keys=True, default=str).encode())
    return {
        "kind": spec.kind,
        "num_exits": len(points),
        "num_stages": len(stages),
        "exits": exits_rep,
        "full_path_macs": macs[-1],
        "stages": [{"index": s.index, "first_op": s.start, "end_op": s.end, "exit": s.exit, "macs": s.macs,
                    "layers": [op.source for op in b.an.graph.ops[s.start:s.end]]} for s in stages],  # fmt: skip
        "heads": head_rep,
        "weight_bytes": ee_bytes.total,
        "features": sum(b.sizes),
        "arena": {
            "arena_bytes": mem.arena_bytes, "baseline_arena_bytes": b.plan.baseline_arena_bytes,
            "input_offset": b.plan.input_offset, "output_offset": b.plan.output_offset,
            "features_offset": b.plan.features_offset, "scratch_offset": b.plan.scratch_offset,
        },  # fmt: skip
        "state_magic": magic,
    }


def _render_context(b: _Build, spec: ExitSpec, prefix: str, name: str, representation: str, report: dict,
                    ee_bytes, has_input: bool) -> dict:  # fmt: skip
    """The template context of model_ee.c/.h, the exit heads' headers and the early-exit self-test."""
    g, points, stages, mem, plan, hg = b.an.graph, b.an.points, b.an.stages, b.plan.memory, b.plan, b.hg
    ee = report["early_exit"]
    fo = plan.features_offset // 4

    def ee_value(v: str) -> str:  # C pointer of a backbone value in the exit path
        s = mem.storage[v]
        off = {"arena": s.offset, "output": plan.output_offset, "input": plan.input_offset}[s.kind] // 4
        return f"(arena + {off})" if off else "arena"

    seg = {}
    off = 0
    for k, sz in enumerate(b.sizes):
        seg[k] = off
        off += sz

    def head_buf(v: str) -> str:
        if v == "output":
            return "output"
        if v.startswith("features"):
            k = int(v[len("features"):])
            o = fo + (seg[k] if spec.kind == "branch" else 0)
            return f"(arena + {o})" if o else "arena"
        o = plan.scratch_offset // 4
        return f"(arena + {o})" if o else "arena"

    def bias(op: ir.Op) -> str:
        return op.encoded["bias"].c_ref("values") if "bias" in op.encoded else "NULL"

    ee_runtime = sorted({h for op in hg.ops for h in op.runtime}
                        | {h for op in hg.ops for e in op.encoded.values() for h in getattr(e, "runtime", ())})  # fmt: skip
    macs = exit_macs(b.an, spec)
    exits_ctx = [
        {"index": p.index, "name": p.name, "src": ee_value(p.value), "c": c, "h": h, "w": w, "oh": oh, "ow": ow,
         "dst": f"(arena + {fo + seg[p.index]})" if fo + seg[p.index] else "arena", "size": b.sizes[p.index],
         "macs": macs[p.index], "shape": "x".join(map(str, p.shape))}
        for p, (c, h, w, oh, ow) in zip(points, b.pools)
    ]  # fmt: skip
    ee_prefix = f"{prefix}_ee"
    return dict(
        version=emission.VERSION, prefix=prefix, PREFIX=prefix.upper(), ee=ee_prefix, EE=ee_prefix.upper(),
        model_name=name, representation=representation, kind=spec.kind, exits=exits_ctx, heads=b.heads,
        num_exits=len(points), num_stages=len(stages), num_classes=spec.num_classes, features=sum(b.sizes),
        arena_bytes=mem.arena_bytes, baseline_arena_bytes=plan.baseline_arena_bytes,
        weight_bytes=ee_bytes.total, base_weight_bytes=report["totals"]["weight_bytes"],
        input_size=g.input_value.numel, output_size=g.output_value.numel,
        in_ptr=f"(arena + {plan.input_offset // 4})" if plan.input_offset else "arena",
        out_ptr=f"(arena + {plan.output_offset // 4})" if plan.output_offset else "arena",
        feat_ptr=f"(arena + {fo})" if fo else "arena",
        ee_headers=[f"{op.name}_ee.h" for op in hg.ops], runtime_headers=ee_runtime, magic=ee["state_magic"],
        buf=head_buf, bias=bias, has_input=has_input,
        stage_exits=[s.exit for s in stages], feature_ends=[seg[k] + b.sizes[k] for k in range(len(points))],
    )  # fmt: skip


def _ee_files(hg: ir.Graph, ctx: dict, ee_expected, prefix: str,
              intermittent: bool = False, tiled: bool = False) -> Callable[[emit.Rendered], None]:  # fmt: skip
    """The emission core's add_files hook: model_ee.c/.h, the heads' headers, the expected exit outputs,
    the early-exit self-test (app/main.c, app/baseline_ee.c) and the heads' runtime headers."""
    env = emit.environment()
    P, ee_prefix = prefix.upper(), f"{prefix}_ee"

    def add_files(rendered: emit.Rendered) -> None:
        files = rendered.files
        files["model_ee.h"] = env.get_template("model_ee.h.j2").render(**ctx)
        files["model_ee.c"] = env.get_template("model_ee.c.j2").render(**ctx)
        for op in hg.ops:
            arrays = [a for e in op.encoded.values() for a in e.arrays.values() if a.count]
            files[f"headers/{op.name}_ee.h"] = env.get_template("layer.h.j2").render(
                version=emission.VERSION, op=op, arrays=arrays, guard=f"{P}_EE_{op.name.upper()}_H"
            )
        # the seed's layout (SparseComp's conversion.py): headers/<layer>_ee.h and headers/headers_ee.h
        files["headers/headers_ee.h"] = env.get_template("headers_ee.h.j2").render(**ctx)
        if ee_expected is not None:
            ys, tols = ee_expected
            files["headers/input_ee.h"] = env.get_template("input_ee.h.j2").render(
                **ctx, expected=ys, tolerances=tols,
                rows=[emit.carray_body(CArray(f"{ee_prefix}_e{k}", "float", ys[k])) for k in range(len(ys))],
            )  # fmt: skip
        files["app/main.c"] = env.get_template("main_ee.c.j2").render(**ctx)
        files["app/baseline_ee.c"] = env.get_template("baseline_ee.c.j2").render(**ctx)
        for h, src in emit.runtime_files(ctx["runtime_headers"]).items():
            rendered.copies.setdefault(f"runtime/{h}", src)
        if intermittent:
            nvm.add_harnesses(rendered, ctx)
        if tiled:
            for h, src in emit.runtime_files([tiling.TILE_HEADER]).items():
                rendered.copies.setdefault(f"runtime/{h}", src)

    return add_files


def save_compressed_early_exit_model(
    baseline: torch.nn.Module,
    exit_model: torch.nn.Module,
    representation: str | None = None,
    simulate_exit: Callable | None = None,
    input_data: torch.Tensor | None = None,
    directory: str | os.PathLike = "sparsecomp_model",
    *,
    input_shape: tuple[int, ...] | None = None,
    prefix: str = "model",
    overwrite: bool = False,
    tolerance: float | None = None,
    leaf_modules: tuple[type, ...] = (),
    concrete_args: dict | None = None,
    intermittent: bool = False,
    ram_budget: int | None = None,
) -> EarlyExitResult:
    """Emits the baseline (model.c/.h, split into stages) and its exits (model_ee.c/.h) in one directory.

    ``representation`` None: the one ``sparsecomp.compress_NN_models`` recorded on the exit model (or on the
    baseline) when it compressed them, else "csr" -- so a compressed exit model emits exactly the bytes
    budgeted for the backbone and its heads.

    ``ram_budget`` (bytes): when the early-exit arena (restartable stages, the exits' features) needs more,
    the first layers run tile by tile (codegen/tiling.py; a tiled stage lies inside one exit stage, so a
    restarted stage re-runs its tiles), the schedule of fewest extra MACs that fits; else CodegenError
    with the smallest arena reachable. report.json then has a ``tiling`` section. With ``intermittent=True``
    the tile buffers are part of the SC_NVM arena and a stage cut short re-runs its tiles.

    ``intermittent=True``: the incremental API (begin/step/exit) is already resumable after a power failure
    (its arena and step state are SC_NVM); this adds the failure-injection harnesses and Makefile targets
    ``power-fail-check`` and ``qemu-power-fail`` (codegen/intermittent.py, docs/intermittent.md), with
    failure points in begin/step (SC_NVM_HOOK, empty in normal builds) and between the layers of a stage.

    ``simulate_exit`` (default: the exit model's own) is the function that decides which exit is
    taken and masks the features after it; its masking must be the C's (checked), and it gives the
    PyTorch answers of every exit for ``input_data``, which the self-test (``make check``, ``make
    qemu``) compares with the C's one-shot and incremental answers.

    >>> res = save_compressed_early_exit_model(net, ee, "csr", input_data=x[:1],
    ...                                        directory="digits_ee")      # doctest: +SKIP
    >>> res.report["early_exit"]["exits"][0]["macs"]                       # doctest: +SKIP
    """
    emission.check_prefix(prefix)
    representation = api.emit_representation(exit_model if hasattr(exit_model, api.EMIT_ATTR) else baseline,
                                              representation)
    rep = formats.check_representation(representation)
    spec, simulate_exit = _resolve_arguments(baseline, exit_model, simulate_exit, input_data, input_shape)
    example = example_from(input_data if input_data is not None else tuple(input_shape))
    b = _build(baseline, spec, simulate_exit, example, rep, prefix, leaf_modules, concrete_args, ram_budget)
    g, stages, n_exits = b.an.graph, b.an.stages, len(b.an.points)
    _check_name_clashes(g, b.hg, prefix)
    name = type(baseline).__name__
    report = emission.build_report(g, b.plan.memory, prefix, representation, name)
    test_io = ee_expected = None
    if input_data is not None:
        test_io, ee_expected = _pytorch_answers(baseline, exit_model, simulate_exit, example, n_exits, tolerance,
                                                report)  # fmt: skip
    ee_bytes = emission.byte_report(b.hg)
    report["early_exit"] = _early_exit_report(b, spec, report, ee_bytes)
    stage_ctx = [
        {"index": s.index, "ops": list(range(s.start, s.end)), "exit": s.exit,
         "exit_name": b.an.points[s.exit].name if s.exit is not None else None, "macs": s.macs}
        for s in stages
    ]  # fmt: skip
    extra_context = dict(stages=stage_ctx, extra_sources=["model_ee.c"], extra_headers=["model_ee.h"],
                         baseline_sources=["app/baseline_ee.c"])
    tiled = b.schedule is not None and bool(b.schedule.stages)
    if b.schedule is not None:
        report["tiling"] = b.schedule.report(g)
        if tiled:
            extra_context.update(tiling.emission_context(g, b.schedule, emit.model_runtime_headers(g)))
    ctx = _render_context(b, spec, prefix, name, representation, report, ee_bytes, input_data is not None)
    if intermittent:
        ctx["intermittent"] = extra_context["intermittent"] = {"early_exit": True}
        report["intermittent"] = {
            "units": [{"index": s.index, "layers": [op.source for op in g.ops[s.start:s.end]], "macs": s.macs}
                      for s in stages],
            "nvm_bytes": b.plan.memory.arena_bytes + 8, "nvm_arena_bytes": b.plan.memory.arena_bytes,
            "sram_bytes": 0, "normal_arena_bytes": b.plan.baseline_arena_bytes,
            "max_unit_macs": max(s.macs for s in stages),
            "commit": "the step counter (one aligned 32-bit store) after the stage, magic-guarded begin (model_ee.c)",
        }  # fmt: skip
    e = emission.Emission(g, b.plan.memory, prefix, representation, name, report, test_io,
                          extra_context=extra_context, add_files=_ee_files(b.hg, ctx, ee_expected, prefix, intermittent, tiled),
                          what=f"early-exit ({n_exits} {spec.kind} exits, {ee_bytes.total} more weight bytes) ")  # fmt: skip
    res = emission.write_emission(e, directory, overwrite)
    return EarlyExitResult(res.directory, res.report)


# ---- host verification ------------------------------------------------------------------------------
@dataclass
class EarlyExitVerify:
    """C outputs on the host: ``oneshot[k]`` / ``incremental[k]`` (N, classes) for exit k, the last
    index being the full path; ``baseline`` from <prefix>_run; ``reference[k]`` from PyTorch."""

    oneshot: np.ndarray
    incremental: np.ndarray
    baseline: np.ndarray
    reference: np.ndarray
    baseline_reference: np.ndarray
    errors: dict = field(default_factory=dict)


def compile_early_exit(directory: str | os.PathLike, out_dir: Path, cc: str | None = None,
                       extra_flags: tuple[str, ...] = ()) -> Path:  # fmt: skip
    """Builds model.c + model_ee.c + the verification driver with the host compiler (-Werror -pedantic)."""
    d = Path(directory)
    rep = json.loads((d / emit.REPORT_NAME).read_text())
    prefix = rep["prefix"]
    drv = out_dir / "driver_ee.c"
    drv.write_text(emit.environment().get_template("verify_ee_main.c.j2").render(
        prefix=prefix, PREFIX=prefix.upper(), ee=f"{prefix}_ee", EE=f"{prefix}_ee".upper(), version=emission.VERSION))
    exe = out_dir / "driver_ee"
    cc = cc or os.environ.get("CC", "cc")
    cmd = [cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", *extra_flags, f"-I{d}",
           str(d / "model.c"), str(d / "model_ee.c"), str(drv), "-o", str(exe), "-lm"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CodegenError(f"compiling {d} failed:\n{' '.join(cmd)}\n{proc.stderr}")
    return exe


def verify_early_exit(baseline: torch.nn.Module, exit_model: torch.nn.Module, directory: str | os.PathLike,
                      inputs: torch.Tensor, simulate_exit: Callable | None = None, *, cc: str | None = None,
                      extra_flags: tuple[str, ...] = ()) -> EarlyExitVerify:  # fmt: skip
    """Runs the emitted C on every sample of ``inputs`` (N, ...) for every exit, one-shot and
    incremental, and <prefix>_run; returns them with PyTorch's answers (not compared here)."""
    d = Path(directory)
    rep = json.loads((d / emit.REPORT_NAME).read_text())
    n_exits = int(rep["early_exit"]["num_exits"])
    x = inputs.detach().to("cpu").float()
    m, em = prepare_model(baseline), prepare_model(exit_model)
    fn = simulate_exit or getattr(exit_model, "simulate_exit", None)
    with torch.no_grad():
        base_ref = torch.cat([m(x[i : i + 1]) for i in range(len(x))]).reshape(len(x), -1).numpy()
        ref = np.stack([
            torch.cat([em(x[i : i + 1], exit_index=k, simulate_exit=fn) for i in range(len(x))]).reshape(len(x), -1).numpy()
            for k in range(n_exits + 1)
        ])  # fmt: skip
    build = Path(tempfile.mkdtemp(prefix="sparsecomp-ee-verify-"))
    try:
        exe = compile_early_exit(d, build, cc, extra_flags)
        proc = subprocess.run([str(exe)], input=x.numpy().astype("<f4").tobytes(), capture_output=True, timeout=600)
        if proc.returncode != 0:
            raise CodegenError(f"the emitted early-exit model failed with exit code {proc.returncode}: "
                               f"{proc.stderr.decode()}")  # fmt: skip
    finally:
        shutil.rmtree(build, ignore_errors=True)
    classes = ref.shape[-1]
    per = classes * (2 * (n_exits + 1) + 1)
    out = np.frombuffer(proc.stdout, dtype="<f4")
    if out.size != per * len(x):
        raise CodegenError(f"the verification driver wrote {out.size} floats, expected {per * len(x)}")
    out = out.reshape(len(x), 2 * (n_exits + 1) + 1, classes)
    oneshot = out[:, : n_exits + 1].transpose(1, 0, 2)
    incr = out[:, n_exits + 1 : 2 * (n_exits + 1)].transpose(1, 0, 2)
    return EarlyExitVerify(oneshot, incr, out[:, -1], ref, base_ref)
