"""Per-layer byte allocation informed by pruning sensitivity.

Given the byte cost of each layer at each density (from codegen's encoder) and the accuracy
each layer loses when pruned alone (from :mod:`sparsecomp.sensitivity`), greedily take the
pruning step with the smallest accuracy loss per byte saved until the estimate fits the
budget.  The last step is shortened to the smallest one that still fits, so the budget is
used, not overshot.  Large insensitive layers are pruned first; a small sensitive layer is
left dense if pruning it buys few bytes.

Example::

    >>> cost = lambda name, nnz: nnz * 6          # toy encoder
    >>> drop = lambda name, s: {"a": 0.0, "b": 0.5}[name] * s
    >>> alloc = allocate({"a": 100, "b": 100}, {"a": 100, "b": 100}, {"a": 1, "b": 1},
    ...                  cost, drop, fixed=0, budget=900)
    >>> alloc["a"] < alloc["b"]
    True
"""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

#: Sparsity grid the greedy search steps through.
LEVELS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.95,
          0.96, 0.97, 0.975, 0.98, 0.985, 0.99, 0.993, 0.995, 0.997, 0.998, 0.999)


class UnreachableBudget(ValueError):
    """The budget is smaller than the smallest size pruning can reach."""


def allocate(
    numel: dict[str, int],
    nnz: dict[str, int],
    min_nnz: dict[str, int],
    cost: Callable[[str, int], int],
    drop: Callable[[str, float], float],
    fixed: int,
    budget: int,
    tie_break: float = 1e-4,
) -> dict[str, int]:
    """Target nonzero count per layer so that ``fixed + sum(cost(name, nnz)) <= budget``.

    ``nnz`` is the current count (targets never exceed it), ``min_nnz`` the floor per layer,
    ``cost(name, nnz)`` the exact encoded bytes, ``drop(name, sparsity)`` the predicted
    accuracy loss of the layer pruned alone.  Raises :class:`UnreachableBudget`.
    """
    cur = {n: int(v) for n, v in nnz.items()}

    def total() -> int:
        return fixed + sum(cost(n, cur[n]) for n in cur)

    def sp(n: str, k: int) -> float:
        return 1.0 - k / numel[n] if numel[n] else 0.0

    while total() > budget:
        best = None  # (ratio, name, nnz_target)
        for n in cur:
            here = cost(n, cur[n])
            d0 = drop(n, sp(n, cur[n]))
            cands = {numel[n] - int(round(s * numel[n])) for s in LEVELS}
            cands.add(min_nnz[n])
            for k in sorted(cands, reverse=True):
                if k >= cur[n] or k < min_nnz[n]:
                    continue
                saved = here - cost(n, k)
                if saved <= 0:
                    continue
                loss = max(drop(n, sp(n, k)) - d0, 0.0) + tie_break * (sp(n, k) - sp(n, cur[n]))
                ratio = loss / saved
                if best is None or ratio < best[0]:
                    best = (ratio, n, k)
        if best is None:
            raise UnreachableBudget(f"cannot reach {budget} bytes: every layer is at its floor ({total()} bytes)")
        _, n, k = best
        over = total() - budget
        if cost(n, cur[n]) - cost(n, k) >= over:
            # shorten the step: the largest nnz in [k, cur) that fits the budget
            lo, hi = k, cur[n] - 1
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if cost(n, cur[n]) - cost(n, mid) >= over:
                    lo = mid
                else:
                    hi = mid - 1
            k = lo
        logger.debug("allocate: %s nnz %d -> %d", n, cur[n], k)
        cur[n] = k
    return cur
