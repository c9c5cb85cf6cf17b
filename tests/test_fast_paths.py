"""The fast paths of runtime_c against PyTorch, on the host and on the emulated board.

* CSR linear: 8 nonzeros per step (``sc_csr_dot8_<is>``: hand-scheduled on the Cortex-M4F, the
  C loop elsewhere), then the rest one by one: rows with 0, 1..7, 8, 9..15, 16 and more nonzeros,
  uint8 and uint16 column indices.
* CSR pointwise (``sc_conv_pw_*``): 16 / 8 / 1 positions per pass, rows in one chunk of
  SC_CSR_CHUNK nonzeros and rows over several chunks (the first chunk starts from the bias, the
  last applies the activation).
* CSR depthwise (``sc_conv_dw_*``): padded plane, strides, empty channels, a 7x7 kernel with a full
  channel (two chunks), a 1-D depthwise conv.
* CSR depthwise and pointwise in place (``sc_conv_pwc_*``: 8 positions gathered per pass, the last
  pass partial), the arena holding one activation.
* Dense depthwise 3x3 stride 1 (``sc_conv_dense_dw3``): output widths 1, 2 and odd (the pair
  loop's tail), no padding, ReLU6, no bias, in place inside a DS-CNN-like block.

Every model is checked on the host (gcc, sanitizers on) and on the emulated M4F (where the
assembly loop runs) and M3 (the C loop), at -O2 and -Os.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers import assert_parity, emit_and_verify

from codegen import board as cboard
from codegen import formats

FORCED = "csr_only_kernels"


@pytest.fixture(autouse=True)
def force_csr(monkeypatch):
    monkeypatch.setitem(formats.REPRESENTATIONS, FORCED, formats.Representation(FORCED, ("csr",)))


def _rows_nnz_(w: torch.Tensor, counts: list[int], seed: int) -> None:
    """Keeps exactly counts[r % len(counts)] nonzeros (random positions) in row r of w viewed 2-D."""
    g = np.random.default_rng(seed)
    w2 = w.detach().view(w.shape[0], -1)
    mask = torch.zeros_like(w2)
    for r in range(w2.shape[0]):
        k = min(counts[r % len(counts)], w2.shape[1])
        mask[r, torch.as_tensor(g.choice(w2.shape[1], size=k, replace=False), dtype=torch.long)] = 1.0
    with torch.no_grad():
        w2.mul_(mask)


ROW_COUNTS = [0, 1, 7, 8, 9, 15, 16, 17, 23, 40, 3, 64]


def _linear(fin: int, fout: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(fin, fout), nn.ReLU(), nn.Linear(fout, 7))
    _rows_nnz_(net[0].weight, ROW_COUNTS, seed)
    _rows_nnz_(net[2].weight, [0, 5, 8, 13], seed + 1)
    return net


def _pointwise(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(48, 20, 1), nn.ReLU6(), nn.Conv2d(20, 9, 1, bias=False))
    _rows_nnz_(net[0].weight, [0, 1, 6, 8, 33, 48, 17], seed)  # 33 and 48: two chunks of 32
    _rows_nnz_(net[2].weight, [3, 0, 11], seed + 1)
    return net


def _depthwise(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.ReLU(),
        nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6), nn.Tanh(),
        nn.Conv2d(6, 6, 7, padding=3, groups=6),  # 49 taps: a full channel takes two chunks
    )
    _rows_nnz_(net[0].weight, [0, 1, 2, 9, 5, 3], seed)
    _rows_nnz_(net[2].weight, [4, 0, 9], seed + 1)
    _rows_nnz_(net[4].weight, [49, 0, 1, 33, 12, 40], seed + 2)
    return net


class _Depthwise1d(nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv1d(5, 5, 5, padding=2, groups=5)
        _rows_nnz_(self.conv.weight, [0, 1, 2, 5, 3], seed)

    def forward(self, x):
        return torch.relu(self.conv(x))


def _dw3(seed: int, pad: int, act: nn.Module, bias: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(5, 5, 3, padding=pad, groups=5, bias=bias), act)


def _ds_block(seed: int) -> nn.Module:
    """conv -> depthwise 3x3 (in place over its input) -> pointwise, as in DS-CNN."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                         nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 5, 4))


def _inplace_block(seed: int) -> nn.Module:
    """conv -> CSR depthwise -> CSR pointwise (C_in == C_out): both run in place over their input."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(2, 12, 3, padding=1), nn.ReLU(), nn.Conv2d(12, 12, 3, padding=1, groups=12),
                        nn.ReLU(), nn.Conv2d(12, 12, 1), nn.ReLU6(), nn.Flatten(), nn.Linear(12 * 5 * 7, 3))
    _rows_nnz_(net[0].weight, [18], seed)
    _rows_nnz_(net[2].weight, [0, 1, 4, 9], seed + 1)
    _rows_nnz_(net[4].weight, [0, 1, 5, 12, 8, 3], seed + 2)
    return net


CASES = {
    # name -> (model factory, input shape, representation, the kernels model.c must call)
    "linear_u8": (lambda: _linear(200, 24, 1), (1, 200), FORCED, ["sc_linear_csr_u8_"]),
    "linear_u16": (lambda: _linear(700, 24, 2), (1, 700), FORCED, ["sc_linear_csr_u16_"]),
    "linear_rows": (lambda: nn.Sequential(_linear(40, 12, 3)), (1, 5, 40), FORCED, ["sc_linear_csr_u8_"]),
    "pointwise_5x7": (lambda: _pointwise(4), (1, 48, 5, 7), FORCED, ["sc_conv_pw_csr_"]),  # 35 = 16*2 + 3
    "pointwise_3x9": (lambda: _pointwise(5), (1, 48, 3, 9), FORCED, ["sc_conv_pw_csr_"]),  # 27 = 16 + 8 + 3
    "depthwise": (lambda: _depthwise(6), (1, 6, 9, 11), FORCED, ["sc_conv_dw_csr_"]),
    "depthwise_1d": (lambda: _Depthwise1d(7), (1, 5, 19), FORCED, ["sc_conv_dw_csr_"]),
    "csr_inplace_block": (lambda: _inplace_block(14), (1, 2, 5, 7), FORCED,  # plane 35 = 4 * 8 + 3
                          ["sc_conv_dw_csr_", "sc_conv_pwc_csr_"]),
    "dense_dw3_odd": (lambda: _dw3(8, 1, nn.ReLU()), (1, 5, 6, 7), "dense", ["sc_conv_dense_dw3("]),
    "dense_dw3_w2_nopad": (lambda: _dw3(9, 0, nn.ReLU6(), bias=False), (1, 5, 4, 4), "dense", ["sc_conv_dense_dw3("]),
    "dense_dw3_w1": (lambda: _dw3(10, 0, nn.Identity()), (1, 5, 6, 3), "dense", ["sc_conv_dense_dw3("]),
    "dense_ds_block": (lambda: _ds_block(11), (1, 1, 6, 5), "dense", ["sc_conv_dense_dw3(", "sc_conv_dense_pw("]),
}


def _emit(name: str, tmp_path):
    make, shape, representation, kernels = CASES[name]
    model = make().eval()
    if name == "dense_ds_block":
        with torch.no_grad():  # non-trivial BatchNorm statistics
            model[3].running_mean.uniform_(-0.5, 0.5)
            model[3].running_var.uniform_(0.5, 2.0)
    res = emit_and_verify(model, shape, representation, tmp_path, n_inputs=3, sanitize=True)
    src = (res.directory / "model.c").read_text()
    for k in kernels:
        assert k in src, f"{name}: expected a call to {k}* in model.c"
    return model, res


@pytest.mark.parametrize("name", CASES)
def test_fast_paths_match_pytorch_on_host(name, tmp_path):
    _emit(name, tmp_path)


@pytest.mark.board
@pytest.mark.parametrize("opt", ["-O2", "-Os"])
@pytest.mark.parametrize("target", ["m4", "m3"])
@pytest.mark.parametrize("name", CASES)
def test_fast_paths_match_pytorch_on_board(name, target, opt, tmp_path):
    from test_board import require_board

    require_board()
    model, res = _emit(name, tmp_path)
    run = cboard.run(res.directory, target, make_vars={"ARM_OPT": opt})
    assert run.passed, f"{name} on {target} {opt}: exit {run.exit_code}\n{run.stdout}{run.stderr}"
    x = torch.randn((3, *CASES[name][1][1:]), generator=torch.Generator().manual_seed(0))[:1]  # emit_and_verify's sample
    with torch.no_grad():
        assert_parity(run.outputs, model(x).numpy().reshape(-1), f"{name} on {target} {opt}")


@pytest.mark.board
def test_m4_build_uses_the_assembly_loop(tmp_path):
    """The M4F build of a CSR linear layer contains the hand-scheduled loop (VLDMIA of 8 weights,
    register-pair VMOVs); the M3 build does not (no FPU: the C loop)."""
    from test_board import require_board

    require_board()
    _, res = _emit("linear_u16", tmp_path)
    for target, expect in (("m4", True), ("m3", False)):
        elf = cboard.build(res.directory, target)
        dis = _objdump(elf)
        has = "vldmia" in dis and "{s8-s15}" in dis
        assert has == expect, f"{target}: assembly loop {'missing' if expect else 'present'} in {elf}"


def _objdump(elf) -> str:
    import shutil
    import subprocess

    tool = shutil.which("arm-none-eabi-objdump")
    assert tool, "arm-none-eabi-objdump not found"
    return subprocess.run([tool, "-d", str(elf)], capture_output=True, text=True, check=True).stdout


@pytest.mark.board
@pytest.mark.parametrize("opt", ["-O2", "-O3"])
@pytest.mark.parametrize("hw, k, s, p", [(4, 3, 1, 1), (4, 5, 1, 2), (8, 3, 2, 1), (4, 3, 2, 1)])
def test_depthwise_with_a_plane_multiple_of_4_builds_with_werror(hw, k, s, p, opt, tmp_path):
    """gcc 12 at -O2 once rejected sc_conv_dense_dw inlined with a 16-position plane
    ("iteration 1073741823 invokes undefined behavior", -Werror=aggressive-loop-optimizations, the
    board's default warnings): dense and CSR depthwise / pointwise kernels with planes that are
    multiples of 4, 8 and 16 must build with -Werror and match PyTorch."""
    from test_board import require_board

    require_board()
    torch.manual_seed(12)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 16, k, stride=s, padding=p, groups=16), nn.ReLU6(),
                          nn.Conv2d(16, 8, 1), nn.Flatten()).eval()
    _rows_nnz_(model[4].weight, [3, 0, 9], 13)
    x = torch.randn(1, 1, hw, hw)
    for representation in ("dense", FORCED):
        res = emit_and_verify(model, tuple(x.shape), representation, tmp_path / representation.replace("/", "_"),
                              inputs=x)
        run = cboard.run(res.directory, "m4", make_vars={"ARM_OPT": opt})
        assert run.passed, f"{representation} {opt}: exit {run.exit_code}\n{run.stdout}{run.stderr}"
        with torch.no_grad():
            assert_parity(run.outputs, model(x).numpy().reshape(-1), f"{representation} at {opt} on the M4")


def test_csr_depthwise_and_pointwise_run_in_place(tmp_path):
    """The CSR depthwise and 1x1 convs of a DS-CNN-like block overwrite their input: the arena is
    the largest activation, as with dense weights, plus the depthwise kernel's zero-padded plane (7 x 9
    floats, planned in the arena while that conv runs)."""
    _, res = _emit("csr_inplace_block", tmp_path)
    mem = res.report["memory"]
    assert mem["arena_bytes"] == 4 * 12 * 5 * 7 + 4 * 7 * 9, mem
