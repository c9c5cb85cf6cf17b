"""Weight quantization and weight sharing, in place, so that the int8 and codebook encodings of
``codegen.formats`` represent the model's weights exactly (PyTorch stays the oracle).

* ``quantize_int8_(model)``: symmetric per-output-channel int8 fake quantization of every
  Conv1d/Conv2d/Linear weight: scale[o] = float32(max |w[o]| / 127), q = round(w / scale) in
  [-127, 127], and the weight becomes float32(q * scale) exactly. The ``int8`` encodings
  recover q and scale from such a tensor.
* ``share_weights_(model, bits)``: k-means weight sharing per layer (Deep Compression): the
  nonzero weights of a layer are replaced by the nearest of at most 2^bits float32 centroids
  (linear initialization between the smallest and largest nonzero weight, Lloyd iterations).
  Zeros stay zero, so pruning is kept; a layer then holds at most 2^bits distinct nonzero values
  (2^bits + 1 with zero), which the ``codebook`` encodings store with b-bit indices.

Both work on the weights as the model holds them. codegen folds BatchNorm into the preceding
convolution before encoding, which rescales its rows: fold BatchNorm first (``fold_batchnorm_``, with
codegen's own arithmetic, so the folded model emits bit-identical weights), then quantize or share.
``quantized_copy`` does all of it on a copy (``save_compressed_model(..., quantize=True)``).

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Linear(8, 4))
>>> _ = share_weights_(net, 2)
>>> len(torch.unique(net[0].weight)) <= 4
True
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Iterator, Mapping

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from codegen import formats
from codegen.errors import CodegenError
from codegen.trace import LeafTracer

log = logging.getLogger(__name__)

WEIGHTED = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)


def weight_layers(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module]]:
    """(module path, module) of every Linear/Conv1d/Conv2d with a weight, in model order."""
    for name, m in model.named_modules():
        if isinstance(m, WEIGHTED) and getattr(m, "weight", None) is not None:
            yield name, m


def _weight_numpy(name: str, m: torch.nn.Module) -> np.ndarray:
    w = m.weight.detach().to("cpu", torch.float64).numpy()
    bad = int(w.size - np.count_nonzero(np.isfinite(w)))
    if bad:
        raise CodegenError(
            f"layer '{name}': the weight has {bad} non-finite value(s) (NaN or inf); "
            "retrain or repair the weights before quantizing"
        )
    return w


def _store(m: torch.nn.Module, w: np.ndarray) -> None:
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)).reshape(m.weight.shape).to(m.weight.dtype))


def int8_quantize_array(w: np.ndarray) -> np.ndarray:
    """Symmetric per-row (first dim) int8 fake quantization: float32(q * scale), q in [-127, 127]."""
    w2 = np.asarray(w, dtype=np.float64).reshape(w.shape[0], -1)
    scale = (np.abs(w2).max(axis=1, initial=0.0) / 127.0).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1)).astype(np.float64)
    q = np.clip(np.rint(w2 / safe[:, None]), -127, 127).astype(np.float32)
    return (q * scale[:, None]).astype(np.float32).reshape(w.shape)


def quantize_int8_(model: torch.nn.Module) -> torch.nn.Module:
    """Fake-quantizes every Linear/Conv1d/Conv2d weight to int8, symmetric per output channel,
    in place: afterwards weight == float32(q * scale[o]) exactly. Returns the model.

    >>> net = torch.nn.Sequential(torch.nn.Linear(6, 3))
    >>> _ = quantize_int8_(net)
    >>> from codegen.formats import int8_grid
    >>> isinstance(int8_grid(net[0].weight.detach().numpy()), tuple)
    True
    """
    for name, m in weight_layers(model):
        wq = int8_quantize_array(_weight_numpy(name, m))
        if isinstance(formats.int8_grid(wq), int):  # pragma: no cover - guarded by tests
            raise CodegenError(f"layer '{name}': int8 quantization did not give an exact grid (bug)")
        _store(m, wq)
    return model


def kmeans_1d(values: np.ndarray, k: int, iterations: int = 50) -> np.ndarray:
    """Sorted float32 centroids (at most k, empty clusters dropped) of 1-D ``values`` by Lloyd's
    algorithm from a linear initialization between min and max. Deterministic."""
    v = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    c = np.linspace(v[0], v[-1], k)
    for _ in range(iterations):
        a = np.searchsorted((c[1:] + c[:-1]) / 2, v)
        sums = np.bincount(a, weights=v, minlength=c.size)
        counts = np.bincount(a, minlength=c.size)
        new = np.where(counts > 0, sums / np.maximum(counts, 1), c)
        if np.array_equal(new, c):
            break
        c = new
    a = np.searchsorted((c[1:] + c[:-1]) / 2, v)
    used = np.bincount(a, minlength=c.size) > 0
    return np.unique(c[used].astype(np.float32))


def share_array(w: np.ndarray, bits: int) -> np.ndarray:
    """The nonzeros of ``w`` replaced by the nearest of at most 2^bits k-means centroids (float32);
    unchanged when it already has at most 2^bits distinct nonzero values."""
    w32 = np.asarray(w, dtype=np.float32)
    nz = w32 != 0
    vals = w32[nz]
    if vals.size == 0 or np.unique(vals).size <= (1 << bits):
        return w32.copy()
    c = kmeans_1d(vals, 1 << bits)
    a = np.searchsorted((c[1:].astype(np.float64) + c[:-1]) / 2, vals.astype(np.float64))
    out = np.zeros_like(w32)
    out[nz] = c[a]
    return out


def share_weights_(model: torch.nn.Module, bits: int | Mapping[str, int]) -> torch.nn.Module:
    """k-means weight sharing of every Linear/Conv1d/Conv2d weight, in place (see the module
    docstring). ``bits`` (1..8): one width for every layer, or {module path: bits} for the layers
    to share (the others are left alone). Returns the model.

    >>> net = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> _ = share_weights_(net, {"0": 3})
    >>> len(torch.unique(net[0].weight)) <= 8
    True
    """
    layers = list(weight_layers(model))
    if isinstance(bits, Mapping):
        known = {n for n, _ in layers}
        unknown = sorted(set(bits) - known)
        if unknown:
            raise CodegenError(
                f"share_weights_: no Linear/Conv1d/Conv2d layer named {unknown}; layers are {sorted(known)}"
            )
        plan = [(n, m, bits[n]) for n, m in layers if n in bits]
    else:
        plan = [(n, m, bits) for n, m in layers]
    for name, _, b in plan:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or not 1 <= int(b) <= 8:
            raise CodegenError(
                f"layer '{name}': weight sharing bits must be an integer from 1 to 8 (2 to 256 shared "
                f"values), got {b!r}"
            )
    for name, m, b in plan:
        w = _weight_numpy(name, m)
        _store(m, share_array(w, int(b)))
        log.debug("shared layer %s with %d bits", name, b)
    return model


# ---- BatchNorm folding in PyTorch (the arithmetic of codegen/ops/batchnorm.py + passes.fold_batchnorm) ----

_BN_PAIRS = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Linear: nn.BatchNorm1d}


class FoldError(CodegenError, ValueError):
    """The model cannot be traced to find Conv/Linear -> BatchNorm pairs."""


@torch.no_grad()
def fold_pair_(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Folds ``bn``'s running statistics and affine parameters into ``layer`` (in place), exactly as
    codegen does at emission: scale = float32(gamma / sqrt(var + eps)), shift = float32(beta - mean *
    scale) (float64 intermediates, as ``codegen.ops.batchnorm``), weight = float32(w * scale), bias =
    float32(b * scale + shift) (float64, as ``codegen.passes.fold_batchnorm``)."""
    mean = bn.running_mean.detach().double()
    var = bn.running_var.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    scale64 = gamma / torch.sqrt(var + bn.eps)
    scale = scale64.float().double()  # codegen rounds scale and shift to float32 before folding
    shift = (beta - mean * scale64).float().double()
    w = layer.weight
    shape = (-1,) + (1,) * (w.dim() - 1)
    new_w = (w.detach().double() * scale.view(shape)).to(w.dtype)
    b = layer.bias.detach().double() if layer.bias is not None else torch.zeros_like(scale)
    new_b = (b * scale + shift).to(w.dtype)
    w.copy_(new_w)
    if layer.bias is None:
        layer.bias = nn.Parameter(new_b.to(w.device), requires_grad=w.requires_grad)
    else:
        layer.bias.copy_(new_b)


def _replace_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, new)


def fold_batchnorm_(model: nn.Module) -> list[tuple[str, str]]:
    """Folds every BatchNorm1d/2d that directly follows a Conv1d/Conv2d/Linear (and is that layer's
    only user, each module called once) into the layer, replacing the BatchNorm by ``nn.Identity``.

    Uses the running statistics (eval-mode BatchNorm). Returns the folded ``(layer, batchnorm)``
    module paths. BatchNorms without running statistics, or after anything else, are left alone.

    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    >>> fold_batchnorm_(net)
    [('0', '1')]
    >>> type(net[1]).__name__
    'Identity'
    """
    try:
        graph = LeafTracer().trace(model)
    except Exception as exc:  # noqa: BLE001 - torch.fx raises many kinds
        raise FoldError(
            f"fold_batchnorm_: torch.fx cannot trace {type(model).__name__} ({exc}); BatchNorm folding needs "
            "an fx-traceable model"
        ) from exc
    modules = dict(model.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    folded = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.modules.batchnorm._BatchNorm):
            continue
        bn = modules[node.target]
        src = node.args[0] if node.args else None
        if not isinstance(src, fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        layer = modules.get(src.target)
        pair = next((b for t, b in _BN_PAIRS.items() if type(layer) is t), None)
        if pair is None or type(bn) is not pair or calls[src.target] != 1 or calls[node.target] != 1:
            continue
        if bn.running_mean is None or bn.running_var is None:
            log.warning("BatchNorm %s has no running statistics; not folded", node.target)
            continue
        if bn.num_features != layer.weight.shape[0]:
            continue
        fold_pair_(layer, bn)
        _replace_module(model, node.target, nn.Identity())
        folded.append((src.target, node.target))
        log.info("folded BatchNorm %s into %s", node.target, src.target)
    return folded


QUANTIZE_REPRESENTATIONS = ("int8", "codebook")


def quantized_copy(model: nn.Module, representation: str, bits: int = 4) -> tuple[nn.Module, list[tuple[str, str]]]:
    """A copy of ``model`` (eval, float32, CPU) with BatchNorm folded (``fold_batchnorm_``) and then its
    weights quantized for ``representation``: "int8" (``quantize_int8_``) or "codebook"
    (``share_weights_`` with ``bits``). Returns the copy and the folded (layer, batchnorm) pairs. The
    model itself is not changed."""
    if representation not in QUANTIZE_REPRESENTATIONS:
        raise CodegenError(
            f"quantize=True quantizes the weights for representation 'int8' or 'codebook', not {representation!r}; "
            "choose one of those (or drop quantize=True to emit the weights the model has)"
        )
    try:
        q = copy.deepcopy(model)
    except Exception as exc:  # pragma: no cover - exotic models
        raise CodegenError(f"could not copy the model to quantize it: {exc}") from exc
    q = q.to("cpu").float().eval()
    folded = fold_batchnorm_(q)
    if representation == "int8":
        quantize_int8_(q)
    else:
        share_weights_(q, bits)
    return q, folded
