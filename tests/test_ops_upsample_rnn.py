"""Parity through gcc (PyTorch as the oracle) for upsampling (codegen/ops/resize.py), transposed
convolutions (codegen/ops/deconv.py) and LSTM/GRU (codegen/ops/recurrent.py): awkward shapes, dense
and CSR weights, the int8 forms of upsampling (bit-exact with their reference), the refusals, and a
small model of each family on the emulated Cortex-M4.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import emit_and_verify, nm_weight_bytes, sparsify_
from test_integer import check_bit_exact

from codegen import board as cboard
from codegen import save_compressed_model
from codegen.errors import CodegenError, UnsupportedConfigError


def _csr_(model: nn.Module, types: tuple[type, ...], seed: int = 0) -> None:
    """Prunes every weight matrix of the given module types to density 0.4 (CSR is then the smaller form)."""
    i = 0
    for m in model.modules():
        if isinstance(m, types):
            for name, p in m.named_parameters():
                if name.startswith("weight"):
                    sparsify_(p, 0.4, seed + i)
                    i += 1


def run(model: nn.Module, x_shape, rep: str, tmp_path, sparse: tuple[type, ...] = (), seed: int = 0):
    torch.manual_seed(seed)
    model = model.eval()
    if rep == "csr":
        _csr_(model, sparse, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    inputs = torch.randn((3, *x_shape[1:]), generator=gen)
    res = emit_and_verify(model, x_shape, rep, tmp_path, inputs=inputs)
    formats = {a["name"]: a for ly in res.report["layers"] for a in ly["arrays"]}
    if rep == "csr" and sparse:
        assert any(name.endswith("_ptr") for name in formats), f"no CSR weight chosen: {sorted(formats)}"
    return res


class Interp(nn.Module):
    """A conv (so the resize reads an arena buffer, not the model input), then F.interpolate."""

    def __init__(self, c: int, dims: int = 2, **kw):
        super().__init__()
        self.conv = (nn.Conv2d if dims == 2 else nn.Conv1d)(c, c, 1)
        self.kw = kw

    def forward(self, x):
        return F.interpolate(self.conv(x), **self.kw)


class OldForms(nn.Module):
    """F.upsample_bilinear (align_corners=True) and F.upsample (nearest): both trace to F.interpolate."""

    def forward(self, x):
        return torch.cat([F.upsample_bilinear(x, scale_factor=2), F.upsample(x, size=(6, 10))], 1)


# ---- upsampling ------------------------------------------------------------------------------------
UPSAMPLE = {
    "nearest_x2": (lambda: nn.Upsample(scale_factor=2), (1, 3, 5, 7)),
    "nearest_x3_x2": (lambda: nn.Upsample(scale_factor=(3, 2), mode="nearest"), (1, 2, 3, 5)),
    "nearest_size_odd": (lambda: nn.Upsample(size=(7, 11)), (1, 2, 5, 4)),
    "nearest_down": (lambda: nn.Upsample(size=(3, 2)), (1, 2, 7, 5)),
    "nearest_frac_scale": (lambda: Interp(2, scale_factor=(1.5, 2.3), mode="nearest"), (1, 2, 5, 4)),
    "nearest_frac_recompute": (lambda: Interp(2, scale_factor=1.7, mode="nearest", recompute_scale_factor=True),
                               (1, 2, 5, 6)),  # fmt: skip
    "nearest_exact": (lambda: Interp(3, scale_factor=1.6, mode="nearest-exact"), (1, 3, 5, 4)),
    "bilinear_x2": (lambda: nn.Upsample(scale_factor=2, mode="bilinear"), (1, 3, 5, 7)),
    "bilinear_size": (lambda: nn.Upsample(size=(7, 11), mode="bilinear"), (1, 2, 5, 4)),
    "bilinear_align": (lambda: nn.Upsample(scale_factor=1.7, mode="bilinear", align_corners=True), (1, 2, 5, 4)),
    "bilinear_align_to_1": (lambda: Interp(2, size=(1, 5), mode="bilinear", align_corners=True), (1, 2, 4, 3)),
    "bilinear_down": (lambda: Interp(2, size=(3, 2), mode="bilinear"), (1, 2, 8, 7)),
    "bilinear_frac": (lambda: Interp(2, scale_factor=(2.5, 1.3), mode="bilinear"), (1, 2, 3, 5)),
    "bilinear_from_1x1": (lambda: nn.Upsample(scale_factor=4, mode="bilinear"), (1, 3, 1, 1)),
    "upsampling_bilinear2d": (lambda: nn.UpsamplingBilinear2d(scale_factor=2), (1, 2, 4, 5)),
    "upsampling_nearest2d": (lambda: nn.UpsamplingNearest2d(size=(6, 9)), (1, 2, 4, 5)),
    "linear_1d": (lambda: Interp(3, dims=1, size=13, mode="linear"), (1, 3, 5)),
    "linear_1d_align": (lambda: Interp(2, dims=1, scale_factor=2.5, mode="linear", align_corners=True), (1, 2, 6)),
    "nearest_1d": (lambda: nn.Upsample(scale_factor=3), (1, 2, 5)),
    "old_functional_forms": (OldForms, (1, 2, 3, 5)),
    "nearest_exact_1d": (lambda: Interp(2, dims=1, size=8, mode="nearest-exact"), (1, 2, 5)),
}


@pytest.mark.parametrize("cfg", UPSAMPLE.values(), ids=UPSAMPLE.keys())
def test_upsample(cfg, tmp_path):
    make, shape = cfg
    run(nn.Sequential(make()), shape, "dense", tmp_path)


@pytest.mark.parametrize("kw,what", [
    (dict(scale_factor=2, mode="bicubic"), "mode 'bicubic'"),
    (dict(scale_factor=2, mode="bilinear", antialias=True), "antialias"),
    (dict(scale_factor=2, mode="area"), "mode 'area'"),
])  # fmt: skip
def test_upsample_refusals_name_the_layer(kw, what, tmp_path):
    with pytest.raises(UnsupportedConfigError, match=what) as e:
        save_compressed_model(Interp(2, **kw), "dense", input_shape=(1, 2, 4, 4), directory=tmp_path / "m")
    assert "interpolate" in str(e.value)


INT8_UPSAMPLE = {
    "nearest_x2": (lambda: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Upsample(scale_factor=2), nn.ReLU()),
                   (1, 2, 5, 6)),  # fmt: skip
    "nearest_frac": (lambda: Interp(3, scale_factor=(1.5, 2.3)), (1, 3, 5, 4)),
    "bilinear": (lambda: nn.Sequential(nn.Conv2d(2, 3, 3), nn.Upsample(size=(9, 7), mode="bilinear")), (1, 2, 6, 5)),
    "bilinear_align": (lambda: Interp(2, scale_factor=1.7, mode="bilinear", align_corners=True), (1, 2, 5, 6)),
    "linear_1d": (lambda: Interp(3, dims=1, size=17, mode="linear"), (1, 3, 7)),
}


@pytest.mark.parametrize("cfg", INT8_UPSAMPLE.values(), ids=INT8_UPSAMPLE.keys())
def test_upsample_int8_bit_exact(cfg, tmp_path):
    torch.manual_seed(3)
    make, shape = cfg
    res, qm, cal = check_bit_exact(make(), shape, tmp_path)
    kinds = {q.kind for q in qm.qops}
    assert kinds & {"resize_nearest", "resize_linear"}, kinds


# ---- transposed convolution ------------------------------------------------------------------------
# (cin, cout, kernel, stride, padding, output_padding, dilation, groups, bias, (H, W))
DECONV2D = {
    "k2_s2": (3, 4, 2, 2, 0, 0, 1, 1, True, (4, 5)),
    "k3_s2_p1_op1": (3, 4, 3, 2, 1, 1, 1, 1, True, (5, 6)),
    "k4_s2_p1_nobias": (2, 3, 4, 2, 1, 0, 1, 1, False, (3, 3)),
    "asym": (2, 3, (3, 2), (2, 3), (2, 1), (1, 2), 1, 1, True, (4, 5)),
    "dilated_groups": (4, 6, (3, 2), (2, 3), (2, 1), 0, (2, 1), 2, False, (5, 6)),
    "depthwise": (3, 3, 3, 2, 1, 1, 1, 3, True, (4, 4)),
    "stride1_pad_gt": (2, 2, 3, 1, 2, 0, 1, 1, True, (5, 5)),
    "one_pixel": (3, 2, 3, 3, 0, 2, 1, 1, True, (1, 1)),
}
DECONV1D = {
    "k4_s3_op2": (3, 5, 4, 3, 1, 2, 1, 1, True, 9),
    "k3_s2_dil2_groups": (4, 2, 3, 2, 2, 1, 2, 2, True, 7),
}


@pytest.mark.parametrize("rep", ["dense", "csr"])
@pytest.mark.parametrize("cfg", DECONV2D.values(), ids=DECONV2D.keys())
def test_conv_transpose2d(cfg, rep, tmp_path):
    cin, cout, k, s, p, op, d, g, bias, hw = cfg
    m = nn.Sequential(nn.ConvTranspose2d(cin, cout, k, s, p, op, g, bias, d), nn.ReLU())
    run(m, (1, cin, *hw), rep, tmp_path, sparse=(nn.ConvTranspose2d,))


@pytest.mark.parametrize("rep", ["dense", "csr"])
@pytest.mark.parametrize("cfg", DECONV1D.values(), ids=DECONV1D.keys())
def test_conv_transpose1d(cfg, rep, tmp_path):
    cin, cout, k, s, p, op, d, g, bias, length = cfg
    m = nn.Sequential(nn.Conv1d(cin, cin, 1), nn.ConvTranspose1d(cin, cout, k, s, p, op, g, bias, d))
    run(m, (1, cin, length), rep, tmp_path, sparse=(nn.ConvTranspose1d,))


def test_conv_transpose_weight_bytes_counted_once(tmp_path):
    """The weight is one encoded tensor: report == nm == dense or CSR bytes of [C_out, C_in/g*kh*kw]."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2))
    _csr_(m, (nn.ConvTranspose2d,))
    res = save_compressed_model(m, "csr", torch.randn(1, 4, 5, 5), tmp_path / "m")
    nnz = int((m[0].weight != 0).sum())
    assert res.weight_bytes == nnz * 4 + nnz * 1 + 7 * 1 + 6 * 4  # values, u8 col, u8 rowptr, bias
    assert nm_weight_bytes(tmp_path / "m") == res.weight_bytes


def test_conv_transpose_refuses_weight_only_quantized_encodings(tmp_path):
    m = nn.Sequential(nn.ConvTranspose2d(2, 3, 3, stride=2))
    with pytest.raises(CodegenError, match="'0'.*dense and CSR"):
        save_compressed_model(m, "codebook", input_shape=(1, 2, 4, 4), directory=tmp_path / "a")
    assert not (tmp_path / "a").exists()


# ---- LSTM / GRU ----------------------------------------------------------------------------------------


class Rnn(nn.Module):
    """``out, (h, c) = self.rnn(x)`` (GRU: ``out, h``), returning the item ``which`` names."""

    def __init__(self, rnn: nn.Module, which: str = "out", head: int = 0):
        super().__init__()
        self.rnn, self.which = rnn, which
        d = 2 if rnn.bidirectional else 1
        self.fc = nn.Linear(rnn.hidden_size * (d if which == "out" else 1), head) if head else nn.Identity()

    def forward(self, x):
        if isinstance(self.rnn, nn.LSTM):
            out, (h, c) = self.rnn(x)
        else:
            out, h = self.rnn(x)
        y = {"out": out, "h": h, "h_last": h[-1] if self.which == "h_last" else h, "h_first": h[0]}[self.which]
        return self.fc(y)


RNN = {
    "lstm_out": (lambda: Rnn(nn.LSTM(5, 7, batch_first=True)), (1, 6, 5)),
    "lstm_h": (lambda: Rnn(nn.LSTM(5, 7, batch_first=True), "h"), (1, 6, 5)),
    "lstm_2layers_h_last": (lambda: Rnn(nn.LSTM(5, 7, num_layers=2, batch_first=True), "h_last", head=3), (1, 9, 5)),
    "lstm_3layers_nobias_out": (lambda: Rnn(nn.LSTM(4, 6, num_layers=3, batch_first=True, bias=False), head=2),
                                (1, 5, 4)),  # fmt: skip
    "lstm_bidir_2layers_out": (lambda: Rnn(nn.LSTM(5, 7, num_layers=2, batch_first=True, bidirectional=True)),
                               (1, 6, 5)),  # fmt: skip
    "lstm_bidir_h_first": (lambda: Rnn(nn.LSTM(3, 4, batch_first=True, bidirectional=True), "h_first"), (1, 7, 3)),
    "lstm_len1": (lambda: Rnn(nn.LSTM(3, 5, batch_first=True)), (1, 1, 3)),
    "gru_out": (lambda: Rnn(nn.GRU(5, 7, batch_first=True)), (1, 6, 5)),
    "gru_h": (lambda: Rnn(nn.GRU(5, 7, batch_first=True), "h", head=4), (1, 8, 5)),
    "gru_2layers_bidir_h_last": (lambda: Rnn(nn.GRU(5, 7, num_layers=2, batch_first=True, bidirectional=True),
                                             "h_last"), (1, 6, 5)),  # fmt: skip
    "gru_nobias_3layers": (lambda: Rnn(nn.GRU(3, 5, num_layers=3, batch_first=True, bias=False)), (1, 4, 3)),
}


@pytest.mark.parametrize("rep", ["dense", "csr"])
@pytest.mark.parametrize("cfg", RNN.values(), ids=RNN.keys())
def test_recurrent(cfg, rep, tmp_path):
    make, shape = cfg
    run(make(), shape, rep, tmp_path, sparse=(nn.LSTM, nn.GRU))


def test_recurrent_weights_counted_once_and_state_in_arena(tmp_path):
    torch.manual_seed(0)
    m = Rnn(nn.LSTM(6, 8, num_layers=2, batch_first=True))
    res = save_compressed_model(m, "dense", torch.randn(1, 5, 6), tmp_path / "m")
    params = sum(p.numel() for p in m.rnn.parameters())
    assert res.weight_bytes == params * 4 == nm_weight_bytes(tmp_path / "m")
    # two layer outputs (5 x 8 floats) + one layer's scratch: 2 x 32 gates + h + c
    scratch = [b for b in res.report["memory"]["buffers"] if b["name"].endswith(".scratch")]
    assert [b["bytes"] for b in scratch] == [(2 * 32 + 2 * 8) * 4] * 2


@pytest.mark.parametrize("make,what", [
    (lambda: Rnn(nn.LSTM(3, 4)), "batch_first=False"),
    (lambda: Rnn(nn.LSTM(3, 4, batch_first=True, proj_size=2)), "proj_size"),
    (lambda: Rnn(nn.LSTM(3, 4, num_layers=2, batch_first=True), "h"), "h_n of 2 stacked"),
])  # fmt: skip
def test_recurrent_refusals(make, what, tmp_path):
    with pytest.raises(UnsupportedConfigError, match=what):
        save_compressed_model(make(), "dense", input_shape=(1, 5, 3), directory=tmp_path / "m")


class UsesCellState(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 4, batch_first=True)

    def forward(self, x):
        out, (h, c) = self.lstm(x)
        return c


class GivesInitialState(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(3, 4, batch_first=True)

    def forward(self, x):
        return self.gru(x, torch.zeros(1, 1, 4))[0]


def test_recurrent_refuses_cell_state_and_initial_state(tmp_path):
    with pytest.raises(UnsupportedConfigError, match="cell state c_n"):
        save_compressed_model(UsesCellState(), "dense", input_shape=(1, 5, 3), directory=tmp_path / "a")
    with pytest.raises(CodegenError, match="nn.GRU"):  # a constant initial state: refused as an operand
        save_compressed_model(GivesInitialState(), "dense", input_shape=(1, 5, 3), directory=tmp_path / "b")


def test_recurrent_int8_bit_exact(tmp_path):
    """LSTM/GRU have an int8 form (codegen/ops/recurrent.py RecurrentInt8; more in tests/test_integer.py)."""
    torch.manual_seed(0)
    check_bit_exact(Rnn(nn.GRU(3, 4, batch_first=True)), (1, 5, 3), tmp_path)


# ---- on the emulated Cortex-M4 -----------------------------------------------------------------------


class SegNet(nn.Module):
    """A tiny encoder-decoder: strided conv down, transposed conv and bilinear upsampling back."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1, output_padding=1)
        self.up2 = nn.Upsample(scale_factor=2, mode="bilinear")
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.up2(torch.relu(self.up(torch.relu(self.down(x))))))


class Kws(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(10, 16, batch_first=True)
        self.lstm = nn.LSTM(16, 24, num_layers=2, batch_first=True)
        self.fc = nn.Linear(24, 12)

    def forward(self, x):  # (N, T, 10) MFCC frames
        y, _ = self.gru(x)
        _, (h, _) = self.lstm(y)
        return self.fc(h[-1])


@pytest.mark.board
@pytest.mark.parametrize("make,shape,rep", [(SegNet, (1, 3, 12, 10), "csr"), (Kws, (1, 20, 10), "csr")],
                         ids=["segnet", "kws"])
def test_models_on_emulated_m4(make, shape, rep, tmp_path):
    from helpers import assert_parity
    from test_board import require_board

    require_board()
    torch.manual_seed(0)
    m = make().eval()
    _csr_(m, (nn.ConvTranspose2d, nn.Conv2d, nn.LSTM, nn.GRU))
    x = torch.randn(*shape)
    res = save_compressed_model(m, rep, x, tmp_path / "m")
    with torch.no_grad():
        ref = m(x).numpy().reshape(-1)
    result = cboard.run(tmp_path / "m", "m4")
    assert result.passed, result.stdout + result.stderr
    assert_parity(result.outputs, ref, f"{make.__name__} on the emulated M4")
    assert res.weight_bytes == nm_weight_bytes(tmp_path / "m")


INT8_DECONV = {
    "k3_s2_p1_op1_relu": (lambda: nn.Sequential(nn.ConvTranspose2d(3, 4, 3, 2, 1, 1), nn.ReLU()), (1, 3, 4, 5)),
    "asym_dilated_groups": (lambda: nn.Sequential(nn.Conv2d(4, 4, 1), nn.ConvTranspose2d(4, 6, (3, 2), (2, 3), (2, 1), 0, 2,
                                                                                            False, (2, 1))), (1, 4, 4, 5)),
    "1d_k4_s3_op2": (lambda: nn.Sequential(nn.ConvTranspose1d(3, 5, 4, 3, 1, 2)), (1, 3, 7)),
}


@pytest.mark.parametrize("rep", ["int8", "dense"])
@pytest.mark.parametrize("cfg", INT8_DECONV.values(), ids=INT8_DECONV.keys())
def test_conv_transpose_int8_bit_exact(cfg, rep, tmp_path):
    torch.manual_seed(4)
    make, shape = cfg
    res, qm, cal = check_bit_exact(make(), shape, tmp_path, representation=rep)
    assert "conv_transpose" in {q.kind for q in qm.qops}
