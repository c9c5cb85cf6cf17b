"""Tiled (patch-based, MCUNetV2-style) execution of a model's first layers, and the RAM budget.

Layer-by-layer execution needs, at some layer, its whole input and output in RAM at once; for image
models the first layers dominate. A *tiled stage* runs a chain of spatial layers (conv / depthwise /
pointwise, pooling, standalone activations, BatchNorm, add / mul) depth-first over tiles of the
stage's output: for each tile only that tile's intermediates are live. Each tile's receptive fields
are computed backwards (``plan_tile``): exact for stride, dilation and padding; overlapping halos are
recomputed (the extra MACs).

How the C runs a tile (``templates/tiled_stage.j2``): every value of the stage is held as the
rectangle of it the tile needs, clipped to the image, C order (C, h, w). The existing kernels run on
those planes unchanged: an op gets tile-local shapes and a tile-local top/left padding
``p' = p + a0 - o0 * stride`` (>= 0; ``a0`` the first input row held, ``o0`` the first output row),
so rows and columns outside the held plane read as the zero padding they are at the image border and
are never read elsewhere. A consumer that needs a smaller window than the value's rectangle (the
stage input, a residual add) gets a copy of its window first (``sc_tile_copy``, runtime_c/sc_tile.h);
the stage's output tile is copied into place in the stage output. The tile buffers are planned in one
workspace (``memory.MemoryPlanner``) that lives in the arena only while the stage runs.

The integer path tiles the same way: its graph with 1-byte values (``integer_emit.int8_graph``) is
planned, the int8 kernels run on the tile planes (``Int8Handler.tile_form``), ``sc_tile_copy_i8``
(runtime_c/sc_tile.h, its int8 section) moves the windows; integer sums do not depend on the order, so the tiled C is
bit-exact with the untiled C.

The search (``choose_schedule``, ``Search``) tries schedules in order of extra MACs and plans only those
whose lower bound of the arena fits the budget (see ``Search``).

Not tiled: average pooling that counts padding (its divisor depends on the bottom padding, which the
tile-local form cannot express), explicit pad/concat/view ops (a stage ends before them).

>>> from codegen.tiling import Rect, input_rect
>>> input_rect(Rect(0, 2, 0, 2), kernel=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1), hw=(7, 7))
Rect(y0=0, y1=4, x0=0, x1=4)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from codegen import ir
from codegen.errors import CodegenError
from codegen.memory import GraphMemory, MemoryPlanner, Storage, plan_graph
from codegen.ops.activation import Act
from codegen.ops.batchnorm import ChannelAffine
from codegen.ops.conv import Conv2d
from codegen.ops.eltwise import Binary
from codegen.ops.pool import Pool2d

log = logging.getLogger(__name__)

MAX_GRID = 8  # tiles per side the planner tries
SECOND_STAGE_SEEDS = 6  # first stages extended by a second stage when no one-stage schedule fits
THIRD_STAGE_SEEDS = 12  # two-stage schedules extended by a third (their front is longer: keep more of it)


class Rect(NamedTuple):
    """Rows [y0, y1) and columns [x0, x1) of a (C, H, W) plane."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def h(self) -> int:
        return self.y1 - self.y0

    @property
    def w(self) -> int:
        return self.x1 - self.x0

    def union(self, o: Rect) -> Rect:
        return Rect(min(self.y0, o.y0), max(self.y1, o.y1), min(self.x0, o.x0), max(self.x1, o.x1))


def _axis(o0: int, o1: int, k: int, s: int, p: int, d: int, n: int) -> tuple[int, int]:
    """[lo, hi): the first and last input index in [0, n) that outputs o0..o1-1 read (exact: with
    dilation the first taps may fall in the padding and the window starts at a later tap)."""
    lo, hi = n, -1
    for j in range(k):
        off = j * d - p
        first = max(o0, -(off // s))  # smallest o with o*s + off >= 0: ceil(-off / s)
        if first < o1 and first * s + off < n:
            lo = min(lo, first * s + off)
        last = min(o1 - 1, (n - 1 - off) // s)  # largest o with o*s + off <= n-1
        if last >= o0 and last * s + off >= 0:
            hi = max(hi, last * s + off)
    if hi < lo:  # every tap in the padding: an empty window where the outputs start
        lo = min(max(o0 * s - p, 0), n)
        return lo, lo
    return lo, hi + 1


def input_rect(out: Rect, *, kernel, stride, padding, dilation, hw) -> Rect:
    """The input rectangle (clipped to the hw image) a windowed op reads for the outputs ``out``."""
    y = _axis(out.y0, out.y1, kernel[0], stride[0], padding[0], dilation[0], hw[0])
    x = _axis(out.x0, out.x1, kernel[1], stride[1], padding[1], dilation[1], hw[1])
    return Rect(y[0], y[1], x[0], x[1])


def elem_bytes(g: ir.Graph) -> int:
    """Bytes of one activation element: 4 (float), 1 (the int8 graph of ``integer_emit.int8_graph``)."""
    v = g.values[g.input]
    return v.nbytes // v.numel if v.numel else 4


def _chw(shape: tuple[int, ...]) -> tuple[int, ...]:
    """(C, L) signals as (C, 1, L) images (as the 1-D kernels see them)."""
    return (shape[0], 1, shape[1]) if len(shape) == 2 else tuple(shape)


def _windowed(op: ir.Op) -> bool:
    return isinstance(op, (Conv2d, Pool2d))


def tileable(op: ir.Op, g: ir.Graph) -> str | None:
    """None if the op can run inside a tiled stage, else why not."""
    if any(len(g.values[v].shape) not in (2, 3) for v in [*op.inputs, op.output]):
        return "its tensors are not (C, H, W) images or (C, L) signals"
    if isinstance(op, Conv2d):
        return None
    if isinstance(op, Pool2d):
        if op.mode == "avg" and any(op.padding) and op.count_include_pad and not op.divisor:
            return "average pooling counting the padding is not tiled"
        return None
    if isinstance(op, ChannelAffine) and op.channels != g.values[op.output].shape[0]:
        return "a constant operand that varies within a channel's plane is not tiled"
    if isinstance(op, (Act, ChannelAffine, Binary)):
        return None
    return f"{op.kind} ops are not tiled"


def _needs(op: ir.Op, g: ir.Graph, out: Rect) -> list[Rect]:
    if _windowed(op):
        hw = _chw(g.values[op.inputs[0]].shape)[1:]
        return [input_rect(out, kernel=op.kernel, stride=op.stride, padding=op.padding, dilation=op.dilation, hw=hw)]
    return [out for _ in op.inputs]


def local_op(op: ir.Op, g: ir.Graph, ins: list[str], out: str, in_rect: Rect, out_rect: Rect) -> ir.Op:
    """The op running on one tile: tile-local names, shapes and top/left padding (module docstring).
    Attributes set on the op instance outside its fields (the integer pass's ``integer``) carry over.
    A scratch that only buys speed (``ir.KernelChoice.optional``) is dropped: tiles exist to save RAM."""
    new = _local_fields(op, g, ins, out, in_rect, out_rect)
    fields = {f.name for f in dataclasses.fields(op)}
    for k, v in vars(op).items():
        if k not in fields:
            setattr(new, k, v)
    new.drop_optional_scratch(True)
    return new


def _local_fields(op: ir.Op, g: ir.Graph, ins: list[str], out: str, in_rect: Rect, out_rect: Rect) -> ir.Op:
    c_out = _chw(g.values[op.output].shape)[0]
    if _windowed(op):
        c_in = g.values[op.inputs[0]].shape[0]
        pad = (op.padding[0] + in_rect.y0 - out_rect.y0 * op.stride[0],
               op.padding[1] + in_rect.x0 - out_rect.x0 * op.stride[1])  # fmt: skip
        assert pad[0] >= 0 and pad[1] >= 0, (op.name, pad)
        return dataclasses.replace(op, inputs=ins, output=out, in_shape=(c_in, in_rect.h, in_rect.w),
                                   out_shape=(c_out, out_rect.h, out_rect.w), padding=pad)  # fmt: skip
    n = c_out * out_rect.h * out_rect.w
    if isinstance(op, ChannelAffine):
        return dataclasses.replace(op, inputs=ins, output=out, inner=out_rect.h * out_rect.w)
    return dataclasses.replace(op, inputs=ins, output=out, numel=n)


@dataclass
class Stage:
    """Ops ``first..last`` (graph order) run tile by tile; ``grid`` tiles (rows, columns) of the output."""

    first: int
    last: int
    grid: tuple[int, int]

    def ops(self, g: ir.Graph) -> list[ir.Op]:
        return g.ops[self.first : self.last + 1]


@dataclass
class Step:
    kind: str  # "copy" or "op"
    buffer: str  # the buffer written
    reads: tuple[str, ...] = ()
    op: ir.Op | None = None
    index: int = 0  # graph index of the op
    # copy: (c, src_h, src_w, sy, sx, dst_h, dst_w, dy, dx, h, w): C channels of an h x w window of
    # the src plane (src_h x src_w) at (sy, sx) to the dst plane (dst_h x dst_w) at (dy, dx)
    copy: tuple[int, ...] = ()


@dataclass
class TileProgram:
    rect: Rect
    steps: list[Step]
    sizes: dict[str, int]  # buffer -> bytes


def tile_rects(shape: tuple[int, ...], grid: tuple[int, int]) -> list[Rect]:
    _, h, w = shape
    ys = [round(i * h / grid[0]) for i in range(grid[0] + 1)]
    xs = [round(i * w / grid[1]) for i in range(grid[1] + 1)]
    return [Rect(ys[i], ys[i + 1], xs[j], xs[j + 1]) for i in range(grid[0]) for j in range(grid[1])]


def _regions(g: ir.Graph, ops: list[ir.Op], y: str, rect: Rect) -> tuple[dict[str, Rect], dict[tuple[int, int], Rect]]:
    """Backwards: the rectangle of every stage value one output tile needs, and each input's need."""
    region: dict[str, Rect] = {y: rect}
    need: dict[tuple[int, int], Rect] = {}
    for i in range(len(ops) - 1, -1, -1):
        op = ops[i]
        for k, (u, r) in enumerate(zip(op.inputs, _needs(op, g, region[op.output]))):
            need[(i, k)] = r
            region[u] = region[u].union(r) if u in region else r
    return region, need


def stage_io(g: ir.Graph, stage: Stage) -> tuple[str, str]:
    """The stage's one input and one output value; CodegenError when the ops are not such a chain."""
    ops = stage.ops(g)
    made = {op.output for op in ops}
    ext = sorted({u for op in ops for u in op.inputs if u not in made})
    y = ops[-1].output
    later = {u for op in g.ops[stage.last + 1 :] for u in op.inputs} | {g.output}
    leaks = sorted(v for v in made - {y} if v in later)
    why = [f"{op.source}: {r}" for op in ops if (r := tileable(op, g))]
    if len(ext) != 1 or leaks or why:
        raise CodegenError(
            f"layers {ops[0].source}..{ops[-1].source} cannot form a tiled stage: "
            + "; ".join([*why, *([f"{len(ext)} inputs from outside"] if len(ext) != 1 else []),
                         *([f"values used after the stage: {leaks}"] if leaks else [])])  # fmt: skip
        )
    return ext[0], y


def programs(g: ir.Graph, stage: Stage, tag: str) -> list[TileProgram]:
    """The steps every tile runs (same buffers and steps in every tile, sizes may differ)."""
    ops = stage.ops(g)
    x, y = stage_io(g, stage)
    full_x = Rect(0, _chw(g.values[x].shape)[1], 0, _chw(g.values[x].shape)[2])
    _, h, w = _chw(g.values[y].shape)
    if not (1 <= stage.grid[0] <= h and 1 <= stage.grid[1] <= w):
        raise CodegenError(f"a {stage.grid[0]}x{stage.grid[1]} tile grid does not fit the {h}x{w} output of "
                           f"{ops[-1].source}: use at most {h}x{w} tiles")  # fmt: skip
    rects = tile_rects(_chw(g.values[y].shape), stage.grid)
    per_tile = [_regions(g, ops, y, r) for r in rects]

    def crop(i: int, k: int) -> bool:  # does input k of op i need a window copied out of its value?
        u = ops[i].inputs[k]
        return any(need[(i, k)] != (full_x if u == x else region[u]) for region, need in per_tile)

    crops = {(i, k) for i, op in enumerate(ops) for k in range(len(op.inputs)) if crop(i, k)}
    es = elem_bytes(g)
    out: list[TileProgram] = []
    for rect, (region, need) in zip(rects, per_tile):
        steps: list[Step] = []
        sizes: dict[str, int] = {}
        bufname = {x: x}
        for i, op in enumerate(ops):
            c_in = [_chw(g.values[u].shape)[0] for u in op.inputs]
            ins = []
            for k, u in enumerate(op.inputs):
                if (i, k) in crops:
                    src = full_x if u == x else region[u]
                    r = need[(i, k)]
                    name = f"{tag}_c{i}_{k}"
                    sizes[name] = es * c_in[k] * r.h * r.w
                    steps.append(Step("copy", name, (bufname[u],), copy=(
                        c_in[k], src.h, src.w, r.y0 - src.y0, r.x0 - src.x0, r.h, r.w, 0, 0, r.h, r.w)))
                    ins.append(name)
                else:
                    ins.append(bufname[u])
            name = f"{tag}_v{i}"
            r_out = region[op.output]
            sizes[name] = es * _chw(g.values[op.output].shape)[0] * r_out.h * r_out.w
            in_r = need[(i, 0)]
            lop = local_op(op, g, ins, name, in_r, r_out)
            steps.append(Step("op", name, tuple(ins), lop, stage.first + i))
            bufname[op.output] = name
        c, h, w = _chw(g.values[y].shape)
        steps.append(Step("copy", y, (bufname[y],), copy=(c, rect.h, rect.w, 0, 0, h, w, rect.y0, rect.x0,
                                                           rect.h, rect.w)))  # fmt: skip
        out.append(TileProgram(rect, steps, sizes))
    return out


@dataclass
class StagePlan:
    stage: Stage
    input: str
    output: str
    tiles: list[TileProgram]
    workspace_bytes: int
    offsets: dict[str, int]  # buffer -> offset in the workspace (bytes)
    scratch: dict[str, int]  # op name -> offset of its kernel scratch in the workspace
    macs: int  # MACs of the stage's ops run tile by tile
    base_macs: int  # the same ops run layer by layer


def plan_stage(g: ir.Graph, stage: Stage, tag: str = "t0") -> StagePlan:
    x, y = stage_io(g, stage)
    tiles = programs(g, stage, tag)
    steps = tiles[0].steps
    size = {b: max(t.sizes.get(b, 0) for t in tiles) for b in tiles[0].sizes}
    scratch = {}
    for t in tiles:
        for s in t.steps:
            if s.op is not None:
                scratch[s.op.name] = max(scratch.get(s.op.name, 0), s.op.arena_scratch_bytes())
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for j, s in enumerate(steps):
        first.setdefault(s.buffer, j)
        for r in s.reads:
            last[r] = j
    mp = MemoryPlanner()
    for b, n in size.items():
        mp.add_buffer(b, n, first[b], max(last.get(b, first[b]), first[b]), side=first[b] % 2)
    for j, s in enumerate(steps):
        if s.op is not None and scratch.get(s.op.name):
            mp.add_buffer(f"{s.op.name}.scratch", scratch[s.op.name], j, j)
    plan = mp.plan()
    macs = sum(s.op.macs() for t in tiles for s in t.steps if s.op is not None)
    base = sum(op.macs() for op in stage.ops(g))
    sc = {n: plan.offsets[f"{n}.scratch"] for n in scratch if f"{n}.scratch" in plan.offsets}
    return StagePlan(stage, x, y, tiles, plan.arena_bytes, plan.offsets, sc, macs, base)


class StageOp(ir.Op):
    """Stands for a whole tiled stage in the graph-level plan (reads the stage input, writes its output);
    a plain step to a planner: no in-place execution, no kernel scratch (early_exit.plan_stages)."""


@dataclass
class Schedule:
    stages: list[StagePlan]
    memory: GraphMemory
    layerwise_bytes: int

    @property
    def extra_macs(self) -> int:
        return sum(s.macs - s.base_macs for s in self.stages)

    def report(self, g: ir.Graph) -> dict:
        return {
            "layerwise_arena_bytes": self.layerwise_bytes,
            "peak_ram_bytes": self.memory.arena_bytes,
            "extra_macs": self.extra_macs,
            "stages": [
                {"layers": [op.source for op in s.stage.ops(g)], "first": s.stage.first, "last": s.stage.last,
                 "grid": list(s.stage.grid), "tiles": len(s.tiles), "workspace_bytes": s.workspace_bytes,
                 "macs": s.macs, "extra_macs": s.macs - s.base_macs}
                for s in self.stages
            ],
        }  # fmt: skip


def plan_schedule(g: ir.Graph, stages: list[Stage], search: Search | None = None) -> Schedule:
    """The arena of the graph with ``stages`` tiled: each stage is one step of the graph-level plan,
    its tile workspace an extra buffer live during that step; storage of every tile buffer filled in.
    ``search``: the caches of a schedule search on ``g`` (the layer-by-layer plan, stage plans)."""
    search = search or Search(g)
    if not stages:
        return Schedule([], plan_graph(g), search.layerwise.arena_bytes)
    plans = [search.stage(s, f"t{i}") for i, s in enumerate(sorted(stages, key=lambda s: s.first))]
    reduced, at = reduced_graph(g, plans)
    extra = [(f"stage{k}.workspace", p.workspace_bytes, i, i, 0) for k, (i, p) in enumerate(sorted(at.items()))]
    mem = plan_graph(reduced, extra=extra)
    for k, p in enumerate(plans):
        place_workspace(mem, p, mem.extra_offsets[f"stage{k}.workspace"])
    return Schedule(plans, mem, search.layerwise.arena_bytes)


def reduced_graph(g: ir.Graph, plans: list[StagePlan]) -> tuple[ir.Graph, dict[int, StagePlan]]:
    """``g`` with each planned stage replaced by one ``StageOp`` (stage input -> stage output), and the
    plan of the stage at each StageOp's index in the reduced graph's ops."""
    ops: list[ir.Op] = []
    at: dict[int, StagePlan] = {}
    by_first = {p.stage.first: p for p in plans}
    i = 0
    while i < len(g.ops):
        if i in by_first:
            p = by_first[i]
            at[len(ops)] = p
            ops.append(StageOp(f"stage{len(at) - 1}", "stage", "tiled stage", [p.input], p.output))
            i = p.stage.last + 1
        else:
            ops.append(g.ops[i])
            i += 1
    return ir.Graph(g.values, ops, g.input, g.output), at


def place_workspace(mem: GraphMemory, p: StagePlan, base: int) -> None:
    """Storage of the stage's tile buffers and kernel scratch, its workspace at ``base`` in the arena."""
    for b, off in p.offsets.items():
        if not b.endswith(".scratch"):
            mem.storage[b] = Storage("arena", base + off, b)
    for n, off in p.scratch.items():
        mem.scratch[n] = base + off


def _axis_regions(g: ir.Graph, ops: list[ir.Op], y: str, lo: int, hi: int, axis: int
                  ) -> tuple[dict[str, tuple[int, int]], dict[tuple[int, int], tuple[int, int]]]:  # fmt: skip
    """``_regions`` along one axis (0: rows, 1: columns): a tile's rectangles are the products of its row
    band's and its column band's ranges (receptive fields and unions act on each axis alone)."""
    region: dict[str, tuple[int, int]] = {y: (lo, hi)}
    need: dict[tuple[int, int], tuple[int, int]] = {}
    for i in range(len(ops) - 1, -1, -1):
        op = ops[i]
        r = region[op.output]
        if _windowed(op):
            n = _chw(g.values[op.inputs[0]].shape)[1 + axis]
            r = _axis(r[0], r[1], op.kernel[axis], op.stride[axis], op.padding[axis], op.dilation[axis], n)
        for k, u in enumerate(op.inputs):
            need[(i, k)] = r
            region[u] = (min(region[u][0], r[0]), max(region[u][1], r[1])) if u in region else r
    return region, need


@dataclass
class Estimate:
    """What a stage costs without planning its tiles: the exact extra MACs and a lower bound of its
    workspace (the largest input + output buffers of one op on one tile)."""

    extra_macs: int
    workspace_lb: int


class Search:
    """One model's schedule search (``choose_schedule``): the layer-by-layer plan, stage plans and
    estimates cached, and lower bounds of the arena so that most schedules are never planned.

    A schedule's arena is at least (1) for every op outside the stages, the bytes of its arena inputs and
    output (``op_lb``; an op that may write over its input counts its inputs only), and (2) for every
    stage, its workspace lower bound plus its arena input and output (all live while it runs)."""

    def __init__(self, g: ir.Graph, plan_fn: Callable[[list[Stage]], Schedule] | None = None,
                 allowed: Callable[[Stage], bool] | None = None):  # fmt: skip
        """``plan_fn``: plans a schedule (default ``plan_schedule``; early exits plan their own arena);
        ``allowed``: which stages may be tiled (default all that ``candidate_stages`` finds)."""
        self.g = g
        self.layerwise = plan_graph(g)
        self.plan_fn = plan_fn
        self.allowed = allowed
        self.untiled = plan_fn([]) if plan_fn else Schedule([], self.layerwise, self.layerwise.arena_bytes)
        self._plans: dict[tuple, StagePlan] = {}
        self._estimates: dict[tuple, Estimate] = {}
        self._candidates: dict[int, list[int]] = {}
        self._io: dict[tuple[int, int], tuple[str, str]] = {}
        self.planned = 0  # schedules planned in full (plan_graph of the reduced graph)
        out_chain = self._may_share_output()

        def arena(v: str) -> int:
            if v == g.input or v in out_chain:
                return 0
            return g.values[v].nbytes

        self.arena_bytes = arena
        self.op_lb = []
        for op in g.ops:
            ins = sum(arena(v) for v in dict.fromkeys(op.inputs))
            own = 0 if op.overwrites_input() else arena(op.output)
            self.op_lb.append(ins + own + op.required_arena_scratch_bytes())

    def _may_share_output(self) -> set[str]:
        """Values the planner may put in the caller's output buffer (in-place chains ending at the output)."""
        g = self.g
        chain = {g.output}
        for op in reversed(g.ops):
            if op.output in chain and op.overwrites_input():
                chain.update(op.inputs if op.inplace else op.inputs[:1])
        return chain

    def candidates(self, first: int) -> list[int]:
        if first not in self._candidates:
            self._candidates[first] = candidate_stages(self.g, first) if first < len(self.g.ops) else []
        return self._candidates[first]

    def stage(self, st: Stage, tag: str = "t0") -> StagePlan:
        key = (st.first, st.last, tuple(st.grid), tag)
        if key not in self._plans:
            self._plans[key] = plan_stage(self.g, st, tag)
        return self._plans[key]

    def estimate(self, st: Stage) -> Estimate:
        key = (st.first, st.last, tuple(st.grid))
        if key not in self._estimates:
            self._estimates[key] = self._estimate(st)
        return self._estimates[key]

    def io(self, st: Stage) -> tuple[str, str]:
        """``stage_io``, cached."""
        key = (st.first, st.last)
        if key not in self._io:
            self._io[key] = stage_io(self.g, st)
        return self._io[key]

    def _estimate(self, st: Stage) -> Estimate:
        g = self.g
        ops = st.ops(g)
        x, y = self.io(st)
        _, h, w = _chw(g.values[y].shape)
        rows = [_axis_regions(g, ops, y, r.y0, r.y1, 0) for r in tile_rects((1, h, 1), (st.grid[0], 1))]
        cols = [_axis_regions(g, ops, y, r.x0, r.x1, 1) for r in tile_rects((1, 1, w), (1, st.grid[1]))]

        def ext(regions: list, key) -> np.ndarray:  # the extent of ``key`` in each row (column) band
            return np.array([rg[key][1] - rg[key][0] for rg in regions], dtype=np.int64)

        extra = 0
        full_x = _chw(g.values[x].shape)
        lb = 0
        for i, op in enumerate(ops):
            c_out, oh, ow = _chw(g.values[op.output].shape)
            hr, wc = ext([r for r, _ in rows], op.output), ext([c for c, _ in cols], op.output)
            m = op.macs()
            if m:
                if m % (oh * ow):  # pragma: no cover - MACs of the tiled ops grow with the output plane
                    raise CodegenError(f"layer {op.source}: MACs not proportional to the output size (bug)")
                extra += m // (oh * ow) * int(hr.sum()) * int(wc.sum()) - m
            n = c_out * np.outer(hr, wc)  # bytes / element size of the op's buffers on each tile
            for k, u in enumerate(op.inputs):
                nr, nc = ext([nd for _, nd in rows], (i, k)), ext([nd for _, nd in cols], (i, k))
                part = _chw(g.values[u].shape)[0] * np.outer(nr, nc)
                if u == x:  # read in place from the stage input where the tile needs all of it
                    part = part * ~np.outer(nr == full_x[1], nc == full_x[2])
                n = n + part
            lb = max(lb, int(n.max()))
        return Estimate(extra, elem_bytes(g) * lb)

    def extra_macs(self, stages: list[Stage]) -> int:
        return sum(self.estimate(s).extra_macs for s in stages)

    def lower_bound(self, stages: list[Stage]) -> int:
        """A lower bound of the arena of ``stages`` (class docstring), without planning."""
        inside = [False] * len(self.g.ops)
        lb = 0
        for s in stages:
            inside[s.first : s.last + 1] = [True] * (s.last - s.first + 1)
            x, y = self.io(s)
            lb = max(lb, self.estimate(s).workspace_lb + self.arena_bytes(x) + self.arena_bytes(y))
        return max([lb, *(b for b, ins in zip(self.op_lb, inside) if not ins)])

    def plan(self, stages: list[Stage]) -> Schedule:
        self.planned += 1
        return self.plan_fn(stages) if self.plan_fn else plan_schedule(self.g, stages, self)

    def _ok(self, st: Stage) -> bool:
        return self.allowed is None or self.allowed(st)

    def one_stage(self, max_grid: int = MAX_GRID) -> list[list[Stage]]:
        """Every one-stage schedule considered: ops 0..last (each candidate) on each of ``grids``."""
        out = []
        for last in self.candidates(0):
            h, w = _chw(self.g.values[self.g.ops[last].output].shape)[1:]
            out += [[Stage(0, last, grid)] for grid in grids(h, w, max_grid) if self._ok(Stage(0, last, grid))]
        return out

    def two_stage(self, firsts: list[Stage], max_grid: int = MAX_GRID) -> list[list[Stage]]:
        """Each stage of ``firsts`` (from the input) followed by a stage right after it."""
        return self.extend([[a] for a in firsts], max_grid)

    def extend(self, prefixes: list[list[Stage]], max_grid: int = MAX_GRID) -> list[list[Stage]]:
        """Each schedule of ``prefixes`` followed by one more stage right after its last stage."""
        out = []
        for pre in prefixes:
            a = pre[-1]
            for last in self.candidates(a.last + 1):
                h, w = _chw(self.g.values[self.g.ops[last].output].shape)[1:]
                out += [[*pre, Stage(a.last + 1, last, grid)] for grid in grids(h, w, max_grid)
                        if self._ok(Stage(a.last + 1, last, grid))]  # fmt: skip
        return out

    def front(self, cands: list[list[Stage]], n: int = SECOND_STAGE_SEEDS) -> list[list[Stage]]:
        """Up to ``n`` schedules of ``cands`` to extend, as ``pareto_seeds`` but on the lower bound of the peak
        instead of the planned peak: on the front of (extra MACs, ``lower_bound``), spread evenly along it."""
        front: list[list[Stage]] = []
        for c in sorted(cands, key=lambda c: (self.extra_macs(c), self.lower_bound(c))):
            if not front or self.lower_bound(c) < self.lower_bound(front[-1]):
                front.append(c)
        if len(front) > n:
            front = [front[round(i * (len(front) - 1) / (n - 1))] for i in range(n)]
        return front

    def seeds(self, one: list[list[Stage]], n: int = SECOND_STAGE_SEEDS) -> list[Stage]:
        """Up to ``n`` first stages to extend by a second stage (``front`` of the one-stage schedules)."""
        return [c[0] for c in self.front(one, n)]

    def considered(self) -> list[list[Stage]]:
        """Every schedule ``choose_schedule`` weighs: one tiled stage from the input (each candidate extent
        and grid), two stages (``seeds`` extended by a stage after them) and three (the ``front`` of the
        two-stage schedules extended once more: a later block whose expanded activations set the peak gets
        its own stage)."""
        one = self.one_stage()
        two = self.two_stage(self.seeds(one))
        return one + two + self.extend(self.front(two, THIRD_STAGE_SEEDS))

    def fewest_macs_fitting(self, cands: list[list[Stage]], budget: int) -> Schedule | None:
        """The schedule of fewest extra MACs (then smallest arena) among ``cands`` that fits ``budget``:
        candidates in order of extra MACs; those whose lower bound exceeds the budget are not planned."""
        found: Schedule | None = None
        for c in sorted(cands, key=lambda c: (self.extra_macs(c), self.lower_bound(c))):
            if found is not None and self.extra_macs(c) > found.extra_macs:
                break
            if self.lower_bound(c) > budget:
                continue
            s = self.plan(c)
            if s.memory.arena_bytes <= budget and (found is None or s.memory.arena_bytes < found.memory.arena_bytes):
                found = s
        return found

    def lowest(self, cands: list[list[Stage]]) -> Schedule:
        """The schedule of smallest arena (then fewest extra MACs) among ``cands`` and layer by layer:
        in order of lower bound, stopping when the bound reaches the best arena found."""
        best = self.untiled
        for c in sorted(cands, key=lambda c: (self.lower_bound(c), self.extra_macs(c))):
            if self.lower_bound(c) > best.memory.arena_bytes:
                break
            s = self.plan(c)
            if (s.memory.arena_bytes, s.extra_macs) < (best.memory.arena_bytes, best.extra_macs):
                best = s
        return best


def candidate_stages(g: ir.Graph, first: int = 0) -> list[int]:
    """Indices ``last`` such that ops first..last form a tiled stage (one input, nothing of it used later)."""
    out = []
    for last in range(first, len(g.ops)):
        if tileable(g.ops[last], g):
            break
        try:
            stage_io(g, Stage(first, last, (1, 1)))
        except CodegenError:
            continue
        out.append(last)
    return out


def grids(h: int, w: int, max_grid: int = MAX_GRID) -> list[tuple[int, int]]:
    """The tile grids tried on an h x w output: near-square (rows and columns differ by at most one),
    at most ``max_grid`` per side and the output size, not 1x1; 1 x n for 1-D signals (h == 1)."""
    if h == 1:
        return [(1, n) for n in range(2, min(max_grid, w) + 1)]
    return [(a, b) for a in range(1, min(max_grid, h) + 1) for b in range(max(1, a - 1), min(max_grid, w, a + 1) + 1)
            if a * b > 1]  # fmt: skip


def _plan_all(search: Search, todo: list[list[Stage]]) -> list[Schedule]:
    from tqdm import tqdm

    return [search.plan(st) for st in tqdm(todo, desc="tiling schedules", disable=len(todo) < 200)]


def schedules(g: ir.Graph, max_grid: int = MAX_GRID, search: Search | None = None) -> list[Schedule]:
    """Every one-stage schedule the planner considers (``Search.one_stage``), each planned in full (for
    benchmarks and tests; ``choose_schedule`` plans few of them). A tqdm bar shows progress on large models."""
    search = search or Search(g)
    return _plan_all(search, search.one_stage(max_grid))


def second_stages(g: ir.Graph, firsts: list[Schedule], max_grid: int = MAX_GRID,
                  search: Search | None = None) -> list[Schedule]:  # fmt: skip
    """Two-stage schedules: each one-stage schedule of ``firsts`` plus a stage right after it (when a
    layer after the first stage sets the peak, e.g. an expansion layer at the resolution it ends at)."""
    search = search or Search(g)
    return _plan_all(search, search.two_stage([s.stages[0].stage for s in firsts], max_grid))


def pareto_seeds(one: list[Schedule], n: int = SECOND_STAGE_SEEDS) -> list[Schedule]:
    """Up to ``n`` one-stage schedules on the front of (extra MACs, peak): none of the others has both
    fewer extra MACs and a lower peak; spread evenly along the front when it holds more."""
    front: list[Schedule] = []
    for s in sorted(one, key=lambda s: (s.extra_macs, s.memory.arena_bytes)):
        if not front or s.memory.arena_bytes < front[-1].memory.arena_bytes:
            front.append(s)
    if len(front) <= n:
        return front
    return [front[round(i * (len(front) - 1) / (n - 1))] for i in range(n)]


def choose_schedule(g: ir.Graph, ram_budget: int, search: Search | None = None) -> Schedule:
    """The schedule of fewest extra MACs whose arena fits ``ram_budget`` bytes: layer by layer, else among
    ``Search.considered``: one tiled stage from the input, two and three stages (each extended from the
    front of the shorter ones; small stages often recompute less than one deep one); or CodegenError naming
    the layer that sets the smallest arena reachable among those.
    Lower bounds and cached per-stage costs (``Search``) keep most schedules from being planned."""
    search = search or Search(g)
    if search.untiled.memory.arena_bytes <= ram_budget:
        return search.untiled
    cands = search.considered()
    choice = search.fewest_macs_fitting(cands, ram_budget)
    if choice is not None:
        log.info("ram_budget %d: %s (%d schedules planned)", ram_budget, choice.report(g), search.planned)
        return choice
    low = search.lowest(cands)
    raise CodegenError(
        f"no schedule fits ram_budget={ram_budget} bytes: the smallest arena reachable is "
        f"{low.memory.arena_bytes} bytes ({_culprit(g, low, search)}). Raise ram_budget to at least "
        f"{low.memory.arena_bytes}, or shrink that layer (fewer channels, a smaller input)"
    )


def _culprit(g: ir.Graph, s: Schedule, search: Search) -> str:
    """The layer whose buffers (inputs, output, kernel scratch; ``Search.op_lb``) set the peak outside the
    tiled stages, or the stage whose workspace does."""
    inside = {i for p in s.stages for i in range(p.stage.first, p.stage.last + 1)}
    arena = [(search.op_lb[i], op) for i, op in enumerate(g.ops) if i not in inside]
    if s.stages and (not arena or max(a for a, _ in arena) < max(p.workspace_bytes for p in s.stages)):
        p = max(s.stages, key=lambda p: p.workspace_bytes)
        return (f"the tiled stage {g.ops[p.stage.first].source}..{g.ops[p.stage.last].source}: its output and "
                f"{p.workspace_bytes} bytes of tile buffers on a {p.stage.grid[0]}x{p.stage.grid[1]} grid")  # fmt: skip
    n, op = max(arena, key=lambda t: t[0])
    return f"layer {op.source} needs {n} bytes at once: its arena inputs, output and kernel scratch"


def emission_context(g: ir.Graph, schedule: Schedule, runtime_headers: list[str], tile_qop=None) -> dict:
    """Template variables of a tiled emission (model.c.j2 / model_int8.c.j2 read ``tiling``; sc_tile.h
    is included). ``tile_qop``: for the integer path, the QOp (``integer.QOp``) of a tile-local op."""
    return {
        "tiling": {
            "first": {p.stage.first: p for p in schedule.stages},
            "inside": {i for p in schedule.stages for i in range(p.stage.first + 1, p.stage.last + 1)},
            "qop": tile_qop,
        },
        "runtime_headers": sorted({*runtime_headers, TILE_HEADER}),
    }


TILE_HEADER = "sc_tile.h"
