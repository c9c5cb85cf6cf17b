"""``codebook_huff``: Huffman-coded codebook weights, executed from flash (runtime_c/sc_huff.h).

The entries are those of ``codebook_rel`` (per row: zeros skipped, then a codebook index; filler
entries of value zero bridge gaps longer than ``gap_bits``). Each entry's symbol
``gap | index << gap_bits`` is written as a canonical Huffman code (MSB of the code first) into one
LSB-first stream; the kernels decode the codes inside the dot product. Arrays: the stream, the float
codebook, ``count[l - 1]`` (codes of length l, uint16), the symbols in canonical order (uint16) and the
row pointer (entries). The bytes are exact (``nbytes`` from ``analyze``'s statistics).

Representation "huffman" chooses per tensor the smallest of the codebook forms and this one.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from codegen.formats import (
    GAP_BITS,
    MAX_CODEBOOK,
    QUANT_RUNTIME,
    CArray,
    Encoded,
    Encoding,
    Unencodable,
    _codebook,
    _short,
    _w,
    _zero_runs,
    as_2d,
    index_bits,
    rel_entries,
    uint_ctype,
)

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


def decode(e: Encoded) -> np.ndarray:
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


def _register() -> None:
    from codegen import formats

    formats.ENCODINGS.setdefault(CodebookHuff.name, CodebookHuff())
    formats.REPRESENTATIONS.setdefault("huffman", ("codebook", "codebook_csr", "codebook_rel", "codebook_huff"))


_register()
