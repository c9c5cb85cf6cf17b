"""Empirical variational Bayesian matrix factorization (EVBMF) for rank selection.

Implements the analytic global solution of Nakajima, Sugiyama, Babacan & Tomioka,
"Global analytic solution of fully-observed variational Bayesian matrix factorization",
JMLR 14 (2013), with the noise variance estimated by a bounded 1-D minimisation (scipy).
Used to pick Tucker-2 ranks of convolution kernels (Kim et al., ICLR 2016).

Example::

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> Y = rng.normal(size=(40, 3)) @ rng.normal(size=(3, 60)) + 0.1 * rng.normal(size=(40, 60))
    >>> evbmf_rank(Y)
    3
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

logger = logging.getLogger(__name__)


@dataclass
class EVBMFResult:
    """Posterior mean factorization ``Y ~ U @ diag(s) @ V.T`` and the noise variance."""

    U: np.ndarray
    s: np.ndarray
    V: np.ndarray
    sigma2: float

    @property
    def rank(self) -> int:
        return int(self.s.shape[0])


def _tau(x: np.ndarray, alpha: float) -> np.ndarray:
    return 0.5 * (x - (1 + alpha) + np.sqrt(np.maximum((x - (1 + alpha)) ** 2 - 4 * alpha, 0.0)))


def _evb_sigma2_objective(
    sigma2: float, L: int, M: int, s: np.ndarray, residual: float, xubar: float
) -> float:
    H = len(s)
    alpha = L / M
    x = s**2 / (M * sigma2)
    z1 = x[x > xubar]
    z2 = x[x <= xubar]
    tau_z1 = _tau(z1, alpha)
    term1 = np.sum(z2 - np.log(z2))
    term2 = np.sum(z1 - tau_z1)
    term3 = np.sum(np.log((tau_z1 + 1) / z1))
    term4 = alpha * np.sum(np.log(tau_z1 / alpha + 1))
    return float(term1 + term2 + term3 + term4 + residual / (M * sigma2) + (L - H) * np.log(sigma2))


def evbmf(Y: np.ndarray, sigma2: float | None = None, H: int | None = None) -> EVBMFResult:
    """EVBMF of a 2-D matrix; the number of retained components is the estimated rank.

    ``sigma2`` (noise variance) is estimated when not given; ``H`` caps the rank.
    Raises ``ValueError`` on non-finite or degenerate input.
    """
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim != 2 or min(Y.shape) < 1:
        raise ValueError(f"evbmf needs a non-empty 2-D matrix, got shape {Y.shape}")
    if not np.all(np.isfinite(Y)):
        raise ValueError("evbmf: matrix has NaN or Inf entries")
    transposed = Y.shape[0] > Y.shape[1]
    if transposed:
        Y = Y.T
    L, M = Y.shape
    H = L if H is None else max(1, min(int(H), L))
    alpha = L / M
    tauubar = 2.5129 * np.sqrt(alpha)

    U, s, Vt = np.linalg.svd(Y, full_matrices=False)
    U, s, V = U[:, :H], s[:H], Vt[:H].T
    if not np.any(s > 0):
        raise ValueError("evbmf: matrix is all zeros")

    residual = 0.0
    if H < L:
        residual = max(float(np.sum(Y**2) - np.sum(s**2)), 0.0)

    if sigma2 is None:
        xubar = (1 + tauubar) * (1 + alpha / tauubar)
        eH_ub = int(min(np.ceil(L / (1 + alpha)) - 1, H)) - 1
        upper_bound = (np.sum(s**2) + residual) / (L * M)
        tail = s[eH_ub + 1 :] if eH_ub + 1 < len(s) else s[-1:]
        lower_bound = max(tail[0] ** 2 / (M * xubar), float(np.mean(tail**2)) / M)
        lower_bound = max(lower_bound, upper_bound * 1e-12, np.finfo(float).tiny)
        if lower_bound >= upper_bound:
            sigma2 = float(upper_bound)
        else:
            opt = minimize_scalar(
                _evb_sigma2_objective,
                args=(L, M, s, residual, xubar),
                bounds=(lower_bound, upper_bound),
                method="bounded",
            )
            sigma2 = float(opt.x)

    threshold = np.sqrt(M * sigma2 * (1 + tauubar) * (1 + alpha / tauubar))
    pos = int(np.sum(s > threshold))
    sp = s[:pos]
    r = (L + M) * sigma2 / sp**2
    d = sp / 2 * (1 - r + np.sqrt(np.maximum((1 - r) ** 2 - 4 * L * M * sigma2**2 / sp**4, 0.0)))
    U, V = U[:, :pos], V[:, :pos]
    if transposed:
        U, V = V, U
    return EVBMFResult(U=U, s=d, V=V, sigma2=sigma2)


def evbmf_rank(Y: np.ndarray, H: int | None = None) -> int:
    """Rank of ``Y`` estimated by EVBMF (0 when the matrix looks like pure noise)."""
    return evbmf(Y, H=H).rank


def tucker2_ranks(weight: np.ndarray, min_rank: int = 1) -> tuple[int, int]:
    """VBMF ranks ``(r_out, r_in)`` of a conv kernel ``[C_out, C_in, kh, kw]`` for Tucker-2.

    Mode-0 and mode-1 unfoldings are analysed separately; each rank is clamped to
    ``[min_rank, dim]``.

    Example::

        >>> w = np.random.default_rng(1).normal(size=(16, 8, 3, 3))
        >>> r_out, r_in = tucker2_ranks(w)
        >>> 1 <= r_out <= 16 and 1 <= r_in <= 8
        True
    """
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim < 3:
        raise ValueError(f"tucker2_ranks expects a conv kernel, got shape {w.shape}")
    c_out, c_in = w.shape[0], w.shape[1]
    unfold0 = w.reshape(c_out, -1)
    unfold1 = np.moveaxis(w, 1, 0).reshape(c_in, -1)
    r_out = min(max(evbmf_rank(unfold0), min_rank), c_out)
    r_in = min(max(evbmf_rank(unfold1), min_rank), c_in)
    logger.debug("VBMF ranks for kernel %s: out=%d in=%d", w.shape, r_out, r_in)
    return r_out, r_in
