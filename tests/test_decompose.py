"""Decomposition parity: factorized layers compute what the original did."""

import pytest
import tensorly as tl
import torch
import torch.nn as nn

from sparsecomp.decompose import (
    DecompositionError,
    cp_conv,
    decompose,
    svd_energy_rank,
    svd_linear,
    tucker2_conv,
)
from sparsecomp.pruning import replace_module


@pytest.mark.parametrize("stride,padding,dilation,bias", [(1, 1, 1, True), (2, 0, 1, False), (1, 2, 2, True)])
def test_tucker2_full_rank_is_exact(stride, padding, dilation, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 3, stride=stride, padding=padding, dilation=dilation, bias=bias)
    seq = tucker2_conv(conv, ranks=(10, 6))
    x = torch.randn(2, 6, 11, 11)
    assert torch.allclose(seq(x), conv(x), atol=1e-4)
    assert [type(m) for m in seq] == [nn.Conv2d] * 3
    assert seq[0].kernel_size == (1, 1) and seq[2].kernel_size == (1, 1)
    assert (seq[2].bias is not None) == bias


def test_tucker2_recovers_a_low_rank_kernel_with_vbmf_ranks():
    torch.manual_seed(0)
    core = torch.randn(3, 2, 3, 3)
    w = torch.einsum("abij,oa,cb->ocij", core, torch.randn(24, 3), torch.randn(16, 2))
    conv = nn.Conv2d(16, 24, 3, padding=1)
    conv.weight.data = w + 0.001 * torch.randn_like(w)
    seq = tucker2_conv(conv)  # VBMF ranks
    assert seq[1].weight.shape[:2] == (3, 2)
    x = torch.randn(2, 16, 7, 7)
    ref = conv(x)
    assert (seq(x) - ref).abs().max() / ref.abs().max() < 0.01


def test_svd_linear_parity_and_truncation_error():
    torch.manual_seed(0)
    lin = nn.Linear(40, 30)
    x = torch.randn(5, 40)
    assert torch.allclose(svd_linear(lin, 30)(x), lin(x), atol=1e-5)
    lin.weight.data = torch.randn(30, 4) @ torch.randn(4, 40)
    low = svd_linear(lin, 4)
    assert low[0].weight.shape == (4, 40) and low[0].bias is None
    assert torch.allclose(low(x), lin(x), atol=1e-4)
    assert svd_energy_rank(lin, 0.999) <= 4


def test_cp_conv_approximates_and_keeps_geometry():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 12, 3, stride=2, padding=1)
    x = torch.randn(2, 6, 9, 9)
    seq = cp_conv(conv, 40)
    ref = conv(x)
    assert seq(x).shape == ref.shape
    assert (seq(x) - ref).abs().max() / ref.abs().max() < 0.1
    assert seq[1].groups == 40 and seq[2].groups == 40


def test_backend_is_restored():
    before = tl.get_backend()
    tucker2_conv(nn.Conv2d(4, 4, 3), ranks=(2, 2))
    assert tl.get_backend() == before


def test_failures_raise_instead_of_being_swallowed():
    with pytest.raises(DecompositionError, match="grouped"):
        tucker2_conv(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(DecompositionError, match="out of range"):
        tucker2_conv(nn.Conv2d(4, 4, 3), ranks=(9, 1))
    with pytest.raises(DecompositionError):
        svd_linear(nn.Linear(4, 4), 0)
    with pytest.raises(DecompositionError, match="unknown"):
        decompose(nn.Linear(4, 4), "magic", 2)
    bad = nn.Linear(4, 4)
    bad.weight.data[0, 0] = float("nan")
    with pytest.raises(DecompositionError):
        svd_linear(bad, 2)


def test_replacing_nested_layers_keeps_the_model_equal():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()), nn.Flatten(),
                          nn.ModuleDict({"fc": nn.Linear(8 * 5 * 5, 6)}))

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = model

        def forward(self, x):
            b = self.body
            return b[2]["fc"](b[1](b[0](x)))

    w = Wrap()
    x = torch.randn(2, 3, 5, 5)
    ref = w(x)
    replace_module(w, "body.0.0", tucker2_conv(w.body[0][0], ranks=(8, 3)))
    replace_module(w, "body.2.fc", svd_linear(w.body[2]["fc"], 6))
    assert torch.allclose(w(x), ref, atol=1e-4)
    torch.fx.symbolic_trace(w)  # still traceable
