"""Undo everything the compressor did to a model when it fails (issue 12, item 12).

``compress_NN_models`` changes the model in place: it folds BatchNorm (a conv may gain a bias),
replaces layers by their factorizations, parametrizes weights while fine-tuning quantized
layers (which swaps the module's class) and moves the model to a device.  :class:`ModelSnapshot`
records, for every module of the tree, its class, its children, its parameters and buffers
(the objects and a copy of their data), their ``requires_grad`` flags and the train/eval mode;
:meth:`ModelSnapshot.restore` puts all of it back in place, so references the caller holds to
submodules and parameters keep working.

Example::

    >>> import torch.nn as nn
    >>> m = nn.Sequential(nn.Linear(2, 2)).eval()
    >>> snap = ModelSnapshot(m)
    >>> m[0] = nn.Identity(); _ = m.train()
    >>> snap.restore(); type(m[0]).__name__, m.training
    ('Linear', False)
"""

from __future__ import annotations

import torch
import torch.nn as nn


class ModelSnapshot:
    """Everything needed to put ``model`` back exactly as it was (see the module docstring)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.training = model.training
        self._modules: list[tuple[nn.Module, type, dict, dict, dict, bool]] = []
        self._data: dict[int, tuple[torch.Tensor, torch.Tensor, bool, torch.Tensor | None]] = {}
        for m in model.modules():
            self._modules.append((m, m.__class__, dict(m._modules), dict(m._parameters), dict(m._buffers),
                                  m.training))
            for t in list(m._parameters.values()) + list(m._buffers.values()):
                if t is not None and id(t) not in self._data:
                    grad = t.grad.detach().clone() if t.grad is not None else None
                    self._data[id(t)] = (t, t.detach().clone(), t.requires_grad, grad)

    @torch.no_grad()
    def restore(self) -> None:
        """Put classes, children, parameters, buffers, their values and train/eval mode back."""
        for m, cls, mods, params, bufs, training in self._modules:
            m.__class__ = cls  # torch.nn.utils.parametrize swaps the class of a parametrized module
            for d, saved in ((m._modules, mods), (m._parameters, params), (m._buffers, bufs)):
                d.clear()
                d.update(saved)
            m.training = training
        for t, data, requires_grad, grad in self._data.values():
            t.data = data
            t.grad = grad
            if t.is_leaf:
                t.requires_grad_(requires_grad)
