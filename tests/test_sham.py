"""sHAM's quantizers (issue 18 item 3): PWS, UQ, ECSQ beside CWS give codebook weights that codegen stores
exactly (bytes == nm), the C matches PyTorch, and compress_NN_models(representation=...) runs them to an
exact budget."""

from __future__ import annotations

import copy
import shutil
import subprocess

import numpy as np
import pytest
import torch
from helpers import emit_and_verify, nm_weight_bytes
from test_compress import Net, sample
from test_compress_quant import QFAST, digits, trained  # noqa: F401 - module fixtures

from codegen import save_compressed_model, weight_bytes
from codegen.quantize import share_array
from sparsecomp import compress_NN_models
from sparsecomp.sham import METHODS, ecsq, pws, share, uq

_W = np.random.default_rng(0).normal(size=(40, 50)).astype(np.float32)
_W[:, ::3] = 0  # pruned weights stay zero


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("bits", [2, 5])
def test_values_zeros_and_dtype(method, bits):
    q = share(_W, bits, method)
    assert q.dtype == np.float32 and q.shape == _W.shape
    assert np.array_equal(q == 0, _W == 0)
    nz = np.unique(q[q != 0])
    assert 1 <= nz.size <= 2**bits
    assert nz.min() >= _W[_W != 0].min() - 1e-6 and nz.max() <= _W[_W != 0].max() + 1e-6


def test_uq_is_the_nearest_uniform_level():
    q = uq(_W, 3)
    v = _W[_W != 0].astype(np.float64)
    grid = np.linspace(v.min(), v.max(), 8)
    assert np.allclose(np.unique(q[q != 0]), np.unique(grid[np.abs(v[:, None] - grid).argmin(1)]).astype(np.float32))
    assert np.max(np.abs(q[_W != 0] - v)) <= (grid[1] - grid[0]) / 2 + 1e-6
    with pytest.raises(ValueError, match="2 to 8"):
        uq(_W, 1)


def test_pws_is_unbiased_between_neighbours():
    w = np.random.default_rng(1).uniform(-1, 1, size=200_000).astype(np.float32)
    q = pws(w, 2)
    grid = np.linspace(w.min(), w.max(), 4)
    step = grid[1] - grid[0]
    assert np.max(np.abs(q - w)) <= step + 1e-6  # one of the two neighbours
    assert abs(float(np.mean(q.astype(np.float64) - w))) < 2e-3  # E[q(w)] = w
    assert not np.array_equal(q, uq(w, 2))  # stochastic, not nearest
    assert np.array_equal(q, pws(w, 2))  # seeded


def test_ecsq_trades_distortion_for_entropy():
    def entropy(q):
        _, c = np.unique(q[q != 0], return_counts=True)
        p = c / c.sum()
        return float(-(p * np.log2(p)).sum())

    lo, hi = ecsq(_W, 4, lam=0.0), ecsq(_W, 4, lam=0.3)
    assert entropy(hi) < entropy(lo)
    assert np.mean((hi - _W) ** 2) > np.mean((lo - _W) ** 2)
    # lambda 0 is Lloyd's k-means from the same uniform start, i.e. CWS
    assert np.allclose(lo, share_array(_W, 4), atol=1e-5)


@pytest.mark.parametrize("method", ["pws", "uq", "ecsq"])
def test_emitted_exactly_and_matches_pytorch(method, tmp_path):
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("needs a C compiler")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(6 * 6 * 6, 10)).eval()
    with torch.no_grad():
        for m in (model[0], model[3]):
            m.weight[m.weight.abs() < 0.05] = 0
            m.weight.copy_(torch.from_numpy(share(m.weight.numpy(), 3, method)))
    res = emit_and_verify(model, (1, 1, 8, 8), "codebook", tmp_path / "m")
    assert res.report["totals"]["weight_bytes"] == weight_bytes(model, (1, 1, 8, 8), "codebook").total
    assert {ly["format"] for ly in res.report["layers"] if ly["format"] != "-"} <= {"codebook", "codebook_csr",
                                                                                   "codebook_rel", "dense"}


@pytest.mark.parametrize("method", ["uq", "ecsq"])
def test_compress_nn_models_with_a_sham_quantizer(method, trained, digits, tmp_path):  # noqa: F811
    train, val, test = digits
    model = copy.deepcopy(trained)
    report = compress_NN_models(model, "5KB", train, test, val_loader=val, representation=method, bits=4, **QFAST)
    assert report.final_bytes <= 5000
    assert report.final_bytes == weight_bytes(model, sample(digits), "codebook").total
    for name in ("features.0.0", "features.1", "head.fc1", "head.fc2"):
        w = model.get_submodule(name).weight.detach()
        assert torch.unique(w[w != 0]).numel() <= 16, name
    out = tmp_path / "m"
    res = save_compressed_model(model.eval(), input_data=sample(digits), directory=out)
    assert res.report["representation"] == "codebook" and nm_weight_bytes(out) == report.final_bytes
    run = subprocess.run(["make", "-s", "-C", str(out), "check"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_unknown_representation_lists_the_quantizers(trained, digits):  # noqa: F811
    train, val, test = digits
    with pytest.raises(ValueError, match="ecsq"):
        compress_NN_models(Net(), 5, train, test, val_loader=val, representation="kmeans", **QFAST)
