"""The SMLAD pair kernels of the integer path (int8 sections of sc_conv.h / sc_linear.h, SC_INT8_DSP).

On the host the DSP helpers (sc_sxtb16, sc_sxtb16_ror8, sc_smlad) are portable C, so the pair
kernels are built with -DSC_INT8_DSP=1 and checked bit-exact against the numpy reference
(codegen.integer.IntegerModel.run), next to the plain kernels (-DSC_INT8_DSP=0, the host default)
and under ASan/UBSan. On the emulated Cortex-M4 the real SXTB16/SMLAD instructions run (checked in
the disassembly); the Cortex-M3 has no DSP extension and keeps the plain kernels.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_integer import _require_board, emit_integer, run_int8_c  # noqa: E402

DSP = ("-DSC_INT8_DSP=1",)
PLAIN = ("-DSC_INT8_DSP=0",)
RUNTIME = Path(__file__).resolve().parents[1] / "runtime_c"


def _seq(*mods):
    return nn.Sequential(*mods)


class _Rnn(nn.Module):
    """The output sequence of an nn.LSTM / nn.GRU (batch_first)."""

    def __init__(self, rnn: nn.Module):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x)[0]


class _Mul(nn.Module):
    """Two elementwise int8 muls of 35 values (8 steps of 4 + 3 single): general zero points, then zero point -128
    on both inputs (after a ReLU and a sigmoid)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(7, 7)
        self.b = nn.Linear(7, 7)

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        return torch.cat([a * b, torch.relu(a) * torch.sigmoid(b)], 1)


# (model factory, input shape): conv cases for sc_i8_conv_q8_dsp (conv_*) and the 3-wide sc_i8_conv_q8_k3
# (k3_*), linear cases for the 4-row pair loop
CASES = {
    # cin = 1, kernel (5, 4), row_len 20 (a multiple of 4), odd cout, odd number of positions (4 x 3)
    "conv_cin1_odd_kw": (lambda: _seq(nn.Conv2d(1, 5, (5, 4))), (1, 1, 7, 7)),
    # stride 2 + padding: border windows, pairs that straddle output rows (wout = 5), row_len 18
    "conv_stride2_pad": (lambda: _seq(nn.Conv2d(3, 4, (3, 2), stride=2, padding=1), nn.ReLU()), (1, 3, 9, 10)),
    # dilation and asymmetric stride/padding/dilation, row_len 18
    "conv_dilation": (lambda: _seq(nn.Conv2d(2, 6, 3, stride=(1, 2), padding=(2, 1), dilation=(2, 2))),
                      (1, 2, 8, 9)),  # fmt: skip
    # interior pairs (im2col of both windows at once) and borders, row_len 200 (multiple of 4), no bias
    "conv_interior_nobias": (lambda: _seq(nn.Conv2d(8, 6, 5, padding=2, bias=False), nn.ReLU6()), (1, 8, 7, 9)),
    # 1x1 (row_len 4), then 'same' even kernel (asymmetric padding)
    "conv_1x1_same": (lambda: _seq(nn.Conv2d(4, 7, 1), nn.ReLU(), nn.Conv2d(7, 3, 4, padding="same")), (1, 4, 5, 6)),
    "conv1d": (lambda: _seq(nn.Conv1d(3, 5, 5, stride=2, padding=2), nn.ReLU()), (1, 3, 17)),
    # 3 wide, but the band (64 x 3 rows of 51 bytes) is above DSP_SCRATCH_MAX_BYTES: the im2col kernel instead
    "conv_k3_band_too_large": (lambda: _seq(nn.Conv2d(64, 2, 3, padding=1)), (1, 64, 3, 48)),
    # 3-wide: cin 1, kernel (5, 3): 5 kernel rows (a block + 1 single row), odd cout 5, odd wout 5, no padding
    "k3_cin1_kh5": (lambda: _seq(nn.Conv2d(1, 5, (5, 3))), (1, 1, 7, 7)),
    # 3 kernel rows (3 single rows), padding 1 (the band's borders and rows past the input), ReLU6
    "k3_cin1_3x3": (lambda: _seq(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU6()), (1, 1, 6, 7)),
    # stride 2 + padding, 9 rows (2 blocks + 1), wout 5; then 24 rows (6 blocks), no bias, even wout 4
    "k3_stride2_pad": (lambda: _seq(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                    nn.Conv2d(8, 6, 3, padding=1, bias=False)), (1, 3, 9, 10)),  # fmt: skip
    # dilation along y (2), stride (1, 2), padding (2, 1): 6 rows (a block + 2 single rows)
    "k3_dilation_y": (lambda: _seq(nn.Conv2d(2, 6, 3, stride=(1, 2), padding=(2, 1), dilation=(2, 1))),
                      (1, 2, 8, 9)),  # fmt: skip
    # output width 1 (input width 1, padding (0, 1)), then output height 1; cout 1
    "k3_wout1": (lambda: _seq(nn.Conv2d(4, 5, 3, padding=(0, 1)), nn.Conv2d(5, 1, 3, padding=1)), (1, 4, 3, 1)),
    # stride 3: the band reads fewer columns than the input has (11 > (3 - 1) * 3 + 4); Conv1d, 3 rows
    "k3_stride3_crop": (lambda: _seq(nn.Conv2d(2, 3, 3, stride=3), nn.Flatten(2), nn.Conv1d(3, 4, 3, padding=1)),
                        (1, 2, 7, 11)),  # fmt: skip
    # a grouped conv keeps the plain kernel in both builds; the depthwise one takes the padded plane
    "conv_groups_depthwise": (lambda: _seq(nn.Conv2d(4, 4, 3, groups=4, padding=1), nn.Conv2d(4, 6, 3, groups=2)),
                              (1, 4, 6, 6)),  # fmt: skip
    # depthwise (plain sc_i8_conv_q8_dw in both builds): 3-wide rows with stride and dilation, then 5x5
    "depthwise_stride_dil": (lambda: _seq(nn.Conv2d(3, 3, 3, groups=3, stride=2, padding=2, dilation=(1, 2)), nn.ReLU(),
                                          nn.Conv2d(3, 3, 5, groups=3, padding=(2, 1))), (1, 3, 11, 12)),  # fmt: skip
    # depthwise on the in_zp-padded plane (sc_i8_conv_q8_dwp): 3x3 stride 1 with padding, odd output width 9
    "dw3_pad_odd": (lambda: _seq(nn.Conv2d(5, 5, 3, groups=5, padding=1), nn.ReLU()), (1, 5, 6, 9)),
    # 3x3 stride 1 without padding, even output width (6), no bias; then ReLU6 and a 3x3 with wout = 2
    "dw3_nopad_nobias": (lambda: _seq(nn.Conv2d(3, 3, 3, groups=3, bias=False), nn.ReLU6(),
                                      nn.Conv2d(3, 3, 3, groups=3, padding=(1, 0))), (1, 3, 5, 8)),  # fmt: skip
    # output width 1 (input width 1, padding 1), asymmetric padding rows, output height 1
    "dw3_wout1": (lambda: _seq(nn.Conv2d(4, 4, 3, groups=4, padding=(0, 1)), nn.Conv2d(4, 4, 3, groups=4, padding=1)),
                  (1, 4, 3, 1)),  # fmt: skip
    # stride 2 (rows and columns past the last window are not copied), then 5x5 padding 2, then (1, 3) s (2, 1)
    "dw_stride2_5x5": (lambda: _seq(nn.Conv2d(4, 4, 3, groups=4, stride=2, padding=1), nn.ReLU(),
                                    nn.Conv2d(4, 4, 5, groups=4, padding=2), nn.Conv2d(4, 4, (1, 3), groups=4, stride=(2, 1))),
                       (1, 4, 11, 10)),  # fmt: skip
    # 3x3 stride 2 (sc_i8_dw3s2_plane with SMLAD): padding 1, odd input (9 x 12), no activation; then no padding
    # with ReLU6 (the last column's word load reads the plane's slack bytes)
    "dw3_stride2": (lambda: _seq(nn.Conv2d(5, 5, 3, groups=5, stride=2, padding=1),
                                 nn.Conv2d(5, 5, 3, groups=5, stride=2), nn.ReLU6()), (1, 5, 9, 12)),  # fmt: skip
    # a plane above DSP_SCRATCH_MAX_BYTES keeps the clipping kernel sc_i8_conv_q8_dw
    "dw_large_plane": (lambda: _seq(nn.Conv2d(2, 2, 3, groups=2, padding=1)), (1, 2, 95, 90)),
    # pointwise (sc_i8_conv_q8_pw, flat plane): odd plane 5 x 5 (last pair overlaps), cin 64, odd cout 9
    "pw_odd_plane": (lambda: _seq(nn.Conv2d(64, 9, 1), nn.ReLU()), (1, 64, 5, 5)),
    # cin % 4 == 3 (channel tail), no bias (the folded bias is -in_zp * sum(q)), plane of 1 position, then 2
    "pw_tail_single": (lambda: _seq(nn.Conv2d(7, 6, 1, bias=False), nn.ReLU6(), nn.Conv2d(6, 3, 1)), (1, 7, 1, 1)),
    "pw_cin2_conv1d": (lambda: _seq(nn.Conv1d(2, 5, 1), nn.Conv1d(5, 4, 1, bias=False)), (1, 2, 2)),
    # cin 1, 5 wide, stride 1 (sc_i8_conv_q8_c1k5): wout 9 (a partial quad), then padding 2 with kh 3, wout 13
    "c1k5_odd": (lambda: _seq(nn.Conv2d(1, 6, 5), nn.ReLU()), (1, 1, 12, 13)),
    "c1k5_pad_kh3": (lambda: _seq(nn.Conv2d(1, 3, (3, 5), padding=(1, 2), bias=False), nn.ReLU6()), (1, 1, 6, 13)),
    "c1k5_conv1d": (lambda: _seq(nn.Conv1d(1, 5, 5, padding=2)), (1, 1, 6)),
    # max pooling: the 2x2 stride-2 fast path on an odd plane (the last row/column dropped), then ceil mode
    # (a window past the input: the generic loop)
    "maxpool_2x2": (lambda: _seq(nn.MaxPool2d(2), nn.Conv2d(2, 2, 1), nn.MaxPool2d(2, ceil_mode=True)), (1, 2, 7, 11)),
    # sc_i8_mul's 4-value step (SC_INT8_DSP and SC_I8_FAST_REQ) and its scalar tail
    "mul_tail": (_Mul, (1, 5, 7)),
    # in % 4 == 1, out = 7 (one 4-row pass + 3 single rows), 3 rows
    "linear_odd": (lambda: _seq(nn.Linear(13, 7), nn.ReLU()), (1, 3, 13)),
    # in < 4 (no pair at all), out % 4 == 1; then in % 4 == 0
    "linear_small": (lambda: _seq(nn.Flatten(), nn.Linear(3, 9), nn.ReLU(), nn.Linear(9, 8), nn.Linear(8, 1)), (1, 3)),
    # recurrent gate projections (sc_i8_rnn_proj, 4 gate rows per pass, the input zero point taken off with
    # SSUB16; after a ReLU it is -128): GRU 15 gate rows (3 passes + 3 single rows), 6 inputs (a pair + 2 left), hidden 5
    "gru_rows_tail": (lambda: _seq(nn.ReLU(), _Rnn(nn.GRU(6, 5, batch_first=True))), (1, 4, 6)),
    # LSTM 16 gate rows, 2 layers, both directions; inputs 8 then 2 x 4 (multiples of 4), hidden 4
    "lstm_2layer_bidir": (lambda: _Rnn(nn.LSTM(8, 4, num_layers=2, bidirectional=True, batch_first=True)), (1, 3, 8)),
}


def _check(name: str, tmp_path: Path, flag_sets: list[tuple[str, ...]], n: int = 10) -> Path:
    torch.manual_seed(sum(map(ord, name)))
    make, shape = CASES[name]
    res, _ = emit_integer(make(), shape, tmp_path)
    qm = res.integer_model
    g = torch.Generator().manual_seed(7)
    x = (3 * torch.randn((n, *shape[1:]), generator=g)).numpy()
    xq = qm.quantize_input(x).reshape(n, -1)
    n_out = int(np.prod(qm.graph.output_value.shape))
    ref = qm.run(xq).reshape(n, n_out)
    for i, flags in enumerate(flag_sets):
        out = run_int8_c(res.directory, xq, n_out, tmp_path / f"b{i}", flags=flags)
        bad = np.argwhere(out != ref)
        assert bad.size == 0, f"{' '.join(flags)}: {len(bad)} outputs differ, first {bad[0]}: C {out[tuple(bad[0])]} ref {ref[tuple(bad[0])]}"
    return res.directory


@pytest.mark.parametrize("name", list(CASES))
def test_pair_kernels_bit_exact_on_host(name, tmp_path):
    """-DSC_INT8_DSP=1 (pair kernels, portable helpers) and =0 (plain kernels) both equal the reference
    (the -Os forms too: the generic requantization in the block kernels, the 2x2 max-pool fast path)."""
    d = _check(name, tmp_path, [DSP, PLAIN, DSP + ("-DSC_I8_FAST_REQ=0", "-DSC_I8_MAXPOOL_FAST")])
    src = (d / "model.c").read_text()
    convs_g1 = name.startswith("conv") and name != "conv_groups_depthwise"  # groups == 1 convs only
    assert ("sc_i8_conv_q8_pw(" in src) == (name.startswith("pw") or name in ("conv_1x1_same", "maxpool_2x2"))
    assert ("sc_i8_conv_q8_c1k5(" in src) == name.startswith("c1k5")
    assert ("sc_i8_conv_q8_dsp(" in src) == convs_g1
    assert ("sc_i8_conv_q8_k3(" in src) == name.startswith("k3")
    if convs_g1:
        assert "#if SC_INT8_DSP" in src and "uint32_t *const scratch = " in src
    dw_padded = name.startswith(("dw", "depthwise", "conv_groups_depthwise")) and name != "dw_large_plane"
    assert ("sc_i8_conv_q8_dwp(" in src) == dw_padded
    assert ("input plane padded with in_zp, + 3 slack bytes (" in src) == dw_padded  # arena scratch
    assert "int8_t pad[" not in src
    assert src.count("sc_i8_mul(") == (2 if name == "mul_tail" else 0)


def test_pair_kernels_clean_under_asan_ubsan(tmp_path):
    from helpers import SANITIZE_FLAGS, require_sanitizer

    require_sanitizer()
    for name in ("gru_rows_tail", "mul_tail", "conv_cin1_odd_kw", "k3_cin1_kh5", "k3_cin1_3x3", "k3_stride2_pad", "k3_dilation_y",
                 "k3_wout1", "k3_stride3_crop", "conv_dilation", "conv_interior_nobias", "depthwise_stride_dil", "linear_odd", "pw_odd_plane",
                 "pw_tail_single", "pw_cin2_conv1d", "c1k5_odd", "c1k5_pad_kh3", "c1k5_conv1d",
                 "dw3_pad_odd", "dw3_wout1", "dw_stride2_5x5", "dw3_stride2"):
        _check(name, tmp_path / name, [DSP + SANITIZE_FLAGS], n=4)


def test_portable_dsp_helpers_match_their_definition(tmp_path):
    """sc_sxtb16 / sc_sxtb16_ror8 / sc_smlad(x) / sc_smla<x><y> / sc_smmlar / sc_ssub16 / sc_uxtb16(_ror8) (portable C on the host)
    against the Arm definitions."""
    rng = np.random.default_rng(1)
    words = np.concatenate([rng.integers(0, 2**32, 300, dtype=np.uint64),
                            [0, 0xFFFFFFFF, 0x80808080, 0x7F7F7F7F, 0x00800080, 0x80000000]]).astype(np.uint64)  # fmt: skip
    src = tmp_path / "h.c"
    src.write_text(
        '#include <stdio.h>\n#include "sc_fixed.h"\n'
        f"static const uint32_t w[] = {{{', '.join(f'{int(v)}u' for v in words)}}};\n"
        "int main(void) {\n    unsigned i; const unsigned n = sizeof w / sizeof w[0];\n"
        "    for (i = 0; i < n; ++i) {\n        const uint32_t b = w[n - 1 - i]; const int32_t c = (int32_t)i - 100;\n"
        "        printf(\"%lu %lu %ld %ld %ld %ld %ld %ld %ld %lu %lu %lu\\n\", (unsigned long)sc_sxtb16(w[i]),\n"
        "        (unsigned long)sc_sxtb16_ror8(w[i]), (long)sc_smlad(w[i], b, c), (long)sc_smladx(w[i], b, c),\n"
        "        (long)sc_smlabb(w[i], b, c), (long)sc_smlabt(w[i], b, c), (long)sc_smlatb(w[i], b, c),\n"
        "        (long)sc_smlatt(w[i], b, c), (long)sc_smmlar((int32_t)w[i], (int32_t)b, c),\n"
        "        (unsigned long)sc_ssub16(w[i], b), (unsigned long)sc_uxtb16(w[i]), (unsigned long)sc_uxtb16_ror8(w[i]));\n"
        "    }\n"
        "    return 0;\n}\n"
    )
    exe = tmp_path / "h"
    subprocess.run(["cc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", "-DSC_INT8_DSP=1",
                    f"-I{RUNTIME}", str(src), "-o", str(exe)], check=True)  # fmt: skip
    got = np.array([ln.split() for ln in subprocess.run([str(exe)], capture_output=True, text=True, check=True)
                    .stdout.splitlines()], dtype=np.int64)  # fmt: skip

    def s8(v):
        return ((v & 0xFF) ^ 0x80) - 0x80

    def s16(v):
        return ((v & 0xFFFF) ^ 0x8000) - 0x8000

    def sxtb16(v):
        return (s8(v) & 0xFFFF) | ((s8(v >> 16) & 0xFFFF) << 16)

    w = [int(v) for v in words]
    for i, v in enumerate(w):
        ror8 = ((v >> 8) | (v << 24)) & 0xFFFFFFFF
        b = w[len(w) - 1 - i]
        c = i - 100
        smlad = c + s16(v) * s16(b) + s16(v >> 16) * s16(b >> 16)
        smladx = c + s16(v) * s16(b >> 16) + s16(v >> 16) * s16(b)
        mla = [c + s16(v >> x) * s16(b >> y) for x, y in ((0, 0), (0, 16), (16, 0), (16, 16))]
        s32 = ((v ^ 2**31) - 2**31), ((b ^ 2**31) - 2**31)
        smmlar = (((c << 32) + s32[0] * s32[1] + 2**31) >> 32) & 0xFFFFFFFF
        smmlar = (smmlar ^ 2**31) - 2**31
        ssub16 = ((v - b) & 0xFFFF) | ((((v >> 16) - (b >> 16)) & 0xFFFF) << 16)
        uxtb16 = v & 0x00FF00FF, ror8 & 0x00FF00FF
        assert tuple(got[i]) == (sxtb16(v), sxtb16(ror8), smlad, smladx, *mla, smmlar, ssub16, *uxtb16), (hex(v), hex(b))


# ---- Cortex-M: real SMLAD on the M4, plain kernels on the M3 -----------------------------------------


def _board_net():
    torch.manual_seed(11)
    # sc_i8_conv_q8_c1k5 (a partial quad, 7), the 3-wide sc_i8_conv_q8_k3 (18 kernel rows: 4 blocks + 2 single
    # rows, odd width), the 3x3 depthwise kernel (odd width), the generic padded-plane one, and the 3x3 stride-2 one,
    return _seq(nn.Conv2d(1, 6, (3, 5), padding=(1, 2)), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
                nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1, stride=2, groups=6),
                nn.Conv2d(6, 6, 5, padding=2, stride=(2, 1), groups=6), nn.ReLU(), nn.Conv2d(6, 5, (3, 2), stride=(1, 2)), nn.ReLU(),
                nn.Conv2d(5, 8, 1), nn.ReLU(), nn.Flatten(), nn.LazyLinear(12), nn.ReLU(), nn.Linear(12, 7),
                nn.Linear(7, 5))  # fmt: skip


def _disassembly(elf: Path) -> str:
    return subprocess.run(["arm-none-eabi-objdump", "-d", str(elf)], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("target,cppflags,expect_dsp,opt", [("m4", "", True, "-O2"), ("m4", "-DSC_INT8_DSP=0", False, "-O2"),
                                                            ("m3", "", False, "-O2"), ("m4", "", True, "-Os"),
                                                            ("m3", "", False, "-Os")])  # fmt: skip
def test_board_bit_exact_with_and_without_dsp(target, cppflags, expect_dsp, opt, tmp_path):
    _require_board()
    from codegen import board

    net = _board_net()
    net(torch.zeros(1, 1, 9, 7))
    res, _ = emit_integer(net, (1, 1, 9, 7), tmp_path)
    assert "sc_i8_conv_q8_k3(" in (res.directory / "model.c").read_text()
    make_vars = {"ARM_OPT": opt, **({"CPPFLAGS": f"-I. {cppflags}"} if cppflags else {})}
    run = board.run(res.directory, target, make_vars=make_vars)
    assert run.exit_code == 0, run.stdout + run.stderr
    assert run.max_abs_error == 0.0
    if opt == "-Os":  # the -Os forms (no SC_I8_FAST_REQ: no SMMLAR requantization)
        return
    dis = _disassembly(res.directory / "build" / target / "model.elf")
    for insn in ("smlad", "smladx", "sxtb16", "smmlar"):
        assert (f"\t{insn}\t" in dis) == expect_dsp, insn
    if expect_dsp:  # the 3x3 depthwise kernel's single products (gcc may also pick them for plain C)
        assert "\tsmlabb\t" in dis and "\tsmlatt\t" in dis


def _run_c_rows(src: Path, rows: np.ndarray) -> list[str]:
    """Builds the C program `src` (host cc, sanitizers where they work) and feeds it `rows`, one per line; its
    output lines."""
    from helpers import SANITIZE_FLAGS, sanitizer_problem

    flags = [] if sanitizer_problem() else list(SANITIZE_FLAGS)
    exe = src.with_suffix("")
    subprocess.run(["cc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", *flags, f"-I{RUNTIME}",
                    str(src), "-o", str(exe)], check=True)  # fmt: skip
    out = subprocess.run([str(exe)], input="\n".join(" ".join(map(str, r)) for r in rows), capture_output=True,
                         text=True)  # fmt: skip
    assert out.returncode == 0 and out.stderr == "", out.stderr[-2000:]
    return out.stdout.splitlines()


def test_requantization_fast_path_matches_reference(tmp_path):
    """sc_i8_mbqm (one SMLAL for shift <= -2, sc_i8_mbqm_e2), sc_i8_requant and sc_i8_requant_hk against the numpy
    reference (codegen.integer.mbqm) on random and edge accumulators, multipliers and shifts, ties
    included (accumulators k * 2^(e-1) around multiples of 2^e with mult = 2^30)."""
    from codegen.integer import mbqm

    rng = np.random.default_rng(3)
    edges = [0, 1, -1, 2, -2, 127, -128, 2**31 - 1, -(2**31), 2**30, -(2**30), 2**30 - 1, -(2**30) + 1]
    acc = np.concatenate([rng.integers(-(2**31), 2**31, 4000), rng.integers(-5000, 5000, 4000), edges * 20])
    mult = np.concatenate([rng.integers(2**30, 2**31, acc.size - 200), np.full(100, 2**30), np.full(100, 2**31 - 1)])
    rng.shuffle(mult)
    shift = rng.integers(-31, 3, acc.size)
    # exact ties of both roundings: mult = 2^30 halves, then k * 2^(e-1) sits on a rounding boundary
    e = rng.integers(1, 12, 2000)
    k = rng.integers(-4000, 4000, 2000)
    acc = np.concatenate([acc, np.clip(2 * k * (1 << (e - 1)) + rng.integers(-2, 3, 2000), -(2**31), 2**31 - 1)])
    mult = np.concatenate([mult, np.full(2000, 2**30)])
    shift = np.concatenate([shift, -e])
    mult[rng.random(mult.size) < 0.01] = 0
    zp = rng.integers(-128, 128, acc.size)
    lo = np.where(rng.random(acc.size) < 0.5, -128, rng.integers(-128, 0, acc.size))
    hi = np.where(rng.random(acc.size) < 0.5, 127, rng.integers(0, 128, acc.size))
    rows = np.stack([acc, mult, shift, zp, lo, hi], 1)
    src = tmp_path / "r.c"
    src.write_text(
        '#include <stdio.h>\n#include "sc_fixed.h"\nint main(void) {\n    long a, m, s, z, l, h;\n'
        '    while (scanf("%ld %ld %ld %ld %ld %ld", &a, &m, &s, &z, &l, &h) == 6)\n'
        '        printf("%ld %d %d %d\\n", (long)sc_i8_mbqm((int32_t)a, (int32_t)m, (int32_t)s),\n'
        '               sc_i8_requant((int32_t)a, (int32_t)m, (int32_t)s, (int32_t)z, (int32_t)l, (int32_t)h),\n'
        '               s <= -2 ? sc_i8_requant_hk((int32_t)a, (int32_t)m, 1u << (-s - 2), (int32_t)(-s - 1),\n'
        '                                          (int32_t)z, (int32_t)l, (int32_t)h) : -1000,\n'
        '               sc_i8_mm_ok((int32_t)a, (int32_t)s, 0) ? sc_i8_requant_mm((int32_t)(2 * a), (int32_t)m,\n'
        '                   SC_I8_MM_KZ((int32_t)-s, (int32_t)z), (int32_t)-s, (int32_t)z, (int32_t)l, (int32_t)h) : -1000);\n'
        "    return 0;\n}\n"
    )
    got = np.array([ln.split() for ln in _run_c_rows(src, rows)], dtype=np.int64)
    want = mbqm(acc, mult, shift)
    assert got.shape == (acc.size, 4)
    bad = np.flatnonzero(got[:, 0] != want)
    assert bad.size == 0, f"{bad.size} differ, first acc={acc[bad[0]]} mult={mult[bad[0]]} shift={shift[bad[0]]}: " \
                          f"C {got[bad[0], 0]} ref {want[bad[0]]}"  # fmt: skip
    assert np.array_equal(got[:, 1], np.clip(want + zp, lo, hi))
    assert np.array_equal(got[:, 2], np.where(shift <= -2, np.clip(want + zp, lo, hi), -1000))
    # sc_i8_requant_mm on 2 * acc: wherever sc_i8_mm_ok holds (|acc| < 2^30, -21 <= shift <= -1), ReLU bounds
    # (lo >= zp) included; the random accumulators above reach every case
    mm = (np.abs(acc) < 2**30) & (shift <= -1) & (shift >= -21)
    assert mm.sum() > 4000 and (mm & (lo >= zp) & (acc < 0)).sum() > 100
    assert np.array_equal(got[:, 3], np.where(mm, np.clip(want + zp, lo, hi), -1000))


def test_small_value_requantization_matches_reference(tmp_path):
    """sc_i8_rq_init / sc_i8_rq_mbqm / sc_i8_rq_out (the elementwise kernels' SMMLAR form, left shifts
    included) against codegen.integer.mbqm for values within the bound it is given, ties included; outside
    its conditions sc_i8_rq_init refuses."""
    from codegen.integer import mbqm

    rng = np.random.default_rng(5)
    n = 6000
    shift = rng.integers(-24, 25, n)
    xmax = rng.choice([255, 255 * 255, 255 * 2**20, 510 * 2**20 + 2], n)
    x = (rng.random(n) * 2 - 1) * xmax
    x = np.where(rng.random(n) < 0.1, np.sign(x) * xmax, x).astype(np.int64)
    mult = rng.integers(2**30, 2**31, n)
    e = np.maximum(-shift, 1)  # exact ties: mult = 2^30, x = k * 2^(e-1)
    tie = rng.random(n) < 0.2
    mult = np.where(tie, 2**30, mult)
    x = np.where(tie & (e < 20), np.clip(rng.integers(-200, 200, n) << (e - 1), -xmax, xmax), x)
    zp = rng.integers(-128, 128, n)
    lo = np.where(rng.random(n) < 0.5, -128, rng.integers(-128, 0, n))
    hi = np.where(rng.random(n) < 0.5, 127, rng.integers(0, 128, n))
    rows = np.stack([x, mult, shift, zp, lo, hi, xmax], 1)
    src = tmp_path / "q.c"
    src.write_text(
        '#include <stdio.h>\n#include "sc_fixed.h"\nint main(void) {\n    long a, m, s, z, l, h, xm;\n'
        '    while (scanf("%ld %ld %ld %ld %ld %ld %ld", &a, &m, &s, &z, &l, &h, &xm) == 7) {\n'
        "        sc_i8_rq r0, r;\n"
        "        if (!sc_i8_rq_init(&r0, (int32_t)m, (int32_t)s, 0, (int32_t)xm)"
        " || !sc_i8_rq_init(&r, (int32_t)m, (int32_t)s, (int32_t)z, (int32_t)xm)) {\n"
        '            printf("x\\n");\n            continue;\n        }\n'
        '        printf("%ld %d\\n", (long)sc_i8_rq_mbqm(&r0, (int32_t)a), sc_i8_rq_out(&r, (int32_t)a, (int32_t)l, (int32_t)h));\n'
        "    }\n    return 0;\n}\n"
    )
    lines = _run_c_rows(src, rows)
    assert len(lines) == n
    lshift = np.maximum(shift, 0) + 1
    ok = (shift >= -21) & (shift <= 22) & (xmax < 2.0 ** (30 - lshift))
    assert [ln == "x" for ln in lines] == list(~ok)
    assert ok.sum() > 1500 and (ok & (shift > 0)).sum() > 200 and (ok & (shift == 0)).sum() > 50
    got = np.array([ln.split() for ln, k in zip(lines, ok) if k], dtype=np.int64)
    want = mbqm(x[ok], mult[ok], shift[ok])
    bad = np.flatnonzero(got[:, 0] != want)
    assert bad.size == 0, f"x={x[ok][bad[0]]} mult={mult[ok][bad[0]]} shift={shift[ok][bad[0]]}: C {got[bad[0], 0]} ref {want[bad[0]]}"
    assert np.array_equal(got[:, 1], np.clip(want + zp[ok], lo[ok], hi[ok]))


@pytest.mark.parametrize("opt", ["-O2", "-Os"])
@pytest.mark.parametrize("target", ["m4", "m3"])
def test_k3_conv_bit_exact_on_board(target, opt, tmp_path):
    """The 3-wide kernel (sc_i8_conv_q8_k3: SXTB16/PKHBT column and the asm 2x2 loop on the M4, plain C on the
    M3) with every output compared: 9 kernel rows (2 blocks + 1) at stride 2 with padding, then (5, 3) over
    40 rows (10 blocks), odd widths."""
    _require_board()
    from codegen import board

    torch.manual_seed(5)
    net = _seq(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 5, (5, 3), padding=(2, 1)))
    res, _ = emit_integer(net, (1, 3, 9, 10), tmp_path)
    assert (res.directory / "model.c").read_text().count("sc_i8_conv_q8_k3(") == 2
    run = board.run(res.directory, target, make_vars={"ARM_OPT": opt})
    assert run.exit_code == 0, run.stdout + run.stderr
    assert run.max_abs_error == 0.0 and len(run.outputs) == 5 * 5 * 5


@pytest.mark.parametrize("target", ["m4", "m3"])
def test_gru_after_relu_bit_exact_on_board(target, tmp_path):
    """The gate projection of inputs with zero point -128 (after a ReLU: EOR + UXTB16 on the M4) and the SMMLAR
    requantization every gate row passes (sc_i8_rnn_proj's mm argument = 1), every output compared."""
    _require_board()
    from codegen import board

    torch.manual_seed(2)
    res, _ = emit_integer(_seq(nn.ReLU(), _Rnn(nn.GRU(8, 6, batch_first=True))), (1, 5, 8), tmp_path)
    src = (res.directory / "model.c").read_text()
    assert ", -128, " in src and src.count(", 1, gx);") == 1 and src.count(", 1, gh);") == 1
    run = board.run(res.directory, target)
    assert run.exit_code == 0, run.stdout + run.stderr
    assert run.max_abs_error == 0.0 and len(run.outputs) == 5 * 6
    if target == "m4":
        assert "\tuxtb16\t" in _disassembly(res.directory / "build" / target / "model.elf")


class _Elementwise(nn.Module):
    """A residual add (inlined per layer at -O2), a mul and a concat (sc_i8_rq_* at -O2)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 1)
        self.c = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        y = torch.relu(self.a(x) + self.b(x)) * torch.sigmoid(self.b(x))
        return torch.cat([y, self.c(x)], 1)


@pytest.mark.parametrize("target", ["m4", "m3"])
def test_elementwise_bit_exact_on_board(target, tmp_path):
    _require_board()
    from codegen import board

    torch.manual_seed(3)
    res, _ = emit_integer(_Elementwise(), (1, 3, 6, 7), tmp_path)
    src = (res.directory / "model.c").read_text()
    assert "sc_i8_add(" in src and "sc_i8_mul(" in src and "sc_i8_concat_part(" in src
    run = board.run(res.directory, target)
    assert run.exit_code == 0, run.stdout + run.stderr
    assert run.max_abs_error == 0.0
    if target == "m4":  # the SMMLAR forms (concat, conv requantization) are in the firmware
        assert "\tsmmlar\t" in _disassembly(res.directory / "build" / target / "model.elf")


def test_board_asm_loops_are_left_out_at_O0(tmp_path):
    """The hand-scheduled int8 loops (SC_I8_MAC2X2, the 4-row linear loop) need more registers than gcc gives
    an asm block without optimization ("impossible constraints" at -O0): a debug build takes the C loops and
    stays bit-exact."""
    _require_board()
    from codegen import board

    net = _board_net()
    net(torch.zeros(1, 1, 9, 7))
    res, _ = emit_integer(net, (1, 1, 9, 7), tmp_path)
    run = board.run(res.directory, "m4", make_vars={"ARM_OPT": "-O0"})
    assert run.exit_code == 0, run.stdout + run.stderr
    assert run.max_abs_error == 0.0
