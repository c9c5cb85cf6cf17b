"""CSR weights through gcc: densities 0 / 0.01 / 0.5 / 1 (empty rows, entirely empty layers), the
choice of the smaller encoding, and index/pointer widths chosen from the actual bounds — every one
of the 9 (column index, row pointer) kernel variants runs at least for linear, plus the wide ones for
convolutions.

The byte counts are recomputed here independently of codegen.formats:
dense = rows*cols*4; CSR = nnz*4 + nnz*sizeof(col) + (rows+1)*sizeof(ptr), with
sizeof(col) from cols-1 (largest column index) and sizeof(ptr) from nnz (largest pointer).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers import emit_and_verify, layer, sparsify_

from codegen import formats
from codegen.api import weight_bytes

FORCED = "csr_forced"  # a representation that only allows CSR, to run the CSR kernels at any density


@pytest.fixture
def force_csr(monkeypatch):
    monkeypatch.setitem(formats.REPRESENTATIONS, FORCED, formats.Representation(FORCED, ("csr",)))
    return FORCED


def width(max_value: int) -> int:
    return 1 if max_value < 256 else 2 if max_value < 65536 else 4


def expected_bytes(w: np.ndarray) -> tuple[int, int, str]:
    """(dense bytes, CSR bytes, CSR kernel suffix) of a weight viewed as [rows, cols]."""
    w2 = w.reshape(w.shape[0], -1)
    rows, cols = w2.shape
    nnz = int(np.count_nonzero(w2))
    ci, pi = width(cols - 1), width(nnz)
    return rows * cols * 4, nnz * (4 + ci) + (rows + 1) * pi, f"csr_u{8 * ci}_u{8 * pi}"


def check_encoding(report: dict, source: str, w: torch.Tensor, representation: str) -> dict:
    """The layer's weight uses the smaller encoding (dense on ties) with the expected widths and bytes."""
    ly = layer(report, source)
    wn = w.detach().numpy()
    dense, csr, kernel = expected_bytes(wn)
    want = "csr" if representation == FORCED or csr < dense else "dense"
    assert ly["format"] == want, f"{source}: dense {dense} B, CSR {csr} B, chose {ly['format']}"
    assert ly["nnz"] >= int(np.count_nonzero(wn))
    weight_arrays = [a for a in ly["arrays"] if a["role"] == "weight"]
    got = sum(a["bytes"] for a in weight_arrays)
    if want == "csr":
        assert ly["kernel"] == kernel, ly
        assert got == csr, (got, csr)
        ctypes = {a["name"].rsplit("_", 1)[1]: a["ctype"] for a in weight_arrays}
        assert ctypes.get("ptr") == f"uint{kernel.rsplit('_u', 1)[1]}_t", ctypes
        if np.count_nonzero(wn):
            assert ctypes["col"] == f"uint{kernel.split('_')[1][1:]}_t", ctypes
        else:
            assert set(ctypes) == {"ptr"}, "an empty layer has no value/column arrays (C has no [0] arrays)"
    else:
        assert got == dense
    return ly


# ---- densities ---------------------------------------------------------------------------------------
LAYERS = {
    "linear": (lambda: nn.Linear(40, 24), (1, 40)),
    "linear_nobias": (lambda: nn.Linear(33, 9, bias=False), (1, 33)),
    "conv1d": (lambda: nn.Conv1d(5, 7, 4, stride=2, padding=1), (1, 5, 13)),
    "conv2d": (lambda: nn.Conv2d(6, 8, 3, padding=1, stride=(1, 2)), (1, 6, 7, 8)),
    "conv2d_nobias_dilated": (lambda: nn.Conv2d(3, 5, 3, dilation=2, bias=False), (1, 3, 8, 7)),
    "depthwise": (lambda: nn.Conv2d(6, 12, 3, padding=1, groups=6), (1, 6, 6, 5)),
}
DENSITIES = [0.0, 0.01, 0.5, 1.0]


def _net(make, density: float, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(make(), nn.ReLU())
    sparsify_(net[0].weight, density, seed)
    return net


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("cfg", LAYERS.values(), ids=LAYERS.keys())
def test_density(cfg, density, tmp_path):
    make, shape = cfg
    net = _net(make, density)
    res = emit_and_verify(net, shape, "csr", tmp_path)
    check_encoding(res.report, "0", net[0].weight, "csr")
    assert weight_bytes(net, shape, "csr").total == res.report["totals"]["weight_bytes"]


@pytest.mark.parametrize("density", [0.5, 1.0])
@pytest.mark.parametrize("cfg", LAYERS.values(), ids=LAYERS.keys())
def test_csr_kernel_at_high_density(cfg, density, tmp_path, force_csr):
    """The sparse kernels themselves are right even where dense would be chosen."""
    make, shape = cfg
    net = _net(make, density, seed=1)
    res = emit_and_verify(net, shape, force_csr, tmp_path)
    check_encoding(res.report, "0", net[0].weight, force_csr)


def _empty_rows(w: torch.Tensor, seed: int) -> torch.Tensor:
    """Density 0.5 with the first, a middle and the last output row entirely zero."""
    sparsify_(w, 0.5, seed)
    with torch.no_grad():
        for r in (0, w.shape[0] // 2, w.shape[0] - 1):
            w[r].zero_()
    return w


@pytest.mark.parametrize("cfg", LAYERS.values(), ids=LAYERS.keys())
def test_empty_rows(cfg, tmp_path, force_csr):
    make, shape = cfg
    torch.manual_seed(2)
    net = nn.Sequential(make(), nn.Tanh())
    _empty_rows(net[0].weight, 2)
    res = emit_and_verify(net, shape, force_csr, tmp_path)
    check_encoding(res.report, "0", net[0].weight, force_csr)


def test_all_empty_model(tmp_path):
    """Every weighted layer entirely zero: the output is the (propagated) bias."""
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 3, 1, groups=3), nn.Flatten(), nn.Linear(27, 4)
    )
    for i in (0, 2, 4):
        sparsify_(net[i].weight, 0.0)
    res = emit_and_verify(net, (1, 2, 5, 5), "csr", tmp_path)
    for i in (0, 2, 4):
        check_encoding(res.report, str(i), net[i].weight, "csr")
    assert res.report["totals"]["nnz"] == sum(int(net[i].bias.numel()) for i in (0, 2, 4))


# ---- index and pointer widths: all 9 kernel variants -----------------------------------------------------
def _exact_nnz(w: torch.Tensor, nnz: int, seed: int, last_col: bool = True) -> torch.Tensor:
    """Exactly nnz nonzeros; with last_col, one of them in the last column (largest index)."""
    gen = torch.Generator().manual_seed(seed)
    flat = torch.zeros(w.numel())
    idx = torch.randperm(w.numel(), generator=gen)[:nnz]
    if last_col and nnz:
        idx[0] = w.shape[1] - 1  # row 0, last column
        idx = torch.unique(idx)
        while idx.numel() < nnz:  # replace a duplicate
            extra = torch.randint(0, w.numel(), (nnz - idx.numel(),), generator=gen)
            idx = torch.unique(torch.cat([idx, extra]))
    flat[idx] = torch.randn(nnz, generator=gen)
    with torch.no_grad():
        w.copy_(flat.view_as(w))
    return w


# kernel -> (in_features, out_features, nnz): every one chosen naturally ("csr" picks CSR as smaller)
LINEAR_VARIANTS = {
    "csr_u8_u8": (256, 6, 255),  # cols - 1 == 255, nnz == 255: both at the top of uint8
    "csr_u8_u16": (256, 8, 256),  # nnz == 256: the first pointer that needs uint16
    "csr_u8_u32": (256, 400, 65536 + 4000),
    "csr_u16_u8": (257, 4, 100),  # cols == 257: the first column index that needs uint16
    "csr_u16_u16": (65536, 1, 65535 // 8),  # cols - 1 == 65535: the top of uint16
    "csr_u16_u32": (1000, 110, 66000),
    "csr_u32_u8": (65537, 1, 200),  # cols == 65537: the first column index that needs uint32
    "csr_u32_u16": (65537, 2, 3000),
    "csr_u32_u32": (65537, 3, 65536),  # nnz == 65536: the first pointer that needs uint32
}


@pytest.mark.parametrize("kernel", LINEAR_VARIANTS, ids=LINEAR_VARIANTS.keys())
def test_linear_index_widths(kernel, tmp_path):
    fin, fout, nnz = LINEAR_VARIANTS[kernel]
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(fin, fout))
    _exact_nnz(net[0].weight, nnz, seed=5)
    assert expected_bytes(net[0].weight.detach().numpy())[2] == kernel  # the case is built right
    res = emit_and_verify(net, (1, fin), "csr", tmp_path, n_inputs=2)
    ly = check_encoding(res.report, "0", net[0].weight, "csr")
    assert ly["kernel"] == kernel
    src = (res.directory / "model.c").read_text()
    assert f"sc_linear_{kernel}(" in src


CONV_VARIANTS = {
    # kernel -> (module, input shape, nnz)
    "csr_u16_u8": (lambda: nn.Conv2d(32, 4, 3, padding=1), (1, 32, 4, 5), 200),  # cols 288
    "csr_u16_u32": (lambda: nn.Conv2d(64, 64, 5), (1, 64, 5, 6), 66560),  # cols 1600, nnz > 65535
    "csr_u32_u8": (lambda: nn.Conv1d(1, 2, 65600), (1, 1, 65602), 150),  # cols 65600
    "csr_u8_u16": (lambda: nn.Conv2d(8, 64, 3, groups=8, padding=1), (1, 8, 5, 5), 300),  # depthwise x8
}


@pytest.mark.parametrize("kernel", CONV_VARIANTS, ids=CONV_VARIANTS.keys())
def test_conv_index_widths(kernel, tmp_path):
    make, shape, nnz = CONV_VARIANTS[kernel]
    torch.manual_seed(6)
    net = nn.Sequential(make())
    w = net[0].weight
    _exact_nnz(w.view(w.shape[0], -1), nnz, seed=7)
    res = emit_and_verify(net, shape, "csr", tmp_path, n_inputs=2)
    ly = check_encoding(res.report, "0", net[0].weight, "csr")
    assert ly["kernel"] == kernel
    assert f"sc_conv_{kernel}(" in (res.directory / "model.c").read_text()


# ---- the width and size rules themselves (no compiler) --------------------------------------------------
@pytest.mark.parametrize(
    "cols, nnz, col_t, ptr_t",
    [
        (1, 0, "uint8_t", "uint8_t"),
        (256, 255, "uint8_t", "uint8_t"),
        (257, 256, "uint16_t", "uint16_t"),
        (65536, 65535, "uint16_t", "uint16_t"),
        (65537, 65536, "uint32_t", "uint32_t"),
    ],
)
def test_width_bounds(cols, nnz, col_t, ptr_t):
    assert formats.CsrF32.widths(1, cols, nnz) == (col_t, ptr_t)


@pytest.mark.parametrize("density", [0.0, 0.01, 0.3, 0.7, 0.8, 1.0])
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (16, 300), (4, 70000)])
def test_choice_is_smaller(shape, density):
    w = torch.randn(shape)
    sparsify_(w, density, 8)
    wn = w.numpy()
    dense, csr, kernel = expected_bytes(wn)
    enc = formats.encode_tensor(wn, "t", "csr")
    assert enc.nbytes == min(dense, csr)
    assert enc.encoding == ("csr" if csr < dense else "dense")
    assert formats.encoded_nbytes(*wn.shape, int(np.count_nonzero(wn)), "csr") == min(dense, csr)
    assert formats.encode_tensor(wn, "t", "dense").nbytes == dense
    if enc.encoding == "csr":
        assert enc.kernel == kernel
        # the arrays really are CSR of w
        val, col, ptr = (enc.arrays[k].values for k in ("values", "colidx", "rowptr"))
        back = np.zeros_like(wn)
        for r in range(wn.shape[0]):
            back[r, col[ptr[r] : ptr[r + 1]]] = val[ptr[r] : ptr[r + 1]]
        np.testing.assert_array_equal(back, wn)
