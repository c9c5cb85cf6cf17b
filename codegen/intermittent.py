"""Intermittent inference (issue 16): a model that survives power failures at any instruction.

``save_compressed_model(..., intermittent=True)`` adds ``<prefix>_run_intermittent`` (and, for
``integer=True``, ``<prefix>_run_int8_intermittent``) and ``<prefix>_intermittent_reset`` to the emitted
model. The inference runs as numbered *units*: unit 0 copies (or quantizes) the input into non-volatile
memory, then one unit per layer. Every activation of the run lives in one arena in ``SC_NVM`` beside
the progress; the arena is planned with the ordinary planner without in-place execution
(``memory.plan_graph(in_place=False, caller_io=False)``), so a unit never writes a buffer it reads and
running it again after a failure recomputes the same bytes. The end of a unit is committed with
``runtime_c/sc_nvm.h`` (two versioned slots with a check word, so a failure inside a commit leaves the
previous commit valid). The output is copied from NVM to the caller's buffer on every call that finds
the inference done, so a reset after the last commit still answers.

The normal ``<prefix>_run`` and its arena are untouched: its C is byte-identical with and without
``intermittent=True``.

Failure injection (``make power-fail-check``, ``make qemu-power-fail``) is rendered from
``templates/power_fail.c.j2`` and ``templates/qemu_power_fail.c.j2``; docs/intermittent.md.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from codegen import emit, ir, tiling
from codegen.emission import VERSION, Emission
from codegen.errors import CodegenError
from codegen.memory import GraphMemory, plan_graph
from codegen.ops import Conv2d, Linear
from codegen.resources import runtime_dir

log = logging.getLogger(__name__)

HEADER = "sc_nvm.h"
SLOT_BYTES = 12  # sc_nvm_slot: seq, unit, check (uint32 each)
HOST_HARNESS = "app/power_fail.c"
BOARD_HARNESS = "app/qemu_power_fail.c"


@dataclass
class Unit:
    """One committed piece of work: ``op`` (index into the graph's ops; None: copy the input in);
    ``tile``: output channels [c0, c1) of the op (layer separation), None: the whole op; ``stage_tile``: the
    op is a tiled stage and the unit is its tile number ``stage_tile`` (tiled execution)."""

    index: int
    op: int | None
    macs: int
    name: str
    tile: tuple[int, int] | None = None
    stage_tile: int | None = None  # op is a tiled stage (tiling.StageOp): the unit runs this tile of it


def _out_channels(op: ir.Op) -> int | None:
    """Output channels a unit of ``op`` can be split into (None: the op cannot be split)."""
    if isinstance(op, Conv2d) and (op.groups == 1 or (op.depthwise_1to1 and op.groups == op.in_shape[0])):
        return op.out_shape[0]
    if isinstance(op, Linear) and op.rows == 1:
        return op.out_features
    return None


# arrays of a row-addressable encoding with a row pointer: its entries index them (the relative-index and
# Huffman streams, and bit-packed codebook indices, are read from their start: not addressable by row)
_ROWPTR_ROLES = {"values", "colidx", "rowptr", "scale"}


def _weight_offsets(e, c0: int) -> dict[str, int] | None:
    """Offsets (elements) that make the arrays of weight encoding ``e`` start at row ``c0``; None: its rows
    cannot be addressed separately (bit-packed dense indices, Huffman streams)."""
    roles = set(e.arrays)
    per_row = {r: c0 for r in roles if r == "scale"}
    if "rowptr" in roles:
        return {"rowptr": c0, **per_row} if roles <= _ROWPTR_ROLES else None
    if roles <= {"values", "scale"} and "values" in roles and e.arrays["values"].count == e.rows * e.cols:
        return {"values": c0 * e.cols, **per_row}
    return None


def _tileable(op: ir.Op) -> str | None:
    """Why ``op`` cannot be split by output channels (None: it can)."""
    c = _out_channels(op)
    if c is None:
        return ("only convolutions (groups 1 or depthwise) and fully connected layers over one position are split "
                "into output-channel tiles")  # fmt: skip
    w = op.encoded.get("weight")
    if w is None or _weight_offsets(w, 1) is None:
        return (f"its weights are stored as {w.encoding if w else 'nothing'}, whose rows cannot be addressed one by "
                "one; choose a representation with dense or CSR rows (float32 or int8)")  # fmt: skip
    for role, e in op.encoded.items():
        if role != "weight" and (e.rows != c or set(e.arrays) != {"values"}):
            return f"its {role} is not one value per output channel"
    return None


def units_of(g: ir.Graph, max_unit_macs: int | None = None, stages: dict[int, tiling.StagePlan] | None = None
             ) -> list[Unit]:  # fmt: skip
    """Unit 0 copies the input; then one unit per op, or with ``max_unit_macs`` as many output-channel tiles
    as keep each unit within the bound (layer separation); a tiled stage (``stages``: op index -> plan) is
    one unit per tile. A unit that cannot be made small enough: CodegenError naming the layer."""
    units = [Unit(0, None, 0, "input")]
    for i, op in enumerate(g.ops):
        if stages and i in stages:
            p = stages[i]
            srcs = [st.op.source for st in p.tiles[0].steps if st.op is not None]
            tile_macs = [sum(st.op.macs() for st in t.steps if st.op is not None) for t in p.tiles]
            if max_unit_macs is not None and max(tile_macs) > max_unit_macs:
                raise CodegenError(
                    f"tiled stage {srcs[0]}..{srcs[-1]}: a tile is one unit of work and its largest tile is "
                    f"{max(tile_macs)} MACs, above max_unit_macs={max_unit_macs}; raise max_unit_macs to at least "
                    f"{max(tile_macs)} or tile the stage on a finer grid (tiling_stages, a lower ram_budget)")
            for k, macs in enumerate(tile_macs):
                units.append(Unit(len(units), i, macs, f"{srcs[0]}..{srcs[-1]} tile {k}", stage_tile=k))
            continue
        macs = op.macs()
        if max_unit_macs is None or macs <= max_unit_macs:
            units.append(Unit(len(units), i, macs, op.source))
            continue
        why = _tileable(op)
        if why is not None:
            raise CodegenError(f"layer {op.source!r} ({op.describe()}): {macs} MACs in one unit, above max_unit_macs="
                               f"{max_unit_macs}, and it cannot be split: {why}. Raise max_unit_macs to at least "
                               f"{macs}")  # fmt: skip
        c = _out_channels(op)
        assert c is not None
        per_channel = macs // c
        if per_channel > max_unit_macs:
            raise CodegenError(f"layer {op.source!r} ({op.describe()}): one output channel is {per_channel} MACs, above "
                               f"max_unit_macs={max_unit_macs}; the smallest unit is one channel: raise max_unit_macs "
                               f"to at least {per_channel}")  # fmt: skip
        n = math.ceil(c / (max_unit_macs // per_channel))
        step = math.ceil(c / n)
        for c0 in range(0, c, step):
            c1 = min(c, c0 + step)
            units.append(Unit(len(units), i, per_channel * (c1 - c0), op.source, (c0, c1)))
    return units


class TileEncoded:
    """An encoding seen from a tile of output channels: the arrays' C references offset to the tile's rows
    (dense values by rows x cols, CSR row pointers by rows: their entries index the whole arrays)."""

    def __init__(self, e, offsets: dict[str, int]):
        self._e = e
        self._offsets = offsets

    def __getattr__(self, name: str):
        return getattr(self._e, name)

    def c_ref(self, role: str) -> str:
        ref = self._e.c_ref(role)
        off = self._offsets.get(role, 0)
        return f"({ref} + {off})" if off and ref != "NULL" else ref

    def c_args(self) -> str:
        return ", ".join([self.c_ref(r) for r in self._e.arrays] + [str(int(v)) for v in self._e.meta.values()])


def tile_op(op: ir.Op, c0: int, c1: int) -> ir.Op:
    """A copy of ``op`` computing output channels [c0, c1) with the op's own kernel and template."""
    t = copy.copy(op)
    n = c1 - c0
    if isinstance(op, Conv2d):
        t.out_shape = (n, *op.out_shape[1:])
        if op.groups != 1:  # depthwise: the tile reads its own input channels
            t.in_shape = (n, *op.in_shape[1:])
            t.groups = n
    else:
        t.out_features = n
    t.encoded = {}
    for role, e in op.encoded.items():
        offsets = _weight_offsets(e, c0) if role == "weight" else {"values": c0 * e.cols}
        assert offsets is not None  # _tileable
        t.encoded[role] = TileEncoded(e, offsets)
    return t


def plan_nvm(g: ir.Graph) -> GraphMemory:
    """The NVM arena: every value (the input and output too) in one arena, no op in place.

    Unit 0 (copying the input) runs at time 0, op i at time i + 1, and the output is read again at
    the end of every call (time len(ops) + 1), so it is never overwritten.
    """
    n = len(g.ops)
    first = {v: n + 2 for v in g.values}
    last = {v: -1 for v in g.values}
    first[g.input] = 0
    for i, op in enumerate(g.ops):
        first[op.output] = min(first[op.output], i + 1)
        for v in op.inputs:
            last[v] = max(last[v], i + 1)
    last[g.output] = n + 1
    last[g.input] = max(last[g.input], 0)
    return plan_graph(g, lifetimes=(first, last), op_time=lambda i: i + 1, in_place=False, caller_io=False)


def check_idempotent(g: ir.Graph, mem: GraphMemory) -> None:
    """Refuses, naming the layer, a unit whose output (or scratch) overlaps a buffer it reads."""
    for op in g.ops:
        out = mem.storage[op.output]
        o0, o1 = out.offset, out.offset + g.values[op.output].nbytes
        spans = [(o0, o1, "output")]
        if op.name in mem.scratch:
            s0 = mem.scratch[op.name]
            spans.append((s0, s0 + op.arena_scratch_bytes(), "kernel scratch"))
        for v in op.inputs:
            st = mem.storage[v]
            i0, i1 = st.offset, st.offset + g.values[v].nbytes
            for a, b, what in spans:
                if a < i1 and i0 < b and (what != "output" or v != op.output):
                    raise CodegenError(
                        f"layer {op.source!r} ({op.describe()}): its {what} overlaps its input {v!r} in the NVM arena, "
                        "so it could not be run again after a power failure; report this model (intermittent=True "
                        "plans every unit out of place)")  # fmt: skip
            if v == op.output:
                raise CodegenError(
                    f"layer {op.source!r} ({op.describe()}) writes its output over its own input, which cannot be made "
                    "idempotent for intermittent=True; emit it without intermittent=True")  # fmt: skip


def model_id(prefix: str, report: dict, units: list[Unit], nvm_bytes: int) -> int:
    """32 bits that change with the model: progress committed by another model (re-flashed firmware) is
    not valid for this one."""
    key = json.dumps([prefix, [[ly["source"], ly["op"], ly["output_shape"], ly["bytes"]] for ly in report["layers"]],
                      [[u.op, u.macs, u.tile] for u in units], nvm_bytes], sort_keys=True)  # fmt: skip
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")


@dataclass
class Intermittent:
    """The intermittent plan of one emission: its units, NVM arena and template context."""

    graph: ir.Graph
    memory: GraphMemory
    units: list[Unit]
    elem_bytes: int  # 4: float arena, 1: int8 arena
    sram_bytes: int  # bounded kernel scratch on the stack (the largest of one unit), plus the tile workspace
    id: int = 0
    bound: int | None = None  # max_unit_macs asked for
    # tiled stages (tiling.StageOp in ``graph``): op index -> plan; their tile buffers and kernel scratch live in
    # a workspace in SRAM (lost at a power failure: a tile is recomputed from the stage input, which is in NVM)
    stages: dict[int, tiling.StagePlan] = field(default_factory=dict)
    orig: list[int] = field(default_factory=list)  # index in the emitted graph of each op of ``graph``

    def op_index(self, u: Unit) -> int:
        """The unit's op as an index into the emitted graph's ops (``graph`` has a StageOp per tiled stage)."""
        assert u.op is not None
        return self.orig[u.op]

    @property
    def workspace_bytes(self) -> int:
        return max((p.workspace_bytes for p in self.stages.values()), default=0)

    @property
    def workspace_elems(self) -> int:
        return -(-self.workspace_bytes // self.elem_bytes)

    @property
    def arena_elems(self) -> int:
        return self.memory.arena_bytes // self.elem_bytes

    @property
    def nvm_bytes(self) -> int:
        return 2 * SLOT_BYTES + _align8(max(self.memory.arena_bytes, self.elem_bytes))  # slots, arena (aligned 8)

    def _at(self, base: str, off_bytes: int) -> str:
        """The C expression of ``base`` + ``off_bytes`` (in elements of the arena's type)."""
        off = off_bytes // self.elem_bytes
        return f"({base} + {off})" if off else base

    def buf(self, value: str) -> str:
        return self._at("arena", self.memory.storage[value].offset)

    def scratch(self, op: ir.Op) -> str:
        return self._at("arena", self.memory.scratch[op.name])

    def out_value(self, u: Unit) -> str:
        return self.graph.input if u.op is None else self.graph.ops[u.op].output

    def _channel(self, value: str) -> int:
        """Elements of one channel of ``value`` (C, ...)."""
        shape = self.graph.values[value].shape
        return math.prod(shape[1:]) if len(shape) > 1 else 1

    def _tile_out(self, u: Unit) -> tuple[int, int]:
        """(element offset in the stage output, elements) of the first row of a stage tile's output window:
        what the failure harness garbles (a tile writes only its window, row by row)."""
        _, _, _, _, _, _, dst_w, dy, dx, _, w = self.tile(u).steps[-1].copy  # the tile into the stage output
        return dy * dst_w + dx, w

    def _tile_bytes(self, u: Unit) -> int:
        c, *_, h, w = self.tile(u).steps[-1].copy
        return c * h * w * self.elem_bytes  # the tile's whole output window

    def out_bytes(self, u: Unit) -> int:
        v = self.out_value(u)
        if u.stage_tile is not None:
            return self._tile_out(u)[1] * self.elem_bytes
        if u.tile is not None:
            return (u.tile[1] - u.tile[0]) * self._channel(v) * self.elem_bytes
        return self.graph.values[v].numel * self.elem_bytes

    def out_ptr(self, u: Unit) -> str:
        if u.stage_tile is not None:
            off = self.memory.storage[self.out_value(u)].offset + self._tile_out(u)[0] * self.elem_bytes
            return self._at("arena", off)
        return self.unit_buf(u)(self.out_value(u))

    def tile(self, u: Unit) -> tiling.TileProgram:
        return self.stages[u.op].tiles[u.stage_tile]

    def tile_buf(self, u: Unit) -> Callable[[str], str]:
        """``buf`` of a stage tile's steps: the stage input and output in the NVM arena, the tile buffers in the
        SRAM workspace ``tile_ws``."""
        p = self.stages[u.op]

        def buf(value: str) -> str:
            return self._at("tile_ws", p.offsets[value]) if value in p.offsets else self.buf(value)

        return buf

    def tile_scratch(self, u: Unit) -> Callable[[ir.Op], str]:
        p = self.stages[u.op]
        return lambda op: self._at("tile_ws", p.scratch[op.name])

    def unit_op(self, u: Unit, op: ir.Op | None = None) -> ir.Op:
        """The op of unit ``u`` (``op``: the form to tile instead of the graph's, e.g. the int8 op), or its tile."""
        assert u.op is not None
        op = self.graph.ops[u.op] if op is None else op
        return op if u.tile is None else tile_op(op, *u.tile)

    def unit_buf(self, u: Unit) -> Callable[[str], str]:
        """``buf`` for the unit's template: a tile's output (and a depthwise tile's input) start at its channel."""
        if u.tile is None:
            return self.buf
        op = self.graph.ops[u.op] if u.op is not None else None
        c0 = u.tile[0]

        def buf(value: str) -> str:
            off = self.memory.storage[value].offset
            if value == op.output or (isinstance(op, Conv2d) and op.groups != 1 and value == op.inputs[0]):
                off += c0 * self._channel(value) * self.elem_bytes
            return self._at("arena", off)

        return buf

    def context(self) -> dict:
        return {
            "units": self.units, "buf": self.buf, "scratch": self.scratch, "out_bytes": self.out_bytes,
            "out_ptr": self.out_ptr, "unit_op": self.unit_op, "unit_buf": self.unit_buf, "id": f"0x{self.id:08x}u",
            "arena_elems": self.arena_elems, "tile": self.tile, "tile_buf": self.tile_buf, "tile_scratch": self.tile_scratch,
            "workspace_elems": self.workspace_elems, "op_index": self.op_index,
            "nvm_bytes": self.nvm_bytes, "arena_bytes": self.memory.arena_bytes, "sram_bytes": self.sram_bytes,
            "output_offset": self.memory.storage[self.graph.output].offset // self.elem_bytes,
        }  # fmt: skip

    def _unit_row(self, u: Unit) -> dict:
        """report.json's entry of unit ``u``."""
        if u.stage_tile is not None:
            op, out = "tile", self._tile_bytes(u)
        else:
            op, out = "copy input" if u.op is None else self.graph.ops[u.op].describe(), self.out_bytes(u)
        return {"index": u.index, "layer": u.name, "op": op, "channels": list(u.tile) if u.tile else None,
                "macs": u.macs, "output_bytes": out}  # fmt: skip

    def report(self, normal_arena_bytes: int) -> dict:
        return {
            "units": [self._unit_row(u) for u in self.units],
            "nvm_bytes": self.nvm_bytes,
            "nvm_arena_bytes": self.memory.arena_bytes,
            "sram_bytes": self.sram_bytes,
            "tile_workspace_bytes": self.workspace_bytes,
            "normal_arena_bytes": normal_arena_bytes,
            "max_unit_macs": max(u.macs for u in self.units),
            "unit_macs_bound": self.bound,
            "model_id": f"0x{self.id:08x}",
            "commit": "two versioned slots {seq, unit, check} in SC_NVM (runtime/sc_nvm.h)",
        }  # fmt: skip


def _align8(n: int) -> int:
    return (n + 7) // 8 * 8


def _stack_scratch(op: ir.Op) -> int:
    kc = op.kernel_choice()
    return kc.scratch.nbytes if kc is not None and kc.scratch is not None and not kc.scratch.arena else 0


def plan(g: ir.Graph, prefix: str, report: dict, elem_bytes: int = 4, max_unit_macs: int | None = None,
         schedule: tiling.Schedule | None = None) -> Intermittent:  # fmt: skip
    """Plans the intermittent run of ``g`` (``elem_bytes``: 4 float, 1 int8; the values of ``g`` have
    that element size in ``nbytes``); ``max_unit_macs`` splits larger layers into output-channel tiles.
    ``schedule`` (tiled execution, ``ram_budget``): each tiled stage runs as one unit per tile, its tile
    buffers in an SRAM workspace; only the values between stages and layers are in the NVM arena."""
    if max_unit_macs is not None and (int(max_unit_macs) != max_unit_macs or max_unit_macs < 1):
        raise CodegenError(f"max_unit_macs must be a positive integer (MACs per unit of work), got {max_unit_macs!r}")
    stages: dict[int, tiling.StagePlan] = {}
    graph = g
    if schedule is not None and schedule.stages:
        graph, stages = tiling.reduced_graph(g, schedule.stages)
    mem = plan_nvm(graph)
    check_idempotent(graph, mem)
    units = units_of(graph, max_unit_macs, stages)
    sram = max((_stack_scratch(op) for op in g.ops), default=0)
    where = {id(op): i for i, op in enumerate(g.ops)}
    orig = [stages[i].stage.first if i in stages else where[id(op)] for i, op in enumerate(graph.ops)]
    it = Intermittent(graph, mem, units, elem_bytes, sram, stages=stages, orig=orig)
    it.sram_bytes += it.workspace_bytes
    it.id = model_id(prefix, report, units, it.nvm_bytes)
    it.bound = max_unit_macs
    log.info("intermittent: %d units, %d NVM bytes (arena %d, normal arena %d)", len(units), it.nvm_bytes,
             mem.arena_bytes, report["memory"]["arena_bytes"])  # fmt: skip
    return it


def add_files(e: Emission) -> Callable[[emit.Rendered], None]:
    """The ``Emission.add_files`` of an intermittent emission: the failure-injection harnesses (app/) and
    runtime/sc_nvm.h."""
    ctx = dict(version=VERSION, prefix=e.prefix, PREFIX=e.prefix.upper(), has_input=e.test_io is not None,
               **e.extra_context)  # fmt: skip

    def add(r: emit.Rendered) -> None:
        add_harnesses(r, ctx)

    return add


def add_harnesses(r: emit.Rendered, ctx: dict) -> None:
    """Renders app/power_fail.c and app/qemu_power_fail.c (``ctx``: prefix, PREFIX, version, has_input; ``ee``
    and ``EE`` for an early-exit model) and copies runtime/sc_nvm.h."""
    env = emit.environment()
    r.copies[f"runtime/{HEADER}"] = runtime_dir() / HEADER
    r.files[HOST_HARNESS] = env.get_template("power_fail.c.j2").render(**ctx)
    r.files[BOARD_HARNESS] = env.get_template("qemu_power_fail.c.j2").render(**ctx)
