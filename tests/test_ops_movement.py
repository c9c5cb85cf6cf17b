"""Parity through gcc (PyTorch as the oracle) of data movement (indexing, chunk/split, transpose/permute,
expand, stack), reductions (sum/mean/amax/amin/max(dim), adaptive pools with uneven windows), softmax over
any dim and LayerNorm/GroupNorm, on awkward shapes; and their int8 forms, bit-exact with the numpy
reference (codegen/ops/gather.py, reduce.py, softmax.py, norm.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import emit_and_verify
from test_integer import check_bit_exact

from codegen import save_compressed_model
from codegen.errors import UnsupportedConfigError
from codegen.ops import Gather


class Fn(nn.Module):
    def __init__(self, fn, *mods):
        super().__init__()
        self.fn = fn
        self.mods = nn.ModuleList(mods)

    def forward(self, x):
        return self.fn(x, *self.mods)


def _run(fn, shape, tmp_path, *mods, scale=1.0):
    torch.manual_seed(0)
    model = Fn(fn, *mods).eval()
    with torch.no_grad():
        for m in model.modules():
            for p in m.parameters(recurse=False):
                p.uniform_(-1.0, 1.0)
    inputs = torch.randn((3, *shape[1:]), generator=torch.Generator().manual_seed(1)) * scale
    return emit_and_verify(model, shape, "dense", tmp_path, inputs=inputs)


def _shuffle(x):  # torchvision's ShuffleNetV2 channel_shuffle
    b, c, h, w = x.size()
    return x.view(b, 3, c // 3, h, w).transpose(1, 2).contiguous().view(b, -1, h, w)


MOVEMENT = {
    "chomp": (lambda x: x[:, :, :-2].contiguous(), (1, 3, 9)),
    "channel_slice": (lambda x: torch.relu(x[:, 1:4]), (1, 5, 3, 3)),
    "last_step": (lambda x: x[:, -1], (1, 7, 5)),
    "neg_step_int_none_ellipsis": (lambda x: x[..., 1::2, None, -3], (1, 3, 5, 4)),
    "int_then_slice": (lambda x: x[:, 2, 1:4:2], (1, 3, 5, 4)),
    "full_slice_aliases": (lambda x: torch.relu(x[:, :, :]), (1, 3, 5)),
    "chunk_odd": (lambda x: (lambda c: torch.cat([c[2], c[0], c[1]], 2))(x.chunk(3, dim=2)), (1, 2, 7, 3)),
    "torch_chunk_channels": (lambda x: (lambda c: c[1] + c[0])(torch.chunk(x, 2, 1)), (1, 4, 3, 5)),
    "split_sizes_neg_dim": (lambda x: (lambda s: torch.cat([s[1], s[0]], -1))(x.split([2, 3], dim=-1)), (1, 3, 5)),
    "torch_split_int": (lambda x: torch.split(x, 2, 1)[2], (1, 5, 3)),
    "unbind": (lambda x: (lambda u: u[0] + u[2])(x.unbind(2)), (1, 3, 3, 4)),
    "channel_shuffle": (_shuffle, (1, 6, 4, 5)),
    "transpose": (lambda x: x.transpose(1, 2), (1, 3, 7)),
    "transpose_neg": (lambda x: torch.transpose(x, -1, -3), (1, 3, 4, 5)),
    "permute": (lambda x: x.permute(0, 3, 1, 2), (1, 3, 4, 5)),
    "permute_5d": (lambda x: torch.permute(x, (0, 4, 2, 1, 3)), (1, 2, 3, 4, 5)),
    "movedim": (lambda x: x.movedim(1, -1), (1, 3, 2, 5)),
    "narrow_select": (lambda x: x.narrow(2, 1, 3).select(1, -1), (1, 3, 5, 2)),
    "expand_as": (lambda x: x.mean((2, 3), keepdim=True).expand_as(x), (1, 3, 4, 5)),
    "expand_middle": (lambda x: x[:, :, :1].expand(-1, -1, 4, -1), (1, 2, 3, 5)),
    "stack_last": (lambda x: torch.stack([x, torch.relu(x)], dim=-1), (1, 3, 4)),
    "stack_dim1": (lambda x: torch.stack((torch.relu(x), x, x), 1).flatten(1, 2), (1, 3, 5)),
    "cat_dim2": (lambda x: torch.cat([x, torch.relu(x[:, :, :2])], 2), (1, 3, 5, 2)),
    "flatten_middle": (lambda x: torch.relu(x.flatten(2, 3)).transpose(1, 2), (1, 2, 3, 4)),
}


@pytest.mark.parametrize("name", list(MOVEMENT))
def test_movement(name, tmp_path):
    fn, shape = MOVEMENT[name]
    _run(fn, shape, tmp_path)


def test_copies_are_strided_gathers_and_identity_aliases(tmp_path):
    res = _run(MOVEMENT["channel_shuffle"][0], (1, 6, 4, 5), tmp_path)
    assert [ly["op"] for ly in res.report["layers"]] == ["gather"], res.report["layers"]
    res = _run(lambda x: torch.relu(x[:, :, :].contiguous()), (1, 3, 5), tmp_path / "id")
    assert [ly["op"] for ly in res.report["layers"]] == ["act"] or len(res.report["layers"]) == 1


REDUCE = {
    "amax_channel_keepdim": (lambda x: torch.amax(x, dim=1, keepdim=True), (1, 5, 3, 4)),
    "cbam_max_values": (lambda x: torch.cat([torch.max(x, dim=1, keepdim=True)[0], x.mean(1, keepdim=True)], 1),
                        (1, 5, 3, 4)),  # fmt: skip
    "max_dim_values": (lambda x: x.max(-1).values, (1, 3, 7)),
    "min_dim": (lambda x: torch.min(x, 2)[0], (1, 3, 5, 2)),
    "amin_two_dims": (lambda x: x.amin((1, 2)), (1, 3, 5, 2)),
    "sum_middle": (lambda x: x.sum(dim=2), (1, 3, 5, 7)),
    "sum_keepdim_neg": (lambda x: torch.sum(x, -2, keepdim=True), (1, 3, 5)),
    "mean_channel": (lambda x: torch.mean(x, 1), (1, 7, 3, 3)),
    "mean_features": (lambda x: x.mean(dim=1), (1, 9)),
    "adaptive_max_even": (lambda x, m: m(x), (1, 3, 8, 6), nn.AdaptiveMaxPool2d((2, 3))),
    "adaptive_max_uneven": (lambda x, m: m(x), (1, 3, 7, 5), nn.AdaptiveMaxPool2d((3, 2))),
    "adaptive_max1d_uneven": (lambda x: F.adaptive_max_pool1d(x, 4), (1, 2, 11)),
    "adaptive_avg_uneven": (lambda x, m: m(x), (1, 2, 7, 5), nn.AdaptiveAvgPool2d((3, 4))),
    "adaptive_avg1d_uneven": (lambda x: F.adaptive_avg_pool1d(x, 3), (1, 2, 10)),
}


@pytest.mark.parametrize("name", list(REDUCE))
def test_reduce(name, tmp_path):
    fn, shape, *mods = REDUCE[name]
    _run(fn, shape, tmp_path, *mods)


NORM = {
    "softmax_channels": (lambda x, m: m(x), (1, 5, 3, 4), nn.Softmax(dim=1)),
    "log_softmax_middle": (lambda x: F.log_softmax(x, dim=-2), (1, 3, 6, 5)),
    "softmax_large": (lambda x: torch.softmax(x, 2), (1, 2, 7, 3)),
    "layernorm_last": (lambda x, m: m(x), (1, 7, 5), nn.LayerNorm(5)),
    "layernorm_two_dims": (lambda x, m: m(x), (1, 2, 3, 5), nn.LayerNorm((3, 5))),
    "layernorm_no_affine": (lambda x, m: m(x), (1, 4, 6), nn.LayerNorm(6, elementwise_affine=False, eps=1e-3)),
    "F.layer_norm": (lambda x: F.layer_norm(x, (2, 5), eps=1e-3), (1, 3, 2, 5)),
    "groupnorm": (lambda x, m: m(x), (1, 6, 3, 5), nn.GroupNorm(3, 6)),
    "groupnorm_1d_one_group": (lambda x, m: m(x), (1, 4, 7), nn.GroupNorm(1, 4)),
}


@pytest.mark.parametrize("name", list(NORM))
def test_norm(name, tmp_path):
    fn, shape, *mods = NORM[name]
    _run(fn, shape, tmp_path, *mods, scale=3.0)


REFUSED = {
    "batch_index": (lambda x: x[0], (1, 3, 4), "batch"),
    "transpose_batch": (lambda x: x.transpose(0, 1), (1, 3, 4), "batch"),
    "chunk_batch": (lambda x: x.chunk(2, 0)[0], (1, 3, 4), "batch"),
    "max_indices": (lambda x: x.max(1)[1], (1, 3, 4), "indices"),
    "non_adjacent": (lambda x: x.sum((1, 3)), (1, 3, 4, 5), "not adjacent"),
    "expand_batch": (lambda x: x.expand(2, 3, 4), (1, 3, 4), "batch"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_clearly(name, tmp_path):
    fn, shape, words = REFUSED[name]
    with pytest.raises(UnsupportedConfigError, match=words):
        save_compressed_model(Fn(fn).eval(), "dense", torch.randn(shape), tmp_path / "m")


def test_gather_reference_is_the_kernel_map():
    op = Gather(name="g", source="g", torch_op="t", inputs=["a"], output="b", offset=1, counts=(1, 1, 2, 3),
                strides=(0, 0, 1, 4))  # fmt: skip
    assert op.source_index().tolist() == [1, 5, 9, 2, 6, 10]


# ---- int8: bit-exact with the numpy reference ------------------------------------------------------
INT8 = {
    "chomp_conv": (lambda x, c: c(x)[:, :, :-2], (1, 2, 9), nn.Conv1d(2, 3, 3)),
    "shuffle_chunk": (lambda x, c: (lambda p: torch.cat([p[1], _shuffle(c(p[0]))], 1))(x.chunk(2, 1)), (1, 6, 4, 5),
                      nn.Conv2d(3, 3, 1)),  # fmt: skip
    "permute_expand_stack": (lambda x: torch.stack([x.permute(0, 2, 1), x.amax(1, keepdim=True).expand(-1, 3, -1).transpose(1, 2)], 1),
                             (1, 3, 5)),  # fmt: skip
    "cbam_reductions": (lambda x: torch.cat([torch.max(x, 1, keepdim=True)[0], torch.mean(x, 1, keepdim=True),
                                             x.amin(1, keepdim=True)], 1), (1, 5, 3, 4)),  # fmt: skip
    "adaptive_uneven": (lambda x, a, b: torch.cat([a(x), b(x)], 1), (1, 2, 7, 5), nn.AdaptiveMaxPool2d((3, 2)),
                        nn.AdaptiveAvgPool2d((3, 2))),  # fmt: skip
    "softmax_last": (lambda x, fc: torch.softmax(fc(x), -1), (1, 6), nn.Linear(6, 10)),
    "softmax_channels": (lambda x, c: F.softmax(c(x), dim=1), (1, 2, 3, 4), nn.Conv2d(2, 5, 1)),
}


@pytest.mark.parametrize("name", list(INT8))
def test_int8_bit_exact(name, tmp_path):
    fn, shape, *mods = INT8[name]
    torch.manual_seed(0)
    _, qm, cal = check_bit_exact(Fn(fn, *mods).eval(), shape, tmp_path)
    kinds = {qo.kind for qo in qm.qops}
    assert kinds & {"gather", "reduce_max", "reduce_mean", "adaptive_maxpool", "softmax", "maxpool"}, kinds


def test_int8_softmax_close_to_torch(tmp_path):
    torch.manual_seed(0)
    model = Fn(lambda x, fc: torch.softmax(fc(x), -1), nn.Linear(6, 10)).eval()
    res, qm, cal = check_bit_exact(model, (1, 6), tmp_path)
    with torch.no_grad():
        ref = model(cal).numpy()
    got = qm.run_float(cal.numpy())
    assert abs(got - ref).max() < 0.02, abs(got - ref).max()


# log_softmax, LayerNorm and sum have int8 forms now (tests/test_integer.py OPS); GroupNorm has none
INT8_REFUSED = {
    "groupnorm": (lambda x, m: m(x), (1, 4, 6), "groupnorm", nn.GroupNorm(2, 4)),
}


@pytest.mark.parametrize("name", list(INT8_REFUSED))
def test_int8_refused_naming_the_layer(name, tmp_path):
    fn, shape, words, *mods = INT8_REFUSED[name]
    with pytest.raises(UnsupportedConfigError, match=words):
        save_compressed_model(Fn(fn, *mods).eval(), "dense", torch.randn(shape), tmp_path / "m", integer=True,
                              calibration_data=torch.randn((8, *shape[1:])))  # fmt: skip


def _board_model():
    """Every new int8 kernel in one model: chunk + channel shuffle (gather), channel max/mean (reduce),
    uneven adaptive max/avg pools, softmax over channels."""
    return Fn(lambda x, c, a, b: F.softmax(torch.cat([
        a(torch.cat([torch.amax(x, 1, keepdim=True), torch.mean(x, 1, keepdim=True)], 1)),
        b(_shuffle(torch.cat([c(x.chunk(2, 1)[0]), x[:, 3:, :, :]], 1)))], 1), dim=1),
        nn.Conv2d(3, 3, 1), nn.AdaptiveMaxPool2d((3, 2)), nn.AdaptiveAvgPool2d((3, 2))).eval()  # fmt: skip


@pytest.mark.board
@pytest.mark.parametrize("integer", [False, True], ids=["float", "int8"])
def test_on_board(integer, tmp_path):
    from test_integer import _require_board, emit_integer

    from codegen import board

    _require_board()
    torch.manual_seed(0)
    net = _board_model()
    if integer:
        res, _ = emit_integer(net, (1, 6, 7, 5), tmp_path)
    else:
        res = save_compressed_model(net, "dense", torch.randn(1, 6, 7, 5), tmp_path / "m")
    run = board.run(res.directory, "m4")
    assert run.exit_code == 0 and run.passed, run.stdout + run.stderr
    if integer:
        assert run.max_abs_error == 0.0  # bit-exact with the numpy reference on the M4
