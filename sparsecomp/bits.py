"""Per-layer bit widths and encodings: ``bits_analysis`` (accuracy of each layer weight-shared
alone at several bit widths) and ``make_plan`` (the :class:`~sparsecomp.budget.QuantPlan` saying which
encoding each layer gets, chosen by measured accuracy and by the bytes
:class:`~sparsecomp.budget.LayerBytes` counts; this module never counts bytes itself).

Example::

    >>> import torch, torch.nn as nn
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> data = DataLoader(TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,))), batch_size=16)
    >>> res = bits_analysis(model, data, bits=[4, 2], progress=False)
    >>> sorted(res.curves), sorted(res.curves["0"])
    (['0', '2'], [2, 4])
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .budget import LayerBytes, QuantPlan
from .pruning import find_compressible_layers
from .training import Metric, evaluate, top1
from .weight_sharing import WeightSharingError, check_bits, check_finite

logger = logging.getLogger(__name__)

DEFAULT_BITS = (8, 6, 4, 2)


@dataclass
class BitsResult:
    """Accuracy with one layer weight-shared alone: ``curves[layer][bits] = accuracy``."""

    baseline: float
    bits: list[int]
    curves: dict[str, dict[int, float]] = field(default_factory=dict)

    def accuracy_drop(self, layer: str, bits: int) -> float:
        return max(0.0, self.baseline - self.curves[layer][bits])

    def smallest_bits(self, layer: str, max_drop: float) -> int | None:
        """Fewest bits whose accuracy drop is at most ``max_drop`` (None if none is)."""
        ok = [b for b, a in self.curves[layer].items() if self.baseline - a <= max_drop]
        return min(ok) if ok else None

    def to_rows(self) -> list[dict]:
        return [{"layer": layer, "bits": b, "accuracy": a, "drop": self.baseline - a}
                for layer, curve in self.curves.items() for b, a in sorted(curve.items())]

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write ``layer,bits,accuracy,drop`` rows (the float baseline as bits 32 of layer '*')."""
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["layer", "bits", "accuracy", "drop"])
            w.writeheader()
            w.writerow({"layer": "*", "bits": 32, "accuracy": self.baseline, "drop": 0.0})
            for row in self.to_rows():
                w.writerow(row)

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> BitsResult:
        baseline, curves, bs = 0.0, {}, set()
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                b, a = int(row["bits"]), float(row["accuracy"])
                if row["layer"] == "*":
                    baseline = a
                else:
                    curves.setdefault(row["layer"], {})[b] = a
                    bs.add(b)
        return cls(baseline=baseline, bits=sorted(bs), curves=curves)

    def plot(self, path: str | os.PathLike) -> None:
        """Save a PNG of accuracy vs. bits per layer (needs matplotlib: ``pip install sparsecomp[plot]``)."""
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("plotting needs matplotlib: pip install 'sparsecomp[plot]'") from exc
        fig, ax = plt.subplots(figsize=(6, 4))
        for layer, curve in self.curves.items():
            xs = sorted(curve)
            ax.plot(xs, [curve[b] for b in xs], marker="o", label=layer)
        ax.axhline(self.baseline, color="gray", linestyle="--", linewidth=1, label="float")
        ax.set_xlabel("bits per shared weight of the layer (others float)")
        ax.set_ylabel("validation accuracy")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


@torch.no_grad()
def bits_analysis(
    model: nn.Module,
    val_loader: Iterable | None,
    bits: Sequence[int] = DEFAULT_BITS,
    *,
    layers: Iterable[str] | None = None,
    device: str | torch.device = "cpu",
    metric: Metric = top1,
    max_batches: int | None = None,
    csv_path: str | os.PathLike | None = None,
    plot_path: str | os.PathLike | None = None,
    progress: bool = True,
    sharing: str = "cws",
) -> BitsResult:
    """Weight-share each Conv/Linear layer alone (linear-init k-means, zeros kept; the others
    stay float) at each bit width and record validation accuracy.  The model is restored
    afterwards.  ``csv_path``/``plot_path`` save the table and a PNG (the plot needs matplotlib).
    ``sharing``: the quantizer (sparsecomp.sham.METHODS: cws = k-means, pws, uq, ecsq).
    """
    from .sham import share

    if val_loader is None:
        raise WeightSharingError("bits_analysis needs validation data (val_loader is None)")
    bits = sorted({check_bits(b) for b in bits}, reverse=True)
    if not bits:
        raise WeightSharingError("bits must be a non-empty list of integers in 1..8")
    all_layers = find_compressible_layers(model)
    names = list(all_layers) if layers is None else list(layers)
    for n in names:
        if n not in all_layers:
            raise KeyError(f"{n!r} is not a Conv1d/Conv2d/Linear layer of the model; known: {list(all_layers)}")
    check_finite(model, names)
    baseline = evaluate(model, val_loader, device, metric, max_batches)
    result = BitsResult(baseline=baseline, bits=sorted(bits))
    bar = tqdm(total=len(names) * len(bits), desc="bits", disable=not progress, leave=False)
    for name in names:
        w = all_layers[name].weight
        saved = w.detach().clone()
        curve = {}
        try:
            for b in bits:
                shared = share(saved.cpu().numpy(), b, sharing)
                w.copy_(torch.from_numpy(shared).to(w))
                curve[b] = evaluate(model, val_loader, device, metric, max_batches)
                bar.update(1)
        finally:
            w.copy_(saved)
        result.curves[name] = curve
        logger.info("bits %s: %s", name, ", ".join(f"{b}->{a:.4f}" for b, a in sorted(curve.items())))
    bar.close()
    if csv_path is not None:
        result.to_csv(csv_path)
    if plot_path is not None:
        result.plot(plot_path)
    return result


# --------------------------------------------------------------------------------------
# per-layer plans
# --------------------------------------------------------------------------------------
def make_plan(
    model: nn.Module,
    representation: str,
    val_loader: Iterable | None,
    tolerance: float,
    bits: int | Mapping[str, int] | None = None,
    *,
    candidates: Sequence[int] = (8, 7, 6, 5, 4, 3, 2),
    device: str | torch.device = "cpu",
    metric: Metric = top1,
    max_batches: int | None = None,
    progress: bool = False,
    sharing: str = "cws",
    cache: dict | None = None,
    eval_samples: int | None = None,
) -> QuantPlan:
    """The per-layer plan of ``representation`` ("int8", "codebook", "auto").

    int8: every layer int8.  codebook (and huffman, its Huffman-coded form): ``bits`` (an int or {layer: bits}) when given, otherwise per
    layer the fewest bits (of ``candidates``) whose accuracy, the layer shared alone, stays within
    ``tolerance / 2`` of the float model (:func:`bits_analysis`; 8 bits if none does).
    auto: per layer the smallest of codebook (bits as above), int8 and float, among those that keep
    the accuracy within ``tolerance / 2`` (bytes at the layer's current density).
    The widths are chosen together (:func:`joint_bits`): the measured drops of all layers SUMMED stay
    within the allowed drop.  With ``eval_samples`` (the validation samples the accuracies are measured
    on) that is at most one standard error of the measurement, sqrt(p (1 - p) / n), else half the
    tolerance: the drops add up once every layer is quantized, and pruned layers lose more to the same width
    than the dense ones measured (LeNet-300-100 at 27 KB with each layer alone within 0.5 points: 3/2/2 bits,
    val 97.62 -> 95.84 % once quantized).
    ``cache`` (a dict the caller keeps) reuses the measured accuracies of the same weights, validation data
    and candidates (``representation="auto"`` plans its probes and its full run on the same model).
    """
    comp = find_compressible_layers(model)
    if representation == "int8":
        return QuantPlan("int8", {n: ("int8", None) for n in comp}, ("int8", None))
    if representation not in ("codebook", "auto", "huffman"):
        raise ValueError(f"no quantization plan for representation {representation!r}")
    chosen: dict[str, int | None] = {}
    if bits is not None:
        if isinstance(bits, Mapping):
            unknown = sorted(set(bits) - set(comp))
            if unknown:
                raise WeightSharingError(f"bits: no Conv1d/Conv2d/Linear layer named {unknown}; layers are "
                                         f"{list(comp)}")
        chosen = {n: check_bits(bits[n] if isinstance(bits, Mapping) else bits, n)
                  for n in comp if not isinstance(bits, Mapping) or n in bits}
    todo = [n for n in comp if n not in chosen]
    res = None
    if todo:
        if val_loader is None:
            raise WeightSharingError(f"choosing the bits of layers {todo} needs validation data (val_loader)")
        key = ("bits", weights_fingerprint(model), id(val_loader), tuple(candidates), tuple(todo), max_batches, sharing)
        res = None if cache is None else cache.get(key)
        if res is None:
            res = bits_analysis(model, val_loader, candidates, layers=todo, device=device, metric=metric,
                                max_batches=max_batches, progress=progress, sharing=sharing)
            if cache is not None:
                cache[key] = res
        chosen.update(joint_bits(res, {n: comp[n] for n in todo},
                                 quantization_drop_allowed(res.baseline, tolerance, eval_samples)))
    plan = QuantPlan(representation, default=("codebook", 8), sharing=sharing)
    store = LayerBytes(comp)  # geometry and nonzeros; each option's bytes at the layer's current density
    base = None
    for n in comp:
        b = chosen[n]
        if res is not None and n in res.curves:
            plan.drops[n] = {("codebook", bb): res.baseline - a for bb, a in res.curves[n].items()}
        if representation in ("codebook", "huffman"):  # huffman: the codebook values, Huffman-coded entries
            plan.layers[n] = ("codebook", b if b is not None else 8)
            continue
        options = [(store.nbytes(n, kind=("csr", None)), ("csr", None))]
        plan.drops.setdefault(n, {})[("csr", None)] = 0.0
        if b is not None:
            options.append((store.nbytes(n, kind=("codebook", b)), ("codebook", b)))
        # the int8 drop of every layer: the plan may also move a layer to int8 when the budget allows
        ikey = ("int8", weights_fingerprint(model), id(val_loader), n, max_batches)
        if cache is not None and ikey in cache:
            acc = cache[ikey]
        else:
            q = copy.deepcopy(model)
            QuantPlan("int8", {n: ("int8", None)}).apply_(q)
            acc = evaluate(q, val_loader, device, metric, max_batches)
            if cache is not None:
                cache[ikey] = acc
        if base is None:
            base = res.baseline if res is not None else evaluate(model, val_loader, device, metric, max_batches)
        plan.drops[n][("int8", None)] = base - acc
        if (b is None or b >= 8) and base - acc <= quantization_drop_allowed(base, tolerance, eval_samples):
            options.append((store.nbytes(n, kind=("int8", None)), ("int8", None)))
        plan.layers[n] = min(options, key=lambda t: t[0])[1]
    logger.info("quantization plan (%s): %s", representation, plan.describe())
    return plan


def joint_bits(res: BitsResult, layers: Mapping[str, nn.Module], allowed: float) -> dict[str, int | None]:
    """Codebook widths of ``layers`` whose measured drops (``res``, each layer shared alone), summed, stay
    within ``allowed``: each layer starts at its most precise measured width (None when even that one drops
    more than ``allowed`` alone), then the width that saves the most bytes (at the layer's density) per
    accuracy point is lowered one step at a time while the sum fits."""
    def drop(n: str, b: int) -> float:
        return max(0.0, res.accuracy_drop(n, b))

    store = LayerBytes(layers)
    cur: dict[str, int | None] = {}
    for n in layers:
        ok = [b for b in res.curves[n] if drop(n, b) <= allowed]
        cur[n] = max(ok) if ok else None
    total = sum(drop(n, b) for n, b in cur.items() if b is not None)
    while True:
        best = None
        for n, b in cur.items():
            lower = [c for c in res.curves[n] if b is not None and c < b]
            if not lower:
                continue
            c = max(lower)
            delta = drop(n, c) - drop(n, b)
            if total + delta > allowed:
                continue
            saved = store.nbytes(n, kind=("codebook", b)) - store.nbytes(n, kind=("codebook", c))
            score = (saved + 1e-3) / max(delta, 1e-6)
            if best is None or score > best[0]:
                best = (score, n, c, delta)
        if best is None:
            return cur
        _, n, c, delta = best
        cur[n] = c
        total += delta


def quantization_drop_allowed(baseline: float, tolerance: float, eval_samples: int | None) -> float:
    """The validation-accuracy drop a layer may show when stored at fewer bits alone: half the tolerance,
    and at most one standard error of the measurement when the number of samples is known.

    >>> quantization_drop_allowed(0.97, 0.01, None), round(quantization_drop_allowed(0.97, 0.01, 5000), 4)
    (0.005, 0.0024)
    """
    allowed = tolerance / 2
    if eval_samples:
        p = min(max(baseline, 0.0), 1.0)
        allowed = min(allowed, math.sqrt(max(p * (1 - p), 1e-4) / eval_samples))
    return allowed


@torch.no_grad()
def weights_fingerprint(model: nn.Module) -> tuple:
    """Identifies a model's weights for :func:`make_plan`'s cache: names, shapes and two float64 sums."""
    return tuple((k, tuple(v.shape), float(v.double().sum()), float(v.double().square().sum()))
                 for k, v in model.state_dict().items() if v.is_floating_point())
