"""Migration path from distiller / dnn-compression: their names as thin adapters over sparsecomp.

    dnn-compression / distiller                               sparsecomp
    perform_sensitivity_analysis(model, val, sparsities,      sensitivity_analysis(model, val, sparsities)
        test_func, criterion)                                 (top-1 accuracy; keyed by module name)
    sensitivity_to_png(sens, "s.png")                         SensitivityResult.plot("s.png")
    sensitivities_to_csv(sens, "s.csv")                       SensitivityResult.to_csv("s.csv")
    bits_analysis.perform_bits_analysis(model, val, bits,     bits_analysis(model, val, bits)
        test_func, criterion)
    LevelPruner(options=[("features.0.weight", 0.5)])         the same class (sparsecomp.LevelPruner)
    Quantizer(options=[("features.0.weight", 5)])             share_(model, {"features.0": 5})

The adapters keep the seeds' contracts: layers are named by parameter (``features.0.weight``), the
user's ``test_func(val_loader, model, criterion)`` returns ``(accuracy, loss)`` and is what is
measured, results are ``{param_name: {sparsity_or_bits: (accuracy, loss)}}`` in the model's parameter
order (Conv/Linear weights: the 2-D and 4-D parameters they scan, plus Conv1d's 3-D ones), and the CSV
has the columns ``parameter, sparsity, accuracy, loss``. The model's weights are restored after each
measurement. Pruning is sparsecomp's magnitude mask, sharing its linear-initialized k-means (zeros kept).
"""

from __future__ import annotations

import csv
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .pruning import LevelPruner, find_compressible_layers, magnitude_mask
from .weight_sharing import check_bits, check_finite, share_

logger = logging.getLogger(__name__)

TestFunc = Callable[[Iterable, nn.Module, nn.Module | None], tuple]
Sensitivities = "OrderedDict[str, OrderedDict[float, tuple[float, float]]]"

__all__ = ["LevelPruner", "Quantizer", "perform_bits_analysis", "perform_sensitivity_analysis",
           "sensitivities_to_csv", "sensitivity_to_png"]


def _weights(model: nn.Module) -> OrderedDict[str, nn.Parameter]:
    """The Conv/Linear weight parameters, by parameter name, in the model's parameter order."""
    comp = {f"{n}.weight" for n in find_compressible_layers(model)}
    return OrderedDict((n, p) for n, p in model.named_parameters() if n in comp)


def _measure(test_func: TestFunc, val_loader, model: nn.Module, criterion) -> tuple[float, float]:
    got = test_func(val_loader, model, criterion)
    if not isinstance(got, (tuple, list)) or len(got) < 2:
        raise TypeError(f"test_func(val_loader, model, criterion) must return (accuracy, loss), got {got!r}")
    acc, loss = got[0], got[1]
    return float(acc.item() if torch.is_tensor(acc) else acc), float(loss.item() if torch.is_tensor(loss) else loss)


def _scan(model: nn.Module, val_loader, levels: Sequence, test_func: TestFunc, criterion, apply, what: str):
    params = _weights(model)
    out: OrderedDict = OrderedDict()
    was_training = model.training
    bar = tqdm(total=len(params) * len(levels), desc=what, leave=False)
    try:
        for name, p in params.items():
            saved = p.detach().clone()
            curve: OrderedDict = OrderedDict()
            try:
                for level in levels:
                    with torch.no_grad():
                        p.copy_(apply(saved, level, name))
                    curve[level] = _measure(test_func, val_loader, model, criterion)
                    bar.update(1)
            finally:
                with torch.no_grad():
                    p.copy_(saved)
            out[name] = curve
            logger.info("%s %s: %s", what, name, ", ".join(f"{k}->{v[0]:.4g}" for k, v in curve.items()))
    finally:
        bar.close()
        model.train(was_training)
    return out


def perform_sensitivity_analysis(model: nn.Module, val_loader, sparsities: Iterable[float], test_func: TestFunc,
                                 criterion: nn.Module | None = None) -> OrderedDict:
    """Prunes each Conv/Linear weight alone (magnitude) at each sparsity and records
    ``test_func(val_loader, model, criterion)`` = (accuracy, loss); returns
    ``{param_name: {sparsity: (accuracy, loss)}}``. (dnn-compression's signature; sparsecomp's own is
    ``sensitivity_analysis``, whose result ``compress_NN_models(sensitivity=...)`` takes.)"""
    levels = [float(s) for s in sparsities]
    if not levels or not all(0.0 <= s <= 1.0 for s in levels):
        raise ValueError(f"sparsities must be values in [0, 1], got {levels}")
    return _scan(model, val_loader, levels, test_func, criterion,
                 lambda w, s, _n: w * magnitude_mask(w, s), "sensitivity")  # fmt: skip


def perform_bits_analysis(model: nn.Module, val_loader, bits: Iterable[int], test_func: TestFunc,
                          criterion: nn.Module | None = None) -> OrderedDict:
    """Weight-shares each Conv/Linear weight alone at each bit width (k-means, zeros kept) and records
    ``test_func(val_loader, model, criterion)``; returns ``{param_name: {bits: (accuracy, loss)}}``
    (dnn-compression's ``bits_analysis.perform_bits_analysis``; sparsecomp's own: ``bits_analysis``)."""
    from codegen.quantize import share_array

    levels = [check_bits(b) for b in bits]
    if not levels:
        raise ValueError("bits must be a non-empty list of integers in 1..8")
    check_finite(model)

    def apply(w: torch.Tensor, b: int, _n: str) -> torch.Tensor:
        return torch.from_numpy(share_array(w.cpu().numpy(), b)).to(w)

    return _scan(model, val_loader, levels, test_func, criterion, apply, "bits")


def sensitivities_to_csv(sensitivities: dict, fname: str | os.PathLike) -> None:
    """One row per (parameter, level): ``parameter, sparsity, accuracy, loss``."""
    with open(fname, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["parameter", "sparsity", "accuracy", "loss"])
        for name, curve in sensitivities.items():
            for level, values in curve.items():
                w.writerow([name, level, *values])


def sensitivity_to_png(sensitivities: dict, fname: str | os.PathLike) -> None:
    """Accuracy against sparsity (or bits), one line per parameter, as a PNG (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, curve in sensitivities.items():
        ax.plot(list(curve), [v[0] for v in curve.values()], marker="o", label=name)
    ax.set_xlabel("sparsity")
    ax.set_ylabel("accuracy")
    ax.set_title("pruning sensitivity")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(fname, format="png", dpi=100)
    plt.close(fig)


class Quantizer:
    """k-means weight sharing per parameter (dnn-compression's ``Quantizer``): ``options`` is a sequence of
    ``(parameter_name, bits)`` pairs (or a dict), e.g. ``[("features.0.weight", 5), ("classifier.weight", 4)]``.
    ``quantize(model)`` shares each named weight among at most 2^bits values (zeros kept), in place, and
    returns ``{parameter_name: bits}``; the model then emits exactly with ``representation="codebook"``.
    """

    def __init__(self, options: Sequence[tuple[str, int]] | dict[str, int]) -> None:
        items = list(options.items()) if isinstance(options, dict) else list(options)
        self.options = {str(n): check_bits(b, str(n)) for n, b in items}

    def quantize(self, model: nn.Module) -> dict[str, int]:
        params = dict(model.named_parameters())
        unknown = [n for n in self.options if n not in params]
        if unknown:
            raise KeyError(f"Quantizer: {unknown} are not parameters of the model")
        share_(model, dict(self.options))
        return dict(self.options)

    __call__ = quantize
