"""Pruning utilities: masks, level/threshold pruners, persistence while training, schedules."""

import pytest
import torch
import torch.nn as nn

from sparsecomp.allocation import UnreachableBudget, allocate
from sparsecomp.pruning import (
    LevelPruner,
    ThresholdPruner,
    find_compressible_layers,
    magnitude_mask,
    replace_module,
    weight_matrix_shape,
)
from sparsecomp.schedule import agp_schedule, agp_sparsity, pruning_steps


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Sequential(nn.Conv1d(4, 4, 1)))
        self.heads = nn.ModuleDict({"a": nn.Linear(4, 3)})
        self.blocks = nn.ModuleList([nn.Linear(3, 3), nn.BatchNorm1d(3)])


def test_find_compressible_layers_anywhere_in_tree():
    names = list(find_compressible_layers(Nested()))
    assert names == ["features.0", "features.2.0", "heads.a", "blocks.0"]


def test_weight_matrix_shape_of_grouped_conv():
    conv = nn.Conv2d(4, 8, 3, groups=2)
    assert weight_matrix_shape(conv) == (8, 2 * 9)


def test_replace_module_at_nested_paths():
    m = Nested()
    replace_module(m, "features.2.0", nn.Identity())
    replace_module(m, "heads.a", nn.Linear(4, 5))
    replace_module(m, "blocks.0", nn.Identity())
    assert isinstance(m.features[2][0], nn.Identity)
    assert m.heads["a"].out_features == 5
    assert isinstance(m.blocks[0], nn.Identity)
    with pytest.raises(KeyError):
        replace_module(m, "features.9", nn.Identity())


def test_magnitude_mask_keeps_largest_and_is_monotone():
    w = torch.tensor([0.1, -3.0, 0.5, 2.0, -0.2, 0.0])
    m = magnitude_mask(w, 0.5)
    assert m.tolist() == [False, True, True, True, False, False]
    m2 = magnitude_mask(w * m, 2 / 3, m)
    assert m2.tolist() == [False, True, False, True, False, False]
    assert not (m2 & ~m).any()
    with pytest.raises(ValueError):
        magnitude_mask(w, 1.5)


def test_level_pruner_sparsities_and_unknown_name():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 4))
    p = LevelPruner(options=[("0.weight", 0.35), ("2.weight", 0.8)])
    s = p.prune(m)
    assert s["0.weight"] == pytest.approx(0.35)
    assert s["2.weight"] == pytest.approx(0.8)
    with pytest.raises(KeyError, match="nope"):
        LevelPruner(options=[("nope.weight", 0.5)]).prune(m)
    with pytest.raises(ValueError):
        LevelPruner(options=[("0.weight", -0.1)])


def test_threshold_pruner_uses_std_times_sensitivity():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(200, 100))
    w = m[0].weight.detach().clone()
    p = ThresholdPruner(sensitivity=0.5)
    p.prune(m)
    thr = float(w.std()) * 0.5
    assert torch.equal(m[0].weight == 0, w.abs() < thr)


@pytest.mark.parametrize("pruner_kind", ["level", "threshold"])
@pytest.mark.parametrize("opt_kind", ["sgd", "adam"])
def test_masks_persist_while_training(pruner_kind, opt_kind):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4))
    if pruner_kind == "level":
        p = LevelPruner(options=[("0.weight", 0.7), ("3.weight", 0.5)])
    else:
        p = ThresholdPruner(sensitivity=1.0)
    p.prune(m)
    zero_before = {n: (dict(m.named_parameters())[n] == 0).clone() for n in p.masks}
    bias_before = m[0].bias.detach().clone()
    bn_before = m[1].weight.detach().clone()
    opt = (torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-2) if opt_kind == "sgd"
           else torch.optim.Adam(m.parameters(), lr=0.05, weight_decay=1e-2))
    p.attach(opt)
    x, y = torch.randn(64, 16), torch.randint(0, 4, (64,))
    for _ in range(10):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    params = dict(m.named_parameters())
    for n, z in zero_before.items():
        assert (params[n][z] == 0).all(), f"{n}: pruned weights moved"
        assert (params[n][~z] != 0).all()
    assert not torch.equal(m[0].bias, bias_before), "biases must stay trainable"
    assert not torch.equal(m[1].weight, bn_before), "BatchNorm must stay trainable"
    p.detach()
    opt.zero_grad()
    nn.functional.cross_entropy(m(x), y).backward()
    opt.step()
    assert (params["0.weight"] != 0).float().mean() > 0.9, "after detach the masks no longer apply"


def test_pruned_model_traces_with_fx_and_has_no_extra_state():
    m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    keys = set(m.state_dict())
    LevelPruner(options=[("0.weight", 0.5)]).prune(m)
    assert set(m.state_dict()) == keys
    gm = torch.fx.symbolic_trace(m)
    assert [n.op for n in gm.graph.nodes].count("call_module") == 3


def test_agp_schedule_is_gradual_and_monotone():
    s = agp_schedule(0.0, 0.952, 10)
    assert s[-1] == pytest.approx(0.952)
    assert all(b >= a for a, b in zip(s, s[1:]))
    assert s[0] < 0.3, "first step must not jump most of the way (the 4.8% density bug)"
    assert agp_sparsity(0.5, 0.9, 0, 4) == 0.5
    assert pruning_steps(10, 0.6, 20) == [0, 1, 2, 3, 4, 5]
    assert pruning_steps(1) == [0]


def test_allocation_prefers_insensitive_layers_and_fits_budget():
    numel = {"big_robust": 1000, "small_sensitive": 1000}
    cost = lambda n, k: k * 6 + 10  # noqa: E731
    drop = lambda n, s: (0.01 if n == "big_robust" else 1.0) * s  # noqa: E731
    nnz = allocate(numel, dict(numel), {"big_robust": 10, "small_sensitive": 10}, cost, drop, fixed=100, budget=9000)
    assert 100 + cost("a", nnz["big_robust"]) + cost("b", nnz["small_sensitive"]) <= 9000
    assert nnz["big_robust"] < nnz["small_sensitive"]
    # the last step is shortened: the budget is used, not overshot by a grid step
    assert 100 + cost("a", nnz["big_robust"]) + cost("b", nnz["small_sensitive"]) > 9000 - 6
    with pytest.raises(UnreachableBudget):
        allocate(numel, dict(numel), {"big_robust": 10, "small_sensitive": 10}, cost, drop, fixed=100, budget=50)
