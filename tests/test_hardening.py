"""Hardening (issue 12): hostile names never reach the C unescaped, emission never touches what
it did not write, is all-or-nothing, and bad input gives one clear error.

PyTorch is the oracle for every hostile-name emission: each compiles with -Werror and its
``make check`` passes, and ``verify`` compares ``model_run`` with PyTorch on several inputs.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import jinja2
import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers import assert_parity

from codegen import cescape, emit
from codegen.api import save_compressed_model, verify
from codegen.resources import templates_dir

REPO = Path(__file__).resolve().parents[1]

# Names a module or a model class may carry. Each is tried as a module name and inside a class name.
HOSTILE = [
    "x */ return 7; /* y",
    "a/*b",
    "c//d",
    "*",
    "/",
    "line\nbreak",
    "E */\n#error pwned\n/* x",
    "cr\rlf",
    "trail\\",
    "back\\slash\\\n#error spliced",
    "q\"uo'te",
    "tri??/",
    "??=define X ??' ??( ??) ??! ??< ??> ??-",
    "#error pwned",
    "\t\v\f tabs",
    "\u00fcn\u00efc\u00f6d\u00e9 \u540d\u524d \u2028 \U0001f600",
    "if",
    "x" * 5000,
]
MODULE_ONLY = ["nul\x00x"]  # a class name cannot hold a NUL


def _make_check(directory: Path) -> str:
    proc = subprocess.run(["make", "-s", "-C", str(directory), "check"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "SC_PASS" in proc.stdout
    return proc.stdout


def _hostile_class(name: str, base: type) -> type:
    return type(name, (base,), {})


def _hostile_repr(m: nn.Module, text: str) -> nn.Module:
    m.extra_repr = lambda: text  # the module's repr reaches the C comments (torch_op)
    return m


def hostile_model() -> nn.Module:
    """Every hostile name as a module name, holding a layer whose repr is hostile too; an
    activation module with a hostile name is fused into it."""
    torch.manual_seed(0)
    layers = nn.Sequential()
    for i, name in enumerate(HOSTILE + MODULE_ONLY):
        inner = nn.Sequential()
        inner.add_module(name, _hostile_repr(nn.Linear(6, 6), HOSTILE[(i + 1) % len(HOSTILE)]))
        layers.add_module(name, inner)
        layers.add_module(name + " act", nn.Tanh())
    layers.add_module("out */ #x", nn.Linear(6, 3))
    return layers.eval()


def test_c_escaping_is_the_identity_on_ordinary_names():
    for s in ["features.0", "layer1.0.conv1", "fc", "my-model v2", "Conv2d(1, 4, kernel_size=(3, 3), stride=(1, 1))",
              "Linear(in_features=4, out_features=3, bias=True) + r (relu fused)", "_x9", "A b_C-d.e"]:
        assert cescape.c_comment(s) == s
        assert cescape.c_text(s) == s
        if "(" not in s:
            assert cescape.c_string(s) == s


@pytest.mark.parametrize("text", HOSTILE + MODULE_ONLY)
def test_escaped_text_cannot_leave_its_context(text):
    for out in (cescape.c_comment(text), cescape.c_string(text), cescape.c_text(text)):
        assert all(" " <= ch <= "~" for ch in out), repr(out)  # one line of printable ASCII
        assert len(out) <= 4 * 12 * cescape.MAX_TEXT
    com = cescape.c_comment(text)
    assert "*/" not in "/*" + com + "*/"[:-2] and "/*" not in com and "??" not in com and "\\" not in com
    assert "*/" not in ("/* " + com)[3:] and not com.endswith(("*", "/")) and not com.startswith(("*", "/"))
    lit = cescape.c_string(text)
    assert not re.search(r'(?<!\\)"', lit.replace("\\\\", "")), lit  # every quote escaped
    assert "??" not in lit


def test_hostile_module_and_class_names_compile_and_match_pytorch(tmp_path):
    model = hostile_model()
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    d = tmp_path / "m"
    res = save_compressed_model(model, "csr", x[:1], d)
    _make_check(d)
    v = verify(model, d, x)
    assert_parity(v.outputs, v.reference, "hostile module names")
    # the copied runtime is ours, verbatim (it has #error lines of its own); every generated file is checked
    runtime = REPO / "runtime_c"
    for p in (d / "runtime").glob("*.h"):
        assert p.read_bytes() == (runtime / p.name).read_bytes(), p.name
    text = "".join(p.read_text() for p in d.rglob("*")
                   if p.is_file() and p.suffix in (".c", ".h") and "runtime" not in p.relative_to(d).parts)
    assert text and not re.search(r"^\s*#\s*(error|define X)", text, re.M)  # no injected directive
    assert {ly["source"] for ly in res.report["layers"]} >= {f"{n}.{n}" for n in HOSTILE[:5]}
    for f in d.rglob("*"):
        assert len(f.name.encode()) <= 255
    assert {ch for ch in text if ord(ch) > 127} <= {"\u2014"}  # only the templates' own dash


@pytest.mark.parametrize("name", [n for n in HOSTILE if n != "if"], ids=lambda n: repr(n[:12]))
def test_hostile_model_class_name(tmp_path, name):
    cls = _hostile_class(name, nn.Sequential)
    torch.manual_seed(0)
    model = cls(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)).eval()
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    d = tmp_path / "m"
    save_compressed_model(model, "csr", x[:1], d)
    out = _make_check(d)
    v = verify(model, d, x)
    assert_parity(v.outputs, v.reference, repr(name[:20]))
    # model_run returns 0 and computes: the self-test printed every output
    assert out.count("SC_OUT ") == 2


def test_hostile_names_integer_path(tmp_path):
    model = hostile_model()
    cal = torch.randn(16, 6, generator=torch.Generator().manual_seed(3))
    d = tmp_path / "q"
    save_compressed_model(model, "int8", cal[:1], d, integer=True, calibration_data=cal)
    _make_check(d)
    assert not re.search(r"^\s*#\s*error", (d / "model.c").read_text(), re.M)


# ---- every template escapes user text explicitly -------------------------------------------------

USER_ATTRS = {"source", "torch_op", "model_name", "exit_name", "tolerance_doc"}
ESCAPES = {"c_comment", "ccomment", "c_string"}


def _unescaped_user_text(node: jinja2.nodes.Node, escaped: bool = False) -> list[str]:
    found = []
    if isinstance(node, jinja2.nodes.Filter) and node.name in ESCAPES:
        escaped = True
    if not escaped:
        if isinstance(node, jinja2.nodes.Getattr) and node.attr in USER_ATTRS:
            found.append(node.attr)
        if isinstance(node, jinja2.nodes.Name) and node.name in USER_ATTRS:
            found.append(node.name)
        if isinstance(node, jinja2.nodes.Getattr) and node.attr == "name" and isinstance(node.node, jinja2.nodes.Name) \
                and node.node.name in ("e", "exit", "point"):
            found.append(f"{node.node.name}.name")
    for child in node.iter_child_nodes():
        found += _unescaped_user_text(child, escaped)
    return found


def test_every_template_escapes_user_text():
    env = emit.environment()
    templates = sorted(Path(templates_dir()).rglob("*.j2"))
    assert len(templates) > 20
    bad = {}
    for path in templates:
        ast = env.parse(path.read_text())
        for out in ast.find_all(jinja2.nodes.Output):
            for expr in out.nodes:
                if isinstance(expr, jinja2.nodes.TemplateData):
                    continue
                hits = _unescaped_user_text(expr)
                if hits:
                    bad.setdefault(str(path.relative_to(templates_dir())), []).extend(hits)
    assert not bad, f"user text printed without |c_comment or |c_string: {bad}"


def test_a_template_that_forgets_the_filter_still_cannot_inject():
    env = emit.environment()
    t = env.from_string('/* {{ name }} */ const char *s = "{{ name }}";')
    out = t.render(name='x */ "\n#error a\\')
    assert out == '/* x * / <U+0022><U+000A>#error a<U+005C> */ const char *s = "x * / <U+0022><U+000A>#error a<U+005C>";'


class _HostileBackbone(nn.Module):
    NAMES = ("x */ return 7; /* y", "E */\n#error pwned\n/* x", "tri??/ \\", "q\"uo'te \u540d", "fc")

    def __init__(self):
        super().__init__()
        a, b, c, d, e = self.NAMES
        self.add_module(a, nn.Conv2d(1, 4, 3, padding=1))
        self.add_module(b, nn.ReLU())
        self.add_module(c, nn.Conv2d(4, 4, 3, padding=1))
        self.add_module(d, nn.ReLU())
        self.add_module(e, nn.Linear(4 * 8 * 8, 5))

    def forward(self, x):
        a, b, c, d, e = (getattr(self, n) for n in self.NAMES)
        return e(torch.flatten(d(c(b(a(x)))), 1))


@pytest.mark.parametrize("kind", ["global", "branch"])
def test_hostile_names_early_exit(tmp_path, kind):
    from codegen.early_exit import save_compressed_early_exit_model, verify_early_exit
    from sparsecomp.early_exit import build_exit_model

    torch.manual_seed(0)
    net = _HostileBackbone().eval()
    net.__class__ = type("EE */\n#error pwned\n/*", (_HostileBackbone,), {})
    ee = build_exit_model(net, list(_HostileBackbone.NAMES[1:4:2]), (1, 1, 8, 8), kind, 2, hidden=8).eval()
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    d = tmp_path / "ee"
    save_compressed_early_exit_model(net, ee, "csr", input_data=x[:1], directory=d)
    _make_check(d)
    text = (d / "model_ee.h").read_text() + (d / "model_ee.c").read_text() + (d / "model.c").read_text()
    assert not re.search(r"^\s*#\s*error", text, re.M)
    v = verify_early_exit(net, ee, d, x)
    for k in range(v.reference.shape[0]):
        assert_parity(v.oneshot[k], v.reference[k], f"exit {k}")
    assert_parity(v.baseline, v.baseline_reference, "baseline")


# ---- writing the directory: what gets deleted, links, atomicity, errors --------------------------


def _small():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval(), torch.randn(1, 4)


def _other():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).eval(), torch.randn(1, 4)


def _tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()
            and not p.is_symlink()}  # fmt: skip


def _stray(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name)


def test_crafted_report_cannot_delete_outside_or_user_files(tmp_path):
    import json

    model, x = _small()
    d = tmp_path / "m"
    save_compressed_model(model, "csr", x, d)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    absolute = tmp_path / "abs.txt"
    absolute.write_text("precious too\n")
    (d / "NOTES.md").write_text("mine\n")
    rep = json.loads((d / "report.json").read_text())
    rep["files"] += ["../victim.txt", str(absolute), "NOTES.md", "./NOTES.md", "app/../NOTES.md", "headers/../../victim.txt"]
    rep["file_sha256"]["NOTES.md"] = "0" * 64  # listed, but not what we wrote
    (d / "report.json").write_text(json.dumps(rep))
    other, xo = _other()
    save_compressed_model(other, "csr", xo, d)
    assert victim.read_text() == "precious\n" and absolute.read_text() == "precious too\n"
    assert (d / "NOTES.md").read_text() == "mine\n"
    # a report.json without hashes (an emission of an older version): only files that carry our marker go
    rep = json.loads((d / "report.json").read_text())
    del rep["file_sha256"]
    rep["files"] += ["NOTES.md", "../victim.txt"]
    (d / "report.json").write_text(json.dumps(rep))
    save_compressed_model(model, "csr", x, d)
    assert victim.read_text() == "precious\n" and (d / "NOTES.md").read_text() == "mine\n"
    assert _stray(tmp_path) == []


def test_symlink_inside_the_target_is_refused(tmp_path):
    from codegen import CodegenError

    model, x = _small()
    d = tmp_path / "m"
    save_compressed_model(model, "csr", x, d)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.h").write_text("/* not ours */\n")
    import shutil

    shutil.rmtree(d / "runtime")
    (d / "runtime").symlink_to(elsewhere, target_is_directory=True)
    before = _tree(d)
    with pytest.raises(CodegenError, match=re.escape(str(d / "runtime")) + ".*symbolic link"):
        save_compressed_model(model, "csr", x, d, overwrite=True)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep.h"]
    assert _tree(d) == before and _stray(tmp_path) == []
    # a link at a file path is refused too; a link of the user's elsewhere is kept as a link
    (d / "runtime").unlink()
    (d / "Makefile").unlink()
    (d / "Makefile").symlink_to(elsewhere / "keep.h")
    with pytest.raises(CodegenError, match="Makefile.*symbolic link"):
        save_compressed_model(model, "csr", x, d)
    (d / "Makefile").unlink()
    (d / "data").symlink_to(elsewhere, target_is_directory=True)
    save_compressed_model(model, "csr", x, d)
    assert (d / "data").is_symlink() and (elsewhere / "keep.h").read_text() == "/* not ours */\n"


def test_refusals_come_before_any_change(tmp_path):
    from codegen import CodegenError

    model, x = _small()
    other, xo = _other()
    d = tmp_path / "m"
    save_compressed_model(model, "csr", x, d)
    (d / "model.c").write_text((d / "model.c").read_text() + "/* my edit */\n")
    before = _tree(d)
    with pytest.raises(CodegenError, match="model.c was not written by sparsecomp, or was changed since.*overwrite"):
        save_compressed_model(other, "csr", xo, d)
    assert _tree(d) == before
    (d / "model.c").unlink()
    (d / "Makefile").unlink()
    (d / "Makefile").mkdir()
    before = _tree(d)
    with pytest.raises(CodegenError, match="Makefile is a directory where sparsecomp writes a file"):
        save_compressed_model(other, "csr", xo, d, overwrite=True)
    assert _tree(d) == before and _stray(tmp_path) == []


def test_os_errors_become_one_clear_error(tmp_path, monkeypatch):
    from codegen import CodegenError

    model, x = _small()
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(CodegenError, match=re.escape(str(f)) + " is a file"):
        save_compressed_model(model, "csr", x, f / "sub" / "m")
    with pytest.raises(CodegenError, match="File name too long"):
        save_compressed_model(model, "csr", x, tmp_path / ("n" * 300))
    import codegen.emit as cemit

    def read_only(*a, **k):
        raise OSError(30, "Read-only file system", str(tmp_path))

    monkeypatch.setattr(cemit.tempfile, "mkstemp", read_only)
    with pytest.raises(CodegenError, match="Read-only file system"):
        save_compressed_model(model, "csr", x, tmp_path / "ro")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


class _Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no clean-up code runs."""


def _setup_for_kill(d: Path) -> tuple[dict, dict]:
    import shutil

    model, x = _small()
    other, xo = _other()
    if d.exists():
        shutil.rmtree(d)
    fresh = d.parent / "fresh"
    if fresh.exists():
        shutil.rmtree(fresh)
    new = _tree(save_compressed_model(other, "csr", xo, fresh).directory)
    shutil.rmtree(fresh)
    old = _tree(save_compressed_model(model, "csr", x, d).directory)
    (d / "NOTES.md").write_text("mine\n")
    (d / "app" / "extra.c").write_text("/* user */\n")
    (d / "build").mkdir()
    (d / "build" / "obj.o").write_bytes(b"\x7fELF")
    return old, new


USER = {"NOTES.md": b"mine\n", "app/extra.c": b"/* user */\n", "build/obj.o": b"\x7fELF"}


@pytest.mark.parametrize("exchange", ["renameat2", "two renames"])
def test_killed_reemission_leaves_old_or_new_never_a_mix(tmp_path, monkeypatch, exchange):
    import codegen.emit as cemit

    if exchange == "two renames":  # systems without an atomic exchange of two directories
        monkeypatch.setattr(cemit, "_exchange", lambda a, b: False)
    d = tmp_path / "m"
    other, xo = _other()
    steps: list[str] = []
    _setup_for_kill(d)
    monkeypatch.setattr(cemit, "_step", steps.append)
    save_compressed_model(other, "csr", xo, d)
    assert len(steps) >= 5, steps
    seen = set()
    for k in range(len(steps)):
        old, new = _setup_for_kill(d)
        calls = iter(range(10**6))

        def kill_at(what, k=k, calls=calls):
            if next(calls) == k:
                raise _Killed(what)

        monkeypatch.setattr(cemit, "_step", kill_at)
        with pytest.raises(_Killed):
            save_compressed_model(other, "csr", xo, d)
        if not d.exists():  # only between the two renames: the old emission waits beside, whole
            assert exchange == "two renames" and steps[k] == "swap 2"
            (kept,) = [p for p in tmp_path.iterdir() if p.name.endswith(".old")]
            assert {f: b for f, b in _tree(kept).items() if f not in USER} == old
            d = kept
        got = {f: b for f, b in _tree(d).items() if f not in USER}
        d = tmp_path / "m"
        assert got in (old, new), f"killed at {steps[k]}: a mix"
        seen.add("old" if got == old else "new")
        monkeypatch.setattr(cemit, "_step", lambda what: None)
        save_compressed_model(other, "csr", xo, d)  # the next call finishes the job and cleans up
        final = _tree(d)
        assert {f: final.pop(f) for f in USER} == USER, f"killed at {steps[k]}: user files lost"
        assert final == new and _stray(tmp_path) == [], steps[k]
    assert seen == {"old", "new"}


def test_really_killed_process(tmp_path):
    """os._exit in the middle of moving the user's files: the next call puts them back."""
    import sys

    d = tmp_path / "m"
    old, _ = _setup_for_kill(d)
    code = f"""
import os, sys, torch, torch.nn as nn
sys.path.insert(0, {str(Path(__file__).parent)!r})
import codegen.emit as cemit
from test_hardening import _other
from codegen import save_compressed_model
n = iter(range(100))
cemit._step = lambda what: os._exit(9) if next(n) == 1 else None
other, xo = _other()
save_compressed_model(other, "csr", xo, {str(d)!r})
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 9, proc.stderr[-3000:]
    assert {f: b for f, b in _tree(d).items() if f not in USER} == old
    assert _stray(tmp_path)  # the journal and the temporary directory of the killed process
    model, x = _small()
    save_compressed_model(model, "csr", x, d)
    final = _tree(d)
    assert {f: final.pop(f) for f in USER} == USER and final == old and _stray(tmp_path) == []


# ---- the command line: clean errors, --overwrite -----------------------------------------------------


@pytest.fixture
def cli_factory(tmp_path, monkeypatch):
    (tmp_path / "hardening_cli_models.py").write_text(
        "import torch.nn as nn\n\ndef net():\n    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _cli(argv, capsys):
    from sparsecomp import cli

    rc = cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_input_shape_mismatch_is_one_clean_error(cli_factory, capsys):
    rc, _, err = _cli(["emit", "hardening_cli_models:net", "--input-shape", "1,3,5,5", "-o", "o"], capsys)
    assert rc == 2
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert "layer '1' (Linear)" in err and "--input-shape" in err and "input_shape /" not in err


@pytest.mark.parametrize("content", [b"not a torch file\n", b"PK\x03\x04garbage", b"\x80\x04garbage"])
def test_cli_non_torch_weights_is_one_clean_error(cli_factory, capsys, content):
    (cli_factory / "w.pt").write_bytes(content)
    rc, _, err = _cli(["emit", "hardening_cli_models:net", "--weights", "w.pt", "--input-shape", "1,16", "-o", "o"],
                      capsys)  # fmt: skip
    assert rc == 2 and "Traceback" not in err and "w.pt" in err and "torch.save" in err, err
    assert not (cli_factory / "o").exists()


def test_cli_overwrite_help_and_message(cli_factory, capsys):
    from sparsecomp import cli

    help_text = " ".join(cli.build_parser()._subparsers._group_actions[0].choices["emit"].format_help().split())
    assert "not written by sparsecomp" in help_text or "sparsecomp did not write" in help_text
    assert "replace DIR if it is an emitted" not in help_text
    (cli_factory / "o").mkdir()
    (cli_factory / "o" / "mine.txt").write_text("x")
    argv = ["emit", "hardening_cli_models:net", "--input-shape", "1,16", "-o", "o"]
    rc, _, err = _cli(argv, capsys)
    assert rc == 2 and "--overwrite" in err and "overwrite=True" not in err, err
    rc, _, err = _cli([*argv, "--overwrite"], capsys)
    assert rc == 0 and (cli_factory / "o" / "mine.txt").read_text() == "x"


def test_cli_os_error_is_one_clean_error(cli_factory, capsys):
    (cli_factory / "afile").write_text("x")
    rc, _, err = _cli(["emit", "hardening_cli_models:net", "--input-shape", "1,16", "-o", "afile/o"], capsys)
    assert rc == 2 and "Traceback" not in err and "afile" in err and err.count("\n") == 1, err


# ---- smaller items -----------------------------------------------------------------------------------


def test_meta_device_model_says_what_to_do(tmp_path):
    from codegen import CodegenError, weight_bytes

    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(CodegenError, match=r"'0.weight'.*'meta' device.*to_empty\(device='cpu'\).*load_state_dict"):
        save_compressed_model(model, "csr", input_shape=(1, 4), directory=tmp_path / "m")
    with pytest.raises(CodegenError, match="meta"):
        weight_bytes(model, (1, 4))
    assert list(tmp_path.iterdir()) == []


def _archive_header(name: bytes, dtype: bytes, shape: tuple[int, ...], kind: int) -> bytes:
    import struct

    from sparsecomp.huffman import MAGIC, VERSION

    return (MAGIC + struct.pack("<BI", VERSION, 1) + struct.pack("<H", len(name)) + name
            + struct.pack("<B", len(dtype)) + dtype + struct.pack("<B", len(shape))
            + struct.pack(f"<{len(shape)}I", *shape) + struct.pack("<B", kind))  # fmt: skip


def test_crafted_archive_cannot_allocate_or_crash():
    import io
    import struct
    import tracemalloc

    from sparsecomp import ArchiveError, huffman_decode
    from sparsecomp.huffman import RAW, SPARSE

    # 48 GiB of float32 zeros announced by a 60-byte archive (a sparse tensor with no nonzero)
    huge = _archive_header(b"w", b"float32", (65536, 65536, 3), SPARSE) + struct.pack("<IBB", 0, 2, 0)
    tracemalloc.start()
    with pytest.raises(ArchiveError, match="more than this .*-byte archive may hold"):
        huffman_decode(io.BytesIO(huge))
    assert tracemalloc.get_traced_memory()[1] < 64 << 20
    tracemalloc.stop()
    # a Huffman stream of 2**32 - 1 equal symbols (no payload bit per symbol)
    ones = _archive_header(b"w", b"float32", (1 << 16, 1 << 16), SPARSE) + struct.pack("<IB", 2**32 - 1, 1)
    with pytest.raises(ArchiveError):
        huffman_decode(io.BytesIO(ones + b"\x01\x05\x01" + struct.pack("<I", 0)))
    with pytest.raises(ArchiveError, match="tensor name at offset .* is not UTF-8"):
        huffman_decode(io.BytesIO(_archive_header(b"\xff\xfe", b"float32", (1,), RAW) + b"\0" * 4))
    with pytest.raises(ArchiveError, match="dtype .* is not UTF-8"):
        huffman_decode(io.BytesIO(_archive_header(b"w", b"\xc3", (1,), RAW) + b"\0" * 4))
    with pytest.raises(ArchiveError, match="truncated"):
        huffman_decode(io.BytesIO(_archive_header(b"w", b"float32", (1 << 30, 1 << 30), RAW)))


def test_mutated_archives_give_archive_error_or_the_data():
    import io

    from sparsecomp import ArchiveError, huffman_decode, huffman_encode

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 10), nn.Linear(10, 4))
    with torch.no_grad():
        model[0].weight[model[0].weight.abs() < 0.1] = 0
        model[0].weight.copy_(torch.round(model[0].weight * 8) / 8)
    buf = io.BytesIO()
    huffman_encode(model, buf)
    data = buf.getvalue()
    rng = np.random.default_rng(0)
    outcomes = {"error": 0, "ok": 0}
    for _ in range(400):
        b = bytearray(data)
        for i in rng.integers(0, len(b), size=int(rng.integers(1, 4))):
            b[i] = int(rng.integers(0, 256))
        try:
            huffman_decode(io.BytesIO(bytes(b)))
            outcomes["ok"] += 1
        except ArchiveError:
            outcomes["error"] += 1
    assert outcomes["error"] > 50, outcomes


def test_profile_of_an_early_exit_self_test_counts_each_layer_once():
    from codegen.board import parse_profile

    out = "\n".join([
        "SC_PROFILE_TICK_INSNS 40", "SC_PROFILE_LAYER 0 10 1 conv", "SC_PROFILE_LAYER 1 5 1 fc", "SC_PROFILE_TOTAL 16",
        "SC_EE_TICKS 0 3",
        "SC_PROFILE_TICK_INSNS 40", "SC_PROFILE_LAYER 0 30 3 conv", "SC_PROFILE_LAYER 1 10 2 fc", "SC_PASS", "",
    ])  # fmt: skip
    p = parse_profile(out)
    assert [(ly.index, ly.ticks, ly.calls) for ly in p.layers] == [(0, 10, 1), (1, 5, 1)]
    assert p.total_instructions == 16 * 40 and p.layer_sum <= p.total_instructions


def test_board_profile_of_an_early_exit_directory(tmp_path):
    import os

    from codegen import board

    ok, reason = board.board_toolchain_available()
    if not ok:
        if os.environ.get("SPARSECOMP_REQUIRE_BOARD") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    from codegen.early_exit import save_compressed_early_exit_model
    from sparsecomp.early_exit import build_exit_model

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(4 * 8 * 8, 5)).eval()  # fmt: skip
    ee = build_exit_model(net, ["1"], (1, 1, 8, 8), "branch", 2, hidden=0).eval()
    d = tmp_path / "ee"
    save_compressed_early_exit_model(net, ee, "csr", input_data=torch.randn(1, 1, 8, 8), directory=d)
    prof = board.profile(d)
    indices = [ly.index for ly in prof.layers]
    assert indices == sorted(set(indices)) == list(range(len(indices)))
    assert 0 < prof.layer_sum <= prof.total_instructions


# ---- integer self-test against PyTorch's float output --------------------------------------------


def _int_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()


def test_integer_self_test_checks_the_float_model(tmp_path):
    from codegen.integer import float_tolerance

    net = _int_net()
    cal = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    res = save_compressed_model(net, "int8", cal[:1], tmp_path / "ok", integer=True, calibration_data=cal)
    out = _make_check(tmp_path / "ok")
    t = res.report["test"]
    err = float(re.search(r"^SC_FLOAT_MAX_ABS_ERROR (\S+)$", out, re.M).group(1))
    assert err == pytest.approx(t["float_model_max_abs_error"], rel=1e-5, abs=1e-7)
    with torch.no_grad():
        y = net(cal[:1]).numpy()
    assert t["float_model_tolerance"] == pytest.approx(float_tolerance(y, res.report["integer"]["output"]["scale"]))
    assert 0 < err <= t["float_model_tolerance"] < 0.2 * np.max(np.abs(y))
    assert "float_tolerance" in t["float_model_tolerance_doc"]


def test_integer_model_far_from_pytorch_fails_make_check(tmp_path, caplog):
    net = _int_net()
    cal = 0.02 * torch.randn(64, 8, generator=torch.Generator().manual_seed(1))  # unlike the real input
    x = 3.0 * torch.randn(1, 8, generator=torch.Generator().manual_seed(2))
    res = save_compressed_model(net, "int8", x, tmp_path / "bad", integer=True, calibration_data=cal)
    t = res.report["test"]
    assert t["float_model_max_abs_error"] > 0.17 * t["float_model_max_abs_output"]
    assert "make check` will fail" in caplog.text
    proc = subprocess.run(["make", "-s", "-C", str(tmp_path / "bad"), "check"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "SC_FAIL the int8 output is" in proc.stdout and "away from PyTorch's float output" in proc.stdout
    # the bit-exact check against the integer reference still passed: only the float bound failed
    assert "SC_MAX_ABS_ERROR 0\n" in proc.stdout


def test_no_reference_to_a_missing_design_document():
    root = Path(__file__).resolve().parent.parent
    assert (root / "docs" / "architecture.md").is_file()
    hits = [str(p.relative_to(root)) for sub in ("codegen", "sparsecomp", "tests", "templates", "docs", "runtime_c")
            for p in (root / sub).rglob("*") if p.is_file() and p.suffix in (".py", ".md", ".j2", ".h", ".c")
            and "DESIGN" + ".md" in p.read_text(errors="replace")]  # fmt: skip
    assert hits == []
