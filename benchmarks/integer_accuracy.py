"""Float vs fully integer (int8) inference of a small digits CNN: accuracy, bytes, arena, instructions.

1. Trains a small CNN on sklearn's 8x8 digits (1,437 train / 360 test images) for a few seconds.
2. Emits it as float C (representation "dense") and as integer C (``integer=True``, representation
   "int8", calibrated on 256 training images), builds both with the host compiler and runs the
   whole test set through the C (``codegen.verify``): accuracy of PyTorch, of the float C and of
   the integer C (its float wrapper <prefix>_run: quantize -> <prefix>_run_int8 -> dequantize).
   Also checks the integer C is bit-exact with the numpy reference on the test set.
3. Weight bytes and arena bytes of both.
4. Unless --no-board: instructions per inference on the emulated Cortex-M4F (hard float) and
   Cortex-M3 (soft float), float vs int8 (QEMU -icount, codegen.board.profile).

Usage:
    .venv/bin/python benchmarks/integer_accuracy.py [--epochs 30] [--no-board] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from codegen import save_compressed_model, verify


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    x, y = x[perm], y[perm]
    return x[:1437], y[:1437], x[1437:], y[1437:]


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU6(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16 * 2 * 2, 10),
    )  # fmt: skip


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--no-board", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="sparsecomp-int8-"))
    xtr, ytr, xte, yte = digits()
    torch.manual_seed(0)
    model = cnn()
    t0 = time.time()
    train(model, xtr, ytr, args.epochs)
    print(f"trained {args.epochs} epochs in {time.time() - t0:.1f} s")
    with torch.no_grad():
        acc_torch = float((model(xte).argmax(1) == yte).float().mean())

    fl = save_compressed_model(model, "dense", xte[:1], work / "float", overwrite=True)
    it = save_compressed_model(model, "int8", xte[:1], work / "int8", overwrite=True, integer=True,
                               calibration_data=xtr[:256])  # fmt: skip
    qm = it.integer_model
    out_f = verify(model, fl.directory, xte).outputs
    out_i = verify(model, it.directory, xte).outputs
    ref_i = qm.run_float(xte.numpy())
    assert np.array_equal(out_i, ref_i.reshape(out_i.shape)), "integer C differs from the numpy reference"
    acc_f = float((out_f.argmax(1) == yte.numpy()).mean())
    acc_i = float((out_i.argmax(1) == yte.numpy()).mean())
    agree = float((out_f.argmax(1) == out_i.argmax(1)).mean())

    print(f"\ndigits test set: {len(yte)} images (calibration: 256 training images)")
    print(f"{'':22}{'accuracy':>10}{'weight bytes':>14}{'arena bytes':>13}")
    print(f"{'PyTorch float32':22}{acc_torch:>10.4f}")
    print(f"{'C float32 (dense)':22}{acc_f:>10.4f}{fl.weight_bytes:>14}{fl.arena_bytes:>13}")
    print(f"{'C int8 (integer=True)':22}{acc_i:>10.4f}{it.weight_bytes:>14}{it.arena_bytes:>13}")
    print(f"top-1 agreement float C vs int8 C: {agree:.4f}; int8 C bit-exact with the numpy reference: yes")
    print(f"max |int8 - float| on the logits: {float(np.max(np.abs(out_i - out_f))):.4f} "
          f"(logit range {float(out_f.min()):.2f}..{float(out_f.max()):.2f})")  # fmt: skip

    if args.no_board:
        return
    from codegen import board

    ok, why = board.board_toolchain_available()
    if not ok:
        print(f"\nno board toolchain ({why}); skipping instruction counts")
        return
    print("\ninstructions per inference (QEMU -icount, -O2):")
    print(f"{'target':26}{'float32':>12}{'int8':>12}{'ratio':>8}")
    for target, label in (("m4", "Cortex-M4F (hard float)"), ("m3", "Cortex-M3 (soft float)")):
        counts = []
        for d in (fl.directory, it.directory):
            try:
                counts.append(board.profile(d, target).total_instructions)
            except board.BoardError as exc:
                print(f"  {label}: profiling {d.name} failed: {str(exc).splitlines()[0]}")
                counts.append(None)
        pf, pi = counts
        ratio = f"{pf / pi:>8.2f}" if pf and pi else f"{'-':>8}"
        print(f"{label:26}{pf or '-':>12}{pi or '-':>12}{ratio}")


if __name__ == "__main__":
    main()
