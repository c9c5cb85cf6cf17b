"""Weight encodings with ONE exact byte count each.

Every constant array the generated C holds is a ``CArray``; its ``nbytes`` is what the compiler
lays out (and what ``nm -S`` reports). The compressor budgets with the same functions
(``encoded_nbytes`` for what-if sizes, ``codegen.weight_bytes`` for a whole model), so the budget
and the emitted bytes cannot disagree.

An encoding is a small plug-in: a name, an exact byte count from (rows, cols, nnz), an
``encode`` that returns the arrays, and the C kernel suffix its template calls
(``sc_conv_<suffix>``, ``sc_linear_<suffix>``). int8 and codebook encodings plug in here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CTYPE_BYTES = {"float": 4, "int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2, "int32_t": 4, "uint32_t": 4}


def uint_ctype(max_value: int) -> str:
    """The narrowest unsigned C type holding values 0..max_value."""
    if max_value <= 0xFF:
        return "uint8_t"
    if max_value <= 0xFFFF:
        return "uint16_t"
    return "uint32_t"


@dataclass
class CArray:
    """One const array of the generated C. Empty arrays are not emitted (C has no zero-size arrays)."""

    name: str
    ctype: str
    values: np.ndarray

    @property
    def count(self) -> int:
        return int(self.values.size)

    @property
    def nbytes(self) -> int:
        return self.count * CTYPE_BYTES[self.ctype]


@dataclass
class Encoded:
    """A weight tensor viewed as 2-D [rows, cols], stored in one encoding."""

    encoding: str
    rows: int
    cols: int
    nnz: int
    arrays: dict[str, CArray] = field(default_factory=dict)  # role -> array ("values", "colidx", "rowptr")
    kernel: str = "dense"  # C kernel suffix

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    @property
    def density(self) -> float:
        return self.nnz / max(1, self.rows * self.cols)

    def c_ref(self, role: str) -> str:
        """The C expression naming an array, or NULL for an empty one."""
        a = self.arrays[role]
        return a.name if a.count else "NULL"


class Encoding:
    """Interface of a weight encoding."""

    name = ""

    def nbytes(self, rows: int, cols: int, nnz: int) -> int:
        raise NotImplementedError

    def encode(self, w: np.ndarray, base: str) -> Encoded:
        raise NotImplementedError


class DenseF32(Encoding):
    """Row-major float32."""

    name = "dense"

    def nbytes(self, rows: int, cols: int, nnz: int) -> int:
        return rows * cols * 4

    def encode(self, w: np.ndarray, base: str) -> Encoded:
        w2 = np.ascontiguousarray(w, dtype=np.float32).reshape(w.shape[0], -1)
        return Encoded(
            "dense", w2.shape[0], w2.shape[1], int(np.count_nonzero(w2)),
            {"values": CArray(base, "float", w2.reshape(-1))}, kernel="dense",
        )  # fmt: skip


class CsrF32(Encoding):
    """Compressed sparse rows: float32 values, column indices and row pointers of the narrowest width."""

    name = "csr"

    @staticmethod
    def widths(rows: int, cols: int, nnz: int) -> tuple[str, str]:
        return uint_ctype(max(cols - 1, 0)), uint_ctype(nnz)

    def nbytes(self, rows: int, cols: int, nnz: int) -> int:
        it, pt = self.widths(rows, cols, nnz)
        return nnz * 4 + nnz * CTYPE_BYTES[it] + (rows + 1) * CTYPE_BYTES[pt]

    def encode(self, w: np.ndarray, base: str) -> Encoded:
        w2 = np.ascontiguousarray(w, dtype=np.float32).reshape(w.shape[0], -1)
        rows, cols = w2.shape
        r, c = np.nonzero(w2)
        nnz = int(r.size)
        it, pt = self.widths(rows, cols, nnz)
        rowptr = np.zeros(rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(r, minlength=rows), out=rowptr[1:])
        arrays = {
            "values": CArray(base + "_val", "float", w2[r, c]),
            "colidx": CArray(base + "_col", it, c.astype(np.int64)),
            "rowptr": CArray(base + "_ptr", pt, rowptr),
        }
        suffix = f"csr_{it[:-2].replace('uint', 'u')}_{pt[:-2].replace('uint', 'u')}"
        return Encoded("csr", rows, cols, nnz, arrays, kernel=suffix)


ENCODINGS: dict[str, Encoding] = {"dense": DenseF32(), "csr": CsrF32()}

# representation -> the encodings it may choose from, per tensor (the smallest wins; ties go first)
REPRESENTATIONS: dict[str, tuple[str, ...]] = {"dense": ("dense",), "csr": ("dense", "csr")}


def check_representation(representation: str) -> tuple[str, ...]:
    if representation not in REPRESENTATIONS:
        raise ValueError(
            f"unknown representation {representation!r}; choose one of {sorted(REPRESENTATIONS)}"
        )
    return REPRESENTATIONS[representation]


def encoded_nbytes(rows: int, cols: int, nnz: int, representation: str = "csr") -> int:
    """Exact bytes of a [rows, cols] weight tensor with nnz nonzeros in the given representation.

    >>> encoded_nbytes(10, 300, 300, "csr")   # 300*4 values + 300*2 col + 11*2 ptr
    1822
    >>> encoded_nbytes(10, 300, 3000, "csr")  # dense is smaller at full density
    12000
    """
    return min(ENCODINGS[e].nbytes(rows, cols, nnz) for e in check_representation(representation))


def choose_encoding(w: np.ndarray, representation: str) -> Encoding:
    """The smallest allowed encoding of one tensor (dense on ties)."""
    w2 = w.reshape(w.shape[0], -1)
    rows, cols, nnz = w2.shape[0], w2.shape[1], int(np.count_nonzero(w2))
    cands = [ENCODINGS[e] for e in check_representation(representation)]
    return min(cands, key=lambda e: e.nbytes(rows, cols, nnz))


def encode_tensor(w: np.ndarray, base: str, representation: str) -> Encoded:
    enc = choose_encoding(w, representation).encode(w, base)
    expected = ENCODINGS[enc.encoding].nbytes(enc.rows, enc.cols, enc.nnz)
    assert enc.nbytes == expected, (enc.nbytes, expected)
    return enc
