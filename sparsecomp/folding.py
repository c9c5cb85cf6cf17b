"""Fold BatchNorm into the preceding Conv1d/Conv2d/Linear in PyTorch, in place.

codegen folds BatchNorm at emission (``codegen.lower.fold_batchnorm``), which rescales the rows
of the weight: an int8 grid or a weight-sharing codebook made before that would not survive.
Folding in PyTorch first (BatchNorm replaced by ``nn.Identity``) makes the weights the model
holds exactly the weights the C holds, so ``quantize_int8_`` / ``share_weights_`` afterwards are
emitted as they are.  The arithmetic is codegen's: scale = float32(gamma / sqrt(var + eps)),
shift = float32(beta - mean * scale), weight = float32(w * scale), bias = float32(b * scale + shift)
(float64 intermediates), so the folded model emits byte-identical weights.

Example::

    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    >>> fold_batchnorm_(net)
    [('0', '1')]
    >>> type(net[1]).__name__
    'Identity'
"""

from __future__ import annotations

import logging
from collections import Counter

import torch
import torch.fx as fx
import torch.nn as nn

from .pruning import replace_module

logger = logging.getLogger(__name__)

_PAIRS = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Linear: nn.BatchNorm1d}


class FoldError(ValueError):
    """The model cannot be traced to find Conv/Linear -> BatchNorm pairs."""


def _trace(model: nn.Module) -> fx.Graph:
    from codegen.trace import LeafTracer

    try:
        return LeafTracer().trace(model)
    except Exception as exc:  # noqa: BLE001 - torch.fx raises many kinds
        raise FoldError(
            f"fold_batchnorm_: torch.fx cannot trace {type(model).__name__} ({exc}); BatchNorm folding needs "
            "an fx-traceable model (the same requirement as codegen)"
        ) from exc


@torch.no_grad()
def fold_pair_(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Fold ``bn``'s running statistics and affine parameters into ``layer`` (in place)."""
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


def fold_batchnorm_(model: nn.Module) -> list[tuple[str, str]]:
    """Fold every BatchNorm1d/2d that directly follows a Conv1d/Conv2d/Linear (and is that layer's
    only user, each module called once) into the layer, replacing the BatchNorm by ``nn.Identity``.

    Uses the running statistics (eval-mode BatchNorm).  Returns the folded ``(layer, batchnorm)``
    module paths.  BatchNorms without running statistics, or after anything else, are left alone.
    """
    graph = _trace(model)
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
        pair = next((b for t, b in _PAIRS.items() if type(layer) is t), None)
        if pair is None or type(bn) is not pair or calls[src.target] != 1 or calls[node.target] != 1:
            continue
        if bn.running_mean is None or bn.running_var is None:
            logger.warning("BatchNorm %s has no running statistics; not folded", node.target)
            continue
        if bn.num_features != layer.weight.shape[0]:
            continue
        fold_pair_(layer, bn)
        replace_module(model, node.target, nn.Identity())
        folded.append((src.target, node.target))
        logger.info("folded BatchNorm %s into %s", node.target, src.target)
    return folded
