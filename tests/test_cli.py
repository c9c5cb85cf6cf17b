"""The sparsecomp command line: emit, report, board, --help."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from sparsecomp import cli

FACTORY = textwrap.dedent(
    """
    import torch.nn as nn

    def tiny():
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))

    not_callable = 3
    """
)


@pytest.fixture
def factory(tmp_path, monkeypatch):
    (tmp_path / "cli_models_for_test.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    mod = importlib.import_module("cli_models_for_test")
    torch.manual_seed(0)
    model = mod.tiny()
    with torch.no_grad():
        model[3].weight[:, ::2] = 0
    torch.save(model.state_dict(), tmp_path / "w.pt")
    return tmp_path, model


@pytest.mark.parametrize("sub", [[], ["emit"], ["compress"], ["report"], ["board"], ["prune"], ["share"],
                                 ["huffman-encode"], ["huffman-decode"], ["compare-stages"]])
def test_help_on_every_subcommand(sub, capsys):
    with pytest.raises(SystemExit) as ei:
        cli.main([*sub, "--help"])
    assert ei.value.code == 0
    assert "usage: sparsecomp" in capsys.readouterr().out


def test_emit_then_report_then_build(factory, capsys):
    tmp, model = factory
    out = tmp / "emitted"
    rc = cli.main(["emit", "cli_models_for_test:tiny", "--weights", str(tmp / "w.pt"),
                   "--input-shape", "1,1,8,8", "-o", str(out), "--prefix", "tiny"])
    assert rc == 0
    text = capsys.readouterr().out
    from codegen import weight_bytes

    expected = weight_bytes(model, (1, 1, 8, 8)).total
    assert f"{expected} weight bytes" in text
    info = json.loads((out / "report.json").read_text())
    assert info["totals"]["weight_bytes"] == expected and info["prefix"] == "tiny"
    assert any(layer["format"] == "csr" for layer in info["layers"])
    run = subprocess.run(["make", "-s", "-C", str(out), "check"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    # a foreign non-empty directory is refused without --overwrite (codegen's rule), with a message
    foreign = tmp / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("user file")
    assert cli.main(["emit", "cli_models_for_test:tiny", "--input-shape", "1,1,8,8", "-o", str(foreign)]) == 2
    assert "overwrite" in capsys.readouterr().err.lower()
    assert (foreign / "mine.txt").read_text() == "user file"
    assert cli.main(["emit", "cli_models_for_test:tiny", "--input-shape", "1,1,8,8", "-o", str(out),
                     "--overwrite", "--representation", "dense", "--prefix", "tiny"]) == 0
    capsys.readouterr()
    assert cli.main(["report", str(out)]) == 0
    rep = capsys.readouterr().out
    assert "dense" in rep and "arena" in rep and "linear" in rep
    assert cli.main(["report", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["representation"] == "dense"


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["emit", "no_colon_here", "--input-shape", "1,4", "-o", "X"], "PACKAGE.MODULE:FACTORY"),
        (["emit", "no_such_module_xyz:f", "--input-shape", "1,4", "-o", "X"], "cannot import"),
        (["emit", "cli_models_for_test:missing", "--input-shape", "1,4", "-o", "X"], "no attribute"),
        (["emit", "cli_models_for_test:not_callable", "--input-shape", "1,4", "-o", "X"], "not callable"),
        (["emit", "cli_models_for_test:tiny", "--weights", "nope.pt", "--input-shape", "1,1,8,8", "-o", "X"],
         "does not exist"),
        (["report", "not_a_dir"], "report.json not found"),
    ],
)
def test_user_errors_exit_2_with_a_message(factory, argv, msg, capsys, monkeypatch):
    monkeypatch.chdir(factory[0])
    assert cli.main(argv) == 2
    assert msg in capsys.readouterr().err


def test_mismatched_weights(factory, capsys):
    tmp, _ = factory
    torch.save({"0.weight": torch.zeros(1)}, tmp / "bad.pt")
    rc = cli.main(["emit", "cli_models_for_test:tiny", "--weights", str(tmp / "bad.pt"),
                   "--input-shape", "1,1,8,8", "-o", str(tmp / "o")])
    assert rc == 2 and "does not match" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["emit", "cli_models_for_test:tiny", "--input-shape", "1,a", "-o", str(tmp / "o")])


def test_board_calls_codegen_board_lazily(tmp_path, monkeypatch):
    import codegen.board

    calls = []
    monkeypatch.setattr(codegen.board, "board_command",
                        lambda d, targets=("m4",), json_path=None: calls.append((d, targets, json_path)) or 1)
    assert cli.main(["board", str(tmp_path), "--target", "m3"]) == 1
    assert cli.main(["board", str(tmp_path), "--json", "b.json"]) == 1
    assert calls == [(str(tmp_path), ("m3",), None), (str(tmp_path), ("m4",), "b.json")]


def test_emit_arduino_layout(factory):
    tmp, _ = factory
    out = tmp / "ard"
    assert cli.main(["emit", "cli_models_for_test:tiny", "--weights", str(tmp / "w.pt"), "--input-shape", "1,1,8,8",
                     "-o", str(out), "--prefix", "tiny", "--arduino"]) == 0
    assert (out / "library.properties").read_text().startswith("name=tiny\n")
    assert (out / "src" / "model.c").read_bytes() == (out / "model.c").read_bytes()
    assert (out / "examples" / "tiny_run" / "tiny_run.ino").is_file() and (out / "CMakeLists.txt").is_file()


def test_module_entry_point_runs():
    run = subprocess.run([sys.executable, "-m", "sparsecomp.cli", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "emit" in run.stdout and "board" in run.stdout


BN_FACTORY = textwrap.dedent(
    """
    import torch
    import torch.nn as nn
    from torch.utils.data import DataLoader, TensorDataset

    def net():
        return nn.Sequential(nn.Conv2d(1, 6, 3, bias=False), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(),
                             nn.Linear(6 * 6 * 6, 32), nn.ReLU(), nn.Linear(32, 3))

    def loaders():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(96, 1, 8, 8, generator=g)
        y = (x[:, 0, :4].sum((1, 2)) > 0).long() + (x[:, 0, 4:].sum((1, 2)) > 2).long()
        mk = lambda a, b: DataLoader(TensorDataset(x[a:b], y[a:b]), batch_size=16)
        return mk(0, 64), mk(64, 80), mk(80, 96)
    """
)


def _trained_bn_factory(tmp_path, monkeypatch) -> None:
    """Writes cli_bn_models.py (importable) and w.pt, its net() trained 3 epochs."""
    (tmp_path / "cli_bn_models.py").write_text(BN_FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    mod = importlib.import_module("cli_bn_models")
    torch.manual_seed(0)
    model = mod.net()
    train, _, _ = mod.loaders()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(3):
        for x, y in train:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    torch.save(model.state_dict(), tmp_path / "w.pt")


@pytest.mark.parametrize("rep", ["int8", "csr"])
def test_compress_then_emit_end_to_end(rep, tmp_path, monkeypatch, capsys):
    """`sparsecomp compress` writes a state_dict of the factory's own structure (a BatchNorm the compressor
    folded becomes an exact identity) and the report; `sparsecomp emit` with the printed representation
    emits exactly the compressed bytes, within the budget, and its self-test passes."""
    import shutil

    _trained_bn_factory(tmp_path, monkeypatch)
    out = tmp_path / "comp"
    rc = cli.main(["compress", "cli_bn_models:net", "--weights", str(tmp_path / "w.pt"), "--data",
                   "cli_bn_models:loaders", "--budget", "2500B", "--representation", rep, "--epochs", "1",
                   "--out", str(out), "-q"])
    text = capsys.readouterr().out
    assert rc == 0, text
    info = json.loads((out / "report.json").read_text())
    assert info["emit"]["representation"] == rep and info["final_bytes"] <= 2500
    assert f"{rep}, from report.json" in text
    emitted = tmp_path / "c"
    # no --representation: emit reads the budgeted one from the report.json beside model.pt
    assert cli.main(["emit", "cli_bn_models:net", "--weights", str(out / "model.pt"), "--input-shape", "1,1,8,8",
                     "-o", str(emitted)]) == 0
    text = capsys.readouterr().out
    assert f"as {rep}: {info['final_bytes']} weight bytes" in text and "the compressor budgeted" in text
    # a report naming no known representation is a clear error, not a silent csr emission
    bad = json.loads((out / "report.json").read_text())
    bad["emit"]["representation"] = "zip"
    (out / "report.json").write_text(json.dumps(bad))
    assert cli.main(["emit", "cli_bn_models:net", "--weights", str(out / "model.pt"), "--input-shape", "1,1,8,8",
                     "-o", str(tmp_path / "c2")]) == 2
    assert "'zip'" in capsys.readouterr().err
    if shutil.which("make") and (shutil.which("cc") or shutil.which("gcc")):
        run = subprocess.run(["make", "-s", "-C", str(emitted), "check"], capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr


def test_compress_auto_finalists_option(tmp_path, monkeypatch, capsys):
    """`--finalists N` bounds how many of auto's probed representations run in full; 0 is refused."""
    _trained_bn_factory(tmp_path, monkeypatch)
    argv = ["compress", "cli_bn_models:net", "--weights", str(tmp_path / "w.pt"), "--data", "cli_bn_models:loaders",
            "--budget", "2500B", "--epochs", "1", "-q"]
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--out", str(tmp_path / "bad"), "--finalists", "0"])
    assert exc.value.code == 2
    assert "--finalists" in capsys.readouterr().err
    assert cli.main([*argv, "--out", str(tmp_path / "a"), "--finalists", "1"]) == 0, capsys.readouterr().out
    info = json.loads((tmp_path / "a" / "report.json").read_text())
    ran = [f for f in info["finalists"] if f["val_accuracy"] is not None]
    assert len(ran) == 1 and info["final_bytes"] <= 2500
    assert ran[0]["representation"] == info["emit"]["representation"] or info["emit"]["representation"] == "auto"


def test_compress_bad_input_is_one_line(tmp_path, factory, capsys):
    tmp, _ = factory
    argv = ["compress", "cli_models_for_test:tiny", "--weights", str(tmp / "w.pt"), "--budget", "1KB",
            "--out", str(tmp / "o")]
    assert cli.main([*argv, "--data", str(tmp / "missing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    torch.save({"x": torch.randn(4, 1, 8, 8)}, tmp / "d.pt")
    assert cli.main([*argv, "--data", str(tmp / "d.pt")]) == 2
    assert "'y'" in capsys.readouterr().err


def test_emit_quantize_folds_and_quantizes_a_copy(factory, capsys):
    tmp, model = factory
    out = tmp / "q"
    args = ["emit", "cli_models_for_test:tiny", "--weights", str(tmp / "w.pt"), "--input-shape", "1,1,8,8",
            "-o", str(out), "--representation", "int8"]  # fmt: skip
    assert cli.main(args) == 2  # a float model is not on an int8 grid: refused without --quantize
    assert "int8" in capsys.readouterr().err
    assert cli.main([*args, "--quantize"]) == 0
    text = capsys.readouterr().out
    q = json.loads((out / "report.json").read_text())["quantization"]
    assert f"max abs error against the float model {q['max_abs_error_vs_float']:.3g}" in text
    assert q["weights"] == "int8 per output channel" and q["max_abs_error_vs_float"] > 0
    run = subprocess.run(["make", "-s", "-C", str(out), "check"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
