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

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from codegen import emit, ir
from codegen.emission import VERSION, Emission
from codegen.errors import CodegenError
from codegen.memory import GraphMemory, plan_graph
from codegen.resources import runtime_dir

log = logging.getLogger(__name__)

HEADER = "sc_nvm.h"
SLOT_BYTES = 12  # sc_nvm_slot: seq, unit, check (uint32 each)
HOST_HARNESS = "app/power_fail.c"
BOARD_HARNESS = "app/qemu_power_fail.c"


@dataclass
class Unit:
    """One committed piece of work: ``op`` (index into the graph's ops; None: copy the input in)."""

    index: int
    op: int | None
    macs: int
    name: str


def units_of(g: ir.Graph) -> list[Unit]:
    units = [Unit(0, None, 0, "input")]
    for i, op in enumerate(g.ops):
        units.append(Unit(len(units), i, op.macs(), op.source))
    return units


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
                      [[u.op, u.macs] for u in units], nvm_bytes], sort_keys=True)  # fmt: skip
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")


@dataclass
class Intermittent:
    """The intermittent plan of one emission: its units, NVM arena and template context."""

    graph: ir.Graph
    memory: GraphMemory
    units: list[Unit]
    elem_bytes: int  # 4: float arena, 1: int8 arena
    sram_bytes: int  # bounded kernel scratch on the stack (the largest of one unit)
    id: int = 0

    @property
    def arena_elems(self) -> int:
        return self.memory.arena_bytes // self.elem_bytes

    @property
    def nvm_bytes(self) -> int:
        return 2 * SLOT_BYTES + _align8(max(self.memory.arena_bytes, self.elem_bytes))  # slots, arena (aligned 8)

    def buf(self, value: str) -> str:
        off = self.memory.storage[value].offset // self.elem_bytes
        return f"(arena + {off})" if off else "arena"

    def scratch(self, op: ir.Op) -> str:
        off = self.memory.scratch[op.name] // self.elem_bytes
        return f"(arena + {off})" if off else "arena"

    def out_bytes(self, u: Unit) -> int:
        v = self.graph.input if u.op is None else self.graph.ops[u.op].output
        return self.graph.values[v].numel * self.elem_bytes

    def out_value(self, u: Unit) -> str:
        return self.graph.input if u.op is None else self.graph.ops[u.op].output

    def context(self) -> dict:
        return {
            "units": self.units, "buf": self.buf, "scratch": self.scratch, "out_bytes": self.out_bytes,
            "out_value": self.out_value, "id": f"0x{self.id:08x}u", "arena_elems": self.arena_elems,
            "nvm_bytes": self.nvm_bytes, "arena_bytes": self.memory.arena_bytes, "sram_bytes": self.sram_bytes,
            "output_offset": self.memory.storage[self.graph.output].offset // self.elem_bytes,
        }  # fmt: skip

    def report(self, normal_arena_bytes: int) -> dict:
        g = self.graph
        return {
            "units": [
                {"index": u.index, "layer": u.name, "op": "copy input" if u.op is None else g.ops[u.op].describe(),
                 "macs": u.macs, "output_bytes": self.out_bytes(u)}
                for u in self.units
            ],
            "nvm_bytes": self.nvm_bytes,
            "nvm_arena_bytes": self.memory.arena_bytes,
            "sram_bytes": self.sram_bytes,
            "normal_arena_bytes": normal_arena_bytes,
            "max_unit_macs": max(u.macs for u in self.units),
            "model_id": f"0x{self.id:08x}",
            "commit": "two versioned slots {seq, unit, check} in SC_NVM (runtime/sc_nvm.h)",
        }  # fmt: skip


def _align8(n: int) -> int:
    return (n + 7) // 8 * 8


def _stack_scratch(op: ir.Op) -> int:
    kc = op.kernel_choice()
    return kc.scratch.nbytes if kc is not None and kc.scratch is not None and not kc.scratch.arena else 0


def plan(g: ir.Graph, prefix: str, report: dict, elem_bytes: int = 4) -> Intermittent:
    """Plans the intermittent run of ``g`` (``elem_bytes``: 4 float, 1 int8; the values of ``g`` have
    that element size in ``nbytes``)."""
    mem = plan_nvm(g)
    check_idempotent(g, mem)
    units = units_of(g)
    sram = max((_stack_scratch(op) for op in g.ops), default=0)
    it = Intermittent(g, mem, units, elem_bytes, sram)
    it.id = model_id(prefix, report, units, it.nvm_bytes)
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
