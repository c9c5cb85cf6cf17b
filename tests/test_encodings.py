"""int8 and codebook encodings (codegen/formats.py, the weight-only sections of runtime_c/sc_conv.h, sc_linear.h).

* every form decodes back to the exact tensor (a reference decoder written here, independent of
  the encoder) and its byte count matches the formula of the formats.py docstring;
* exact bytes vs ``nm -S`` of the compiled object, for every form;
* parity through gcc for Linear (several rows), Conv1d, Conv2d and depthwise, every form, at
  densities 0, 0.1, 0.5 and 1, index widths 1..8, forced gap widths (filler entries);
* one model per form on the emulated Cortex-M4F and M3 (marked ``board``);
* ``auto`` picks the smallest encoding; errors name the layer and say what to do.

A form is forced by registering a one-encoding representation ("only_<form>") for the test.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers import emit_and_verify, sanitizer_problem, sparsify_

from codegen import CodegenError, formats, save_compressed_model, weight_bytes
from codegen import board as cboard
from codegen.quantize import quantize_int8_, share_weights_

INT8_FORMS = ("int8", "int8_csr", "int8_rel")
CODEBOOK_FORMS = ("codebook", "codebook_csr", "codebook_rel")
NEW_FORMS = INT8_FORMS + CODEBOOK_FORMS
ALL_FORMS = ("dense", "csr") + NEW_FORMS


def only(monkeypatch, form: str) -> str:
    """A representation that allows exactly one encoding."""
    rep = f"only_{form}"
    monkeypatch.setitem(formats.REPRESENTATIONS, rep, formats.Representation(rep, (form,)))
    return rep


def prepare_(net: nn.Module, form: str, density: float, bits: int = 4, seed: int = 0) -> nn.Module:
    """Prunes every weight to ``density`` and puts it on the grid the form needs."""
    for i, m in enumerate(net.modules()):
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            sparsify_(m.weight, density, seed=seed + i)
    if form.startswith("int8"):
        quantize_int8_(net)
    elif form.startswith("codebook"):
        share_weights_(net, bits)
    return net.eval()


# ---- reference decoder and byte formulas (independent of the encoder) ----------------------------


def _w(n: int) -> int:
    return 1 if n <= 0xFF else 2 if n <= 0xFFFF else 4


def _bits(k: int) -> int:
    return max(1, math.ceil(math.log2(k))) if k > 1 else 1


def decode(e: formats.Encoded) -> np.ndarray:
    """The float32 [rows, cols] tensor an Encoded stores, read the way the C kernels read it."""
    a = {role: arr.values for role, arr in e.arrays.items()}
    out = np.zeros((e.rows, e.cols), dtype=np.float32)
    if e.encoding == "dense":
        return a["values"].reshape(e.rows, e.cols).astype(np.float32)
    if e.encoding == "int8":
        return a["values"].reshape(e.rows, e.cols).astype(np.float32) * a["scale"][:, None]
    if e.encoding == "codebook":
        idx = formats.unpack_bits(a["index"], e.meta["bits"], e.rows * e.cols).astype(np.int64)
        return a["codebook"][idx].reshape(e.rows, e.cols)
    ptr = a["rowptr"]
    if e.encoding in ("csr", "int8_csr", "codebook_csr"):
        if e.encoding == "csr":
            vals = a["values"]
        elif e.encoding == "int8_csr":
            vals = None
        else:
            vals = a["codebook"][formats.unpack_bits(a["index"], e.meta["bits"], e.nnz).astype(np.int64)]
        for r in range(e.rows):
            for k in range(int(ptr[r]), int(ptr[r + 1])):
                c = int(a["colidx"][k])
                out[r, c] = np.float32(a["values"][k]) * a["scale"][r] if vals is None else vals[k]
        return out
    g = e.meta["gap_bits"]
    vb = 8 if e.encoding == "int8_rel" else e.meta["bits"]
    fields = formats.unpack_bits(a["stream"], g + vb, int(ptr[-1])).astype(np.int64)
    for r in range(e.rows):
        pos = 0
        for k in range(int(ptr[r]), int(ptr[r + 1])):
            f = int(fields[k])
            pos += f & ((1 << g) - 1)
            v = f >> g
            if e.encoding == "int8_rel":
                v = v - 256 if v >= 128 else v
                out[r, pos] = np.float32(v) * a["scale"][r]
            else:
                out[r, pos] = a["codebook"][v]
            pos += 1
    return out


def python_entries(w2: np.ndarray, g: int) -> int:
    """Entries of a relative-index stream with g-bit gaps, counted the slow way."""
    e = 0
    for row in w2:
        run = 0
        for v in row:
            if v == 0:
                run += 1
                continue
            while run > (1 << g) - 1:
                e += 1  # filler: skips 2^g - 1 zeros and stands on a zero itself
                run -= 1 << g
            e += 1
            run = 0
    return e


def formula_bytes(form: str, w2: np.ndarray, gap_bits: int | None = None) -> int:
    """The byte formula of the formats.py docstring, from statistics computed here."""
    R, C = w2.shape
    N = int(np.count_nonzero(w2))
    K = len({float(v) for v in w2.ravel()})
    Knz = len({float(v) for v in w2.ravel() if v != 0})
    if form == "dense":
        return 4 * R * C
    if form == "csr":
        return 4 * N + N * _w(C - 1) + (R + 1) * _w(N)
    if form == "int8":
        return R * C + 4 * R
    if form == "int8_csr":
        return N + N * _w(C - 1) + (R + 1) * _w(N) + 4 * R
    if form == "codebook":
        return 4 * K + math.ceil(R * C * _bits(K) / 8)
    if form == "codebook_csr":
        return 4 * Knz + math.ceil(N * _bits(Knz) / 8) + N * _w(C - 1) + (R + 1) * _w(N)
    E = python_entries(w2, gap_bits)
    if form == "int8_rel":
        return math.ceil(E * (gap_bits + 8) / 8) + (R + 1) * _w(E) + 4 * R
    K2 = Knz + (E > N)
    return 4 * K2 + math.ceil(E * (gap_bits + _bits(K2)) / 8) + (R + 1) * _w(E)


def grid_tensor(form: str, shape: tuple[int, ...], density: float, seed: int, bits: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(np.float32)
    w[rng.random(shape) >= density] = 0
    if form.startswith("int8"):
        from codegen.quantize import int8_quantize_array

        return int8_quantize_array(w)
    if form.startswith("codebook"):
        from codegen.quantize import share_array

        return share_array(w, bits)
    return w


@pytest.mark.parametrize("form", ALL_FORMS)
@pytest.mark.parametrize("shape", [(7, 13), (3, 300), (16, 3, 3, 3), (1, 1), (300, 2)])
@pytest.mark.parametrize("density", [0.0, 0.03, 0.1, 0.5, 1.0])
def test_form_is_lossless_and_its_bytes_follow_the_formula(form, shape, density):
    w = grid_tensor(form, shape, density, seed=zlib.crc32(repr((form, shape, density)).encode()) % 1000)
    enc = formats.ENCODINGS[form]
    e = enc.encode(w, "t")
    w2 = w.reshape(shape[0], -1)
    assert e.encoding == form and (e.rows, e.cols) == w2.shape and e.nnz == np.count_nonzero(w2)
    np.testing.assert_array_equal(decode(e), w2)
    assert e.nbytes == enc.tensor_nbytes(w) == formula_bytes(form, w2, e.meta.get("gap_bits"))
    if enc.shape_only:
        assert e.nbytes == enc.nbytes(*w2.shape, e.nnz)


@pytest.mark.parametrize("form", ["int8_rel", "codebook_rel"])
@pytest.mark.parametrize("g", [1, 2, 4, 8])
def test_relative_index_fillers(form, g, monkeypatch):
    monkeypatch.setattr(formats, "GAP_BITS", (g,))
    w = np.zeros((3, 700), dtype=np.float32)
    w[0, [0, 5, 300, 699]] = [1.0, -2.0, 3.0, 4.0]  # runs of 0, 4, 294 and 398 zeros
    w[2, 650] = 0.5
    if form == "int8_rel":
        from codegen.quantize import int8_quantize_array

        w = int8_quantize_array(w)  # zeros stay zero
    e = formats.ENCODINGS[form].encode(w, "t")
    assert e.meta["gap_bits"] == g
    entries = int(e.arrays["rowptr"].values[-1])
    assert entries == python_entries(w, g) == formats.rel_entry_count(w, g)
    assert entries > 5  # every width needs fillers here (runs up to 650 zeros)
    np.testing.assert_array_equal(decode(e), w)
    assert e.nbytes == formula_bytes(form, w, g)


def test_bit_packing_is_lsb_first():
    # fields 5 (101) and 3 (011) of width 3: stream bits 1,0,1,1,1,0 -> byte 0b00011101 = 29
    assert formats.pack_bits(np.array([5, 3]), 3).tolist() == [29]
    # 12-bit fields straddle bytes: 0xABC then 0x123 -> bytes BC, 3A, 12
    assert formats.pack_bits(np.array([0xABC, 0x123]), 12).tolist() == [0xBC, 0x3A, 0x12]
    rng = np.random.default_rng(0)
    for width in range(1, 17):
        f = rng.integers(0, 1 << width, size=37)
        packed = formats.pack_bits(f, width)
        assert packed.size == math.ceil(37 * width / 8)
        np.testing.assert_array_equal(formats.unpack_bits(packed, width, 37), f)
    with pytest.raises(ValueError):
        formats.pack_bits(np.array([8]), 3)


# ---- nm: the compiler lays out exactly the counted bytes -----------------------------------------


class Mixed(nn.Module):
    """Conv2d, depthwise Conv2d, Conv1d and Linear (over 6 rows) in one model."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, stride=2, groups=8)
        self.conv1d = nn.Conv1d(8, 6, 3, padding=1)
        self.fc = nn.Linear(9, 5)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        x = torch.relu(self.dw(x))  # 8 x 3 x 3
        x = torch.relu(self.conv1d(torch.flatten(x, 2)))  # 6 x 9
        return self.fc(x)  # 6 rows of 9


def nm_sizes(obj: Path) -> dict[str, int]:
    out = subprocess.run(["nm", "-S", str(obj)], capture_output=True, text=True, check=True).stdout
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4:
            sizes[parts[3]] = int(parts[1], 16)
    return sizes


@pytest.mark.parametrize("form", ALL_FORMS)
def test_bytes_match_nm_of_the_compiled_object(form, tmp_path, monkeypatch):
    torch.manual_seed(0)
    net = prepare_(Mixed(), form, 0.3, bits=5)
    rep = only(monkeypatch, form)
    res = save_compressed_model(net, rep, input_shape=(1, 3, 8, 8), directory=tmp_path / "m")
    obj = tmp_path / "model.o"
    cc = os.environ.get("CC", "cc")
    subprocess.run([cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", "-c",
                    f"-I{res.directory}", str(res.directory / "model.c"), "-o", str(obj)], check=True)  # fmt: skip
    sizes = nm_sizes(obj)
    arrays = [a for ly in res.report["layers"] for a in ly["arrays"]]
    assert {a["name"]: sizes.get(a["name"]) for a in arrays} == {a["name"]: a["bytes"] for a in arrays}
    total = sum(a["bytes"] for a in arrays)
    assert total == res.weight_bytes == weight_bytes(net, (1, 3, 8, 8), rep).total
    model_h = (res.directory / "model.h").read_text()
    assert re.search(rf"#define MODEL_WEIGHT_BYTES\s+{total}\b", model_h)
    assert [ly["format"] for ly in res.report["layers"] if ly["kernel"]] == [form] * 4
    # runtime/ holds what model.c includes and what those headers include in turn (the bit reader and the
    # fixed-point math of the weight-only and int8 sections), nothing else
    rt = res.directory / "runtime"
    need = set(re.findall(r'#include "runtime/(sc_\w+\.h)"', (res.directory / "model.c").read_text()))
    todo = list(need)
    while todo:
        for h in set(re.findall(r'#include "(sc_\w+\.h)"', (rt / todo.pop()).read_text())) - need:
            need.add(h)
            todo.append(h)
    assert {p.name for p in rt.iterdir()} == need
    assert {"sc_bits.h", "sc_fixed.h"} <= need


# ---- parity through gcc ---------------------------------------------------------------------------


class AllKinds(nn.Module):
    """Conv2d (stride, dilation), depthwise Conv2d (channel multiplier 2), Conv1d (stride) and Linear
    (over 6 rows) side by side on the same input, so each layer's output is compared directly."""

    def __init__(self):
        super().__init__()
        self.conv2d = nn.Conv2d(6, 5, 3, stride=(1, 2), padding=1, dilation=(1, 2))
        self.depthwise = nn.Conv2d(6, 12, 3, padding=1, groups=6)
        self.conv1d = nn.Conv1d(6, 7, 3, stride=2, padding=1)
        self.linear = nn.Linear(49, 11)

    def forward(self, x):  # (1, 6, 7, 7)
        a = torch.relu(self.conv2d(x)).flatten(1)
        b = self.depthwise(x).flatten(1)
        c = torch.relu(self.conv1d(torch.flatten(x, 2))).flatten(1)
        d = self.linear(torch.flatten(x, 2)).flatten(1)
        return torch.cat([a, b, c, d], 1)


KIND_LAYERS = ("conv2d", "depthwise", "conv1d", "linear")


@pytest.mark.parametrize("density", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("form", NEW_FORMS)
def test_parity_through_gcc(form, density, tmp_path, monkeypatch):
    torch.manual_seed(1)
    net = prepare_(AllKinds(), form, density)
    sanitize = density == 0.1 and sanitizer_problem() is None  # ASan + UBSan: no stray stream reads
    res = emit_and_verify(net, (1, 6, 7, 7), only(monkeypatch, form), tmp_path, sanitize=sanitize)
    layers = {ly["source"]: ly for ly in res.report["layers"] if ly["kernel"]}
    assert sorted(layers) == sorted(KIND_LAYERS)
    assert layers["depthwise"]["op"] == "depthwise_conv" or layers["depthwise"]["op"] == "conv"
    model_c = (res.directory / "model.c").read_text()
    for ly in layers.values():
        assert ly["format"] == form
        assert f"_{ly['kernel']}(" in model_c


@pytest.mark.parametrize("g", [1, 3, 8])
@pytest.mark.parametrize("form", ["int8_rel", "codebook_rel"])
def test_parity_with_filler_entries(form, g, tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "GAP_BITS", (g,))
    torch.manual_seed(2)
    net = prepare_(AllKinds(), form, 0.1)
    fillers = 0
    for name in KIND_LAYERS:
        w2 = getattr(net, name).weight.detach().numpy()
        w2 = w2.reshape(w2.shape[0], -1)
        fillers += formats.rel_entry_count(w2, g) - np.count_nonzero(w2)
    assert (fillers > 0) == (g < 8)  # fillers are exercised (rows are at most 54 long)
    emit_and_verify(net, (1, 6, 7, 7), only(monkeypatch, form), tmp_path)


class Widths(nn.Module):
    """Eight Linear layers and eight Conv2d layers side by side; layer i holds exactly 2^i distinct values."""

    def __init__(self, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.fcs = nn.ModuleList([nn.Linear(160, 12) for _ in range(8)])
        self.convs = nn.ModuleList([nn.Conv2d(4, 8, 3) for _ in range(8)])
        for bits in range(1, 9):
            for m in (self.fcs[bits - 1], self.convs[bits - 1]):
                n = m.weight.numel()
                cb = np.unique(rng.standard_normal(4 << bits).astype(np.float32))
                cb = rng.permutation(cb[cb != 0])[: 1 << bits]
                idx = np.concatenate([np.arange(cb.size), rng.integers(0, cb.size, n - cb.size)])
                with torch.no_grad():
                    m.weight.copy_(torch.from_numpy(cb[rng.permutation(idx)]).reshape(m.weight.shape))

    def forward(self, x):  # (1, 4, 5, 8)
        flat = torch.flatten(x, 1)
        return torch.cat([fc(flat) for fc in self.fcs] + [torch.flatten(c(x), 1) for c in self.convs], 1)


@pytest.mark.parametrize("form", CODEBOOK_FORMS)
def test_codebook_index_widths_1_to_8(form, tmp_path, monkeypatch):
    """Layers holding exactly 2^bits distinct values get bits-wide indices (bits 1..8), in every
    codebook form."""
    torch.manual_seed(3)
    net = Widths().eval()
    if form != "codebook":  # the sparse forms also see zeros (conv layers: 288 weights, 60% kept)
        for c in net.convs:
            sparsify_(c.weight, 0.6, seed=7)
    for bits in range(1, 9):
        for m in (net.fcs[bits - 1], net.convs[bits - 1]):
            e = formats.ENCODINGS[form].encode(m.weight.detach().numpy(), "t")
            k = e.arrays["codebook"].count
            assert e.meta["bits"] == _bits(k) and k <= 256
            if form == "codebook_csr" or m in net.fcs.children():  # no zero in the codebook
                assert e.meta["bits"] == bits, (form, bits)
    emit_and_verify(net, (1, 4, 5, 8), only(monkeypatch, form), tmp_path)


# ---- auto picks the smallest ----------------------------------------------------------------------


def _all_sizes(w: np.ndarray) -> dict[str, int]:
    sizes = {}
    for name in formats.REPRESENTATIONS["auto"].encodings:  # the encodings "auto" chooses from (not codebook_huff)
        enc = formats.ENCODINGS[name]
        try:
            sizes[name] = enc.tensor_nbytes(w)
        except formats.Unencodable:
            pass
    return sizes


@pytest.mark.parametrize("form", ["dense", "int8", "codebook"])
@pytest.mark.parametrize("density", [0.02, 0.1, 0.3, 1.0])
def test_auto_picks_the_smallest_encoding(form, density):
    w = grid_tensor(form, (40, 120), density, seed=3, bits=3)
    sizes = _all_sizes(w)
    assert set(sizes) >= {"dense", "csr"}
    assert ("int8" in sizes) == (form == "int8")
    assert form != "codebook" or "codebook_csr" in sizes
    best = min(sizes.values())
    assert formats.tensor_nbytes(w, "auto") == best
    chosen = formats.choose_encoding(w, "auto")
    assert sizes[chosen.name] == best
    assert formats.encode_tensor(w, "t", "auto").nbytes == best
    for rep in ("int8", "codebook", "csr", "dense"):
        allowed = {n: s for n, s in sizes.items() if n in formats.REPRESENTATIONS[rep].encodings}
        if allowed:
            assert formats.tensor_nbytes(w, rep) == min(allowed.values())


def test_auto_in_a_whole_model_is_never_larger_than_any_representation(tmp_path):
    torch.manual_seed(0)
    net = prepare_(Mixed(), "codebook", 0.1, bits=3)
    quantize_int8_(net.fc)  # one layer on an int8 grid
    totals = {}
    for rep in ("dense", "csr", "codebook", "auto"):
        totals[rep] = weight_bytes(net, (1, 3, 8, 8), rep).total
    assert totals["auto"] <= min(totals.values())
    res = emit_and_verify(net, (1, 3, 8, 8), "auto", tmp_path)
    g_layers = {ly["source"]: ly for ly in res.report["layers"] if ly["kernel"]}
    for name in ("conv", "dw", "conv1d", "fc"):
        w = getattr(net, name).weight.detach().numpy()
        assert g_layers[name]["format"] == formats.choose_encoding(w, "auto").name


def test_encoded_nbytes_keeps_working_for_shape_only_representations():
    assert formats.encoded_nbytes(10, 300, 300, "csr") == 1822
    assert formats.encoded_nbytes(10, 300, 3000, "dense") == 12000
    with pytest.raises(ValueError, match="tensor_nbytes"):
        formats.encoded_nbytes(10, 300, 300, "codebook")
    with pytest.raises(ValueError, match="unknown representation"):
        formats.tensor_nbytes(np.ones((2, 2), np.float32), "int4")


# ---- errors ---------------------------------------------------------------------------------------


class Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Linear(30, 20), nn.ReLU())
        self.head = nn.Linear(20, 3)

    def forward(self, x):
        return self.head(self.features(x))


def test_codebook_needs_at_most_256_distinct_values(tmp_path):
    torch.manual_seed(0)
    net = Two().eval()  # 600 distinct random weights in features.0
    with pytest.raises(CodegenError) as ei:
        save_compressed_model(net, "codebook", torch.randn(1, 30), tmp_path / "m")
    msg = str(ei.value)
    assert "'features.0'" in msg and "distinct" in msg and "share_weights_" in msg and "256" in msg
    assert not (tmp_path / "m").exists()
    share_weights_(net, 8)
    save_compressed_model(net, "codebook", torch.randn(1, 30), tmp_path / "m")


def test_int8_needs_weights_on_an_int8_grid(tmp_path):
    torch.manual_seed(0)
    net = Two().eval()
    with pytest.raises(CodegenError) as ei:
        save_compressed_model(net, "int8", torch.randn(1, 30), tmp_path / "m")
    msg = str(ei.value)
    assert "'features.0'" in msg and "int8 grid" in msg and "quantize_int8_" in msg
    assert not (tmp_path / "m").exists()
    # "auto" falls back to the float encodings instead
    res = save_compressed_model(net, "auto", torch.randn(1, 30), tmp_path / "a")
    assert {ly["format"] for ly in res.report["layers"] if ly["kernel"]} == {"dense"}


def test_nan_weight_is_named():
    w = np.ones((3, 4), np.float32)
    w[1, 2] = np.nan
    for rep in ("int8", "codebook", "auto"):
        with pytest.raises(CodegenError, match=r"layer 'blocks\.3'.*non-finite"):
            formats.encode_tensor(w, "t", rep, layer="blocks.3")
        with pytest.raises(CodegenError, match="non-finite"):
            formats.tensor_nbytes(w, rep)


def test_same_model_gives_byte_identical_files(tmp_path):
    torch.manual_seed(0)
    net = prepare_(Mixed(), "codebook", 0.2, bits=5)
    a = save_compressed_model(net, "auto", input_shape=(1, 3, 8, 8), directory=tmp_path / "a")
    b = save_compressed_model(net, "auto", input_shape=(1, 3, 8, 8), directory=tmp_path / "b")
    for f in a.report["files"]:
        assert (a.directory / f).read_bytes() == (b.directory / f).read_bytes(), f


# ---- on the emulated Cortex-M4F and M3 ------------------------------------------------------------


def require_board() -> None:
    """Skip (or, with SPARSECOMP_REQUIRE_BOARD=1, fail) when the board toolchain is missing."""
    ok, reason = cboard.board_toolchain_available()
    if ok:
        return
    message = f"Cortex-M board toolchain not available: {reason}"
    if os.environ.get("SPARSECOMP_REQUIRE_BOARD") == "1":
        pytest.fail(message + " (SPARSECOMP_REQUIRE_BOARD=1: a missing toolchain is an error)")
    pytest.skip(message)


@pytest.fixture(scope="module", params=NEW_FORMS)
def on_board(request, tmp_path_factory):
    require_board()
    form = request.param
    torch.manual_seed(4)
    net = prepare_(AllKinds(), form, 0.3, bits=5)
    x = torch.randn(1, 6, 7, 7)
    d = tmp_path_factory.mktemp(f"board_{form}") / "model"
    with pytest.MonkeyPatch.context() as mp:
        res = save_compressed_model(net, only(mp, form), input_data=x, directory=d)
    with torch.no_grad():
        expected = net(x).numpy().reshape(-1)
    return form, d, expected, res


@pytest.mark.board
@pytest.mark.parametrize("target", ["m4", "m3"])
def test_each_form_runs_on_the_emulated_board(on_board, target):
    form, d, expected, res = on_board
    assert {ly["format"] for ly in res.report["layers"] if ly["kernel"]} == {form}
    result = cboard.run(d, target)
    assert result.passed, result.stdout + result.stderr
    np.testing.assert_allclose(result.outputs, expected, rtol=0, atol=res.report["test"]["tolerance"])


class ConvPaths(nn.Module):
    """The three conv paths of the weight-only section of sc_conv.h: a conv whose outputs are mostly interior (chunked
    output-stationary, 72 taps per row: more than one chunk of 32), a 1x1 stride-1 conv (over the
    flattened plane) and a padded conv on a small plane (weight-stationary taps)."""

    def __init__(self):
        super().__init__()
        self.wide = nn.Conv2d(8, 6, 3)  # 14x13 -> 12x11: interior blocks
        self.pw = nn.Conv2d(6, 7, 1)  # 1x1
        self.small = nn.Conv2d(7, 4, 3, stride=2, padding=1)  # 12x11 -> 6x6, border-heavy

    def forward(self, x):
        return self.small(torch.relu(self.pw(torch.relu(self.wide(x)))))


@pytest.mark.parametrize("density", [0.3, 1.0])
@pytest.mark.parametrize("form", [f for f in NEW_FORMS])
def test_quantized_conv_paths(form, density, tmp_path, monkeypatch):
    torch.manual_seed(3)
    net = prepare_(ConvPaths(), form, density)
    sanitize = sanitizer_problem() is None
    res = emit_and_verify(net, (1, 8, 14, 13), only(monkeypatch, form), tmp_path, sanitize=sanitize)
    for source in ("wide", "pw", "small"):
        assert next(ly for ly in res.report["layers"] if ly["source"] == source)["format"] == form
