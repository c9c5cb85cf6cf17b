"""Instructions per inference on an emulated Cortex-M4F: dense vs CSR weights, LeNet-5.

LeNet-5 is the Caffe variant by default (20/50 channels, 431,080 parameters, the project's
reference model); ``--model classic`` uses the 6/16-channel original.

For each density (fraction of weights kept by magnitude pruning, per layer) the same pruned
LeNet-5 is emitted twice, with representation "dense" and "csr" ("csr" stores a tensor in CSR
only where that is smaller than dense, so at density 1 it is dense), built for the Cortex-M4F
(hard float, -O2) and run on QEMU mps2-an386 with -icount shift=0. Instruction counts are
deterministic; their resolution is 40 instructions (one SysTick tick).

QEMU counts instructions, not cycles: on silicon the CSR kernels' indexed loads and the
flash wait states change the picture somewhat; the ratios here are the instruction ratios.

Usage:
    .venv/bin/python benchmarks/board_csr_vs_dense.py [--densities 1 0.5 0.2 0.1 0.05]
        [--model caffe|classic] [--workdir DIR] [--json results.json] [--opt -O2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from codegen import board, save_compressed_model


class LeNet5Classic(torch.nn.Module):
    """LeNet-5 as in LeCun et al. 1998 (6/16 channels, 61,706 parameters), 1x28x28 inputs
    (conv1 padded to keep the 32x32 geometry)."""

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


def lenet5_caffe() -> torch.nn.Module:
    """LeNet-5, Caffe variant (20/50 channels, 431,080 parameters): the pruning literature's
    LeNet-5 and the project's reference model (sparsecomp.models.lenet5)."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 20, 5), torch.nn.MaxPool2d(2), torch.nn.Conv2d(20, 50, 5), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(800, 500), torch.nn.ReLU(), torch.nn.Linear(500, 10),
    )  # fmt: skip


MODELS = {"caffe": lenet5_caffe, "classic": LeNet5Classic}


def pruned_lenet(variant: str, density: float, seed: int = 0) -> torch.nn.Module:
    """LeNet-5 with seeded random weights, each layer's weight magnitude-pruned to ``density``."""
    torch.manual_seed(seed)
    net = MODELS[variant]().eval()
    with torch.no_grad():
        for mod in net.modules():
            if not isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
                continue
            w = mod.weight
            keep = max(1, round(density * w.numel()))
            if keep < w.numel():
                threshold = w.abs().flatten().kthvalue(w.numel() - keep).values
                w.mul_((w.abs() > threshold).to(w.dtype))
    return net


def measure_one(net: torch.nn.Module, x: torch.Tensor, representation: str, directory: Path,
                opt: str) -> dict:
    res = save_compressed_model(net, representation, input_data=x, directory=directory, overwrite=True)
    make_vars = {"ARM_OPT": opt}
    run = board.run(directory, "m4", make_vars=make_vars)
    if not run.passed:
        raise SystemExit(f"{directory}: self-test failed on the M4 (exit {run.exit_code}):\n{run.stdout}")
    m = board.measure(directory, make_vars=make_vars)
    insns = {layer.index: layer.instructions for layer in m.layers}
    return {
        "representation": representation,
        "weight_bytes": m.weight_bytes,
        "code_bytes": m.code_bytes,
        "instructions": m.instructions,
        "layers": {  # weighted layers only, by the torch module name
            f"{layer['source']} ({layer['op']})": {
                "format": layer["format"], "bytes": layer["bytes"], "instructions": insns.get(layer["index"]),
            }
            for layer in res.report["layers"] if layer["format"] != "-"
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--densities", type=float, nargs="+", default=[1.0, 0.5, 0.2, 0.1, 0.05])
    ap.add_argument("--workdir", type=Path, default=None, help="where to emit (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--opt", default="-O2", help="optimisation flag of the cross build")
    ap.add_argument("--model", choices=sorted(MODELS), default="caffe",
                    help="caffe: 20/50-channel LeNet-5 (431k params, the project's reference); classic: 6/16")
    args = ap.parse_args(argv)

    ok, reason = board.board_toolchain_available()
    if not ok:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    work = args.workdir or Path(tempfile.mkdtemp(prefix="sc_bench_board_"))
    x = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    results = []
    t0 = time.time()
    for density in args.densities:
        net = pruned_lenet(args.model, density)
        row = {"density": density}
        for rep in ("dense", "csr"):
            row[rep] = measure_one(net, x, rep, work / f"d{density:g}_{rep}", args.opt)
        results.append(row)

    print(f"LeNet-5 ({args.model}) on Cortex-M4F (QEMU mps2-an386, -icount shift=0, {args.opt}): "
          "instructions per inference, dense vs CSR\n")
    names = list(results[0]["dense"]["layers"]) if results else []
    width = max([len(n) for n in names] + [6])
    head = f"{'density':>7}  {'layer':<{width}} {'fmt':<5} {'dense insns':>12} {'csr insns':>12} " \
           f"{'csr/dense':>9} {'dense B':>8} {'csr B':>8}"
    print(head)
    print("-" * len(head))
    for row in results:
        for name in (*names, "total"):
            if name == "total":
                di, ci = row["dense"]["instructions"], row["csr"]["instructions"]
                db, cb = row["dense"]["weight_bytes"], row["csr"]["weight_bytes"]
                fmt = ""
            else:
                d, c = row["dense"]["layers"][name], row["csr"]["layers"][name]
                di, ci, db, cb, fmt = d["instructions"], c["instructions"], d["bytes"], c["bytes"], c["format"]
            ratio = f"{ci / di:.2f}" if di else "-"
            print(f"{row['density']:>7g}  {name:<{width}} {fmt:<5} {di:>12,} {ci:>12,} {ratio:>9} {db:>8,} {cb:>8,}")
        print()
    print("fmt: the encoding the \"csr\" emission chose for that layer (CSR only where smaller).")
    print(f"({len(results) * 2} emissions, {time.time() - t0:.0f} s; work dir {work})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
