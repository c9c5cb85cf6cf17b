"""sHAM's weight-sharing quantizers beside CWS: each maps the nonzero weights of a layer onto at most
2^bits float32 values (zeros kept), so the layer is stored exactly by codegen's codebook encodings
(b-bit indices into the values, dense / CSR / relative-index) and the compressor budgets it with the
same exact byte counts as CWS.

* ``cws``  clustering-based weight sharing: linear-initialized k-means (``codegen.quantize.share_array``).
* ``pws``  probabilistic weight sharing: 2^bits uniformly spaced representatives between the smallest and
           largest nonzero weight, each weight rounded stochastically to one of its two neighbours with the
           probability that keeps it unbiased (E[q(w)] = w); seeded, so deterministic.
* ``uq``   uniform quantization: the same 2^bits uniform representatives, nearest one (2 to 8 bits).
* ``ecsq`` entropy-constrained scalar quantization (Chou, Lookabaugh & Gray 1989): Lloyd iterations that
           assign each weight to the representative minimizing (w - c)^2 + lambda * (-log2 p(c)), p the
           share of weights on c; empty representatives are dropped, so it often ends with fewer values
           than 2^bits (fewer index bits in the codebook encodings, shorter Huffman codes).
           ``lambda`` = ``ECSQ_LAMBDA`` x the variance of the weights.

``compress_NN_models(..., representation="pws" | "uq" | "ecsq" | "cws")`` runs the codebook pipeline
with that quantizer (``sparsecomp.bits.QuantPlan.sharing``); ``share(w, bits, method)`` applies one.

    >>> import numpy as np
    >>> w = np.random.default_rng(0).normal(size=(8, 16)).astype(np.float32)
    >>> [int(np.unique(share(w, 3, m)).size) <= 8 for m in METHODS]
    [True, True, True, True]
"""

from __future__ import annotations

import numpy as np

ECSQ_LAMBDA = 0.05
ECSQ_ITERATIONS = 30
PWS_SEED = 0
_CHUNK = 1 << 16

__all__ = ["METHODS", "ecsq", "pws", "share", "uq"]


def _levels(vals: np.ndarray, k: int) -> np.ndarray:
    lo, hi = float(vals.min()), float(vals.max())
    return np.linspace(lo, hi, k) if hi > lo else np.array([lo])


def _check(bits: object, method: str) -> int:
    lo = 2 if method == "uq" else 1
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not lo <= int(bits) <= 8:
        raise ValueError(f"{method}: bits must be an integer from {lo} to 8, got {bits!r}")
    return int(bits)


def _apply(w: np.ndarray, fn) -> np.ndarray:
    w32 = np.asarray(w, dtype=np.float32)
    nz = w32 != 0
    out = np.zeros_like(w32)
    if nz.any():
        out[nz] = fn(w32[nz].astype(np.float64)).astype(np.float32)
    return out


def uq(w: np.ndarray, bits: int) -> np.ndarray:
    """Nonzeros onto the nearest of 2^bits uniform levels between their min and max."""
    k = 1 << _check(bits, "uq")

    def fn(v):
        c = _levels(v, k)
        return c[np.searchsorted((c[1:] + c[:-1]) / 2, v)] if c.size > 1 else np.full_like(v, c[0])

    return _apply(w, fn)


def pws(w: np.ndarray, bits: int, seed: int = PWS_SEED) -> np.ndarray:
    """Nonzeros stochastically (unbiased) rounded to one of the two neighbouring uniform levels."""
    k = 1 << _check(bits, "pws")
    rng = np.random.default_rng(seed)

    def fn(v):
        c = _levels(v, k)
        if c.size == 1:
            return np.full_like(v, c[0])
        i = np.clip(np.searchsorted(c, v, side="right") - 1, 0, c.size - 2)
        frac = (v - c[i]) / (c[i + 1] - c[i])
        return np.where(rng.random(v.size) < frac, c[i + 1], c[i])

    return _apply(w, fn)


def ecsq(w: np.ndarray, bits: int, lam: float = ECSQ_LAMBDA, iterations: int = ECSQ_ITERATIONS) -> np.ndarray:
    """Entropy-constrained scalar quantization of the nonzeros with at most 2^bits representatives."""
    k = 1 << _check(bits, "ecsq")

    def fn(v):
        c = _levels(v, k)
        p = np.full(c.size, 1.0 / c.size)
        penalty = lam * float(v.var())
        a = np.zeros(v.size, dtype=np.int64)
        for _ in range(iterations):
            cost = -np.log2(np.maximum(p, 1e-300)) * penalty
            for s in range(0, v.size, _CHUNK):
                x = v[s:s + _CHUNK, None]
                a[s:s + _CHUNK] = np.argmin((x - c[None, :]) ** 2 + cost[None, :], axis=1)
            counts = np.bincount(a, minlength=c.size)
            used = counts > 0
            sums = np.bincount(a, weights=v, minlength=c.size)
            new_c = sums[used] / counts[used]
            new_p = counts[used] / v.size
            if used.all() and np.array_equal(new_c, c):
                break
            c, p = new_c, new_p
        c32 = c.astype(np.float32).astype(np.float64)
        cost = -np.log2(np.maximum(p, 1e-300)) * penalty
        for s in range(0, v.size, _CHUNK):
            x = v[s:s + _CHUNK, None]
            a[s:s + _CHUNK] = np.argmin((x - c32[None, :]) ** 2 + cost[None, :], axis=1)
        return c32[a]

    return _apply(w, fn)


def _cws(w: np.ndarray, bits: int) -> np.ndarray:
    from codegen.quantize import share_array

    return share_array(w, bits)


METHODS = {"cws": _cws, "pws": pws, "uq": uq, "ecsq": ecsq}


def share(w: np.ndarray, bits: int, method: str = "cws") -> np.ndarray:
    """``w`` with its nonzeros on at most 2^bits float32 values by ``method`` (cws, pws, uq, ecsq)."""
    if method not in METHODS:
        raise ValueError(f"weight-sharing method must be one of {sorted(METHODS)}, got {method!r}")
    return METHODS[method](w, int(bits))
