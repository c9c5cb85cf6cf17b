"""Huffman-coded codebook weights executed from flash (issue 18 item 4): ``codebook_huff`` round-trips
bit-exactly through the Python reference of the kernel's decoder, its bytes are exact (report == nm),
and the C (linear and conv kernels decoding the codes inside the dot product) matches PyTorch on the host
and on the emulated Cortex-M4."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import emit_and_verify, nm_weight_bytes

from codegen import formats, weight_bytes
from codegen.formats import CodebookHuff, canonical, code_lengths
from codegen.formats import huff_decode as decode

HUFF = formats.ENCODINGS["codebook_huff"]


def _shared(shape, k, density, seed):
    rng = np.random.default_rng(seed)
    vals = np.sort(rng.normal(size=k)).astype(np.float32)
    w = vals[rng.integers(0, k, size=shape)]
    w[rng.random(shape) > density] = 0
    return w


@pytest.mark.parametrize("shape,k,density", [((30, 200), 4, 0.2), ((8, 3, 5, 5), 16, 0.5), ((5, 700), 32, 0.05),
                                             ((1, 1), 1, 1.0), ((4, 9), 3, 1.0)])
def test_round_trip_and_exact_bytes(shape, k, density):
    w = _shared(shape, k, density, 0)
    if not np.count_nonzero(w):
        w.flat[0] = 1.0
    e = HUFF.encode(w, "t")
    assert np.array_equal(decode(e), w.reshape(w.shape[0], -1))
    assert e.nbytes == HUFF.tensor_nbytes(w)
    assert max(e.arrays["count"].values.size, 1) <= 24 and e.nnz == np.count_nonzero(w)


def test_canonical_code_is_prefix_free_and_optimal_lengths():
    counts = np.array([5, 0, 9, 12, 13, 16, 45])
    ln = code_lengths(counts)
    codes, count, order = canonical(ln)
    assert ln[1] == 0 and sum(2.0 ** -ln[ln > 0]) == 1.0  # complete code
    assert int((ln * counts).sum()) == 5 * 4 + 9 * 4 + 12 * 3 + 13 * 3 + 16 * 3 + 45 * 1
    words = [format(codes[s], f"0{ln[s]}b") for s in order]
    assert not any(a != b and b.startswith(a) for a in words for b in words)


def test_huffman_is_smaller_than_the_fixed_width_forms_on_skewed_indices():
    rng = np.random.default_rng(1)
    vals = np.linspace(-1, 1, 16).astype(np.float32)
    p = np.r_[0.5, 0.2, 0.1, np.full(13, 0.2 / 13)]
    w = vals[rng.choice(16, size=(64, 400), p=p / p.sum())]
    w[rng.random(w.shape) > 0.3] = 0
    best_fixed = min(formats.ENCODINGS[n].tensor_nbytes(w) for n in ("codebook", "codebook_csr", "codebook_rel"))
    assert HUFF.tensor_nbytes(w) < 0.9 * best_fixed
    assert formats.choose_encoding(w, "huffman").name == "codebook_huff"
    assert formats.choose_encoding(w, "auto").name != "codebook_huff"  # "auto" is unchanged


def test_unencodable_beyond_256_values():
    with pytest.raises(formats.Unencodable):
        CodebookHuff().encode(np.arange(1, 601, dtype=np.float32).reshape(3, -1), "t")


def _model(seed=0):
    """Shared, pruned weights with skewed value frequencies (what Huffman coding pays off on)."""
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Conv2d(2, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3),
                            torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(16 * 6 * 6, 40), torch.nn.ReLU(),
                            torch.nn.Linear(40, 10)).eval()
    rng = np.random.default_rng(seed)
    p = np.array([0.55, 0.25, 0.08, 0.04, 0.03, 0.02, 0.02, 0.01])
    with torch.no_grad():
        for layer in (m[0], m[2], m[5], m[7]):
            vals = np.linspace(-0.3, 0.3, 8).astype(np.float32)[rng.permutation(8)]
            q = vals[rng.choice(8, size=tuple(layer.weight.shape), p=p)]
            q[rng.random(q.shape) < 0.5] = 0
            layer.weight.copy_(torch.from_numpy(q))
    return m


def test_c_matches_pytorch_and_nm(tmp_path):
    m = _model()
    res = emit_and_verify(m, (1, 2, 8, 8), "huffman", tmp_path / "h")
    fmts = [ly["format"] for ly in res.report["layers"] if ly["weight_shape"]]
    assert fmts[1] == fmts[2] == "codebook_huff", fmts  # a conv and a linear kernel
    total = res.report["totals"]["weight_bytes"]
    assert total == weight_bytes(m, (1, 2, 8, 8), "huffman").total == nm_weight_bytes(tmp_path / "h" / "model")
    assert total < weight_bytes(m, (1, 2, 8, 8), "codebook").total


@pytest.mark.board
def test_runs_on_the_emulated_m4(tmp_path):
    from test_board import require_board

    from codegen import board, save_compressed_model

    require_board()
    m = _model(1)
    x = torch.randn(1, 2, 8, 8)
    save_compressed_model(m, "huffman", x, tmp_path / "h")
    r = board.run(tmp_path / "h", "m4")
    assert r.passed, r.stdout + r.stderr
    with torch.no_grad():
        ref = m(x).numpy().reshape(-1)
    np.testing.assert_allclose(r.outputs, ref, atol=1e-4 * float(np.abs(ref).max()) + 1e-6, rtol=0)
