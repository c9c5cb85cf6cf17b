"""Drop-in builds of an emitted directory (issue 18 item 6): its CMakeLists.txt builds the library target
``<prefix>`` with the host compiler (alone, with ctest running the self-test, and through add_subdirectory
from another project) and with arm-none-eabi-gcc through board/arm-none-eabi-m4.cmake, where nm finds
exactly the weight bytes of report.json; the Arduino layout (arduino=True) compiles as the Arduino builder
would compile it (every .c of src/ with src/ on the include path, the example sketch as C++ against a
stub Arduino.h) and its sketch prints the model's outputs.

cmake and arm-none-eabi-gcc are installed in CI: SPARSECOMP_REQUIRE_BOARD=1 makes their absence a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from codegen import save_compressed_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        msg = f"{tool} is not installed"
        if os.environ.get("SPARSECOMP_REQUIRE_BOARD") == "1":
            pytest.fail(msg + " (SPARSECOMP_REQUIRE_BOARD=1)")
        pytest.skip(msg)
    return path


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 10)).eval()


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout


@pytest.fixture(scope="module")
def emitted(tmp_path_factory):
    d = tmp_path_factory.mktemp("dropin") / "kws_model"
    res = save_compressed_model(_net(), "csr", torch.randn(1, 1, 8, 8), d, prefix="kws", arduino=True)
    return d, res


def test_cmake_host_build_runs_the_self_test(emitted, tmp_path):
    _require("cmake")
    d, res = emitted
    assert "CMakeLists.txt" in res.report["files"]
    build = tmp_path / "build"
    _run(["cmake", "-S", str(d), "-B", str(build)])
    _run(["cmake", "--build", str(build)])
    assert (build / "libkws.a").is_file()
    out = _run(["ctest", "--test-dir", str(build), "--output-on-failure"])
    assert "100% tests passed" in out


def test_cmake_add_subdirectory_from_another_project(emitted, tmp_path):
    _require("cmake")
    d, _ = emitted
    app = tmp_path / "app"
    app.mkdir()
    (app / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.13)\nproject(app C)\n"
        f"add_subdirectory({d.as_posix()} kws_build)\n"
        "add_executable(app main.c)\ntarget_link_libraries(app PRIVATE kws)\n")
    (app / "main.c").write_text(
        '#include <stdio.h>\n#include "model.h"\n'
        "int main(void) { static float in[KWS_INPUT_SIZE], out[KWS_OUTPUT_SIZE]; int i;\n"
        "  if (kws_run(in, out) != 0) return 2;\n"
        '  for (i = 0; i < KWS_OUTPUT_SIZE; ++i) printf("%.9g\\n", out[i]);\n  return 0; }\n')
    _run(["cmake", "-S", str(app), "-B", str(tmp_path / "b")])
    _run(["cmake", "--build", str(tmp_path / "b")])
    assert not (tmp_path / "b" / "kws_build" / "kws_selftest").exists()  # a sub-project builds the library only
    got = np.array([float(v) for v in _run([str(tmp_path / "b" / "app")]).split()], dtype=np.float32)
    with torch.no_grad():
        ref = _net()(torch.zeros(1, 1, 8, 8)).numpy().reshape(-1)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * float(np.abs(ref).max()) + 1e-6)


def test_cmake_cortex_m4_toolchain_file(emitted, tmp_path):
    _require("cmake")
    _require("arm-none-eabi-gcc")
    nm = _require("arm-none-eabi-nm")
    d, res = emitted
    build = tmp_path / "m4"
    _run(["cmake", "-S", str(d), "-B", str(build), f"-DCMAKE_TOOLCHAIN_FILE={d / 'board' / 'arm-none-eabi-m4.cmake'}"])
    _run(["cmake", "--build", str(build)])
    lib = build / "libkws.a"
    syms = _run([nm, "--print-size", "--defined-only", str(lib)])
    sizes = {ln.split()[3]: int(ln.split()[1], 16) for ln in syms.splitlines() if len(ln.split()) == 4}
    weights = sum(a["bytes"] for ly in res.report["layers"] for a in ly["arrays"])
    assert sum(sizes[a["name"]] for ly in res.report["layers"] for a in ly["arrays"]) == weights == res.weight_bytes
    assert "kws_run" in sizes and not (build / "kws_selftest").exists()
    attrs = _run(["arm-none-eabi-readelf", "-A", str(lib)])
    assert "Cortex-M4" in attrs or "v7E-M" in attrs


ARDUINO_STUB = """#pragma once
#include <stdio.h>
struct SerialStub {
    void begin(long) {}
    void print(const char *s) { printf("%s", s); }
    void print(float v, int digits) { printf("%.*f", digits, v); }
    void println(int v) { printf("%d\\n", v); }
    void println(unsigned long v) { printf("%lu\\n", v); }
};
static SerialStub Serial;
static unsigned long micros() { return 0; }
static void delay(unsigned long) {}
"""


def test_arduino_library_layout_builds(emitted, tmp_path):
    cc, cxx = shutil.which("cc") or shutil.which("gcc"), shutil.which("c++") or shutil.which("g++")
    if not cc or not cxx:
        pytest.skip("no host C/C++ compiler")
    d, res = emitted
    props = dict(ln.split("=", 1) for ln in (d / "library.properties").read_text().splitlines() if ln)
    assert props["name"] == "kws" and props["includes"] == "model.h" and props["architectures"] == "*"
    src = d / "src"
    assert (src / "model.c").read_text() == (d / "model.c").read_text()
    assert sorted(str(p.relative_to(d)) for p in src.rglob("*") if p.is_file()) == sorted(
        f for f in res.report["files"] if f.startswith("src/"))
    assert not (src / "app").exists() and not (src / "board").exists()
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "Arduino.h").write_text(ARDUINO_STUB)
    objs = []
    for c in sorted(src.rglob("*.c")):  # the Arduino builder compiles every source under src/
        o = tmp_path / (c.stem + ".o")
        _run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", f"-I{src}", "-c", str(c), "-o", str(o)])
        objs.append(str(o))
    ino = d / "examples" / "kws_run" / "kws_run.ino"
    main = tmp_path / "sketch.cpp"  # what arduino-builder makes of a sketch: Arduino.h first, then the .ino
    main.write_text(f'#include <Arduino.h>\n#include "{ino}"\nint main() {{ setup(); loop(); return 0; }}\n')
    exe = tmp_path / "sketch"
    _run([cxx, "-Wall", "-Werror", f"-I{stub}", f"-I{src}", str(main), *objs, "-lm", "-o", str(exe)])
    lines = _run([str(exe)]).splitlines()
    got = np.array([float(v) for v in lines[0].split()], dtype=np.float32)
    with torch.no_grad():
        ref = _net()(torch.zeros(1, 1, 8, 8)).numpy().reshape(-1)
    np.testing.assert_allclose(got, ref, atol=2e-6 + 1e-4 * float(np.abs(ref).max()))
    assert lines[1] == "us: 0"


def test_without_arduino_no_arduino_files(tmp_path):
    res = save_compressed_model(_net(), "csr", input_shape=(1, 1, 8, 8), directory=tmp_path / "m")
    assert "CMakeLists.txt" in res.report["files"]
    assert not any(f.startswith(("src/", "examples/")) or f == "library.properties" for f in res.report["files"])
    assert "add_library(model STATIC model.c)" in (tmp_path / "m" / "CMakeLists.txt").read_text()
    assert json.loads((tmp_path / "m" / "report.json").read_text())["files"] == res.report["files"]
