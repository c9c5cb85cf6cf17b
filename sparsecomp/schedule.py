"""Gradual pruning schedules.

The compressor never jumps a layer to its final density in one step: it follows the
automated gradual pruning (AGP) cubic schedule of Zhu & Gupta (2017),

    s_t = s_f + (s_i - s_f) * (1 - t / n) ** 3,   t = 0..n

Example::

    >>> [round(s, 3) for s in agp_schedule(0.0, 0.9, 4)]
    [0.52, 0.787, 0.886, 0.9]
"""

from __future__ import annotations


def agp_sparsity(initial: float, final: float, step: int, n_steps: int) -> float:
    """Sparsity at ``step`` (0..n_steps) of a cubic AGP ramp from ``initial`` to ``final``.

    Example::

        >>> agp_sparsity(0.0, 0.8, 0, 10), agp_sparsity(0.0, 0.8, 10, 10)
        (0.0, 0.8)
    """
    if n_steps <= 0:
        return final
    t = min(max(step, 0), n_steps) / n_steps
    return final + (initial - final) * (1.0 - t) ** 3


def agp_schedule(initial: float, final: float, n_steps: int) -> list[float]:
    """The ``n_steps`` sparsities of an AGP ramp after ``initial`` (the last one is ``final``)."""
    return [agp_sparsity(initial, final, k, n_steps) for k in range(1, n_steps + 1)]


def pruning_steps(total_iters: int, ramp_fraction: float = 0.6, max_steps: int = 20) -> list[int]:
    """Iterations (0-based, increasing) at which masks are tightened during a round.

    Masks are updated ``min(max_steps, ...)`` times, evenly over the first ``ramp_fraction``
    of the iterations; the rest of the round fine-tunes with fixed masks.  Always at least
    one step, the first at iteration 0.

    Example::

        >>> pruning_steps(100, 0.5, 5)
        [0, 10, 20, 30, 40]
    """
    total_iters = max(int(total_iters), 1)
    ramp = max(1, int(total_iters * ramp_fraction))
    n = max(1, min(max_steps, ramp))
    return sorted({(k * ramp) // n for k in range(n)})
