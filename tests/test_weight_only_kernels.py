"""The weight-only int8 / codebook kernels of the shapes float runs in place (issue 15) against PyTorch.

* Depthwise (``sc_conv_q8_dw3`` / ``sc_conv_cb_dw3``, 3x3 stride 1; ``sc_conv_q8_dw`` / ``sc_conv_cb_dw``,
  other kernels and strides): each channel's weights decoded next to the padded plane, then the float
  channel loop; output widths odd / even / 1, padding 0 and 1, no bias, a 1-D depthwise conv.
* 1x1 (``sc_conv_q8_pw`` / ``sc_conv_cb_pw``): 8 positions gathered per pass (a partial last pass),
  2 output channels per pass (an odd last channel), in place inside a DS-CNN-like block.
* Dense codebook linear with in % 8 == 0 (``sc_linear_cb8``): 4- and 8-bit indices (hand-scheduled
  on the Cortex-M4F), 3- and 5-bit indices (the C loop), outputs not a multiple of 4, several rows.

Every model is checked on the host (gcc, sanitizers on) and on the emulated M4F and M3, at -O2 and -Os.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from helpers import assert_parity, emit_and_verify

from codegen import board as cboard
from codegen import formats
from codegen.quantize import quantize_int8_, share_weights_

INT8 = "int8_dense_only"
CODEBOOK = "codebook_dense_only"


@pytest.fixture(autouse=True)
def dense_forms(monkeypatch):
    monkeypatch.setitem(formats.REPRESENTATIONS, INT8, ("int8",))
    monkeypatch.setitem(formats.REPRESENTATIONS, CODEBOOK, ("codebook",))


def _quantized(net: nn.Module, form: str, bits: int = 4) -> nn.Module:
    net = net.eval()
    return quantize_int8_(net) if form == INT8 else share_weights_(net, bits)


def _dw(seed: int, k: int, stride: int, pad: int, act: nn.Module, bias: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(6, 6, k, stride=stride, padding=pad, groups=6, bias=bias), act)


class _Dw1d(nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv1d(5, 5, 5, padding=2, groups=5)

    def forward(self, x):
        return torch.relu(self.conv(x))


def _ds_block(seed: int, cout: int = 12) -> nn.Module:
    """conv -> depthwise 3x3 -> 1x1 (C_in == C_out: in place) -> 1x1 with an odd C_out -> linear."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 12, 3, padding=1), nn.ReLU(), nn.Conv2d(12, 12, 3, padding=1, groups=12),
                         nn.ReLU(), nn.Conv2d(12, 12, 1), nn.ReLU6(), nn.Conv2d(12, 7, 1), nn.Flatten(),
                         nn.Linear(7 * 5 * 7, 3))  # fmt: skip


def _linear(fin: int, fout: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(fin, fout), nn.ReLU(), nn.Linear(fout, 5))


CASES = {
    # name -> (model factory, input shape, form, codebook bits, the kernels model.c must call)
    "q8_dw3_odd": (lambda: _dw(1, 3, 1, 1, nn.ReLU()), (1, 6, 6, 7), INT8, 4, ["sc_conv_q8_dw3("]),
    "q8_dw3_w1_nobias": (lambda: _dw(2, 3, 1, 0, nn.Identity(), bias=False), (1, 6, 5, 3), INT8, 4,
                         ["sc_conv_q8_dw3("]),  # fmt: skip
    "q8_dw_5x5_s2": (lambda: _dw(3, 5, 2, 2, nn.ReLU6()), (1, 6, 9, 8), INT8, 4, ["sc_conv_q8_dw("]),
    "cb_dw3_even": (lambda: _dw(4, 3, 1, 1, nn.ReLU()), (1, 6, 4, 6), CODEBOOK, 3, ["sc_conv_cb_dw3("]),
    "cb_dw_3x3_s2": (lambda: _dw(5, 3, 2, 1, nn.Tanh()), (1, 6, 7, 9), CODEBOOK, 5, ["sc_conv_cb_dw("]),
    "cb_dw_1d": (lambda: _Dw1d(6), (1, 5, 19), CODEBOOK, 4, ["sc_conv_cb_dw("]),
    "q8_ds_block": (lambda: _ds_block(7), (1, 2, 5, 7), INT8, 4, ["sc_conv_q8_dw3(", "sc_conv_q8_pw("]),
    "cb_ds_block": (lambda: _ds_block(8), (1, 2, 5, 7), CODEBOOK, 5, ["sc_conv_cb_dw3(", "sc_conv_cb_pw("]),
    "cb_linear_4bit": (lambda: _linear(96, 13, 9), (1, 96), CODEBOOK, 4, ["sc_linear_cb8("]),
    "cb_linear_8bit": (lambda: _linear(64, 10, 10), (1, 64), CODEBOOK, 8, ["sc_linear_cb8("]),
    "cb_linear_5bit": (lambda: _linear(40, 9, 11), (1, 40), CODEBOOK, 5, ["sc_linear_cb8("]),
    "cb_linear_3bit_rows": (lambda: _linear(24, 6, 12), (1, 3, 24), CODEBOOK, 3, ["sc_linear_cb8("]),
    "cb_linear_odd_in": (lambda: _linear(30, 6, 13), (1, 30), CODEBOOK, 4, ["sc_linear_cb("]),
}


def _emit(name: str, tmp_path):
    make, shape, form, bits, kernels = CASES[name]
    model = _quantized(make(), form, bits)
    res = emit_and_verify(model, shape, form, tmp_path, n_inputs=3, sanitize=True)
    src = (res.directory / "model.c").read_text()
    for k in kernels:
        assert k in src, f"{name}: expected a call to {k} in model.c"
    return model, res


@pytest.mark.parametrize("name", CASES)
def test_weight_only_kernels_match_pytorch_on_host(name, tmp_path):
    _emit(name, tmp_path)


@pytest.mark.board
@pytest.mark.parametrize("opt", ["-O2", "-Os"])
@pytest.mark.parametrize("target", ["m4", "m3"])
@pytest.mark.parametrize("name", CASES)
def test_weight_only_kernels_match_pytorch_on_board(name, target, opt, tmp_path):
    from test_board import require_board

    require_board()
    model, res = _emit(name, tmp_path)
    run = cboard.run(res.directory, target, make_vars={"ARM_OPT": opt})
    assert run.passed, f"{name} on {target} {opt}: exit {run.exit_code}\n{run.stdout}{run.stderr}"
    x = torch.randn((3, *CASES[name][1][1:]), generator=torch.Generator().manual_seed(0))[:1]  # emit_and_verify's sample
    with torch.no_grad():
        assert_parity(run.outputs, model(x).numpy().reshape(-1), f"{name} on {target} {opt}")


@pytest.mark.parametrize("name, form", [("q8_ds_block", INT8), ("cb_ds_block", CODEBOOK)])
def test_weight_only_depthwise_and_pointwise_run_in_place(name, form, tmp_path):
    """The weight-only depthwise and 1x1 convs overwrite their input as the float ones do. The peak is the
    last 1x1 conv (12 -> 7 channels, not in place): its input (12 x 5 x 7 floats), its output (7 x 5 x 7)
    and its 8 gathered positions x 12 channels. Were the 12 -> 12 1x1 conv not in place, its input, output
    and scratch would take 4 * (2 * 420 + 96) = 3,744 B; were the depthwise conv not, 3,360 B + its plane."""
    _, res = _emit(name, tmp_path)
    mem = res.report["memory"]
    assert mem["arena_bytes"] == 4 * (12 * 5 * 7 + 7 * 5 * 7 + 8 * 12), mem


@pytest.mark.board
@pytest.mark.parametrize("name, fields", [("cb_linear_4bit", "ubfx"), ("cb_linear_8bit", "ldrb")])
def test_m4_codebook_linear_uses_the_assembly_loop(name, fields, tmp_path):
    """The M4F build of a 4-/8-bit codebook linear layer holds the hand-scheduled loop (codebook values
    loaded into register pairs, one VMOV per pair: ``vmov s16, s17, ...``); the M3 build does not."""
    from test_board import require_board

    require_board()
    _, res = _emit(name, tmp_path)
    for target, expect in (("m4", True), ("m3", False)):
        dis = _objdump(cboard.build(res.directory, target))
        has = "s16, s17, r" in dis and fields in dis
        assert has == expect, f"{target}: assembly loop {'missing' if expect else 'present'}"


def _objdump(elf) -> str:
    import shutil
    import subprocess

    tool = shutil.which("arm-none-eabi-objdump")
    assert tool, "arm-none-eabi-objdump not found"
    return subprocess.run([tool, "-d", str(elf)], capture_output=True, text=True, check=True).stdout
