"""Tiled (patch-based) execution and the RAM budget (codegen/tiling.py, issue 17).

Geometry first, without C: receptive fields against brute force, and the tile program run with
PyTorch on tile-sized planes (tile-local shapes and padding) against the whole model. Then parity
through gcc on awkward shapes (odd sizes, stride 2, padding at the tile borders, dilation, depthwise +
pointwise chains, a residual add), the arena the planner's figure, the RAM budget hit and refused, and
one run on the emulated M4.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import assert_parity, read_report

from codegen import tiling
from codegen.api import build_graph, save_compressed_model, verify
from codegen.errors import CodegenError
from codegen.ops.activation import Act
from codegen.ops.batchnorm import ChannelAffine
from codegen.ops.conv import Conv2d
from codegen.ops.eltwise import Binary
from codegen.ops.pool import Pool2d
from codegen.tiling import Rect, Stage, input_rect

# ---- geometry (no C) --------------------------------------------------------------------------------


@pytest.mark.parametrize("k,s,p,d,n", [(3, 1, 1, 1, 7), (3, 2, 1, 1, 9), (5, 2, 2, 1, 11), (3, 1, 2, 2, 8),
                                       (2, 2, 0, 1, 7), (1, 2, 0, 1, 5), (3, 3, 4, 1, 6), (7, 1, 3, 3, 13)])
def test_input_rect_is_the_brute_force_receptive_field(k, s, p, d, n):
    n_out = (n + 2 * p - d * (k - 1) - 1) // s + 1
    for o0, o1 in itertools.combinations(range(n_out + 1), 2):
        rows = {o * s - p + j * d for o in range(o0, o1) for j in range(k)} & set(range(n))
        r = input_rect(Rect(o0, o1, 0, 1), kernel=(k, 1), stride=(s, 1), padding=(p, 0), dilation=(d, 1), hw=(n, 1))
        if rows:
            assert (r.y0, r.y1) == (min(rows), max(rows) + 1), (o0, o1)
        else:
            assert r.h == 0


@pytest.mark.parametrize("shape,grid", [((3, 7, 5), (2, 2)), ((1, 1, 9), (1, 4)), ((2, 13, 11), (5, 3))])
def test_tiles_cover_the_output_once(shape, grid):
    seen = np.zeros(shape[1:], int)
    for r in tiling.tile_rects(shape, grid):
        seen[r.y0 : r.y1, r.x0 : r.x1] += 1
    assert (seen == 1).all()


def _awkward() -> nn.Module:
    """Odd sizes, stride 2 with padding, dilated depthwise, pointwise, max pool with padding, residual add."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c0 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.dw = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
            self.pw = nn.Conv2d(8, 8, 1)
            self.pool = nn.MaxPool2d(3, 2, padding=1)
            self.dw2 = nn.Conv2d(8, 8, (3, 5), stride=(1, 2), padding=(1, 2), groups=8)
            self.fc = nn.Linear(8 * 5 * 3, 5)

        def forward(self, x):
            y = F.relu6(self.bn(self.c0(x)))
            y = y + self.pw(F.relu(self.dw(y)))
            y = torch.sigmoid(self.dw2(self.pool(y)))
            return self.fc(y.flatten(1))

    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    return net


AWKWARD_SHAPE = (1, 3, 19, 21)


def _run_program_in_torch(g, plan: tiling.StagePlan, x: np.ndarray) -> np.ndarray:
    """Runs the tile programs step by step with PyTorch on tile-sized planes: each op with its
    tile-local shape and padding, the kernels' rule for the bottom/right (zero beyond the plane)."""
    c, h, w = g.values[plan.output].shape
    bufs = {plan.input: x.reshape(g.values[plan.input].shape), plan.output: np.full((c, h, w), np.nan, np.float32)}
    for tile in plan.tiles:
        for s in tile.steps:
            if s.kind == "copy":
                ch, sh, sw, sy, sx, dh, dw, dy, dx, hh, ww = s.copy
                src = bufs[s.reads[0]].reshape(ch, sh, sw)
                dst = bufs[s.buffer] if s.buffer == plan.output else np.zeros((ch, dh, dw), np.float32)
                dst = dst.reshape(ch, dh, dw)
                dst[:, dy : dy + hh, dx : dx + ww] = src[:, sy : sy + hh, sx : sx + ww]
                bufs[s.buffer] = dst
                continue
            op = s.op
            ins = [torch.from_numpy(np.ascontiguousarray(bufs[i]).reshape(-1)) for i in s.reads]
            if isinstance(op, (Conv2d, Pool2d)):
                t = ins[0].reshape(op.in_shape)[None]
                (pt, pl), (kh, kw), (st, sl), (dh_, dw_) = op.padding, op.kernel, op.stride, op.dilation
                need_h = (op.out_shape[1] - 1) * st + (kh - 1) * dh_ + 1
                need_w = (op.out_shape[2] - 1) * sl + (kw - 1) * dw_ + 1
                fill = -np.inf if isinstance(op, Pool2d) else 0.0
                t = F.pad(t, (pl, max(0, need_w - pl - op.in_shape[2]), pt, max(0, need_h - pt - op.in_shape[1])),
                          value=fill)  # fmt: skip
                if isinstance(op, Pool2d):
                    y = F.max_pool2d(t, op.kernel, op.stride, 0, op.dilation)
                else:
                    wt = torch.from_numpy(op.params["weight"]).reshape(op.out_shape[0], -1, kh, kw)
                    b = torch.from_numpy(op.params["bias"]) if "bias" in op.params else None
                    y = F.conv2d(t, wt, b, op.stride, 0, op.dilation, op.groups)
                y = y[0, :, : op.out_shape[1], : op.out_shape[2]]
            elif isinstance(op, Binary):
                y = ins[0] + ins[1] if op.mode == "add" else ins[0] * ins[1]
            elif isinstance(op, ChannelAffine):
                t = ins[0].reshape(op.channels, -1)
                y = t * torch.from_numpy(op.params["scale"])[:, None] + torch.from_numpy(op.params["shift"])[:, None]
            else:
                assert isinstance(op, Act)
                y = ins[0]
            act = getattr(op, "act", None)
            kind = act.kind if act else "none"
            y = {"none": lambda v: v, "relu": F.relu, "relu6": F.relu6, "sigmoid": torch.sigmoid}[kind](y)
            bufs[s.buffer] = y.numpy().astype(np.float32).reshape(-1)
    return bufs[plan.output]


@pytest.mark.parametrize("grid", [(1, 1), (2, 2), (3, 2), (5, 3)])
def test_tile_program_in_torch_equals_the_model(grid):
    """The geometry alone (regions, tile-local padding, copies) reproduces layer-by-layer results."""
    net = _awkward()
    x = torch.randn(AWKWARD_SHAPE)
    g, _ = build_graph(net, x, "dense")
    last = tiling.candidate_stages(g)[-1]
    plan = tiling.plan_stage(g, Stage(0, last, grid))
    got = _run_program_in_torch(g, plan, x.numpy()[0])
    assert g.ops[last].source == "dw2"  # the stage ends before the flatten
    with torch.no_grad():
        y = F.relu6(net.bn(net.c0(x)))
        y = y + net.pw(F.relu(net.dw(y)))
        ref = torch.sigmoid(net.dw2(net.pool(y)))[0].numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_extra_macs_grow_with_the_grid_and_are_zero_for_one_tile():
    g, _ = build_graph(_awkward(), AWKWARD_SHAPE, "dense")
    last = tiling.candidate_stages(g)[-1]
    extra = [tiling.plan_stage(g, Stage(0, last, (n, n))) for n in (1, 2, 3)]
    with pytest.raises(CodegenError, match=r"a 4x4 tile grid does not fit the 5x3 output of dw2"):
        tiling.plan_stage(g, Stage(0, last, (4, 4)))
    assert extra[0].macs == extra[0].base_macs
    assert extra[0].macs < extra[1].macs < extra[2].macs
    ws = [p.workspace_bytes for p in extra]
    assert ws[0] > ws[1] > ws[2]


def test_stage_refuses_what_it_cannot_tile():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AvgPool2d(3, 1, padding=1), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    g, _ = build_graph(net, (1, 1, 8, 8), "dense")
    assert tiling.candidate_stages(g) == [0]
    with pytest.raises(CodegenError, match=r"average pooling counting the padding is not tiled"):
        tiling.stage_io(g, Stage(0, 1, (2, 2)))
    with pytest.raises(CodegenError, match=r"images"):
        tiling.stage_io(g, Stage(0, 3, (2, 2)))


# ---- through gcc ------------------------------------------------------------------------------------


def _emit_verify(net, shape, tmp_path, representation="dense", **kw):
    gen = torch.Generator().manual_seed(1)
    xs = torch.randn((3, *shape[1:]), generator=gen)
    d = tmp_path / "m"
    res = save_compressed_model(net, representation, xs[:1], d, overwrite=True, **kw)
    v = verify(net, d, xs)
    assert_parity(v.outputs, v.reference, str(d))
    return res, d


def _sparsify(net: nn.Module, density: float) -> nn.Module:
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                w = m.weight
                k = max(1, int(w.numel() * density))
                thr = w.abs().flatten().kthvalue(w.numel() - k + 1).values
                w.mul_((w.abs() >= thr).to(w.dtype))
    return net


@pytest.mark.parametrize("representation,grid", [("dense", (2, 3)), ("dense", (5, 3)), ("csr", (3, 2))])
def test_tiled_parity_awkward(tmp_path, representation, grid):
    net = _awkward() if representation == "dense" else _sparsify(_awkward(), 0.4)
    g, mem = build_graph(net, AWKWARD_SHAPE, representation)
    last = tiling.candidate_stages(g)[-1]
    res, d = _emit_verify(net, AWKWARD_SHAPE, tmp_path, representation, tiling_stages=[Stage(0, last, grid)])
    rep = read_report(d)
    t = rep["tiling"]
    assert t["stages"][0]["grid"] == list(grid) and t["stages"][0]["last"] == last
    assert t["peak_ram_bytes"] == rep["memory"]["arena_bytes"] == res.arena_bytes
    assert t["layerwise_arena_bytes"] == mem.arena_bytes
    model_h = (d / "model.h").read_text()
    assert re.search(rf"MODEL_ARENA_BYTES\s+{res.arena_bytes}\b", model_h)
    assert "sc_tile_copy(" in (d / "model.c").read_text()
    assert "runtime/sc_tile.h" in rep["files"]


def test_two_tiled_stages_parity(tmp_path):
    """A stage on the model input, then one whose input (used twice: depthwise and the residual add)
    lives in the arena."""
    res, d = _emit_verify(_awkward(), AWKWARD_SHAPE, tmp_path, tiling_stages=[Stage(0, 0, (3, 3)), Stage(1, 5, (2, 2))])
    assert [s["grid"] for s in res.report["tiling"]["stages"]] == [[3, 3], [2, 2]]


def test_tiled_conv1d_and_pool_without_padding(tmp_path):
    net = nn.Sequential(nn.Conv1d(2, 6, 5, stride=2, padding=3), nn.ReLU(), nn.MaxPool1d(2),
                        nn.Conv1d(6, 6, 3, padding=1, groups=6), nn.Flatten(), nn.Linear(6 * 13, 3)).eval()
    g, _ = build_graph(net, (1, 2, 51), "dense")
    last = tiling.candidate_stages(g)[-1]
    _emit_verify(net, (1, 2, 51), tmp_path, tiling_stages=[Stage(0, last, (1, 4))])


def test_ram_budget_hits(tmp_path):
    net = _awkward()
    g, mem = build_graph(net, AWKWARD_SHAPE, "dense")
    every = tiling.schedules(g)
    low = min(s.memory.arena_bytes for s in every)
    assert low < mem.arena_bytes
    budget = (low + mem.arena_bytes) // 2
    res, d = _emit_verify(net, AWKWARD_SHAPE, tmp_path, ram_budget=budget)
    t = read_report(d)["tiling"]
    assert res.arena_bytes <= budget and t["peak_ram_bytes"] == res.arena_bytes < mem.arena_bytes
    assert t["stages"] and t["extra_macs"] > 0
    # the fewest extra MACs among the schedules that fit (one stage, or two after the search's seeds)
    search = tiling.Search(g)
    every += [search.plan(c) for c in search.two_stage(search.seeds(search.one_stage()))]
    assert t["extra_macs"] == min(s.extra_macs for s in every if s.memory.arena_bytes <= budget)


def test_second_stage_when_one_is_not_enough():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.Flatten(),
                        nn.Linear(8 * 10 * 10, 3)).eval()
    g, _ = build_graph(net, (1, 3, 20, 20), "dense")
    one = tiling.schedules(g)
    assert len(one) == len(tiling.grids(10, 10)) * 2 and (3, 4) in tiling.grids(10, 10)
    seeds = tiling.pareto_seeds(one)
    assert seeds[0].extra_macs == min(s.extra_macs for s in one)
    assert all(a.extra_macs < b.extra_macs and a.memory.arena_bytes > b.memory.arena_bytes
               for a, b in zip(seeds, seeds[1:]))
    two = tiling.second_stages(g, one[:1])
    assert two and all([p.stage.first for p in s.stages] == [0, 1] for s in two)


def test_ram_budget_not_needed_keeps_layer_by_layer(tmp_path):
    net = _awkward()
    _, mem = build_graph(net, AWKWARD_SHAPE, "dense")
    plain = save_compressed_model(net, "dense", input_shape=AWKWARD_SHAPE, directory=tmp_path / "a")
    res = save_compressed_model(net, "dense", input_shape=AWKWARD_SHAPE, directory=tmp_path / "b",
                                ram_budget=mem.arena_bytes)
    assert res.report["tiling"]["stages"] == []
    assert (tmp_path / "a" / "model.c").read_text() == (tmp_path / "b" / "model.c").read_text()
    assert plain.arena_bytes == res.arena_bytes


def test_ram_budget_refuses_clearly(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 9 * 9, 64),
                        nn.ReLU(), nn.Linear(64, 4)).eval()
    with pytest.raises(CodegenError, match=r"no schedule fits ram_budget=100 bytes: the smallest arena reachable "
                                           r"is \d+ bytes \(layer 3 needs 2848 bytes at once: its arena inputs, output"):
        save_compressed_model(net, "dense", input_shape=(1, 3, 9, 9), directory=tmp_path / "m", ram_budget=100)
    assert not (tmp_path / "m").exists()
    with pytest.raises(CodegenError, match=r"no schedule fits ram_budget=100 bytes: the smallest arena reachable "
                                           r"is \d+ bytes \(layer 0 needs 868 bytes at once: its arena inputs, output and kernel scratch"):
        save_compressed_model(net, "int8", input_shape=(1, 3, 9, 9), directory=tmp_path / "m", ram_budget=100,
                              integer=True, calibration_data=torch.randn(4, 3, 9, 9))
    assert not (tmp_path / "m").exists()


# ---- the integer path -------------------------------------------------------------------------------

I8_FLAGS = [("-DSC_INT8_DSP=1",), ("-DSC_INT8_DSP=0",), ("-DSC_INT8_DSP=1", "-DSC_I8_FAST_REQ=0", "-DSC_I8_MAXPOOL_FAST")]


def _lenet_like() -> nn.Module:
    """C_in == 1 5-wide conv (the c1k5 kernel, in_zp folded into the bias), average pooling, a 3x3 conv."""
    torch.manual_seed(4)
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(6, 8, 3, padding=1),
                         nn.ReLU6(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 3, 4)).eval()  # fmt: skip


def _emit_int8(net, shape, d, cal, **kw):
    return save_compressed_model(net, "int8", cal[:1], d, overwrite=True, integer=True, calibration_data=cal, **kw)


def _int8_outputs(res, cal, shape, tmp_path, flag_sets) -> tuple[np.ndarray, list[np.ndarray]]:
    from test_integer import run_int8_c

    qm = res.integer_model
    x = torch.cat([cal[:4], 3 * torch.randn((8, *shape[1:]), generator=torch.Generator().manual_seed(9))]).numpy()
    xq = qm.quantize_input(x).reshape(x.shape[0], -1)
    n_out = int(np.prod(qm.graph.output_value.shape))
    ref = qm.run(xq).reshape(x.shape[0], n_out)
    tmp_path.mkdir(exist_ok=True)
    outs = [run_int8_c(res.directory, xq, n_out, tmp_path / f"b{i}", flags=f) for i, f in enumerate(flag_sets)]
    return ref, outs


@pytest.mark.parametrize("model,shape,representation,grid", [
    ("awkward", AWKWARD_SHAPE, "int8", (2, 3)), ("awkward", AWKWARD_SHAPE, "int8", (5, 3)),
    ("awkward_sparse", AWKWARD_SHAPE, "int8", (3, 2)), ("lenet_like", (1, 1, 17, 13), "dense", (3, 2)),
])  # fmt: skip
def test_int8_tiled_bit_exact_with_untiled(tmp_path, model, shape, representation, grid):
    """The int8 kernels on tiles: the tiled C gives the untiled C's int8 outputs bit for bit (and the integer
    reference's) with the DSP pair kernels, the plain kernels and the -Os forms; the self-test passes (bit-exact
    on the sample, within the int8 bound of PyTorch's float output); the arena is the tiled plan's."""
    net = {"awkward": _awkward, "awkward_sparse": lambda: _sparsify(_awkward(), 0.4), "lenet_like": _lenet_like}[model]()
    cal = torch.randn((16, *shape[1:]), generator=torch.Generator().manual_seed(2))
    plain = _emit_int8(net, shape, tmp_path / "plain", cal)
    from codegen.integer_emit import int8_graph

    gq = int8_graph(plain.integer_model.graph)
    last = tiling.candidate_stages(gq)[-1]
    tiled = _emit_int8(net, shape, tmp_path / "tiled", cal, tiling_stages=[Stage(0, last, grid)])
    rep = read_report(tiled.directory)
    assert rep["tiling"]["stages"][0]["grid"] == list(grid)
    assert rep["tiling"]["layerwise_arena_bytes"] == plain.arena_bytes
    assert tiled.arena_bytes == rep["tiling"]["peak_ram_bytes"] == rep["memory"]["arena_bytes"] < plain.arena_bytes
    assert "sc_tile_copy_i8(" in (tiled.directory / "model.c").read_text()
    assert "runtime/sc_tile.h" in rep["files"]
    proc = subprocess.run(["make", "-C", str(tiled.directory), "check"], capture_output=True, text=True)
    assert proc.returncode == 0 and "SC_PASS" in proc.stdout, proc.stdout + proc.stderr
    ref, outs_plain = _int8_outputs(plain, cal, shape, tmp_path / "p", I8_FLAGS[:1])
    _, outs = _int8_outputs(tiled, cal, shape, tmp_path / "t", I8_FLAGS)
    np.testing.assert_array_equal(outs_plain[0], ref)
    for flags, out in zip(I8_FLAGS, outs):
        bad = np.argwhere(out != ref)
        assert bad.size == 0, f"{flags}: {len(bad)} int8 outputs differ from the untiled C, first at {bad[0]}"


def test_int8_ram_budget_hits(tmp_path):
    """ram_budget with integer=True: the search runs over the int8 arena (1-byte values) and the schedule
    of fewest extra MACs that fits is emitted."""
    net = _awkward()
    cal = torch.randn((16, *AWKWARD_SHAPE[1:]), generator=torch.Generator().manual_seed(2))
    plain = _emit_int8(net, AWKWARD_SHAPE, tmp_path / "plain", cal)
    from codegen.integer_emit import int8_graph

    gq = int8_graph(plain.integer_model.graph)
    every = tiling.schedules(gq)
    low = min(s.memory.arena_bytes for s in every)
    assert low < plain.arena_bytes
    budget = (low + plain.arena_bytes) // 2
    res = _emit_int8(net, AWKWARD_SHAPE, tmp_path / "m", cal, ram_budget=budget)
    t = res.report["tiling"]
    assert res.arena_bytes <= budget and t["peak_ram_bytes"] == res.arena_bytes and t["stages"]
    search = tiling.Search(gq)
    every += [search.plan(c) for c in search.two_stage(search.seeds(search.one_stage()))]
    assert t["extra_macs"] == min(s.extra_macs for s in every if s.memory.arena_bytes <= budget)
    proc = subprocess.run(["make", "-C", str(res.directory), "check"], capture_output=True, text=True)
    assert proc.returncode == 0 and "SC_PASS" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.board
def test_tiled_model_on_the_emulated_m4(tmp_path):
    """The tiled awkward model on the Cortex-M4F (QEMU): self-test passes, the arena symbol is the
    planner's tiled figure, and the instruction count is measured against the untiled build."""
    from codegen import board as cboard

    ok, reason = cboard.board_toolchain_available()
    if not ok:
        if os.environ.get("SPARSECOMP_REQUIRE_BOARD") == "1":
            pytest.fail(f"Cortex-M board toolchain not available: {reason}")
        pytest.skip(f"Cortex-M board toolchain not available: {reason}")
    net = _sparsify(_awkward(), 0.5)
    x = torch.randn(AWKWARD_SHAPE, generator=torch.Generator().manual_seed(3))
    g, mem = build_graph(net, x, "csr")
    last = tiling.candidate_stages(g)[-1]
    tiled = save_compressed_model(net, "csr", x, tmp_path / "tiled", tiling_stages=[Stage(0, last, (3, 2))])
    plain = save_compressed_model(net, "csr", x, tmp_path / "plain")
    runs = {}
    for name in ("tiled", "plain"):
        r = cboard.run(tmp_path / name, "m4", profile=True)
        assert r.passed, r.stdout + r.stderr
        runs[name] = r.profile.total_instructions
    assert tiled.arena_bytes == tiled.report["tiling"]["peak_ram_bytes"]
    assert plain.arena_bytes == mem.arena_bytes == tiled.report["tiling"]["layerwise_arena_bytes"]
    m = cboard.measure(tmp_path / "tiled")
    assert m.arena_bytes == tiled.arena_bytes
    assert runs["tiled"] > runs["plain"]  # the halos are recomputed, and the copies cost


@pytest.mark.board
def test_int8_tiled_model_on_the_emulated_m4(tmp_path):
    """The int8 tiled awkward model on the Cortex-M4F (QEMU, SMLAD kernels): the self-test passes (bit-exact
    with the integer reference), the arena symbol is the tiled plan's figure, instructions against untiled."""
    from codegen import board as cboard

    ok, reason = cboard.board_toolchain_available()
    if not ok:
        if os.environ.get("SPARSECOMP_REQUIRE_BOARD") == "1":
            pytest.fail(f"Cortex-M board toolchain not available: {reason}")
        pytest.skip(f"Cortex-M board toolchain not available: {reason}")
    net = _awkward()
    cal = torch.randn((16, *AWKWARD_SHAPE[1:]), generator=torch.Generator().manual_seed(2))
    plain = _emit_int8(net, AWKWARD_SHAPE, tmp_path / "plain", cal)
    from codegen.integer_emit import int8_graph

    last = tiling.candidate_stages(int8_graph(plain.integer_model.graph))[-1]
    tiled = _emit_int8(net, AWKWARD_SHAPE, tmp_path / "tiled", cal, tiling_stages=[Stage(0, last, (3, 2))])
    runs = {}
    for name in ("tiled", "plain"):
        r = cboard.run(tmp_path / name, "m4", profile=True)
        assert r.passed, r.stdout + r.stderr
        runs[name] = r.profile.total_instructions
    assert cboard.measure(tmp_path / "tiled").arena_bytes == tiled.arena_bytes < plain.arena_bytes
    assert runs["tiled"] > runs["plain"]  # the halos are recomputed, and the copies cost


# ---- the search (lower bounds, cached estimates) -------------------------------------------------------


def _mbv2_like() -> nn.Module:
    """Inverted residual blocks (expansion 1x1, depthwise, projection, residual add) at falling resolution."""

    class Block(nn.Module):
        def __init__(self, c_in, c_out, stride, t=4):
            super().__init__()
            self.res = stride == 1 and c_in == c_out
            self.body = nn.Sequential(nn.Conv2d(c_in, c_in * t, 1), nn.BatchNorm2d(c_in * t), nn.ReLU6(),
                                      nn.Conv2d(c_in * t, c_in * t, 3, stride, 1, groups=c_in * t), nn.ReLU6(),
                                      nn.Conv2d(c_in * t, c_out, 1))  # fmt: skip

        def forward(self, x):
            return x + self.body(x) if self.res else self.body(x)

    torch.manual_seed(5)
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU6(), Block(8, 8, 1), Block(8, 12, 2), Block(12, 12, 1),
                         Block(12, 16, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).eval()  # fmt: skip


@pytest.mark.parametrize("model,shape", [("awkward", AWKWARD_SHAPE), ("mbv2_like", (1, 3, 33, 31))])
def test_search_bounds_hold_and_estimates_are_exact(model, shape):
    """For every one- and two-stage schedule: the estimated extra MACs are the planned ones and the lower
    bound is at most the planned arena (the search skips schedules on these figures)."""
    net = {"awkward": _awkward, "mbv2_like": _mbv2_like}[model]()
    g, mem = build_graph(net, shape, "dense")
    search = tiling.Search(g)
    one = search.one_stage()
    cands = one + search.two_stage([c[0] for c in one[:: max(1, len(one) // 8)]])
    assert len(cands) > len(one) > 10
    tight = 0
    for c in cands:
        s = search.plan(c)
        assert search.extra_macs(c) == s.extra_macs, c
        assert search.lower_bound(c) <= s.memory.arena_bytes, c
        tight += search.lower_bound(c) >= 0.8 * s.memory.arena_bytes
    assert tight > len(cands) // 2  # bounds close enough to prune


@pytest.mark.parametrize("model,shape", [("awkward", AWKWARD_SHAPE), ("mbv2_like", (1, 3, 33, 31))])
def test_search_equals_exhaustive(model, shape):
    """choose_schedule plans few schedules yet returns what planning every candidate returns: the fewest extra
    MACs (then the smallest arena) among those that fit; below the smallest reachable arena, the error names
    that figure."""
    net = {"awkward": _awkward, "mbv2_like": _mbv2_like}[model]()
    g, mem = build_graph(net, shape, "dense")
    search = tiling.Search(g)
    cands = search.considered()
    one = [c for c in cands if len(c) == 1]
    assert one and any(len(c) == 2 for c in cands) and any(len(c) == 3 for c in cands)
    planned = {id(c): search.plan(c) for c in cands}
    low = min(s.memory.arena_bytes for s in planned.values())
    low_one = min(planned[id(c)].memory.arena_bytes for c in one)
    for budget in sorted({low, low_one, (low_one + mem.arena_bytes) // 2, mem.arena_bytes - 1}):
        fits = [planned[id(c)] for c in cands if planned[id(c)].memory.arena_bytes <= budget]
        want = min(fits, key=lambda s: (s.extra_macs, s.memory.arena_bytes))
        got = tiling.choose_schedule(g, budget)
        assert (got.extra_macs, got.memory.arena_bytes) == (want.extra_macs, want.memory.arena_bytes), budget
    with pytest.raises(CodegenError, match=rf"the smallest arena reachable is {low} bytes"):
        tiling.choose_schedule(g, low - 1)


# ---- compress_NN_models(..., ram_budget=) ------------------------------------------------------------


def _ram_net() -> nn.Module:
    torch.manual_seed(6)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 10))  # fmt: skip


def _ram_loaders():
    from torch.utils.data import DataLoader, TensorDataset

    gen = torch.Generator().manual_seed(7)
    x = torch.randn(96, 1, 16, 16, generator=gen)
    y = torch.randint(0, 10, (96,), generator=gen)
    return [DataLoader(TensorDataset(x[i : i + 32], y[i : i + 32]), batch_size=16) for i in (0, 32, 64)]


def test_compress_with_ram_budget(tmp_path):
    """compress_NN_models(..., ram_budget=) plans tiles on the compressed model (report.ram), records the bound,
    and save_compressed_model(model, input_data=...) emits within it; parity through gcc."""
    from sparsecomp import compress_NN_models

    net = _ram_net()
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(8))
    _, mem = build_graph(net, x, "csr")
    budget = mem.arena_bytes * 2 // 3
    train, val, test = _ram_loaders()
    rep = compress_NN_models(net, "3KB", train, test, val_loader=val, representation="csr", num_epochs=1, max_rounds=1,
                             progress=False, sensitivity_batches=1, accuracy_tolerance=0.5, ram_budget=budget)  # fmt: skip
    assert rep.ram is not None and rep.ram["stages"]
    assert rep.ram["peak_ram_bytes"] <= budget < rep.ram["layerwise_arena_bytes"]
    assert "activation RAM" in str(rep)
    res = save_compressed_model(net, input_data=x, directory=tmp_path / "m")
    assert res.arena_bytes == rep.ram["peak_ram_bytes"] <= budget
    assert res.report["tiling"]["stages"] == rep.ram["stages"]
    v = verify(net, tmp_path / "m", torch.randn(3, 1, 16, 16))
    assert_parity(v.outputs, v.reference, str(tmp_path / "m"))


def test_compress_refuses_an_unreachable_ram_budget_first():
    """The RAM bound is checked before any training: the error states the smallest arena reachable and the
    model is left as it was."""
    from sparsecomp import CompressionError, compress_NN_models

    net = _ram_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    train, val, test = _ram_loaders()
    with pytest.raises(CompressionError, match=r"ram_budget=64 bytes of activation RAM cannot be met: no schedule "
                                               r"fits ram_budget=64 bytes: the smallest arena reachable is \d+ bytes"):
        compress_NN_models(net, "3KB", train, test, val_loader=val, representation="csr", num_epochs=1,
                           max_rounds=1, progress=False, ram_budget=64)  # fmt: skip
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


# ---- early exits --------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["global", "branch"])
def tiled_ee(request, tmp_path_factory):
    """The early-exit test model (tests/test_early_exit.py) emitted with ram_budget 4 bytes under its arena."""
    from test_early_exit import inputs, make_exit_model, make_net

    from codegen.early_exit import save_compressed_early_exit_model
    from sparsecomp.early_exit import simulate_exit

    kind = request.param
    net = make_net()
    ee = make_exit_model(net, kind)
    x = inputs()
    root = tmp_path_factory.mktemp(f"tiled_ee_{kind}")
    plain = save_compressed_early_exit_model(net, ee, "csr", simulate_exit=simulate_exit, input_data=x[:1],
                                             directory=root / "plain")  # fmt: skip
    budget = plain.report["memory"]["arena_bytes"] - 4
    res = save_compressed_early_exit_model(net, ee, "csr", simulate_exit=simulate_exit, input_data=x[:1],
                                           directory=root / "model", ram_budget=budget)  # fmt: skip
    return kind, net, ee, x, root / "model", res, plain, budget


def test_early_exit_tiled_every_exit_and_restart(tiled_ee, tmp_path):
    """save_compressed_early_exit_model(..., ram_budget=): tiled stages inside the exit stages; every exit
    (one shot and incremental) and the baseline match PyTorch, the self-test passes, a stage run twice (power
    lost before its step was recorded) gives the same answers, no two live buffers overlap."""
    import test_early_exit as tee

    from codegen.early_exit import verify_early_exit

    kind, net, ee, x, d, res, plain, budget = tiled_ee
    t = res.report["tiling"]
    assert t["stages"] and t["peak_ram_bytes"] == res.report["memory"]["arena_bytes"] <= budget
    assert res.report["early_exit"]["arena"]["arena_bytes"] == t["peak_ram_bytes"]
    stage_of = {i: s["index"] for s in res.report["early_exit"]["stages"] for i in range(s["first_op"], s["end_op"])}
    assert all(stage_of[s["first"]] == stage_of[s["last"]] for s in t["stages"])  # a tiled stage inside one stage
    assert "sc_tile_copy(" in (d / "model.c").read_text() and "runtime/sc_tile.h" in res.report["files"]
    v = verify_early_exit(net, ee, d, x)
    for k in range(len(tee.EXITS) + 1):
        assert_parity(v.oneshot[k], v.reference[k], f"{kind} exit {k} one shot")
        assert_parity(v.incremental[k], v.reference[k], f"{kind} exit {k} incremental")
    assert_parity(v.baseline, v.baseline_reference, "baseline")
    proc = subprocess.run(["make", "-C", str(d), "check"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "SC_PASS" in proc.stdout and "SC_EE_CHECK_FAILED" not in proc.stdout, proc.stdout
    emitted = (kind, net, ee, x, d, res)
    tee.test_power_loss_mid_stage_redoes_the_stage(emitted, tmp_path)
    tee.test_stage_plan_keeps_cross_stage_reads_intact(emitted)


def test_early_exit_ram_budget_refused_with_the_smallest_arena(tmp_path):
    from test_early_exit import inputs, make_exit_model, make_net

    from codegen.early_exit import save_compressed_early_exit_model
    from sparsecomp.early_exit import simulate_exit

    net = make_net()
    ee = make_exit_model(net, "global")
    x = inputs()
    with pytest.raises(CodegenError, match=r"early-exit emission \(stages restartable, the exits' features kept in the "
                                           r"arena, tiles only inside a stage\): no schedule fits ram_budget=8 bytes: "
                                           r"the smallest arena reachable is \d+ bytes"):  # fmt: skip
        save_compressed_early_exit_model(net, ee, "csr", simulate_exit=simulate_exit, input_data=x[:1],
                                         directory=tmp_path / "no", ram_budget=8)  # fmt: skip
    assert not (tmp_path / "no").exists()
    fits = save_compressed_early_exit_model(net, ee, "csr", simulate_exit=simulate_exit, input_data=x[:1],
                                            directory=tmp_path / "a", ram_budget=10**6)  # fmt: skip
    plain = save_compressed_early_exit_model(net, ee, "csr", simulate_exit=simulate_exit, input_data=x[:1],
                                             directory=tmp_path / "b")  # fmt: skip
    assert fits.report["tiling"]["stages"] == []
    assert (tmp_path / "a" / "model.c").read_text() == (tmp_path / "b" / "model.c").read_text()
    assert plain.report["memory"] == fits.report["memory"]


@pytest.mark.board
def test_early_exit_tiled_on_the_emulated_m4(tiled_ee):
    from test_early_exit import EXITS, require_board

    from codegen import board as cboard

    require_board()
    kind, net, ee, x, d, res, plain, budget = tiled_ee
    r = cboard.run(d, "m4")
    assert r.passed, r.stdout[-3000:] + r.stderr[-2000:]
    with torch.no_grad():
        ref = np.stack([ee(x[:1], exit_index=k).numpy().reshape(-1) for k in range(len(EXITS) + 1)])
    got = r.outputs.reshape(len(EXITS) + 1, -1)
    for k in range(len(EXITS) + 1):
        assert_parity(got[k], ref[k], f"{kind} exit {k} on m4 (tiled)")
