"""Byte budgets: parsing sizes and asking codegen how many bytes a model will emit.

The compressor never counts bytes on its own.  The authoritative number is
``codegen.weight_bytes(model, example_input, representation).total`` -- exactly the
``MODEL_WEIGHT_BYTES`` the emitted C will have.  For fast what-if estimates during
allocation it uses ``codegen.formats.encoded_nbytes`` per compressible weight plus the
"fixed" bytes (biases, folded BN, non-compressible layers) measured once with
``weight_bytes``; every decision that matters is re-checked with ``weight_bytes``.

This module owns the bytes of a layer: ``layer_nbytes`` (per kind: float, int8, codebook with bits),
``ByteModel`` (estimates for a structure, with a :class:`sparsecomp.bits.QuantPlan` saying only how
each layer is stored) and ``exact_weight_bytes`` (codegen's count, on a copy quantized as planned).

Example::

    >>> parse_size("100KB"), parse_size("96KiB"), parse_size(2.5)
    (100000, 98304, 2500)
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import re
from dataclasses import dataclass

import torch
import torch.nn as nn

from .pruning import find_compressible_layers, weight_matrix_shape
from .weight_sharing import check_bits as _check_bits

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


def _expected_entries(rows: int, cols: int, nnz: int, gap_bits: int) -> int:
    """Entries (nonzeros + fillers) of a relative-index stream when the nonzeros are spread at
    random: a zero run before a nonzero is geometric, P(run >= j 2^g) = (1 - d)^(j 2^g)."""
    if nnz <= 0:
        return 0
    d = min(1.0, nnz / max(1, rows * cols))
    q = (1.0 - d) ** (1 << gap_bits)
    return int(math.ceil(nnz * (1.0 + (q / (1.0 - q) if q < 1 else 0.0))))


def layer_nbytes(rows: int, cols: int, nnz: int, kind: str, bits: int | None = None) -> int:
    """Bytes of a [rows, cols] weight with ``nnz`` nonzeros stored as ``kind``: "dense"/"csr"
    (exact), "int8" (exact for int8 and int8_csr; int8_rel with the entries of randomly placed
    nonzeros) or "codebook" with ``bits`` (2^bits shared values, same estimate of the entries).
    Every formula is codegen's (``codegen.formats.ENCODINGS[...].nbytes``)."""
    from codegen.formats import ENCODINGS, GAP_BITS, MAX_CODEBOOK

    if kind in ("dense", "csr"):
        return encoded_nbytes(rows, cols, nnz, kind)
    if kind == "int8":
        sizes = [ENCODINGS["int8"].nbytes(rows, cols, nnz), ENCODINGS["int8_csr"].nbytes(rows, cols, nnz)]
        sizes += [ENCODINGS["int8_rel"].nbytes(rows, cols, nnz, entries=_expected_entries(rows, cols, nnz, g),
                                               gap_bits=g) for g in GAP_BITS]
        return min(sizes)
    if kind == "codebook":
        k = min(1 << _check_bits(bits), max(nnz, 1))
        sizes = [ENCODINGS["codebook"].nbytes(rows, cols, nnz, k=min(MAX_CODEBOOK, k + (nnz < rows * cols))),
                 ENCODINGS["codebook_csr"].nbytes(rows, cols, nnz, k=k)]
        for g in GAP_BITS:
            e = _expected_entries(rows, cols, nnz, g)
            kk = k + (e > nnz)
            if kk <= MAX_CODEBOOK:
                sizes.append(ENCODINGS["codebook_rel"].nbytes(rows, cols, nnz, k=kk, entries=e, gap_bits=g))
        return min(sizes)
    raise ValueError(f"unknown layer kind {kind!r}")


def exact_weight_bytes(model: nn.Module, example_input: torch.Tensor, representation: str, plan=None):
    """``codegen.weight_bytes`` on ``model`` (the authoritative ``MODEL_WEIGHT_BYTES``).

    With a :class:`sparsecomp.bits.QuantPlan` (int8/codebook/auto), the bytes of a copy quantized
    or weight-shared as planned (the model itself is not changed)."""
    if plan is not None:
        return exact_weight_bytes(plan.apply_(copy.deepcopy(model)), example_input, plan.representation)
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
        ref = self.exact_total
        if plan is not None and plan.representation == "huffman":
            # Huffman-coded entries are value-dependent and never larger than the codebook forms: estimate
            # with the codebook bytes (an upper bound; the fixed bytes measured the same way), and let the exact
            # count of the pruned model (calibration) claim what the coding saves
            ref = int(exact_weight_bytes(model, example_input, "codebook",
                                         dataclasses.replace(plan, representation="codebook")).total)
        self.fixed = ref - sum(self.layer_bytes(n, nnz[n]) for n in self.layers)

    def layer_bytes(self, name: str, nnz: int) -> int:
        g = self.layers[name]
        if self.plan is not None:
            kind, bits = self.plan.kind(name)
            size = layer_nbytes(g.rows, g.cols, int(nnz), kind, bits)
            if self.plan.representation == "auto":  # codegen may still pick float where it is smaller
                size = min(size, layer_nbytes(g.rows, g.cols, int(nnz), "csr"))
            return size
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
