"""Parameter operands of elementwise ops and parameter-only computations (codegen/constfold.py,
codegen/ops/eltwise.py ``_lower_constant_operand``): parity through gcc against PyTorch, clear refusals,
and what folding must leave alone. torchvision's stochastic depth in eval mode is the identity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from test_ops import run

from codegen import save_compressed_model
from codegen.api import build_graph
from codegen.constfold import fold_constants
from codegen.errors import CodegenError


class LayerScale(nn.Module):
    """ConvNeXt's block tail (timm: x.mul(self.gamma.reshape(1, -1, 1, 1))) and friends, per ``form``."""

    def __init__(self, form: str, c: int = 5):
        super().__init__()
        self.form = form
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.gamma = nn.Parameter(torch.randn(c) * 0.5)
        self.register_buffer("shift", torch.randn(c, 1, 1))
        self.register_buffer("one", torch.tensor([0.75]))

    def forward(self, x):
        f = torch.relu(self.conv(x))  # not folded into the conv: the affine follows an activation
        g = self.gamma.reshape(1, -1, 1, 1)
        if self.form == "mul":
            return f.mul(g)
        if self.form == "mul_const_first":
            return g * f
        if self.form == "add_buffer":
            return f + self.shift
        if self.form == "sub":
            return (f - self.shift) * (self.shift - f)
        if self.form == "div_pow2":
            return f / (2.0 ** torch.arange(self.gamma.numel(), dtype=torch.float32)).reshape(-1, 1, 1)
        if self.form == "scalar_tensor":
            return f * self.one + self.one
        if self.form == "computed":  # parameters combined with each other before meeting the input
            return f * torch.sigmoid(self.gamma).view(1, -1, 1, 1) + self.shift * 2.0
        raise ValueError(self.form)


class MaskedConv(nn.Conv2d):
    """A conv whose effective weight is computed from parameters (weight * mask): folded to one constant."""

    def __init__(self):
        super().__init__(3, 4, 3)
        self.register_buffer("mask", (torch.rand(4, 3, 3, 3, generator=torch.Generator().manual_seed(1)) > 0.5)
                             .float())  # fmt: skip

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias)


class Linear3d(nn.Module):
    """Per-feature scale of a (N, D) activation: the channel dimension of a Linear's rows is dim 1 = N."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 4)
        self.s = nn.Parameter(torch.randn(4))

    def forward(self, x):
        return torch.tanh(self.fc(x.flatten(1))) * self.s


FORMS = ["mul", "mul_const_first", "add_buffer", "sub", "div_pow2", "scalar_tensor", "computed"]


@pytest.mark.parametrize("form", FORMS)
def test_parameter_operand_parity(form, tmp_path):
    run(LayerScale(form), (1, 3, 6, 5), "dense", tmp_path)


def test_computed_weight_and_per_feature_scale_parity(tmp_path):
    run(MaskedConv(), (1, 3, 6, 6), "dense", tmp_path / "a")
    run(Linear3d(), (1, 2, 3), "dense", tmp_path / "b")


def test_parameter_operand_is_one_affine_op():
    m = LayerScale("mul").eval()
    g, _ = build_graph(m, (1, 3, 6, 5))
    assert [op.kind for op in g.ops] == ["conv", "batchnorm"]
    assert g.ops[1].mode == "scale" and sorted(g.ops[1].params) == ["scale"]  # no stored shift of zeros
    assert np.array_equal(g.ops[1].params["scale"], m.gamma.detach().numpy())


@pytest.mark.parametrize("form, match", [
    ("spatial", "varies along dim 1"),
    ("div", "not exact as a multiplication"),
    ("const_over_x", "not exact as a multiplication"),
    ("expand", "broadcasts the tensor"),
])  # fmt: skip
def test_unsupported_parameter_operands_are_refused_clearly(form, match, tmp_path):
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.p = nn.Parameter(torch.rand(1, 1, 5, 6) + 0.5)
            self.c = nn.Parameter(torch.rand(4, 1, 1) + 0.5)
            self.e = nn.Parameter(torch.rand(2, 4, 5, 6))

        def forward(self, x):
            f = self.conv(x)
            return {"spatial": lambda: f * self.p, "div": lambda: f / self.c, "const_over_x": lambda: self.c / f,
                    "expand": lambda: f[:, :1] + self.e[:1]}[form]()  # fmt: skip

    with pytest.raises(CodegenError, match=match) as exc:
        save_compressed_model(Bad().eval(), "dense", torch.randn(1, 3, 5, 6), tmp_path / "m")
    assert "layer" in str(exc.value)
    assert not (tmp_path / "m").exists()


def test_fold_constants_leaves_random_and_input_dependent_nodes():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def forward(self, x):
            noise = torch.rand_like(self.w)  # random: recomputed on every call in PyTorch, never folded
            return x * self.w.exp() + noise + x.sum()

    gm = fx.symbolic_trace(M())
    assert fold_constants(gm) == 1  # self.w.exp() only
    targets = [getattr(n.target, "__name__", n.target) for n in gm.graph.nodes]
    assert "rand_like" in targets and "exp" not in targets and "sum" in targets


def test_torchvision_stochastic_depth_is_the_identity_in_eval(tmp_path):
    from zoo import import_torchvision

    ops = import_torchvision().ops

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.sd = ops.StochasticDepth(0.2, "row")

        def forward(self, x):
            return x + self.sd(self.conv(x))

    run(Block(), (1, 3, 5, 5), "dense", tmp_path)
    g, _ = build_graph(Block().eval(), (1, 3, 5, 5))
    assert [op.kind for op in g.ops] == ["conv", "eltwise"]
