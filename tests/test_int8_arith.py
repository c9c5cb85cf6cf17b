"""The int8 add / sub / mul arithmetic (codegen.integer.add_constants / mul_constants, the kernels
sc_i8_add, sc_i8_mul of runtime_c/sc_eltwise.h and sc_i8_s_add / sc_i8_s_mul of sc_strided.h).

The kernels compute in int32 with integer multipliers and one rounding shift, so the properties that
make them right are checked here over every pair of int8 inputs, for random and extreme scales and
zero points: no intermediate of the C expression leaves int32 (in the order the C evaluates it, and in
the per-row forms of the strided kernels), and the result is the exactly rescaled value rounded, off
by at most one step where the exact value is within half a step of a rounding boundary. The C kernels
equal this reference bit for bit in tests/test_integer.py (add, mul, broadcast add / sub / mul).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from codegen.errors import UnsupportedConfigError
from codegen.integer import QParams, add_constants, add_reference, mul_constants, mul_reference

INT32 = 2**31
GRID = np.arange(-128, 128, dtype=np.int64)
A, B = np.meshgrid(GRID, GRID, indexing="ij")


def _scales(rng: np.random.Generator, n: int) -> list[tuple[QParams, QParams, QParams]]:
    out = []
    for _ in range(n):
        s = 2.0 ** rng.uniform(-14, 2, size=3)
        z = rng.integers(-128, 128, size=3)
        out.append(tuple(QParams(float(si), int(zi)) for si, zi in zip(s, z)))
    # extremes: equal scales, an operand 2^-20 of the output's scale, an operand 2^9 of it, zero points at the ends
    out += [(QParams(0.1, 0), QParams(0.1, 0), QParams(0.1, 0)),
            (QParams(1e-7, -128), QParams(0.5, 127), QParams(0.25, -128)),
            (QParams(0.5, 127), QParams(0.5, -128), QParams(0.5 / 512, 0)),
            (QParams(3.0, -128), QParams(2.0, -128), QParams(0.01, 127))]  # fmt: skip
    return out


def _fits(*arrays: np.ndarray) -> bool:
    return all(int(np.abs(a).max()) < INT32 for a in arrays)


def _rounds(y: int, q: Fraction, tie: float) -> bool:
    """y is q rounded half up, or one step off where q lies within ``tie`` of a rounding boundary."""
    return abs(y - math.floor(q + Fraction(1, 2))) <= (1 if abs(q - math.floor(q) - Fraction(1, 2)) < tie else 0)


CASES = _scales(np.random.default_rng(5), 40)


@pytest.mark.parametrize("sub", [False, True])
@pytest.mark.parametrize("i", range(len(CASES)))
def test_add_stays_in_int32_and_rounds_the_exact_sum(i, sub):
    qa, qb, qo = CASES[i]
    c = add_constants(qa, qb, qo, "test", sub=sub)
    # sc_i8_add: k + a * a_mult, then + b * b_mult; sc_i8_s_add per row: (k + b * b_mult) + a * a_mult
    assert _fits(np.int64(c["k"]), c["k"] + A * c["a_mult"], c["k"] + A * c["a_mult"] + B * c["b_mult"],
                 c["k"] + B * c["b_mult"], c["k"] + A * c["a_mult"] + B * c["b_mult"])  # fmt: skip
    got = add_reference(A, B, c)
    sign = -1 if sub else 1
    exact = [[Fraction(qa.scale) * (int(a) - qa.zero_point) + sign * Fraction(qb.scale) * (int(b) - qb.zero_point)
              for b in GRID[::17]] for a in GRID[::17]]  # fmt: skip
    for ia, a_row in enumerate(exact):
        for ib, v in enumerate(a_row):
            q = v / Fraction(qo.scale) + qo.zero_point
            y = int(got[ia * 17, ib * 17])
            # within int8 range the result is the rounded exact value (one step off only next to a tie)
            if -128 <= q <= 127:
                assert _rounds(y, q, 0.01)


@pytest.mark.parametrize("i", range(len(CASES)))
def test_mul_stays_in_int32_and_rounds_the_exact_product(i):
    qa, qb, qo = CASES[i]
    c = mul_constants(qa, qb, qo, "test")
    da, db = A - c["a_zp"], B - c["b_zp"]
    # sc_i8_mul: (a - a_zp)(b - b_zp) mult + round; sc_i8_s_mul per row: v (b - b_zp) mult + (round - a_zp (b - b_zp) mult)
    row = db * c["mult"]
    assert _fits(da * db, da * db * c["mult"], da * db * c["mult"] + c["round"], row, A * row,
                 c["round"] - c["a_zp"] * row, A * row + c["round"] - c["a_zp"] * row)  # fmt: skip
    got = mul_reference(A, B, c)
    ratio = Fraction(qa.scale) * Fraction(qb.scale) / Fraction(qo.scale)
    for a in GRID[::13]:
        for b in GRID[::13]:
            q = ratio * (int(a) - qa.zero_point) * (int(b) - qb.zero_point) + qo.zero_point
            if -128 <= q <= 127:
                y = int(got[a + 128, b + 128])
                assert _rounds(y, q, 0.02)


def test_a_scale_beyond_the_kernels_range_is_refused_with_the_layer():
    with pytest.raises(UnsupportedConfigError, match="'blocks.3.add'.*keep this model in float"):
        add_constants(QParams(1.0, 0), QParams(1e-3, 0), QParams(1e-7, 0), "'blocks.3.add'")
