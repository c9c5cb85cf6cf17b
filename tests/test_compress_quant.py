"""compress_NN_models with representation int8 / codebook / auto: exact budget (checked with nm on the
emitted object), BatchNorm folded first, the model ends quantized/shared, per-layer encodings in
the report, bad input."""

from __future__ import annotations

import copy
import shutil
import subprocess

import pytest
import torch
import torch.nn as nn
from helpers import nm_weight_bytes
from test_compress import FAST, Net, sample

from codegen import save_compressed_model, weight_bytes
from codegen.api import emit_representation
from codegen.formats import int8_grid
from sparsecomp import WeightSharingError, compress_NN_models, load_digits

torch.set_num_threads(1)
QFAST = {**FAST, "layers_factorization": False, "quant_epochs": 1}


@pytest.fixture(scope="module")
def digits():
    return load_digits(batch_size=64, seed=0)


@pytest.fixture(scope="module")
def trained(digits):
    train, _, _ = digits
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(6):
        for x, y in train:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model


def _distinct_nonzero(m: nn.Module) -> int:
    w = m.weight.detach()
    return int(torch.unique(w[w != 0]).numel())


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="needs a C compiler")
@pytest.mark.parametrize("rep", ["per-layer", "auto"])
def test_auto_budget_checked_with_nm(rep, trained, digits, tmp_path):
    """per-layer (float/int8/codebook per layer) and auto (the best probe): emitted with the
    representation recorded on the model, the bytes nm sees are the report's, <= budget."""
    train, val, test = digits
    model = copy.deepcopy(trained)
    report = compress_NN_models(model, "5KB", train, test, val_loader=val, representation=rep, **QFAST)
    assert isinstance(model.features[0][1], nn.Identity)  # BatchNorm folded before quantizing
    assert report.final_bytes <= 5000 == report.target_bytes
    assert report.final_bytes == weight_bytes(model, sample(digits), emit_representation(model, None)).total
    if rep == "auto":
        probed = [p.representation for p in report.probes]
        assert probed in (["int8", "per-layer", "codebook", "csr"], ["int8", "per-layer", "codebook", "csr", "huffman"])
        assert "auto probes" in str(report)
    out = tmp_path / "auto"
    res = save_compressed_model(model.eval(), input_data=sample(digits), directory=out)
    assert res.weight_bytes == report.final_bytes
    assert nm_weight_bytes(out) == report.final_bytes
    run = subprocess.run(["make", "-s", "-C", str(out), "check"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    text = str(report)
    assert "quantization" in text and "head.fc1" in text
    formats = {r.name: r.format for r in report.layers}
    assert any(f.startswith(("codebook", "int8")) for f in formats.values()), formats
    assert report.test_accuracy_after > 0.8


def test_int8_prunes_quantizes_and_fine_tunes(trained, digits):
    train, val, test = digits
    model = copy.deepcopy(trained)
    report = compress_NN_models(model, "5KB", train, test, val_loader=val, representation="int8", **QFAST)
    assert report.final_bytes <= 5000
    assert report.final_bytes == weight_bytes(model, sample(digits), "int8").total
    for name in ("features.0.0", "features.1", "head.fc1", "head.fc2"):
        w = model.get_submodule(name).weight.detach().numpy()
        assert isinstance(int8_grid(w.reshape(w.shape[0], -1)), tuple), name
    assert {r.format for r in report.layers} <= {"int8", "int8_csr", "int8_rel"}
    assert report.initial_bytes == weight_bytes(trained, sample(digits), "csr").total
    assert report.val_accuracy_after > 0.8


def test_codebook_with_fixed_bits(trained, digits):
    train, val, test = digits
    model = copy.deepcopy(trained)
    bits = {"features.0.0": 5, "features.1": 4, "head.fc1": 3, "head.fc2": 4}
    report = compress_NN_models(model, "4KB", train, test, val_loader=val, representation="codebook", bits=bits,
                                **QFAST)
    assert report.final_bytes <= 4000
    assert report.final_bytes == weight_bytes(model, sample(digits), "codebook").total
    for name, b in bits.items():
        assert _distinct_nonzero(model.get_submodule(name)) <= 2**b, name
    assert "head.fc1=codebook/3b" in report.quantization


def test_bad_quantization_arguments(trained, digits):
    train, val, test = digits
    with pytest.raises(ValueError, match="representation must be one of"):
        compress_NN_models(copy.deepcopy(trained), 5, train, test, val_loader=val, representation="int4", **QFAST)
    with pytest.raises(WeightSharingError, match=r"layer 'head\.fc1'.*1 to 8"):
        compress_NN_models(copy.deepcopy(trained), 5, train, test, val_loader=val, representation="codebook",
                           bits={"head.fc1": 12}, **QFAST)
    with pytest.raises(WeightSharingError, match="no Conv1d/Conv2d/Linear layer named"):
        compress_NN_models(copy.deepcopy(trained), 5, train, test, val_loader=val, representation="codebook",
                           bits={"head.fc9": 4}, **QFAST)
    bad = copy.deepcopy(trained)
    with torch.no_grad():
        bad.head["fc2"].weight[0, 0] = float("nan")
    with pytest.raises(WeightSharingError, match=r"head\.fc2.*NaN"):
        compress_NN_models(bad, 5, train, test, val_loader=val, representation="int8", **QFAST)
