"""Rendering: IR + encodings + memory plan -> the files of the emitted directory.

Jinja2 runs with StrictUndefined, so a missing variable is an error, not empty text. Output is
deterministic: the same model and arguments give byte-identical files.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np

from codegen import ir
from codegen.errors import CodegenError
from codegen.formats import CArray
from codegen.memory import GraphMemory
from codegen.resources import runtime_dir, templates_dir

log = logging.getLogger(__name__)

GENERATOR_KEY = "sparsecomp"
# runtime headers that include another runtime header themselves (copied along, not included by model.c)
RUNTIME_INCLUDES = {"sc_quant.h": ("sc_bits.h",), "sc_int8.h": ("sc_bits.h",)}
REPORT_NAME = "report.json"


_SPECIAL = {"inf": "INFINITY", "-inf": "(-INFINITY)", "nan": "NAN", "-nan": "NAN"}  # from <math.h>


def cfloat(x: float) -> str:
    """A float32 as a C literal that round-trips exactly (9 significant digits); inf/NaN as math.h macros."""
    s = f"{float(np.float32(x)):.9g}"
    if s in _SPECIAL:
        return _SPECIAL[s]
    if not any(ch in s for ch in ".en"):
        s += ".0"
    return s + "f"


def carray_body(a: CArray) -> str:
    if a.ctype == "float":
        v = np.asarray(a.values, dtype=np.float32).astype(np.float64)
        items = np.char.mod("%.9g", v)
        plain = ~(np.char.find(items, ".") >= 0) & ~(np.char.find(items, "e") >= 0)
        items = np.where(plain, np.char.add(items, ".0"), items)
        items = np.char.add(items, "f")
        for text, macro in _SPECIAL.items():  # weights are checked finite; sample inputs may not be
            items = np.where(np.char.equal(items, text + ".0f"), macro, items)
        per = 8
    else:
        items = np.asarray(a.values).astype(np.int64).astype(str)
        per = 16
    lines = [", ".join(items[i : i + per]) for i in range(0, len(items), per)]
    return ",\n".join("    " + ln for ln in lines)


def _ccomment(s: str) -> str:
    return s.replace("*/", "* /").replace("\n", " ")


def environment(extra_dirs: list[str] | tuple[str, ...] = ()) -> jinja2.Environment:
    """The Jinja2 environment: extension directories first, then the packaged templates (cached:
    compiled templates are reused across emissions)."""
    return _environment(tuple(map(str, extra_dirs)))


@functools.lru_cache(maxsize=16)
def _environment(extra_dirs: tuple[str, ...]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([*map(str, extra_dirs), str(templates_dir())]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["cfloat"] = cfloat
    env.filters["carray"] = carray_body
    env.filters["ccomment"] = _ccomment
    return env


@dataclass
class Rendered:
    files: dict[str, str] = field(default_factory=dict)  # relative path -> text
    copies: dict[str, Path] = field(default_factory=dict)  # relative path -> source file
    report: dict = field(default_factory=dict)


def render(
    g: ir.Graph,
    mem: GraphMemory,
    *,
    prefix: str,
    representation: str,
    model_name: str,
    version: str,
    report: dict,
    test_io: tuple[np.ndarray, np.ndarray, float, str] | None,
    extra_context: dict | None = None,
) -> Rendered:
    """Renders every file of the emitted directory. ``extra_context``: more template variables
    (codegen.early_exit passes ``stages`` and extra sources/headers; ordinary emission passes none)."""
    ext_dirs = sorted({op.extension_dir for op in g.ops if op.extension_dir})
    env = environment(ext_dirs)
    out = Rendered(report=report)
    P = prefix.upper()

    def buf(value: str) -> str:
        s = mem.storage[value]
        if s.kind == "arena":
            return f"(arena + {s.offset // 4})" if s.offset else "arena"
        return s.kind

    def bias(op: ir.Op) -> str:
        return op.encoded["bias"].c_ref("values") if "bias" in op.encoded else "NULL"

    def scratch(op: ir.Op) -> str:  # the op's kernel scratch in the arena (memory.GraphMemory.scratch)
        off = mem.scratch[op.name] // 4
        return f"(arena + {off})" if off else "arena"

    def shape(value: str) -> str:
        return "x".join(str(d) for d in g.values[value].shape)

    weighted = [op for op in g.ops if op.encoded]
    layer_headers = [f"{op.name}.h" for op in weighted]
    runtime_headers = sorted({h for op in g.ops for h in op.runtime}
                             | {h for op in g.ops for e in op.encoded.values() for h in e.runtime})
    # sc_act compiles only the activations the model uses (a ReLU model links no expf/tanhf)
    acts = {getattr(op, "act", ir.NO_ACT).kind for op in g.ops}
    act_mask = sum(1 << i for i, kind in enumerate(ir.ACTIVATIONS) if kind in acts and kind != "none")
    common = dict(
        act_mask=act_mask, act_kinds=sorted(acts - {"none"}),
        version=version, prefix=prefix, PREFIX=P, model_name=model_name, representation=representation,
        input_shape=list(g.input_value.shape), output_shape=list(g.output_value.shape),
        input_size=g.input_value.numel, output_size=g.output_value.numel,
        arena_bytes=mem.arena_bytes, lower_bound=mem.lower_bound, arena_floats=mem.arena_bytes // 4,
        weight_bytes=report["totals"]["weight_bytes"], num_layers=len(g.ops),
        layer_headers=layer_headers, runtime_headers=runtime_headers, has_input=test_io is not None,
    )  # fmt: skip
    common.update(extra_context or {})
    out.files["model.h"] = env.get_template("model.h.j2").render(**common)
    out.files["model.c"] = env.get_template("model.c.j2").render(
        **common, ops=g.ops, buf=buf, bias=bias, shape=shape, scratch=scratch
    )
    for op in weighted:
        arrays = [a for e in op.encoded.values() for a in e.arrays.values() if a.count]
        out.files[f"headers/{op.name}.h"] = env.get_template("layer.h.j2").render(
            version=version, op=op, arrays=arrays, guard=f"{P}__L_{op.name.upper()}_H"
        )
    out.files["headers/headers.h"] = env.get_template("headers.h.j2").render(**common)
    if test_io is not None:
        x, y, tol, tol_doc = test_io
        out.files["headers/input.h"] = env.get_template("input.h.j2").render(
            **common,
            input=CArray(f"{prefix}_test_input", "float", x.reshape(-1)),
            expected=CArray(f"{prefix}_test_expected", "float", y.reshape(-1)),
            tolerance=tol,
            tolerance_doc=tol_doc,
        )
    out.files["app/main.c"] = env.get_template("main.c.j2").render(**common)
    out.files["Makefile"] = env.get_template("Makefile.j2").render(**common)
    rt = runtime_dir()
    for h in ["sc_port.h", "sc_runtime.h", *runtime_headers,
              *sorted({d for r in runtime_headers for d in RUNTIME_INCLUDES.get(r, ())} - set(runtime_headers))]:
        found = [Path(d) / h for d in ext_dirs if (Path(d) / h).is_file()]
        out.copies[f"runtime/{h}"] = found[0] if found else rt / h
    board = rt / "board"
    if board.is_dir():
        for f in sorted(board.iterdir()):
            if f.is_file() and not f.name.startswith("."):
                out.copies[f"board/{f.name}"] = f
    files = sorted([*out.files, *out.copies, REPORT_NAME])
    out.report["files"] = files
    out.files[REPORT_NAME] = json.dumps(out.report, indent=2) + "\n"
    return out


def render_verify_main(prefix: str, version: str) -> str:
    return environment().get_template("verify_main.c.j2").render(prefix=prefix, PREFIX=prefix.upper(), version=version)


def _written_by_us(directory: Path) -> list[str] | None:
    """The file list of a previous emission in this directory, or None if we did not write it."""
    try:
        rep = json.loads((directory / REPORT_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rep, dict) or not str(rep.get("generator", "")).startswith(GENERATOR_KEY):
        return None
    files = rep.get("files")
    return [str(f) for f in files] if isinstance(files, list) else []


def write_directory(r: Rendered, directory: str | os.PathLike, overwrite: bool) -> Path:
    """Writes the rendered files atomically: everything goes to a temporary sibling directory
    first. A new directory is renamed into place; over a previous emission, files are replaced one
    by one and files of the old emission that are gone are removed. Files we did not write are
    never deleted."""
    target = Path(directory).resolve()
    previous: list[str] | None = None
    if target.exists():
        if not target.is_dir():
            raise CodegenError(f"{target} exists and is not a directory; choose another directory")
        entries = list(target.iterdir())
        previous = _written_by_us(target)
        if entries and previous is None and not overwrite:
            raise CodegenError(
                f"{target} is not empty and was not written by sparsecomp; choose an empty or new "
                "directory, or pass overwrite=True (it replaces the files sparsecomp writes, such as Makefile "
                "and model.c, and keeps every other file)"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        for rel, text in r.files.items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        for rel, src in r.copies.items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, p)
        if not target.exists():
            os.rename(tmp, target)
            return target
        if not any(target.iterdir()):
            target.rmdir()
            os.rename(tmp, target)
            return target
        new = set(r.report["files"])
        for rel in sorted(new):
            dst = target / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_dir():
                raise CodegenError(f"{dst} is a directory where sparsecomp writes a file; move it away")
            os.replace(tmp / rel, dst)
        for rel in previous or []:
            if rel not in new and (target / rel).is_file():
                (target / rel).unlink()
        return target
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
