"""The contract of the emitted directory (docs/architecture.md, "The emitted directory"): layout, model.h API,
determinism, prefixes, linking into a user's firmware, the self-test's exit code, and the rules of
writing a directory (never touch a user's file, leave nothing half-written behind)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from math import prod
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from models import E2E_MODELS, build_model

import codegen
from codegen import CodegenError, UnsupportedOpError, save_compressed_model
from codegen import emit as cemit
from codegen.api import default_tolerance
from codegen.resources import runtime_dir

CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic"]
CC = os.environ.get("CC", "cc")
NAME = "tensor_methods"  # small, fast to compile, named modules conv1/conv2/fc1/fc2 + functional nodes


def tree(d: Path) -> dict[str, bytes]:
    """Every file under d (relative path -> content), without build products."""
    return {
        p.relative_to(d).as_posix(): p.read_bytes()
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.relative_to(d).parts[0] != "build"
    }


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)


def model_sources(d: Path) -> list[Path]:
    """Every .c file outside app/ and board/: the model (docs/architecture.md, "The emitted directory")."""
    return sorted(p for p in d.rglob("*.c") if p.relative_to(d).parts[0] not in ("app", "board", "build"))


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name)


@pytest.fixture(scope="module")
def small():
    return build_model(NAME)


@pytest.fixture(scope="module")
def emitted(small, tmp_path_factory):
    model, x = small
    return save_compressed_model(model, "csr", input_data=x, directory=tmp_path_factory.mktemp("c") / "net")


# ---- layout --------------------------------------------------------------------------------------


def expected_layout(report: dict, with_input: bool) -> set[str]:
    weighted = [ly["name"] for ly in report["layers"] if ly["arrays"]]
    rt = runtime_dir()
    # the family headers, and the helpers their sections include (bit reader, fixed-point math, float micro-kernels)
    runtime = {"sc_port.h", "sc_runtime.h"} | {
        h for h in ("sc_conv.h", "sc_linear.h", "sc_pool.h", "sc_eltwise.h", "sc_bits.h", "sc_fixed.h", "sc_gemm.h")
        if (rt / h).exists()
    }
    files = {"model.h", "model.c", "Makefile", "CMakeLists.txt", "report.json", "app/main.c", "headers/headers.h"}
    files |= {f"headers/{n}.h" for n in weighted}
    files |= {f"runtime/{h}" for h in runtime}
    if with_input:
        files.add("headers/input.h")
    board = rt / "board"
    if board.is_dir():
        files |= {f"board/{p.name}" for p in board.iterdir() if p.is_file() and not p.name.startswith(".")}
    return files


def test_layout(emitted):
    d, rep = emitted.directory, emitted.report
    files = set(tree(d))
    # this model uses every kernel family (conv, linear, pool, eltwise/concat), so runtime/ has them all
    assert files == expected_layout(rep, with_input=True)
    assert rep["files"] == sorted(files)  # report.json lists exactly what was written
    # layer headers are named after the torch modules (sanitized), one per weighted layer
    assert {p for p in files if p.startswith("headers/")} == {
        "headers/headers.h",
        "headers/input.h",
        "headers/conv1.h",
        "headers/conv2.h",
        "headers/fc1.h",
        "headers/fc2.h",
    }
    for ly in rep["layers"]:
        if ly["arrays"]:
            text = (d / "headers" / f"{ly['name']}.h").read_text()
            assert ly["source"] in text  # the torch module path is named above the arrays
            for a in ly["arrays"]:
                assert re.search(rf"\b{a['name']}\[{a['count']}\]", text)
    headers_h = (d / "headers" / "headers.h").read_text()
    assert all(
        f'#include "{Path(f).name}"' in headers_h
        for f in files
        if f.startswith("headers/") and f != "headers/headers.h"
    )
    # runtime/ holds copies of the runtime, byte for byte
    for f in files:
        if f.startswith("runtime/"):
            assert (d / f).read_bytes() == (runtime_dir() / Path(f).name).read_bytes()
    # the model is model.c only; app/main.c is the self-test
    assert [p.relative_to(d).as_posix() for p in model_sources(d)] == ["model.c"]
    # every emitted text file names the generator on top (except copies and JSON)
    for f in ("model.h", "model.c", "app/main.c", "Makefile", "headers/headers.h", "headers/conv1.h"):
        assert "sparsecomp" in (d / f).read_text().splitlines()[0]


def test_layout_without_input_data(small, tmp_path):
    model, x = small
    res = save_compressed_model(model, "dense", input_shape=tuple(x.shape), directory=tmp_path / "n")
    d = res.directory
    files = set(tree(d))
    assert files == expected_layout(res.report, with_input=False)
    assert "input.h" not in (d / "headers" / "headers.h").read_text()
    proc = run(["make", "-C", d, "check"])  # the self-test still builds and runs (on zeros)
    assert proc.returncode == 0, proc.stderr
    assert "SC_PASS" in proc.stdout


def test_model_h_macros(emitted, small):
    d, rep = emitted.directory, emitted.report
    text = (d / "model.h").read_text()
    macros = {m[1]: int(m[2]) for m in re.finditer(r"#define\s+MODEL_(\w+)\s+(\d+)", text)}
    shape = E2E_MODELS[NAME][1]
    assert macros["INPUT_SIZE"] == prod(shape[1:])
    assert macros["OUTPUT_SIZE"] == prod(small[0](small[1]).shape[1:]) == prod(rep["output_shape"])
    assert macros["ARENA_BYTES"] == rep["memory"]["arena_bytes"] == emitted.arena_bytes
    assert macros["WEIGHT_BYTES"] == rep["totals"]["weight_bytes"] == emitted.weight_bytes
    assert re.search(r"\bint model_run\(const float \*input, float \*output\);", text)
    assert "#ifndef MODEL__MODEL_H" in text


# ---- determinism ---------------------------------------------------------------------------------

_EMIT_SNIPPET = """
import sys
sys.path.insert(0, {tests!r})
from models import build_model
from codegen import save_compressed_model
m, x = build_model({name!r})
save_compressed_model(m, "csr", input_data=x, directory={out!r})
"""


def test_deterministic(emitted, small, tmp_path):
    model, x = small
    again = save_compressed_model(model, "csr", input_data=x, directory=tmp_path / "net")
    first = tree(emitted.directory)
    assert tree(again.directory) == first
    # and in another process with another hash seed (set/dict order must not leak into the files)
    out = tmp_path / "other"
    code = _EMIT_SNIPPET.format(tests=str(Path(__file__).parent), name=NAME, out=str(out))
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    proc = run([sys.executable, "-c", code], env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert tree(out) == first


# ---- prefixes and linking ------------------------------------------------------------------------


def test_prefix_renames_api(small, tmp_path):
    model, x = small
    d = save_compressed_model(model, "csr", input_data=x, directory=tmp_path / "kws", prefix="kws").directory
    h = (d / "model.h").read_text()  # the public header keeps its file name whatever the prefix
    assert re.search(r"\bint kws_run\(const float \*input, float \*output\);", h)
    assert (
        "#define KWS_INPUT_SIZE" in h and "#define KWS_WEIGHT_BYTES" in h and "#define KWS_ARENA_BYTES" in h
    )
    assert not re.search(r"\b(MODEL_|model_run)", h)
    # no identifier of the default prefix is left in the generated C (weights, arena, guards)
    for f in ("model.c", "app/main.c", "headers/conv1.h", "headers/input.h", "headers/headers.h"):
        assert not re.search(r"\b(model_|MODEL_)", (d / f).read_text()), f
    proc = run(["make", "-C", d, "check"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((d / "report.json").read_text())["prefix"] == "kws"


@pytest.mark.parametrize("prefix", ["sc_model", "2net", "my-net", ""])
def test_bad_prefix_refused(small, tmp_path, prefix):
    model, x = small
    with pytest.raises(CodegenError, match="prefix"):
        save_compressed_model(model, "csr", input_data=x, directory=tmp_path / "p", prefix=prefix)
    assert not (tmp_path / "p").exists()
    assert leftovers(tmp_path) == []


_TWO_MODELS_MAIN = r"""
#include <stdio.h>
#include <math.h>
#include "har/model.h"
#include "har/headers/input.h"
#include "net/model.h"
#include "net/headers/input.h"

static float out_har[HAR_OUTPUT_SIZE], out_net[NET_OUTPUT_SIZE];

static int check(const float *out, const float *expected, int n, float tol)
{
    int i, bad = 0;
    for (i = 0; i < n; ++i) {
        printf("%a\n", (double)out[i]);
        if (!(fabsf(out[i] - expected[i]) <= tol)) bad = 1;
    }
    return bad;
}

int main(void)
{
    int bad = 0;
    if (har_run(har_test_input, out_har) != 0 || net_run(net_test_input, out_net) != 0) return 2;
    bad |= check(out_har, har_test_expected, HAR_OUTPUT_SIZE, HAR_TEST_TOLERANCE);
    bad |= check(out_net, net_test_expected, NET_OUTPUT_SIZE, NET_TEST_TOLERANCE);
    /* the second model did not disturb the first (separate arenas) */
    if (har_run(har_test_input, out_har) != 0) return 2;
    bad |= check(out_har, har_test_expected, HAR_OUTPUT_SIZE, HAR_TEST_TOLERANCE);
    return bad;
}
"""


def test_two_prefixes_link_into_one_firmware(small, tmp_path):
    har, xh = build_model("conv1d_sensor")
    net, xn = small
    save_compressed_model(har, "csr", input_data=xh, directory=tmp_path / "har", prefix="har")
    save_compressed_model(net, "dense", input_data=xn, directory=tmp_path / "net", prefix="net")
    (tmp_path / "main.c").write_text(_TWO_MODELS_MAIN)
    srcs = model_sources(tmp_path / "har") + model_sources(tmp_path / "net")
    assert len(srcs) == 2
    exe = tmp_path / "firmware"
    proc = run([CC, *CFLAGS, "-I", tmp_path, tmp_path / "main.c", *srcs, "-o", exe, "-lm"])
    assert proc.returncode == 0, proc.stderr  # compiles and links: no duplicate symbol
    proc = run([exe])
    assert proc.returncode == 0, proc.stdout
    with torch.no_grad():
        ref = np.concatenate([har(xh).numpy().ravel(), net(xn).numpy().ravel(), har(xh).numpy().ravel()])
    out = np.array([float.fromhex(s) for s in proc.stdout.split()])
    assert np.max(np.abs(out - ref)) <= default_tolerance(ref)


def test_prefixes_whose_guards_collide(small, tmp_path):
    model, x = small
    for p in ("net", "net_input"):
        save_compressed_model(model, "csr", input_data=x, directory=tmp_path / p, prefix=p)
    (tmp_path / "main.c").write_text(
        '#include "net/model.h"\n#include "net/headers/input.h"\n#include "net_input/model.h"\n'
        "static float o1[NET_OUTPUT_SIZE], o2[NET_INPUT_OUTPUT_SIZE];\n"
        "int main(void) { return net_run(net_test_input, o1) | net_input_run(net_test_input, o2); }\n"
    )
    srcs = model_sources(tmp_path / "net") + model_sources(tmp_path / "net_input")
    proc = run([CC, *CFLAGS, "-I", tmp_path, tmp_path / "main.c", *srcs, "-o", tmp_path / "fw", "-lm"])
    assert proc.returncode == 0, proc.stderr


_USER_MAIN = r"""
#include <stdio.h>
#include "model.h"

int main(void)
{
    static float in[MODEL_INPUT_SIZE], out[MODEL_OUTPUT_SIZE];
    int i;
    for (i = 0; i < MODEL_INPUT_SIZE; ++i) {
        if (scanf("%a", &in[i]) != 1) return 3;
    }
    if (model_run(in, out) != 0) return 2;
    for (i = 0; i < MODEL_OUTPUT_SIZE; ++i) printf("%a\n", (double)out[i]);
    return 0;
}
"""


def test_user_main_is_a_complete_build(emitted, small, tmp_path):
    d = emitted.directory
    model, _ = small
    (tmp_path / "main.c").write_text(_USER_MAIN)
    exe = tmp_path / "app"
    proc = run([CC, *CFLAGS, "-I", d, tmp_path / "main.c", *model_sources(d), "-o", exe, "-lm"])
    assert proc.returncode == 0, proc.stderr
    x = torch.randn(E2E_MODELS[NAME][1], generator=torch.Generator().manual_seed(7))
    proc = run([exe], input="\n".join(float(v).hex() for v in x.numpy().ravel().astype(np.float64)))
    assert proc.returncode == 0, proc.stderr
    out = np.array([float.fromhex(s) for s in proc.stdout.split()])
    with torch.no_grad():
        ref = model(x).numpy().ravel()
    assert np.max(np.abs(out - ref)) <= default_tolerance(ref)


# ---- the self-test -------------------------------------------------------------------------------


def test_selftest_fails_when_expected_output_is_tampered(emitted, tmp_path):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(emitted.directory, d, ignore=shutil.ignore_patterns("build"))
    ok = run(["make", "-C", d, "check"])
    assert ok.returncode == 0 and "SC_PASS" in ok.stdout
    inp = d / "headers" / "input.h"
    text = inp.read_text()
    m = re.search(r"model_test_expected\[\d+\] = \{\s*([^,\s]+)", text)
    tampered = text[: m.start(1)] + "1234.5f" + text[m.end(1) :]
    inp.write_text(tampered)
    bad = run(["make", "-C", d, "check"])
    assert bad.returncode != 0
    assert "SC_FAIL" in bad.stdout
    # the self-test itself exits 1 (make reports it as an error)
    assert run([d / "build" / "host" / "selftest"]).returncode == 1


# ---- writing the directory -----------------------------------------------------------------------


def test_refuses_foreign_nonempty_directory(small, tmp_path):
    model, x = small
    d = tmp_path / "mine"
    (d / "src").mkdir(parents=True)
    (d / "main.c").write_text("int main(void) { return 0; }\n")
    (d / "src" / "model.h").write_text("/* the user's own model.h */\n")
    before = tree(d)
    with pytest.raises(CodegenError, match="overwrite=True"):
        save_compressed_model(model, "csr", input_data=x, directory=d)
    assert tree(d) == before  # nothing written, nothing removed
    assert leftovers(tmp_path) == []
    # overwrite=True writes the model and keeps the user's files
    res = save_compressed_model(model, "csr", input_data=x, directory=d, overwrite=True)
    after = tree(d)
    assert after["main.c"] == before["main.c"] and after["src/model.h"] == before["src/model.h"]
    assert set(after) == set(res.report["files"]) | set(before)
    assert leftovers(tmp_path) == []
    assert run(["make", "-C", d, "check"]).returncode == 0


def test_empty_existing_directory_is_used(small, tmp_path):
    model, x = small
    (tmp_path / "empty").mkdir()
    res = save_compressed_model(model, "csr", input_data=x, directory=tmp_path / "empty")
    assert set(tree(res.directory)) == set(res.report["files"])


def test_refuses_a_file_as_directory(small, tmp_path):
    model, x = small
    f = tmp_path / "model"
    f.write_text("user data\n")
    with pytest.raises(CodegenError):
        save_compressed_model(model, "csr", input_data=x, directory=f, overwrite=True)
    assert f.read_text() == "user data\n"
    assert leftovers(tmp_path) == []


def test_reemission_replaces_our_files_and_keeps_the_users(small, tmp_path):
    model, x = small
    d = tmp_path / "m"
    save_compressed_model(model, "csr", input_data=x, directory=d)
    (d / "NOTES.md").write_text("my notes\n")
    (d / "app" / "extra.c").write_text("/* user */\n")
    (d / "headers" / "conv1.h").write_text("/* stale, hand-edited */\n")  # changed: no longer ours
    stale = tree(d)["headers/conv2.h"]  # unchanged: ours, removed when the new emission has no conv2
    # another model, no input_data: different layer headers, no input.h
    other, xo = build_model("lenet300_100")
    res = save_compressed_model(other, "csr", input_shape=tuple(xo.shape), directory=d)
    fresh = save_compressed_model(other, "csr", input_shape=tuple(xo.shape), directory=tmp_path / "fresh")
    got, want = tree(d), tree(fresh.directory)
    assert got.pop("NOTES.md") == b"my notes\n"
    assert got.pop("app/extra.c") == b"/* user */\n"
    assert got.pop("headers/conv1.h") == b"/* stale, hand-edited */\n"  # a changed file is the user's
    assert got == want  # our files replaced; files of the old emission that are gone were removed
    assert stale and "headers/conv2.h" not in got and "headers/input.h" not in got
    assert res.report["files"] == sorted(want)
    assert leftovers(tmp_path) == []


class Unsupported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.gru = nn.GRU(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sort(self.fc(x), dim=1)[0]


def test_failed_emission_leaves_nothing(tmp_path):
    with pytest.raises(UnsupportedOpError, match="torch.sort"):
        save_compressed_model(Unsupported(), "csr", input_data=torch.randn(1, 8), directory=tmp_path / "u")
    assert list(tmp_path.iterdir()) == []


def test_failure_while_writing_leaves_nothing(small, tmp_path, monkeypatch):
    """A failure after the temporary directory exists (here: copying the runtime) removes it, and
    a previous emission in the target directory is left as it was."""
    model, x = small
    d = tmp_path / "m"
    save_compressed_model(model, "dense", input_data=x, directory=d)
    before = tree(d)

    def broken_write(self, data):
        raise OSError(28, "No space left on device", str(self))

    monkeypatch.setattr(cemit.Path, "write_bytes", broken_write)
    with pytest.raises(CodegenError, match="No space left on device"):
        save_compressed_model(model, "csr", input_data=x, directory=tmp_path / "new")
    with pytest.raises(CodegenError, match="No space left on device"):
        save_compressed_model(model, "csr", input_data=x, directory=d)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert tree(d) == before


class KeywordNames(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.d = nn.ModuleDict({"if": nn.Linear(4, 4)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.d["if"](x)


def test_python_keyword_module_name_is_emitted(tmp_path):
    """torch.fx writes `self.d.if(x)` for a submodule named after a keyword; codegen.trace quotes it."""
    from helpers import emit_and_verify

    res = emit_and_verify(KeywordNames(), (1, 4), "csr", tmp_path)
    assert res.report["layers"][0]["source"] == "d.if"


def test_user_model_is_not_modified(tmp_path):
    model, x = build_model("resnet_tiny")
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    save_compressed_model(model, "csr", input_data=x, directory=tmp_path / "r")
    codegen.weight_bytes(model, x)
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)


class CaseNames(nn.Module):
    """Module names that differ only in case ("fc" and "FC"), and one that is a reserved file name
    in another case ("INPUT", next to headers/input.h)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.FC = nn.Linear(6, 5)
        self.INPUT = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.INPUT(torch.relu(self.FC(torch.relu(self.fc(x)))))


def test_module_names_differing_only_in_case(tmp_path):
    res = save_compressed_model(CaseNames(), "dense", input_data=torch.randn(1, 4), directory=tmp_path / "c")
    names = [f.lower() for f in res.report["files"]]
    assert len(names) == len(set(names)), "file names must be unique ignoring case"
    proc = run(["make", "-C", res.directory, "check"])
    assert proc.returncode == 0, proc.stderr[-2000:]
