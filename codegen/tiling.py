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

Not tiled: the integer path, average pooling that counts padding (its divisor depends on the bottom
padding, which the tile-local form cannot express), explicit pad/concat/view ops (a stage ends
before them).

>>> from codegen.tiling import Rect, input_rect
>>> input_rect(Rect(0, 2, 0, 2), kernel=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1), hw=(7, 7))
Rect(y0=0, y1=4, x0=0, x1=4)
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import NamedTuple

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
        return "integer kernels are not tiled" if op.integer else None
    if isinstance(op, Pool2d):
        if op.integer:
            return "integer kernels are not tiled"
        if op.mode == "avg" and any(op.padding) and op.count_include_pad and not op.divisor:
            return "average pooling counting the padding is not tiled"
        return None
    if isinstance(op, (Act, ChannelAffine, Binary)):
        return None
    return f"{op.kind} ops are not tiled"


def _needs(op: ir.Op, g: ir.Graph, out: Rect) -> list[Rect]:
    if _windowed(op):
        hw = _chw(g.values[op.inputs[0]].shape)[1:]
        return [input_rect(out, kernel=op.kernel, stride=op.stride, padding=op.padding, dilation=op.dilation, hw=hw)]
    return [out for _ in op.inputs]


def local_op(op: ir.Op, g: ir.Graph, ins: list[str], out: str, in_rect: Rect, out_rect: Rect) -> ir.Op:
    """The op running on one tile: tile-local names, shapes and top/left padding (module docstring)."""
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
                    sizes[name] = 4 * c_in[k] * r.h * r.w
                    steps.append(Step("copy", name, (bufname[u],), copy=(
                        c_in[k], src.h, src.w, r.y0 - src.y0, r.x0 - src.x0, r.h, r.w, 0, 0, r.h, r.w)))
                    ins.append(name)
                else:
                    ins.append(bufname[u])
            name = f"{tag}_v{i}"
            r_out = region[op.output]
            sizes[name] = 4 * _chw(g.values[op.output].shape)[0] * r_out.h * r_out.w
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


class _StageOp(ir.Op):
    """Stands for a whole tiled stage in the graph-level plan (reads the stage input, writes its output)."""


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


def plan_schedule(g: ir.Graph, stages: list[Stage]) -> Schedule:
    """The arena of the graph with ``stages`` tiled: each stage is one step of the graph-level plan,
    its tile workspace an extra buffer live during that step; storage of every tile buffer filled in."""
    layerwise = plan_graph(g).arena_bytes
    if not stages:
        return Schedule([], plan_graph(g), layerwise)
    plans = [plan_stage(g, s, f"t{i}") for i, s in enumerate(sorted(stages, key=lambda s: s.first))]
    ops: list[ir.Op] = []
    extra = []
    i = 0
    by_first = {p.stage.first: p for p in plans}
    while i < len(g.ops):
        if i in by_first:
            p = by_first[i]
            ops.append(_StageOp(f"stage{len(extra)}", "stage", "tiled stage", [p.input], p.output))
            extra.append((f"stage{len(extra)}.workspace", p.workspace_bytes, len(ops) - 1, len(ops) - 1, 0))
            i = p.stage.last + 1
        else:
            ops.append(g.ops[i])
            i += 1
    reduced = ir.Graph(g.values, ops, g.input, g.output)
    mem = plan_graph(reduced, extra=extra)
    for k, p in enumerate(plans):
        base = mem.extra_offsets[f"stage{k}.workspace"]
        for b, off in p.offsets.items():
            if not b.endswith(".scratch"):
                mem.storage[b] = Storage("arena", base + off, b)
        for n, off in p.scratch.items():
            mem.scratch[n] = base + off
    return Schedule(plans, mem, layerwise)


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


def _plan_all(g: ir.Graph, todo: list[list[Stage]]) -> list[Schedule]:
    from tqdm import tqdm

    return [plan_schedule(g, st) for st in tqdm(todo, desc="tiling schedules", disable=len(todo) < 200)]


def schedules(g: ir.Graph, max_grid: int = MAX_GRID) -> list[Schedule]:
    """Every one-stage schedule the planner considers: ops 0..last (each candidate) on each of ``grids``.
    A tqdm bar shows progress on large models."""
    todo = []
    for last in candidate_stages(g):
        h, w = _chw(g.values[g.ops[last].output].shape)[1:]
        todo += [[Stage(0, last, grid)] for grid in grids(h, w, max_grid)]
    return _plan_all(g, todo)


def second_stages(g: ir.Graph, firsts: list[Schedule], max_grid: int = MAX_GRID) -> list[Schedule]:
    """Two-stage schedules: each one-stage schedule of ``firsts`` plus a stage right after it (when a
    layer after the first stage sets the peak, e.g. an expansion layer at the resolution it ends at)."""
    todo = []
    for s in firsts:
        nxt = s.stages[0].stage.last + 1
        for last in candidate_stages(g, nxt) if nxt < len(g.ops) else []:
            h, w = _chw(g.values[g.ops[last].output].shape)[1:]
            todo += [[s.stages[0].stage, Stage(nxt, last, grid)] for grid in grids(h, w, max_grid)]
    return _plan_all(g, todo)


SECOND_STAGE_SEEDS = 6  # one-stage schedules extended by a second stage when none fits


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


def choose_schedule(g: ir.Graph, ram_budget: int) -> Schedule:
    """The schedule of fewest extra MACs whose arena fits ``ram_budget`` bytes: layer by layer, else one
    tiled stage from the input, else two stages (``pareto_seeds`` extended); or CodegenError naming the layer that sets the smallest
    arena reachable."""
    best = plan_schedule(g, [])
    if best.memory.arena_bytes <= ram_budget:
        return best
    tried = [best, *schedules(g)]
    if not any(s.memory.arena_bytes <= ram_budget for s in tried):
        tried += second_stages(g, pareto_seeds(tried[1:]))
    fits = [s for s in tried if s.memory.arena_bytes <= ram_budget]
    if fits:
        choice = min(fits, key=lambda s: (s.extra_macs, s.memory.arena_bytes))
        log.info("ram_budget %d: %s", ram_budget, choice.report(g))
        return choice
    low = min(tried, key=lambda s: (s.memory.arena_bytes, s.extra_macs))
    raise CodegenError(
        f"no schedule fits ram_budget={ram_budget} bytes: the smallest arena reachable is "
        f"{low.memory.arena_bytes} bytes ({_culprit(g, low)}). Raise ram_budget to at least "
        f"{low.memory.arena_bytes}, or shrink that layer (fewer channels, a smaller input)"
    )


def _culprit(g: ir.Graph, s: Schedule) -> str:
    """The layer whose input + output set the peak outside the tiled stages."""
    inside = {i for p in s.stages for i in range(p.stage.first, p.stage.last + 1)}
    arena = [(sum(g.values[v].nbytes for v in {*op.inputs, op.output}
                  if s.memory.storage.get(v, Storage("x")).kind == "arena"), op)
             for i, op in enumerate(g.ops) if i not in inside]  # fmt: skip
    if s.stages and (not arena or max(a for a, _ in arena) < s.stages[0].workspace_bytes):
        p = s.stages[0]
        return (f"the tiled stage {g.ops[p.stage.first].source}..{g.ops[p.stage.last].source}: its output and "
                f"{p.workspace_bytes} bytes of tile buffers on a {p.stage.grid[0]}x{p.stage.grid[1]} grid")  # fmt: skip
    n, op = max(arena, key=lambda t: t[0])
    return f"layer {op.source} holds its input and output, {n} bytes, at once"


def emission_context(g: ir.Graph, schedule: Schedule, runtime_headers: list[str]) -> dict:
    """Template variables of a tiled emission (model.c.j2 reads ``tiling``; sc_tile.h is included)."""
    return {
        "tiling": {
            "first": {p.stage.first: p for p in schedule.stages},
            "inside": {i for p in schedule.stages for i in range(p.stage.first + 1, p.stage.last + 1)},
        },
        "runtime_headers": sorted({*runtime_headers, TILE_HEADER}),
    }


TILE_HEADER = "sc_tile.h"
