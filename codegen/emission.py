"""The emission core: every kind of emission (float, integer, early-exit) builds one ``Emission``
(graph, memory plan, report, sample I/O, template context) and goes through ``write_emission``, which
checks it, renders it, verifies the rendered files against the report and writes the directory.

Also the pieces every emission shares: the generator version, prefix check, the per-layer report
(report.json), the byte report and the self-test tolerance.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from codegen import emit, ir
from codegen.errors import CodegenError
from codegen.memory import GraphMemory

log = logging.getLogger(__name__)

VERSION = "0.1.0"
# an arena above this is more static RAM than most microcontrollers have: emission warns, naming the
# largest buffers (a model for a host or a large part may ignore it)
ARENA_WARN_BYTES = 512 * 1024
RTOL = 1e-4  # self-test tolerance relative to the largest |output|
ATOL = 1e-6


# symbols model.c / model_ee.c define besides the const arrays: <prefix>_<name>
FIXED_SYMBOLS = ("arena", "run", "run_int8", "test_input", "test_expected", "input_q", "quantize_input",
                 "dequantize_output", "stage", "stage_arena",
                 "nvm", "run_intermittent", "run_int8_intermittent", "intermittent_reset")


def allocate_symbols(g: ir.Graph, prefix: str) -> None:
    """Makes every const array name of the graph unique (one allocator for every array a model emits).

    Array names are built as <prefix>_<layer>_<role>[_<part>] from sanitized module paths, so two layers
    can produce the same name (a Linear ``a`` with int8 weights gives ``a_w_scale``, so does a BatchNorm
    ``a_w``). The first array in layer order keeps its name; a later one gets ``_2``, ``_3``, ... A model
    without such a clash is unchanged.
    """
    arrays = [a for op in g.ops for e in op.encoded.values() for a in e.arrays.values()]
    taken = {f"{prefix}_{s}" for s in FIXED_SYMBOLS} | {a.name for a in arrays}
    seen: set[str] = {f"{prefix}_{s}" for s in FIXED_SYMBOLS}
    for a in arrays:
        if a.name in seen:
            base, i = a.name, 2
            while f"{base}_{i}" in taken:
                i += 1
            log.info("array %s renamed %s_%d: another layer's array has that name", base, base, i)
            a.name = f"{base}_{i}"
            taken.add(a.name)
        seen.add(a.name)


def default_tolerance(expected: np.ndarray) -> float:
    """The self-test tolerance on the max abs error: 1e-4 x the largest |output| + 1e-6.

    float32 sums in a different order (BLAS vs the C loops) and BatchNorm folding differ from
    PyTorch by a few ulps of the accumulated values; a wrong index or shape gives errors of the
    order of the outputs themselves.
    """
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    return RTOL * scale + ATOL



def check_prefix(prefix: str) -> None:
    # No "__" and no trailing "_": include guards are <PREFIX>__<FILE>_H, so the first "__" ends
    # the prefix and two models' guards can never collide.
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)*", prefix or "") or prefix.lower().startswith("sc_"):
        raise CodegenError(
            f"prefix {prefix!r} is not usable as a C identifier prefix: use letters, digits and single '_' "
            "between them, starting with a letter (and not 'sc_', reserved for the runtime), e.g. prefix='kws'"
        )



@dataclass
class ArrayInfo:
    name: str
    layer: str  # torch module path (or fx node name)
    role: str
    ctype: str
    count: int
    nbytes: int



@dataclass
class ByteReport:
    """Exact bytes of every const array the emitted C holds; ``total`` is MODEL_WEIGHT_BYTES."""

    total: int
    layers: dict[str, int]
    arrays: list[ArrayInfo] = field(default_factory=list)



def byte_report(g: ir.Graph) -> ByteReport:
    arrays = [
        ArrayInfo(a.name, op.source, role, a.ctype, a.count, a.nbytes)
        for op in g.ops
        for role, e in op.encoded.items()
        for a in e.arrays.values()
        if a.count
    ]
    layers: dict[str, int] = {}
    for a in arrays:
        layers[a.layer] = layers.get(a.layer, 0) + a.nbytes
    return ByteReport(sum(a.nbytes for a in arrays), layers, arrays)



def build_report(g: ir.Graph, mem: GraphMemory, prefix: str, representation: str, model_name: str) -> dict:
    layers = []
    for i, op in enumerate(g.ops):
        w = op.encoded.get("weight")
        layer_bytes = sum(e.nbytes for e in op.encoded.values())
        params = sum(int(np.size(a)) for a in op.params.values())
        nnz = sum(e.nnz for e in op.encoded.values())
        layers.append(
            {
                "index": i,
                "name": op.name,
                "source": op.source,
                "op": op.describe(),
                "torch": op.torch_op,
                "activation": getattr(op, "act", ir.NO_ACT).kind,
                "format": w.encoding if w else ("dense" if op.encoded else "-"),
                "kernel": w.kernel if w else None,
                "density": round(w.density, 6) if w else None,
                "weight_shape": [w.rows, w.cols] if w else None,
                "nnz": nnz,
                "params": params,
                "bytes": layer_bytes,
                "macs": op.macs(),
                "output_shape": list(g.values[op.output].shape),
                "arrays": [
                    {"name": a.name, "role": role, "ctype": a.ctype, "count": a.count, "bytes": a.nbytes}
                    for role, e in op.encoded.items()
                    for a in e.arrays.values()
                    if a.count
                ],
            }
        )
    total = sum(ly["bytes"] for ly in layers)
    return {
        "generator": f"{emit.GENERATOR_KEY} {VERSION}",
        "model": model_name,
        "prefix": prefix,
        "representation": representation,
        "input_shape": list(g.input_value.shape),
        "output_shape": list(g.output_value.shape),
        "layers": layers,
        "totals": {
            "weight_bytes": total,
            "dense_float32_bytes": sum(ly["params"] for ly in layers) * 4,
            "params": sum(ly["params"] for ly in layers),
            "nnz": sum(ly["nnz"] for ly in layers),
            "macs": sum(ly["macs"] for ly in layers),
        },
        "memory": {
            "arena_bytes": mem.arena_bytes,
            "lower_bound_bytes": mem.lower_bound,
            "strategy": mem.strategy,
            "buffers": mem.buffers,
        },
    }



@dataclass
class EmitResult:
    directory: Path
    report: dict

    @property
    def weight_bytes(self) -> int:
        return int(self.report["totals"]["weight_bytes"])

    @property
    def arena_bytes(self) -> int:
        return int(self.report["memory"]["arena_bytes"])

    def table(self) -> str:
        """A per-layer table: op, format, density, bytes, MACs."""
        return format_table(self.report)



def format_table(report: dict) -> str:
    rows = [("layer", "op", "format", "density", "bytes", "MACs", "output")]
    for ly in report["layers"]:
        dens = "" if ly["density"] is None else f"{ly['density']:.3f}"
        out = "x".join(map(str, ly["output_shape"]))
        rows.append((ly["source"], ly["op"] + ("+" + ly["activation"] if ly["activation"] != "none" else ""),
                     ly["format"], dens, str(ly["bytes"]), str(ly["macs"]), out))  # fmt: skip
    t = report["totals"]
    m = report["memory"]
    rows.append(("total", "", "", "", str(t["weight_bytes"]), str(t["macs"]), ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(
        f"weights: {t['weight_bytes']} bytes (dense float32: {t['dense_float32_bytes']}); "
        f"arena: {m['arena_bytes']} bytes (lower bound {m['lower_bound_bytes']})"
    )
    return "\n".join(lines)



@dataclass
class Emission:
    """Everything one emitted directory is rendered from.

    ``test_io``: (input, expected output, tolerance, how the tolerance was chosen) or None.
    ``extra_context``: more template variables (``integer``, ``stages``, ...).
    ``add_files``: called with the rendered files before they are written (early exits add their
    own sources); report.json's file list is made after it.
    """

    graph: ir.Graph
    memory: GraphMemory
    prefix: str
    representation: str
    model_name: str
    report: dict
    test_io: tuple[np.ndarray, np.ndarray, float, str] | None = None
    extra_context: dict = field(default_factory=dict)
    add_files: Callable[[emit.Rendered], None] | None = None
    what: str = ""  # for the log line: "", "integer ", "early-exit "
    arduino: bool = False  # also an Arduino-library layout (library.properties, src/, examples/)


def _check(e: Emission) -> None:
    check_prefix(e.prefix)
    rep = e.report
    total = byte_report(e.graph).total
    if rep["totals"]["weight_bytes"] != total:  # pragma: no cover - one source of truth for bytes
        raise CodegenError(f"report weight bytes {rep['totals']['weight_bytes']} != arrays {total} (bug)")
    if rep["memory"]["arena_bytes"] != e.memory.arena_bytes:  # pragma: no cover
        raise CodegenError("report arena bytes differ from the memory plan (bug)")
    if e.memory.arena_bytes > ARENA_WARN_BYTES:
        big = sorted(e.memory.buffers, key=lambda b: -b["bytes"])[:3]
        log.warning("the activation arena is %d bytes (more than %d, the RAM of a large microcontroller); "
                    "largest buffers: %s. Reduce the input size or the channels of those layers for an MCU",
                    e.memory.arena_bytes, ARENA_WARN_BYTES,
                    ", ".join(f"{b['name']} ({b['bytes']} bytes)" for b in big))  # fmt: skip
    if e.test_io is not None and e.test_io[1].size != e.graph.output_value.numel:
        raise CodegenError(
            f"PyTorch gives {e.test_io[1].size} output values for the sample and the C would compute "
            f"{e.graph.output_value.numel}; the self-test must compare every value (bug: report it with the model)"
        )


# the model's own sources and headers, the part an Arduino library's src/ holds (not app/, board/)
_LIBRARY_DIRS = ("headers/", "runtime/")


def each_adder(adders: list[Callable[[emit.Rendered], None]]) -> Callable[[emit.Rendered], None]:
    """One ``Emission.add_files`` that runs every one of ``adders`` (tiled and intermittent emission together)."""

    def add(r: emit.Rendered) -> None:
        for a in adders:
            a(r)

    return add


def add_build_files(r: emit.Rendered, e: Emission) -> None:
    """Adds the drop-in build files: CMakeLists.txt (a static library target named after the prefix) always;
    with ``e.arduino`` an Arduino library (library.properties, src/ with the model's sources, headers and
    runtime, examples/<prefix>_run/<prefix>_run.ino)."""
    env = emit.environment()
    ctx = dict(version=VERSION, prefix=e.prefix, PREFIX=e.prefix.upper(), model_name=e.model_name,
               representation=e.representation, weight_bytes=e.report["totals"]["weight_bytes"],
               arena_bytes=e.memory.arena_bytes, **e.extra_context)  # fmt: skip
    r.files["CMakeLists.txt"] = env.get_template("CMakeLists.txt.j2").render(**ctx)
    if not e.arduino:
        return
    sources = ["model.c", "model.h", *ctx.get("extra_sources", []), *ctx.get("extra_headers", [])]
    for rel in [*r.files, *r.copies]:
        if rel in sources or rel.startswith(_LIBRARY_DIRS):
            if rel in r.files:
                r.files[f"src/{rel}"] = r.files[rel]
            else:
                r.copies[f"src/{rel}"] = r.copies[rel]
    r.files["library.properties"] = env.get_template("arduino/library.properties.j2").render(**ctx)
    r.files[f"examples/{e.prefix}_run/{e.prefix}_run.ino"] = env.get_template("arduino/example.ino.j2").render(**ctx)


def render_emission(e: Emission) -> emit.Rendered:
    """Checks and renders an emission (nothing is written)."""
    _check(e)
    r = emit.render(
        e.graph, e.memory, prefix=e.prefix, representation=e.representation, model_name=e.model_name,
        version=VERSION, report=e.report, test_io=e.test_io, extra_context=e.extra_context or None,
    )  # fmt: skip
    if e.add_files is not None:
        e.add_files(r)
    add_build_files(r, e)
    r.report["files"] = sorted({*r.files, *r.copies, emit.REPORT_NAME})
    r.files[emit.REPORT_NAME] = json.dumps(r.report, indent=2) + "\n"
    missing = [f for f in r.report["files"] if f not in r.files and f not in r.copies]
    if missing:  # pragma: no cover - report.json lists exactly what is written
        raise CodegenError(f"report.json lists files that are not rendered: {missing} (bug)")
    return r


def write_emission(e: Emission, directory: str | os.PathLike, overwrite: bool) -> EmitResult:
    """The one path every emission takes: check, render, verify, write (``emit.write_directory``)."""
    r = render_emission(e)
    path = emit.write_directory(r, directory, overwrite)
    log.info("emitted %s%s to %s: %d weight bytes, %d arena bytes", e.what, e.model_name, path,
             e.report["totals"]["weight_bytes"], e.memory.arena_bytes)  # fmt: skip
    return EmitResult(Path(path), r.report)
