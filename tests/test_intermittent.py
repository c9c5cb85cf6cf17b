"""Intermittent inference (issue 16): save_compressed_model(..., intermittent=True).

PyTorch is the oracle and an uninterrupted run the reference: every e2e model is emitted with
intermittent=True and run through its own ``make power-fail-check`` (host: the NVM section mapped from a
file, the process killed hundreds of times at seeded failure points: inside commits, before commits, at
the start of a unit after garbage was written over part of its output), which requires every finished
inference to be bit-identical to the uninterrupted one and within the self-test tolerance of PyTorch.
The board tests reset the emulated Cortex-M4 at seeded instruction counts (``make qemu-power-fail``).
Negative tests check the harness catches a model that is not idempotent or commits too early.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from models import E2E_MODELS, build_model, sample_inputs
from test_board import require_board

import codegen
from codegen import intermittent, memory
from codegen.errors import CodegenError

HOST_FAILURES = 300


def make(directory: Path, *targets: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-C", str(directory), *targets], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def power_fail(directory: Path, failures: int = HOST_FAILURES, seed: int = 1) -> dict[str, int]:
    proc = make(directory, "power-fail-check", f"FAILURES={failures}", f"SEED={seed}")
    assert proc.returncode == 0 and "SC_PASS" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = re.search(r"SC_POWER_FAIL failures=(\d+) inferences=(\d+) processes=(\d+)", proc.stdout)
    assert m, proc.stdout
    assert "bit-identical to model_run: yes" in proc.stdout, proc.stdout
    return {"failures": int(m[1]), "inferences": int(m[2]), "processes": int(m[3])}


def emit(name: str, tmp_path: Path, representation: str = "csr", **kw) -> codegen.api.EmitResult:
    model, x = build_model(name)
    return codegen.save_compressed_model(model, representation, x, tmp_path / name, intermittent=True, **kw)


@pytest.mark.parametrize("name", list(E2E_MODELS))
def test_host_power_failures(name, tmp_path):
    res = emit(name, tmp_path)
    d = res.directory
    assert make(d, "check").returncode == 0  # the ordinary self-test still passes
    figures = power_fail(d)
    assert figures["failures"] == HOST_FAILURES
    assert figures["processes"] > figures["inferences"] > 1
    rep = res.report["intermittent"]
    assert rep["units"][0]["op"] == "copy input" and len(rep["units"]) == len(res.report["layers"]) + 1
    assert rep["nvm_bytes"] == int(re.search(r"MODEL_NVM_BYTES\s+(\d+)", (d / "model.h").read_text())[1])


@pytest.mark.parametrize("name,representation,formats", [
    ("resnet_tiny", "int8", {"int8", "int8_csr", "int8_rel"}),
    ("ds_cnn", "codebook", {"codebook", "codebook_csr", "codebook_rel"}),
    ("lenet300_100", "huffman", {"codebook_huff"}),
    ("conv1d_sensor", "auto", {"codebook", "codebook_csr", "codebook_rel"}),
])  # fmt: skip
def test_host_power_failures_weight_only(name, representation, formats, tmp_path):
    """Weight-only int8, codebook, Huffman-coded and auto-chosen weights (float activations) resume
    bit-identically too: BatchNorm folded and weights quantized by codegen.quantize.quantized_copy."""
    from codegen.quantize import quantized_copy

    model, x = build_model(name)
    q, _ = quantized_copy(model, "int8" if representation == "int8" else "codebook", 4)
    res = codegen.save_compressed_model(q, representation, x, tmp_path / name, intermittent=True)
    used = {layer["format"] for layer in res.report["layers"]}
    assert used & formats, (representation, used)
    assert power_fail(res.directory)["failures"] == HOST_FAILURES


def test_dense_representation_and_seeds(tmp_path):
    d = emit("ds_cnn", tmp_path, "dense").directory
    for seed in (2, 3):
        power_fail(d, 100, seed)


def test_normal_run_unchanged(tmp_path):
    """model.c of intermittent=True is the ordinary model.c followed by the intermittent part."""
    model, x = build_model("ds_cnn")
    plain = codegen.save_compressed_model(model, "csr", x, tmp_path / "plain").directory
    inter = emit("ds_cnn", tmp_path).directory
    a, b = (plain / "model.c").read_text(), (inter / "model.c").read_text()
    assert b.startswith(a) and "_run_intermittent" in b[len(a):] and "intermittent" not in a
    rep = json.loads((plain / "report.json").read_text())
    assert "intermittent" not in rep and not (plain / "app" / "power_fail.c").exists()


def test_nvm_plan_is_out_of_place():
    """The normal plan runs some ops in place on ds_cnn; the NVM plan never lets an op's output (or scratch)
    overlap a buffer it reads, and keeps the input and output in the arena."""
    model, x = build_model("ds_cnn")
    g, mem = codegen.api.build_graph(model, x)
    shared = [op for op in g.ops if mem.storage[op.output].group in {mem.storage[v].group for v in op.inputs}]
    assert shared, "ds_cnn is expected to run some op in place normally"
    nvm = intermittent.plan_nvm(g)
    assert all(s.kind == "arena" for s in nvm.storage.values())
    for op in g.ops:
        out = nvm.storage[op.output]
        for v in op.inputs:
            st = nvm.storage[v]
            assert (out.offset + g.values[op.output].nbytes <= st.offset
                    or st.offset + g.values[v].nbytes <= out.offset), op.source  # fmt: skip
    intermittent.check_idempotent(g, nvm)
    with pytest.raises(CodegenError, match="overlaps its input"):
        intermittent.check_idempotent(g, mem if mem.arena_bytes else nvm)


def test_harness_catches_in_place_units(tmp_path, monkeypatch):
    """A model planned WITH in-place kernels is not idempotent: the harness must see wrong outputs."""
    def in_place_plan(g):
        n = len(g.ops)
        first, last = memory.value_lifetimes(g)
        first = {v: (f + 1 if f >= 0 else 0) for v, f in first.items()}
        last = {v: (la + 1 if la >= 0 else -1) for v, la in last.items()}
        last[g.output] = n + 1
        return memory.plan_graph(g, lifetimes=(first, last), op_time=lambda i: i + 1, caller_io=False)

    monkeypatch.setattr(intermittent, "plan_nvm", in_place_plan)
    monkeypatch.setattr(intermittent, "check_idempotent", lambda g, mem: None)
    d = emit("ds_cnn", tmp_path).directory
    proc = make(d, "power-fail-check", "FAILURES=300")
    assert proc.returncode != 0 and "SC_FAIL" in proc.stdout, proc.stdout[-2000:]


def test_harness_catches_early_commit(tmp_path):
    """Committing a unit before its layer ran (edited model.c) must fail the check."""
    d = emit("lenet5", tmp_path).directory
    src = (d / "model.c").read_text()
    part = src.index("static int model_run_units")
    body = src[part:]
    # move the first layer's commit to the start of its unit
    m = re.search(r"if \(unit < 2u\) \{\n", body)
    commit = "        sc_nvm_commit(model_nvm.slots, &seq, 2u, MODEL_NVM_ID);\n"
    assert m and commit in body
    body = body.replace(commit, "", 1)
    body = body[: m.end()] + commit + body[m.end():]
    (d / "model.c").write_text(src[:part] + body)
    proc = make(d, "power-fail-check", "FAILURES=300")
    assert proc.returncode != 0 and "SC_FAIL" in proc.stdout, proc.stdout[-2000:]


def _tiled(tmp_path: Path, integer: bool, **kw) -> tuple[codegen.api.EmitResult, codegen.api.EmitResult]:
    """LeNet-5 emitted intermittent without and with ram_budget = half its arena (two tiled stages)."""
    model, x = build_model("lenet5")
    q = {"integer": True, "calibration_data": sample_inputs("lenet5", 32)} if integer else {}
    rep = "int8" if integer else "csr"
    plain = codegen.save_compressed_model(model, rep, x, tmp_path / "plain", intermittent=True, **q)
    budget = plain.report["memory"]["arena_bytes"] // 2
    res = codegen.save_compressed_model(model, rep, x, tmp_path / "tiled", intermittent=True, ram_budget=budget,
                                        **q, **kw)  # fmt: skip
    return plain, res


@pytest.mark.parametrize("integer", [False, True], ids=["float", "int8"])
def test_tiled_stages_run_as_units(integer, tmp_path):
    """intermittent=True with ram_budget: each tile of a tiled stage is a unit (its buffers in an SRAM workspace,
    recomputed after a failure); only the values between stages and layers are in NVM, which shrinks."""
    plain, res = _tiled(tmp_path, integer)
    t, it = res.report["tiling"], res.report["intermittent"]
    assert t["stages"] and res.report["memory"]["arena_bytes"] <= plain.report["memory"]["arena_bytes"] // 2
    tiles = [u for u in it["units"] if u["op"] == "tile"]
    assert len(tiles) == sum(s["tiles"] for s in t["stages"])
    assert sum(u["macs"] for u in it["units"]) == sum(s["macs"] for s in t["stages"]) + sum(
        ly["macs"] for ly in res.report["layers"] if not any(ly["source"] in s["layers"] for s in t["stages"]))
    assert it["nvm_bytes"] < plain.report["intermittent"]["nvm_bytes"]
    assert it["tile_workspace_bytes"] == max(s["workspace_bytes"] for s in t["stages"]) <= it["sram_bytes"]
    d = res.directory
    assert make(d, "check").returncode == 0
    assert power_fail(d)["failures"] == HOST_FAILURES  # bit-identical to the tiled model_run, within tolerance


def test_tiled_units_and_max_unit_macs(tmp_path):
    """A tile is one unit: max_unit_macs below the largest tile is refused naming the stage; at the largest
    tile the other layers are split into output-channel tiles around the tiled stages."""
    _, res = _tiled(tmp_path / "a", False)
    largest = max(u["macs"] for u in res.report["intermittent"]["units"] if u["op"] == "tile")
    with pytest.raises(CodegenError, match=rf"tiled stage .*largest tile is {largest} MACs.*at least {largest}"):
        _tiled(tmp_path / "b", False, max_unit_macs=largest - 1)
    _, res = _tiled(tmp_path / "c", False, max_unit_macs=largest)
    units = res.report["intermittent"]["units"]
    assert max(u["macs"] for u in units) <= largest and any(u["channels"] for u in units)
    power_fail(res.directory, 200)


@pytest.mark.parametrize("name", list(E2E_MODELS))
def test_host_power_failures_int8(name, tmp_path):
    model, x = build_model(name)
    res = codegen.save_compressed_model(model, "int8", x, tmp_path / name, integer=True, intermittent=True,
                                        calibration_data=sample_inputs(name, 32))  # fmt: skip
    d = res.directory
    assert make(d, "check").returncode == 0
    assert "int model_run_int8_intermittent(const int8_t *input, int8_t *output);" in (d / "model.h").read_text()
    assert power_fail(d)["failures"] == HOST_FAILURES  # bit-exact with the integer reference (tolerance 0)


# ---- the emulated board: resets at seeded instruction counts, NVM kept across them ------------------

BOARD_FAILURES = 30


def qemu_power_fail(directory: Path, *args: str) -> subprocess.CompletedProcess:
    return make(directory, "qemu-power-fail", *args)


def board_figures(proc: subprocess.CompletedProcess) -> dict[str, int]:
    m = re.search(r"SC_QEMU_POWER_FAIL failures=(\d+) boots=(\d+) inferences=(\d+) reference_instructions=(\d+) "
                  r"mismatches=(\d+)", proc.stdout)  # fmt: skip
    assert m, proc.stdout[-2000:] + proc.stderr[-2000:]
    return dict(zip(("failures", "boots", "inferences", "instructions", "mismatches"), map(int, m.groups())))


@pytest.mark.board
@pytest.mark.parametrize("integer", [False, True], ids=["float", "int8"])
@pytest.mark.parametrize("name", list(E2E_MODELS))
def test_board_power_failures(name, integer, tmp_path):
    require_board()
    model, x = build_model(name)
    kw = dict(integer=True, calibration_data=sample_inputs(name, 32)) if integer else {}
    d = codegen.save_compressed_model(model, "int8" if integer else "csr", x, tmp_path / name, intermittent=True,
                                      **kw).directory  # fmt: skip
    proc = qemu_power_fail(d, f"FAILURES={BOARD_FAILURES}", "SEED=7")
    assert proc.returncode == 0 and "SC_PASS" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    f = board_figures(proc)
    # the resets happened (one boot per failure, plus the first) and NVM survived them (else the first-boot
    # reference would run forever)
    assert f["failures"] == BOARD_FAILURES and f["boots"] == BOARD_FAILURES + 1 and f["mismatches"] == 0
    assert f["inferences"] >= 1


@pytest.mark.board
def test_board_forward_progress_and_nvm_size(tmp_path):
    """A failure every K instructions: completes when the largest unit fits, reports no progress when it
    does not; an NVM region smaller than the state fails the link with a message naming it."""
    require_board()
    d = emit("lenet5", tmp_path).directory
    proc = qemu_power_fail(d, "INTERVAL_TICKS=60000")  # the largest unit (conv 2: 1.6 M MACs) fits, not two
    assert proc.returncode == 0 and "SC_PASS" in proc.stdout, proc.stdout[-2000:]
    f = board_figures(proc)
    assert f["boots"] >= 2 and f["inferences"] == 1
    proc = qemu_power_fail(d, "INTERVAL_TICKS=20000")
    assert proc.returncode != 0 and "SC_NO_PROGRESS" in proc.stdout, proc.stdout[-2000:]
    proc = qemu_power_fail(d, "SC_NVM_SIZE=4096")
    assert proc.returncode != 0 and "SC_NVM state larger than the board's NVM" in proc.stdout + proc.stderr


# ---- early exits: begin/step/exit resumable, answers from the stages done ----------------------------


def emit_early_exit(kind: str, tmp_path: Path, **kw) -> Path:
    from test_early_exit import inputs, make_exit_model, make_net

    from codegen.early_exit import save_compressed_early_exit_model
    from sparsecomp.early_exit import simulate_exit

    net = make_net()
    ee = make_exit_model(net, kind)
    d = tmp_path / f"ee_{kind}"
    save_compressed_early_exit_model(net, ee, "csr", simulate_exit=simulate_exit, input_data=inputs()[:1],
                                     directory=d, intermittent=True, **kw)  # fmt: skip
    return d


@pytest.mark.parametrize("kind", ["global", "branch"])
def test_early_exit_tiled_power_failures(kind, tmp_path):
    """Early exits with tiled stages (ram_budget 4 B under the arena) and intermittent=True: a stage cut short
    re-runs its tiles; every answer, final or part way, bit-identical."""
    d = emit_early_exit(kind, tmp_path, ram_budget=7620)
    rep = json.loads((d / "report.json").read_text())
    assert rep["tiling"]["stages"] and rep["memory"]["arena_bytes"] <= 7620
    proc = make(d, "power-fail-check", f"FAILURES={HOST_FAILURES}", "SEED=2")
    assert proc.returncode == 0 and "SC_PASS" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = re.search(r"SC_EARLY_EXITS answered part way: (\d+), different from the one-shot answer: (\d+)", proc.stdout)
    assert m and int(m[1]) > 20 and int(m[2]) == 0, proc.stdout


@pytest.mark.board
def test_early_exit_tiled_board_power_failures(tmp_path):
    require_board()
    d = emit_early_exit("global", tmp_path, ram_budget=7620)
    proc = qemu_power_fail(d, f"FAILURES={BOARD_FAILURES}", "SEED=3")
    assert proc.returncode == 0 and "SC_PASS" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    f = board_figures(proc)
    assert f["boots"] == BOARD_FAILURES + 1 and f["mismatches"] == 0


@pytest.mark.parametrize("kind", ["global", "branch"])
def test_early_exit_host_power_failures(kind, tmp_path):
    """Killed inside begin, inside step (before and after the stage, around the commit) and between the
    layers of a stage; every finished inference bit-identical, and every answer taken part way (exit()
    after k stages, a quarter of the time) bit-identical to the one-shot answer of that exit. The global
    classifier used to see the pooled features of a step cut before its commit (fixed in model_ee.c)."""
    d = emit_early_exit(kind, tmp_path)
    assert make(d, "check").returncode == 0
    proc = make(d, "power-fail-check", f"FAILURES={HOST_FAILURES}", "SEED=2")
    assert proc.returncode == 0 and "SC_PASS" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = re.search(r"SC_EARLY_EXITS answered part way: (\d+), different from the one-shot answer: (\d+)", proc.stdout)
    assert m and int(m[1]) > 20 and int(m[2]) == 0, proc.stdout
    rep = json.loads((d / "report.json").read_text())["intermittent"]
    assert len(rep["units"]) == 4 and rep["max_unit_macs"] == max(u["macs"] for u in rep["units"])


@pytest.mark.board
@pytest.mark.board
@pytest.mark.parametrize("integer", [False, True], ids=["float", "int8"])
def test_tiled_board_power_failures(integer, tmp_path):
    """The tiled intermittent LeNet-5 on the emulated M4: resets at seeded instruction counts; the tile
    workspace in ordinary RAM is lost at each reset, NVM keeps the stage inputs and outputs."""
    require_board()
    _, res = _tiled(tmp_path, integer)
    proc = qemu_power_fail(res.directory, f"FAILURES={BOARD_FAILURES}", "SEED=5")
    assert proc.returncode == 0 and "SC_PASS" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    f = board_figures(proc)
    assert f["failures"] == BOARD_FAILURES and f["boots"] == BOARD_FAILURES + 1 and f["mismatches"] == 0


@pytest.mark.parametrize("kind", ["global", "branch"])
def test_early_exit_board_power_failures(kind, tmp_path):
    require_board()
    d = emit_early_exit(kind, tmp_path)
    proc = qemu_power_fail(d, f"FAILURES={BOARD_FAILURES}", "SEED=3")
    assert proc.returncode == 0 and "SC_PASS" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    f = board_figures(proc)
    assert f["boots"] == BOARD_FAILURES + 1 and f["mismatches"] == 0


# ---- layer separation: max_unit_macs splits layers into output-channel tiles ----------------------------


@pytest.mark.parametrize("name,representation,bound", [("ds_cnn", "csr", 60_000), ("lenet5", "dense", 100_000),
                                                        ("inception", "csr", 40_000), ("lenet300_100", "csr", 20_000)])
def test_layer_separation(name, representation, bound, tmp_path):
    """Convolutions (dense, CSR, depthwise) and fully connected layers split into tiles of output channels,
    each committed; every unit within the bound; bit-identical to the ordinary run under failures."""
    res = emit(name, tmp_path, representation, max_unit_macs=bound)
    rep = res.report["intermittent"]
    units = rep["units"]
    assert rep["unit_macs_bound"] == bound and all(u["macs"] <= bound for u in units)
    tiled = [u for u in units if u["channels"]]
    assert tiled, "the bound should split some layer"
    if name == "ds_cnn":  # depthwise tiles read their own input channels
        assert any(u["op"] == "depthwise_conv" for u in tiled)
    for layer in {u["layer"] for u in tiled}:  # the tiles of a layer cover its output channels once
        chans = [u["channels"] for u in tiled if u["layer"] == layer]
        assert chans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(chans, chans[1:]))
        ly = next(ly for ly in res.report["layers"] if ly["source"] == layer)
        assert chans[-1][1] == ly["output_shape"][0] and sum(u["macs"] for u in units if u["layer"] == layer) == ly["macs"]
    power_fail(res.directory, 200)  # also bit-identical to model_run and within tolerance of PyTorch


def test_layer_separation_errors(tmp_path):
    model, x = build_model("resnet_tiny")
    with pytest.raises(CodegenError, match=r"layer 'layer1.conv1' \(conv\): one output channel is 36864 MACs.*at least 36864"):
        codegen.save_compressed_model(model, "csr", x, tmp_path / "a", intermittent=True, max_unit_macs=20_000)
    model, x = build_model("conv1d_sensor")
    with pytest.raises(CodegenError, match="max_unit_macs.*intermittent=True"):
        codegen.save_compressed_model(model, "csr", x, tmp_path / "b", max_unit_macs=1000)
    with pytest.raises(CodegenError, match="positive integer"):
        codegen.save_compressed_model(model, "csr", x, tmp_path / "c", intermittent=True, max_unit_macs=0)


def test_layer_separation_refuses_unsplittable_layer(tmp_path):
    """A layer that cannot be split (here a Linear over several positions) above the bound: named, with the
    bound that would do."""
    import torch

    net = torch.nn.Sequential(torch.nn.Conv1d(2, 4, 3), torch.nn.Linear(6, 5)).eval()
    x = torch.randn(1, 2, 8)
    with pytest.raises(CodegenError, match=r"layer '1' \(linear\): 120 MACs in one unit.*cannot be split.*at least 120"):
        codegen.save_compressed_model(net, "dense", x, tmp_path / "a", intermittent=True, max_unit_macs=100)


@pytest.mark.parametrize("name,bound", [("lenet5", 100_000), ("lenet300_100", 40_000)])
def test_layer_separation_int8(name, bound, tmp_path):
    """The integer path splits int8 dense / CSR layers the same way (bias, multiplier and shift offset to the
    tile's channels): bit-exact with the integer reference and with model_run under failures."""
    model, x = build_model(name)
    res = codegen.save_compressed_model(model, "csr", x, tmp_path / name, integer=True, intermittent=True,
                                        calibration_data=sample_inputs(name, 32), max_unit_macs=bound)  # fmt: skip
    units = res.report["intermittent"]["units"]
    assert any(u["channels"] for u in units) and all(u["macs"] <= bound for u in units)
    power_fail(res.directory, 200)


def test_layer_separation_refuses_stream_encodings(tmp_path):
    """Relative-index rows are read from the start of their bit stream: such a layer is not split, and the
    error names it and the representations that can be."""
    model, x = build_model("ds_cnn")
    with pytest.raises(CodegenError, match=r"layer '3.0' \(depthwise_conv\).*int8_rel.*dense or CSR rows"):
        codegen.save_compressed_model(model, "int8", x, tmp_path / "q", integer=True, intermittent=True,
                                      calibration_data=sample_inputs("ds_cnn", 32), max_unit_macs=60_000)  # fmt: skip
