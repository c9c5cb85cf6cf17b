"""Per-layer pruning sensitivity: prune one layer alone at several sparsities, measure accuracy.

Example::

    >>> import torch, torch.nn as nn
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> torch.manual_seed(0) is not None
    True
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> data = DataLoader(TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,))), batch_size=16)
    >>> res = sensitivity_analysis(model, data, sparsities=[0.5, 0.9], progress=False)
    >>> sorted(res.curves)
    ['0', '2']
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .pruning import find_compressible_layers, magnitude_mask
from .training import Metric, evaluate, top1

logger = logging.getLogger(__name__)

DEFAULT_SPARSITIES = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98)


@dataclass
class SensitivityResult:
    """Accuracy of the model with one layer pruned: ``curves[layer][sparsity] = accuracy``."""

    baseline: float
    sparsities: list[float]
    curves: dict[str, dict[float, float]] = field(default_factory=dict)

    def accuracy_drop(self, layer: str, sparsity: float) -> float:
        """Accuracy lost when ``layer`` alone is pruned to ``sparsity`` (linear interpolation,
        0 at sparsity 0, extrapolated to a full drop at sparsity 1)."""
        pts = [(0.0, self.baseline)] + sorted(self.curves[layer].items())
        if pts[-1][0] < 1.0:
            pts.append((1.0, min(pts[-1][1], 0.0)))
        for (s0, a0), (s1, a1) in zip(pts, pts[1:]):
            if s0 <= sparsity <= s1:
                a = a0 if s1 == s0 else a0 + (a1 - a0) * (sparsity - s0) / (s1 - s0)
                return max(0.0, self.baseline - a)
        return max(0.0, self.baseline - pts[-1][1])

    def to_rows(self) -> list[dict]:
        return [
            {"layer": layer, "sparsity": s, "accuracy": a, "drop": self.baseline - a}
            for layer, curve in self.curves.items()
            for s, a in sorted(curve.items())
        ]

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write ``layer,sparsity,accuracy,drop`` rows (baseline as sparsity 0 of layer '*')."""
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["layer", "sparsity", "accuracy", "drop"])
            w.writeheader()
            w.writerow({"layer": "*", "sparsity": 0.0, "accuracy": self.baseline, "drop": 0.0})
            for row in self.to_rows():
                w.writerow(row)

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> SensitivityResult:
        baseline, curves, sp = 0.0, {}, set()
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                s, a = float(row["sparsity"]), float(row["accuracy"])
                if row["layer"] == "*":
                    baseline = a
                else:
                    curves.setdefault(row["layer"], {})[s] = a
                    sp.add(s)
        return cls(baseline=baseline, sparsities=sorted(sp), curves=curves)

    def plot(self, path: str | os.PathLike) -> None:
        """Save a PNG of accuracy vs. sparsity per layer (needs matplotlib: ``pip install sparsecomp[plot]``)."""
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("plotting needs matplotlib: pip install 'sparsecomp[plot]'") from exc
        fig, ax = plt.subplots(figsize=(6, 4))
        for layer, curve in self.curves.items():
            xs = [0.0] + sorted(curve)
            ax.plot(xs, [self.baseline] + [curve[s] for s in xs[1:]], marker="o", label=layer)
        ax.set_xlabel("sparsity of the layer (others dense)")
        ax.set_ylabel("validation accuracy")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


@torch.no_grad()
def sensitivity_analysis(
    model: nn.Module,
    val_loader: Iterable,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    *,
    layers: Iterable[str] | None = None,
    device: str | torch.device = "cpu",
    metric: Metric = top1,
    max_batches: int | None = None,
    csv_path: str | os.PathLike | None = None,
    plot_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> SensitivityResult:
    """Prune each compressible layer alone (magnitude) at each sparsity and record accuracy.

    The model's weights are restored afterwards.  ``csv_path``/``plot_path`` save the table
    and a PNG plot (the plot needs matplotlib).  The result can be passed to
    ``compress_NN_models(..., sensitivity=result)``.
    """
    sparsities = sorted(float(s) for s in sparsities)
    if not sparsities or not all(0.0 < s < 1.0 for s in sparsities):
        raise ValueError(f"sparsities must be a non-empty list of values in (0, 1), got {sparsities}")
    all_layers = find_compressible_layers(model)
    names = list(all_layers) if layers is None else list(layers)
    for n in names:
        if n not in all_layers:
            raise KeyError(f"{n!r} is not a Conv1d/Conv2d/Linear layer of the model; known: {list(all_layers)}")
    baseline = evaluate(model, val_loader, device, metric, max_batches)
    result = SensitivityResult(baseline=baseline, sparsities=sparsities)
    bar = tqdm(total=len(names) * len(sparsities), desc="sensitivity", disable=not progress, leave=False)
    for name in names:
        w = all_layers[name].weight
        saved = w.detach().clone()
        curve = {}
        try:
            for s in sparsities:
                w.copy_(saved * magnitude_mask(saved, s))
                curve[s] = evaluate(model, val_loader, device, metric, max_batches)
                bar.update(1)
        finally:
            w.copy_(saved)
        result.curves[name] = curve
        logger.info("sensitivity %s: %s", name, ", ".join(f"{s:.2f}->{a:.3f}" for s, a in curve.items()))
    bar.close()
    if csv_path is not None:
        result.to_csv(csv_path)
    if plot_path is not None:
        result.plot(plot_path)
    return result
