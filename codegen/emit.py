"""Rendering: IR + encodings + memory plan -> the files of the emitted directory.

Jinja2 runs with StrictUndefined, so a missing variable is an error, not empty text. Output is
deterministic: the same model and arguments give byte-identical files.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np

from codegen import cescape, ir
from codegen.cescape import CText
from codegen.errors import CodegenError
from codegen.formats import CArray
from codegen.memory import GraphMemory
from codegen.resources import runtime_dir, templates_dir

log = logging.getLogger(__name__)

GENERATOR_KEY = "sparsecomp"
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


def carray_body(a: CArray) -> CText:
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
    return CText(",\n".join("    " + ln for ln in lines))


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
        finalize=cescape.template_value,  # a string no filter escaped is printed through c_text
    )
    env.filters["cfloat"] = cfloat
    env.filters["carray"] = carray_body
    env.filters.update(cescape.FILTERS)
    return env


_RUNTIME_INCLUDE = re.compile(r'^#include "(sc_\w+\.h)"', re.M)


@functools.cache
def _includes(path: Path) -> tuple[str, ...]:
    return tuple(_RUNTIME_INCLUDE.findall(path.read_text(encoding="utf-8"))) if path.is_file() else ()


def runtime_files(headers: list[str], ext_dirs: list[str] | tuple[str, ...] = ()) -> dict[str, Path]:
    """The runtime files an emitted directory copies, by name: sc_port.h, sc_runtime.h, the headers
    model.c includes, then (sorted) the runtime headers those include in turn (for example sc_fixed.h
    and sc_bits.h, which sc_conv.h includes for its int8 and weight-only sections). An op's
    extension_dir is searched before runtime_c/."""
    rt = runtime_dir()

    def path(h: str) -> Path:
        found = [Path(d) / h for d in ext_dirs if (Path(d) / h).is_file()]
        return found[0] if found else rt / h

    deps: set[str] = set()
    todo = list(headers)
    while todo:
        for d in _includes(path(todo.pop())):
            if d not in deps:
                deps.add(d)
                todo.append(d)
    names = ["sc_port.h", "sc_runtime.h", *headers]
    names += sorted(deps - set(names))
    return {h: path(h) for h in names}


def model_runtime_headers(g: ir.Graph) -> list[str]:
    """The runtime headers model.c includes: those of the ops' kernels and of their weight encodings."""
    return sorted({h for op in g.ops for h in op.runtime}
                  | {h for op in g.ops for e in op.encoded.values() for h in e.runtime})  # fmt: skip


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
    runtime_headers = model_runtime_headers(g)
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
    for h, src in runtime_files(runtime_headers, ext_dirs).items():
        out.copies[f"runtime/{h}"] = src
    board = runtime_dir() / "board"
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


# ---- writing the directory -------------------------------------------------------------------------
#
# The emitted files are written into a temporary sibling directory ".<name>.tmp-XXXX", the user's own
# files (anything in the target that is not a file of the previous emission, unchanged) are moved
# into it, and the two directories are exchanged in one step (renameat2 RENAME_EXCHANGE on Linux;
# elsewhere two renames). A journal ".<name>.tmp-XXXX.json" lists the user's files being moved: a
# later call that finds a journal of a dead process moves them back and removes the temporaries. So a
# killed emission leaves the complete old or the complete new emission, and no user file is lost.

SHA_KEY = "file_sha256"  # report.json: relative path -> sha256 of every file we wrote (but report.json)
_TMP = ".tmp-"
_MARKER = b"sparsecomp"  # emissions without SHA_KEY (older versions): our files name the generator


def _step(what: str) -> None:
    """Called before every change to the file system while swapping (tests kill the emission here)."""


def _os_error(exc: OSError, what: str) -> CodegenError:
    where = exc.filename if exc.filename is not None else ""
    why = exc.strerror or str(exc)
    return CodegenError(f"{what}: {why}: {where}".rstrip(": ") + " (check the path, its permissions and free space)")


def _safe_rel(rel: object) -> str | None:
    """``rel`` if it is a relative, normalized path inside the directory ("headers/fc.h"), else None."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel or rel.startswith("/"):
        return None
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    return rel


def _ancestors(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _kind(p: Path) -> str:
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return "missing"
    except NotADirectoryError:
        return "missing"
    if stat.S_ISLNK(st.st_mode):
        return "link"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    return "file" if stat.S_ISREG(st.st_mode) else "other"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _previous_files(target: Path, new: dict[str, bytes]) -> dict[str, str] | None:
    """The files of a previous emission in ``target`` that are still as we wrote them (relative path ->
    sha256), or None if ``target`` holds no emission of ours. Paths that are not relative, normalized and
    inside ``target``, symbolic links, and files changed since are not ours."""
    if _kind(target / REPORT_NAME) != "file":
        return None
    try:
        rep = json.loads((target / REPORT_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(rep, dict) or not str(rep.get("generator", "")).startswith(GENERATOR_KEY):
        return None
    listed = rep.get("files") if isinstance(rep.get("files"), list) else []
    hashes = rep.get(SHA_KEY) if isinstance(rep.get(SHA_KEY), dict) else None
    ours: dict[str, str] = {}
    for rel in listed:
        rel = _safe_rel(rel)
        if rel is None or rel == REPORT_NAME:
            if rel is None:
                log.warning("ignoring %r listed in %s: not a path inside the directory", rel, target / REPORT_NAME)
            continue
        p = target / rel
        if any(_kind(target / a) != "dir" for a in _ancestors(rel)) or _kind(p) != "file":
            continue
        try:
            data = p.read_bytes()
        except OSError:
            continue
        digest = _sha(data)
        if hashes is not None:
            if hashes.get(rel) == digest:
                ours[rel] = digest
        elif _MARKER in data[:400] or new.get(rel) == data:
            ours[rel] = digest
    return ours


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _undo(tmp: Path, target: Path, user: list[str]) -> bool:
    """Moves the user's entries listed in a journal from ``tmp`` back to ``target``; True if none is
    left in ``tmp``."""
    ok = True
    for rel in user:
        src = tmp / rel
        if _kind(src) == "missing":
            continue
        dst = target / rel
        if _kind(dst) == "missing" and all(_kind(target / a) in ("dir", "missing") for a in _ancestors(rel)):
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.rename(src, dst)
        else:
            ok = False
    return ok


def _recover(target: Path) -> None:
    """Finishes what a killed emission into ``target`` left: the user's files go back, our temporaries go."""
    parent, prefix = target.parent, f".{target.name}{_TMP}"
    try:
        siblings = [p for p in parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return
    journals = {p for p in siblings if p.name.endswith(".json") and _kind(p) == "file"}
    busy = set()
    for j in sorted(journals):
        tmp = j.with_name(j.name[: -len(".json")])
        try:
            info = json.loads(j.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info = {}
        if _pid_alive(info.get("pid")):
            busy |= {j, tmp, tmp.with_name(tmp.name + ".old")}
            continue
        old = tmp.with_name(tmp.name + ".old")
        if _kind(target) == "missing" and _kind(old) == "dir":  # killed between the two renames
            os.rename(old, target)
        user = [r for r in info.get("user", []) if _safe_rel(r)]
        if _kind(tmp) == "dir" and not _undo(tmp, target, user):
            log.error("%s still holds files of yours that could not be moved back to %s; move them by hand",
                      tmp, target)
            busy |= {j, tmp}
            continue
        log.info("removed the temporaries of an interrupted emission into %s", target)
        j.unlink()
        journals.discard(j)
    for p in siblings:
        if p in busy or p in journals or _kind(p) != "dir":
            continue
        shutil.rmtree(p, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swaps two directories (Linux renameat2 RENAME_EXCHANGE); False if not available."""
    if not sys.platform.startswith("linux"):
        return False
    fn = getattr(_libc(), "renameat2", None)
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


@functools.lru_cache(maxsize=1)
def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover
        return None


def _plan(files: dict[str, bytes], target: Path, overwrite: bool) -> list[str]:
    """Every check that can refuse, before anything is touched. Returns the user's entries to keep."""
    kind = _kind(target)
    if kind == "link":  # only when resolve() could not (a dangling link)
        raise CodegenError(f"{target} is a symbolic link that points nowhere; choose another directory")
    if kind not in ("dir", "missing"):
        raise CodegenError(f"{target} exists and is not a directory; choose another directory")
    for a in [target.parent, *target.parent.parents]:
        k = _kind(a)
        if k not in ("dir", "missing"):
            raise CodegenError(f"{a} is a file, so {target} cannot be created; choose another directory")
        if k == "dir":
            if not os.access(a, os.W_OK | os.X_OK) and a == target.parent:
                raise CodegenError(f"no permission to create files in {a}; choose another directory")
            break
    if kind == "missing":
        return []
    if not os.access(target, os.R_OK | os.W_OK | os.X_OK):
        raise CodegenError(f"no permission to change {target}; choose another directory")
    previous = _previous_files(target, files)
    try:
        entries = sorted(p.name for p in target.iterdir())
    except OSError as exc:
        raise _os_error(exc, f"cannot read {target}") from exc
    if previous is None and entries and not overwrite:
        raise CodegenError(
            f"{target} is not empty and was not written by sparsecomp; choose an empty or new directory, "
            "or pass overwrite=True (--overwrite on the command line): it replaces the files sparsecomp "
            "writes, such as Makefile and model.c, and keeps every other file"
        )
    ours = set(previous or {}) | ({REPORT_NAME} if previous is not None else set())
    dirs = {a for rel in [*files, *ours] for a in _ancestors(rel)}
    for rel in sorted(files):
        for a in _ancestors(rel):
            k = _kind(target / a)
            if k == "link":
                raise CodegenError(f"{target / a} is a symbolic link; sparsecomp never writes through links. "
                                   "Replace it by a directory or remove it, or choose another directory")
            if k not in ("dir", "missing"):
                raise CodegenError(f"{target / a} is a file where sparsecomp writes a directory; move it away")
        k = _kind(target / rel)
        if k == "link":
            raise CodegenError(f"{target / rel} is a symbolic link; sparsecomp never writes through links. "
                               "Remove it, or choose another directory")
        if k in ("dir", "other"):
            raise CodegenError(f"{target / rel} is a {'directory' if k == 'dir' else 'special file'} where "
                               "sparsecomp writes a file; move it away")
        if k == "file" and rel not in ours and not overwrite:
            raise CodegenError(
                f"{target / rel} was not written by sparsecomp, or was changed since; move it away, or pass "
                "overwrite=True (--overwrite on the command line) to replace it"
            )
    user: list[str] = []

    def visit(rel_dir: str) -> None:
        base = target / rel_dir if rel_dir else target
        try:
            names = sorted(p.name for p in base.iterdir())
        except OSError as exc:
            raise _os_error(exc, f"cannot read {base}") from exc
        if names and not os.access(base, os.W_OK | os.X_OK):
            raise CodegenError(f"no permission to change {base}; choose another directory")
        for name in names:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if rel in dirs and _kind(base / name) == "dir":
                visit(rel)
            elif rel not in ours and rel not in files:  # the user's: moved across
                user.append(rel)

    visit("")
    return user


def write_directory(r: Rendered, directory: str | os.PathLike, overwrite: bool) -> Path:
    """Writes the rendered files into ``directory`` all at once, never touching what is not ours.

    Every check that can refuse runs first (a file or a link where we need a directory, a directory
    where we write a file, a foreign non-empty directory without ``overwrite``, a changed file of a
    previous emission, permissions). Then the files go to a temporary sibling directory, the user's
    own files are moved into it and the two directories are exchanged (see the comment above): a
    killed emission leaves the old or the new emission, and the next call cleans up. Files of a
    previous emission are recognized by report.json's list AND their sha256 (``file_sha256``), so a
    crafted report.json cannot make us delete anything; symbolic links are never followed. OS errors
    become a ``CodegenError`` naming the path.
    """
    files: dict[str, bytes] = {}
    for rel, text in r.files.items():
        if rel != REPORT_NAME:
            files[rel] = text.encode("utf-8")
    for rel, src in r.copies.items():
        try:
            files[rel] = Path(src).read_bytes()
        except OSError as exc:
            raise _os_error(exc, f"cannot read the runtime file {src}") from exc
    bad = [rel for rel in files if _safe_rel(rel) is None]
    if bad:
        raise CodegenError(f"internal error: unsafe file names {bad[:3]}")
    r.report["files"] = sorted([*files, REPORT_NAME])
    r.report[SHA_KEY] = {rel: _sha(files[rel]) for rel in sorted(files)}
    r.files[REPORT_NAME] = json.dumps(r.report, indent=2) + "\n"
    files[REPORT_NAME] = r.files[REPORT_NAME].encode("utf-8")
    try:
        target = Path(directory).resolve()
        _recover(target)
        user = _plan(files, target, overwrite)
        return _swap(files, target, user)
    except OSError as exc:
        raise _os_error(exc, f"cannot write the emitted directory {directory}") from exc


def _swap(files: dict[str, bytes], target: Path, user: list[str]) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, jpath = tempfile.mkstemp(prefix=f".{target.name}{_TMP}", suffix=".json", dir=target.parent)
    journal = Path(jpath)
    tmp = journal.with_name(journal.name[: -len(".json")])
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"pid": os.getpid(), "target": str(target), "user": user}, f)
    moved = False
    try:
        os.mkdir(tmp)
        if _kind(target) == "dir":
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        for rel, data in files.items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        for rel in user:
            _step(f"move {rel}")
            moved = True
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            os.rename(target / rel, tmp / rel)
        _step("swap")
        if _kind(target) == "missing":
            os.rename(tmp, target)
        elif not _exchange(tmp, target):
            old = tmp.with_name(tmp.name + ".old")
            os.rename(target, old)
            _step("swap 2")
            os.rename(tmp, target)
            os.rename(old, tmp)
        moved = False
        _step("clean")
        shutil.rmtree(tmp, ignore_errors=True)
        _step("journal")
        journal.unlink()
        return target
    except (Exception, KeyboardInterrupt):
        old = tmp.with_name(tmp.name + ".old")
        if _kind(target) == "missing" and _kind(old) == "dir":  # failed between the two renames
            os.rename(old, target)
        if moved:  # put the user's files back before removing anything
            try:
                _undo(tmp, target, user)
            except OSError:
                log.error("could not move your files back from %s to %s; move them by hand", tmp, target)
                raise
        if not any(_kind(tmp / rel) != "missing" for rel in user):
            shutil.rmtree(tmp, ignore_errors=True)
            journal.unlink(missing_ok=True)
        raise
