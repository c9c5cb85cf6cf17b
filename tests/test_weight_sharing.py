"""Weight sharing with centroid fine-tuning, bits_analysis, BatchNorm folding in PyTorch and the
bad-input errors (bits outside 1..8, NaN weights, missing validation data)."""

from __future__ import annotations

import copy
import csv
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from codegen import weight_bytes
from codegen.api import build_graph
from codegen.quantize import quantize_int8_
from sparsecomp import (
    BitsResult,
    WeightSharingError,
    bits_analysis,
    fine_tune_shared_,
    fold_batchnorm_,
    share_,
)
from sparsecomp.training import evaluate

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    x = torch.randn(512, 10)
    y = ((x[:, 0] + x[:, 1] - x[:, 2]) > 0).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    net = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Sequential(nn.Linear(32, 16), nn.ReLU()), nn.Linear(16, 2))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(15):
        for xb, yb in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(net(xb), yb).backward()
            opt.step()
    with torch.no_grad():  # prune: zeros must survive sharing and fine-tuning
        for m in (net[0], net[2][0]):
            m.weight.mul_(m.weight.abs() > m.weight.abs().median())
    return net, loader


def _nonzero_values(m: nn.Module) -> torch.Tensor:
    w = m.weight.detach()
    return torch.unique(w[w != 0])


def test_fine_tune_shared_keeps_codebook_zeros_and_assignment(toy):
    net, loader = toy
    net = copy.deepcopy(net)
    zeros = {n: (m.weight == 0).clone() for n, m in net.named_modules() if isinstance(m, nn.Linear)}
    share_(net, 2)
    shared_acc = evaluate(net, loader)
    groups = {n: torch.unique(m.weight.detach(), return_inverse=True)[1]
              for n, m in net.named_modules() if isinstance(m, nn.Linear)}
    before = {n: m.weight.detach().clone() for n, m in net.named_modules() if isinstance(m, nn.Linear)}
    fine_tune_shared_(net, loader, None, epochs=4, lr=1e-2, train_other=False)
    for n, m in net.named_modules():
        if not isinstance(m, nn.Linear):
            continue
        assert len(_nonzero_values(m)) <= 4
        assert torch.equal(m.weight == 0, zeros[n]), n
        # same index assignment: weights that shared a value still share one
        after_groups = torch.unique(m.weight.detach(), return_inverse=True)[1]
        assert torch.equal(after_groups, groups[n]) or len(_nonzero_values(m)) < 4
        assert not torch.equal(m.weight, before[n]), f"{n}: centroids did not move"
        assert type(m.weight) is nn.Parameter and not hasattr(m, "parametrizations")
    assert evaluate(net, loader) >= shared_acc - 0.02
    # the codebook encodings hold these exact values
    assert weight_bytes(net, (1, 10), "codebook").total < weight_bytes(net, (1, 10), "csr").total


def test_centroid_gradient_is_summed(toy):
    """One SGD step moves each centroid by -lr * (sum of the gradients of its weights)."""
    net, _ = toy
    net = copy.deepcopy(net)
    share_(net, {"0": 1})
    x = torch.randn(16, 10)
    y = torch.randint(0, 2, (16,))
    w = net[0].weight
    cent = _nonzero_values(net[0]).clone()
    net.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    expected = torch.stack([w.grad[w.detach() == c].sum() for c in cent])
    one = DataLoader(TensorDataset(x, y), batch_size=16)
    fine_tune_shared_(net, one, None, layers=["0"], epochs=1, lr=0.1, optimizer="sgd", train_other=False)
    # sgd (momentum 0.9, nesterov): first step is lr * (1 + 0.9) * grad
    moved = _nonzero_values(net[0])
    assert torch.allclose(moved, torch.sort(cent - 0.1 * 1.9 * expected).values, atol=1e-5)


def test_fine_tune_shared_with_bits_mapping_leaves_other_layers(toy):
    net, loader = toy
    net = copy.deepcopy(net)
    ref = net[3].weight.detach().clone()
    fine_tune_shared_(net, loader, {"2.0": 3}, epochs=1, lr=1e-3, train_other=False)
    assert len(_nonzero_values(net[2][0])) <= 8
    assert torch.equal(net[3].weight, ref)


@pytest.mark.parametrize("bad", [0, 9, -1, 2.5, True, "4"])
def test_bits_outside_range_name_the_layer(toy, bad):
    net, loader = toy
    with pytest.raises(WeightSharingError, match=r"layer '2\.0'.*1 to 8"):
        fine_tune_shared_(copy.deepcopy(net), loader, {"2.0": bad}, epochs=0)
    with pytest.raises(WeightSharingError, match="1 to 8"):
        share_(copy.deepcopy(net), bad)
    with pytest.raises(WeightSharingError, match="1 to 8"):
        bits_analysis(net, loader, [bad], progress=False)


def test_nan_weights_and_unknown_layers_are_refused(toy):
    net, loader = toy
    bad = copy.deepcopy(net)
    with torch.no_grad():
        bad[2][0].weight[0, 0] = float("nan")
    with pytest.raises(WeightSharingError, match=r"2\.0.*NaN"):
        fine_tune_shared_(bad, loader, 4, epochs=0)
    with pytest.raises(WeightSharingError, match=r"2\.0.*NaN"):
        bits_analysis(bad, loader, progress=False)
    with pytest.raises(WeightSharingError, match="no Conv1d/Conv2d/Linear layer named"):
        fine_tune_shared_(copy.deepcopy(net), loader, {"nope": 4}, epochs=0)
    unshared = copy.deepcopy(net)
    with pytest.raises(WeightSharingError, match="share it first"):  # > 256 distinct values, bits=None
        fine_tune_shared_(nn.Sequential(nn.Linear(64, 64)), loader, None, epochs=1)
    empty = DataLoader(TensorDataset(torch.zeros(0, 10), torch.zeros(0, dtype=torch.long)), batch_size=4)
    with pytest.raises(WeightSharingError, match="no batches"):
        fine_tune_shared_(unshared, empty, 2, epochs=1)
    assert all(type(m.weight) is nn.Parameter for m in unshared.modules() if isinstance(m, nn.Linear))


def test_bits_analysis_csv_png_and_restore(toy, tmp_path):
    net, loader = toy
    ref = copy.deepcopy(net.state_dict())
    res = bits_analysis(net, loader, bits=[8, 4, 1], csv_path=tmp_path / "b.csv", plot_path=tmp_path / "b.png",
                        progress=False)
    assert all(torch.equal(ref[k], v) for k, v in net.state_dict().items())
    assert set(res.curves) == {"0", "2.0", "3"} and res.bits == [1, 4, 8]
    assert res.curves["0"][8] >= res.curves["0"][1] - 0.02
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(open(tmp_path / "b.csv")))
    assert rows[0]["layer"] == "*" and len(rows) == 1 + 3 * 3
    back = BitsResult.from_csv(tmp_path / "b.csv")
    assert back.curves == {k: {b: pytest.approx(a) for b, a in v.items()} for k, v in res.curves.items()}
    assert res.smallest_bits("0", 1.0) == 1 and res.smallest_bits("0", -1.0) is None
    with pytest.raises(WeightSharingError, match="validation data"):
        bits_analysis(net, None)


# ---- BatchNorm folding ------------------------------------------------------------------------
class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        self.c1 = nn.Conv1d(4, 3, 2)
        self.b1 = nn.BatchNorm1d(3)
        self.fc = nn.Linear(3 * 5, 6)
        self.bn_fc = nn.BatchNorm1d(6)
        self.pre = nn.BatchNorm2d(1)  # BatchNorm not after a layer: left alone

    def forward(self, x):
        x = self.body(self.pre(x))  # [N, 4, 6, 6]
        x = self.b1(self.c1(x.mean(dim=3)))  # [N, 3, 5]
        return self.bn_fc(self.fc(torch.flatten(x, 1)))


def _trained_bn(model: nn.Module, shape) -> nn.Module:
    torch.manual_seed(0)
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.weight.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.5, 0.5)
    for _ in range(4):
        model(torch.randn(*shape))
    return model.eval()


def test_fold_batchnorm_matches_codegen_bit_for_bit():
    model = _trained_bn(BNNet(), (8, 1, 8, 8))
    x = torch.randn(1, 1, 8, 8)
    g_ref, _ = build_graph(model, x, "csr")
    folded = copy.deepcopy(model)
    pairs = fold_batchnorm_(folded)
    assert pairs == [("body.0", "body.1"), ("c1", "b1"), ("fc", "bn_fc")]
    assert isinstance(folded.body[1], nn.Identity) and isinstance(folded.pre, nn.BatchNorm2d)
    assert folded.body[0].bias is not None
    xs = torch.randn(5, 1, 8, 8)
    assert torch.allclose(folded(xs), model(xs), atol=1e-5)
    g_new, _ = build_graph(folded, x, "csr")
    ref = {op.source.split(" ")[0]: op.params for op in g_ref.ops if "weight" in op.params}
    new = {op.source.split(" ")[0]: op.params for op in g_new.ops if "weight" in op.params}
    assert ref.keys() == new.keys()
    for k in ref:  # emission of the folded model holds exactly the weights codegen would have folded
        assert np.array_equal(ref[k]["weight"], new[k]["weight"]), k
        assert np.array_equal(ref[k]["bias"], new[k]["bias"]), k
    assert weight_bytes(folded, x).total == weight_bytes(model, x).total


def test_quantize_after_folding_survives_emission(tmp_path):
    from codegen import save_compressed_model, verify

    model = _trained_bn(BNNet(), (8, 1, 8, 8))
    x = torch.randn(1, 1, 8, 8)
    with pytest.raises(Exception, match="BatchNorm"):
        weight_bytes(quantize_int8_(copy.deepcopy(model)), x, "int8")  # codegen's folding breaks the grid
    folded = copy.deepcopy(model)
    fold_batchnorm_(folded)
    quantize_int8_(folded)
    g, _ = build_graph(folded, x, "int8")
    for op in g.ops:
        if "weight" in op.params:  # the emitted weights are the model's, unchanged by emission
            name = op.source.split(" ")[0]
            assert np.array_equal(op.params["weight"].reshape(-1),
                                  folded.get_submodule(name).weight.detach().numpy().reshape(-1))
    if not (__import__("shutil").which("cc") or __import__("shutil").which("gcc")):
        pytest.skip("needs a C compiler")
    save_compressed_model(folded, "int8", input_data=x, directory=tmp_path / "m")
    res = verify(folded, tmp_path / "m", torch.randn(3, 1, 8, 8))
    assert res.max_rel_error < 1e-4


def test_fold_skips_shared_layers_and_stats_free_bn():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.bn = nn.BatchNorm1d(4)
            self.fc2 = nn.Linear(4, 4)
            self.bn2 = nn.BatchNorm1d(4, track_running_stats=False)

        def forward(self, x):
            return self.bn(self.fc(x)) + self.fc(x) + self.bn2(self.fc2(x))

    m = Twice().eval()
    assert fold_batchnorm_(m) == []
    assert isinstance(m.bn, nn.BatchNorm1d) and not math.isnan(float(m.fc.weight.sum()))
