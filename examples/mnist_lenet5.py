"""MNIST LeNet-5 (Caffe variant, 431,080 parameters): train, compress to a budget, emit C, self-test.

    python examples/mnist_lenet5.py [--data DIR] [--budget 24KB] [--epochs 4] [--out out/mnist_lenet5]

MNIST is read from IDX files (.gz or raw) in --data (default ../shared/data/mnist relative to the
repository when it exists). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from codegen import save_compressed_model  # noqa: E402
from sparsecomp import compress_NN_models, load_mnist  # noqa: E402
from sparsecomp.data import default_mnist_dir  # noqa: E402
from sparsecomp.models import lenet5, lenet300_100, train_classifier  # noqa: E402

MODELS = {"lenet5": (lenet5, "24KB"), "lenet300": (lenet300_100, "24KB")}
log = logging.getLogger("mnist_example")


def main(argv: list[str] | None = None, model_name: str = "lenet5") -> int:
    factory, default_budget = MODELS[model_name]
    ap = argparse.ArgumentParser(description=f"MNIST {model_name}: train, compress, emit C, self-test")
    ap.add_argument("--data", default=str(default_mnist_dir(ROOT) or ""),
                    help="directory with the MNIST IDX files (default ../shared/data/mnist when it exists)")
    ap.add_argument("--budget", default=default_budget, help=f"weight budget (default {default_budget})")
    ap.add_argument("--epochs", type=int, default=4, help="training epochs of the float model")
    ap.add_argument("--compress-epochs", type=int, default=2, help="retraining epochs per compression round")
    ap.add_argument("--max-rounds", type=int, default=3)
    ap.add_argument("--tolerance", type=float, default=0.005, help="allowed val accuracy loss (fraction)")
    ap.add_argument("--out", default=f"out/mnist_{model_name}", help="directory for the emitted C")
    ap.add_argument("--weights", help="load trained float weights from this file instead of training")
    ap.add_argument("--save-weights", help="save the trained float weights here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.data or not Path(args.data).is_dir():
        ap.error("no MNIST directory: pass --data DIR with the IDX files (nothing is downloaded)")
    t0 = time.monotonic()
    train, val, test = load_mnist(args.data, batch_size=128, seed=args.seed)
    torch.manual_seed(args.seed)
    model = factory()
    if args.weights:
        model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    else:
        train_classifier(model, train, args.epochs, lr=1e-3, progress=not args.quiet)
        if args.save_weights:
            torch.save(model.state_dict(), args.save_weights)
    log.info("float model ready in %.0f s", time.monotonic() - t0)
    report = compress_NN_models(model, args.budget, train, test, val_loader=val, num_epochs=args.compress_epochs,
                                max_rounds=args.max_rounds, accuracy_tolerance=args.tolerance, seed=args.seed,
                                progress=not args.quiet)
    print(report)
    sample = next(iter(test))[0][:1]
    res = save_compressed_model(model.eval(), input_data=sample, directory=args.out, overwrite=True)
    print(res.table())
    run = subprocess.run(["make", "-s", "-C", str(res.directory), "check"], capture_output=True, text=True)
    print(f"make -C {res.directory} check ->", "PASS" if run.returncode == 0 else f"FAIL\n{run.stdout}{run.stderr}")
    print(f"total wall time {time.monotonic() - t0:.0f} s")
    return 0 if run.returncode == 0 and report.within_budget else 1


if __name__ == "__main__":
    sys.exit(main())
