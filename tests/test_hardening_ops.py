"""Regression tests of the silently-wrong-C items of the hardening issue that live in the op internals:
batch-folding views (7), zero-size layers (8), scratch that grows with the activation (9), colliding
array names (10)."""

from __future__ import annotations

import subprocess
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

from codegen import CodegenError, UnsupportedConfigError, save_compressed_model
from codegen.quantize import quantize_int8_


def _check(directory) -> str:
    proc = subprocess.run(["make", "-s", "-C", str(directory), "check"], capture_output=True, text=True)
    assert proc.returncode == 0 and "SC_PASS" in proc.stdout, proc.stdout + proc.stderr
    return proc.stdout


# ---- 7: a view that folds the batch dimension ------------------------------------------------------


class FoldingView(nn.Module):
    def __init__(self, mode: str):
        super().__init__()
        self.fc = nn.Linear(24, 24)
        self.head = nn.Linear(4, 2)
        self.mode = mode

    def forward(self, x):
        y = self.fc(x)
        if self.mode == "rows":
            return self.head(y.view(-1, 4))  # PyTorch: (6, 2)
        if self.mode == "flat":
            return y.view(-1)  # PyTorch: (24,)
        return self.head(y.view(x.size(0), -1, 4))  # the batch dim kept: fine


@pytest.mark.parametrize("mode", ["rows", "flat"])
def test_view_folding_the_batch_is_refused_naming_the_node(mode, tmp_path):
    with pytest.raises(UnsupportedConfigError, match=r"layer 'view'.*folds the batch dimension.*x\.view\(x\.size\(0\)"):
        save_compressed_model(FoldingView(mode).eval(), "csr", torch.randn(1, 24), tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_view_keeping_the_batch_checks_every_output_value(tmp_path):
    torch.manual_seed(0)
    res = save_compressed_model(FoldingView("keep").eval(), "csr", torch.randn(1, 24), tmp_path / "m")
    assert res.report["output_shape"] == [6, 2]
    assert "#define MODEL_OUTPUT_SIZE  12" in (tmp_path / "m" / "model.h").read_text()
    assert _check(tmp_path / "m").count("SC_OUT ") == 12


# ---- 8: zero-size layers -----------------------------------------------------------------------------


@pytest.mark.parametrize("net,shape", [
    (nn.Sequential(nn.Linear(4, 0), nn.ReLU()), (1, 4)),
    (nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 0)), (1, 4)),
    (nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(27, 0)), (1, 2, 5, 5)),
], ids=["linear_out0", "last_linear_out0", "after_conv"])  # fmt: skip
def test_zero_size_layer_refused_naming_it(net, shape, tmp_path):
    with pytest.raises(UnsupportedConfigError, match=r"layer '\d'.*no element.*Remove the layer"):
        save_compressed_model(net.eval(), "csr", torch.randn(*shape), tmp_path / "m")


def test_zero_size_input_refused(tmp_path):
    with pytest.raises(CodegenError, match="model input has shape .* no element"):
        save_compressed_model(nn.Sequential(nn.Linear(0, 3)).eval(), "csr", torch.randn(1, 0), tmp_path / "m")


# ---- 10: sanitized names that collide ------------------------------------------------------------


def test_colliding_array_names_get_unique_symbols(tmp_path):
    """A BatchNorm ``a_w`` has ``model_a_w_scale``; so has the int8 weight of a Linear ``a``."""
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(a_w=nn.BatchNorm1d(4), a=nn.Linear(4, 3))).eval()
    with torch.no_grad():
        net.a_w.running_mean.uniform_(-1, 1)
        net.a_w.running_var.uniform_(0.5, 2)
    quantize_int8_(net.a)
    res = save_compressed_model(net, "int8", torch.randn(1, 4), tmp_path / "m")
    names = [a["name"] for ly in res.report["layers"] for a in ly["arrays"]]
    assert len(names) == len(set(names)) and "model_a_w_scale" in names and "model_a_w_scale_2" in names
    _check(tmp_path / "m")


# ---- 9: no kernel scratch on the stack that grows with the activation -------------------------------


def test_large_depthwise_plane_is_planned_in_the_arena(tmp_path, caplog):
    """1x4x1500x1500 used to put a 9 MB `float pad[...]` on the stack (segfault on the host); 1x4x600x600 here; the arena
    holds it now, and emission warns that the arena is larger than a microcontroller's RAM."""
    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU()).eval()
    with caplog.at_level("WARNING", logger="codegen.emission"):
        res = save_compressed_model(net, "dense", None, tmp_path / "m", input_shape=(1, 4, 600, 600))
    assert "activation arena is 1449616 bytes" in caplog.text and "l_0.scratch" in caplog.text
    text = (tmp_path / "m" / "model.c").read_text()
    assert "float pad[" not in text and "float *const pad = " in text
    plane = 602 * 602 * 4
    assert res.report["memory"]["arena_bytes"] == plane  # input and output are the caller's
    assert f"#define MODEL_ARENA_BYTES  {plane}" in (tmp_path / "m" / "model.h").read_text()


@pytest.mark.parametrize("rep", ["dense", "csr"])
def test_depthwise_runs_with_a_small_stack(rep, tmp_path):
    """The padded plane (222 x 222 floats, 197 KB) lives in the arena: the self-test passes with a
    128 KB stack."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, groups=2), nn.Conv2d(2, 2, 1)).eval()
    if rep == "csr":
        with torch.no_grad():
            net[0].weight[:, :, 0, :] = 0
    save_compressed_model(net, rep, torch.randn(1, 2, 220, 220), tmp_path / "m")
    proc = subprocess.run(["bash", "-c", f"make -s -C {tmp_path / 'm'} build/host/selftest && ulimit -s 128 && "
                           f"{tmp_path / 'm'}/build/host/selftest"], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0 and "SC_PASS" in proc.stdout, proc.stdout[-500:] + proc.stderr[-2000:]


def test_stack_usage_parses_gcc_su_files(tmp_path):
    """`sparsecomp board` reports the model's stack from gcc -fstack-usage (runtime_c/board/board.mk)."""
    from codegen.board import stack_usage

    su = tmp_path / "model.su"
    su.write_text("model.c:20:5:model_run\t272\tstatic\n"
                  "runtime/sc_conv.h:100:20:sc_conv_csr_u8_u8\t96\tstatic\n"
                  "runtime/sc_runtime.h:50:20:sc_act\t16\tstatic\n"
                  "runtime/sc_linear.h:30:20:sc_linear_dense\t40\tdynamic,bounded\n")  # fmt: skip
    s = stack_usage(su, "model")
    assert (s.run_frame, s.bound, s.dynamic) == (272, 272 + 96 + 40, False)
    assert s.largest[0] == ("sc_conv_csr_u8_u8", 96)
    su.write_text(su.read_text() + "x.h:1:1:sc_vla\t8\tdynamic\n")
    assert stack_usage(su, "model").dynamic
