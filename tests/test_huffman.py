"""Huffman archives: bit-exact round trips (pruned + shared, pruned only, nested modules, empty
layers, buffers), the canonical code, corrupt files, and the per-stage byte report."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from codegen import weight_bytes
from codegen.quantize import share_weights_
from sparsecomp import ArchiveError, compare_stages, huffman_decode, huffman_encode
from sparsecomp.huffman import canonical_codes, code_lengths, encode_archive, huffman_stream

torch.set_num_threads(1)


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU()),
                                      nn.Conv2d(6, 8, 3), nn.ReLU())
        self.head = nn.ModuleDict({"fc1": nn.Linear(8 * 4 * 4, 64), "fc2": nn.Linear(64, 10)})

    def forward(self, x):
        x = torch.flatten(self.features(x), 1)
        return self.head["fc2"](torch.relu(self.head["fc1"](x)))


def _pruned(model: nn.Module, keep: float = 0.2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach()
            thr = w.abs().flatten().kthvalue(max(1, int((1 - keep) * w.numel()))).values
            with torch.no_grad():
                m.weight.mul_(w.abs() > thr)  # makes -0.0 too, like the compressor's masks
        if isinstance(m, nn.BatchNorm2d):
            m.train()
    model(torch.randn(4, 1, 8, 8))  # BatchNorm running statistics and num_batches_tracked
    return model.eval()


def _bits(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().view(torch.int32).numpy() if t.dtype == torch.float32 else t.numpy()


def _assert_same(sd: dict, back: dict) -> None:
    assert list(sd) == list(back)
    for k, v in sd.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        if v.dtype == torch.float32:
            a, b = _bits(v), _bits(back[k])
            nz = (a & 0x7FFFFFFF) != 0
            assert np.array_equal(a[nz], b[nz]), k  # every nonzero bit for bit
            assert np.all(b[~nz] == 0), k  # zeros come back as +0.0
            assert torch.equal(v, back[k]), k
        else:
            assert torch.equal(v, back[k]), k


def test_round_trip_pruned_and_shared(tmp_path):
    model = _pruned(Nested())
    share_weights_(model, {"features.0.0": 3, "features.1": 4, "head.fc1": 3, "head.fc2": 5})
    sd = model.state_dict()
    path = tmp_path / "m.scz"
    n = huffman_encode(model, path)
    assert n == path.stat().st_size
    _, entries = encode_archive(model)
    kinds = {e.name: e.kind for e in entries}
    assert kinds["head.fc1.weight"] == "sparse" and kinds["head.fc1.bias"] == "raw"
    assert kinds["features.0.1.num_batches_tracked"] == "raw"
    fc1 = next(e for e in entries if e.name == "head.fc1.weight")
    w = model.head["fc1"].weight
    assert fc1.parts["codebook"] == 4 * len(torch.unique(w[w != 0])) <= 4 * 8  # indices into <= 8 values
    back = huffman_decode(path)
    _assert_same(sd, back)
    fresh = Nested()
    huffman_decode(path, model=fresh)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(fresh.eval()(x), model(x))
    raw = sum(t.numel() * t.element_size() for t in sd.values())
    assert n < raw / 5


def test_round_trip_pruned_only_keeps_float_values():
    model = _pruned(Nested(), keep=0.1, seed=1)
    buf = io.BytesIO()
    n = huffman_encode(model, buf)
    _, entries = encode_archive(model)
    fc1 = next(e for e in entries if e.name == "head.fc1.weight")
    nnz = int((model.head["fc1"].weight != 0).sum())
    assert fc1.kind == "sparse" and fc1.parts["values"] == 4 * nnz and fc1.parts["codebook"] == 0
    assert fc1.parts["gaps"] < nnz  # the gaps cost less than a byte each
    _assert_same(model.state_dict(), huffman_decode(io.BytesIO(buf.getvalue())))
    assert n == len(buf.getvalue())


def test_empty_and_odd_tensors():
    sd = {
        "all_zero.weight": torch.zeros(4, 5),
        "negzero.weight": -torch.zeros(3, 3),
        "empty.weight": torch.zeros(3, 0),
        "scalar": torch.tensor(2.5),
        "dense.weight": torch.randn(6, 7),  # incompressible: stored raw
        "one_value.weight": torch.full((8, 8), 0.25),
        "nan.weight": torch.tensor([[float("nan"), 0.0], [0.0, float("inf")]]),
        "ints": torch.arange(5, dtype=torch.int64),
        "half": torch.randn(3, 2).half(),
        "flags": torch.tensor([True, False]),
    }
    data, entries = encode_archive(sd)
    kinds = {e.name: e.kind for e in entries}
    assert kinds["dense.weight"] == "raw" and kinds["all_zero.weight"] == "sparse"
    assert kinds["one_value.weight"] == "sparse"
    back = huffman_decode(io.BytesIO(data))
    for k, v in sd.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        if k == "nan.weight":
            assert np.array_equal(_bits(v), _bits(back[k]))
        else:
            assert torch.equal(v, back[k]), k
    assert _bits(back["negzero.weight"]).tolist() == [[0] * 3] * 3  # -0.0 comes back as +0.0


def test_canonical_huffman_code():
    rng = np.random.default_rng(0)
    sym = rng.geometric(0.3, size=5000) - 1
    counts = {int(s): int(c) for s, c in zip(*np.unique(sym, return_counts=True))}
    lengths = code_lengths(counts)
    assert math.isclose(sum(2.0 ** -n for n in lengths.values()), 1.0)  # complete prefix code (Kraft)
    codes = canonical_codes(lengths)
    words = [format(c, f"0{lengths[s]}b") for s, c in codes.items()]
    assert not any(a != b and b.startswith(a) for a in words for b in words)
    p = np.array(list(counts.values())) / sym.size
    entropy_bits = -(p * np.log2(p)).sum() * sym.size
    payload_bits = sum(counts[s] * lengths[s] for s in counts)
    assert entropy_bits <= payload_bits <= entropy_bits + sym.size
    assert len(huffman_stream(sym)) < sym.size  # under a byte per symbol
    assert code_lengths({7: 10}) == {7: 0}


def test_corrupt_archives_are_refused(tmp_path):
    data, _ = encode_archive(_pruned(Nested()))
    with pytest.raises(ArchiveError, match="bad magic"):
        huffman_decode(io.BytesIO(b"XXXX" + data[4:]))
    with pytest.raises(ArchiveError, match="truncated"):
        huffman_decode(io.BytesIO(data[: len(data) // 2]))
    with pytest.raises(ArchiveError, match="trailing"):
        huffman_decode(io.BytesIO(data + b"\0"))
    with pytest.raises(ArchiveError, match="version"):
        huffman_decode(io.BytesIO(data[:4] + b"\x09" + data[5:]))
    assert list(tmp_path.iterdir()) == []


def test_compare_stages_reports_each_stage():
    model = _pruned(Nested(), keep=0.1)
    x = torch.randn(1, 1, 8, 8)
    pruned = compare_stages(model, x)
    assert pruned.total_codebook is None and all(r.codebook is None for r in pruned.rows)
    share_weights_(model, 4)
    st = compare_stages(model, x)
    assert [r.layer for r in st.rows] == ["features.0.0", "features.1", "head.fc1", "head.fc2"]
    assert st.total_csr == weight_bytes(model, x, "csr").total
    assert st.total_codebook == weight_bytes(model, x, "codebook").total
    assert st.total_huffman == len(encode_archive(model)[0])
    # the archive also holds the BatchNorm tensors codegen folds away, names and shapes: on a model this
    # small only the large layer gains from Huffman coding (LeNet-size numbers are in the benchmark)
    assert st.total_codebook < st.total_csr < st.dense_float32 and st.total_huffman < st.total_csr
    fc1 = next(r for r in st.rows if r.layer == "head.fc1")
    assert fc1.distinct <= 16 and fc1.huffman < fc1.codebook < fc1.csr
    text = str(st)
    assert "head.fc1" in text and "huffman" in text and "total" in text
    assert st.totals()["huffman"] == st.total_huffman
