"""Byte budgets: parsing sizes, and the one owner of the bytes of a layer.

The compressor never counts bytes on its own.  The authoritative number is
``codegen.weight_bytes(model, example_input, representation).total`` -- exactly the
``MODEL_WEIGHT_BYTES`` the emitted C will have.  For fast what-if estimates during
allocation it uses codegen's per-encoding formulas (``codegen.formats.ENCODINGS[...].nbytes``,
``encoded_nbytes``) per compressible weight plus the "fixed" bytes (biases, folded BN,
non-compressible layers) measured once with ``weight_bytes``; every decision that matters is
re-checked with ``weight_bytes``.

This module owns the bytes; nothing else in sparsecomp imports a byte count from codegen or computes one:

- :class:`QuantPlan` says only *how* each compressible layer is stored (float, int8, codebook with
  bits) and applies that to a model; it never counts bytes.
- :class:`LayerBytes` is the per-layer owner: each compressible layer's geometry, how it is stored
  (representation + plan) and ``nbytes(name, nnz, kind)`` -- including the rule that under "auto"
  codegen may still store a layer float where that is smaller, and that "huffman" is estimated with its
  codebook forms (an upper bound).  ``bits.make_plan``/``joint_bits`` (bytes of each candidate kind) and
  compress.py (``_budget_rank``, ``_spend_slack``, ``_reachable_floor``, ``_layer_rows``) ask it.
- :class:`ByteModel` is a :class:`LayerBytes` plus the fixed bytes measured by codegen: whole-model
  estimates for a fixed structure (the allocator's ``layer_bytes``).
- ``exact_weight_bytes`` (codegen's count, on a copy stored as planned) and ``exit_heads_bytes``.

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
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .pruning import find_compressible_layers, weight_matrix_shape
from .weight_sharing import check_bits as _check_bits
from .weight_sharing import check_finite

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

    With a :class:`QuantPlan` (int8/codebook/auto), the bytes of a copy quantized or weight-shared as
    planned (the model itself is not changed)."""
    if plan is not None:
        return exact_weight_bytes(plan.apply_(copy.deepcopy(model)), example_input, plan.representation)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _codegen().weight_bytes(model, example_input, representation=representation)
    finally:
        model.train(was_training)


def exit_heads_bytes(exits: nn.Module, representation: str) -> int:
    """Exact bytes codegen emits for the exit heads of an early-exit model (``codegen.early_exit``)."""
    from codegen.early_exit import exit_weight_bytes

    return int(exit_weight_bytes(exits, representation))


# --------------------------------------------------------------------------------------
# how each layer is stored
# --------------------------------------------------------------------------------------
@dataclass
class QuantPlan:
    """How each compressible layer is stored: ``layers[name] = ("int8", None)``, ``("codebook", bits)``
    or ``("csr", None)`` (float).  ``default`` applies to layers not listed (e.g. new factor layers).
    The plan only says *how*; its bytes are :class:`LayerBytes`' (and ``exact_weight_bytes(..., plan)``).
    Made by :func:`sparsecomp.bits.make_plan`, which measures the accuracy of each choice (``drops``)."""

    representation: str
    layers: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    default: tuple[str, int | None] = ("csr", None)
    sharing: str = "cws"  # how codebook layers get their values: sparsecomp.sham.METHODS
    # measured validation-accuracy drop of each layer stored alone as (kind, bits) (float: 0), the rest float
    drops: dict[str, dict[tuple[str, int | None], float]] = field(default_factory=dict)

    def kind(self, name: str) -> tuple[str, int | None]:
        return self.layers.get(name, self.default)

    def apply_(self, model: nn.Module) -> nn.Module:
        """Quantize (int8) or share (codebook) the weights in place, as planned."""
        from codegen.quantize import int8_quantize_array

        from .sham import share

        comp = find_compressible_layers(model)
        check_finite(model, [n for n in comp if self.kind(n)[0] != "csr"])
        with torch.no_grad():
            for name, m in comp.items():
                kind, bits = self.kind(name)
                w = m.weight.detach().cpu().numpy()
                if kind == "int8":
                    new = int8_quantize_array(w.astype("float64"))
                elif kind == "codebook":
                    new = share(w, int(bits), self.sharing)
                else:
                    continue
                m.weight.copy_(torch.from_numpy(new).to(m.weight))
        return model

    def describe(self) -> str:
        return ", ".join(f"{n}={k}{'' if b is None else f'/{b}b'}" for n, (k, b) in self.layers.items())


# --------------------------------------------------------------------------------------
# the bytes of a layer
# --------------------------------------------------------------------------------------
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


Kind = tuple[str, int | None]  # (storage kind, codebook bits)


class LayerBytes:
    """The one owner of the bytes of a model's compressible layers.

    Built from a model (or a ``{name: layer}`` mapping of its compressible layers) it holds each layer's
    geometry (``layers``), its nonzeros when built (``nnz``) and how it is stored: ``representation``
    and, for the value-dependent ones (int8/codebook/auto/huffman), the :class:`QuantPlan`.

    - ``nbytes(name, nnz)``: the layer as stored -- the plan's kind, where under "auto" codegen may still
      pick float when that is smaller; without a plan, codegen's ``encoded_nbytes`` of the representation.
    - ``nbytes(name, nnz, kind)``: the layer if it were stored as ``kind`` (``("int8", None)``,
      ``("codebook", bits)``, ``("csr", None)``, ``("dense", None)``), e.g. to compare a plan's options.
    - ``shape_nbytes(rows, cols, nnz, kind)``: a layer that does not exist yet (factors of a separation);
      ``kind=None`` stores it as a layer missing from the plan would be (``plan.default``).
    - ``estimated_as``: the (representation, plan) whose exact bytes the estimates model -- "huffman"'s
      value-dependent coded entries are estimated with the codebook forms, an upper bound.

    >>> lb = LayerBytes(nn.Sequential(nn.Linear(300, 10)))
    >>> lb.nbytes("0", 300), lb.nbytes("0", 300, ("int8", None)), lb.format_of("0", 300)
    (1822, 568, 'csr')
    """

    def __init__(self, layers: nn.Module | Mapping[str, nn.Module], representation: str = "csr",
                 plan: QuantPlan | None = None):
        mods = find_compressible_layers(layers) if isinstance(layers, nn.Module) else dict(layers)
        self.representation = representation
        self.plan = plan
        self.layers: dict[str, LayerGeom] = {}
        self.nnz: dict[str, int] = {}
        for name, mod in mods.items():
            rows, cols = weight_matrix_shape(mod)
            self.layers[name] = LayerGeom(name, rows, cols, type(mod).__name__)
            self.nnz[name] = int((mod.weight != 0).sum())

    def kind(self, name: str) -> Kind:
        """How layer ``name`` is stored: the plan's kind, or the representation itself without a plan."""
        return self.plan.kind(name) if self.plan is not None else (self.representation, None)

    def nbytes(self, name: str, nnz: int | None = None, kind: Kind | None = None) -> int:
        """Bytes of layer ``name`` with ``nnz`` nonzeros (default: its count when built), stored as planned
        or, with ``kind``, as that kind."""
        g = self.layers[name]
        nnz = self.nnz[name] if nnz is None else int(nnz)
        if kind is not None:
            return layer_nbytes(g.rows, g.cols, nnz, *kind)
        if self.plan is None:
            return encoded_nbytes(g.rows, g.cols, nnz, self.representation)
        size = layer_nbytes(g.rows, g.cols, nnz, *self.plan.kind(name))
        if self.plan.representation == "auto":  # codegen may still pick float where it is smaller
            size = min(size, layer_nbytes(g.rows, g.cols, nnz, "csr"))
        return size

    def shape_nbytes(self, rows: int, cols: int, nnz: int, kind: Kind | None = None) -> int:
        """Bytes of a [rows, cols] weight that is not (yet) a layer of the model, stored as ``kind``
        (default: as a layer the plan does not list, ``plan.default``; the representation without a plan)."""
        if kind is None:
            kind = self.plan.default if self.plan is not None else (self.representation, None)
        return layer_nbytes(rows, cols, int(nnz), *kind)

    def format_of(self, name: str, nnz: int | None = None) -> str:
        """"dense" or the sparse representation, whichever codegen picks (the smaller)."""
        if self.representation == "dense":
            return "dense"
        g = self.layers[name]
        nnz = self.nnz[name] if nnz is None else int(nnz)
        return self.representation if self.nbytes(name, nnz) < layer_nbytes(g.rows, g.cols, nnz, "dense") \
            else "dense"

    @property
    def estimated_as(self) -> tuple[str, QuantPlan | None]:
        """The representation and plan whose exact bytes ``nbytes`` estimates: the model's own, except
        "huffman" (value-dependent coded entries, never larger than the codebook forms), estimated as
        "codebook" -- an upper bound, so an allocation never plans on bytes the coding might not save."""
        if self.plan is not None and self.plan.representation == "huffman":
            return "codebook", dataclasses.replace(self.plan, representation="codebook")
        return self.representation, self.plan


class ByteModel:
    """Fast, exact-per-array byte estimates for a fixed model structure: a :class:`LayerBytes`
    (``store``) plus the bytes that do not depend on the nonzeros (``fixed``).

    ``fixed`` is measured as ``weight_bytes(...).total`` (of ``store.estimated_as``) minus the
    estimated bytes of every compressible weight at its current nonzero count, so
    ``estimate(current nnz)`` equals that exact total by construction.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, representation: str, plan=None):
        self.store = LayerBytes(model, representation, plan)
        self.representation = representation
        self.plan = plan
        self.layers = self.store.layers
        report = exact_weight_bytes(model, example_input, representation, plan)
        self.exact_total = int(report.total)
        self.exact_layers = {k: int(v) for k, v in dict(getattr(report, "layers", {})).items()}
        ref = self.exact_total
        rep, ref_plan = self.store.estimated_as
        if (rep, ref_plan) != (representation, plan):
            # the fixed bytes measured the way the layers are estimated; the exact count of the pruned model
            # (calibration) claims what the difference saves
            ref = int(exact_weight_bytes(model, example_input, rep, ref_plan).total)
        self.fixed = ref - sum(self.store.nbytes(n) for n in self.layers)

    def layer_bytes(self, name: str, nnz: int) -> int:
        return self.store.nbytes(name, nnz)

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
        return self.store.format_of(name, nnz)


def current_nnz(model: nn.Module) -> dict[str, int]:
    """Nonzero count of the weight of every compressible layer."""
    return {n: int((m.weight != 0).sum()) for n, m in find_compressible_layers(model).items()}
