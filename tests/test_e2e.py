"""End-to-end models through a real compiler, PyTorch as the oracle.

Every model of ``models.E2E_MODELS`` (trained-like weights: BN statistics set, ~70% of the weights
pruned) is emitted in "dense" and in "csr", then
  * built by its own Makefile with ``-Wall -Wextra -Werror -pedantic`` and self-tested
    (``make -C dir check``: the sample input of headers/input.h against PyTorch's answer), and
  * built again by ``codegen.verify`` and run on 8 seeded random inputs, compared with PyTorch
    within ``codegen.api.default_tolerance`` (1e-4 x max|ref| + 1e-6).
The memory plan is checked against its lower bound, and the weight bytes of the emitted object
file are counted with ``nm`` and compared with MODEL_WEIGHT_BYTES and ``codegen.weight_bytes``.

Measured figures (max errors, arena vs lower bound, weight bytes) are attached to each test with
``record_property`` and, when SPARSECOMP_FIGURES names a file, appended to it as JSON lines.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import emit_and_verify, nm_symbols
from models import E2E_MODELS, PARAM_COUNTS, PLAIN_CHAINS, build_model, sample_inputs

import codegen
from codegen.api import default_tolerance

REPRESENTATIONS = ("dense", "csr")


def record(record_property, **figures) -> None:
    for k, v in figures.items():
        record_property(k, v)
    path = os.environ.get("SPARSECOMP_FIGURES")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(figures, sort_keys=True) + "\n")


def make(directory: Path, *targets: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-C", str(directory), *targets], capture_output=True, text=True, timeout=600
    )


def model_h_macros(directory: Path, prefix: str = "MODEL") -> dict[str, int]:
    text = (directory / "model.h").read_text()
    return {m[1]: int(m[2]) for m in re.finditer(rf"#define\s+{prefix}_(\w+)\s+(\d+)", text)}


@pytest.mark.parametrize("name", list(E2E_MODELS))
def test_reference_param_counts(name):
    model, _ = build_model(name)
    n = sum(p.numel() for p in model.parameters())
    if name in PARAM_COUNTS:
        assert n == PARAM_COUNTS[name]
    # the trained-like state: the first weighted layer ~10% zeros (stays dense in "csr"), the
    # others ~70%, and the last one has an all-zero output row (an empty CSR row)
    weights = [p for p in model.parameters() if p.dim() > 1]
    density = [float((w != 0).float().mean()) for w in weights]
    assert 0.85 < density[0] < 0.95
    assert all(0.2 < d < 0.35 for d in density[1:])
    assert bool((weights[-1].flatten(1) == 0).all(dim=1).any())


@pytest.mark.parametrize("representation", REPRESENTATIONS)
@pytest.mark.parametrize("name", list(E2E_MODELS))
def test_e2e_model(name, representation, tmp_path, record_property):
    model, x = build_model(name)
    inputs = sample_inputs(name, 8)
    inputs[0] = x[0]
    res = emit_and_verify(model, E2E_MODELS[name][1], representation, tmp_path, inputs=inputs, name=name)
    d = res.directory
    rep = res.report

    # the emitted Makefile builds with -Werror -pedantic and the self-test passes
    proc = make(d, "check")
    assert proc.returncode == 0, (
        f"make check failed for {name}/{representation}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    )
    assert "SC_PASS" in proc.stdout
    assert "-Werror" in proc.stdout and "-pedantic" in proc.stdout  # the flags the brief promises
    selftest_err = float(re.search(r"SC_MAX_ABS_ERROR (\S+)", proc.stdout)[1])
    assert selftest_err <= rep["test"]["tolerance"]

    # parity on all 8 inputs (emit_and_verify already asserted it; keep the numbers explicit)
    tol = default_tolerance(res.reference)
    assert res.max_abs_error <= tol
    assert res.outputs.shape == (8, *rep["output_shape"])
    assert np.all(np.isfinite(res.outputs))

    # memory: never below the lower bound; plain chains reach it
    mem = rep["memory"]
    assert mem["arena_bytes"] >= mem["lower_bound_bytes"] > 0
    if name in PLAIN_CHAINS:
        assert mem["arena_bytes"] == mem["lower_bound_bytes"]
    macros = model_h_macros(d)
    assert macros["ARENA_BYTES"] == mem["arena_bytes"]
    assert macros["WEIGHT_BYTES"] == rep["totals"]["weight_bytes"]

    # encodings: "dense" is dense everywhere; "csr" uses CSR for the pruned layers only where smaller
    formats = {ly["format"] for ly in rep["layers"] if ly["weight_shape"]}
    if representation == "dense":
        assert formats == {"dense"}
        assert rep["totals"]["weight_bytes"] == rep["totals"]["dense_float32_bytes"]
    else:
        assert "csr" in formats
        for ly in rep["layers"]:
            if ly["format"] == "csr":
                rows, cols = ly["weight_shape"]
                w_bytes = sum(a["bytes"] for a in ly["arrays"] if a["role"] == "weight")
                assert w_bytes < rows * cols * 4
        assert rep["totals"]["weight_bytes"] < rep["totals"]["dense_float32_bytes"]

    record(
        record_property, model=name, representation=representation, max_abs_error=res.max_abs_error,
        max_rel_error=res.max_rel_error, tolerance=tol, selftest_error=selftest_err,
        arena_bytes=mem["arena_bytes"], lower_bound_bytes=mem["lower_bound_bytes"], strategy=mem["strategy"],
        weight_bytes=rep["totals"]["weight_bytes"], dense_float32_bytes=rep["totals"]["dense_float32_bytes"],
    )  # fmt: skip


# ---- exact byte accounting with nm ---------------------------------------------------------------

DATA_TYPES = set("rRdDbBgGsSvV")  # nm symbol types of data (read-only, initialized, zero-initialized)


def section_sizes(obj: Path) -> dict[str, int]:
    out = subprocess.run(["size", "-A", str(obj)], capture_output=True, text=True, check=True).stdout
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


@pytest.mark.skipif(
    not (shutil.which("nm") and shutil.which("size")), reason="binutils (nm, size) not available"
)
@pytest.mark.parametrize("representation", REPRESENTATIONS)
@pytest.mark.parametrize("name", ["lenet5", "resnet_tiny"])
def test_weight_bytes_match_object_file(name, representation, tmp_path, record_property):
    model, x = build_model(name)
    res = codegen.save_compressed_model(model, representation, input_data=x, directory=tmp_path / name)
    d = res.directory
    proc = make(d, "object")
    assert proc.returncode == 0, proc.stderr
    obj = d / "build" / "host" / "model.o"
    macros = model_h_macros(d)
    weight_total = macros["WEIGHT_BYTES"]

    # one number everywhere: model.h, report.json, EmitResult and codegen.weight_bytes (the budget)
    assert weight_total == res.report["totals"]["weight_bytes"] == res.weight_bytes
    assert codegen.weight_bytes(model, x, representation).total == weight_total
    arrays = {a["name"]: a["bytes"] for ly in res.report["layers"] for a in ly["arrays"]}
    assert sum(arrays.values()) == weight_total

    syms = nm_symbols(obj)
    data = {n: (t, s) for n, t, s in syms if t in DATA_TYPES}
    # every weight array survives in the object (SC_WEIGHT is `used`) with exactly its counted size ...
    assert {n: s for n, (t, s) in data.items() if n in arrays} == arrays
    assert all(data[n][0] in "rR" for n in arrays), "weight arrays must be read-only data (flash)"
    assert sum(data[n][1] for n in arrays) == weight_total

    # ... and nothing else of any size is left unaccounted:
    #  * the activation arena is the only zero-initialized (RAM) data, exactly MODEL_ARENA_BYTES;
    #  * the only other read-only data are the per-layer parameter structs (`static const
    #    sc_conv_params p` etc. in model.c, local symbols p.N), a few int32 each: at most one per
    #    layer and at most 128 bytes each. They are shapes, not weights, so MODEL_WEIGHT_BYTES
    #    rightly leaves them out (about 0.02% of LeNet-5's weights, 1% of the tiny ResNet's).
    #  * no initialized RAM (.data) at all.
    others = {n: ts for n, ts in data.items() if n not in arrays}
    arena = {n: ts for n, ts in others.items() if ts[0] in "bB"}
    assert arena == {"model_arena": ("b", macros["ARENA_BYTES"])}
    params = {n: ts for n, ts in others.items() if n not in arena}
    assert all(re.fullmatch(r"p(\.\d+)?", n) and t in "rR" and s <= 128 for n, (t, s) in params.items()), (
        params
    )
    assert len(params) <= macros["NUM_LAYERS"]
    param_bytes = sum(s for _, s in params.values())

    # Section totals agree: .bss is the arena, .data is empty, and all read-only data sections
    # together exceed weights + parameter structs only by alignment padding (gcc aligns arrays of
    # >= 32 bytes to 32 on x86-64, so < 32 bytes per symbol) and a few literal-pool constants.
    sec = section_sizes(obj)
    assert sec.get(".bss", 0) == macros["ARENA_BYTES"]
    assert sec.get(".data", 0) == 0
    rodata = sum(v for k, v in sec.items() if k.startswith(".rodata"))
    slack = rodata - weight_total - param_bytes
    assert 0 <= slack < 32 * (len(arrays) + len(params)) + 64, (rodata, weight_total, param_bytes)

    record(
        record_property, model=name, representation=representation, nm_weight_bytes=weight_total,
        param_struct_bytes=param_bytes, rodata_bytes=rodata, rodata_slack=slack, arena_bytes=macros["ARENA_BYTES"],
        n_weight_arrays=len(arrays),
    )  # fmt: skip
