"""distiller / dnn-compression adapters (issue 18 item 2), called as the seeds document them."""

from __future__ import annotations

import csv

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

import sparsecomp
from sparsecomp import (
    LevelPruner,
    Quantizer,
    bits_analysis,
    perform_bits_analysis,
    perform_sensitivity_analysis,
    sensitivities_to_csv,
    sensitivity_analysis,
    sensitivity_to_png,
)


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    x = torch.randn(96, 1, 6, 6)
    with torch.no_grad():
        y = model(x).argmax(1)  # the model is 100 % accurate on its own labels
    return model, DataLoader(TensorDataset(x, y), batch_size=32)


def validate(val_loader, model, criterion):  # dnn-compression's contract: (accuracy, loss)
    correct, n, loss = 0, 0, 0.0
    model.eval()
    with torch.no_grad():
        for x, y in val_loader:
            out = model(x)
            loss += float(criterion(out, y)) * len(y)
            correct += int((out.argmax(1) == y).sum())
            n += len(y)
    return torch.tensor(100.0 * correct / n), loss / n


def test_sensitivity_matches_sparsecomp_and_restores(tmp_path):
    model, val = _setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sens = perform_sensitivity_analysis(model, val, [0.0, 0.5, 0.9], validate, nn.CrossEntropyLoss())
    assert list(sens) == ["0.weight", "3.weight"] and list(sens["0.weight"]) == [0.0, 0.5, 0.9]
    assert sens["0.weight"][0.0][0] == 100.0
    ours = sensitivity_analysis(model, val, [0.5, 0.9], progress=False)
    for name in ("0", "3"):
        for s in (0.5, 0.9):
            assert sens[f"{name}.weight"][s][0] == pytest.approx(100.0 * ours.curves[name][s])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    sensitivities_to_csv(sens, tmp_path / "s.csv")
    rows = list(csv.reader(open(tmp_path / "s.csv")))
    assert rows[0] == ["parameter", "sparsity", "accuracy", "loss"] and len(rows) == 7
    assert rows[1][0] == "0.weight" and float(rows[1][2]) == 100.0
    sensitivity_to_png(sens, tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bits_analysis_module_style_call():
    model, val = _setup()
    res = bits_analysis.perform_bits_analysis(model, val, [8, 2, 1], validate, nn.CrossEntropyLoss())
    assert res is not None and bits_analysis.perform_bits_analysis is perform_bits_analysis
    ours = sparsecomp.bits_analysis(model, val, [8, 2, 1], progress=False)
    for name in ("0", "3"):
        for b in (8, 2, 1):
            assert res[f"{name}.weight"][b][0] == pytest.approx(100.0 * ours.curves[name][b])
    with pytest.raises(TypeError, match=r"\(accuracy, loss\)"):
        perform_bits_analysis(model, val, [4], lambda v, m, c: 0.5, None)


def test_level_pruner_and_quantizer_by_parameter_name():
    model, _ = _setup()
    s = LevelPruner(options=[("0.weight", 0.5), ("3.weight", 0.75)]).prune(model)
    assert s == {"0.weight": 0.5, "3.weight": 0.75}
    zeros = model[3].weight == 0
    plan = Quantizer(options=[("0.weight", 2), ("3.weight", 3)]).quantize(model)
    assert plan == {"0.weight": 2, "3.weight": 3}
    assert torch.unique(model[0].weight[model[0].weight != 0]).numel() <= 4
    assert torch.unique(model[3].weight[model[3].weight != 0]).numel() <= 8
    assert torch.equal(model[3].weight == 0, zeros)
    with pytest.raises(KeyError, match="not parameters"):
        Quantizer(options={"9.weight": 4}).quantize(model)
    with pytest.raises(ValueError, match="1 to 8"):
        Quantizer(options=[("0.weight", 0)])
