"""Benchmark (not a test): Deep Compression on MNIST -- pruning + int8 / weight sharing through
``compress_NN_models(representation=...)``, exact emitted bytes, test accuracy, Huffman stages.

    python benchmarks/mnist_deep_compression.py [--data DIR] [--out out/deep_compression]
        [--runs lenet300:auto:27000,lenet5:auto:44000,lenet5:codebook:18000]
        [--epochs N] [--lr LR] [--weight-decay 1e-4] [--shift 2]
        [--compress-epochs 6] [--quant-epochs 3] [--max-rounds 3] [--train-only]

Targets: LeNet-300-100 <= 27,000 bytes at >= 98.0 %; LeNet-5 <= 44,000 bytes at >= 98.9 %;
LeNet-5 <= 18,000 bytes at >= 98.5 %.  Float models are trained once and cached in OUT/<model>.pt
(delete it to retrain): SGD with Nesterov momentum, L2 weight decay (as in Deep Compression), a
cosine schedule and random translations of up to 2 pixels; the epoch kept is the best on the
5,000 validation images held out of the training set.  Compression fine-tunes on the same
augmented training images and selects on the same validation images; the test set is only reported.
Each run compresses a fresh copy, emits C with the run's representation (the emitted
MODEL_WEIGHT_BYTES is the number reported), measures test accuracy with PyTorch (the C computes
with exactly these weights) and writes a Huffman archive (Deep Compression's third stage).
Writes OUT/TAG.json (--tag, default results) and prints a table.
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

from sparsecomp import load_mnist  # noqa: E402
from sparsecomp.data import default_mnist_dir  # noqa: E402
from sparsecomp.models import lenet5, lenet300_100  # noqa: E402
from sparsecomp.training import evaluate  # noqa: E402

FACTORIES = {"lenet300": lenet300_100, "lenet5": lenet5}
# float training per model: (epochs, SGD learning rate); --epochs / --lr override
FLOAT_RECIPE = {"lenet300": (30, 0.05), "lenet5": (12, 0.03)}
TARGETS = {("lenet300", 27000): 0.980, ("lenet5", 44000): 0.989, ("lenet5", 18000): 0.985}
log = logging.getLogger("bench")


class ShiftLoader:
    """A training loader whose images are translated by a random whole number of pixels in
    [-shift, shift] along each axis (zeros shifted in): light augmentation, per sample."""

    def __init__(self, loader, shift: int, seed: int = 0):
        self.loader, self.shift = loader, shift
        self.dataset, self.sampler = getattr(loader, "dataset", None), getattr(loader, "sampler", None)
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        s = self.shift
        for x, y in self.loader:
            if s <= 0:
                yield x, y
                continue
            n, _, h, w = x.shape
            pad = torch.nn.functional.pad(x, (s, s, s, s))
            dy, dx = (torch.randint(0, 2 * s + 1, (2, n), generator=self.gen))
            rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(n, x.shape[1], h, w + 2 * s)
            g = pad.gather(2, rows)
            cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(n, x.shape[1], h, w)
            yield g.gather(3, cols), y


def train_float(model: torch.nn.Module, train, val, epochs: int, lr: float, weight_decay: float) -> None:
    """SGD (Nesterov momentum 0.9) with L2 weight decay and a cosine schedule; keeps the
    epoch with the best validation accuracy (the test set is never looked at)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs * len(train)))
    best, best_state = -1.0, None
    for ep in range(epochs):
        model.train()
        for x, y in train:
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()
        acc = evaluate(model, val)
        log.info("float epoch %d/%d: val accuracy %.4f", ep + 1, epochs, acc)
        if acc >= best:
            best, best_state = acc, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)


def reseed(loader, seed: int = 0) -> None:
    """Restart the shuffling of a loader from ``load_mnist``'s seed, so that a model's training or a
    run gives the same result whatever ran before it in the process."""
    gen = getattr(getattr(loader, "loader", loader), "generator", None)
    if gen is not None:
        gen.manual_seed(seed)


def trained_model(name: str, train, val, out: Path, args) -> torch.nn.Module:
    torch.manual_seed(0)
    reseed(train)
    model = FACTORIES[name]()
    wpath = out / f"{name}.pt"
    if wpath.exists():
        model.load_state_dict(torch.load(wpath, weights_only=True))
        log.info("%s: loaded cached float weights %s", name, wpath)
    else:
        t = time.monotonic()
        epochs = args.epochs or FLOAT_RECIPE[name][0]
        train_float(model, train, val, epochs, args.lr or FLOAT_RECIPE[name][1], args.weight_decay)
        torch.save(model.state_dict(), wpath)
        log.info("%s: trained %d epochs in %.0f s", name, epochs, time.monotonic() - t)
    return model


def run_one(name: str, model, representation: str, budget: int, data, args, out: Path) -> dict:
    from codegen import save_compressed_model
    from sparsecomp import compare_stages, compress_NN_models, huffman_encode

    train, val, test = data
    reseed(train)
    if args.shift > 0:
        train = ShiftLoader(train, args.shift, seed=1)
    m = copy.deepcopy(model)
    t = time.monotonic()
    rep = compress_NN_models(m, f"{budget}B", train, test, val_loader=val, representation=representation,
                             num_epochs=args.compress_epochs, max_rounds=args.max_rounds,
                             accuracy_tolerance=args.tolerance, layers_factorization=False,
                             quant_epochs=args.quant_epochs, max_batches_per_epoch=args.max_batches,
                             time_limit=args.time_limit, progress=False)
    wall = time.monotonic() - t
    m.eval()
    x = next(iter(test))[0][:1]
    res = save_compressed_model(m, representation, input_data=x,
                                directory=out / f"{name}_{representation}_{budget}", overwrite=True)
    acc = evaluate(m, test)
    arc = out / f"{name}_{representation}_{budget}.scz"
    huff = huffman_encode(m, arc)
    stages = compare_stages(m, x)
    params = sum(p.numel() for p in model.parameters())
    target = TARGETS.get((name, budget))
    run = {
        "model": name, "representation": representation, "budget": budget,
        "emitted_weight_bytes": res.weight_bytes, "report_final_bytes": rep.final_bytes,
        "test_accuracy": acc, "val_accuracy": rep.val_accuracy_after,
        "float_test_accuracy": rep.test_accuracy_before, "float_val_accuracy": rep.val_accuracy_before,
        "float_bytes": params * 4, "ratio_vs_float": params * 4 / res.weight_bytes,
        "huffman_archive_bytes": huff, "stages": stages.totals(),
        "target_accuracy": target,
        "met": bool(res.weight_bytes <= budget and (target is None or acc >= target)),
        "wall_s": wall, "stopped": rep.stopped_reason,
        "settings": {k: getattr(args, k) for k in ("epochs", "lr", "weight_decay", "shift", "compress_epochs",
                                                   "quant_epochs", "max_rounds", "tolerance", "threads")},
        "layers": [(r.name, r.format, r.density, r.bytes) for r in rep.layers],
    }
    print(rep, flush=True)
    print(stages, flush=True)
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(default_mnist_dir(ROOT) or ""), help="MNIST IDX directory")
    ap.add_argument("--out", default=str(ROOT / "out" / "deep_compression"))
    ap.add_argument("--runs", default="lenet300:auto:27000,lenet5:auto:44000,lenet5:codebook:18000",
                    help="model:representation:budget_bytes, comma separated")
    ap.add_argument("--epochs", type=int, default=None,
                    help="float training epochs (default: 30 for lenet300, 12 for lenet5)")
    ap.add_argument("--lr", type=float, default=None,
                    help="float training: SGD learning rate, cosine schedule (default: 0.05 lenet300, 0.03 lenet5)")
    ap.add_argument("--weight-decay", type=float, default=1e-4, help="float training: L2 weight decay")
    ap.add_argument("--shift", type=int, default=2,
                    help="augmentation: random translation of up to SHIFT pixels (float training and "
                         "compression fine-tuning; 0 = off)")
    ap.add_argument("--compress-epochs", type=int, default=6, help="fine-tuning epochs per pruning round")
    ap.add_argument("--quant-epochs", type=int, default=3, help="fine-tuning epochs after quantization/sharing")
    ap.add_argument("--max-rounds", type=int, default=3)
    ap.add_argument("--tolerance", type=float, default=0.003)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-batches", type=int, default=None, help="cap on batches per compression epoch")
    ap.add_argument("--time-limit", type=float, default=None, help="seconds per compression run")
    ap.add_argument("--tag", default="results", help="name of the results file (OUT/TAG.json)")
    ap.add_argument("--train-only", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.data or not Path(args.data).is_dir():
        ap.error("no MNIST directory: pass --data DIR (nothing is downloaded)")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_mnist(args.data, batch_size=128, seed=0)
    runs = [r.split(":") for r in args.runs.split(",") if r]
    models = {}
    for name in dict.fromkeys(r[0] for r in runs):
        train = ShiftLoader(data[0], args.shift) if args.shift > 0 else data[0]
        models[name] = trained_model(name, train, data[1], out, args)
        log.info("%s: float test accuracy %.4f", name, evaluate(models[name], data[2]))
    if args.train_only:
        return 0
    results = []
    for name, representation, budget in runs:
        run = run_one(name, models[name], representation, int(budget), data, args, out)
        results.append(run)
        log.info("RESULT %s", {k: v for k, v in run.items() if k != "layers"})
        (out / f"{args.tag}.json").write_text(json.dumps(results, indent=1))
    print(f"\n{'model':<9} {'repr':<9} {'budget':>7} {'emitted':>8} {'test acc':>8} {'target':>7} "
          f"{'x float':>8} {'huffman':>8}  met")
    for r in results:
        tgt = "" if r["target_accuracy"] is None else f"{100 * r['target_accuracy']:.1f}%"
        print(f"{r['model']:<9} {r['representation']:<9} {r['budget']:>7,d} {r['emitted_weight_bytes']:>8,d} "
              f"{100 * r['test_accuracy']:7.2f}% {tgt:>7} {r['ratio_vs_float']:7.1f}x "
              f"{r['huffman_archive_bytes']:>8,d}  {'yes' if r['met'] else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
