"""sHAM's quantizers on LeNet-5 / MNIST: test accuracy and exact codebook bytes of CWS, PWS, UQ and ECSQ.

Trains LeNet-5 (sparsecomp.models.lenet5, Caffe variant) for --epochs on MNIST, optionally prunes it
(ThresholdPruner, --sensitivity; --retrain epochs with the masks held), then for each quantizer and bit
width shares every Conv/Linear weight (sparsecomp.sham.share; no fine-tuning) and prints the test accuracy
and the bytes codegen emits (``codegen.weight_bytes(..., "codebook")``, exact).

    .venv/bin/python benchmarks/sham_quantizers.py --data /work/shared/data/mnist --epochs 2 --sensitivity 0.75
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from codegen import weight_bytes
from sparsecomp import ThresholdPruner, load_mnist
from sparsecomp.models import lenet5, train_classifier
from sparsecomp.pruning import find_compressible_layers
from sparsecomp.sham import METHODS, share
from sparsecomp.training import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/work/shared/data/mnist")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--sensitivity", type=float, default=0.0, help="0: no pruning")
    ap.add_argument("--retrain", type=int, default=1)
    ap.add_argument("--bits", default="2,3,4,5")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit-train", type=int, default=None, help="train on the first N training images only")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    t0 = time.time()
    train, _val, test = load_mnist(args.data, batch_size=128, seed=args.seed, limit_train=args.limit_train)
    model = train_classifier(lenet5(), train, args.epochs, lr=1e-3, progress=False).eval()
    x = torch.zeros(1, 1, 28, 28)
    print(f"LeNet-5 trained {args.epochs} epoch(s) on {len(train.dataset)} images: test {100 * evaluate(model, test):.2f} %, "
          f"csr {weight_bytes(model, x, 'csr').total} bytes ({time.time() - t0:.0f} s)")
    if args.sensitivity > 0:
        pruner = ThresholdPruner(sensitivity=args.sensitivity)
        pruner.prune(model)
        if args.retrain:
            opt = torch.optim.Adam(model.parameters(), 1e-4)
            pruner.attach(opt)
            model.train()
            for _ in range(args.retrain):
                for xb, yb in train:
                    opt.zero_grad()
                    torch.nn.functional.cross_entropy(model(xb), yb).backward()
                    opt.step()
            pruner.detach()
            pruner.apply()
        model.eval()
        nz = sum(int((m.weight != 0).sum()) for m in find_compressible_layers(model).values())
        print(f"pruned (sensitivity {args.sensitivity}, {args.retrain} retrain epoch(s)): {nz} nonzero weights, "
              f"test {100 * evaluate(model, test):.2f} %, csr {weight_bytes(model, x, 'csr').total} bytes")
    bits = [int(b) for b in args.bits.split(",")]
    print(f"\n{'method':<6} {'bits':>4} {'test acc %':>10} {'codebook bytes':>15}")
    for method in METHODS:
        for b in bits:
            q = copy.deepcopy(model)
            with torch.no_grad():
                for m in find_compressible_layers(q).values():
                    m.weight.copy_(torch.from_numpy(share(m.weight.numpy(), b, method)))
            print(f"{method:<6} {b:>4} {100 * evaluate(q, test):>10.2f} {weight_bytes(q, x, 'codebook').total:>15,}")
    print(f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
