"""Sensitivity analysis: per-layer curves, CSV round trip, PNG plot, reuse by the compressor."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from sparsecomp import SensitivityResult, sensitivity_analysis


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    x = torch.randn(512, 20)
    y = (x[:, :5].sum(1) > 0).long() + 2 * (x[:, 5] > 0).long()
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, DataLoader(TensorDataset(x, y), batch_size=128)


def test_curves_restore_weights_and_degrade(setup, tmp_path):
    model, loader = setup
    before = copy.deepcopy(model.state_dict())
    res = sensitivity_analysis(model, loader, sparsities=[0.5, 0.9, 0.99], progress=False,
                               csv_path=tmp_path / "s.csv", plot_path=tmp_path / "s.png")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert set(res.curves) == {"0", "2"}
    assert res.baseline > 0.8
    for curve in res.curves.values():
        assert curve[0.99] < res.baseline  # pruning 99% of a layer hurts
    assert res.accuracy_drop("0", 0.0) == 0.0
    assert res.accuracy_drop("0", 0.99) == pytest.approx(res.baseline - res.curves["0"][0.99])
    assert res.accuracy_drop("0", 0.7) >= 0
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    back = SensitivityResult.from_csv(tmp_path / "s.csv")
    assert back.baseline == pytest.approx(res.baseline)
    assert set(back.curves) == set(res.curves)
    for layer, curve in res.curves.items():
        assert back.curves[layer] == pytest.approx(curve)


def test_bad_arguments(setup):
    model, loader = setup
    with pytest.raises(ValueError):
        sensitivity_analysis(model, loader, sparsities=[1.5], progress=False)
    with pytest.raises(KeyError, match="nope"):
        sensitivity_analysis(model, loader, sparsities=[0.5], layers=["nope"], progress=False)


def test_compressor_reuses_a_given_analysis(setup, monkeypatch):
    import sparsecomp.compress as cm

    model, loader = setup
    model = copy.deepcopy(model)
    res = sensitivity_analysis(model, loader, sparsities=[0.5, 0.9], progress=False)

    def fail(*a, **k):
        raise AssertionError("the given sensitivity analysis must be reused, not recomputed")

    monkeypatch.setattr(cm, "sensitivity_analysis", fail)
    report = cm.compress_NN_models(model, "1200B", loader, loader, val_loader=loader, sensitivity=res,
                                   layers_factorization=False, num_epochs=1, max_rounds=1, progress=False,
                                   accuracy_tolerance=0.2)
    assert report.final_bytes <= 1200


def test_compressor_reads_analysis_csv_and_saves_checkpoint_only_when_asked(setup, tmp_path, monkeypatch):
    import sparsecomp.compress as cm

    model, loader = setup
    sensitivity_analysis(model, loader, sparsities=[0.5, 0.9], progress=False, csv_path=tmp_path / "s.csv")
    monkeypatch.setattr(cm, "sensitivity_analysis", lambda *a, **k: pytest.fail("CSV must be reused"))
    m = copy.deepcopy(model)
    r = cm.compress_NN_models(m, "1200B", loader, loader, val_loader=loader, sensitivity=tmp_path / "s.csv",
                              checkpoint_path=tmp_path / "best.pt", layers_factorization=False, channel_pruning=False,
                              num_epochs=1, max_rounds=1, progress=False, accuracy_tolerance=0.2, representation="csr")
    fresh = copy.deepcopy(model)
    fresh.load_state_dict(torch.load(tmp_path / "best.pt", weights_only=True))
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), m.state_dict().values()))
    assert r.final_bytes <= 1200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "s.csv"]
