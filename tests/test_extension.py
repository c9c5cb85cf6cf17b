"""The extension path is itself a test: a custom layer added end to end, following the recipe in
docs/architecture.md ("Adding an op"): one lowering function, one IR op, one template, one C kernel."""

import subprocess
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

import codegen
from codegen import ir
from codegen.lower import LOWERINGS, register_lowering


class Swish(nn.Module):
    """A user-defined layer codegen does not know: y = x * sigmoid(beta * x)."""

    def __init__(self, beta: float = 1.5):
        super().__init__()
        self.beta = beta

    def forward(self, x):
        return x * torch.sigmoid(self.beta * x)


KERNEL = r"""
#ifndef MY_SWISH_H
#define MY_SWISH_H
#include "sc_runtime.h"
static inline void my_swish(const float *x, float *out, int32_t n, float beta)
{
    int32_t i;
    for (i = 0; i < n; ++i) out[i] = x[i] / (1.0f + SC_EXPF(-beta * x[i]));
}
#endif
"""

TEMPLATE = """\
        my_swish({{ buf(op.inputs[0]) }}, {{ buf(op.output) }}, {{ op.numel }}, {{ op.beta | cfloat }});
"""


def test_custom_op_end_to_end(tmp_path):
    ext = tmp_path / "ext"
    (ext / "ops").mkdir(parents=True)
    (ext / "my_swish.h").write_text(KERNEL)  # 1. the C kernel
    (ext / "ops" / "swish.j2").write_text(TEMPLATE)  # 2. the template

    @dataclass
    class SwishOp(ir.Op):  # 3. the IR op
        numel: int = 0
        beta: float = 1.0
        kind: ClassVar[str] = "swish"
        template: ClassVar[str] = "swish.j2"
        runtime: ClassVar[tuple[str, ...]] = ("my_swish.h",)
        inplace: ClassVar[bool] = True
        extension_dir: ClassVar[str] = str(ext)

    @register_lowering(Swish)  # 4. the lowering
    def lower_swish(ctx, node):
        x = ctx.tensor_arg(node, 0, "input")
        ctx.emit(node, SwishOp(**ctx.common(node, [x]), numel=ctx.numel(x), beta=ctx.module(node).beta))

    try:
        net = nn.Sequential(nn.Conv2d(2, 4, 3), Swish(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
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
    finally:
        del LOWERINGS[Swish]


def test_registering_a_target_twice_is_an_error():
    try:
        register_lowering(nn.Conv2d)(lambda ctx, node: None)
    except ValueError as exc:
        assert "already registered" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("double registration was accepted")
