"""Early exits on scikit-learn's bundled 8x8 digits (no download): global (gNet) vs branch exits.

Trains a small CNN, adds 3 exit points, trains the exits with simulated exits (backbone frozen),
emits model.c + model_ee.c for each kind, checks them (host self-test, every exit one-shot and
incremental, against PyTorch) and prints per exit: test accuracy, MACs, extra bytes and the
instructions one inference up to that exit takes on the emulated Cortex-M4F (QEMU -icount).

    python examples/early_exit_digits.py [--out out/early_exit_digits] [--epochs 15] [--exit-epochs 30]

Without arm-none-eabi-gcc / qemu-system-arm the instruction counts are left out.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codegen.early_exit import save_compressed_early_exit_model, verify_early_exit  # noqa: E402
from sparsecomp import load_digits  # noqa: E402
from sparsecomp.early_exit import build_exit_model, evaluate_exits, simulate_exit, train_exits  # noqa: E402

log = logging.getLogger("early_exit_digits")

EXIT_POINTS = ["features.2", "features.5", "features.9"]  # after each conv block (post-ReLU)
POOL_SIZES = [2, 2, 2]


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),                      # 0-2: 8x8x8
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),                    # 3-5: 16x8x8
            nn.MaxPool2d(2),                                                                   # 6:   16x4x4
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),                   # 7-9: 32x4x4
        )  # fmt: skip
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def make_model() -> nn.Module:
    return DigitsCNN()


def train(model: nn.Module, loader, epochs: int, lr: float = 3e-3) -> None:
    opt = torch.optim.Adam(model.parameters(), lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * len(loader))
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()
    model.eval()


def board_figures(directory: Path, n_exits: int) -> tuple[dict[int, int], int | None]:
    """(instructions per exit on the emulated M4, flash bytes of model_ee.o on the M4) or ({}, None)."""
    from codegen import board

    ok, reason = board.board_toolchain_available()
    if not ok:
        log.warning("no board toolchain (%s): instruction counts left out", reason)
        return {}, None
    elf = board.build(directory, "m4", profile=True)
    run = board.run_elf(elf, "m4", icount=True)
    if run.exit_code != 0:
        raise SystemExit(f"the M4 self-test failed:\n{run.stdout[-2000:]}")
    per_tick = run.profile.insns_per_tick if run.profile else board.INSNS_PER_TICK_DEFAULT
    ticks = {int(k): int(t) for k, t in re.findall(r"^SC_EE_TICKS (\d+) (\d+)", run.stdout, re.MULTILINE)}
    board.build(directory, "m4")
    obj = directory / "build" / "m4" / "obj" / "model_ee.o"
    size = subprocess.run(["arm-none-eabi-size", str(obj)], capture_output=True, text=True, check=True)
    text, data = (int(v) for v in size.stdout.splitlines()[1].split()[:2])
    return {k: t * per_tick for k, t in ticks.items()}, text + data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/early_exit_digits", help="directory for the emitted C (one per kind)")
    ap.add_argument("--epochs", type=int, default=15, help="backbone training epochs")
    ap.add_argument("--exit-epochs", type=int, default=30, help="exit training epochs")
    ap.add_argument("--representation", default="csr")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    t0 = time.monotonic()

    train_loader, val_loader, test_loader = load_digits(batch_size=64, seed=args.seed)
    net = make_model()
    train(net, train_loader, args.epochs)
    sample = next(iter(test_loader))[0][:1]
    print(f"backbone trained in {time.monotonic() - t0:.1f} s")

    rows, ok = [], True
    for kind in ("global", "branch"):
        ee = build_exit_model(net, EXIT_POINTS, sample, kind, POOL_SIZES, dropout=0.2, hidden=32, seed=args.seed)
        train_exits(ee, train_loader, epochs=args.exit_epochs, lr=3e-3, seed=args.seed)
        results = evaluate_exits(ee, test_loader)
        out = Path(args.out) / kind
        res = save_compressed_early_exit_model(net, ee, args.representation, simulate_exit=simulate_exit,
                                               input_data=sample, directory=out, overwrite=True)  # fmt: skip
        check = subprocess.run(["make", "-s", "-C", str(out), "check"], capture_output=True, text=True)
        x = next(iter(test_loader))[0][:16]
        v = verify_early_exit(net, ee, out, x)
        err = float(max(abs(v.oneshot - v.reference).max(), abs(v.incremental - v.reference).max()))
        passed = check.returncode == 0 and err <= 1e-4 * float(abs(v.reference).max()) + 1e-6
        ok &= passed
        insns, ee_flash = board_figures(out, len(EXIT_POINTS))
        rep = res.report
        for r in results:
            rows.append((kind, r, insns.get(r.exit)))
        print(f"{kind}: exit heads {rep['early_exit']['weight_bytes']} weight bytes"
              + (f", model_ee.o {ee_flash} bytes of M4 flash (code + weights)" if ee_flash else "")
              + f"; backbone {rep['totals']['weight_bytes']} bytes; arena {rep['memory']['arena_bytes']} bytes "
              f"(plain model: {rep['early_exit']['arena']['baseline_arena_bytes']}); "
              f"self-test {'PASS' if check.returncode == 0 else 'FAIL'}, max |C - torch| over 16 inputs {err:.2g}")  # fmt: skip

    print()
    print(f"{'kind':7} {'exit':>4} {'exit point':12} {'accuracy':>8} {'MACs':>8} {'M4 instructions':>16}")
    for kind, r, n in rows:
        print(f"{kind:7} {r.exit:>4} {r.name:12} {100 * r.accuracy:7.2f}% {r.macs:>8} {n if n is not None else '-':>16}")
    summary = {kind: json.loads((Path(args.out) / kind / "report.json").read_text())["early_exit"]["weight_bytes"]
               for kind in ("global", "branch")}  # fmt: skip
    print(f"extra weight bytes: global {summary['global']}, branch {summary['branch']}; "
          f"total wall time {time.monotonic() - t0:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
