"""save_compressed_model(model, "int8"/"codebook", quantize=True): one call from a float model to
weight-only quantized C (BatchNorm folded and weights quantized on a copy; error vs float reported)."""

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers import assert_parity, randomize_batchnorm

from codegen import CodegenError, save_compressed_model, verify
from codegen.formats import int8_grid
from codegen.quantize import quantized_copy


def _net():
    torch.manual_seed(0)
    return randomize_batchnorm(nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 6, 3, groups=6),
        nn.BatchNorm2d(6), nn.ReLU6(), nn.Flatten(), nn.Linear(6 * 5 * 5, 8), nn.BatchNorm1d(8), nn.Linear(8, 4),
    ).eval())  # fmt: skip


@pytest.mark.parametrize("representation,bits", [("int8", 4), ("codebook", 3)])
def test_quantize_option_emits_the_quantized_copy_and_reports_the_error(tmp_path, representation, bits):
    model = _net()
    before = copy.deepcopy(model.state_dict())
    xs = torch.randn(6, 2, 7, 7, generator=torch.Generator().manual_seed(1))
    res = save_compressed_model(model, representation, xs[:1], tmp_path / "m", quantize=True, codebook_bits=bits,
                                calibration_data=xs)  # fmt: skip
    # the user's model is untouched: the default keeps emitting exactly its weights
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    q, folded = quantized_copy(model, representation, bits)
    assert folded == [("0", "1"), ("3", "4"), ("7", "8")]
    for m in (q[0], q[3], q[7], q[9]):
        w = m.weight.detach().numpy()
        if representation == "int8":
            assert isinstance(int8_grid(w), tuple)
        else:
            assert len(np.unique(w)) <= 2**bits + 1
    # the C computes the quantized copy (bit-for-bit weights: parity at the float tolerance) ...
    v = verify(q, tmp_path / "m", xs)
    assert_parity(v.outputs, v.reference, f"{representation} quantized copy")
    # ... and the reported error is that copy's against the float model on the given inputs
    with torch.no_grad():
        ref, out = model(xs).double(), q(xs).double()
    err = float((out - ref).abs().max())
    rep = res.report["quantization"]
    assert rep["max_abs_error_vs_float"] == pytest.approx(err, rel=1e-9) and rep["samples"] == 6
    assert rep["max_rel_error_vs_float"] == pytest.approx(err / float(ref.abs().max()), rel=1e-9)
    assert rep["batchnorm_folded"] == ["0 <- 1", "3 <- 4", "7 <- 8"]
    # quantization moved the output (int8 by little; 3-bit codebooks of random weights by much more)
    assert 0 < err < (0.05 if representation == "int8" else 0.5) * float(ref.abs().max())
    # the C's error against the float model is what the report says (up to float rounding)
    c_err = float(np.abs(v.outputs.astype(np.float64) - ref.numpy()).max())
    assert c_err == pytest.approx(err, rel=1e-3, abs=1e-5)
    assert (tmp_path / "m" / "report.json").read_text().count("max_abs_error_vs_float") == 1


def test_default_keeps_the_weights_and_refuses_a_float_model(tmp_path):
    with pytest.raises(CodegenError, match="int8"):
        save_compressed_model(_net(), "int8", torch.randn(1, 2, 7, 7), tmp_path / "m")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("kwargs,match", [
    (dict(representation="csr"), "'int8' or 'codebook'"),
    (dict(representation="int8", integer=True, calibration_data=torch.randn(4, 2, 7, 7)), "use one of them"),
    (dict(representation="int8", calibration_data=[torch.randn(1, 2, 7, 7)]), "tensor"),
])  # fmt: skip
def test_quantize_option_refuses_what_it_cannot_do(tmp_path, kwargs, match):
    with pytest.raises(CodegenError, match=match):
        save_compressed_model(_net(), input_data=torch.randn(1, 2, 7, 7), directory=tmp_path / "m", quantize=True,
                              **kwargs)  # fmt: skip
    assert not (tmp_path / "m").exists()
