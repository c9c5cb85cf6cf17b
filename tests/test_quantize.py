"""codegen.quantize: int8 fake quantization and k-means weight sharing (in place), and the int8
grid recovery the int8 encodings rely on. No C compiler needed."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers import sparsify_

from codegen import CodegenError, formats
from codegen.quantize import kmeans_1d, quantize_int8_, share_weights_, weight_layers


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.dw = nn.Conv2d(8, 8, 3, groups=8)
        self.c1 = nn.Conv1d(8, 4, 3)
        self.fc = nn.Linear(92, 10)  # for 3x9x9 inputs
        self.bn = nn.BatchNorm1d(10)  # not a weight layer

    def forward(self, x):
        x = self.dw(self.conv(x))
        return self.bn(self.fc(self.c1(x.flatten(2)).flatten(1)))


def make_net(density: float = 1.0, seed: int = 0) -> Net:
    torch.manual_seed(seed)
    net = Net().eval()
    for i, (_, m) in enumerate(weight_layers(net)):
        sparsify_(m.weight, density, seed=i)
    with torch.no_grad():
        net.conv.weight[2].zero_()  # an all-zero output channel
        net.fc.weight[0, :5] *= 1e-30  # tiny values
        net.fc.weight[1] *= 1e6  # large row
    return net


def test_weight_layers_finds_every_linear_and_conv():
    assert [n for n, _ in weight_layers(make_net())] == ["conv", "dw", "c1", "fc"]


@pytest.mark.parametrize("density", [1.0, 0.3])
def test_quantize_int8_gives_an_exact_per_channel_grid(density):
    net = make_net(density)
    before = {n: m.weight.detach().clone() for n, m in weight_layers(net)}
    biases = {n: m.bias.detach().clone() for n, m in weight_layers(net)}
    quantize_int8_(net)
    for name, m in weight_layers(net):
        w = m.weight.detach().numpy()
        w0 = before[name].numpy().reshape(w.shape[0], -1)
        w2 = w.reshape(w.shape[0], -1)
        q, scale = formats.int8_grid(w2)
        np.testing.assert_array_equal(q.astype(np.float32) * scale[:, None], w2)  # exact in float32
        assert q.min() >= -127 and q.max() <= 127
        expected_scale = (np.abs(w0).max(axis=1).astype(np.float64) / 127).astype(np.float32)
        np.testing.assert_array_equal(scale, expected_scale)  # symmetric per output channel
        rows = np.abs(w0).max(axis=1) > 0
        assert np.all(np.abs(q[rows]).max(axis=1) == 127)
        assert np.all(w2[w0 == 0] == 0)  # zeros stay zero (values below scale/2 become zero too)
        assert np.all(np.abs(w2 - w0) <= scale[:, None] / 2 * (1 + 1e-6))  # round to nearest
        torch.testing.assert_close(m.bias, biases[name], rtol=0, atol=0)  # biases stay float
    snapshot = copy.deepcopy(net.state_dict())
    quantize_int8_(net)  # idempotent
    for k, v in net.state_dict().items():
        assert torch.equal(v, snapshot[k]), k


def test_int8_grid_recovers_other_symmetric_grids():
    rng = np.random.default_rng(0)
    rows = []
    for s in np.logspace(-30, 30, 25).astype(np.float32):
        q = rng.integers(-128, 128, 50)
        q[0] = -128  # max |q| = 128 (PyTorch's qint8 range)
        rows.append(q.astype(np.float32) * s)
    w = np.stack(rows)
    q, scale = formats.int8_grid(w)
    np.testing.assert_array_equal(q.astype(np.float32) * scale[:, None], w)
    # one scale for the whole tensor: rows whose max |q| is below 127 are found too
    s = np.float32(0.0123)
    qt = rng.integers(-127, 128, (6, 30))
    qt[0, 0] = 127
    qt[3] = rng.integers(-20, 21, 30)
    wt = qt.astype(np.float32) * s
    q, scale = formats.int8_grid(wt)
    np.testing.assert_array_equal(q.astype(np.float32) * scale[:, None], wt)


def test_int8_grid_rejects_float_weights():
    w = np.random.default_rng(0).standard_normal((4, 30)).astype(np.float32)
    assert formats.int8_grid(w) == 0
    from codegen.quantize import int8_quantize_array

    wq = int8_quantize_array(w)
    wq[2, 5] = np.nextafter(wq[2, 5], np.float32(10))  # one value off the grid by one ulp
    assert formats.int8_grid(wq) == 2


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("density", [1.0, 0.2])
def test_share_weights_keeps_zeros_and_at_most_2_to_the_bits_values(bits, density):
    net = make_net(density)
    before = {n: m.weight.detach().clone() for n, m in weight_layers(net)}
    share_weights_(net, bits)
    for name, m in weight_layers(net):
        w = m.weight.detach()
        w0 = before[name]
        assert torch.equal(w == 0, w0 == 0), name  # sparsity is kept exactly
        nz = torch.unique(w[w != 0])
        assert nz.numel() <= 2**bits
        if torch.unique(w0[w0 != 0]).numel() <= 2**bits:
            assert torch.equal(w, w0)  # already shared: untouched
        # every weight went to a centroid no farther than the largest gap between its neighbours
        assert float((w - w0).abs().max()) <= float(w0.abs().max())
        e = formats.ENCODINGS["codebook_csr"].encode(w.numpy(), "t")
        assert e.meta["bits"] <= bits


def test_share_weights_is_deterministic_and_kmeans_beats_uniform_levels():
    a, b = make_net(0.5), make_net(0.5)
    share_weights_(a, 3)
    share_weights_(b, 3)
    for (_, ma), (_, mb) in zip(weight_layers(a), weight_layers(b)):
        assert torch.equal(ma.weight, mb.weight)
    v = np.random.default_rng(1).standard_normal(2000)
    c = kmeans_1d(v, 8)
    assert c.size <= 8 and np.all(np.diff(c) > 0)
    uniform = np.linspace(v.min(), v.max(), 8)

    def sse(levels):
        return float(np.sum(np.min(np.abs(v[:, None] - levels[None, :]), axis=1) ** 2))

    assert sse(c.astype(np.float64)) < sse(uniform)


def test_share_weights_per_layer_bits():
    net = make_net()
    fc_before = net.fc.weight.detach().clone()
    share_weights_(net, {"conv": 2, "dw": 4})
    assert torch.unique(net.conv.weight).numel() <= 4 + 1  # 4 nonzero values (+ the zero channel)
    assert torch.unique(net.dw.weight).numel() <= 16
    assert torch.equal(net.fc.weight, fc_before)  # not listed: untouched
    with pytest.raises(CodegenError, match=r"no Linear/Conv1d/Conv2d layer named \['fc2'\]"):
        share_weights_(net, {"fc2": 3})


@pytest.mark.parametrize("bits", [0, 9, -1, 2.5, True, "4"])
def test_share_weights_rejects_bits_outside_1_to_8(bits):
    net = make_net()
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(
        CodegenError, match=r"layer 'conv': weight sharing bits must be an integer from 1 to 8"
    ):
        share_weights_(net, bits)
    with pytest.raises(CodegenError, match=r"layer 'dw'"):
        share_weights_(net, {"conv": 3, "dw": bits})
    for k, v in net.state_dict().items():  # nothing half-done
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("fn", [quantize_int8_, lambda m: share_weights_(m, 4)])
def test_nan_weights_are_named(fn):
    net = make_net()
    with torch.no_grad():
        net.c1.weight[1, 2, 0] = float("nan")
    with pytest.raises(CodegenError, match=r"layer 'c1'.*non-finite"):
        fn(net)


def test_quantized_models_stay_close_to_the_float_model():
    net = make_net(0.5)
    net.fc.weight.data[1] /= 1e6
    net.fc.weight.data[0, :5] /= 1e-30
    x = torch.randn(8, 3, 9, 9)
    with torch.no_grad():
        y = net(x)
        for fn in (quantize_int8_, lambda m: share_weights_(m, 6)):
            m = fn(copy.deepcopy(net))
            err = float((m(x) - y).abs().max() / y.abs().max())
            assert err < 0.05, err
