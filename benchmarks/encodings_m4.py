"""Bytes and instructions per inference of every weight encoding (float, int8, codebook, Huffman-coded codebook).

1. Bytes (exact, ``codegen.weight_bytes``) of LeNet-300-100 and LeNet-5 at a typical compressed
   state: every weight magnitude-pruned to ``--density`` (default 8%), then either int8-quantized
   (``quantize_int8_``) or weight-shared with ``--bits`` (default 5) bits (``share_weights_``).
   One row per encoding forced on every layer, plus the representations that choose per tensor.
   Biases (float32) are included.
2. Instructions per inference of LeNet-5 on the emulated Cortex-M4F (QEMU mps2-an386,
   -icount shift=0, -O2), each encoding against float dense, at density 1 and at ``--density``.
   Every emission also passes its self-test against PyTorch on the board.

QEMU counts instructions, not cycles (flash wait states and the cost of loads are not modelled);
resolution 40 instructions.

Usage:
    .venv/bin/python benchmarks/encodings_m4.py [--density 0.08] [--bits 5] [--no-board]
        [--workdir DIR] [--json results.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from codegen import board, formats, save_compressed_model, weight_bytes
from codegen.quantize import quantize_int8_, share_weights_, weight_layers

FORMS = ("dense", "csr", "int8", "int8_csr", "int8_rel", "codebook", "codebook_csr", "codebook_rel", "codebook_huff")
CHOOSERS = ("csr", "int8", "codebook", "huffman", "auto")  # representations that choose per tensor


class LeNet5(torch.nn.Module):
    """LeNet-5 for 1x28x28 inputs (conv1 padded to keep the classic 32x32 geometry)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 6, 5, padding=2)
        self.pool1 = torch.nn.MaxPool2d(2)
        self.conv2 = torch.nn.Conv2d(6, 16, 5)
        self.pool2 = torch.nn.MaxPool2d(2)
        self.fc1 = torch.nn.Linear(400, 120)
        self.fc2 = torch.nn.Linear(120, 84)
        self.fc3 = torch.nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(torch.relu(self.conv1(x)))
        x = self.pool2(torch.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def lenet300() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(784, 300), torch.nn.ReLU(), torch.nn.Linear(300, 100),
        torch.nn.ReLU(), torch.nn.Linear(100, 10),
    )  # fmt: skip


def pruned(net: torch.nn.Module, density: float) -> torch.nn.Module:
    """Magnitude pruning of every weight to ``density`` (in place)."""
    with torch.no_grad():
        for _, m in weight_layers(net):
            w = m.weight
            keep = max(1, round(density * w.numel()))
            if keep < w.numel():
                threshold = w.abs().flatten().kthvalue(w.numel() - keep).values
                w.mul_((w.abs() > threshold).to(w.dtype))
    return net.eval()


def variants(net: torch.nn.Module, bits: int) -> dict[str, torch.nn.Module]:
    """The model as the float, int8 and codebook forms need it."""
    return {
        "float": net,
        "int8": quantize_int8_(copy.deepcopy(net)),
        "codebook": share_weights_(copy.deepcopy(net), bits),
    }


def variant_of(form: str) -> str:
    return "int8" if form.startswith("int8") else "codebook" if form.startswith("codebook") else "float"


def forced(form: str) -> str:
    """A representation that allows exactly one encoding (registered for this script only)."""
    formats.REPRESENTATIONS.setdefault(f"only_{form}", formats.Representation(f"only_{form}", (form,)))
    return f"only_{form}"


def byte_table(density: float, bits: int) -> list[dict]:
    rows = []
    for name, net, shape in (
        ("LeNet-300-100", lenet300(), (1, 1, 28, 28)),
        ("LeNet-5", LeNet5(), (1, 1, 28, 28)),
    ):
        torch.manual_seed(0)
        for _, m in weight_layers(net):
            m.reset_parameters()
        v = variants(pruned(net, density), bits)
        dense_full = weight_bytes(v["float"], shape, "dense").total
        for form in FORMS:
            r = weight_bytes(v[variant_of(form)], shape, forced(form))
            rows.append({"model": name, "encoding": form, "bytes": r.total, "vs_dense": r.total / dense_full})
        for rep in CHOOSERS:
            model = v["float"] if rep == "csr" else v["int8" if rep == "int8" else "codebook"]
            r = weight_bytes(model, shape, rep)
            rows.append(
                {"model": name, "encoding": f"repr {rep}", "bytes": r.total, "vs_dense": r.total / dense_full}
            )
    return rows


def board_table(density: float, bits: int, work: Path) -> list[dict]:
    x = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    rows = []
    for dens in (1.0, density):
        torch.manual_seed(0)
        v = variants(pruned(LeNet5(), dens), bits)
        base = None
        for form in (*FORMS, "repr auto"):
            net = v["codebook"] if form == "repr auto" else v[variant_of(form)]
            rep = "auto" if form == "repr auto" else forced(form)
            d = work / f"d{dens:g}_{form.replace(' ', '_')}"
            save_compressed_model(net, rep, input_data=x, directory=d, overwrite=True)
            run = board.run(d, "m4")
            if not run.passed:
                raise SystemExit(f"{d}: self-test failed on the M4 (exit {run.exit_code}):\n{run.stdout}")
            m = board.measure(d)
            base = base or m.instructions
            rows.append({
                "density": dens, "encoding": form, "weight_bytes": m.weight_bytes, "code_bytes": m.code_bytes,
                "instructions": m.instructions, "vs_float_dense": m.instructions / base,
                "layers": {layer.name: layer.instructions for layer in m.layers},
            })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--density", type=float, default=0.08)
    ap.add_argument("--bits", type=int, default=5)
    ap.add_argument("--no-board", action="store_true", help="bytes only")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    t0 = time.time()

    results: dict = {"density": args.density, "bits": args.bits}
    results["bytes"] = byte_table(args.density, args.bits)
    print(f"Weight bytes (exact, biases included) at density {args.density:g}, "
          f"int8 per channel / {args.bits}-bit codebook:\n")  # fmt: skip
    print(f"{'encoding':<18} {'LeNet-300-100':>14} {'x dense':>8} {'LeNet-5':>9} {'x dense':>8}")
    by = {(r["model"], r["encoding"]): r for r in results["bytes"]}
    for enc in [*FORMS, *(f"repr {r}" for r in CHOOSERS)]:
        a, b = by[("LeNet-300-100", enc)], by[("LeNet-5", enc)]
        print(f"{enc:<18} {a['bytes']:>14,} {a['vs_dense']:>8.3f} {b['bytes']:>9,} {b['vs_dense']:>8.3f}")
    print("x dense: against the unpruned float32 model (dense at density 1).")

    if not args.no_board:
        ok, reason = board.board_toolchain_available()
        if not ok:
            print(f"\nno board measurements: {reason}", file=sys.stderr)
            return 2
        work = args.workdir or Path(tempfile.mkdtemp(prefix="sc_bench_enc_"))
        results["board"] = board_table(args.density, args.bits, work)
        print(
            "\nLeNet-5 on the Cortex-M4F (QEMU mps2-an386, -icount shift=0, -O2): instructions per inference\n"
        )
        print(
            f"{'density':>7} {'encoding':<14} {'weight B':>9} {'code B':>7} {'instructions':>13} {'x float dense':>13}"
        )
        for r in results["board"]:
            print(f"{r['density']:>7g} {r['encoding']:<14} {r['weight_bytes']:>9,} {r['code_bytes']:>7,} "
                  f"{r['instructions']:>13,} {r['vs_float_dense']:>13.2f}")  # fmt: skip
        print(f"(work dir {work})")
    print(f"({time.time() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
