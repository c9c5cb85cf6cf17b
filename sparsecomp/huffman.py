"""Huffman archives of a compressed model (Deep Compression, stage 3) and a per-stage byte report.

``huffman_encode(model, path)`` writes every tensor of ``model.state_dict()``: float tensors of two
or more dimensions (Conv/Linear weights) as a sparse stream -- the gaps between nonzeros
(row-major, relative indices) Huffman-coded, and the values either as Huffman-coded indices into a
float32 codebook (weight-shared layers) or as raw float32 (pruned-only layers) -- whenever that is
smaller than the raw bytes; every other tensor (biases, BatchNorm, buffers) raw.
``huffman_decode(path)`` restores a state_dict that is bit-for-bit the original, with one
exception: a pruned weight stored as -0.0 (masking by multiplication makes them) comes back as
+0.0 -- equal values, and codegen treats both as pruned zeros, so the emitted C is identical.
Raw tensors, and every nonzero (NaN payloads included), are bit-exact.  ``compare_stages`` lists the bytes of each
Conv/Linear layer after pruning (csr), after weight sharing (codebook forms) and after Huffman
coding.  Huffman archives are for storage and transmission (the C runtime does not decode them).

Archive layout (little endian)::

    b"SCHF" u8 version  u32 tensor count
    per tensor: u16 name length, name (utf-8), u8 dtype length, dtype name, u8 ndim, u32 dims...,
                u8 kind (0 raw, 1 sparse), payload
    raw:        the tensor's bytes
    sparse:     u32 nnz, u8 value mode (0 codebook, 1 raw float32)
                mode 0: u32 K, K float32 bit patterns, Huffman stream of the nnz indices
                mode 1: nnz float32 bit patterns
                Huffman stream of the nnz gaps (zeros skipped before each nonzero)
    Huffman stream: varint symbol count S, S varint symbols (ascending), S u8 code lengths,
                    u32 payload bytes, payload (canonical codes, MSB first); S == 1 has no payload bits

Example::

    >>> import io, torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(64, 32))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.mul_(net[0].weight.abs() > 0.1)
    >>> buf = io.BytesIO()
    >>> n = huffman_encode(net, buf)
    >>> back = huffman_decode(io.BytesIO(buf.getvalue()))
    >>> all(torch.equal(back[k], v) for k, v in net.state_dict().items())
    True
"""

from __future__ import annotations

import heapq
import io
import logging
import math
import os
import struct
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn as nn

logger = logging.getLogger(__name__)

MAGIC = b"SCHF"
VERSION = 1
RAW, SPARSE = 0, 1
CODEBOOK, RAW_VALUES = 0, 1


class ArchiveError(ValueError):
    """The file is not a sparsecomp Huffman archive, or it is truncated/corrupt."""


# --------------------------------------------------------------------------------------
# canonical Huffman
# --------------------------------------------------------------------------------------
def code_lengths(counts: dict[int, int]) -> dict[int, int]:
    """Huffman code length per symbol (a single symbol gets length 0: it costs no bits)."""
    if len(counts) == 1:
        return {next(iter(counts)): 0}
    heap = [(c, i, [s]) for i, (s, c) in enumerate(sorted(counts.items()))]
    heapq.heapify(heap)
    lengths = dict.fromkeys(counts, 0)
    tie = len(heap)
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
        tie += 1
    return lengths


def canonical_codes(lengths: dict[int, int]) -> dict[int, int]:
    """Canonical codes: sorted by (length, symbol), consecutive integers, left-shifted per length."""
    codes, code, prev = {}, 0, 0
    for s, n in sorted(lengths.items(), key=lambda t: (t[1], t[0])):
        code <<= n - prev
        codes[s] = code
        code += 1
        prev = n
    return codes


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def huffman_stream(symbols: np.ndarray) -> bytes:
    """Table + canonical-Huffman-coded payload of non-negative integer ``symbols``."""
    symbols = np.asarray(symbols, dtype=np.int64).reshape(-1)
    if symbols.size == 0:
        return _varint(0) + struct.pack("<I", 0)
    uniq, inv, cnt = np.unique(symbols, return_inverse=True, return_counts=True)
    lengths = code_lengths({int(s): int(c) for s, c in zip(uniq, cnt)})
    codes = canonical_codes(lengths)
    table = _varint(uniq.size) + b"".join(_varint(int(s)) for s in uniq) + bytes(lengths[int(s)] for s in uniq)
    ln = np.array([lengths[int(s)] for s in uniq], dtype=np.int64)[inv]
    cd = np.array([codes[int(s)] for s in uniq], dtype=np.uint64)[inv]
    lmax = int(ln.max())
    if lmax == 0:
        payload = b""
    else:
        j = np.arange(lmax, dtype=np.int64)
        shift = (ln[:, None] - 1 - j[None, :]).clip(min=0).astype(np.uint64)
        bits = ((cd[:, None] >> shift) & np.uint64(1)).astype(np.uint8)
        payload = np.packbits(bits[j[None, :] < ln[:, None]]).tobytes()
    return table + struct.pack("<I", len(payload)) + payload


class _Reader:
    def __init__(self, data: bytes, max_decoded: int):
        self.data, self.pos = data, 0
        self.left = max_decoded  # bytes the decoded tensors may still take

    def budget(self, nbytes: int, what: str) -> None:
        """Reserves ``nbytes`` of decoded data; refuses more than the archive's length allows."""
        if nbytes > self.left:
            raise ArchiveError(
                f"corrupt archive: {what} would decode to {nbytes:,} bytes, more than this "
                f"{len(self.data):,}-byte archive may hold (max_decoded_bytes; pass a larger one if it is genuine)"
            )
        self.left -= nbytes

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ArchiveError(f"truncated archive: wanted {n} bytes at offset {self.pos} of {len(self.data)}")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def varint(self) -> int:
        n, shift = 0, 0
        while True:
            b = self.take(1)[0]
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n
            if shift > 63:
                raise ArchiveError("corrupt varint in archive")


def _read_huffman(r: _Reader, count: int) -> np.ndarray:
    nsym = r.varint()
    if nsym == 0:
        (plen,) = r.unpack("<I")
        r.take(plen)
        if count:
            raise ArchiveError("corrupt archive: empty Huffman table for a non-empty stream")
        return np.zeros(0, dtype=np.int64)
    if nsym > len(r.data) - r.pos:  # every symbol takes at least one byte of the table
        raise ArchiveError(f"corrupt archive: a Huffman table of {nsym} symbols in {len(r.data) - r.pos} bytes")
    syms = [r.varint() for _ in range(nsym)]
    lengths = dict(zip(syms, r.take(nsym)))
    (plen,) = r.unpack("<I")
    payload = r.take(plen)
    if nsym == 1:
        r.budget(8 * count, "a Huffman stream")
        return np.full(count, syms[0], dtype=np.int64)
    if count > 8 * plen:  # every symbol takes at least one bit
        raise ArchiveError(f"corrupt archive: {count} symbols cannot fit in {plen} bytes of Huffman payload")
    if any(not 0 < n <= 64 for n in lengths.values()):
        raise ArchiveError("corrupt archive: invalid Huffman code length")
    codes = canonical_codes(lengths)
    table = {(lengths[s], c): s for s, c in codes.items()}
    bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8)).tolist()
    out = np.empty(count, dtype=np.int64)
    pos, code, n, k = 0, 0, 0, 0
    nbits = len(bits)
    while k < count:
        if pos >= nbits:
            raise ArchiveError("corrupt archive: Huffman payload ended early")
        code = (code << 1) | bits[pos]
        pos += 1
        n += 1
        s = table.get((n, code))
        if s is not None:
            out[k] = s
            k += 1
            code, n = 0, 0
        elif n > 64:
            raise ArchiveError("corrupt archive: invalid Huffman code")
    return out


# --------------------------------------------------------------------------------------
# tensors
# --------------------------------------------------------------------------------------
def _raw_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    if t.numel() == 0:
        return b""
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def _from_raw(raw: bytes, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    if not raw:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape).clone()


def _sparse_payload(t: torch.Tensor) -> tuple[bytes, dict[str, int]]:
    """The sparse form of a float32 tensor and its part sizes (values, gaps, codebook)."""
    bits = t.detach().cpu().contiguous().reshape(-1).numpy().view(np.uint32)
    pos = np.flatnonzero(bits & np.uint32(0x7FFFFFFF))  # +0.0 and -0.0 are zeros; NaN payloads are values
    vals = bits[pos]
    prev = np.concatenate([[-1], pos[:-1]]) if pos.size else pos
    gaps = pos - prev - 1
    out = struct.pack("<I", pos.size)
    uniq, inv = np.unique(vals, return_inverse=True)
    coded = huffman_stream(inv) if uniq.size <= max(1, pos.size // 2) else None
    if coded is not None and 4 + 4 * uniq.size + len(coded) < 4 * pos.size:
        cb = struct.pack("<BI", CODEBOOK, uniq.size) + uniq.astype("<u4").tobytes()
        values = cb + coded
        parts = {"codebook": 4 * uniq.size, "values": len(coded)}
    else:
        values = struct.pack("<B", RAW_VALUES) + vals.astype("<u4").tobytes()
        parts = {"codebook": 0, "values": 4 * pos.size}
    g = huffman_stream(gaps)
    parts["gaps"] = len(g)
    return out + values + g, parts


def _read_sparse(r: _Reader, shape: tuple[int, ...]) -> torch.Tensor:
    r.budget(4 * math.prod(shape), f"a sparse tensor of shape {shape}")
    (nnz,) = r.unpack("<I")
    (mode,) = r.unpack("<B")
    if mode == CODEBOOK:
        (k,) = r.unpack("<I")
        cb = np.frombuffer(r.take(4 * k), dtype="<u4")
        idx = _read_huffman(r, nnz)
        if idx.size and int(idx.max()) >= k:
            raise ArchiveError("corrupt archive: codebook index out of range")
        vals = cb[idx] if k else np.zeros(0, dtype="<u4")
    elif mode == RAW_VALUES:
        vals = np.frombuffer(r.take(4 * nnz), dtype="<u4")
    else:
        raise ArchiveError(f"corrupt archive: unknown value mode {mode}")
    gaps = _read_huffman(r, nnz)
    numel = math.prod(shape)
    if nnz > numel:
        raise ArchiveError(f"corrupt archive: {nnz} nonzeros in a tensor of {numel} elements")
    pos = np.cumsum(gaps + 1) - 1
    if pos.size and int(pos[-1]) >= numel:
        raise ArchiveError("corrupt archive: nonzero position beyond the tensor")
    out = np.zeros(numel, dtype=np.uint32)
    out[pos] = vals
    return torch.from_numpy(out.view(np.float32).copy()).reshape(shape)


@dataclass
class TensorEntry:
    """How one state_dict tensor was stored: ``kind`` "raw" or "sparse", its bytes in the archive."""

    name: str
    kind: str
    nbytes: int
    parts: dict[str, int] = field(default_factory=dict)


def _state_dict(model_or_state) -> OrderedDict:
    if isinstance(model_or_state, nn.Module):
        return model_or_state.state_dict()
    return OrderedDict(model_or_state)


def encode_archive(model_or_state) -> tuple[bytes, list[TensorEntry]]:
    """The archive bytes of a model (or state_dict) and how each tensor was stored."""
    sd = _state_dict(model_or_state)
    out = io.BytesIO()
    out.write(MAGIC + struct.pack("<BI", VERSION, len(sd)))
    entries = []
    for name, t in sd.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state_dict entry {name!r} is a {type(t).__name__}, not a tensor")
        nb = name.encode()
        dt = str(t.dtype).removeprefix("torch.").encode()
        head = struct.pack("<H", len(nb)) + nb + struct.pack("<B", len(dt)) + dt
        head += struct.pack("<B", t.dim()) + b"".join(struct.pack("<I", d) for d in t.shape)
        raw = _raw_bytes(t)
        kind, body, parts = RAW, raw, {"raw": len(raw)}
        if t.dtype == torch.float32 and t.dim() >= 2 and t.numel() > 0:
            sparse, sparts = _sparse_payload(t)
            if len(sparse) < len(raw):
                kind, body, parts = SPARSE, sparse, sparts
        out.write(head + struct.pack("<B", kind) + body)
        entries.append(TensorEntry(name, "sparse" if kind == SPARSE else "raw", len(head) + 1 + len(body), parts))
    return out.getvalue(), entries


def huffman_encode(model: nn.Module | dict, path: str | os.PathLike | BinaryIO) -> int:
    """Write the Huffman archive of ``model`` (or a state_dict) to ``path`` (a path or a binary file
    object); returns the archive size in bytes.  A path is written atomically (temporary file, rename)."""
    data, entries = encode_archive(model)
    if hasattr(path, "write"):
        path.write(data)  # type: ignore[union-attr]
    else:
        p = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=p.name + ".", suffix=".tmp", dir=p.parent if str(p.parent) else ".")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    logger.info("Huffman archive: %d bytes, %d tensors (%d sparse)", len(data), len(entries),
                sum(e.kind == "sparse" for e in entries))
    return len(data)


MIN_DECODED_BYTES = 64 << 20  # the decoded tensors may take max(64 MiB, 256 x the archive's length)
MAX_EXPANSION = 256


def _text(r: _Reader, n: int, path, what: str) -> str:
    raw = r.take(n)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArchiveError(f"{path}: {what} at offset {r.pos - n} is not UTF-8 text ({raw[:40]!r})") from exc


def huffman_decode(path: str | os.PathLike | BinaryIO, model: nn.Module | None = None, *,
                   max_decoded_bytes: int | None = None) -> OrderedDict:
    """Read an archive written by :func:`huffman_encode`; returns the state_dict (bit-exact) and,
    when ``model`` is given, loads it into the model (strict).

    A damaged or crafted archive raises :class:`ArchiveError`, never a huge allocation: the decoded
    tensors may take at most ``max_decoded_bytes`` (default max(64 MiB, 256 x the archive's length);
    a pruned model's archive is far below that ratio).
    """
    data = path.read() if hasattr(path, "read") else Path(path).read_bytes()  # type: ignore[union-attr]
    if max_decoded_bytes is None:
        max_decoded_bytes = max(MIN_DECODED_BYTES, MAX_EXPANSION * len(data))
    try:
        sd = _decode(_Reader(data, max_decoded_bytes), path)
    except ArchiveError:
        raise
    except (ValueError, IndexError, KeyError, OverflowError, RuntimeError, struct.error, MemoryError) as exc:
        raise ArchiveError(f"{path}: corrupt archive ({type(exc).__name__}: {exc})") from exc
    if model is not None:
        model.load_state_dict(sd)
    return sd


def _decode(r: _Reader, path) -> OrderedDict:
    data = r.data
    if r.take(4) != MAGIC:
        raise ArchiveError(f"{path}: not a sparsecomp Huffman archive (bad magic)")
    version, count = r.unpack("<BI")
    if version != VERSION:
        raise ArchiveError(f"{path}: archive version {version}, this sparsecomp reads version {VERSION}")
    sd: OrderedDict = OrderedDict()
    for _ in range(count):
        (nlen,) = r.unpack("<H")
        name = _text(r, nlen, path, "a tensor name")
        (dlen,) = r.unpack("<B")
        dname = _text(r, dlen, path, f"the dtype of tensor {name!r}")
        dtype = getattr(torch, dname, None)
        if not isinstance(dtype, torch.dtype):
            raise ArchiveError(f"{path}: tensor {name!r} has unknown dtype {dname!r}")
        (ndim,) = r.unpack("<B")
        shape = tuple(r.unpack(f"<{ndim}I")) if ndim else ()
        (kind,) = r.unpack("<B")
        if kind == RAW:
            n = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            sd[name] = _from_raw(r.take(n), dtype, shape)  # take: n is bounded by the file's length
        elif kind == SPARSE:
            sd[name] = _read_sparse(r, shape)
        else:
            raise ArchiveError(f"{path}: tensor {name!r} has unknown storage kind {kind}")
    if r.pos != len(data):
        raise ArchiveError(f"{path}: {len(data) - r.pos} trailing bytes after the last tensor")
    return sd


# --------------------------------------------------------------------------------------
# stage report
# --------------------------------------------------------------------------------------
@dataclass
class StageRow:
    layer: str
    shape: list[int]
    nnz: int
    distinct: int
    csr: int
    codebook: int | None
    huffman: int


@dataclass
class StageReport:
    """Bytes per Conv/Linear layer (weight + bias) after pruning (float csr, codegen's exact count),
    after weight sharing (codebook forms, None when a layer has more than 256 values) and in the
    Huffman archive; totals include every other tensor (and, for Huffman, the archive header)."""

    rows: list[StageRow]
    total_csr: int
    total_codebook: int | None
    total_huffman: int
    dense_float32: int

    def totals(self) -> dict[str, int | None]:
        return {"dense_float32": self.dense_float32, "pruned_csr": self.total_csr,
                "weight_shared_codebook": self.total_codebook, "huffman": self.total_huffman}

    def __str__(self) -> str:
        def n(v):
            return "n/a" if v is None else f"{v:,d}"

        w = max(8, *(len(r.layer) for r in self.rows)) if self.rows else 8
        lines = [f"{'layer':<{w}}  {'shape':<14} {'nnz':>8} {'values':>6} {'pruned(csr)':>12} "
                 f"{'shared(cb)':>11} {'huffman':>9}"]
        for r in self.rows:
            lines.append(f"{r.layer:<{w}}  {'x'.join(map(str, r.shape)):<14} {r.nnz:>8,d} {r.distinct:>6,d} "
                         f"{r.csr:>12,d} {n(r.codebook):>11} {r.huffman:>9,d}")
        lines.append(f"{'total':<{w}}  {'':<14} {'':>8} {'':>6} {self.total_csr:>12,d} {n(self.total_codebook):>11} "
                     f"{self.total_huffman:>9,d}   (dense float32 {self.dense_float32:,d})")
        return "\n".join(lines)


def compare_stages(model: nn.Module, example_input: torch.Tensor) -> StageReport:
    """Bytes of ``model`` as emitted with csr, as emitted with codebook forms, and as a Huffman archive.

    The csr and codebook columns are codegen's exact counts (``codegen.weight_bytes``; the
    codebook column needs every weight to hold at most 256 distinct values).  Run it on the
    compressed model (BatchNorm folded, so the state_dict holds the emitted weights).
    """
    from codegen.errors import CodegenError
    from codegen.formats import MAX_CODEBOOK

    from .budget import exact_weight_bytes
    from .pruning import find_compressible_layers

    csr = exact_weight_bytes(model, example_input, "csr")
    try:
        cb = exact_weight_bytes(model, example_input, "codebook")
    except CodegenError:
        cb = None
    data, entries = encode_archive(model)
    by_name = {e.name: e.nbytes for e in entries}
    rows = []
    for name, m in find_compressible_layers(model).items():
        w = m.weight.detach()
        distinct = int(torch.unique(w[w != 0]).numel())
        huff = sum(by_name.get(f"{name}.{p}", 0) for p in ("weight", "bias"))
        rows.append(StageRow(name, list(w.shape), int((w != 0).sum()), distinct, csr.layers.get(name, 0),
                             None if cb is None or distinct > MAX_CODEBOOK else cb.layers.get(name, 0), huff))
    dense = sum(int(p.numel()) * 4 for p in model.state_dict().values() if p.is_floating_point())
    return StageReport(rows, int(csr.total), None if cb is None else int(cb.total), len(data), dense)
