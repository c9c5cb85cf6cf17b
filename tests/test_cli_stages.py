"""The Deep Compression stage commands (issue 18 item 1), end to end through ``sparsecomp.cli.main`` on a
tiny model: prune -> share -> huffman-encode -> huffman-decode -> compare-stages, each checked against the
library functions it wraps."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from sparsecomp import ThresholdPruner, compare_stages, huffman_decode, share_
from sparsecomp.cli import main

MODULE = '''
import torch.nn as nn

def tiny():
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
'''


@pytest.fixture()
def work(tmp_path, monkeypatch):
    (tmp_path / "sc_tiny_stages.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("sc_tiny_stages", None)
    import sc_tiny_stages

    torch.manual_seed(0)
    model = sc_tiny_stages.tiny()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 1, 4, 4, generator=g)
    y = (x.flatten(1)[:, :3].argmax(1)).long()
    torch.save({"x": x, "y": y}, tmp_path / "data.pt")
    return tmp_path, sc_tiny_stages.tiny, model


def test_help_lists_the_knobs(capsys):
    for cmd, knobs in [("prune", ["--sensitivity", "--epochs", "--lr", "--seed"]),
                       ("share", ["--bits", "--epochs", "--lr", "--seed", "default 5"])]:
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = capsys.readouterr().out
        assert all(k in text for k in knobs), (cmd, text)


def test_prune_without_data_is_threshold_pruner(work):
    d, factory, model = work
    assert main(["prune", "sc_tiny_stages:tiny", "--weights", "w.pt", "--sensitivity", "0.5", "-o", "p.pt"]) == 0
    ref = factory()
    ref.load_state_dict(model.state_dict())
    ThresholdPruner(sensitivity=0.5).prune(ref)
    got = torch.load(d / "p.pt", weights_only=True)
    assert all(torch.equal(got[k], v) for k, v in ref.state_dict().items())
    # no silent overwrite
    assert main(["prune", "sc_tiny_stages:tiny", "--weights", "w.pt", "-o", "p.pt"]) == 2
    assert all(torch.equal(torch.load(d / "p.pt", weights_only=True)[k], v) for k, v in got.items())


def test_pipeline_end_to_end(work, capsys):
    d, factory, _ = work
    assert main(["prune", "sc_tiny_stages:tiny", "--weights", "w.pt", "--data", "data.pt", "--sensitivity", "1.0",
                 "--epochs", "2", "--lr", "1e-3", "-q", "-o", "p.pt"]) == 0
    out = capsys.readouterr().out
    assert "retrained" in out and "%" in out
    pruned = torch.load(d / "p.pt", weights_only=True)
    zeros = [float((pruned[k] == 0).float().mean()) for k in ("1.weight", "3.weight")]
    assert all(z > 0.2 for z in zeros)  # masks held through the retraining
    assert main(["share", "sc_tiny_stages:tiny", "--weights", "p.pt", "--data", "data.pt", "--bits", "3",
                 "--epochs", "1", "-q", "-o", "s.pt"]) == 0
    shared = torch.load(d / "s.pt", weights_only=True)
    for k in ("1.weight", "3.weight"):
        w = shared[k]
        assert torch.unique(w[w != 0]).numel() <= 8
        assert torch.equal(w == 0, pruned[k] == 0)  # zeros kept
    assert main(["huffman-encode", "s.pt", "-o", "m.schf", "--model", "sc_tiny_stages:tiny"]) == 0
    assert (d / "m.schf").stat().st_size < (d / "s.pt").stat().st_size
    assert main(["huffman-decode", "m.schf", "-o", "back.pt", "--model", "sc_tiny_stages:tiny"]) == 0
    back = torch.load(d / "back.pt", weights_only=True)
    assert back.keys() == shared.keys() and all(torch.equal(back[k], shared[k]) for k in shared)
    assert all(torch.equal(v, shared[k]) for k, v in huffman_decode(d / "m.schf").items())
    capsys.readouterr()
    assert main(["compare-stages", "sc_tiny_stages:tiny", "--weights", "m.schf", "--input-shape", "1,1,4,4",
                 "--json", "stages.json"]) == 0
    printed = capsys.readouterr().out
    m = factory()
    m.load_state_dict(shared)
    ref = compare_stages(m.eval(), torch.zeros(1, 1, 4, 4))
    assert printed.strip() == str(ref).strip()
    assert json.loads((d / "stages.json").read_text())["totals"] == ref.totals()


def test_share_default_bits_and_errors(work, capsys):
    d, factory, model = work
    assert main(["share", "sc_tiny_stages:tiny", "--weights", "w.pt", "-o", "s5.pt"]) == 0
    ref = factory()
    ref.load_state_dict(model.state_dict())
    share_(ref)  # default 5 bits
    got = torch.load(d / "s5.pt", weights_only=True)
    assert all(torch.equal(got[k], v) for k, v in ref.state_dict().items())
    assert torch.unique(got["1.weight"]).numel() <= 32
    capsys.readouterr()
    assert main(["share", "sc_tiny_stages:tiny", "--weights", "w.pt", "--bits", "9", "-o", "x.pt"]) == 2
    assert "1 to 8" in capsys.readouterr().err and not (d / "x.pt").exists()
    assert main(["huffman-decode", "w.pt", "-o", "y.pt"]) == 2
    assert not (d / "y.pt").exists()


def test_share_accepts_parameter_names():
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 32))
    b = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 32))
    b.load_state_dict(a.state_dict())
    assert share_(a, {"1.weight": 2}) == share_(b, {"1": 2}) == {"1": 2}
    assert torch.equal(a[1].weight, b[1].weight)
    with pytest.raises(ValueError, match="no Conv1d/Conv2d/Linear layer named"):
        share_(a, {"2.weight": 2})
