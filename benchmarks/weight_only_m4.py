"""Weight-only int8 / codebook kernels (float activations) against float32 dense on the Cortex-M4 (issue 15).

For LeNet-5 (Caffe) and DS-CNN (tests/models.py, dense weights; BatchNorm folded into the convs by
``codegen.quantize.quantized_copy``), it emits

* float32 dense (the folded model, so every form computes the same network),
* int8 weight-only, dense (``quantize_int8_``: w = scale[o] * q, representation forced to "int8"),
* codebook, dense (``share_weights_`` with ``--bits`` bits per index, representation forced to "codebook"),

and prints, per model, instructions per inference on the emulated Cortex-M4F (QEMU mps2-an386,
``-icount shift=0``, resolution 40 instructions, arm-none-eabi-gcc -O2) and the arena, then per layer
instructions per MAC and the ratio to float dense. Every build passes its self-test against PyTorch on
the board (a failed run raises). QEMU counts instructions, not cycles. Usage:

    .venv/bin/python benchmarks/weight_only_m4.py [--models lenet5,ds_cnn] [--bits 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import models  # noqa: E402  (tests/models.py)

from codegen import board, formats, save_compressed_model  # noqa: E402
from codegen.quantize import fold_batchnorm_, quantized_copy  # noqa: E402

FORMS = ("float", "int8", "codebook")


def forced(form: str) -> str:
    """A representation holding only ``form`` (so the dense int8 / codebook encodings are measured)."""
    formats.REPRESENTATIONS.setdefault(f"only_{form}", (form,))
    return f"only_{form}"


def measure(name: str, work: Path, bits: int) -> dict:
    model, x = models.build_model(name, sparsity=0.0)
    f = copy.deepcopy(model).eval()
    fold_batchnorm_(f)  # the float model with BatchNorm folded: the same network as the quantized copies
    variants = {"float": (f, "dense"), "int8": (quantized_copy(model, "int8")[0], forced("int8")),
                "codebook": (quantized_copy(model, "codebook", bits)[0], forced("codebook"))}  # fmt: skip
    out: dict = {"model": name, "bits": bits, "forms": {}}
    for form, (m, rep) in variants.items():
        d = work / f"{name}_{form}"
        res = save_compressed_model(m, rep, x, d, overwrite=True)
        prof = board.profile(str(d), "m4")
        layers = {ly["source"]: ly for ly in res.report["layers"]}
        out["forms"][form] = {
            "total": prof.total_instructions,
            "arena": res.arena_bytes,
            "weight_bytes": res.weight_bytes,
            "layers": [{"layer": lp.name, "insns": lp.instructions, "macs": layers.get(lp.name, {}).get("macs", 0),
                        "op": layers.get(lp.name, {}).get("op", "")} for lp in prof.layers],  # fmt: skip
        }
    return out


def table(rows: list[dict]) -> str:
    lines = ["| model | form | M4 -O2 insns | x float | arena B | weight B |", "|---|---|---|---|---|---|"]
    for r in rows:
        fl = r["forms"]["float"]["total"]
        for form in FORMS:
            f = r["forms"][form]
            label = f"{form} ({r['bits']}-bit)" if form == "codebook" else form
            lines.append(f"| {r['model']} | {label} "
                         f"| {f['total']:,} | {f['total'] / fl:.2f}x | {f['arena']:,} | {f['weight_bytes']:,} |")  # fmt: skip
    lines += ["", "| model | layer | op | MACs | float /MAC | int8 /MAC (x float) | codebook /MAC (x float) |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        per = {form: {ly["layer"]: ly for ly in r["forms"][form]["layers"]} for form in FORMS}
        for ly in r["forms"]["float"]["layers"]:
            if not ly["macs"]:
                continue
            cells = []
            for form in ("int8", "codebook"):
                q = per[form].get(ly["layer"])
                cells.append("-" if q is None else f"{q['insns'] / ly['macs']:.2f} ({q['insns'] / max(ly['insns'], 1):.2f}x)")
            lines.append(f"| {r['model']} | {ly['layer']} | {ly['op']} | {ly['macs']:,} | {ly['insns'] / ly['macs']:.2f} "
                         f"| {cells[0]} | {cells[1]} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="lenet5,ds_cnn")
    ap.add_argument("--bits", type=int, default=4, help="bits per codebook index (weight sharing)")
    ap.add_argument("--workdir")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="weight_only_m4_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = [measure(n, work, args.bits) for n in args.models.split(",")]
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
