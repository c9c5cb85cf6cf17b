"""Benchmark (issue 19): the default call against each single representation, accuracy vs the exact
bytes ``save_compressed_model`` emits, on several tasks with held-out test data.

    python benchmarks/auto_vs_single.py [--tasks digits,sensor1d,kws2d,kws2d_trad,mlp,lenet300,lenet5]
                                        [--reps default,csr,int8,codebook,per-layer] [--out out/auto]
                                        [--max-train N] [--float-epochs 10]

Tasks: the digits CNN (sklearn digits, 8x8), a 1-D CNN on a synthetic sensor task (three noisy
channels of bursts, chirps and tones, 8 classes), a DS-CNN on synthetic keyword-spotting spectrograms
(10 "keywords" of three formant "phonemes" each, jittered in rate, pitch, gain, noise) and a
conventional two-conv CNN on the same data, an MLP on sklearn's make_classification, LeNet-300-100
and LeNet-5 on MNIST (/work/shared/data/mnist or --data).  Float baselines: plain Adam, ``--float-epochs``
epochs (10 by default, as in the issue), cached in OUT/<task>.pt.  For each task and representation a
fresh copy of the float model is compressed with ``compress_NN_models(model, budget, train, test,
val_loader=val, representation=...)`` (nothing else set; "default" passes no representation), then
emitted with ``codegen.weight_bytes(model, x, <the representation recorded on the model>)``.  Also the
wall time of the default call against one plain training epoch count (the float baseline's).
``--max-train`` caps the training set (the MNIST runs use it on this shared 2-core machine: say so).
Prints a table and writes OUT/results.json.  Not a test.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Subset, TensorDataset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from codegen import weight_bytes  # noqa: E402
from codegen.api import emit_representation  # noqa: E402
from sparsecomp import compress_NN_models, load_digits, load_mnist  # noqa: E402
from sparsecomp.data import default_mnist_dir  # noqa: E402
from sparsecomp.models import digits_cnn, lenet5, lenet300_100, train_classifier  # noqa: E402
from sparsecomp.training import evaluate  # noqa: E402

log = logging.getLogger("bench")


def sensor1d_task(seed: int = 0, n: int = 6000):
    """Three-channel 1-D signals (length 128) of 8 classes: tones, chirps, bursts and steps of
    random phase, amplitude and onset, mixed with a random-walk drift and noise."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, 128, dtype=np.float32)
    x = np.zeros((n, 3, 128), np.float32)
    y = rng.integers(0, 8, n)
    for i in range(n):
        c, ph, a = y[i], rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.5)
        f = rng.uniform(3, 6)
        onset = rng.uniform(0.1, 0.6)
        if c == 0:
            s = np.sin(2 * np.pi * f * t + ph)
        elif c == 1:
            s = np.sin(2 * np.pi * 2.2 * f * t + ph)
        elif c == 2:
            s = np.sin(2 * np.pi * (f * t + 6 * t * t) + ph)  # up-chirp
        elif c == 3:
            s = np.sin(2 * np.pi * (3 * f * t - 6 * t * t) + ph)  # down-chirp
        elif c == 4:
            s = (t > onset) * np.sin(2 * np.pi * 2 * f * t + ph)  # burst
        elif c == 5:
            s = np.sign(np.sin(2 * np.pi * f * t + ph)) * 0.7  # square
        elif c == 6:
            s = (t > onset).astype(np.float32) - 0.5  # step
        else:
            s = np.sin(2 * np.pi * f * t + ph) * np.sin(2 * np.pi * 0.8 * t)  # beating
        mix = rng.normal(0, 1, 3) * 0.3 + np.array([1.0, 0.5, 0.25])[rng.permutation(3)]
        drift = np.cumsum(rng.normal(0, 0.05, (3, 128)), axis=1)
        x[i] = a * mix[:, None] * s[None, :] + drift + rng.normal(0, 0.6, (3, 128))
    return torch.from_numpy(x), torch.from_numpy(y).long()


def sensor1d_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(3, 32, 7, padding=3), nn.BatchNorm1d(32), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(32, 64, 5, padding=2), nn.BatchNorm1d(64), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(64, 64, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
        nn.Flatten(), nn.Linear(64 * 16, 64), nn.ReLU(), nn.Linear(64, 8),
    )  # fmt: skip


def kws2d_task(seed: int = 0, n: int = 6000, frames: int = 40, bins: int = 20):
    """Synthetic keyword spotting: log-energy spectrograms (1 x ``frames`` x ``bins``) of 10 "keywords", each
    a sequence of three "phonemes" from an inventory of six (two formant bands each, some gliding); keywords
    share phonemes and differ in their order, so the model has to see time-frequency structure.  Per sample:
    random speaking rate (0.7-1.35), onset, pitch shift (+-1.5 bins), formant widths, gain (+-12 dB), a
    coloured noise floor, a babble phoneme of another keyword at random time, and dropped frames."""
    rng = np.random.default_rng(seed)
    # phoneme: (formant 1, formant 2, glide in bins over the phoneme)
    phon = [(3.0, 9.0, 0.0), (5.0, 14.0, 0.0), (2.5, 12.0, 3.0), (6.0, 11.0, -3.0), (4.0, 16.5, 0.0),
            (3.5, 7.5, 2.0)]
    words = [(0, 1, 2), (0, 2, 1), (1, 0, 3), (1, 3, 4), (2, 4, 0), (3, 5, 1), (4, 1, 5), (5, 0, 4),
             (2, 3, 5), (4, 5, 3)]
    f = np.arange(bins, dtype=np.float32)[None, :]
    y = rng.integers(0, len(words), n)
    x = np.zeros((n, 1, frames, bins), np.float32)

    def phoneme(spec, p, start, length, shift, width, amp):
        f1, f2, glide = phon[p]
        t0, t1 = int(round(start)), int(round(start + length))
        for t in range(max(0, t0), min(frames, t1)):
            u = (t - start) / max(length, 1.0)
            env = amp * np.sin(np.pi * np.clip(u, 0, 1)) ** 0.5
            for fc, w in ((f1, 1.0), (f2, 0.6)):
                c = fc + shift + glide * u
                spec[t] += env * w * np.exp(-0.5 * ((f[0] - c) / width) ** 2)

    for i in range(n):
        spec = np.zeros((frames, bins), np.float32)
        rate = rng.uniform(0.7, 1.35)
        lens = rng.uniform(6, 10, 3) * rate
        start = rng.uniform(0, max(0.0, frames - lens.sum() - 1))
        shift, width, amp = rng.uniform(-1.5, 1.5), rng.uniform(0.8, 1.6), 10 ** rng.uniform(-0.6, 0.6)
        for k, p in enumerate(words[y[i]]):
            phoneme(spec, p, start + lens[:k].sum(), lens[k], shift, width, amp)
        other = words[rng.integers(0, len(words))][rng.integers(0, 3)]  # babble
        phoneme(spec, other, rng.uniform(-4, frames), rng.uniform(5, 9), rng.uniform(-2, 2), 1.2,
                amp * rng.uniform(0.2, 0.7))
        floor = np.exp(-f[0] / rng.uniform(4, 12)) * rng.uniform(0.05, 0.4)  # coloured noise floor
        spec += floor[None, :] * rng.exponential(1.0, (frames, bins))
        spec += 0.25 * amp * rng.exponential(1.0, (frames, bins)) * (rng.random((frames, bins)) < 0.1)
        spec[rng.random(frames) < 0.08] = 0.0  # dropped frames
        x[i, 0] = np.log1p(4.0 * spec)
    x = (x - x.mean()) / x.std()
    return torch.from_numpy(x), torch.from_numpy(y).long()


def _ds_block(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False), nn.BatchNorm2d(cin),
            nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def kws2d_cnn() -> nn.Module:
    """A small DS-CNN (Hello Edge style) for 1x40x20 inputs: a 5x3 conv (stride 2 in time), three
    depthwise-separable blocks (the first two with stride 2), global average pooling, 10 classes."""
    return nn.Sequential(
        nn.Conv2d(1, 48, (5, 3), stride=(2, 1), padding=(2, 1), bias=False), nn.BatchNorm2d(48), nn.ReLU(),
        *_ds_block(48, 96, 2), *_ds_block(96, 96, 2), *_ds_block(96, 96, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, 10),
    )  # fmt: skip



def kws2d_trad_cnn() -> nn.Module:
    """A conventional CNN for the same spectrograms (Hello Edge's "CNN" shape: two convs with max pooling, a
    fully connected layer): more weights per channel than the DS-CNN, so its biases weigh less at 15x."""
    return nn.Sequential(
        nn.Conv2d(1, 28, (7, 3), padding=(3, 1)), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(28, 30, (5, 3), padding=(2, 1)), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(30 * 10 * 5, 64), nn.ReLU(), nn.Linear(64, 10),
    )  # fmt: skip


def mlp_task(seed: int = 0, n: int = 8000):
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=n, n_features=200, n_informative=40, n_redundant=40, n_classes=10,
                               n_clusters_per_class=2, class_sep=1.2, random_state=seed)
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y).long()


def mlp_model() -> nn.Module:
    return nn.Sequential(nn.Linear(200, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))


def _split_loaders(x, y, seed=0, batch_size=64):
    n = len(y)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_te, n_va = n // 5, n // 10
    ds = TensorDataset(x, y)
    mk = lambda idx, sh: DataLoader(Subset(ds, idx.tolist()), batch_size=batch_size, shuffle=sh,  # noqa: E731
                                    generator=torch.Generator().manual_seed(seed))
    return mk(perm[n_te + n_va:], True), mk(perm[n_te:n_te + n_va], False), mk(perm[:n_te], False)


def _cap(loader, n_max: int | None, seed: int = 0):
    if n_max is None or len(loader.dataset) <= n_max:
        return loader
    idx = torch.randperm(len(loader.dataset), generator=torch.Generator().manual_seed(seed))[:n_max]
    return DataLoader(Subset(loader.dataset, idx.tolist()), batch_size=loader.batch_size, shuffle=True,
                      generator=torch.Generator().manual_seed(seed))


@functools.cache
def _generated(task):
    """The data set of a synthetic task (generated once per process: each call gets fresh loaders over it)."""
    return task()


def tasks(data_dir: Path | None, max_train: int | None):
    """name -> (factory, loaders thunk, budget in bytes)."""
    def mnist():
        tr, va, te = load_mnist(data_dir, batch_size=128)
        return _cap(tr, max_train), va, te

    return {
        "digits": (digits_cnn, lambda: load_digits(batch_size=64, seed=0), None),  # 15x of its float size
        "sensor1d": (sensor1d_cnn, lambda: _split_loaders(*_generated(sensor1d_task)), None),
        "kws2d": (kws2d_cnn, lambda: _split_loaders(*_generated(kws2d_task)), None),
        "kws2d_trad": (kws2d_trad_cnn, lambda: _split_loaders(*_generated(kws2d_task)), None),
        "mlp": (mlp_model, lambda: _split_loaders(*_generated(mlp_task)), None),
        "lenet300": (lenet300_100, mnist, 27_000),
        "lenet5": (lenet5, mnist, 44_000),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="digits,sensor1d,kws2d,kws2d_trad,mlp,lenet300,lenet5")
    ap.add_argument("--reps", default="default,csr,int8,codebook,per-layer")
    ap.add_argument("--out", default="out/auto")
    ap.add_argument("--data", default=None)
    ap.add_argument("--max-train", type=int, default=None, help="cap the training set (MNIST) to N samples")
    ap.add_argument("--compress-max-train", type=int, default=None,
                    help="cap the training set the compressor sees to N samples (the float baseline keeps "
                         "--max-train); a harder setting, used on the shared machine: say so")
    ap.add_argument("--float-epochs", type=int, default=10)
    ap.add_argument("--ratio", type=float, default=15.0, help="compression ratio for tasks without a fixed budget")
    ap.add_argument("--kw", default="", help="extra compress_NN_models options for every run, e.g. "
                    "'max_rounds=2,num_epochs=3' (a reduced setting: say so with the figures)")
    ap.add_argument("--log", default="WARNING", help="logging level of the compressor (INFO shows every round)")
    args = ap.parse_args()
    logging.basicConfig(level=getattr(logging, args.log.upper()), format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data) if args.data else default_mnist_dir(ROOT) or Path("/work/shared/data/mnist")
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    for name in args.tasks.split(","):
        factory, loaders, budget = tasks(data_dir, args.max_train)[name]
        train, val, test = loaders()
        wpath = out / f"{name}.pt"
        torch.manual_seed(0)
        model = factory()
        t = time.monotonic()
        if wpath.exists():
            model.load_state_dict(torch.load(wpath))
            train_s = results.get(name, {}).get("float_train_s", float("nan"))
        else:
            train_classifier(model, train, args.float_epochs, lr=1e-3, progress=False)
            train_s = time.monotonic() - t
            torch.save(model.state_dict(), wpath)
        x = next(iter(test))[0][:1]
        float_bytes = weight_bytes(model.eval(), x, "csr").total
        budget = budget or int(math.floor(float_bytes / args.ratio))
        float_acc = evaluate(model, test)
        res = results.setdefault(name, {})
        res.update(float_test=float_acc, float_bytes=float_bytes, budget=budget, float_train_s=train_s,
                   float_epochs=args.float_epochs, n_train=len(train.dataset), extra_options=args.kw)
        print(f"{name}: float {100 * float_acc:.2f} % at {float_bytes:,} B; budget {budget:,} B "
              f"({float_bytes / budget:.1f}x); {len(train.dataset)} training samples", flush=True)
        res["n_train_compress"] = len(_cap(train, args.compress_max_train, seed=1).dataset)
        for rep in filter(None, args.reps.split(",")):  # --reps "" trains/loads the float baselines only
            # fresh loaders: every call starts from the same shuffling state, whatever ran before it
            train, val, test = loaders()
            ctrain = _cap(train, args.compress_max_train, seed=1)
            m = copy.deepcopy(model)
            kw = {} if rep == "default" else {"representation": rep}
            for item in filter(None, args.kw.split(",")):
                k, v = item.split("=", 1)
                kw[k.strip()] = json.loads(v)
            t = time.monotonic()
            try:
                report = compress_NN_models(m, f"{budget}B", ctrain, test, val_loader=val, progress=False, **kw)
            except Exception as exc:  # noqa: BLE001 - the table shows it
                res[rep] = {"error": str(exc)[:200]}
                print(f"  {rep:<10} error: {exc}", flush=True)
                continue
            wall = time.monotonic() - t
            emitted = weight_bytes(m.eval(), x, emit_representation(m, None)).total
            res[rep] = dict(representation=report.representation, test=report.test_accuracy_after,
                            val=report.val_accuracy_after, bytes=emitted, wall_s=wall, success=report.success,
                            probes=[(p.representation, p.val_accuracy, p.bytes, p.seconds) for p in report.probes],
                            finalists=[(p.representation, p.val_accuracy, p.bytes, p.seconds, p.note)
                                       for p in report.finalists],
                            report=str(report))
            print(f"  {rep:<10} -> {report.representation:<9} test {100 * report.test_accuracy_after:6.2f} % "
                  f"(float {100 * float_acc:.2f}, {100 * (report.test_accuracy_after - float_acc):+.2f}) "
                  f"val {100 * report.val_accuracy_after:6.2f} %  {emitted:>8,d} B "
                  f"{'<=' if emitted <= budget else '>'} {budget:,}  {wall:6.1f} s "
                  f"({wall / train_s if train_s == train_s else float('nan'):.1f}x float training)", flush=True)
            (out / "results.json").write_text(json.dumps(results, indent=1))
        (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
