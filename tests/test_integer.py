"""Fully integer inference (codegen/integer.py; runtime_c/sc_fixed.h and the int8 sections of the headers).

The oracle here is the numpy int64 reference ``IntegerModel.run``: the C must be bit-exact with it
on every op and on the end-to-end models, through <prefix>_run_int8 (int8 in/out) and through the
float wrapper <prefix>_run. Accuracy against float is checked loosely (a few output quantization
steps) and reported by benchmarks/integer_accuracy.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from codegen import save_compressed_model
from codegen.api import compile_host
from codegen.emit import render_verify_main
from codegen.errors import CodegenError
from codegen.integer import QParams, mbqm, quantize_multiplier, rdbpot, srdhm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import build_model, sample_inputs  # noqa: E402

INT_DRIVER = """#include <stdio.h>
#include "model.h"
int main(void)
{
    static int8_t in[MODEL_INPUT_SIZE], out[MODEL_OUTPUT_SIZE];
    while (fread(in, 1, sizeof in, stdin) == sizeof in) {
        if (model_run_int8(in, out) != 0) return 3;
        fwrite(out, 1, sizeof out, stdout);
    }
    return 0;
}
"""


def emit_integer(model, sample_shape, tmp_path, n_cal=32, representation="int8", seed=0, cal=None):
    g = torch.Generator().manual_seed(seed)
    if cal is None:
        cal = torch.randn((n_cal, *sample_shape[1:]), generator=g)
    model.eval()
    res = save_compressed_model(model, representation, cal[:1], tmp_path / "m", integer=True, calibration_data=cal,
                                overwrite=True)  # fmt: skip
    return res, cal


def run_int8_c(directory: Path, xq: np.ndarray, n_out: int, tmp: Path, flags: tuple[str, ...] = ()) -> np.ndarray:
    tmp.mkdir(exist_ok=True)
    exe = compile_host(directory, INT_DRIVER, tmp, extra_flags=flags)
    proc = subprocess.run([str(exe)], input=xq.astype(np.int8).tobytes(), capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return np.frombuffer(proc.stdout, dtype=np.int8).reshape(xq.shape[0], n_out)


def run_float_c(directory: Path, x: np.ndarray, n_out: int, tmp: Path) -> np.ndarray:
    tmp.mkdir(exist_ok=True)
    exe = compile_host(directory, render_verify_main("model", "test"), tmp)
    proc = subprocess.run([str(exe)], input=x.astype("<f4").tobytes(), capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return np.frombuffer(proc.stdout, dtype="<f4").reshape(x.shape[0], n_out)


def check_bit_exact(model, sample_shape, tmp_path, n_test=12, **kw):
    """Emits in integer mode, then: the self-test passes, int8 C == reference on calibration and
    fresh inputs (incl. out-of-range ones), float wrapper C == reference dequantized."""
    res, cal = emit_integer(model, sample_shape, tmp_path, **kw)
    qm = res.integer_model
    d = res.directory
    proc = subprocess.run(["make", "-C", str(d), "check"], capture_output=True, text=True)
    assert proc.returncode == 0 and "SC_PASS" in proc.stdout, proc.stdout + proc.stderr
    g = torch.Generator().manual_seed(99)
    x = torch.cat([cal[:4], 3 * torch.randn((n_test, *sample_shape[1:]), generator=g)]).numpy()
    xq = qm.quantize_input(x)
    n_out = int(np.prod(qm.graph.output_value.shape))
    ref = qm.run(xq).reshape(x.shape[0], n_out)
    out = run_int8_c(d, xq.reshape(x.shape[0], -1), n_out, tmp_path / "bi")
    mism = np.argwhere(out != ref)
    assert mism.size == 0, f"{len(mism)} int8 outputs differ, first at {mism[0]}: C {out[tuple(mism[0])]} ref {ref[tuple(mism[0])]}"
    outf = run_float_c(d, x.reshape(x.shape[0], -1), n_out, tmp_path / "bf")
    np.testing.assert_array_equal(outf, qm.dequantize_output(ref))
    return res, qm, cal


# ---- fixed-point primitives ---------------------------------------------------------------------


def test_fixed_point_primitives_match_tflite_definitions():
    assert quantize_multiplier(0.5) == (1 << 30, 0)
    assert quantize_multiplier(1.0) == (1 << 30, 1)
    assert quantize_multiplier(0.0) == (0, 0)
    m, s = quantize_multiplier(0.0123)
    assert 1 << 30 <= m < 1 << 31 and abs(m * 2.0 ** (s - 31) - 0.0123) < 1e-9
    assert int(srdhm(-(2**31), -(2**31))) == 2**31 - 1
    assert int(srdhm(3, 1 << 30)) == 2 and int(srdhm(-3, 1 << 30)) == -1  # TFLite: +-1.5 -> 2, -1
    assert [int(rdbpot(v, 1)) for v in (5, -5, 4, -4, 3, -3)] == [3, -3, 2, -2, 2, -2]
    assert int(mbqm(2**30, 1 << 30, 2)) == 2**30  # 2^32 saturates to 2^31 - 1, then x 0.5 rounds up
    x = np.arange(-5000, 5000)
    m, s = quantize_multiplier(0.37)
    # TFLite rounds twice (the high mul, then the shift): error <= 0.5 + 0.5 / 2
    np.testing.assert_array_less(np.abs(mbqm(x, m, s) - x * 0.37), 0.75 + 1e-6)


def test_c_primitives_bit_exact(tmp_path):
    """sc_i8_mbqm against the numpy reference on random and extreme values."""
    rng = np.random.default_rng(0)
    xs = np.concatenate([rng.integers(-(2**31), 2**31, 2000), [-(2**31), 2**31 - 1, 0, 1, -1]])
    cases = [(int(quantize_multiplier(float(m))[0]), int(quantize_multiplier(float(m))[1]))
             for m in [1e-9, 3e-5, 0.001, 0.3, 0.5, 0.99999, 1.0, 3.7, 1000.0]]  # fmt: skip
    src = tmp_path / "t.c"
    body = "\n".join(f"    {{ static const int32_t m = {m}, s = {s}; for (i = 0; i < n; ++i) printf(\"%ld\\n\", (long)sc_i8_mbqm(x[i], m, s)); }}"
                     for m, s in cases)  # fmt: skip
    rt = Path(__file__).resolve().parents[1] / "runtime_c"
    src.write_text(
        "#include <stdio.h>\n#include \"sc_fixed.h\"\n"
        f"static const int32_t x[] = {{{', '.join(f'(int32_t){int(v)}LL' for v in xs)}}};\n"
        "int main(void) {\n    int i; const int n = (int)(sizeof x / sizeof x[0]);\n" + body + "\n    return 0;\n}\n"
    )
    exe = tmp_path / "t"
    subprocess.run(["cc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{rt}", str(src), "-o", str(exe)],
                   check=True)  # fmt: skip
    out = np.array(subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split(), dtype=np.int64)
    ref = np.concatenate([mbqm(xs, m, s) for m, s in cases])
    np.testing.assert_array_equal(out, ref)


def test_qparams_and_input_quantization():
    q = QParams.from_range(-1.0, 3.0)
    assert q.zero_point == -64 and abs(q.scale - 4 / 255) < 1e-7
    assert QParams.from_range(0.5, 2.0).zero_point == -128  # 0 is always representable
    x = np.array([0.0, -1.0, 3.0, 100.0, -100.0, np.nan], dtype=np.float32)
    assert q.quantize(x).tolist() == [-64, -128, 127, 127, -128, -128]
    assert q.dequantize(q.quantize(np.float32(0.0))) == 0.0


# ---- every op, bit-exact through gcc ----------------------------------------------------------------


class Wrap(nn.Module):
    def __init__(self, fn, *mods):
        super().__init__()
        self.mods = nn.ModuleList(mods)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.mods, x)


def _seq(*mods):
    return nn.Sequential(*mods)


def _bn(c):
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.3, 0.3)
    return bn


class Residual(nn.Module):
    def __init__(self, mode="add", act=True):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 1)
        self.mode, self.act = mode, act

    def forward(self, x):
        y = self.a(x) + self.b(x) if self.mode == "add" else self.a(x) * torch.sigmoid(self.b(x))
        return torch.relu(y) if self.act else y


class Cat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 3, 3, padding=1)
        self.b = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return torch.cat([self.a(x), torch.relu(self.b(x))], 1)


class CatW(nn.Module):
    def forward(self, x):
        return torch.cat([x, torch.relu(x), x * x], 3)


class MeanHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(2, 5, 3)

    def forward(self, x):
        return torch.relu(self.c(x)).mean((2, 3))


OPS = {
    "conv": (lambda: _seq(nn.Conv2d(2, 3, 3)), (1, 2, 7, 6)),
    "conv_stride_pad_dil": (lambda: _seq(nn.Conv2d(2, 4, 3, stride=2, padding=2, dilation=2), nn.ReLU()), (1, 2, 9, 8)),
    "conv_same_even_kernel": (lambda: _seq(nn.Conv2d(2, 3, 4, padding="same"), nn.ReLU6()), (1, 2, 6, 7)),
    "conv_groups_nobias": (lambda: _seq(nn.Conv2d(4, 6, 3, groups=2, bias=False, padding=1)), (1, 4, 5, 5)),
    "depthwise_bn_relu6": (lambda: _seq(nn.Conv2d(3, 3, 3, groups=3, padding=1, bias=False), _bn(3), nn.ReLU6()), (1, 3, 6, 6)),
    "conv1d": (lambda: _seq(nn.Conv1d(3, 5, 5, stride=2, padding=2), nn.ReLU()), (1, 3, 17)),
    "linear": (lambda: _seq(nn.Flatten(), nn.Linear(12, 7)), (1, 3, 4)),
    "linear_relu_rows": (lambda: _seq(nn.Linear(6, 5), nn.ReLU()), (1, 3, 6)),
    "maxpool": (lambda: _seq(nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)), (1, 2, 7, 8)),
    "maxpool_dil": (lambda: _seq(nn.MaxPool2d(2, dilation=2)), (1, 2, 7, 7)),
    "maxpool1d": (lambda: _seq(nn.MaxPool1d(3, stride=2)), (1, 3, 11)),
    "avgpool": (lambda: _seq(nn.AvgPool2d(3, stride=2, padding=1)), (1, 2, 7, 8)),
    "avgpool_nopad_count": (lambda: _seq(nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False, ceil_mode=True)), (1, 2, 8, 7)),
    "avgpool_divisor": (lambda: _seq(nn.AvgPool2d(2, divisor_override=3)), (1, 2, 6, 6)),
    "global_avg": (lambda: _seq(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)), (1, 2, 8, 8)),
    "mean": (MeanHead, (1, 2, 7, 7)),
    "add_relu": (lambda: Residual("add", True), (1, 3, 6, 6)),
    "add": (lambda: Residual("add", False), (1, 3, 6, 6)),
    "mul_sigmoid": (lambda: Residual("mul", False), (1, 3, 5, 5)),
    "concat": (Cat, (1, 2, 5, 5)),
    "concat_w_mul": (CatW, (1, 2, 3, 4)),
    "standalone_bn": (lambda: _seq(nn.MaxPool2d(2), _bn(3)), (1, 3, 6, 6)),
    "activations": (lambda: _seq(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.LeakyReLU(0.1), nn.Linear(8, 6),
                                 nn.Hardswish(), nn.Hardsigmoid(), nn.Sigmoid()), (1, 8)),  # fmt: skip
    "pad": (lambda: _seq(nn.ZeroPad2d((1, 2, 0, 1)), nn.Conv2d(2, 2, 2)), (1, 2, 4, 4)),
    "identity": (lambda: _seq(nn.Identity()), (1, 5)),
}

# functional forms, broadcasting/scalar ops and activations of codegen/ops/{broadcast,unary}.py
from test_ops_functional import BNAct, FConv, FLinear, Fn, Gate  # noqa: E402


class RNN(nn.Module):
    """nn.LSTM / nn.GRU (batch_first) over (T, F) -> "last": y[:, -1]; "seq": the whole sequence; "hn": h_n[-1]."""

    def __init__(self, cell, use="last", **kw):
        super().__init__()
        self.rnn = cell(5, 8, batch_first=True, **kw)
        self.fc = nn.Linear(8 * (2 if kw.get("bidirectional") else 1), 4)
        self.use = use
        self.lstm = cell is nn.LSTM

    def forward(self, x):
        if self.use == "hn" and self.lstm:
            _, (h, _c) = self.rnn(x)
            return self.fc(h[-1])
        y, h = self.rnn(x)
        if self.use == "hn":
            return self.fc(h[-1])
        return self.fc(y[:, -1]) if self.use == "last" else self.fc(y)


def _ln(shape):
    ln = nn.LayerNorm(shape)
    with torch.no_grad():
        ln.weight.uniform_(-1.5, 1.5)
        ln.bias.uniform_(-0.5, 0.5)
    return ln


def _prelu(c):
    p = nn.PReLU(c)
    with torch.no_grad():
        p.weight.uniform_(-0.6, 0.6)
    return p


OPS.update({
    "f_conv_bnact_silu": (lambda: _seq(FConv(2, 4, 3, padding=1, bias=False), BNAct(4, nn.SiLU)), (1, 2, 6, 5)),
    "f_linear": (lambda: _seq(nn.Flatten(), FLinear(12, 5), nn.ReLU()), (1, 3, 4)),
    "se_gate_mul": (lambda: Gate(lambda f, g, x: f * g), (1, 3, 5, 7)),
    "se_gate_first_mul": (lambda: Gate(lambda f, g, x: g * f, "spatial"), (1, 3, 4, 5)),
    "bcast_add": (lambda: Gate(lambda f, g, x: g + f, "row"), (1, 3, 5, 7)),
    "bcast_sub_both": (lambda: Gate(lambda f, g, x: (f - g) + (g - f) * 0.5, "col"), (1, 3, 5, 7)),
    "equal_sub": (lambda: Gate(lambda f, g, x: f - torch.sigmoid(f)), (1, 3, 4, 4)),
    "scalar_ops": (lambda: Fn(lambda x: torch.clamp((1 - x) * 0.5 + 3, 2.6, 3.9) / 6 - abs(-x)), (1, 2, 6, 5)),
    "silu_gelu": (lambda: _seq(nn.Linear(8, 8), nn.SiLU(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 6),
                               nn.GELU(approximate="tanh")), (1, 8)),  # fmt: skip
    "mish_softplus_elu": (lambda: _seq(nn.Linear(8, 8), nn.Mish(), nn.Linear(8, 8), nn.Softplus(2.0, 1.0),
                                       nn.Linear(8, 6), nn.ELU(0.5)), (1, 8)),  # fmt: skip
    "prelu_channels": (lambda: _seq(nn.Conv2d(2, 3, 3), _prelu(3)), (1, 2, 5, 6)),
    "prelu_one": (lambda: _seq(nn.Linear(6, 5), _prelu(1)), (1, 6)),
})

# in-place activations (timm's default): the nodes of the tensor they overwrite name their result in the
# lowering's env; the calibration must read each value's range from the node that computed it
OPS.update({
    # timm_tinynet_e's stem: conv -> BatchNorm folded -> SiLU(inplace) ("no calibration range" before)
    "inplace_bn_silu": (lambda: _seq(nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False), _bn(4),
                                     nn.SiLU(inplace=True), nn.Conv2d(4, 3, 1)), (1, 3, 7, 6)),  # fmt: skip
    # timm mobilenetv3/lcnet head: conv_head -> norm_head (Identity) -> Hardswish(inplace) fused into the conv
    "fused_hardswish_inplace": (lambda: _seq(nn.Conv2d(3, 6, 1), nn.Identity(), nn.Hardswish(inplace=True),
                                             nn.Flatten(), nn.Linear(6 * 16, 5), nn.Hardswish(inplace=True),
                                             nn.Dropout(0.2), nn.Linear(5, 4)), (1, 3, 4, 4)),  # fmt: skip
    # int8 forms TFLite has no single kernel for (div: sc_strided.h, sum: sc_reduce.h)
    "div_bcast_gate": (lambda: Gate(lambda f, g, x: f / (g + 0.5)), (1, 3, 5, 7)),  # (C,H,W) / (C,1,1)
    "div_softsign": (lambda: Fn(lambda x: x / (1 + x.abs())), (1, 2, 6, 5)),  # equal shapes
    "div_negative": (lambda: Gate(lambda f, g, x: g / (-1 - f.abs()), "row"), (1, 3, 5, 7)),  # b < 0
    "div_through_zero": (lambda: Gate(lambda f, g, x: f / g, "col"), (1, 3, 5, 7)),  # saturates near 0
    "div_by_row_sum": (lambda: Fn(lambda x: torch.sigmoid(x) / torch.sigmoid(x).sum(-1, keepdim=True)), (1, 2, 5, 6)),
    "sum_channels": (lambda: Fn(lambda x: x.sum(1)), (1, 2, 6, 5)),
    "sum_last_dims": (lambda: Fn(lambda x: torch.sum(x, (2, 3), keepdim=True) * 0.1 + x), (1, 2, 5, 4)),
    "layernorm_rows": (lambda: _seq(nn.Linear(6, 9), _ln(9)), (1, 5, 6)),  # 5 rows of 9
    "layernorm_chw_noaffine": (lambda: Fn(lambda x: F.layer_norm(x, (3, 3, 4), eps=1e-3)), (1, 2, 5, 6)),
    "log_softmax": (lambda: _seq(nn.Linear(6, 10), nn.LogSoftmax(dim=1)), (1, 6)),
    "log_softmax_dim1_chw": (lambda: Fn(lambda x: F.log_softmax(x * 3, dim=1)), (1, 2, 5, 6)),  # inner > 1
    "log_softmax_wide": (lambda: _seq(nn.Linear(4, 700), nn.LogSoftmax(-1)), (1, 4)),
    "lstm_last": (lambda: RNN(nn.LSTM), (1, 7, 5)),
    "lstm_2layer_hn": (lambda: RNN(nn.LSTM, "hn", num_layers=2), (1, 6, 5)),
    "gru_last": (lambda: RNN(nn.GRU), (1, 7, 5)),
    "gru_bidir_seq": (lambda: RNN(nn.GRU, "seq", bidirectional=True), (1, 5, 5)),
    "lstm_bidir_nobias": (lambda: RNN(nn.LSTM, "seq", bidirectional=True, bias=False), (1, 4, 5)),
    "layernorm_wide": (lambda: _seq(nn.Linear(8, 300), _ln(300)), (1, 8)),
    "layernorm_last2": (lambda: _seq(nn.Conv2d(2, 3, 3), _ln((4, 3)), nn.ReLU()), (1, 2, 6, 5)),
    # timm_mobileone_s0: a scalar add (not fusable) -> ReLU(inplace) ("no calibration range" before)
    "scalar_add_relu_inplace": (lambda: Wrap(lambda m, x: m[1](m[0](x) + 0.25) * 2, nn.Conv2d(2, 3, 3),
                                             nn.ReLU(inplace=True)), (1, 2, 5, 5)),  # fmt: skip
})


# parameter operands of elementwise ops (codegen/constfold.py, ChannelAffine / scalar Unary)
from test_constfold import LayerScale  # noqa: E402

OPS.update({f"param_{form}": ((lambda form=form: LayerScale(form)), (1, 3, 6, 5))
            for form in ("mul", "sub", "scalar_tensor", "computed")})


@pytest.mark.parametrize("name", list(OPS))
def test_op_bit_exact(name, tmp_path):
    torch.manual_seed(zlib.crc32(name.encode()) % 1000)  # str hash() differs per process
    make, shape = OPS[name]
    check_bit_exact(make(), shape, tmp_path)


def test_inplace_activation_ranges_come_from_the_producing_node():
    """conv -> BN -> SiLU(inplace): the folded conv's output is quantized over the BatchNorm output's range
    (before the SiLU), the SiLU's output over its own range, not over the union of both."""
    from codegen.integer_emit import build_integer

    torch.manual_seed(3)
    net = _seq(nn.Conv2d(2, 3, 3, bias=False), _bn(3), nn.SiLU(inplace=True)).eval()
    cal = 2 * torch.randn(32, 2, 6, 6)
    qm = build_integer(net, cal[:1], cal)
    with torch.no_grad():
        pre = net[1](net[0](cal))
        post = torch.nn.functional.silu(pre)
    conv, act = qm.graph.ops
    assert conv.inputs == [qm.graph.input] and act.output == qm.graph.output
    for value, t in ((conv.output, pre), (act.output, post)):
        q = qm.qparams[value]
        assert q == QParams.from_range(float(t.min()), float(t.max())), (value, q)
    assert qm.qparams[act.output].dequantize(np.int8(-128)) >= -0.3  # silu >= -0.28: not the conv's range


@pytest.mark.parametrize("representation,expected", [("dense", {"int8"}), ("csr", {"int8_csr"}),
                                                     ("int8", {"int8_rel", "int8_csr"})])  # fmt: skip
def test_sparse_weight_encodings_bit_exact(representation, expected, tmp_path):
    torch.manual_seed(3)
    net = _seq(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(), nn.Flatten(),
               nn.Linear(8 * 3 * 3, 10))  # fmt: skip
    with torch.no_grad():
        for m in net:
            if hasattr(m, "weight"):
                m.weight.mul_((torch.rand_like(m.weight) < 0.15).float())
    res, _, _ = check_bit_exact(net, (1, 3, 8, 8), tmp_path, representation=representation)
    formats = {ly["format"] for ly in res.report["layers"] if ly["weight_shape"]}
    assert formats <= expected | {"int8"} and formats & expected


def test_bytes_counted_equal_bytes_emitted(tmp_path):
    torch.manual_seed(0)
    net = Residual("mul", True)
    with torch.no_grad():
        net.a.weight.mul_((torch.rand_like(net.a.weight) < 0.3).float())
    res, _ = emit_integer(net, (1, 3, 6, 6), tmp_path)
    obj = tmp_path / "model.o"
    subprocess.run(["cc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", "-c", f"-I{res.directory}",
                    str(res.directory / "model.c"), "-o", str(obj)], check=True)  # fmt: skip
    sizes = {}
    for line in subprocess.run(["nm", "-S", str(obj)], capture_output=True, text=True, check=True).stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[3].startswith("model_") and parts[2] in "rRdDbB":
            sizes[parts[3]] = int(parts[1], 16)
    arrays = {a["name"]: a["bytes"] for ly in res.report["layers"] for a in ly["arrays"]}
    assert {k: sizes.get(k) for k in arrays} == arrays
    assert sum(arrays.values()) == res.weight_bytes
    assert f"#define MODEL_WEIGHT_BYTES {res.weight_bytes} " in (res.directory / "model.h").read_text()
    assert not any(a.endswith("_scale") for a in arrays)  # no float scale arrays in the integer path


def test_arena_is_int8(tmp_path):
    torch.manual_seed(0)
    net = _seq(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
               nn.Linear(4 * 36, 3))  # fmt: skip
    res, _ = emit_integer(net, (1, 1, 6, 6), tmp_path)
    float_res = save_compressed_model(net, "dense", torch.zeros(1, 1, 6, 6), tmp_path / "f")
    # the activations take 1 byte per element (the float ones 4); the int8 conv kernels' scratch (start
    # values and int16 column of sc_i8_conv_q8_dsp) is planned in the same arena
    bufs = {b["name"]: b for b in res.report["memory"]["buffers"]}
    fbufs = {b["name"]: b for b in float_res.report["memory"]["buffers"] if not b["name"].endswith(".scratch")}
    assert fbufs and all(bufs[n]["bytes"] * 4 == b["bytes"] for n, b in fbufs.items())
    assert [n for n in bufs if n not in fbufs] == ["l_0.scratch", "l_2.scratch"]
    assert res.arena_bytes == max(b["offset"] + b["bytes"] for b in bufs.values())
    h = (res.directory / "model.h").read_text()
    assert f"#define MODEL_ARENA_BYTES  {res.arena_bytes} " in h
    for macro in ("MODEL_INPUT_SCALE", "MODEL_INPUT_ZERO_POINT", "MODEL_OUTPUT_SCALE", "MODEL_OUTPUT_ZERO_POINT",
                  "int model_run_int8(const int8_t *input, int8_t *output);", "model_quantize_input",
                  "model_dequantize_output"):  # fmt: skip
        assert macro in h


def test_deterministic(tmp_path):
    torch.manual_seed(0)
    net = Residual("add", True)
    a, _ = emit_integer(net, (1, 3, 6, 6), tmp_path / "a")
    b, _ = emit_integer(net, (1, 3, 6, 6), tmp_path / "b")
    for f in a.report["files"]:
        assert (a.directory / f).read_bytes() == (b.directory / f).read_bytes(), f


# ---- end-to-end models -------------------------------------------------------------------------------

# lenet5 (431k weights) was also bit-exact but compiles slowly, so it stays out of the suite; the
# others exercise every op family end to end
E2E = ["lenet300_100", "resnet_tiny", "ds_cnn", "conv1d_sensor", "inception", "odd_names", "tensor_methods"]


@pytest.mark.parametrize("name", E2E)
def test_end_to_end_model_bit_exact_and_close_to_float(name, tmp_path):
    model, x = build_model(name)
    cal = sample_inputs(name, n=24, seed=5)
    res, qm, _ = check_bit_exact(model, tuple(x.shape), tmp_path, cal=cal, n_test=4)
    # accuracy vs float on held-out samples: within a few output quantization steps of the range
    xt = sample_inputs(name, n=8, seed=77)
    with torch.no_grad():
        ref = model.eval()(xt).numpy().reshape(8, -1)
    got = qm.run_float(xt.numpy()).reshape(8, -1)
    spread = float(ref.max() - ref.min())
    assert np.max(np.abs(got - ref)) <= 0.25 * spread + 1e-6, (np.max(np.abs(got - ref)), spread)


# ---- errors -----------------------------------------------------------------------------------------


def test_missing_calibration_data_says_what_to_pass(tmp_path):
    with pytest.raises(CodegenError, match=r"calibration_data: a tensor of N sample inputs \(N, 4\)"):
        save_compressed_model(_seq(nn.Linear(4, 2)), "int8", torch.zeros(1, 4), tmp_path / "m", integer=True)
    assert not (tmp_path / "m").exists()


def test_calibration_without_integer_is_refused(tmp_path):
    with pytest.raises(CodegenError, match="only used with integer=True"):
        save_compressed_model(_seq(nn.Linear(4, 2)), "csr", torch.zeros(1, 4), tmp_path / "m",
                              calibration_data=torch.zeros(3, 4))  # fmt: skip


def test_nan_in_calibration_data(tmp_path):
    cal = torch.randn(8, 4)
    cal[3, 1] = float("nan")
    with pytest.raises(CodegenError, match="calibration_data holds 1 non-finite"):
        save_compressed_model(_seq(nn.Linear(4, 2)), "int8", torch.zeros(1, 4), tmp_path / "m", integer=True,
                              calibration_data=cal)  # fmt: skip


def test_nan_in_weights_names_the_layer(tmp_path):
    net = _seq(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        net[2].weight[0, 0] = float("nan")
    with pytest.raises(CodegenError, match="'2'"):
        save_compressed_model(net, "int8", torch.zeros(1, 4), tmp_path / "m", integer=True,
                              calibration_data=torch.randn(8, 4))  # fmt: skip


def test_wrong_calibration_shape(tmp_path):
    with pytest.raises(CodegenError, match=r"samples of shape \(5,\)"):
        save_compressed_model(_seq(nn.Linear(4, 2)), "int8", torch.zeros(1, 4), tmp_path / "m", integer=True,
                              calibration_data=torch.zeros(8, 5))  # fmt: skip


def test_dataloader_calibration(tmp_path):
    ds = torch.utils.data.TensorDataset(torch.randn(40, 4), torch.zeros(40))
    loader = torch.utils.data.DataLoader(ds, batch_size=16)
    res = save_compressed_model(_seq(nn.Linear(4, 2)), "int8", torch.zeros(1, 4), tmp_path / "m", integer=True,
                                calibration_data=loader)  # fmt: skip
    assert res.report["integer"]["calibration_samples"] == 40


def test_groupnorm_refused_naming_the_layer(tmp_path):
    net = _seq(nn.Conv2d(2, 4, 1), nn.GroupNorm(2, 4))
    with pytest.raises(CodegenError, match=r"layer '1': groupnorm .* has no integer kernel"):
        save_compressed_model(net, "int8", torch.zeros(1, 2, 3, 3), tmp_path / "m", integer=True,
                              calibration_data=torch.randn(8, 2, 3, 3))  # fmt: skip


def test_codebook_representation_refused(tmp_path):
    with pytest.raises(CodegenError, match="cannot be used with integer=True"):
        save_compressed_model(_seq(nn.Linear(4, 2)), "codebook", torch.zeros(1, 4), tmp_path / "m", integer=True,
                              calibration_data=torch.randn(8, 4))  # fmt: skip


# ---- Cortex-M: no float on the integer path; runs on the emulated M3 and M4 -----------------------------


def _require_board():
    from codegen import board

    ok, reason = board.board_toolchain_available()
    if ok:
        return
    msg = f"Cortex-M board toolchain not available: {reason}"
    if os.environ.get("SPARSECOMP_REQUIRE_BOARD") == "1":
        pytest.fail(msg + " (SPARSECOMP_REQUIRE_BOARD=1: a missing toolchain is an error)")
    pytest.skip(msg)


def _small_cnn():
    torch.manual_seed(0)
    return _seq(nn.Conv2d(1, 4, 3, padding=1), _bn(4), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3, groups=4),
                nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))  # fmt: skip


ARM_ENTRY = """#include "model.h"
static int8_t in[MODEL_INPUT_SIZE], out[MODEL_OUTPUT_SIZE];
volatile int sc_rc;
void sc_entry(void) { sc_rc = model_run_int8(in, out); for (;;) {} }
"""


def test_integer_path_links_no_soft_float_on_m3(tmp_path):
    """The integer path alone, built for the Cortex-M3 (soft float) with -ffunction-sections and
    --gc-sections: no __aeabi_f*/__aeabi_d* (soft-float) helper is linked (libc only for memcpy / memset,
    which the padded-plane kernels call)."""
    _require_board()
    res, _ = emit_integer(_small_cnn(), (1, 1, 8, 8), tmp_path)
    d = res.directory
    (tmp_path / "entry.c").write_text(ARM_ENTRY)
    elf = tmp_path / "int8.elf"
    cmd = ["arm-none-eabi-gcc", "-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft", "-std=c99", "-O2", "-Wall", "-Wextra",
           "-Werror", "-pedantic", "-ffunction-sections", "-fdata-sections", f"-I{d}", str(d / "model.c"),
           str(tmp_path / "entry.c"), "-nostartfiles", "-nostdlib", "-Wl,--gc-sections", "-Wl,-e,sc_entry", "-lc", "-lgcc",
           "-o", str(elf)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    syms = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True).stdout
    names = {ln.split()[-1] for ln in syms.splitlines() if ln.strip()}
    assert "model_run_int8" in names and "model_run" not in names
    soft = sorted(n for n in names if n.startswith(("__aeabi_f", "__aeabi_d", "__aeabi_i2f", "__aeabi_l2f"))
                  or n.endswith(("sf3", "df3", "sfsi", "sisf")))  # fmt: skip
    assert soft == [], soft


@pytest.mark.parametrize("target", ["m3", "m4"])
def test_runs_on_emulated_board_bit_exact(target, tmp_path):
    _require_board()
    from codegen import board

    res, _ = emit_integer(_small_cnn(), (1, 1, 8, 8), tmp_path)
    run = board.run(res.directory, target)
    assert run.exit_code == 0, run.stdout + run.stderr
    assert run.max_abs_error == 0.0


class NewInt8Forms(nn.Module):
    """Every int8 form of issue 14's remainder in one model: LSTM, GRU, LayerNorm, tensor division, sum,
    a fused in-place hardswish, log_softmax."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(5, 8, batch_first=True)
        self.gru = nn.GRU(8, 8, batch_first=True)
        self.ln = _ln(8)
        self.fc1 = nn.Linear(8, 6)
        self.act = nn.Hardswish(inplace=True)
        self.fc2 = nn.Linear(6, 5)

    def forward(self, x):
        y, _ = self.lstm(x)
        y, _ = self.gru(y)
        y = self.ln(y)
        y = (y / (1 + y.abs())).sum(1)
        return F.log_softmax(self.fc2(self.act(self.fc1(y))), dim=1)


def test_new_int8_forms_bit_exact(tmp_path):
    torch.manual_seed(5)
    check_bit_exact(NewInt8Forms(), (1, 6, 5), tmp_path)


@pytest.mark.board
def test_new_int8_forms_on_board_bit_exact(tmp_path):
    """The same model on the emulated Cortex-M4F: the self-test's output equals the integer reference."""
    _require_board()
    from codegen import board

    torch.manual_seed(5)
    res, _ = emit_integer(NewInt8Forms(), (1, 6, 5), tmp_path)
    kinds = {qo.kind for qo in res.integer_model.qops}
    assert {"recurrent", "layernorm", "div", "reduce_sum", "log_softmax", "lut"} <= kinds, kinds
    run = board.run(res.directory, "m4")
    assert run.exit_code == 0, run.stdout + run.stderr
    assert run.max_abs_error == 0.0


if shutil.which("cc") is None:  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="no host C compiler")


def test_kernels_clean_under_asan_ubsan(tmp_path):
    from helpers import SANITIZE_FLAGS, require_sanitizer

    require_sanitizer()
    torch.manual_seed(4)
    net = _seq(nn.ZeroPad2d((1, 0, 2, 1)), nn.Conv2d(2, 4, 3, stride=2, padding=2, dilation=2), nn.ReLU(),
               nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False, ceil_mode=True),
               nn.Conv2d(4, 4, 2, groups=4, padding=1), nn.Tanh(), nn.Flatten(), nn.LazyLinear(3))  # fmt: skip
    net(torch.zeros(1, 2, 9, 8))
    res, _ = emit_integer(net, (1, 2, 9, 8), tmp_path)
    qm = res.integer_model
    x = (3 * torch.randn(6, 2, 9, 8)).numpy()
    xq = qm.quantize_input(x).reshape(6, -1)
    out = run_int8_c(res.directory, xq, 3, tmp_path / "san", flags=SANITIZE_FLAGS)
    np.testing.assert_array_equal(out, qm.run(xq).reshape(6, 3))
