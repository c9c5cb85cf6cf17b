"""End-to-end demo on scikit-learn's bundled 8x8 digits (no download):

train a small CNN -> compress it to a byte budget -> emit C -> build and run the self-test.

    python examples/demo_digits.py [--budget 10KB] [--out out/demo_digits] [--epochs 3]

Runs in well under 3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codegen import save_compressed_model  # noqa: E402
from sparsecomp import compress_NN_models, load_digits  # noqa: E402
from sparsecomp.models import digits_cnn, train_classifier  # noqa: E402

log = logging.getLogger("demo_digits")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", default="10KB", help="weight budget (KB number or '8KB', '8KiB', ...)")
    ap.add_argument("--out", default="out/demo_digits", help="directory for the emitted C (replaced)")
    ap.add_argument("--epochs", type=int, default=3, help="retraining epochs per compression round")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)  # tiny model: one thread is fastest and leaves a core for the C build
    t0 = time.monotonic()

    train_loader, val_loader, test_loader = load_digits(batch_size=64, seed=args.seed)
    torch.manual_seed(args.seed)
    model = digits_cnn()
    train_classifier(model, train_loader, epochs=12, lr=3e-3, progress=not args.quiet)
    log.info("trained the float model in %.1f s", time.monotonic() - t0)

    report = compress_NN_models(
        model, args.budget, train_loader, test_loader, val_loader=val_loader,
        num_epochs=args.epochs, accuracy_tolerance=0.01, max_rounds=3, seed=args.seed,
        progress=not args.quiet, factorization_min_params=2048,
    )  # fmt: skip
    print(report)

    out = Path(args.out)
    sample = next(iter(test_loader))[0][:1]
    res = save_compressed_model(model.eval(), input_data=sample, directory=out, overwrite=True)
    print()
    print(f"emitted C to {out}/")
    print(res.table())
    info = json.loads((out / "report.json").read_text())
    print(f"MODEL_WEIGHT_BYTES = {info['totals']['weight_bytes']} (budget {report.target_bytes}), "
          f"MODEL_ARENA_BYTES = {info['memory']['arena_bytes']}")
    if shutil.which("make") is None:
        print("make not found: skipping the C self-test")
        return 1
    run = subprocess.run(["make", "-s", "-C", str(out), "check"], capture_output=True, text=True)
    print(f"make -C {out} check ->", "PASS" if run.returncode == 0 else f"FAIL ({run.returncode})")
    print(run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr)
    print(f"accuracy test: {100 * report.test_accuracy_before:.2f}% -> {100 * report.test_accuracy_after:.2f}%; "
          f"weights {report.initial_bytes} -> {report.final_bytes} bytes; total wall time {time.monotonic() - t0:.1f} s")
    ok = run.returncode == 0 and report.final_bytes <= report.target_bytes and res.weight_bytes == report.final_bytes
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
