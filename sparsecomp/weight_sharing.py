"""Weight sharing (Deep Compression, stage 2) and quantization-aware fine-tuning, in place.

* ``share_(model, bits)``: per layer, linear-initialized k-means of the nonzero weights
  (``codegen.quantize.share_weights_``): at most 2^bits distinct nonzero values, zeros kept.
* ``fine_tune_shared_(model, train_loader, bits, epochs, lr)``: shares (when ``bits`` is given),
  then trains the centroids: every weight is ``centroids[index]`` with the index assignment and the
  zeros fixed, so the gradient of a centroid is the sum of the gradients of the weights sharing it
  (autograd's gather backward).  Afterwards each layer still holds at most 2^bits distinct nonzero
  values, exactly the float32 centroids the codebook encodings store.
* ``Int8STE`` / ``attach_int8_``: per-output-channel symmetric int8 fake quantization with a
  straight-through estimator (float shadow weights train, the forward pass sees the int8 grid);
  ``detach_quantizers_`` bakes the result onto codegen's exact grid (``quantize_int8_``).

Both quantizers are ``torch.nn.utils.parametrize`` parametrizations during training only; they
are removed (``detach_quantizers_``) before the model is traced or emitted.

Example::

    >>> import torch, torch.nn as nn
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    >>> data = DataLoader(TensorDataset(torch.randn(64, 8), torch.randint(0, 2, (64,))), batch_size=16)
    >>> _ = fine_tune_shared_(net, data, bits=2, epochs=1, lr=1e-3)
    >>> [len(torch.unique(m.weight[m.weight != 0])) <= 4 for m in (net[0], net[2])]
    [True, True]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from .pruning import MaskedPruner, find_compressible_layers
from .training import split_batch

logger = logging.getLogger(__name__)


class WeightSharingError(ValueError):
    """Bad input to weight sharing / quantization (the message names the layer)."""


def check_bits(bits: object, layer: str = "") -> int:
    """``bits`` as an int in 1..8, or a :class:`WeightSharingError` naming the layer."""
    where = f"layer '{layer}': " if layer else ""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= int(bits) <= 8:
        raise WeightSharingError(
            f"{where}weight-sharing bits must be an integer from 1 to 8 (2 to 256 shared values; the "
            f"codebook encodings index at most 256 values), got {bits!r}"
        )
    return int(bits)


def check_finite(model: nn.Module, layers: Iterable[str] | None = None) -> None:
    """Raise :class:`WeightSharingError` naming every Conv/Linear layer whose weight has NaN/inf."""
    comp = find_compressible_layers(model)
    bad = [n for n in (layers if layers is not None else comp)
           if not bool(torch.isfinite(comp[n].weight.detach()).all())]
    if bad:
        raise WeightSharingError(
            f"layer(s) {bad}: the weight has non-finite values (NaN or inf); retrain or repair the weights "
            "before quantizing or sharing them"
        )


def bits_plan(model: nn.Module, bits: int | Mapping[str, int]) -> dict[str, int]:
    """{layer: bits} for an int (every Conv/Linear layer) or a mapping keyed by module or parameter name
    (checked against the model)."""
    comp = find_compressible_layers(model)
    if isinstance(bits, Mapping):
        # distiller / dnn-compression name parameters ("features.0.weight"); ours are modules ("features.0")
        bits = {n[: -len(".weight")] if n not in comp and n.endswith(".weight") and n[: -len(".weight")] in comp
                else n: b for n, b in bits.items()}  # fmt: skip
        unknown = sorted(set(bits) - set(comp))
        if unknown:
            raise WeightSharingError(f"no Conv1d/Conv2d/Linear layer named {unknown}; layers are {list(comp)}")
        return {n: check_bits(b, n) for n, b in bits.items()}
    return {n: check_bits(bits, n) for n in comp}


def share_(model: nn.Module, bits: int | Mapping[str, int] = 5) -> dict[str, int]:
    """k-means weight sharing of the planned layers (zeros kept), in place; returns the plan.

    ``bits``: one width for every Conv/Linear layer (default 5, Deep Compression's), or ``{layer: bits}``
    keyed by module name (``"1"``) or parameter name (``"1.weight"``)."""
    from codegen.quantize import share_weights_

    plan = bits_plan(model, bits)
    check_finite(model, plan)
    share_weights_(model, plan)
    return plan


def codebook_of(w: torch.Tensor, layer: str = "", max_values: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted float32 centroids of the nonzero values, index per weight with -1 for zeros)."""
    w = w.detach()
    nz = w != 0
    cent = torch.unique(w[nz].float())
    if cent.numel() > max_values:
        where = f"layer '{layer}'" if layer else "weight"
        raise WeightSharingError(
            f"{where} has {cent.numel()} distinct nonzero values, more than {max_values}: share it first "
            "(fine_tune_shared_(..., bits=b) or share_(model, bits))"
        )
    idx = torch.searchsorted(cent, w.float().contiguous())
    idx = torch.where(nz, idx.clamp_max(max(cent.numel() - 1, 0)), torch.full_like(idx, -1))
    return cent, idx


class SharedWeight(nn.Module):
    """Parametrization: weight = centroids[index] (zeros where index == -1); trains the centroids."""

    def __init__(self, centroids: torch.Tensor, index: torch.Tensor):
        super().__init__()
        self.centroids = nn.Parameter(centroids.clone())
        self.register_buffer("index", index.clone())
        self.register_buffer("nonzero", index >= 0)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.centroids.numel() == 0:
            return torch.zeros_like(w)
        vals = self.centroids.to(w.dtype)[self.index.clamp_min(0)]
        return torch.where(self.nonzero, vals, torch.zeros_like(vals))


def int8_fake_quant(w: torch.Tensor) -> torch.Tensor:
    """Symmetric per-output-channel int8 fake quantization (torch version of codegen's grid)."""
    w2 = w.reshape(w.shape[0], -1)
    scale = w2.abs().amax(dim=1, keepdim=True) / 127.0
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(w2 / safe), -127, 127)
    return (q * scale).reshape(w.shape)


class Int8STE(nn.Module):
    """Parametrization: the forward pass sees int8 fake-quantized weights (pruned entries stay zero),
    the float shadow weight receives the gradient unchanged (straight-through estimator)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.clone())

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        wm = w * self.mask.to(w.dtype)
        return wm + (int8_fake_quant(wm.detach()) - wm).detach()


def attach_shared_(model: nn.Module, layers: Iterable[str]) -> None:
    """Parametrize the (already shared) weights of ``layers`` as trainable centroids."""
    comp = find_compressible_layers(model)
    for n in layers:
        m = comp[n]
        cent, idx = codebook_of(m.weight, n)
        parametrize.register_parametrization(m, "weight", SharedWeight(cent.to(m.weight.device), idx), unsafe=True)


def attach_int8_(model: nn.Module, layers: Iterable[str]) -> None:
    """Parametrize the weights of ``layers`` with int8 fake quantization (STE); zeros stay zero."""
    comp = find_compressible_layers(model)
    for n in layers:
        m = comp[n]
        parametrize.register_parametrization(m, "weight", Int8STE(m.weight.detach() != 0), unsafe=True)


def detach_quantizers_(model: nn.Module) -> None:
    """Remove the parametrizations of :func:`attach_shared_` / :func:`attach_int8_`, keeping the
    quantized values; int8 layers are snapped onto codegen's exact grid (``quantize_int8_``)."""
    from codegen.quantize import int8_quantize_array

    for name, m in list(model.named_modules()):
        if not parametrize.is_parametrized(m, "weight"):
            continue
        kinds = {type(p) for p in m.parametrizations["weight"]}
        if not kinds & {SharedWeight, Int8STE}:
            continue
        parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
        if Int8STE in kinds:
            with torch.no_grad():
                w = m.weight.detach().cpu().double().numpy()
                m.weight.copy_(torch.from_numpy(int8_quantize_array(w)).to(m.weight))
        logger.debug("baked the quantized weight of %s", name)


def distinct_nonzero(model: nn.Module) -> dict[str, int]:
    """Number of distinct nonzero weight values per Conv/Linear layer."""
    return {n: int(torch.unique(m.weight.detach()[m.weight.detach() != 0]).numel())
            for n, m in find_compressible_layers(model).items()}


def fine_tune_shared_(
    model: nn.Module,
    train_loader: Iterable,
    bits: int | Mapping[str, int] | None = None,
    epochs: int = 1,
    lr: float = 1e-4,
    *,
    layers: Iterable[str] | None = None,
    criterion: nn.Module | None = None,
    device: str | torch.device = "cpu",
    max_batches: int | None = None,
    train_other: bool = True,
    optimizer: str = "adam",
) -> nn.Module:
    """Weight sharing with centroid fine-tuning (Deep Compression), in place; returns the model.

    ``bits`` (1..8, or {layer: bits}) shares the layers first with linear-initialized k-means;
    ``bits=None`` fine-tunes layers that are already shared (``layers``, default every Conv/Linear).
    During ``epochs`` of training the index assignment and the zeros stay fixed and each centroid
    moves by the summed gradient of its weights; ``train_other`` also trains the biases and the
    parameters of layers that are not shared.  Each shared layer ends with at most 2^bits distinct
    nonzero float32 values.  Raises :class:`WeightSharingError` on bad bits, NaN weights, a NaN loss
    or an empty loader.
    """
    from .training import make_optimizer

    if epochs < 0:
        raise WeightSharingError(f"epochs must be >= 0, got {epochs}")
    if not math.isfinite(lr) or lr < 0:
        raise WeightSharingError(f"lr must be a finite number >= 0, got {lr}")
    if bits is not None:
        names = list(share_(model, bits))
    else:
        comp = find_compressible_layers(model)
        names = list(comp) if layers is None else list(layers)
        unknown = [n for n in names if n not in comp]
        if unknown:
            raise WeightSharingError(f"no Conv1d/Conv2d/Linear layer named {unknown}; layers are {list(comp)}")
        check_finite(model, names)
    if epochs == 0 or not names:
        return model
    criterion = criterion if criterion is not None else nn.CrossEntropyLoss()
    model.to(device)
    keep_zeros = MaskedPruner()
    attach_shared_(model, names)
    try:
        cents = [find_compressible_layers(model)[n].parametrizations["weight"][0].centroids for n in names]
        cent_ids = {id(c) for c in cents}
        others = []
        if train_other:
            others = [p for pn, p in model.named_parameters()
                      if p.requires_grad and id(p) not in cent_ids and not pn.endswith(".original")]
        opt = make_optimizer(cents + others, optimizer, lr)
        # the pruned zeros of the layers trained as plain floats stay zero (shared layers keep theirs)
        if train_other:
            for n, m in find_compressible_layers(model).items():
                if n not in names and bool((m.weight == 0).any()):
                    keep_zeros.set_mask(f"{n}.weight", m.weight, m.weight.detach() != 0)
        keep_zeros.attach(opt)
        was_training = model.training
        model.train()
        seen = 0
        for epoch in range(epochs):
            for b, batch in enumerate(train_loader):
                if max_batches is not None and b >= max_batches:
                    break
                x, y = split_batch(batch)
                opt.zero_grad(set_to_none=True)
                loss = criterion(model(x.to(device)), y.to(device))
                if not bool(torch.isfinite(loss.detach())):
                    raise WeightSharingError(f"fine_tune_shared_: NaN/inf loss at epoch {epoch + 1}, batch {b + 1}; "
                                             "lower lr")
                loss.backward()
                opt.step()
                seen += 1
            if seen == 0:
                raise WeightSharingError("fine_tune_shared_: train_loader yielded no batches")
            logger.info("fine_tune_shared_ epoch %d/%d: last loss %.4f", epoch + 1, epochs, float(loss.detach()))
        model.train(was_training)
    finally:
        keep_zeros.detach()
        detach_quantizers_(model)
    return model
