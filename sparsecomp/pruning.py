"""Mask-based pruning that keeps the module structure plain.

Masks are plain tensors held by a pruner object (never ``torch.nn.utils.prune``
parametrizations and never extra buffers on the modules), so the pruned model traces with
torch.fx and emits C like any other model.  A pruner re-applies its masks after every
optimizer step once :meth:`MaskedPruner.attach` has been called, so pruned weights stay
exactly zero while the model is retrained.

Example::

    >>> import torch.nn as nn, torch
    >>> model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> pruner = LevelPruner(options=[("0.weight", 0.5)])
    >>> pruner.prune(model)["0.weight"]
    0.5
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> pruner.attach(opt)       # masks are re-applied after each opt.step()
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)

#: Module types whose ``weight`` the compressor prunes and (optionally) factorizes.
COMPRESSIBLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Linear)


def find_compressible_layers(model: nn.Module) -> dict[str, nn.Module]:
    """All Conv1d/Conv2d/Linear modules anywhere in the module tree, keyed by module path.

    Nested containers of any kind (Sequential, ModuleList, ModuleDict, custom modules) are
    searched.  A module registered under two paths is reported once (its first path).

    Example::

        >>> m = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3)), nn.Flatten(), nn.Linear(8, 2))
        >>> list(find_compressible_layers(m))
        ['0.0', '2']
    """
    return {
        name: mod
        for name, mod in model.named_modules(remove_duplicate=True)
        if isinstance(mod, COMPRESSIBLE_TYPES) and name
    }


def weight_matrix_shape(module: nn.Module) -> tuple[int, int]:
    """Shape of the weight viewed as 2-D ``[rows, cols]`` the way codegen encodes it.

    Linear: ``[out, in]``; Conv: ``[C_out, C_in/groups * prod(kernel)]``.
    """
    w = module.weight
    rows = int(w.shape[0])
    return rows, int(w.numel() // max(rows, 1))


def get_submodule_parent(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    """Parent module and attribute name of the module at dotted ``path``."""
    if not path:
        raise ValueError("cannot take the parent of the root module")
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    return parent, attr


def replace_module(model: nn.Module, path: str, new: nn.Module) -> None:
    """Replace the module at dotted ``path`` (works for Sequential/ModuleList/ModuleDict indices).

    Example::

        >>> m = nn.Sequential(nn.Sequential(nn.Linear(2, 2)))
        >>> replace_module(m, "0.0", nn.Identity())
        >>> type(m[0][0]).__name__
        'Identity'
    """
    parent, attr = get_submodule_parent(model, path)
    if attr not in parent._modules:
        raise KeyError(f"{path!r}: no such submodule")
    parent._modules[attr] = new


def magnitude_mask(weight: torch.Tensor, sparsity: float, old_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean mask keeping the ``(1 - sparsity)`` largest-magnitude entries of ``weight``.

    When ``old_mask`` is given and the new mask keeps no more entries than it, the result is a
    subset of ``old_mask`` (pruned weights never come back).  Ties are broken by index, so the
    result is deterministic.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    n = weight.numel()
    keep = n - int(round(sparsity * n))
    flat = weight.detach().abs().flatten().float()
    if old_mask is not None:
        old = old_mask.flatten().bool()
        if keep <= int(old.sum()):
            # candidates are only the currently kept weights: monotone masks
            flat = torch.where(old, flat, torch.full_like(flat, -1.0))
    mask = torch.zeros(n, dtype=torch.bool, device=weight.device)
    if keep > 0:
        # stable ordering: sort by magnitude descending, index ascending
        order = torch.argsort(flat, descending=True, stable=True)
        mask[order[:keep]] = True
    return mask.view_as(weight)


class MaskedPruner:
    """Base class: holds one boolean mask per pruned parameter and keeps it applied.

    Subclasses implement :meth:`compute_masks`.  ``prune(model)`` computes masks, zeroes the
    pruned weights and returns the sparsity reached per parameter; ``apply()`` re-zeroes;
    ``attach(optimizer)`` re-applies the masks after every optimizer step and zeroes the
    gradients of pruned entries so optimizer state does not move them.
    """

    def __init__(self) -> None:
        self.masks: dict[str, torch.Tensor] = {}
        self._params: dict[str, nn.Parameter] = {}
        self._handles: list = []

    # -- to be implemented -------------------------------------------------------------
    def compute_masks(self, model: nn.Module) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    # -- common machinery --------------------------------------------------------------
    def prune(self, model: nn.Module) -> dict[str, float]:
        """Compute masks for ``model``, zero the pruned weights, return sparsity per parameter."""
        params = dict(model.named_parameters())
        new = self.compute_masks(model)
        for name, mask in new.items():
            if name not in params:
                raise KeyError(f"{name!r} is not a parameter of the model; known: {sorted(params)[:8]}...")
            self.set_mask(name, params[name], mask)
        self.apply()
        return self.sparsities()

    def set_mask(self, name: str, param: nn.Parameter, mask: torch.Tensor) -> None:
        """Register (or replace) the mask of one parameter."""
        if mask.shape != param.shape:
            raise ValueError(f"{name}: mask shape {tuple(mask.shape)} != parameter {tuple(param.shape)}")
        self.masks[name] = mask.to(device=param.device, dtype=torch.bool)
        self._params[name] = param

    @torch.no_grad()
    def apply(self) -> None:
        """Zero every pruned weight (call after anything that may have moved them)."""
        for name, mask in self.masks.items():
            p = self._params[name]
            if mask.device != p.device:
                mask = self.masks[name] = mask.to(p.device)
            p.mul_(mask)

    def sparsities(self) -> dict[str, float]:
        """Fraction of zero entries of each masked parameter (measured on the weights)."""
        return {n: float((self._params[n] == 0).sum()) / self._params[n].numel() for n in self.masks}

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Keep masks applied while training with ``optimizer`` (post-step hook + grad hook)."""
        self._handles.append(optimizer.register_step_post_hook(lambda *_: self.apply()))
        for name, p in self._params.items():
            self._handles.append(p.register_hook(lambda g, n=name: g * self.masks[n].to(g.dtype)))

    def detach(self) -> None:
        """Remove the hooks installed by :meth:`attach`."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def rebind(self, model: nn.Module) -> None:
        """Point the masks at the parameters of ``model`` (e.g. after ``load_state_dict``
        into a copy); drops masks whose parameter no longer exists."""
        params = dict(model.named_parameters())
        for name in list(self.masks):
            if name in params and params[name].shape == self.masks[name].shape:
                self._params[name] = params[name]
            else:
                del self.masks[name]
                self._params.pop(name, None)


class LevelPruner(MaskedPruner):
    """Magnitude ("level") pruning with an explicit sparsity per parameter.

    ``options`` is a sequence of ``(parameter_name, sparsity)`` pairs, sparsity being the
    fraction of entries set to zero.  Pruning again with a higher sparsity only removes
    weights that are still kept (masks are monotone).

    Example::

        >>> m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4, 2))
        >>> p = LevelPruner(options=[("0.weight", 0.35), ("2.weight", 0.5)])
        >>> s = p.prune(m)
        >>> round(s["0.weight"], 2), s["2.weight"]
        (0.36, 0.5)
    """

    def __init__(self, options: Sequence[tuple[str, float]] | dict[str, float]) -> None:
        super().__init__()
        items = list(options.items()) if isinstance(options, dict) else list(options)
        for name, s in items:
            if not 0.0 <= float(s) <= 1.0:
                raise ValueError(f"{name}: sparsity must be in [0, 1], got {s}")
        self.options = {str(n): float(s) for n, s in items}

    def compute_masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        params = dict(model.named_parameters())
        out = {}
        for name, s in self.options.items():
            if name not in params:
                raise KeyError(f"LevelPruner: {name!r} is not a parameter of the model")
            out[name] = magnitude_mask(params[name], s, self.masks.get(name))
        return out


class ThresholdPruner(MaskedPruner):
    """Threshold pruning by ``std(weight) * sensitivity`` (Han et al., Deep Compression).

    Every weight whose magnitude is below the threshold is pruned.  ``sensitivity`` is a
    single float for all compressible layers or a dict ``{parameter_name: s}``.

    Example::

        >>> torch.manual_seed(0) is not None
        True
        >>> m = nn.Sequential(nn.Linear(100, 50))
        >>> s = ThresholdPruner(sensitivity=0.25).prune(m)["0.weight"]
        >>> 0.1 < s < 0.3
        True
    """

    def __init__(self, sensitivity: float | dict[str, float] = 0.25, layers: Iterable[str] | None = None):
        super().__init__()
        self.sensitivity = sensitivity
        self.layers = list(layers) if layers is not None else None

    def compute_masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        params = dict(model.named_parameters())
        if isinstance(self.sensitivity, dict):
            targets = dict(self.sensitivity)
        else:
            names = self.layers or [f"{n}.weight" for n in find_compressible_layers(model)]
            targets = {n: float(self.sensitivity) for n in names}
        out = {}
        for name, s in targets.items():
            if name not in params:
                raise KeyError(f"ThresholdPruner: {name!r} is not a parameter of the model")
            w = params[name].detach()
            thr = float(w.float().std()) * float(s)
            mask = w.abs() >= thr
            if name in self.masks:
                mask &= self.masks[name].to(mask.device)
            out[name] = mask
        return out


def global_sparsity(model: nn.Module) -> float:
    """Fraction of zeros over the weights of all compressible layers."""
    layers = find_compressible_layers(model).values()
    total = sum(m.weight.numel() for m in layers)
    zeros = sum(int((m.weight == 0).sum()) for m in layers)
    return zeros / total if total else 0.0


def sparsity_for_nnz(numel: int, nnz: int) -> float:
    """Sparsity that leaves ``nnz`` of ``numel`` entries."""
    return 1.0 - min(max(nnz, 0), numel) / numel if numel else 0.0


def nnz_for_sparsity(numel: int, sparsity: float) -> int:
    """Number of entries kept at ``sparsity`` (the rounding :func:`magnitude_mask` uses)."""
    return numel - int(round(sparsity * numel))


__all__ = [
    "COMPRESSIBLE_TYPES",
    "LevelPruner",
    "MaskedPruner",
    "ThresholdPruner",
    "find_compressible_layers",
    "global_sparsity",
    "magnitude_mask",
    "nnz_for_sparsity",
    "replace_module",
    "sparsity_for_nnz",
    "weight_matrix_shape",
]
