"""Bad input gets one clear error that names the layer and says what to do."""

import inspect

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from models import DataDependent

from codegen import (
    CodegenError,
    UnsupportedConfigError,
    UnsupportedOpError,
    UntraceableModelError,
    save_compressed_model,
    weight_bytes,
)


class TwoUnsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(1, 4, 3), nn.SELU())
        self.lstm_like = nn.GRUCell(4, 4)  # never called: only traced nodes count
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        x = self.block(x)
        x = torch.erf(x)
        return self.fc(x.flatten(1))


def test_unsupported_ops_are_listed_in_one_error(tmp_path):
    with pytest.raises(UnsupportedOpError) as ei:
        save_compressed_model(TwoUnsupported(), "csr", torch.randn(1, 1, 8, 8), tmp_path / "m")
    err = ei.value
    names = [n[0] for n in err.nodes]
    assert len(err.nodes) == 2, err
    assert "block_1" in names and "erf" in names
    msg = str(err)
    assert "SELU" in msg and "'block.1'" in msg  # the module path of the unsupported module
    assert "torch.erf" in msg
    assert "nn.Conv2d" in msg and "Supported operations" in msg
    assert not (tmp_path / "m").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary directory left behind either


def test_untraceable_model_explains_how_to_fix(tmp_path):
    with pytest.raises(UntraceableModelError) as ei:
        save_compressed_model(DataDependent(), "dense", torch.randn(1, 4), tmp_path / "m")
    msg = str(ei.value)
    assert "control flow" in msg and "leaf_modules" in msg and "concrete_args" in msg


def test_batch_size_other_than_one(tmp_path):
    with pytest.raises(CodegenError, match="batch dimension of 1"):
        save_compressed_model(nn.Linear(4, 2), "csr", torch.randn(3, 4), tmp_path / "m")


def test_non_finite_weights_name_the_layer(tmp_path):
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        net[2].weight[0, 1] = float("nan")
    with pytest.raises(CodegenError, match=r"layer '2': weight has 1 non-finite"):
        save_compressed_model(net, "csr", torch.randn(1, 4), tmp_path / "m")


@pytest.mark.parametrize("prefix", ["1model", "my-model", "", "sc_model", "a b", "net__x", "net_", "SC_net"])
def test_bad_prefix(tmp_path, prefix):
    with pytest.raises(CodegenError, match="C identifier"):
        save_compressed_model(nn.Linear(4, 2), "csr", torch.randn(1, 4), tmp_path / "m", prefix=prefix)


def test_bad_representation():
    with pytest.raises(ValueError, match="unknown representation 'sparse'"):
        weight_bytes(nn.Linear(4, 2), (1, 4), "sparse")


def test_unsupported_configuration_names_layer_and_fix(tmp_path):
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(UnsupportedConfigError, match=r"layer '0': padding_mode='reflect'.*padding_mode='zeros'"):
        save_compressed_model(net, "dense", torch.randn(1, 1, 5, 5), tmp_path / "m")


class Broadcast(nn.Module):
    def forward(self, x):
        return x + x[:, :, :3]  # (3, 4, 4) + (3, 4, 3): the shapes do not broadcast in PyTorch either


def test_broadcasting_add_of_incompatible_shapes_is_an_error(tmp_path):
    with pytest.raises(CodegenError):
        save_compressed_model(Broadcast(), "dense", torch.randn(1, 3, 4, 4), tmp_path / "m")


class ReflectPad(nn.Module):
    def forward(self, x):
        return F.pad(x, (1, 1), mode="reflect")


def test_pad_modes(tmp_path):
    with pytest.raises(UnsupportedConfigError, match="mode='constant'"):
        save_compressed_model(ReflectPad(), "dense", torch.randn(1, 2, 5), tmp_path / "m")


class TwoOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x), x


def test_multiple_outputs(tmp_path):
    with pytest.raises(CodegenError, match="return one tensor"):
        save_compressed_model(TwoOutputs(), "dense", torch.randn(1, 4), tmp_path / "m")


def test_wrong_input_shape(tmp_path):
    with pytest.raises(CodegenError, match="input shape"):
        save_compressed_model(nn.Linear(4, 2), "dense", torch.randn(1, 5), tmp_path / "m")


def test_needs_input_or_shape(tmp_path):
    with pytest.raises(CodegenError, match="input_shape"):
        save_compressed_model(nn.Linear(4, 2), "dense", None, tmp_path / "m")


class AliasedInplace(nn.Module):
    """torch.fx records `b += x` as an out-of-place add, so `a` (the same tensor) loses the update."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        a = self.fc(x)
        b = a
        b += x
        return a * 3


def test_traced_graph_that_disagrees_with_forward_is_refused():
    """torch.fx's graph is refused (the emitters then fall back to torch.export: tests/test_frontend.py)."""
    from codegen.trace import prepare_model, trace

    with pytest.raises(UntraceableModelError, match="in-place update"):
        trace(prepare_model(AliasedInplace()), torch.randn(1, 4))


class GroupNormAct(nn.InstanceNorm2d):
    """An InstanceNorm subclass whose forward calls the functional form (as timm's norm+act layers do);
    F.instance_norm has no lowering (F.batch_norm, F.group_norm, F.conv2d and F.linear with parameter
    operands do)."""

    def __init__(self, groups: int, channels: int):
        super().__init__(channels, affine=True)

    def forward(self, x):
        x = F.instance_norm(x, None, None, self.weight, self.bias, eps=self.eps)
        return torch.relu(x)


def test_functional_subclass_is_named_once_with_counts(tmp_path):
    """30 norm+act layers give one error of a few lines (not 90), naming the class and the fix."""
    layers = []
    for _ in range(30):
        layers += [nn.Conv2d(4, 4, 3, padding=1), GroupNormAct(2, 4)]
    with pytest.raises(UnsupportedOpError) as ei:
        save_compressed_model(nn.Sequential(*layers).eval(), "dense", torch.randn(1, 4, 6, 6), tmp_path / "m")
    err = ei.value
    assert len(err.nodes) == 90  # 30 F.group_norm + 2 x 30 parameter operands
    msg = str(err).split("Supported operations")[0]
    assert len(msg.strip().splitlines()) == 4, msg
    assert "90 node(s) in the model cannot be emitted as C, for 2 reason(s)" in msg
    assert "F.instance_norm: 30 node(s), e.g. node 'instance_norm' in module '1'" in msg
    assert "60 parameter/buffer tensor(s) used as operands of F.instance_norm" in msg
    qualname = f"{GroupNormAct.__module__}.{GroupNormAct.__qualname__}"
    assert f"{qualname} was traced into; its forward() calls F.instance_norm" in msg
    assert "leaf_modules=(GroupNormAct,)" in msg
    assert not (tmp_path / "m").exists()


def test_unsupported_op_groups_are_capped():
    nodes = [(f"n{i}", f"torch.op{i}", "") for i in range(UnsupportedOpError.MAX_GROUPS + 5)]
    msg = str(UnsupportedOpError(nodes, ["nn.Linear"]))
    assert "... and 5 more reason(s)" in msg
    assert "torch.op0: 1 node(s), e.g. node 'n0'" in msg


def test_untraceable_model_names_the_offending_line(tmp_path):
    with pytest.raises(UntraceableModelError) as ei:
        save_compressed_model(DataDependent(), "dense", torch.randn(1, 4), tmp_path / "m")
    src, start = inspect.getsourcelines(DataDependent.forward)
    line = start + next(i for i, s in enumerate(src) if "if x.sum() > 0" in s)
    assert f"at {inspect.getsourcefile(DataDependent)}:{line}, in forward (if x.sum() > 0:)" in str(ei.value)


def test_integer_token_input_is_explained(tmp_path):
    """nn.Embedding needs integer ids; the C takes float32 inputs: the error says so instead of blaming the shape."""

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(50, 8)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(self.emb(x).mean(1))

    with pytest.raises(CodegenError, match="integer inputs .*nn.Embedding") as exc:
        save_compressed_model(Tokens().eval(), "dense", torch.randint(0, 50, (1, 9)), tmp_path / "m")
    assert "layer 'emb'" in str(exc.value) and not (tmp_path / "m").exists()
