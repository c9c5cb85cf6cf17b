"""The float32 dense kernels built on the micro-kernels of runtime_c/sc_gemm.h, against PyTorch (issue 15).

* ``sc_conv_dense_mm`` (any conv with dilation 1 whose 4-window column fits ``MM_COL_MAX_BYTES``): 4
  output positions copied as a column (taps outside the input are 0), then ``sc_mm44``: padding and
  strides (border windows), groups, C_out not a multiple of 4 (the last channel repeated), planes not a
  multiple of 4 (the last position repeated), an odd row length (the assembly loop's tail), Conv1d.
* ``sc_conv_dense_pw`` (1x1): its column through ``sc_mm44``; odd C_in.
* ``sc_linear_dense``: 4 rows per pass through ``sc_dot4``: inputs not a multiple of 8 (the C tail),
  outputs not a multiple of 4, several rows.
* A conv whose column would exceed ``MM_COL_MAX_BYTES`` keeps ``sc_conv_dense_d1`` (no scratch), and so
  does a conv whose column would raise the arena (the planner drops that optional scratch).

Every model is checked on the host (gcc, sanitizers on) and on the emulated M4F (the assembly loops)
and M3 (the C loops), at -O2 and -Os; the M4 build holds the VLDMIA loops, the M3 build does not.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from helpers import assert_parity, emit_and_verify

from codegen import board as cboard
from codegen.ops.conv import MM_COL_MAX_BYTES


def _seq(seed: int, *layers: nn.Module) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(*layers)


def _head(c: int, n: int, conv=nn.Conv2d) -> list[nn.Module]:
    """A 1x1 conv to 64 channels and a linear layer after the conv under test: the peak of the arena is
    there, so the planner keeps the conv's column (it drops an optional scratch that raises the arena)."""
    return [conv(c, 64, 1), nn.ReLU(), nn.Flatten(), nn.Linear(64 * n, 3)]


class _Conv1d(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(7)
        self.conv = nn.Conv1d(3, 5, 5, stride=2, padding=2)
        self.head = nn.Sequential(*_head(5, 9, nn.Conv1d))

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x)))


CASES = {
    # name -> (model factory, input shape, the kernels model.c must call)
    "mm_pad_stride": (lambda: _seq(1, nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), *_head(8, 20)), (1, 3, 9, 7),
                      ["sc_conv_dense_mm("]),  # fmt: skip
    "mm_groups_odd_cout": (lambda: _seq(2, nn.Conv2d(4, 6, 3, padding=1, groups=2), nn.ReLU6(), *_head(6, 25)),
                           (1, 4, 5, 5),
                           ["sc_conv_dense_mm("]),  # fmt: skip
    "mm_cin1_odd_row": (lambda: _seq(3, nn.Conv2d(1, 5, 3, bias=False), *_head(5, 20)), (1, 1, 7, 6),
                        ["sc_conv_dense_mm("]),  # fmt: skip
    "mm_lenet_like": (lambda: _seq(4, nn.Conv2d(1, 6, 5), nn.MaxPool2d(2), nn.Conv2d(6, 9, 5), nn.ReLU(),
                                   nn.Flatten(), nn.Linear(9 * 3 * 3, 13), nn.ReLU(), nn.Linear(13, 5)),
                      (1, 1, 18, 18), ["sc_conv_dense_mm(", "sc_linear_dense("]),  # fmt: skip
    "mm_conv1d": (_Conv1d, (1, 3, 17), ["sc_conv_dense_mm("]),
    "pw_odd_cin": (lambda: _seq(5, nn.Conv2d(5, 7, 1), nn.ReLU(), nn.Conv2d(7, 7, 1)), (1, 5, 3, 5),
                   ["sc_conv_dense_pw("]),  # fmt: skip
    "linear_tails": (lambda: _seq(6, nn.Linear(45, 10), nn.ReLU(), nn.Linear(10, 3)), (1, 4, 45),
                     ["sc_linear_dense("]),  # fmt: skip
    "d1_large_window": (lambda: _seq(8, nn.Conv2d(MM_COL_MAX_BYTES // 64 + 1, 4, 2)), (1, MM_COL_MAX_BYTES // 64 + 1, 3, 3),
                        ["sc_conv_dense_d1("]),  # fmt: skip
}


def _emit(name: str, tmp_path):
    make, shape, kernels = CASES[name]
    model = make().eval()
    res = emit_and_verify(model, shape, "dense", tmp_path, n_inputs=3, sanitize=True)
    src = (res.directory / "model.c").read_text()
    for k in kernels:
        assert k in src, f"{name}: expected a call to {k} in model.c"
    return model, res


@pytest.mark.parametrize("name", CASES)
def test_float_gemm_kernels_match_pytorch_on_host(name, tmp_path):
    _emit(name, tmp_path)


def test_the_column_never_raises_the_arena(tmp_path):
    """A lone conv whose output is the peak runs without its column (the arena is that output alone); with
    a larger layer after it, the column fits under that layer's peak and the column kernel runs."""
    from codegen.api import build_graph

    alone = _seq(1, nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 3)).eval()
    g, mem = build_graph(alone, (1, 3, 6, 6))
    assert mem.arena_bytes == 8 * 6 * 6 * 4 and g.ops[0].kernel_choice().name == "sc_conv_dense_d1"
    headed = _seq(1, nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), *_head(8, 36)).eval()
    g, mem = build_graph(headed, (1, 3, 6, 6))
    assert g.ops[0].kernel_choice().name == "sc_conv_dense_mm"
    assert mem.arena_bytes == (8 + 64) * 6 * 6 * 4 + 4 * 8 * 4  # the 1x1 conv's input, output and column


@pytest.mark.board
@pytest.mark.parametrize("opt", ["-O2", "-Os"])
@pytest.mark.parametrize("target", ["m4", "m3"])
@pytest.mark.parametrize("name", CASES)
def test_float_gemm_kernels_match_pytorch_on_board(name, target, opt, tmp_path):
    from test_board import require_board

    require_board()
    model, res = _emit(name, tmp_path)
    run = cboard.run(res.directory, target, make_vars={"ARM_OPT": opt})
    assert run.passed, f"{name} on {target} {opt}: exit {run.exit_code}\n{run.stdout}{run.stderr}"
    x = torch.randn((3, *CASES[name][1][1:]), generator=torch.Generator().manual_seed(0))[:1]  # emit_and_verify's sample
    with torch.no_grad():
        assert_parity(run.outputs, model(x).numpy().reshape(-1), f"{name} on {target} {opt}")


@pytest.mark.board
def test_m4_build_uses_the_vldm_loops(tmp_path):
    """The M4F -O2 build of a LeNet-like model holds sc_mm44's loop (VLDMIA of 8 column values into s16-s23)
    and sc_dot4's (VLDMIA of 8 inputs into s8-s15); the M3 build has no FPU and neither loop."""
    import shutil
    import subprocess

    from test_board import require_board

    require_board()
    _, res = _emit("mm_lenet_like", tmp_path)
    tool = shutil.which("arm-none-eabi-objdump")
    assert tool, "arm-none-eabi-objdump not found"
    for target, expect in (("m4", True), ("m3", False)):
        dis = subprocess.run([tool, "-d", str(cboard.build(res.directory, target))], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
        for regs in ("{s16-s23}", "{s8-s15}"):
            assert (regs in dis) == expect, f"{target}: VLDMIA {regs} {'missing' if expect else 'present'}"
