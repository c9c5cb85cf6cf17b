"""Kernel speed, RAM, code size and stack of the emitted C against onnx2c and TFLM (issue 8).

For LeNet-5 (Caffe), DS-CNN and every end-to-end test model (tests/models.py), float32 dense
weights, it prints:

* instructions per inference and per MAC on the emulated Cortex-M4F (QEMU mps2-an386,
  ``-icount shift=0``, resolution 40 instructions) at -O2 and -Os (arm-none-eabi-gcc);
* x86-64 instructions of ``<prefix>_run`` on the host build (gcc -O2, valgrind callgrind,
  ``--toggle-collect``; deterministic);
* activation RAM: the arena against the chained lower bound (largest input + output of any
  layer, no in-place tricks), and the stack of the model's functions (``-fstack-usage``:
  ``model_run``'s frame plus the largest frame among the kernels it calls that gcc did not
  inline; libm is not counted);
* code bytes: flash of the firmware minus the baseline firmware minus the weights
  (``codegen.board.measure``), at -Os.

Then, per layer: CSR at density 0.1 against dense (instructions of the same layer), and int8
weights (weight-only, float activations) against float.

Every emission passes its self-test against PyTorch on the board (a failed run raises).
QEMU counts instructions, not cycles. Usage:

    .venv/bin/python benchmarks/kernels_m4.py [--models lenet5,ds_cnn] [--no-sparse] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import models  # noqa: E402  (tests/models.py)

from codegen import board, formats, save_compressed_model  # noqa: E402
from codegen.quantize import quantize_int8_  # noqa: E402

# Peer figures measured on this machine kind (float32, M4F mps2-an386, arm-none-eabi-gcc 12 -O2).
PEERS = {
    "lenet5": {"onnx2c": 20.2e6, "tflm": 27.7e6, "lower": 57_600, "onnx2c_ram": 92_160, "tflm_ram": 59_296},
    "ds_cnn": {"onnx2c": 24.9e6, "tflm": 39.2e6, "lower": 64_000, "onnx2c_ram": 64_000, "tflm_ram": 70_736},
}
M4_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-std=c99"]


def emit(model: torch.nn.Module, x: torch.Tensor, rep: str, d: Path) -> dict:
    save_compressed_model(model, rep, input_data=x, directory=str(d), overwrite=True)
    return json.loads((d / "report.json").read_text())


def chained_lower_bound(report: dict, input_shape: tuple[int, ...]) -> int:
    """Largest (input + output) of one layer in arena memory, no in-place: the classic bound."""
    best = 0
    layers = report["layers"]
    shapes = [list(input_shape[1:])] + [layer["output_shape"] for layer in layers]
    for i, layer in enumerate(layers):
        n_in = 4 * _prod(shapes[i]) if i > 0 else 0  # the model input is the caller's
        n_out = 4 * _prod(layer["output_shape"]) if i < len(layers) - 1 else 0  # so is the output
        best = max(best, n_in + n_out)
    return best


def _prod(s: list[int]) -> int:
    n = 1
    for v in s:
        n *= v
    return n


def stack_bytes(d: Path, opt: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        obj = Path(tmp) / "model.o"
        subprocess.run(
            ["arm-none-eabi-gcc", *M4_FLAGS, opt, "-I", str(d), "-I", str(d / "board"), "-fstack-usage",
             "-c", str(d / "model.c"), "-o", str(obj)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        frames = {}
        for line in (Path(tmp) / "model.su").read_text().splitlines():
            loc, size, _kind = line.split("\t")
            frames[loc.rsplit(":", 1)[-1]] = int(size)
    run = max((v for k, v in frames.items() if k.endswith("_run")), default=0)
    others = max((v for k, v in frames.items() if not k.endswith("_run")), default=0)
    return run + others


def x86_instructions(d: Path, prefix: str = "model") -> int | None:
    try:
        exe = d / "build" / "host" / "bench"
        exe.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["gcc", "-std=c99", "-O2", "-I", str(d), "-o", str(exe), str(d / "model.c"), str(d / "app" / "main.c"), "-lm"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        out = d / "build" / "host" / "callgrind.out"
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", f"--toggle-collect={prefix}_run", str(exe)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        text = out.read_text()
        m = re.search(r"^summary:\s+(\d+)", text, re.MULTILINE) or re.search(r"^totals:\s+(\d+)", text, re.MULTILINE)
        return int(m.group(1)) if m else None
    except (OSError, subprocess.CalledProcessError):
        return None


def dense_row(name: str, work: Path) -> dict:
    factory, shape = models.E2E_MODELS[name]
    model, x = models.build_model(name, sparsity=0.0)
    d = work / f"{name}_dense"
    rep = emit(model, x, "dense", d)
    macs = rep["totals"]["macs"]
    prof = board.profile(str(d), "m4")
    run_os = board.run(str(d), "m4", profile=True, make_vars={"ARM_OPT": "-Os"})
    if not run_os.passed or run_os.profile is None:
        raise RuntimeError(f"{name}: -Os profile run failed")
    meas_os = board.measure(str(d), instructions=False, make_vars={"ARM_OPT": "-Os"})
    meas_o2 = board.measure(str(d), instructions=False)
    mem = rep["memory"]
    return {
        "model": name,
        "macs": macs,
        "insns_o2": prof.total_instructions,
        "insns_os": run_os.profile.total_instructions,
        "x86": x86_instructions(d),
        "arena": mem["arena_bytes"],
        "planner_lower_bound": mem["lower_bound_bytes"],
        "chained_lower_bound": chained_lower_bound(rep, shape),
        "code_os": meas_os.code_bytes,
        "code_o2": meas_o2.code_bytes,
        "stack_o2": stack_bytes(d, "-O2"),
        "stack_os": stack_bytes(d, "-Os"),
        "layers_o2": [(lp.name, lp.instructions) for lp in prof.layers],
    }


def forced(form: str) -> str:
    formats.REPRESENTATIONS.setdefault(f"only_{form}", formats.Representation(f"only_{form}", (form,)))
    return f"only_{form}"


def layer_table(name: str, work: Path, density: float) -> list[dict]:
    """Per weighted layer: dense, CSR at ``density`` and int8 instructions (-O2)."""
    rows = []
    model, x = models.build_model(name, sparsity=1.0 - density)
    dense_model, _ = models.build_model(name, sparsity=0.0)
    runs = {}
    for label, m, rep in (
        ("dense", dense_model, "dense"),
        ("csr", model, forced("csr")),
        ("int8", quantize_int8_(copy.deepcopy(dense_model)), forced("int8")),
        ("int8_csr", quantize_int8_(copy.deepcopy(model)), forced("int8_csr")),
    ):
        d = work / f"{name}_{label}"
        try:
            report = emit(m, x, rep, d)
        except Exception as exc:  # int8 forms need BatchNorm-free layers (folding leaves the int8 grid)
            print(f"{name} {label}: skipped ({str(exc).splitlines()[0][:120]})", file=sys.stderr)
            runs[label] = ({"layers": []}, {})
            continue
        runs[label] = (report, {lp.name: lp.instructions for lp in board.profile(str(d), "m4").layers})
    report = runs["dense"][0]
    for layer in report["layers"]:
        if not layer.get("macs"):
            continue
        src = layer["source"]
        dense = runs["dense"][1].get(src, 0)
        r = {"model": name, "layer": src, "op": layer["op"], "macs": layer["macs"], "dense": dense}
        for label in ("csr", "int8", "int8_csr"):
            rep_l = next((lay for lay in runs[label][0]["layers"] if lay["source"] == src), {})
            r[label] = runs[label][1].get(src, 0)
            r[f"{label}_density"] = rep_l.get("density") or 0.0
        rows.append(r)
    return rows


def fmt_m(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} M"


def print_tables(dense: list[dict], layers: list[dict]) -> str:
    out = []
    out.append("| model | MACs | M4 -O2 insns | /MAC | M4 -Os insns | /MAC | x86 -O2 insns | arena B | chained lower bound B "
               "| code B (-Os) | code B (-O2) | stack B (-O2/-Os) | onnx2c insns | TFLM insns | onnx2c / TFLM RAM B |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in dense:
        peer = PEERS.get(r["model"], {})
        out.append(
            f"| {r['model']} | {r['macs'] / 1e6:.2f} M | {fmt_m(r['insns_o2'])} | {r['insns_o2'] / r['macs']:.2f} "
            f"| {fmt_m(r['insns_os'])} | {r['insns_os'] / r['macs']:.2f} | {fmt_m(r['x86'])} "
            f"| {r['arena']:,} | {r['chained_lower_bound']:,} | {r['code_os']:,} | {r['code_o2']:,} "
            f"| {r['stack_o2']} / {r['stack_os']} "
            f"| {fmt_m(peer.get('onnx2c'))} | {fmt_m(peer.get('tflm'))} "
            f"| {peer.get('onnx2c_ram', '-'):,} / {peer.get('tflm_ram', '-'):,} |"
            if peer else
            f"| {r['model']} | {r['macs'] / 1e6:.2f} M | {fmt_m(r['insns_o2'])} | {r['insns_o2'] / r['macs']:.2f} "
            f"| {fmt_m(r['insns_os'])} | {r['insns_os'] / r['macs']:.2f} | {fmt_m(r['x86'])} "
            f"| {r['arena']:,} | {r['chained_lower_bound']:,} | {r['code_os']:,} | {r['code_o2']:,} "
            f"| {r['stack_o2']} / {r['stack_os']} | - | - | - |"
        )
    if layers:
        out.append("")
        out.append("| model | layer | op | MACs | dense insns (/MAC) | CSR d=0.1 insns (x dense) | int8 insns (/MAC) | int8 CSR insns (x dense) |")
        out.append("|---|---|---|---|---|---|---|---|")
        for r in layers:
            m = r["macs"]
            out.append(
                f"| {r['model']} | {r['layer']} | {r['op']} | {m:,} | {r['dense']:,} ({r['dense'] / m:.2f}) "
                f"| {r['csr']:,} ({r['csr'] / max(r['dense'], 1):.2f}x, density {r['csr_density']:.2f}) "
                f"| {r['int8']:,} ({r['int8'] / m:.2f}) | {r['int8_csr']:,} ({r['int8_csr'] / max(r['dense'], 1):.2f}x) |"
            )
    text = "\n".join(out)
    print(text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(models.E2E_MODELS))
    ap.add_argument("--density", type=float, default=0.1)
    ap.add_argument("--no-sparse", action="store_true")
    ap.add_argument("--workdir")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    names = args.models.split(",")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="kernels_m4_"))
    work.mkdir(parents=True, exist_ok=True)
    dense = []
    for n in names:
        dense.append(dense_row(n, work))
        print(json.dumps({k: v for k, v in dense[-1].items() if k != "layers_o2"}), flush=True)
    layers = []
    if not args.no_sparse:
        for n in ("lenet5", "ds_cnn"):
            if n in names:
                layers += layer_table(n, work, args.density)
    print_tables(dense, layers)
    if args.json:
        Path(args.json).write_text(json.dumps({"dense": dense, "layers": layers}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
