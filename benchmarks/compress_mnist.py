"""Benchmark: MNIST LeNet-300-100 and LeNet-5 compressed (csr) to the smallest budget that keeps
test accuracy within 0.5 points of the float baseline.

    python benchmarks/compress_mnist.py [--data DIR] [--models lenet300,lenet5] [--budgets 64,48,32,24,16,12]
                                        [--epochs 6] [--out out/bench]

For each model: train the float model (or reuse OUT/<model>.pt), then compress a fresh copy to
each budget in decreasing order; the compressor selects on validation data only, the test
accuracy is measured afterwards and decides which budgets count as "within 0.5 points". Stops
after two consecutive budgets miss. Prints a table and writes OUT/results.json. Not a test.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sparsecomp import compress_NN_models, load_mnist  # noqa: E402
from sparsecomp.data import default_mnist_dir  # noqa: E402
from sparsecomp.models import lenet5, lenet300_100, train_classifier  # noqa: E402
from sparsecomp.training import evaluate  # noqa: E402

FACTORIES = {"lenet300": lenet300_100, "lenet5": lenet5}
log = logging.getLogger("bench")


def train_or_load(name: str, train, wpath: Path, epochs: int) -> torch.nn.Module:
    """The float model ``name`` (seed 0) trained ``epochs`` epochs, cached in ``wpath``."""
    torch.manual_seed(0)
    model = FACTORIES[name]()
    if wpath.exists():
        model.load_state_dict(torch.load(wpath, weights_only=True))
    else:
        train_classifier(model, train, epochs, lr=1e-3, progress=False)
        torch.save(model.state_dict(), wpath)
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(default_mnist_dir(ROOT) or ""), help="MNIST IDX directory")
    ap.add_argument("--models", default="lenet300,lenet5")
    ap.add_argument("--budgets", default="64,48,32,24,16,12,8", help="KB, tried in decreasing order")
    ap.add_argument("--epochs", type=int, default=6, help="float training epochs")
    ap.add_argument("--compress-epochs", type=int, default=2)
    ap.add_argument("--max-rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "out" / "bench"))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these small models)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.data or not Path(args.data).is_dir():
        ap.error("no MNIST directory: pass --data DIR (nothing is downloaded)")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, val, test = load_mnist(args.data, batch_size=128, seed=0)
    results = {}
    for name in args.models.split(","):
        t = time.monotonic()
        model = train_or_load(name, train, out / f"{name}.pt", args.epochs)
        params = sum(p.numel() for p in model.parameters())
        base = evaluate(model, test)
        log.info("%s: %d params, baseline test accuracy %.4f (%.0f s)", name, params, base, time.monotonic() - t)
        runs, misses = [], 0
        for kb in sorted((float(b) for b in args.budgets.split(",")), reverse=True):
            m = copy.deepcopy(model)
            t = time.monotonic()
            rep = compress_NN_models(m, kb, train, test, val_loader=val, num_epochs=args.compress_epochs,
                                     max_rounds=args.max_rounds, accuracy_tolerance=0.005, progress=False)
            run = {"budget_kb": kb, "final_bytes": rep.final_bytes, "test_accuracy": rep.test_accuracy_after,
                   "val_accuracy": rep.val_accuracy_after, "ratio_vs_dense": params * 4 / rep.final_bytes,
                   "wall_s": time.monotonic() - t, "within_0.5pt": rep.test_accuracy_after >= base - 0.005,
                   "stopped": rep.stopped_reason,
                   "decompositions": [(d.layer, d.method, d.ranks, d.accepted) for d in rep.decompositions]}
            log.info("%s @ %s KB: %s", name, kb, run)
            print(rep, flush=True)
            runs.append(run)
            misses = 0 if run["within_0.5pt"] else misses + 1
            if misses >= 2:
                break
            (out / "results.json").write_text(json.dumps({**results, name: {"runs": runs}}, indent=2))
        ok = [r for r in runs if r["within_0.5pt"]]
        best = min(ok, key=lambda r: r["final_bytes"]) if ok else None
        results[name] = {"params": params, "dense_bytes": params * 4, "baseline_test_accuracy": base,
                         "best": best, "runs": runs}
        (out / "results.json").write_text(json.dumps(results, indent=2))
    print("\n| model | params | baseline test acc | budget | final bytes | x vs float32 | test acc | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        b = r["best"]
        if b is None:
            print(f"| {name} | {r['params']} | {100 * r['baseline_test_accuracy']:.2f}% | none within 0.5 pt | | | | |")
            continue
        print(f"| {name} | {r['params']:,} | {100 * r['baseline_test_accuracy']:.2f}% | {b['budget_kb']:g} KB | "
              f"{b['final_bytes']:,} | {b['ratio_vs_dense']:.1f} | {100 * b['test_accuracy']:.2f}% | {b['wall_s']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
