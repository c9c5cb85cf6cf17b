"""Byte budgets: parsing sizes and asking codegen how many bytes a model will emit.

The compressor never counts bytes on its own.  The authoritative number is
``codegen.weight_bytes(model, example_input, representation).total`` -- exactly the
``MODEL_WEIGHT_BYTES`` the emitted C will have.  For fast what-if estimates during
allocation it uses ``codegen.formats.encoded_nbytes`` per compressible weight plus the
"fixed" bytes (biases, folded BN, non-compressible layers) measured once with
``weight_bytes``; every decision that matters is re-checked with ``weight_bytes``.

Example::

    >>> parse_size("100KB"), parse_size("96KiB"), parse_size(2.5)
    (100000, 98304, 2500)
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

import torch
import torch.nn as nn

from .pruning import find_compressible_layers, weight_matrix_shape

logger = logging.getLogger(__name__)

_UNITS = {"": 1000, "b": 1, "kb": 1000, "k": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2}


def parse_size(size: int | float | str) -> int:
    """Budget in bytes from a number of KB (1 KB = 1000 bytes) or a string like "100KB", "96KiB", "512B".

    Raises ``ValueError`` for non-positive or unparsable sizes.
    """
    if isinstance(size, bool):
        raise ValueError(f"target_size must be a number of KB or a string like '100KB', got {size!r}")
    if isinstance(size, (int, float)):
        value, unit = float(size), ""
    elif isinstance(size, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*", size)
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"cannot parse target_size {size!r}; use e.g. 100, '100KB', '96KiB' or '4096B'")
        value, unit = float(m.group(1)), m.group(2).lower()
    else:
        raise ValueError(f"target_size must be a number of KB or a string like '100KB', got {type(size).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"target_size must be positive, got {size!r}")
    return int(math.floor(value * _UNITS[unit] + 1e-9))


def _codegen():
    try:
        import codegen
        import codegen.formats  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "sparsecomp needs the codegen package (same distribution) to count emitted bytes"
        ) from exc
    return codegen


def encoded_nbytes(rows: int, cols: int, nnz: int, representation: str) -> int:
    """Exact bytes of one weight tensor viewed as ``[rows, cols]`` with ``nnz`` nonzeros (codegen)."""
    return int(_codegen().formats.encoded_nbytes(rows, cols, nnz, representation))


def exact_weight_bytes(model: nn.Module, example_input: torch.Tensor, representation: str, plan=None):
    """``codegen.weight_bytes`` on ``model`` (the authoritative ``MODEL_WEIGHT_BYTES``).

    With a :class:`sparsecomp.bits.QuantPlan` (int8/codebook/auto), the bytes of a copy quantized
    or weight-shared as planned (the model itself is not changed)."""
    if plan is not None:
        return plan.exact_bytes(model, example_input)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _codegen().weight_bytes(model, example_input, representation=representation)
    finally:
        model.train(was_training)


@dataclass
class LayerGeom:
    """Geometry of one compressible weight as codegen encodes it."""

    name: str
    rows: int
    cols: int
    op: str

    @property
    def numel(self) -> int:
        return self.rows * self.cols


class ByteModel:
    """Fast, exact-per-array byte estimates for a fixed model structure.

    ``fixed`` is measured as ``weight_bytes(...).total`` minus the encoded bytes of every
    compressible weight at its current nonzero count, so ``estimate(current nnz)`` equals the
    exact total by construction.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, representation: str, plan=None):
        self.representation = representation
        self.plan = plan  # QuantPlan: per-layer int8/codebook estimates (value-dependent representations)
        self.layers: dict[str, LayerGeom] = {}
        for name, mod in find_compressible_layers(model).items():
            rows, cols = weight_matrix_shape(mod)
            self.layers[name] = LayerGeom(name, rows, cols, type(mod).__name__)
        report = exact_weight_bytes(model, example_input, representation, plan)
        self.exact_total = int(report.total)
        self.exact_layers = {k: int(v) for k, v in dict(getattr(report, "layers", {})).items()}
        nnz = current_nnz(model)
        self.fixed = self.exact_total - sum(self.layer_bytes(n, nnz[n]) for n in self.layers)

    def layer_bytes(self, name: str, nnz: int) -> int:
        g = self.layers[name]
        if self.plan is not None:
            return self.plan.estimate(name, g.rows, g.cols, int(nnz))
        return encoded_nbytes(g.rows, g.cols, int(nnz), self.representation)

    def estimate(self, nnz: dict[str, int]) -> int:
        """Total bytes if each compressible weight had ``nnz[name]`` nonzeros."""
        return self.fixed + sum(self.layer_bytes(n, nnz[n]) for n in self.layers)

    def floor(self, min_nnz_per_row: int = 1) -> int:
        """Smallest size reachable by pruning: every compressible weight keeps
        ``min_nnz_per_row`` nonzeros per output row (the fixed bytes stay)."""
        return self.fixed + sum(
            self.layer_bytes(n, min(g.numel, g.rows * min_nnz_per_row)) for n, g in self.layers.items()
        )

    def format_of(self, name: str, nnz: int) -> str:
        """"dense" or the sparse representation, whichever codegen picks (the smaller)."""
        g = self.layers[name]
        if self.representation == "dense":
            return "dense"
        dense = encoded_nbytes(g.rows, g.cols, int(nnz), "dense")
        return self.representation if self.layer_bytes(name, nnz) < dense else "dense"


def current_nnz(model: nn.Module) -> dict[str, int]:
    """Nonzero count of the weight of every compressible layer."""
    return {n: int((m.weight != 0).sum()) for n, m in find_compressible_layers(model).items()}
