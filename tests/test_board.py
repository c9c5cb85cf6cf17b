"""Cortex-M board support: cross builds, QEMU runs (M4F and M3), exit codes, profiling, sizes.

Needs arm-none-eabi-gcc (+ newlib) and qemu-system-arm: without them these tests are
skipped, unless SPARSECOMP_REQUIRE_BOARD=1 (CI), where a missing toolchain is a failure.

Most tests use a small hand-written model directory with the emitted layout (model.h,
model.c, headers/, runtime/, app/main.c, Makefile including board/board.mk, board/ copied
from runtime_c/board): they test the board files alone. The tests at the end run models
emitted by codegen.save_compressed_model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from codegen import board as cboard

pytestmark = pytest.mark.board

REPO = Path(__file__).resolve().parents[1]
BOARD_SRC = REPO / "runtime_c" / "board"


def require_board() -> None:
    """Skip (or, with SPARSECOMP_REQUIRE_BOARD=1, fail) when the board toolchain is missing."""
    ok, reason = cboard.board_toolchain_available()
    if ok:
        return
    message = f"Cortex-M board toolchain not available: {reason}"
    if os.environ.get("SPARSECOMP_REQUIRE_BOARD") == "1":
        pytest.fail(message + " (SPARSECOMP_REQUIRE_BOARD=1: a missing toolchain is an error)")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _board_toolchain():
    require_board()


# ---- a hand-written model directory with the emitted layout ---------------------------------

_TOY_RUNTIME = """\
#ifndef SC_RUNTIME_H
#define SC_RUNTIME_H
#ifdef SC_PROFILE
void sc_profile_begin(int idx, const char *name);
void sc_profile_end(int idx);
#define SC_LAYER_BEGIN(idx, name) sc_profile_begin((idx), (name))
#define SC_LAYER_END(idx) sc_profile_end(idx)
#else
#define SC_LAYER_BEGIN(idx, name) ((void)0)
#define SC_LAYER_END(idx) ((void)0)
#endif
static inline void sc_dense(const float *w, const float *b, const float *x, float *y,
                            int n_in, int n_out, int relu)
{
    int o, i;
    for (o = 0; o < n_out; ++o) {
        float acc = b[o];
        for (i = 0; i < n_in; ++i) {
            acc += w[o * n_in + i] * x[i];
        }
        y[o] = (relu && acc < 0.0f) ? 0.0f : acc;
    }
}
#endif
"""

_TOY_MODEL_C = """\
#include "model.h"
#include "headers/fc1.h"
#include "headers/fc2.h"
#include "runtime/sc_runtime.h"
static float sc_arena[{hidden}];
int {prefix}_run(const float *input, float *output)
{{
    SC_LAYER_BEGIN(0, "fc1");
    sc_dense(fc1_weight, fc1_bias, input, sc_arena, {n_in}, {hidden}, 1);
    SC_LAYER_END(0);
    SC_LAYER_BEGIN(1, "fc2");
    sc_dense(fc2_weight, fc2_bias, sc_arena, output, {hidden}, {n_out}, 0);
    SC_LAYER_END(1);
    return 0;
}}
"""

_TOY_MAIN_C = """\
#include <stdio.h>
#include <string.h>
#include "model.h"
#include "headers/input.h"
static float out[{PREFIX}_OUTPUT_SIZE];
int main(void)
{{
    int i;
    float max_err = 0.0f;
    if ({prefix}_run(sc_input, out) != 0) {{
        printf("SC_ERROR run\\n");
        return 2;
    }}
    for (i = 0; i < {PREFIX}_OUTPUT_SIZE; ++i) {{
        unsigned int bits;
        float d = out[i] - sc_expected[i];
        if (d < 0.0f) d = -d;
        if (!(d <= max_err)) max_err = d;
        memcpy(&bits, &out[i], sizeof bits);
        printf("SC_OUT %d 0x%08x\\n", i, bits);
    }}
    printf("SC_MAX_ABS_ERROR %.9g\\n", (double)max_err);
    printf("SC_TOLERANCE %.9g\\n", (double)SC_TOLERANCE);
    return max_err <= SC_TOLERANCE ? 0 : 1;
}}
"""

_TOY_MAKEFILE = """\
PREFIX ?= {prefix}
CC ?= gcc
CPPFLAGS += -I.
CFLAGS ?= -std=c99 -O2 -Wall -Wextra -Werror -pedantic
MODEL_SRCS = model.c
APP_SRCS = app/main.c
.PHONY: all check clean
all: build/host/selftest
build/host/selftest: $(MODEL_SRCS) $(APP_SRCS)
\t@mkdir -p $(@D)
\t$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $^ -lm
check: build/host/selftest
\t./build/host/selftest
clean:
\trm -rf build
include board/board.mk
"""


def _c_array(name: str, values: np.ndarray) -> str:
    flat = np.asarray(values, dtype=np.float32).ravel()
    body = ", ".join(f"{float(v):.9g}f" for v in flat)
    return f"static const float {name}[{flat.size}] = {{{body}}};\n"


def write_toy_model(directory: Path, *, prefix: str = "model", n_in: int = 16, hidden: int = 12,
                    n_out: int = 5, seed: int = 0, tolerance: float = 1e-5,
                    perturb_expected: float = 0.0) -> dict:
    """A two-layer MLP (dense+relu, dense) as an emitted directory. Returns its arrays."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((hidden, n_in)).astype(np.float32)
    b1 = rng.standard_normal(hidden).astype(np.float32)
    w2 = rng.standard_normal((n_out, hidden)).astype(np.float32)
    b2 = rng.standard_normal(n_out).astype(np.float32)
    x = rng.standard_normal(n_in).astype(np.float32)
    expected = (w2 @ np.maximum(w1 @ x + b1, 0.0) + b2).astype(np.float32)
    weight_bytes = 4 * (w1.size + b1.size + w2.size + b2.size)
    up = prefix.upper()

    for sub in ("headers", "runtime", "app"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    shutil.copytree(BOARD_SRC, directory / "board", dirs_exist_ok=True)
    (directory / "model.h").write_text(
        f"#ifndef {up}_H\n#define {up}_H\n"
        f"#define {up}_INPUT_SIZE {n_in}\n#define {up}_OUTPUT_SIZE {n_out}\n"
        f"#define {up}_ARENA_BYTES {4 * hidden}\n#define {up}_WEIGHT_BYTES {weight_bytes}\n"
        f"int {prefix}_run(const float *input, float *output);\n#endif\n"
    )
    (directory / "headers" / "fc1.h").write_text(_c_array("fc1_weight", w1) + _c_array("fc1_bias", b1))
    (directory / "headers" / "fc2.h").write_text(_c_array("fc2_weight", w2) + _c_array("fc2_bias", b2))
    (directory / "headers" / "input.h").write_text(
        _c_array("sc_input", x) + _c_array("sc_expected", expected + np.float32(perturb_expected))
        + f"#define SC_TOLERANCE {tolerance:.9g}f\n"
    )
    (directory / "runtime" / "sc_runtime.h").write_text(_TOY_RUNTIME)
    (directory / "model.c").write_text(
        _TOY_MODEL_C.format(prefix=prefix, n_in=n_in, hidden=hidden, n_out=n_out))
    (directory / "app" / "main.c").write_text(_TOY_MAIN_C.format(prefix=prefix, PREFIX=up))
    (directory / "Makefile").write_text(_TOY_MAKEFILE.format(prefix=prefix))
    return {"expected": expected, "weight_bytes": weight_bytes, "arena_bytes": 4 * hidden}


@pytest.fixture
def toy(tmp_path):
    d = tmp_path / "toy"
    info = write_toy_model(d)
    return d, info


# ---- tests on the hand-written model --------------------------------------------------------


@pytest.mark.parametrize("target", ["m4", "m3"])
def test_toy_model_runs_and_matches(toy, target):
    d, info = toy
    result = cboard.run(d, target, timeout=30)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.passed
    assert result.outputs.dtype == np.float32
    np.testing.assert_allclose(result.outputs, info["expected"], rtol=0, atol=1e-5)
    assert result.max_abs_error is not None and result.max_abs_error <= 1e-5
    assert result.tolerance == pytest.approx(1e-5)
    assert (d / cboard.TARGETS[target].build_dir / "model.elf").is_file()


def test_m4_and_m3_agree_with_host_build(toy):
    """The same C gives the same bits on the host, the M4F (hard float) and the M3 (soft float)
    for this small dense model (no fused multiply-add: -ffp-contract is off for C99)."""
    d, _ = toy
    if shutil.which("gcc") is None:
        pytest.skip("no host gcc")
    host = subprocess.run(["make", "-s", "-C", str(d), "check"], capture_output=True, text=True, check=True)
    host_out = cboard.parse_outputs(host.stdout)
    m4 = cboard.run(d, "m4").outputs
    m3 = cboard.run(d, "m3").outputs
    np.testing.assert_allclose(m4, host_out, rtol=0, atol=1e-6)
    np.testing.assert_allclose(m3, host_out, rtol=0, atol=1e-6)


@pytest.mark.parametrize("target", ["m4", "m3"])
def test_failing_self_test_exit_code_propagates(tmp_path, target):
    d = tmp_path / "bad"
    write_toy_model(d, perturb_expected=0.5)
    result = cboard.run(d, target)
    assert result.exit_code == 1
    assert not result.passed
    assert result.max_abs_error == pytest.approx(0.5, abs=1e-3)
    # `make qemu` fails too, and make's error line names the program's status
    goal = "qemu" if target == "m4" else "qemu-m3"
    env = {**os.environ, "LC_ALL": "C"}
    proc = subprocess.run(["make", "-C", str(d), goal], capture_output=True, text=True, env=env)
    assert proc.returncode != 0
    assert "Error 1" in proc.stderr


def test_any_exit_status_and_faults_propagate(tmp_path):
    d = tmp_path / "codes"
    write_toy_model(d)
    (d / "app" / "exit42.c").write_text(
        '#include <stdio.h>\nint main(void)\n{\n    printf("bye\\n");\n    return 42;\n}\n')
    (d / "app" / "crash.c").write_text(
        "#include <stdint.h>\nint main(void)\n{\n"
        "    volatile uint32_t *p = (volatile uint32_t *)0x30000000u; /* unmapped */\n"
        "    return (int)*p;\n}\n")
    elf42 = cboard.build(d, "m4", make_vars={"APP_SRCS": "app/exit42.c", "PREFIX": "exit42"})
    r42 = cboard.run_elf(elf42, "m4")
    assert (r42.exit_code, r42.stdout) == (42, "bye\n")
    elf_crash = cboard.build(d, "m3", make_vars={"APP_SRCS": "app/crash.c", "PREFIX": "crash"})
    crash = cboard.run_elf(elf_crash, "m3")
    assert crash.exit_code == 134
    assert "SC_FAULT" in crash.stderr


def test_hung_program_times_out(tmp_path):
    d = tmp_path / "hang"
    write_toy_model(d)
    (d / "app" / "hang.c").write_text("int main(void)\n{\n    for (;;) {\n    }\n}\n")
    elf = cboard.build(d, "m4", make_vars={"APP_SRCS": "app/hang.c", "PREFIX": "hang"})
    result = cboard.run_elf(elf, "m4", timeout=1.0)
    assert result.timed_out and result.exit_code == 124 and not result.passed


def test_require_board_skips_or_fails(monkeypatch):
    monkeypatch.setattr(cboard, "board_toolchain_available", lambda: (False, "no arm-none-eabi-gcc"))
    monkeypatch.delenv("SPARSECOMP_REQUIRE_BOARD", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no arm-none-eabi-gcc"):
        require_board()
    monkeypatch.setenv("SPARSECOMP_REQUIRE_BOARD", "1")
    with pytest.raises(pytest.fail.Exception, match="SPARSECOMP_REQUIRE_BOARD=1"):
        require_board()


def test_make_qemu_and_size_targets(toy):
    d, info = toy
    proc = subprocess.run(["make", "-s", "-C", str(d), "qemu"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "SC_MAX_ABS_ERROR" in proc.stdout
    size = subprocess.run(["make", "-s", "-C", str(d), "size"], capture_output=True, text=True, check=True)
    line = [ln for ln in size.stdout.splitlines() if ln.startswith("model (code+weights+arena)")]
    assert line, size.stdout
    text_delta = int(line[0].split("text")[1].split()[0])
    assert text_delta > info["weight_bytes"]


def test_profile_counts_are_deterministic_and_add_up(toy):
    d, _ = toy
    first = cboard.profile(d, "m4")
    second = cboard.profile(d, "m4")
    assert first == second
    assert first.insns_per_tick == cboard.INSNS_PER_TICK_DEFAULT
    assert [layer.name for layer in first.layers] == ["fc1", "fc2"]
    assert all(layer.instructions > 0 and layer.calls == 1 for layer in first.layers)
    # fc1 has 192 MACs, fc2 60: fc1 must cost more
    assert first.layers[0].instructions > first.layers[1].instructions
    # the whole call = the layers + the hooks and glue between them (a few ticks)
    assert first.layer_sum <= first.total_instructions <= first.layer_sum + 10 * first.insns_per_tick
    # soft float on the M3 costs several times the M4F's instructions
    m3 = cboard.profile(d, "m3")
    assert m3.layers[0].instructions > 3 * first.layers[0].instructions


def test_systick_calibration_matches_the_assumed_ratio(toy):
    d, _ = toy
    proc = subprocess.run(["make", "-s", "-C", str(d), "profile-calibrate"], capture_output=True,
                          text=True, timeout=120, check=True)
    _, insns, ticks = proc.stdout.split()
    assert int(insns) / int(ticks) == pytest.approx(cboard.INSNS_PER_TICK_DEFAULT, rel=1e-3)


def test_measure_is_consistent(toy):
    d, info = toy
    m = cboard.measure(d)
    assert m.weight_bytes == info["weight_bytes"]
    # the weight arrays really occupy MODEL_WEIGHT_BYTES in the linked ELF (nm)
    assert m.weight_bytes_nm == m.weight_bytes
    assert m.model_flash_bytes == m.firmware.flash - m.baseline.flash
    assert m.weight_bytes + m.code_bytes == m.model_flash_bytes
    assert 0 < m.code_bytes < 2000
    assert m.arena_bytes == info["arena_bytes"]
    assert m.model_ram_bytes == m.firmware.ram - m.baseline.ram
    assert m.arena_bytes <= m.model_ram_bytes
    assert m.firmware.stack > 0 and m.firmware.heap > 0
    assert m.instructions is not None and m.instructions > 0
    assert [layer.name for layer in m.layers] == ["fc1", "fc2"]
    assert m.as_dict()["weight_bytes"] == m.weight_bytes
    # nothing but build/ was written
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["Makefile", "app", "board", "build", "headers", "model.c", "model.h", "runtime"])


def test_other_prefix(tmp_path):
    d = tmp_path / "kws"
    info = write_toy_model(d, prefix="kws", n_in=10, hidden=6, n_out=3, seed=3)
    result = cboard.run(d, "m4")
    assert result.passed, result.stdout
    np.testing.assert_allclose(result.outputs, info["expected"], atol=1e-5)
    m = cboard.measure(d, instructions=False)
    assert m.weight_bytes == m.weight_bytes_nm == info["weight_bytes"]
    # other flags rebuild (board.mk keeps a flags stamp per build dir): -Os code is smaller
    small = cboard.measure(d, instructions=False, make_vars={"ARM_OPT": "-Os"})
    assert small.weight_bytes == m.weight_bytes
    assert small.code_bytes < m.code_bytes
    assert "-Os" in (d / "build" / "m4" / "flags.txt").read_text()


def test_board_command_prints_a_report(toy, capsys):
    d, _ = toy
    assert cboard.board_command(d, ("m4", "m3")) == 0
    out = capsys.readouterr().out
    assert "m4 Cortex-M4F" in out and "PASS" in out
    assert "weights" in out and "instructions per inference" in out


def test_not_a_model_directory(tmp_path):
    with pytest.raises(cboard.BoardError, match="not an emitted model directory"):
        cboard.build(tmp_path, "m4")
    with pytest.raises(cboard.BoardError, match="unknown board target"):
        write_toy_model(tmp_path / "t")
        cboard.build(tmp_path / "t", "m7")


# ---- models emitted by codegen.save_compressed_model ----------------------------------------


def _emitted_models():
    import torch

    class SmallCNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
            self.bn1 = torch.nn.BatchNorm2d(4)
            self.pool = torch.nn.MaxPool2d(2)
            self.conv2 = torch.nn.Conv2d(4, 8, 3)
            self.fc = torch.nn.Linear(8 * 2 * 2, 5)

        def forward(self, x):
            x = self.pool(torch.relu(self.bn1(self.conv1(x))))
            x = torch.relu(self.conv2(x))
            return self.fc(torch.flatten(x, 1))

    def mlp():
        return torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)), (1, 20)

    def cnn():
        return SmallCNN(), (1, 1, 8, 8)

    return {"mlp": mlp, "cnn": cnn}


def _prune_(net, density: float) -> None:
    import torch

    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
                w = mod.weight
                keep = max(1, round(density * w.numel()))
                threshold = w.abs().flatten().kthvalue(w.numel() - keep + 1).values
                w.mul_((w.abs() >= threshold).to(w.dtype))


@pytest.fixture(scope="module", params=[("mlp", "dense", 1.0), ("cnn", "dense", 1.0), ("cnn", "csr", 0.3)],
                ids=lambda p: f"{p[0]}-{p[1]}")
def emitted(request, tmp_path_factory):
    require_board()
    torch = pytest.importorskip("torch")
    from codegen import save_compressed_model

    name, representation, density = request.param
    torch.manual_seed(0)
    net, shape = _emitted_models()[name]()
    net.eval()
    if density < 1.0:
        _prune_(net, density)
    with torch.no_grad():  # give BatchNorm non-trivial statistics
        for mod in net.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    x = torch.randn(*shape)
    with torch.no_grad():
        expected = net(x).numpy().reshape(-1).astype(np.float32)
    d = tmp_path_factory.mktemp(f"emitted_{name}_{representation}") / "model"
    res = save_compressed_model(net, representation, input_data=x, directory=d)
    return d, expected, res


@pytest.mark.parametrize("target", ["m4", "m3"])
def test_emitted_model_runs_on_board_and_matches_pytorch(emitted, target):
    d, expected, res = emitted
    result = cboard.run(d, target)
    assert result.passed, result.stdout + result.stderr
    assert result.outputs.shape == expected.shape
    tolerance = res.report["test"]["tolerance"]
    np.testing.assert_allclose(result.outputs, expected, rtol=0, atol=tolerance)


@pytest.mark.parametrize("target", ["m4", "m3"])
def test_emitted_model_at_Os_matches_pytorch(emitted, target):
    """-Os selects the compact dense kernels (SC_SMALL_CODE, __OPTIMIZE_SIZE__): parity on the board too."""
    d, expected, res = emitted
    result = cboard.run(d, target, make_vars={"ARM_OPT": "-Os"})
    assert result.passed, result.stdout + result.stderr
    np.testing.assert_allclose(result.outputs, expected, rtol=0, atol=res.report["test"]["tolerance"])


def test_emitted_model_measure(emitted):
    d, _, res = emitted
    m = cboard.measure(d)
    assert m.weight_bytes == res.report["totals"]["weight_bytes"] == m.weight_bytes_nm
    assert m.arena_bytes == res.report["memory"]["arena_bytes"]
    assert m.weight_bytes + m.code_bytes == m.model_flash_bytes
    assert m.code_bytes > 0
    assert m.arena_bytes <= m.model_ram_bytes < m.arena_bytes + 64
    names = [layer.name for layer in m.layers]
    assert names == [layer["source"] for layer in res.report["layers"]]
    assert sum(layer.instructions for layer in m.layers) <= m.instructions


# ---- every end-to-end model of tests/models.py on the emulated M4F and M3 --------------------


@pytest.fixture(scope="module", params=sorted(__import__("models").E2E_MODELS))
def e2e_emitted(request, tmp_path_factory):
    """An E2E model (trained-like, ~70% pruned) emitted with "csr": a mix of dense and CSR layers."""
    require_board()
    import torch
    from models import build_model

    from codegen import save_compressed_model

    model, x = build_model(request.param)
    with torch.no_grad():
        reference = model(x).numpy().reshape(-1).astype(np.float32)
    d = tmp_path_factory.mktemp(f"e2e_{request.param}") / request.param
    save_compressed_model(model, "csr", input_data=x, directory=d)
    return request.param, d, reference


@pytest.mark.parametrize("target", ["m4", "m3"])
def test_e2e_model_on_board_matches_pytorch(e2e_emitted, target):
    from helpers import assert_parity

    name, d, reference = e2e_emitted
    result = cboard.run(d, target)
    assert result.passed, f"{name} on {target}: exit {result.exit_code}\n{result.stdout}{result.stderr}"
    assert_parity(result.outputs, reference, f"{name} on the emulated {target}")


def test_board_json_holds_the_printed_figures(toy, capsys, tmp_path):
    d, _ = toy
    out_json = tmp_path / "board.json"
    assert cboard.board_command(d, ("m4",), json_path=out_json) == 0
    printed = capsys.readouterr().out
    fig = json.loads(out_json.read_text())
    assert fig["status"] == 0 and fig["targets"]["m4"]["passed"] is True
    m = fig["measure"]
    assert m["flash"]["weights"] == m["flash"]["weights_nm"] > 0
    assert f"{m['instructions']:,}" in printed
    assert m["layers"] and sum(ly["instructions"] for ly in m["layers"]) <= m["instructions"]
    for ly in m["layers"]:
        assert f"{ly['instructions']:>12,}" in printed
