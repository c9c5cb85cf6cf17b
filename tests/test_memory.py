"""The memory planner on its own (no C): lower bound, optimality on chains, no overlaps, in-place."""

import random

import pytest
import torch
import torch.nn as nn

from codegen import build_graph
from codegen.memory import MemoryPlanner


def _overlaps(p: MemoryPlanner, offsets: dict[str, int]) -> list[tuple[str, str]]:
    bad = []
    for i, a in enumerate(p.buffers):
        for b in p.buffers[i + 1 :]:
            if a.overlaps_in_time(b):
                oa, ob = offsets[a.name], offsets[b.name]
                if oa < ob + b.size and ob < oa + a.size:
                    bad.append((a.name, b.name))
    return bad


def test_chain_reaches_lower_bound_where_greedy_by_size_does_not():
    # greedy-by-size alone places these at 24 bytes; the chain bound is 19*4
    p = MemoryPlanner(alignment=4)
    for i, size in enumerate([40, 36, 20, 32]):
        p.add_buffer(f"b{i}", size, i, i + 1)
    plan = p.plan()
    assert plan.lower_bound == 76
    assert plan.arena_bytes == 76
    assert not _overlaps(p, plan.offsets)


@pytest.mark.parametrize("seed", range(40))
def test_random_chains_are_optimal(seed):
    rng = random.Random(seed)
    p = MemoryPlanner()
    for i in range(rng.randint(1, 14)):
        p.add_buffer(f"v{i}", 4 * rng.randint(1, 400), i, i + 1)
    plan = p.plan()
    assert plan.arena_bytes == plan.lower_bound
    assert not _overlaps(p, plan.offsets)


@pytest.mark.parametrize("seed", range(40))
def test_random_lifetimes_never_overlap_and_respect_bound(seed):
    rng = random.Random(1000 + seed)
    p = MemoryPlanner(alignment=8)
    for i in range(rng.randint(1, 16)):
        first = rng.randint(0, 12)
        p.add_buffer(f"v{i}", rng.randint(1, 300), first, first + rng.randint(0, 5))
    plan = p.plan()
    assert plan.arena_bytes >= plan.lower_bound
    assert all(off % 8 == 0 for off in plan.offsets.values())
    assert not _overlaps(p, plan.offsets)


def test_bad_buffers_are_rejected():
    p = MemoryPlanner()
    p.add_buffer("a", 4, 0, 1)
    with pytest.raises(ValueError):
        p.add_buffer("a", 4, 0, 1)
    with pytest.raises(ValueError):
        p.add_buffer("b", 4, 3, 1)


def test_empty_planner():
    plan = MemoryPlanner().plan()
    assert (plan.arena_bytes, plan.lower_bound) == (0, 0)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        y = torch.relu(self.c1(x))
        y = self.c2(y) + x  # add: output may reuse the dying operand
        y = torch.relu(y)
        return self.fc(y.flatten(1))


def test_graph_plan_inplace_add_and_external_io():
    g, mem = build_graph(Residual(), (1, 4, 8, 8))
    kinds = {v: s.kind for v, s in mem.storage.items()}
    assert kinds[g.input] == "input" and kinds[g.output] == "output"
    add = next(op for op in g.ops if op.kind == "eltwise")
    # the add (with its fused ReLU) writes over the conv output, which dies there
    assert mem.storage[add.output].group == mem.storage[add.inputs[0]].group
    # the input is read by the add at the end, so it must never be overwritten
    assert all(s.kind != "input" or v == g.input for v, s in mem.storage.items())
    assert mem.arena_bytes >= mem.lower_bound
    assert mem.arena_bytes == 2 * 4 * 8 * 8 * 4  # c1 out and c2 out; the add works in place


def test_plain_chain_graph_equals_lower_bound():
    net = nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 10),
    )  # fmt: skip
    _, mem = build_graph(net, (1, 1, 28, 28))
    assert mem.arena_bytes == mem.lower_bound
    # without in-place execution conv1 out (6x24x24) and pool1 out (6x12x12) are live together;
    # the pools run in place (codegen.ops.pool.Pool2d.overwrites_input), so conv1's output alone is the peak
    assert mem.chained_lower_bound == (6 * 24 * 24 + 6 * 12 * 12) * 4
    assert mem.lower_bound == 6 * 24 * 24 * 4


def test_buffer_that_shrinks_in_place():
    # a (400 B, t 0..1) shrinks to 100 B (t 1..3) in place; b (300 B) is live at t 2..3
    p = MemoryPlanner()
    p.add_buffer("a", 400, 0, 3, pieces=[(0, 1, 400), (1, 3, 100)])
    p.add_buffer("b", 300, 2, 3)
    plan = p.plan()
    assert plan.lower_bound == 400 and plan.arena_bytes == 400
    assert plan.offsets["b"] >= 100 or plan.offsets["a"] >= 300


def test_depthwise_and_pointwise_run_in_place():
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(), nn.Conv2d(8, 8, 1),
        nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4),
    )  # fmt: skip
    g, mem = build_graph(net, (1, 1, 8, 8))
    # one activation buffer (dw and 1x1 overwrite their input) + the kernels' scratch, planned in the
    # arena while its op runs: the first conv's 4 windows of 3x3 (sc_conv_dense_mm), the dw's zero-padded
    # 8x8 plane, the 1x1's 4 x 8 column
    assert [op.arena_scratch_bytes() for op in g.ops] == [4 * 9 * 4, 8 * 8 * 4, 4 * 8 * 4, 0]
    assert mem.arena_bytes == 8 * 6 * 6 * 4 + 8 * 8 * 4
    assert set(mem.scratch) == {g.ops[0].name, g.ops[1].name, g.ops[2].name}
    assert mem.chained_lower_bound == 2 * 8 * 6 * 6 * 4 + 8 * 8 * 4
