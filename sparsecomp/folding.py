"""Fold BatchNorm into the preceding Conv1d/Conv2d/Linear in PyTorch, in place.

codegen folds BatchNorm at emission (``codegen.passes.fold_batchnorm``), which rescales the rows
of the weight: an int8 grid or a weight-sharing codebook made before that would not survive.
Folding in PyTorch first (BatchNorm replaced by ``nn.Identity``) makes the weights the model
holds exactly the weights the C holds, so ``quantize_int8_`` / ``share_weights_`` afterwards are
emitted as they are.  The arithmetic is codegen's: scale = float32(gamma / sqrt(var + eps)),
shift = float32(beta - mean * scale), weight = float32(w * scale), bias = float32(b * scale + shift)
(float64 intermediates), so the folded model emits byte-identical weights.

The implementation lives in codegen (``codegen.quantize.fold_batchnorm_``), which also uses it for
``save_compressed_model(..., quantize=True)``; this module re-exports it for the compressor.

Example::

    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    >>> fold_batchnorm_(net)
    [('0', '1')]
    >>> type(net[1]).__name__
    'Identity'
"""

from __future__ import annotations

from codegen.quantize import FoldError, fold_batchnorm_, fold_pair_

__all__ = ["FoldError", "fold_batchnorm_", "fold_pair_"]
