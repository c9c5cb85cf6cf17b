"""The extension path is itself a test: a custom layer added end to end, float and int8, following the
recipe in docs/architecture.md ("Adding an op"): one Python module (IR op + lowering + int8 handler),
one template per form (ops/ and ops_int8/), one runtime header with a float and an int8 section."""

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn as nn

import codegen
from codegen import Int8Handler, ir, register_int8, register_lowering
from codegen.integer import INT8_HANDLERS
from codegen.lowering import LOWERINGS


class Swish(nn.Module):
    """A user-defined layer codegen does not know: y = x * sigmoid(beta * x)."""

    def __init__(self, beta: float = 1.5):
        super().__init__()
        self.beta = beta

    def forward(self, x):
        return x * torch.sigmoid(self.beta * x)


# runtime header: one section per form (float, int8), as runtime_c/sc_<family>.h
KERNEL = r"""
#ifndef MY_SWISH_H
#define MY_SWISH_H
#include "sc_runtime.h"
/* float */
static inline void my_swish(const float *x, float *out, int32_t n, float beta)
{
    int32_t i;
    for (i = 0; i < n; ++i) out[i] = x[i] / (1.0f + SC_EXPF(-beta * x[i]));
}
/* int8: a 256-entry table indexed by x + 128 */
static inline void my_swish_i8(const int8_t *x, int8_t *out, int32_t n, const int8_t *lut)
{
    int32_t i;
    for (i = 0; i < n; ++i) out[i] = lut[x[i] + 128];
}
#endif
"""

TEMPLATE = """\
        my_swish({{ buf(op.inputs[0]) }}, {{ buf(op.output) }}, {{ op.numel }}, {{ op.beta | cfloat }});
"""
TEMPLATE_INT8 = """\
        my_swish_i8({{ buf(op.inputs[0]) }}, {{ buf(op.output) }}, {{ op.numel }}, {{ op.encoded["lut"].c_ref("values") }});
"""


def define_swish(ext: Path):
    """The Python module of the recipe: IR op, lowering and int8 form side by side."""

    @dataclass
    class SwishOp(ir.Op):  # the IR op
        numel: int = 0
        beta: float = 1.0
        kind: ClassVar[str] = "swish"
        template: ClassVar[str] = "swish.j2"
        runtime: ClassVar[tuple[str, ...]] = ("my_swish.h",)
        inplace: ClassVar[bool] = True
        extension_dir: ClassVar[str] = str(ext)

    @register_lowering(Swish)  # its lowering
    def lower_swish(ctx, node):
        x = ctx.tensor_arg(node, 0, "input")
        ctx.emit(node, SwishOp(**ctx.common(node, [x]), numel=ctx.numel(x), beta=ctx.module(node).beta))

    @register_int8(SwishOp)  # its int8 form: quantization and the bit-exact reference of my_swish_i8
    class SwishInt8(Int8Handler):
        kind = "swish"
        template = "swish.j2"  # under <extension_dir>/ops_int8/
        runtime = ("my_swish.h",)

        def quantize(self, op, ctx, qo):
            qin, qout = ctx.qin(op), ctx.qout(op)
            x = qin.scale * (np.arange(-128, 128) - qin.zero_point)
            y = x / (1.0 + np.exp(-op.beta * x))
            lut = np.clip(np.round(y / qout.scale) + qout.zero_point, -128, 127).astype(np.int64)
            qo.consts["lut"] = lut
            ctx.int_array("lut", "_lut", "int8_t", lut)

        def reference(self, qo, ins):
            return qo.consts["lut"][ins[0] + 128]

    return SwishOp


@pytest.fixture
def swish(tmp_path):
    ext = tmp_path / "ext"
    (ext / "ops").mkdir(parents=True)
    (ext / "ops_int8").mkdir()
    (ext / "my_swish.h").write_text(KERNEL)  # the runtime header (float and int8 sections)
    (ext / "ops" / "swish.j2").write_text(TEMPLATE)  # the templates
    (ext / "ops_int8" / "swish.j2").write_text(TEMPLATE_INT8)
    op_class = define_swish(ext)
    try:
        yield op_class
    finally:
        del LOWERINGS[Swish]
        del INT8_HANDLERS[op_class]


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), Swish(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()


def test_custom_op_end_to_end(swish, tmp_path):
    net = _net()
    x = torch.randn(1, 2, 6, 6)
    out = tmp_path / "model"
    res = codegen.save_compressed_model(net, "csr", x, out, leaf_modules=(Swish,))
    assert (out / "runtime" / "my_swish.h").read_text() == KERNEL
    assert "my_swish(" in (out / "model.c").read_text()
    assert [ly["op"] for ly in res.report["layers"]] == ["conv", "swish", "linear"]
    proc = subprocess.run(["make", "-s", "-C", str(out), "check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    v = codegen.verify(net, out, torch.randn(4, 2, 6, 6))
    assert v.max_abs_error <= 1e-4 * float(abs(v.reference).max()) + 1e-6


def test_custom_op_integer_emission(swish, tmp_path):
    """The same op goes int8 through its registered handler: the C is bit-exact with the reference (make
    check, tolerance 0) and close to PyTorch."""
    net = _net()
    cal = torch.randn(64, 2, 6, 6, generator=torch.Generator().manual_seed(1))
    out = tmp_path / "model_int8"
    res = codegen.save_compressed_model(net, "int8", cal[:1], out, integer=True, calibration_data=cal,
                                        leaf_modules=(Swish,))  # fmt: skip
    text = (out / "model.c").read_text()
    assert "my_swish_i8(" in text and "sc_i8_conv_" in text
    assert (out / "runtime" / "my_swish.h").read_text() == KERNEL
    assert [qo.kind for qo in res.integer_model.qops] == ["conv", "swish", "linear"]
    proc = subprocess.run(["make", "-s", "-C", str(out), "check"], capture_output=True, text=True)
    assert proc.returncode == 0 and "SC_PASS" in proc.stdout, proc.stdout + proc.stderr
    t = res.report["test"]
    assert t["float_model_max_abs_error"] <= 0.1 * t["float_model_max_abs_output"]


def test_registering_a_target_twice_is_an_error():
    try:
        register_lowering(nn.Conv2d)(lambda ctx, node: None)
    except ValueError as exc:
        assert "already registered" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("double registration was accepted")
