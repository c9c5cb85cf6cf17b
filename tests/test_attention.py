"""Products of activations and attention (codegen/ops/matmul.py, codegen/attention.py): parity through gcc
against PyTorch (host), a transformer keyword spotter on the emulated M4, refusals that name the layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from test_board import require_board
from test_ops import run

from codegen import board as cboard
from codegen import save_compressed_model
from codegen.api import build_graph
from codegen.errors import CodegenError


class MatMuls(nn.Module):
    """x (1, 3, 4, 5): the batched product, a 2-D operand broadcast over the leading dim, x @ W, torch.bmm."""

    def __init__(self, form: str):
        super().__init__()
        self.form = form
        self.a = nn.Linear(4, 6)
        self.w = nn.Parameter(torch.randn(5, 7))

    def forward(self, x):
        if self.form == "batched":  # (1, 3, 4, 5) @ (1, 3, 5, 4)
            return torch.matmul(x, x.transpose(-2, -1))
        if self.form == "broadcast":  # (1, 3, 4, 5) @ (1, 5, 6): one matrix for every leading index
            return x @ self.a(x[:, 0].transpose(-2, -1))
        if self.form == "param":
            return torch.relu(x @ self.w)
        if self.form == "bmm":
            y = x.reshape(1, 12, 5)
            return torch.bmm(y[:, :6], y[:, 6:].transpose(1, 2))
        raise ValueError(self.form)


class SDPA(nn.Module):
    def __init__(self, heads: int = 2, scale: float | None = None):
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.heads, self.scale = heads, scale
        self.out = nn.Linear(8, 3)

    def forward(self, x):  # x (1, L, 8)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        split = lambda t: t.reshape(1, t.shape[1], self.heads, 8 // self.heads).transpose(1, 2)  # noqa: E731
        o = F.scaled_dot_product_attention(split(q), split(k), split(v), scale=self.scale)
        return self.out(o.transpose(1, 2).reshape(1, x.shape[1], 8))


class MHA(nn.Module):
    def __init__(self, kdim=None, cross=False):
        super().__init__()
        self.cross = cross
        self.mem = nn.Linear(8, kdim or 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True, kdim=kdim, vdim=kdim)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        kv = self.mem(x[:, :3]) if self.cross else x
        y, _ = self.attn(x, kv, kv)
        return self.fc(y.mean(1))


class KWT(nn.Module):
    """A keyword transformer (KWT-style): MFCC frames (T, F) -> linear embedding + learned positions (a
    (1, T, D) parameter operand) -> encoder -> mean over time -> classes."""

    def __init__(self, layers=2, norm_first=False, activation="gelu", frames=10, feats=12, dim=16):
        super().__init__()
        self.embed = nn.Linear(feats, dim)
        self.pos = nn.Parameter(torch.randn(1, frames, dim) * 0.1)
        layer = nn.TransformerEncoderLayer(dim, 4, 32, dropout=0.1, activation=activation, batch_first=True,
                                           norm_first=norm_first)  # fmt: skip
        self.enc = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False)
        self.head = nn.Linear(dim, 5)

    def forward(self, x):
        return self.head(self.enc(self.embed(x) + self.pos).mean(1))


CASES = {
    "matmul_batched": (lambda: MatMuls("batched"), (1, 3, 4, 5)),
    "matmul_broadcast": (lambda: MatMuls("broadcast"), (1, 3, 4, 5)),
    "matmul_param": (lambda: MatMuls("param"), (1, 3, 4, 5)),
    "bmm": (lambda: MatMuls("bmm"), (1, 3, 4, 5)),
    "sdpa": (lambda: SDPA(), (1, 5, 8)),
    "sdpa_scale": (lambda: SDPA(heads=4, scale=0.3), (1, 4, 8)),
    "mha_self": (lambda: MHA(), (1, 6, 8)),
    "mha_cross_kdim": (lambda: MHA(kdim=6, cross=True), (1, 5, 8)),
    "encoder_layer_relu": (lambda: nn.Sequential(nn.Linear(6, 8), nn.TransformerEncoderLayer(
        8, 2, 16, dropout=0.2, activation="relu", batch_first=True)), (1, 4, 6)),  # fmt: skip
    "encoder_layer_norm_first_gelu_module": (lambda: nn.Sequential(nn.Linear(6, 8), nn.TransformerEncoderLayer(
        8, 2, 16, activation=nn.GELU(), batch_first=True, norm_first=True)), (1, 4, 6)),  # fmt: skip
    "kwt_encoder": (lambda: KWT(), (1, 10, 12)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_attention_parity(name, tmp_path):
    make, shape = CASES[name]
    run(make(), shape, "dense", tmp_path)


def test_matmul_ops_and_linear_for_a_parameter():
    g, _ = build_graph(MatMuls("param").eval(), (1, 3, 4, 5))
    assert [op.kind for op in g.ops] == ["linear"]
    assert g.ops[0].rows == 12 and g.ops[0].in_features == 5 and g.ops[0].out_features == 7
    g, _ = build_graph(MHA().eval(), (1, 6, 8))
    kinds = [op.kind for op in g.ops]
    assert kinds.count("matmul") == 2 and kinds.count("softmax") == 1 and "linear" in kinds
    mm = [op for op in g.ops if op.kind == "matmul"]
    assert (mm[0].batch, mm[0].m, mm[0].k, mm[0].n) == (2, 6, 4, 6)


@pytest.mark.parametrize("what, match", [
    ("batch_first", "batch_first=True"),
    ("attn_mask", "attn_mask"),
    ("weights_used", "attention weights"),
    ("causal_sdpa", "is_causal"),
])  # fmt: skip
def test_unsupported_attention_is_refused_naming_the_layer(what, match, tmp_path):
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=what != "batch_first")
            self.register_buffer("mask", torch.zeros(4, 4))

        def forward(self, x):
            if what == "attn_mask":
                return self.attn(x, x, x, attn_mask=self.mask)[0]
            if what == "weights_used":
                y, w = self.attn(x, x, x)
                return y + w.mean()
            if what == "causal_sdpa":
                return F.scaled_dot_product_attention(x, x, x, is_causal=True)
            return self.attn(x, x, x)[0]

    with pytest.raises(CodegenError, match=match) as exc:
        save_compressed_model(Bad().eval(), "dense", torch.randn(1, 4, 8), tmp_path / "m")
    assert "layer '" in str(exc.value)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("name", ["matmul_batched", "matmul_broadcast", "bmm", "mha_self", "kwt_encoder"])
def test_int8_matmul_and_attention_are_bit_exact(name, tmp_path):
    """integer=True: sc_i8_matmul (and the attention ops around it) equal their numpy reference, self-test passes."""
    from test_integer import check_bit_exact

    torch.manual_seed(3)
    make, shape = CASES[name]
    check_bit_exact(make(), shape, tmp_path)


def test_keyword_transformer_on_the_m4(tmp_path):
    """float and integer=True KWT on the emulated M4: float within the self-test tolerance of PyTorch, int8 equal
    to its numpy reference (the self-test)."""
    require_board()
    torch.manual_seed(0)
    net = KWT().eval()
    x = torch.randn(1, 10, 12)
    with torch.no_grad():
        expected = net(x).numpy().reshape(-1)
    res = save_compressed_model(net, "dense", input_data=x, directory=tmp_path / "kwt")
    result = cboard.run(tmp_path / "kwt", "m4")
    assert result.passed, result.stdout + result.stderr
    np.testing.assert_allclose(result.outputs, expected, rtol=0, atol=res.report["test"]["tolerance"])
    save_compressed_model(net, "dense", input_data=x, directory=tmp_path / "kwt8", integer=True,
                          calibration_data=torch.randn(16, 10, 12))  # fmt: skip
    result = cboard.run(tmp_path / "kwt8", "m4")
    assert result.passed, result.stdout + result.stderr


class HostileNames(nn.Module):
    """Attention and a layer scale under submodule / parameter names that are not Python identifiers: the
    rewritten graph must still compile as Python (codegen.trace.recompile) and reach C only escaped."""

    def __init__(self):
        super().__init__()
        self.add_module('a*/"\\n#x', nn.MultiheadAttention(8, 2, batch_first=True))
        self.add_module("g*/ */", nn.Linear(8, 3))
        self.register_parameter("s'\"", nn.Parameter(torch.rand(6, 1) + 0.5))

    def forward(self, x):
        y, _ = getattr(self, 'a*/"\\n#x')(x, x, x)
        return getattr(self, "g*/ */")(y * getattr(self, "s'\"").reshape(1, 6, 1))


def test_rewritten_graph_with_hostile_names(tmp_path):
    run(HostileNames(), (1, 6, 8), "dense", tmp_path)
