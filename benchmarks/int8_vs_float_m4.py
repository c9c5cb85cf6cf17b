"""Fully integer int8 against float32 dense, instructions per inference on the Cortex-M4F (issue 15).

For every end-to-end test model (tests/models.py, dense weights) and every model of the real-model
zoo (tests/zoo.py: timm, torchvision and TinyML blocks with random weights) that emits in both forms,
it emits

* float32 dense (``save_compressed_model(model, "dense", ...)``) and
* fully integer int8 (``integer=True``, representation "dense", calibrated on 16 seeded random inputs),

runs both on the emulated Cortex-M4F (QEMU mps2-an386, ``-icount shift=0``, resolution 40
instructions, arm-none-eabi-gcc -O2) and prints instructions per inference, per MAC and int8 / float.
Each float run passes its self-test against PyTorch and each int8 run is bit-exact against the numpy
reference (an int8 net with random weights may miss the bound against PyTorch's float output, see
docs/zoo.md: the table notes it); a model that does not emit, does not build for the board or fails
those checks gets the reason in the table instead of figures. QEMU
counts instructions, not cycles. Usage:

    .venv/bin/python benchmarks/int8_vs_float_m4.py [--models lenet5,zoo:mcunet_like] [--no-zoo] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import models  # noqa: E402  (tests/models.py)

from codegen import board, save_compressed_model  # noqa: E402


def _model(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    if name.startswith("zoo:"):
        import zoo  # tests/zoo.py (imports timm / torchvision)

        model, x = zoo.build(name[4:])
        return model, x[:1]
    return models.build_model(name, sparsity=0.0)


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:90]}"


def measure(name: str, work: Path) -> dict:
    row: dict = {"model": name}
    try:
        model, x = _model(name)
        cal = torch.randn((16, *x.shape[1:]), generator=torch.Generator().manual_seed(7))
        fl = save_compressed_model(model, "dense", x, work / f"{name}_float", overwrite=True)
        it = save_compressed_model(model, "dense", x, work / f"{name}_int8", overwrite=True, integer=True,
                                   calibration_data=cal)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - the table records whatever it is
        row["note"] = f"does not emit ({_reason(exc)})"
        return row
    row["macs"] = int(fl.report["totals"]["macs"])
    row["arena_float"], row["arena_int8"] = fl.arena_bytes, it.arena_bytes
    for form, res in (("float", fl), ("int8", it)):
        try:
            run = board.run(str(res.directory), "m4", profile=True)
        except Exception as exc:  # noqa: BLE001
            row["note"] = f"{form} does not build for the M4 ({_reason(exc)})"
            return row
        err, tol = _figure(run.stdout, "SC_MAX_ABS_ERROR"), _figure(run.stdout, "SC_TOLERANCE")
        if run.profile is None or err is None or tol is None or err > tol:
            row["note"] = f"{form} fails its self-test on the M4 (exit {run.exit_code})"
            return row
        row[form] = run.profile.total_instructions
        if not run.passed:  # int8: bit-exact, but the random-weight net misses the float bound (docs/zoo.md)
            row["note"] = "int8 bit-exact; above the float bound on random weights"
    return row


def _figure(stdout: str, key: str) -> float | None:
    m = re.search(rf"^{key} (\S+)$", stdout, re.MULTILINE)
    return float(m.group(1)) if m else None


def table(rows: list[dict]) -> str:
    lines = ["| model | MACs | float32 insns (/MAC) | int8 insns (/MAC) | int8 / float | arena B float / int8 |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if "int8" not in r:
            lines.append(f"| {r['model']} | {r.get('macs', '-')} | - | - | {r.get('note', '')} | |")
            continue
        if r.get("note"):
            m = max(r["macs"], 1)
            lines.append(f"| {r['model']} | {r['macs']:,} | {r['float']:,} ({r['float'] / m:.2f}) | {r['int8']:,} "
                         f"({r['int8'] / m:.2f}) | **{r['int8'] / r['float']:.2f}x** ({r['note']}) | "
                         f"{r['arena_float']:,} / {r['arena_int8']:,} |")  # fmt: skip
            continue
        m = max(r["macs"], 1)
        lines.append(f"| {r['model']} | {r['macs']:,} | {r['float']:,} ({r['float'] / m:.2f}) | {r['int8']:,} "
                     f"({r['int8'] / m:.2f}) | **{r['int8'] / r['float']:.2f}x** | {r['arena_float']:,} / "
                     f"{r['arena_int8']:,} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", help="comma-separated: e2e names and zoo:<name> (default: all)")
    ap.add_argument("--no-zoo", action="store_true")
    ap.add_argument("--workdir")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.models:
        names = args.models.split(",")
    else:
        names = list(models.E2E_MODELS)
        if not args.no_zoo:
            import zoo

            names += [f"zoo:{n}" for n in zoo.ZOO]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="int8_vs_float_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in names:
        rows.append(measure(n, work))
        print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
