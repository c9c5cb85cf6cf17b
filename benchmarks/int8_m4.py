"""Fully integer (int8) kernels on the Cortex-M4: SMLAD pair kernels vs plain C vs float32 (issue 8).

For LeNet-5 (Caffe), the digits CNN of benchmarks/integer_accuracy.py (trained for a few epochs on
scikit-learn's bundled digits) and DS-CNN (tests/models.py; BatchNorm folded before quantization),
it emits

* float32 dense weights and activations (``save_compressed_model(model, "dense", ...)``), and
* the fully integer path (``integer=True``, representation "dense": int8 dense weights),

and measures instructions per layer and per inference on the emulated Cortex-M4F (QEMU mps2-an386,
``-icount shift=0``, resolution 40 instructions, arm-none-eabi-gcc -O2) for

* float32 (``sc_conv.h`` / ``sc_linear.h`` dense kernels),
* int8 with ``SC_INT8_DSP=1`` (the default on the M4: SXTB16/SMLAD pair kernels in the int8 sections of
  ``sc_conv.h`` / ``sc_linear.h``),
* int8 with ``-DSC_INT8_DSP=0`` (the plain C kernels, as on the Cortex-M3),

plus the int8 total on the Cortex-M3 (no DSP extension: plain kernels), the stack of
``<prefix>_run_int8`` + kernels (``-fstack-usage``, -O2, both settings; the SMLAD conv's column
and start values are on that stack) and how many SMLAD / SXTB16 instructions the M4 firmware holds.
Every build runs its self-test on the board (the integer self-test is bit-exact against the numpy
reference, tolerance 0); a failing run raises. QEMU counts instructions, not cycles. Usage:

    .venv/bin/python benchmarks/int8_m4.py [--models lenet5,digits,ds_cnn] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import models  # noqa: E402  (tests/models.py)

from codegen import board, save_compressed_model  # noqa: E402

M4_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-std=c99"]
PLAIN = {"CPPFLAGS": "-I. -DSC_INT8_DSP=0"}


def digits_model(epochs: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    import integer_accuracy as ia  # benchmarks/integer_accuracy.py

    xtr, ytr, xte, _ = ia.digits()
    torch.manual_seed(0)
    model = ia.cnn()
    ia.train(model, xtr, ytr, epochs)
    return model, xte[:1], xtr[:256]


def get_model(name: str, epochs: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    if name == "digits":
        return digits_model(epochs)
    model, x = models.build_model(name, sparsity=0.0)
    return model, x, models.sample_inputs(name, n=64, seed=5)


def stack_bytes(d: Path, defines: list[str]) -> int:
    """Frame of <prefix>_run_int8 plus the largest frame among the kernels gcc did not inline (-O2)."""
    with tempfile.TemporaryDirectory() as tmp:
        obj = Path(tmp) / "model.o"
        subprocess.run(["arm-none-eabi-gcc", *M4_FLAGS, "-O2", *defines, "-I", str(d), "-I", str(d / "board"),
                        "-fstack-usage", "-c", str(d / "model.c"), "-o", str(obj)],
                       check=True, capture_output=True, text=True)  # fmt: skip
        frames = {}
        for line in (Path(tmp) / "model.su").read_text().splitlines():
            loc, size, _kind = line.split("\t")
            frames[loc.rsplit(":", 1)[-1]] = int(size)
    run = max((v for k, v in frames.items() if k.endswith("_run_int8") or k.startswith("model_run_int8")), default=0)
    others = max((v for k, v in frames.items() if "model_run" not in k), default=0)
    return run + others


def dsp_instructions(elf: Path) -> dict[str, int]:
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(elf)], capture_output=True, text=True, check=True).stdout
    return {insn: dis.count(f"\t{insn}\t") for insn in ("smlad", "sxtb16")}


def profile(d: Path, target: str = "m4", make_vars: dict[str, str] | None = None) -> board.Profile:
    run = board.run(str(d), target, profile=True, make_vars=make_vars)
    if not run.passed or run.profile is None:
        raise RuntimeError(f"{d} on {target} {make_vars or ''}: self-test failed\n{run.stdout[-1500:]}{run.stderr[-500:]}")
    return run.profile


def measure(name: str, work: Path, epochs: int) -> dict:
    model, x, cal = get_model(name, epochs)
    df, di = work / f"{name}_float", work / f"{name}_int8"
    fl = save_compressed_model(model, "dense", x, df, overwrite=True)
    it = save_compressed_model(model, "dense", x, di, overwrite=True, integer=True, calibration_data=cal)
    pf = profile(df)
    pd = profile(di)
    dsp = dsp_instructions(di / "build" / "m4-profile" / "model.elf")
    pp = profile(di, make_vars=PLAIN)
    p3 = profile(di, "m3")
    macs = {ly["source"]: ly["macs"] for ly in it.report["layers"] if ly.get("macs")}
    ops = {ly["source"]: ly["op"] for ly in it.report["layers"]}
    by = [{lp.name: lp.instructions for lp in p.layers} for p in (pf, pd, pp)]
    layers = [{"layer": src, "op": ops[src], "macs": m, "float": by[0].get(src), "dsp": by[1].get(src),
               "plain": by[2].get(src)} for src, m in macs.items()]  # fmt: skip
    return {
        "model": name, "macs": it.report["totals"]["macs"], "float": pf.total_instructions,
        "dsp": pd.total_instructions, "plain": pp.total_instructions, "m3_int8": p3.total_instructions,
        "stack_dsp": stack_bytes(di, []), "stack_plain": stack_bytes(di, ["-DSC_INT8_DSP=0"]),
        "weight_bytes_float": fl.weight_bytes, "weight_bytes_int8": it.weight_bytes,
        "arena_float": fl.arena_bytes, "arena_int8": it.arena_bytes, "dsp_insns_in_firmware": dsp, "layers": layers,
    }  # fmt: skip


def _per(n: int | None, macs: int) -> str:
    return "-" if n is None else f"{n:,} ({n / macs:.2f})"


def table(rows: list[dict]) -> str:
    out = ["| model | MACs | float32 insns (/MAC) | int8 plain insns (/MAC) | int8 SMLAD insns (/MAC) | SMLAD / float "
           "| M3 int8 plain | stack B SMLAD / plain | SMLAD, SXTB16 in firmware |",
           "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        m = r["macs"]
        out.append(f"| {r['model']} | {m:,} | {_per(r['float'], m)} | {_per(r['plain'], m)} | {_per(r['dsp'], m)} "
                   f"| {r['dsp'] / r['float']:.2f}x | {r['m3_int8']:,} | {r['stack_dsp']} / {r['stack_plain']} "
                   f"| {r['dsp_insns_in_firmware']['smlad']}, {r['dsp_insns_in_firmware']['sxtb16']} |")  # fmt: skip
    out += ["", "| model | layer | op | MACs | float32 (/MAC) | int8 plain (/MAC) | int8 SMLAD (/MAC) |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        for ly in r["layers"]:
            m = ly["macs"]
            out.append(f"| {r['model']} | {ly['layer']} | {ly['op']} | {m:,} | {_per(ly['float'], m)} "
                       f"| {_per(ly['plain'], m)} | {_per(ly['dsp'], m)} |")  # fmt: skip
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="lenet5,digits,ds_cnn")
    ap.add_argument("--epochs", type=int, default=10, help="training epochs of the digits CNN")
    ap.add_argument("--workdir")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    ok, why = board.board_toolchain_available()
    if not ok:
        print(f"no board toolchain: {why}", file=sys.stderr)
        return 1
    work = Path(args.workdir or tempfile.mkdtemp(prefix="int8_m4_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models.split(","):
        rows.append(measure(name, work, args.epochs))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "layers"}), flush=True)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
