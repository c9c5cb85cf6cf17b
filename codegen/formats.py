"""Weight encodings with ONE exact byte count each.

Every constant array the generated C holds is a ``CArray``; its ``nbytes`` is what the compiler
lays out (and what ``nm -S`` reports). The compressor budgets with the same functions
(``encoded_nbytes`` / ``tensor_nbytes`` for what-if sizes, ``codegen.weight_bytes`` for a whole
model), so the budget and the emitted bytes cannot disagree.

An encoding is a small plug-in: a name, an exact byte count ``nbytes(rows, cols, nnz, **stats)``,
``analyze(w2)`` that computes the extra statistics a form's size depends on (number of distinct
values, entries of a relative-index stream...) or raises ``Unencodable``, an ``encode`` that
returns the arrays, and the C kernel suffix its template calls (``sc_conv_<suffix>``,
``sc_linear_<suffix>``). A weight tensor is viewed as 2-D [rows = output channels, cols].

The forms (R rows, C cols, N nonzeros; w(n) = bytes of the narrowest unsigned type holding n,
i.e. 1, 2 or 4; ceil8(n) = ceil(n / 8)):

=============  ==============================================================================
dense          float32 values                               4RC
csr            float32 values, col w(C-1), rowptr w(N)      4N + N w(C-1) + (R+1) w(N)
int8           int8 q, float32 scale per row                RC + 4R
int8_csr       int8 q, col w(C-1), rowptr w(N), scale       N + N w(C-1) + (R+1) w(N) + 4R
int8_rel       stream of E (g+8)-bit entries, rowptr w(E)   ceil8(E (g+8)) + (R+1) w(E) + 4R
codebook       float32 codebook[K], b-bit indices           4K + ceil8(RC b)
codebook_csr   codebook[K'] of the nonzeros, b'-bit         4K' + ceil8(N b') + N w(C-1) + (R+1) w(N)
               indices, col w(C-1), rowptr w(N)
codebook_rel   codebook[K''], stream of E (g+b'')-bit       4K'' + ceil8(E (g+b'')) + (R+1) w(E)
               entries, rowptr w(E)
=============  ==============================================================================

``int8``: every weight is exactly float32(q * scale[row]) with q in [-128, 127] (what
``codegen.quantize.quantize_int8_`` produces); the encoder recovers q and scale from the tensor.
``codebook``: value = codebook[index]; K = the number of distinct values (at most 256; K' counts
the nonzeros only), b = max(1, ceil(log2 K)).

Packed bits (indices and relative-index streams) are LSB-first: field i of width W occupies
stream bits [i W, (i + 1) W), stream bit k is bit (k mod 8) of byte k / 8, and bit j of a field
is stream bit (start + j). Rows follow each other without padding; the C reads the stream
sequentially (``sc_bitreader`` in runtime_c/sc_bits.h).

Relative index (Deep Compression): per row, each entry stores the number of zeros skipped since
the previous entry (the gap, g bits, low bits of the entry) and its value (int8 byte or b-bit
codebook index, high bits). A gap larger than 2^g - 1 is bridged by filler entries (gap 2^g - 1,
value zero), E = N + fillers; the codebook of ``codebook_rel`` holds 0.0 when there are fillers.
The encoder tries every g in 1..8 and keeps the smallest (ties: the larger g, fewer entries).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from codegen.errors import CodegenError

CTYPE_BYTES = {
    "float": 4,
    "int8_t": 1,
    "uint8_t": 1,
    "int16_t": 2,
    "uint16_t": 2,
    "int32_t": 4,
    "uint32_t": 4,
}
MAX_CODEBOOK = 256  # b <= 8 bits per index
GAP_BITS = tuple(range(1, 9))  # relative-index gap widths the encoder tries
QUANT_RUNTIME = ("sc_conv.h", "sc_linear.h")  # the int8/codebook kernels: the weight-only sections


def uint_ctype(max_value: int) -> str:
    """The narrowest unsigned C type holding values 0..max_value."""
    if max_value <= 0xFF:
        return "uint8_t"
    if max_value <= 0xFFFF:
        return "uint16_t"
    return "uint32_t"


def _w(max_value: int) -> int:
    return CTYPE_BYTES[uint_ctype(max_value)]


def _short(ctype: str) -> str:
    return ctype[:-2].replace("uint", "u")


def index_bits(k: int) -> int:
    """Bits of a codebook index for k distinct values: max(1, ceil(log2 k))."""
    return max(1, math.ceil(math.log2(k))) if k > 1 else 1


def pack_bits(fields: np.ndarray, width: int) -> np.ndarray:
    """Packs unsigned integers of ``width`` bits LSB-first into ceil(n * width / 8) bytes.

    >>> pack_bits(np.array([1, 2, 3]), 3).tolist()   # 001 010 011 -> bits 100 010 110 (LSB first)
    [209, 0]
    """
    f = np.asarray(fields, dtype=np.uint64).reshape(-1)
    if f.size and int(f.max()) >> width:
        raise ValueError(f"a field does not fit in {width} bits")
    bits = ((f[:, None] >> np.arange(width, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8).reshape(-1)
    return np.packbits(bits, bitorder="little")


def unpack_bits(data: np.ndarray, width: int, count: int) -> np.ndarray:
    """Inverse of ``pack_bits`` (the reference decoder the tests use)."""
    bits = np.unpackbits(np.asarray(data, dtype=np.uint8), bitorder="little")[: count * width]
    weights = np.uint64(1) << np.arange(width, dtype=np.uint64)
    return (bits.reshape(count, width).astype(np.uint64) * weights).sum(axis=1)


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
    """A weight tensor viewed as 2-D [rows, cols], stored in one encoding.

    The kernel ``sc_<family>_<kernel>`` takes (input, output, *c_args(), bias, params): the
    arrays in the order of ``arrays`` followed by the integers of ``meta`` (e.g. bits).
    ``runtime``: runtime headers the kernel needs besides the op's own.
    """

    encoding: str
    rows: int
    cols: int
    nnz: int
    arrays: dict[str, CArray] = field(default_factory=dict)  # role -> array ("values", "colidx", "rowptr")
    kernel: str = "dense"  # C kernel suffix
    meta: dict[str, int] = field(default_factory=dict)  # constants passed to the kernel ("bits", "gap_bits")
    runtime: tuple[str, ...] = ()

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

    def c_args(self) -> str:
        """The kernel's encoding arguments: every array (in order), then every meta constant."""
        return ", ".join([self.c_ref(r) for r in self.arrays] + [str(int(v)) for v in self.meta.values()])


class Unencodable(ValueError):
    """The tensor cannot be represented exactly in this encoding (the message says why)."""


def as_2d(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w)
    return np.ascontiguousarray(w, dtype=np.float32).reshape(w.shape[0] if w.ndim else 1, -1)


class Encoding:
    """Interface of a weight encoding.

    ``nbytes(rows, cols, nnz, **stats)`` is the exact byte count; ``stats`` are the extra numbers
    a form's size depends on (``analyze`` computes them from the tensor; shape-only forms have
    none). ``tensor_nbytes(w)`` is the exact byte count of one tensor.
    """

    name = ""
    shape_only = True  # nbytes depends on (rows, cols, nnz) alone

    def nbytes(self, rows: int, cols: int, nnz: int, **stats: int) -> int:
        raise NotImplementedError

    def analyze(self, w2: np.ndarray) -> dict[str, int]:
        """Statistics ``nbytes`` needs beyond (rows, cols, nnz); raises Unencodable."""
        return {}

    def tensor_nbytes(self, w: np.ndarray) -> int:
        w2 = as_2d(w)
        return self.nbytes(w2.shape[0], w2.shape[1], int(np.count_nonzero(w2)), **self.analyze(w2))

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


def _csr_parts(w2: np.ndarray, base: str) -> tuple[np.ndarray, np.ndarray, dict[str, CArray], str]:
    """Nonzero (row, col) in row-major order and the colidx/rowptr arrays of the narrowest widths."""
    rows, cols = w2.shape
    r, c = np.nonzero(w2)
    nnz = int(r.size)
    it, pt = CsrF32.widths(rows, cols, nnz)
    rowptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=rows), out=rowptr[1:])
    arrays = {
        "colidx": CArray(base + "_col", it, c.astype(np.int64)),
        "rowptr": CArray(base + "_ptr", pt, rowptr),
    }
    return r, c, arrays, f"{_short(it)}_{_short(pt)}"


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
        r, c, idx, widths = _csr_parts(w2, base)
        arrays = {"values": CArray(base + "_val", "float", w2[r, c]), **idx}
        return Encoded("csr", rows, cols, int(r.size), arrays, kernel=f"csr_{widths}")


# ---- int8: weight == float32(q * scale[row]) ----------------------------------------------------


def int8_grid(w2: np.ndarray) -> tuple[np.ndarray, np.ndarray] | int:
    """(q int8 [rows, cols], scale float32 [rows]) with float32(q * scale) == w2 exactly, or the
    index of the first row that is not on such a grid.

    The steps tried are max|row| / 127 (what ``quantize_int8_`` uses) and max|row| / 128
    (symmetric per channel), then max|tensor| / 127 and / 128 (symmetric per tensor), each rounded
    to float32 and its neighbours within 2 ulps; q must lie in [-128, 127]. All-zero rows get
    scale 0.
    """
    w2 = as_2d(w2)
    rows = w2.shape[0]
    q = np.zeros(w2.shape, dtype=np.int8)
    scale = np.zeros(rows, dtype=np.float32)
    if w2.size == 0:
        return q, scale
    amax = np.abs(w2).max(axis=1).astype(np.float64)
    todo = np.flatnonzero(amax > 0)

    def attempt(idx: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Rows of idx that step s (float32 per row) represents exactly; fills q/scale for them."""
        qq = np.rint(w2[idx].astype(np.float64) / s[:, None].astype(np.float64))
        ok = (qq >= -128).all(axis=1) & (qq <= 127).all(axis=1)
        qq = np.clip(qq, -128, 127)
        back = qq.astype(np.float32) * s[:, None]
        ok &= (back == w2[idx]).all(axis=1)
        q[idx[ok]] = qq[ok].astype(np.int8)
        scale[idx[ok]] = s[ok]
        return idx[~ok]

    for k, per_tensor in ((127.0, False), (128.0, False), (127.0, True), (128.0, True)):
        s0 = ((np.full(todo.size, amax.max()) if per_tensor else amax[todo]) / k).astype(np.float32)
        for ulps in (0, 1, -1, 2, -2):
            if todo.size == 0:
                return q, scale
            s = s0
            for _ in range(abs(ulps)):
                s = np.nextafter(s, np.float32(np.inf if ulps > 0 else 0)).astype(np.float32)
            keep = np.isin(todo, attempt(todo, s))
            todo, s0 = todo[keep], s0[keep]
    return (q, scale) if todo.size == 0 else int(todo[0])


def _int8_or_raise(w2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    g = int8_grid(w2)
    if isinstance(g, int):
        raise Unencodable(
            f"the weight is not on an int8 grid (row {g}: not every value is float32(q * scale) with one "
            "float32 scale per output channel and integer q in [-128, 127]); call "
            "codegen.quantize.quantize_int8_(model) first (and fold BatchNorm into the layer before "
            "quantizing: codegen encodes the weights after BatchNorm folding)"
        )
    return g


class Int8(Encoding):
    """int8 q row-major, float32 scale per row: w = scale[row] * q."""

    name = "int8"

    def nbytes(self, rows: int, cols: int, nnz: int) -> int:
        return rows * cols + 4 * rows

    def analyze(self, w2: np.ndarray) -> dict[str, int]:
        _int8_or_raise(w2)
        return {}

    def encode(self, w: np.ndarray, base: str) -> Encoded:
        w2 = as_2d(w)
        q, scale = _int8_or_raise(w2)
        arrays = {"values": CArray(base + "_q", "int8_t", q.reshape(-1)),
                  "scale": CArray(base + "_scale", "float", scale)}  # fmt: skip
        return Encoded(self.name, *w2.shape, int(np.count_nonzero(w2)), arrays, kernel="q8",
                       runtime=QUANT_RUNTIME)  # fmt: skip


class Int8Csr(Encoding):
    """CSR of int8 q (narrowest col/rowptr widths, as ``csr``) plus the float32 scale per row."""

    name = "int8_csr"

    def nbytes(self, rows: int, cols: int, nnz: int) -> int:
        return nnz + nnz * _w(max(cols - 1, 0)) + (rows + 1) * _w(nnz) + 4 * rows

    def analyze(self, w2: np.ndarray) -> dict[str, int]:
        _int8_or_raise(w2)
        return {}

    def encode(self, w: np.ndarray, base: str) -> Encoded:
        w2 = as_2d(w)
        q, scale = _int8_or_raise(w2)
        r, c, idx, widths = _csr_parts(w2, base)
        arrays = {"values": CArray(base + "_q", "int8_t", q[r, c]), **idx,
                  "scale": CArray(base + "_scale", "float", scale)}  # fmt: skip
        return Encoded(
            self.name, *w2.shape, int(r.size), arrays, kernel=f"q8_csr_{widths}", runtime=QUANT_RUNTIME
        )


# ---- relative indices ---------------------------------------------------------------------------


@dataclass
class RelEntries:
    """The entries of a relative-index stream, in row-major order."""

    gap_bits: int
    row: np.ndarray  # row of each entry
    gap: np.ndarray  # zeros skipped before the entry (< 2^gap_bits)
    src: np.ndarray  # index into the nonzeros of the entry's value, -1 for a filler (value zero)

    @property
    def count(self) -> int:
        return int(self.gap.size)

    @property
    def fillers(self) -> int:
        return int(np.count_nonzero(self.src < 0))

    def rowptr(self, rows: int) -> np.ndarray:
        ptr = np.zeros(rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.row, minlength=rows), out=ptr[1:])
        return ptr


def _zero_runs(w2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, column and zeros skipped before each nonzero (row-major order)."""
    r, c = np.nonzero(w2)
    prev = np.empty_like(c)
    if c.size:
        prev[0] = -1
        prev[1:] = np.where(r[1:] == r[:-1], c[:-1], -1)
    return r, c, c - prev - 1


def rel_entry_count(w2: np.ndarray, gap_bits: int) -> int:
    """E = nonzeros + fillers for gaps of ``gap_bits`` bits."""
    _, _, z = _zero_runs(w2)
    return int(z.size + np.sum(z >> gap_bits))


def rel_entries(w2: np.ndarray, gap_bits: int) -> RelEntries:
    r, _, z = _zero_runs(w2)
    m = 1 << gap_bits
    f = z >> gap_bits  # fillers before each nonzero
    counts = f + 1
    owner = np.repeat(np.arange(z.size), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    last = (np.arange(owner.size) - first) == f[owner]
    gap = np.where(last, z[owner] - f[owner] * m, m - 1)
    src = np.where(last, owner, -1)
    return RelEntries(gap_bits, r[owner], gap.astype(np.int64), src.astype(np.int64))


def _best_gap_bits(w2: np.ndarray, size) -> tuple[int, int]:
    """(gap_bits, entries) minimizing size(entries, gap_bits); ties go to the larger gap_bits."""
    r, _, z = _zero_runs(w2)
    best = None
    for g in sorted(GAP_BITS, reverse=True):
        e = int(z.size + np.sum(z >> g))
        n = size(e, g)
        if n is not None and (best is None or n < best[0]):
            best = (n, g, e)
    if best is None:
        raise Unencodable("no gap width gives a codebook of at most 256 values")
    return best[1], best[2]


class Int8Rel(Encoding):
    """Relative-index int8 (Deep Compression): per row, (gap, q) entries of g + 8 bits, LSB-first."""

    name = "int8_rel"
    shape_only = False

    def nbytes(self, rows: int, cols: int, nnz: int, *, entries: int, gap_bits: int) -> int:
        return math.ceil(entries * (gap_bits + 8) / 8) + (rows + 1) * _w(entries) + 4 * rows

    def analyze(self, w2: np.ndarray) -> dict[str, int]:
        _int8_or_raise(w2)
        rows = w2.shape[0]
        g, e = _best_gap_bits(w2, lambda e, g: self.nbytes(rows, 0, 0, entries=e, gap_bits=g))
        return {"entries": e, "gap_bits": g}

    def encode(self, w: np.ndarray, base: str) -> Encoded:
        w2 = as_2d(w)
        q, scale = _int8_or_raise(w2)
        g = self.analyze(w2)["gap_bits"]
        ent = rel_entries(w2, g)
        r, c = np.nonzero(w2)
        qv = np.where(ent.src >= 0, q[r, c][np.maximum(ent.src, 0)] if r.size else 0, 0).astype(np.int64)
        fields = ent.gap | ((qv & 0xFF) << g)
        pt = uint_ctype(ent.count)
        arrays = {"stream": CArray(base + "_rel", "uint8_t", pack_bits(fields, g + 8)),
                  "rowptr": CArray(base + "_ptr", pt, ent.rowptr(w2.shape[0])),
                  "scale": CArray(base + "_scale", "float", scale)}  # fmt: skip
        return Encoded(self.name, *w2.shape, int(r.size), arrays, kernel=f"q8_rel_{_short(pt)}",
                       meta={"gap_bits": g}, runtime=QUANT_RUNTIME)  # fmt: skip


# ---- codebook: value = codebook[index] ----------------------------------------------------------


def _codebook(values: np.ndarray, what: str) -> np.ndarray:
    cb = np.unique(values.astype(np.float32))
    if cb.size > MAX_CODEBOOK:
        raise Unencodable(
            f"the weight has {cb.size} distinct {what}; a codebook holds at most {MAX_CODEBOOK} "
            "(8-bit indices). Run weight sharing first: codegen.quantize.share_weights_(model, bits) "
            "with bits in 1..8"
        )
    return cb


class Codebook(Encoding):
    """float32 codebook of the K distinct values, b-bit indices packed LSB-first, row-major."""

    name = "codebook"
    shape_only = False

    def nbytes(self, rows: int, cols: int, nnz: int, *, k: int) -> int:
        return 4 * k + math.ceil(rows * cols * index_bits(k) / 8)

    def analyze(self, w2: np.ndarray) -> dict[str, int]:
        return {"k": int(_codebook(w2.reshape(-1), "values").size) if w2.size else 0}

    def encode(self, w: np.ndarray, base: str) -> Encoded:
        w2 = as_2d(w)
        cb = _codebook(w2.reshape(-1), "values")
        b = index_bits(cb.size)
        idx = np.searchsorted(cb, w2.reshape(-1))
        arrays = {"index": CArray(base + "_idx", "uint8_t", pack_bits(idx, b)),
                  "codebook": CArray(base + "_cb", "float", cb)}  # fmt: skip
        return Encoded(self.name, *w2.shape, int(np.count_nonzero(w2)), arrays, kernel="cb",
                       meta={"bits": b}, runtime=QUANT_RUNTIME)  # fmt: skip


class CodebookCsr(Encoding):
    """CSR whose values are b'-bit indices (packed LSB-first) into a codebook of the nonzero values."""

    name = "codebook_csr"
    shape_only = False

    def nbytes(self, rows: int, cols: int, nnz: int, *, k: int) -> int:
        return (4 * k + math.ceil(nnz * index_bits(k) / 8) + nnz * _w(max(cols - 1, 0))
                + (rows + 1) * _w(nnz))  # fmt: skip

    def analyze(self, w2: np.ndarray) -> dict[str, int]:
        return {"k": int(_codebook(w2[w2 != 0], "nonzero values").size)}

    def encode(self, w: np.ndarray, base: str) -> Encoded:
        w2 = as_2d(w)
        r, c, idx, widths = _csr_parts(w2, base)
        cb = _codebook(w2[r, c], "nonzero values")
        b = index_bits(cb.size)
        arrays = {"index": CArray(base + "_idx", "uint8_t", pack_bits(np.searchsorted(cb, w2[r, c]), b)),
                  "codebook": CArray(base + "_cb", "float", cb), **idx}  # fmt: skip
        return Encoded(self.name, *w2.shape, int(r.size), arrays, kernel=f"cb_csr_{widths}",
                       meta={"bits": b}, runtime=QUANT_RUNTIME)  # fmt: skip


class CodebookRel(Encoding):
    """Relative-index codebook: per row, (gap, index) entries of g + b bits, LSB-first; the codebook
    holds the nonzero values plus 0.0 when there are filler entries."""

    name = "codebook_rel"
    shape_only = False

    def nbytes(self, rows: int, cols: int, nnz: int, *, k: int, entries: int, gap_bits: int) -> int:
        return 4 * k + math.ceil(entries * (gap_bits + index_bits(k)) / 8) + (rows + 1) * _w(entries)

    def analyze(self, w2: np.ndarray) -> dict[str, int]:
        knz = int(_codebook(w2[w2 != 0], "nonzero values").size)
        rows, nnz = w2.shape[0], int(np.count_nonzero(w2))

        def size(e: int, g: int) -> int | None:
            k = knz + (e > nnz)
            return None if k > MAX_CODEBOOK else self.nbytes(rows, 0, 0, k=k, entries=e, gap_bits=g)

        g, e = _best_gap_bits(w2, size)
        return {"k": knz + (e > nnz), "entries": e, "gap_bits": g}

    def encode(self, w: np.ndarray, base: str) -> Encoded:
        w2 = as_2d(w)
        st = self.analyze(w2)
        g = st["gap_bits"]
        ent = rel_entries(w2, g)
        r, c = np.nonzero(w2)
        nzv = w2[r, c]
        cb = np.unique(np.concatenate([nzv, np.zeros(1 if ent.fillers else 0, np.float32)]))
        b = index_bits(cb.size)
        vals = np.where(ent.src >= 0, nzv[np.maximum(ent.src, 0)] if nzv.size else 0, 0).astype(np.float32)
        fields = ent.gap | (np.searchsorted(cb, vals).astype(np.int64) << g)
        pt = uint_ctype(ent.count)
        arrays = {"stream": CArray(base + "_rel", "uint8_t", pack_bits(fields, g + b)),
                  "codebook": CArray(base + "_cb", "float", cb),
                  "rowptr": CArray(base + "_ptr", pt, ent.rowptr(w2.shape[0]))}  # fmt: skip
        return Encoded(self.name, *w2.shape, int(r.size), arrays, kernel=f"cb_rel_{_short(pt)}",
                       meta={"bits": b, "gap_bits": g}, runtime=QUANT_RUNTIME)  # fmt: skip


ENCODINGS: dict[str, Encoding] = {
    e.name: e
    for e in (DenseF32(), CsrF32(), Int8(), Int8Csr(), Int8Rel(), Codebook(), CodebookCsr(), CodebookRel())
}

@dataclass(frozen=True)
class Representation:
    """What a representation lets the emitter store a weight tensor as, per tensor the smallest that holds it
    (ties go to the first listed).

    ``encodings``: the float path's choices. ``integer``: with ``integer=True`` (int8 activations), the int8
    encodings it allows, written without their float scale; empty when the representation cannot be used with
    ``integer=True`` (``int8_capable`` is False).
    """

    name: str
    encodings: tuple[str, ...]
    integer: tuple[str, ...] = ()

    @property
    def int8_capable(self) -> bool:
        return bool(self.integer)


_INT8_ALL = ("int8", "int8_csr", "int8_rel")
# every representation, one table: the float encodings and the int8 ones of integer mode
REPRESENTATIONS: dict[str, Representation] = {
    r.name: r
    for r in (
        Representation("dense", ("dense",), integer=("int8",)),
        Representation("csr", ("dense", "csr"), integer=("int8", "int8_csr")),
        Representation("int8", _INT8_ALL, integer=_INT8_ALL),
        Representation("codebook", ("codebook", "codebook_csr", "codebook_rel")),
        Representation("auto", ("dense", "csr", *_INT8_ALL, "codebook", "codebook_csr", "codebook_rel"),
                       integer=_INT8_ALL),
    )
}


def check_representation(representation: str | Representation, integer: bool = False) -> Representation:
    """The table entry of a representation name (a Representation is returned as is: the entry points check a
    name once and pass the entry on). Unknown names, and with ``integer`` the representations that are not
    int8-capable, raise an error that lists the valid ones."""
    if isinstance(representation, Representation):
        rep = representation
    elif representation in REPRESENTATIONS:
        rep = REPRESENTATIONS[representation]
    else:
        raise ValueError(
            f"unknown representation {representation!r}; choose one of {sorted(REPRESENTATIONS)}"
        )
    if integer and not rep.int8_capable:
        capable = sorted(n for n, r in REPRESENTATIONS.items() if r.int8_capable)
        raise CodegenError(
            f"representation {rep.name!r} cannot be used with integer=True: the weights are int8; "
            f"choose one of {capable} ('int8': dense, CSR or relative-index int8, the smallest)"
        )
    return rep


def encoded_nbytes(rows: int, cols: int, nnz: int, representation: str | Representation = "csr") -> int:
    """Exact bytes of a [rows, cols] weight tensor with nnz nonzeros in the given representation.

    Only for representations whose size depends on (rows, cols, nnz) alone ("dense", "csr");
    the others depend on the values: use ``tensor_nbytes(w, representation)``.

    >>> encoded_nbytes(10, 300, 300, "csr")   # 300*4 values + 300*2 col + 11*2 ptr
    1822
    >>> encoded_nbytes(10, 300, 3000, "csr")  # dense is smaller at full density
    12000
    """
    rep = check_representation(representation)
    encs = [ENCODINGS[e] for e in rep.encodings]
    if not all(e.shape_only for e in encs):
        raise ValueError(
            f"the size of representation {rep.name!r} depends on the weight values, not only on "
            "(rows, cols, nnz); use codegen.formats.tensor_nbytes(w, representation)"
        )
    return min(e.nbytes(rows, cols, nnz) for e in encs)


def _where(layer: str) -> str:
    return f"layer '{layer}'" if layer else "weight tensor"


def _check_finite(w2: np.ndarray, layer: str) -> None:
    bad = int(w2.size - np.count_nonzero(np.isfinite(w2)))
    if bad:
        raise CodegenError(
            f"{_where(layer)}: the weight has {bad} non-finite value(s) (NaN or inf); "
            "retrain or repair the weights before encoding them"
        )


def _sizes(w2: np.ndarray, representation: str | Representation, layer: str) -> list[tuple[int, Encoding]]:
    """(exact bytes, encoding) of every allowed encoding that can hold the tensor, in preference order."""
    rep = check_representation(representation)
    _check_finite(w2, layer)
    sizes, why = [], []
    for name in rep.encodings:
        e = ENCODINGS[name]
        try:
            sizes.append((e.tensor_nbytes(w2), e))
        except Unencodable as exc:
            why.append(str(exc))
    if not sizes:
        raise CodegenError(f"{_where(layer)}: cannot store the weight as {rep.name!r}: {why[0]}")
    return sizes


def tensor_nbytes(w: np.ndarray, representation: str | Representation = "csr", layer: str = "") -> int:
    """Exact bytes of one weight tensor (first dim = output channels) in the given representation:
    the smallest encoding the representation allows that can hold the tensor exactly.

    >>> tensor_nbytes(np.eye(4, dtype=np.float32), "codebook")  # codebook [0, 1], 16 1-bit indices
    10
    """
    w2 = as_2d(w)
    return min(n for n, _ in _sizes(w2, representation, layer))


def choose_encoding(w: np.ndarray, representation: str | Representation, layer: str = "") -> Encoding:
    """The smallest allowed encoding of one tensor (the first listed on ties: dense first)."""
    sizes = _sizes(as_2d(w), representation, layer)
    return min(sizes, key=lambda t: t[0])[1]


def encode_tensor(w: np.ndarray, base: str, representation: str | Representation, layer: str = "") -> Encoded:
    """Encodes one weight tensor in the smallest encoding ``representation`` allows. ``layer``
    (the torch module path) names the layer in errors."""
    w2 = as_2d(w)
    enc_cls = choose_encoding(w2, representation, layer)
    enc = enc_cls.encode(np.asarray(w, dtype=np.float32), base)
    expected = enc_cls.tensor_nbytes(w2)
    assert enc.nbytes == expected, (enc.encoding, enc.nbytes, expected)
    return enc


# ---- codebook_huff: Huffman-coded codebook weights executed from flash (runtime_c/sc_huff.h) -------------
#
# The entries are those of codebook_rel (per row: zeros skipped, then a codebook index; filler entries of
# value zero bridge gaps longer than gap_bits). Each entry's symbol gap | index << gap_bits is written as a
# canonical Huffman code (MSB of the code first) into one LSB-first stream; the kernels decode the codes
# inside the dot product. Arrays: the stream, the float codebook, count[l - 1] (codes of length l, uint16),
# the symbols in canonical order (uint16) and the row pointer (entries). Representation "huffman" chooses
# per tensor the smallest of the codebook forms and this one ("auto" does not include it).

MAX_CODE_BITS = 24  # longest code the kernel walks (sc_huff_decode's loop); longer: not encodable
MAX_SYMBOL_BITS = 15  # gap_bits + index bits: symbols and per-length counts fit uint16
HUFF_RUNTIME = (*QUANT_RUNTIME, "sc_huff.h")


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Huffman code length of every symbol with a nonzero count (0 elsewhere; a lone symbol gets 1).
    Deterministic: ties broken by symbol value."""
    lengths = np.zeros(counts.size, dtype=np.int64)
    used = np.flatnonzero(counts)
    if used.size == 1:
        lengths[used] = 1
        return lengths
    heap = [(int(counts[s]), int(s), [int(s)]) for s in used]
    heapq.heapify(heap)
    while len(heap) > 1:
        c1, k1, s1 = heapq.heappop(heap)
        c2, k2, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, min(k1, k2), s1 + s2))
    return lengths


def canonical(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(code of each symbol, count per length 1..max, symbols in canonical order)."""
    maxlen = int(lengths.max())
    order = np.lexsort((np.arange(lengths.size), lengths))
    order = order[lengths[order] > 0]
    count = np.bincount(lengths[order], minlength=maxlen + 1)[1:]
    codes = np.zeros(lengths.size, dtype=np.int64)
    code, prev = 0, int(lengths[order[0]])
    for s in order:
        ln = int(lengths[s])
        code <<= ln - prev
        prev = ln
        codes[s] = code
        code += 1
    return codes, count, order


@dataclass
class _Plan:
    gap_bits: int
    k: int
    entries: int
    symbols: np.ndarray  # symbol of each entry
    lengths: np.ndarray  # code length per symbol value

    @property
    def stream_bits(self) -> int:
        return int(self.lengths[self.symbols].sum())


class CodebookHuff(Encoding):
    """Canonical-Huffman-coded (gap, codebook index) entries; decoded on the fly by the kernel."""

    name = "codebook_huff"
    shape_only = False

    def nbytes(self, rows: int, cols: int, nnz: int, *, k: int, entries: int, stream_bits: int, nsym: int,
               maxlen: int) -> int:
        return (4 * k + math.ceil(stream_bits / 8) + 2 * maxlen + 2 * nsym
                + (rows + 1) * _w(entries))  # fmt: skip

    def _plans(self, w2: np.ndarray):
        r, c = np.nonzero(w2)
        nzv = w2[r, c]
        _codebook(nzv, "nonzero values")  # at most 256 distinct nonzero values, else Unencodable
        _, _, z = _zero_runs(w2)
        for g in GAP_BITS:
            fillers = int(np.sum(z >> g))
            cb = np.unique(np.concatenate([nzv, np.zeros(1 if fillers else 0, np.float32)]))
            if cb.size > MAX_CODEBOOK or g + index_bits(cb.size) > MAX_SYMBOL_BITS:
                continue
            ent = rel_entries(w2, g)
            vals = np.where(ent.src >= 0, nzv[np.maximum(ent.src, 0)] if nzv.size else 0, 0).astype(np.float32)
            sym = ent.gap | (np.searchsorted(cb, vals).astype(np.int64) << g)
            if sym.size == 0:
                continue
            lengths = code_lengths(np.bincount(sym, minlength=1 << (g + index_bits(cb.size))))
            if lengths.max() > MAX_CODE_BITS:
                continue
            yield _Plan(g, int(cb.size), ent.count, sym, lengths), cb, ent

    def _best(self, w2: np.ndarray):
        best = None
        for plan, cb, ent in self._plans(w2):
            n = self._size(w2.shape[0], plan)
            if best is None or n < best[0]:
                best = (n, plan, cb, ent)
        if best is None:
            raise Unencodable("no nonzero weights, or no gap width gives codes of at most "
                              f"{MAX_CODE_BITS} bits with a codebook of at most {MAX_CODEBOOK} values")
        return best[1:]

    def _stats(self, plan: _Plan) -> dict[str, int]:
        return {"k": plan.k, "entries": plan.entries, "stream_bits": plan.stream_bits,
                "nsym": int(np.count_nonzero(plan.lengths)), "maxlen": int(plan.lengths.max())}

    def _size(self, rows: int, plan: _Plan) -> int:
        return self.nbytes(rows, 0, 0, **self._stats(plan))

    def analyze(self, w2: np.ndarray) -> dict[str, int]:
        return self._stats(self._best(w2)[0])

    def encode(self, w: np.ndarray, base: str) -> Encoded:
        w2 = as_2d(w)
        plan, cb, ent = self._best(w2)
        codes, count, order = canonical(plan.lengths)
        ln = plan.lengths[plan.symbols]
        cd = codes[plan.symbols]
        # the code's bits MSB first, one stream bit each (LSB-first packing of single bits)
        bit_pos = np.repeat(np.cumsum(ln) - ln, ln) if ln.size else np.zeros(0, np.int64)
        within = np.arange(int(ln.sum())) - bit_pos
        owner = np.repeat(np.arange(ln.size), ln)
        bits = (cd[owner] >> (ln[owner] - 1 - within)) & 1
        stream = np.zeros((bits.size + 7) // 8, dtype=np.int64)
        np.add.at(stream, np.arange(bits.size) >> 3, bits << (np.arange(bits.size) & 7))
        pt = uint_ctype(ent.count)
        arrays = {"stream": CArray(base + "_huf", "uint8_t", stream),
                  "codebook": CArray(base + "_cb", "float", cb),
                  "count": CArray(base + "_hcnt", "uint16_t", count.astype(np.int64)),
                  "symbols": CArray(base + "_hsym", "uint16_t", order.astype(np.int64)),
                  "rowptr": CArray(base + "_ptr", pt, ent.rowptr(w2.shape[0]))}  # fmt: skip
        r, _ = np.nonzero(w2)
        return Encoded(self.name, *w2.shape, int(r.size), arrays, kernel=f"cb_huff_{_short(pt)}",
                       meta={"gap_bits": plan.gap_bits, "maxlen": int(count.size)}, runtime=HUFF_RUNTIME)  # fmt: skip


def huff_decode(e: Encoded) -> np.ndarray:
    """The weight matrix an Encoded ``codebook_huff`` holds, decoded as the C kernel does (the reference)."""
    stream = e.arrays["stream"].values.astype(np.uint8)
    bits = np.unpackbits(stream, bitorder="little") if stream.size else np.zeros(0, np.uint8)
    count = e.arrays["count"].values.astype(np.int64)
    sym = e.arrays["symbols"].values.astype(np.int64)
    ptr = e.arrays["rowptr"].values.astype(np.int64)
    cb = e.arrays["codebook"].values.astype(np.float32)
    g = e.meta["gap_bits"]
    out = np.zeros((e.rows, e.cols), np.float32)
    i = 0
    for row in range(e.rows):
        pos = 0
        for _ in range(int(ptr[row + 1] - ptr[row])):
            code = first = index = 0
            for n in count:
                code |= int(bits[i])
                i += 1
                if code - first < n:
                    s = int(sym[index + code - first])
                    break
                index += int(n)
                first = (first + int(n)) << 1
                code <<= 1
            else:
                raise ValueError("damaged Huffman stream")
            pos += s & ((1 << g) - 1)
            out[row, pos] = cb[s >> g]
            pos += 1
    return out


ENCODINGS[CodebookHuff.name] = CodebookHuff()
REPRESENTATIONS["huffman"] = Representation("huffman", ("codebook", "codebook_csr", "codebook_rel", "codebook_huff"))
