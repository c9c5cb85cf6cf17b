"""Early-exit models (sparsecomp.early_exit) and their emission (codegen.early_exit).

For every exit k the C (one shot and incremental) agrees with the PyTorch exit model at exit k, on
the host and on the emulated Cortex-M4/M3; the full path agrees with the baseline; the backbone's
weights are in the firmware once; one arena holds everything; a stage cut by a power loss is redone
with the same result; bad exit indices and exit points give clear errors.

The test backbone has a residual block read across a stage boundary, an in-place BatchNorm, an exit
after a container module, uneven adaptive pooling windows (8x8 -> 3x3) and a flat exit (no pooling).
Board tests skip without arm-none-eabi-gcc/QEMU unless SPARSECOMP_REQUIRE_BOARD=1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import assert_parity, randomize_batchnorm

from codegen import CodegenError, save_compressed_model
from codegen.early_exit import compile_early_exit, save_compressed_early_exit_model, verify_early_exit
from sparsecomp.early_exit import build_exit_model, evaluate_exits, simulate_exit, train_exits

EXITS = ["relu", "block1", "relu3"]
POOLS = [3, 2, None]


class Block(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        y = F.relu(self.bn(self.conv1(x)))
        return F.relu(self.conv2(y) + x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.block1 = Block(8)
        self.pool = nn.MaxPool2d(2)
        self.bn = nn.BatchNorm2d(8)  # after a pool: not folded, runs in place
        self.conv3 = nn.Conv2d(8, 16, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = self.block1(self.relu(self.stem(x)))
        x = self.relu3(self.conv3(self.bn(self.pool(x))))
        return self.fc(torch.flatten(x, 1))


def make_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_batchnorm(Net(), seed).eval()


def make_exit_model(net: nn.Module, kind: str, **kw):
    ee = build_exit_model(net, EXITS, (1, 1, 8, 8), kind, POOLS, hidden=16, **kw)
    with torch.no_grad():  # heads with weights of the size a trained head has
        for p in ee.parameters():
            if not any(p is q for q in net.parameters()):
                p.normal_(0.0, 0.3)
    return ee.eval()


def inputs(n: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.randn((n, 1, 8, 8), generator=torch.Generator().manual_seed(seed))


def require_board() -> None:
    from codegen import board

    ok, reason = board.board_toolchain_available()
    if ok:
        return
    if os.environ.get("SPARSECOMP_REQUIRE_BOARD") == "1":
        pytest.fail(f"Cortex-M board toolchain not available: {reason} (SPARSECOMP_REQUIRE_BOARD=1)")
    pytest.skip(f"Cortex-M board toolchain not available: {reason}")


@pytest.fixture(scope="module", params=["global", "branch"])
def emitted(request, tmp_path_factory):
    kind = request.param
    net = make_net()
    ee = make_exit_model(net, kind)
    x = inputs()
    d = tmp_path_factory.mktemp(f"ee_{kind}") / "model"
    res = save_compressed_early_exit_model(net, ee, "csr", simulate_exit=simulate_exit, input_data=x[:1], directory=d)
    return kind, net, ee, x, d, res


# ---- Python side -----------------------------------------------------------------------------------
def test_simulate_exit_masks_the_features_after_the_exit():
    feats = [torch.ones(2, 3), torch.ones(2, 4), torch.ones(2, 5)]
    masked, k = simulate_exit(feats, 1)
    assert k == 1 and [float(f.sum()) for f in masked] == [6.0, 8.0, 0.0]
    assert simulate_exit(feats)[1] == 2  # evaluation: the last exit
    gen = torch.Generator().manual_seed(0)
    taken = {simulate_exit(feats, training=True, generator=gen)[1] for _ in range(60)}
    assert taken == {0, 1, 2}  # training: a random exit per call (batch)
    with pytest.raises(ValueError, match="outside 0..2"):
        simulate_exit(feats, 3)


def test_exit_model_shapes_and_full_path():
    net = make_net()
    ee = make_exit_model(net, "global")
    assert ee.feature_sizes == [8 * 9, 8 * 4, 16 * 16]
    x = inputs(3)
    with torch.no_grad():
        outs = ee.forward_all(x)
        assert len(outs) == 4 and all(o.shape == (3, 10) for o in outs)
        torch.testing.assert_close(outs[-1], net(x), rtol=0, atol=0)
        for k in range(3):
            torch.testing.assert_close(ee(x, exit_index=k), outs[k])
    with pytest.raises(ValueError, match="outside 0..3"):
        ee(x, exit_index=4)
    with pytest.raises(ValueError, match="outside 0..3"):
        ee(x, exit_index=-1)


def test_train_exits_freezes_the_backbone_and_learns():
    net = make_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ee = build_exit_model(net, EXITS, (1, 1, 8, 8), "global", POOLS)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 8, 8, generator=gen)
    y = net(x).argmax(1).detach()  # learnable targets: the backbone's own answers
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    losses = train_exits(ee, loader, epochs=6, lr=1e-2)
    assert losses[-1] < losses[0]
    for k, v in net.state_dict().items():  # weights and BatchNorm statistics untouched
        assert torch.equal(v, before[k]), k
    res = evaluate_exits(ee, loader)
    assert [r.exit for r in res] == [0, 1, 2, 3] and res[-1].name == "full"
    assert res[-1].accuracy == 1.0
    macs = [r.macs for r in res]
    assert macs[0] < macs[1] < macs[2]  # exits cost more the later they are
    assert all(0.0 <= r.accuracy <= 1.0 for r in res)


# ---- errors ----------------------------------------------------------------------------------------
def test_exit_point_that_does_not_exist():
    with pytest.raises(CodegenError, match=r"exit point 'block9' does not exist.*Modules: .*block1\.conv1"):
        build_exit_model(make_net(), ["relu", "block9"], (1, 1, 8, 8))


def test_exit_point_fused_away_names_the_layer_to_use():
    with pytest.raises(CodegenError, match=r"exit point 'stem' .*fused.*'relu'"):
        build_exit_model(make_net(), ["stem", "block1"], (1, 1, 8, 8))
    with pytest.raises(CodegenError, match=r"exit point 'block1.bn' .*fused"):
        build_exit_model(make_net(), ["block1.bn"], (1, 1, 8, 8))


def test_exit_points_out_of_order_and_bad_pool():
    with pytest.raises(CodegenError, match="execution order"):
        build_exit_model(make_net(), ["block1", "relu"], (1, 1, 8, 8))
    with pytest.raises(CodegenError, match="execution order"):
        build_exit_model(make_net(), ["relu", "relu"], (1, 1, 8, 8))
    with pytest.raises(ValueError, match="larger than its feature map"):
        build_exit_model(make_net(), ["relu3"], (1, 1, 8, 8), pool_size=5)
    with pytest.raises(ValueError, match="one pool size per exit"):
        build_exit_model(make_net(), EXITS, (1, 1, 8, 8), pool_size=[2, 2])


def test_emission_refuses_a_different_backbone_and_a_foreign_simulate_exit(tmp_path):
    net = make_net()
    ee = make_exit_model(net, "global")
    other = make_net(seed=1)
    x = inputs(1)
    with pytest.raises(CodegenError, match="differs from the baseline at 'stem.weight'"):
        save_compressed_early_exit_model(other, ee, "csr", input_data=x, directory=tmp_path / "a")

    def scaled(features, exit_index=None, training=False, generator=None):
        masked, k = simulate_exit(features, exit_index, training=training)
        return [f * 0.5 for f in masked], k

    with pytest.raises(CodegenError, match="simulate_exit at exit 0 .*differ from what the C computes"):
        save_compressed_early_exit_model(net, ee, "csr", simulate_exit=scaled, input_data=x, directory=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ---- C on the host ---------------------------------------------------------------------------------
def test_every_exit_matches_pytorch_one_shot_and_incremental(emitted):
    kind, net, ee, x, d, _ = emitted
    v = verify_early_exit(net, ee, d, x)
    for k in range(len(EXITS) + 1):
        assert_parity(v.oneshot[k], v.reference[k], f"{kind} exit {k} one shot")
        assert_parity(v.incremental[k], v.reference[k], f"{kind} exit {k} incremental")
        assert np.array_equal(v.incremental[k], v.oneshot[k])  # the same computation
    assert_parity(v.baseline, v.baseline_reference, "baseline")
    assert np.array_equal(v.oneshot[-1], v.baseline)  # the full path is the baseline
    # the exits answer differently (they are not all the same head/feature)
    assert not np.allclose(v.reference[0], v.reference[1])


def test_selftest_passes_with_werror(emitted):
    kind, *_, d, _ = emitted
    proc = subprocess.run(["make", "-C", str(d), "check"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "-Werror" in proc.stdout and "model_ee.c" in proc.stdout
    assert "SC_PASS" in proc.stdout and "SC_EE_CHECK_FAILED" not in proc.stdout
    assert len(re.findall(r"^SC_EE_EXIT \d", proc.stdout, re.MULTILINE)) == len(EXITS) + 1


def _nm(binary: Path, tool: str = "nm") -> dict[str, list[int]]:
    out = subprocess.run([tool, "-S", str(binary)], capture_output=True, text=True, check=True).stdout
    syms: dict[str, list[int]] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4:
            syms.setdefault(parts[3], []).append(int(parts[1], 16))
    return syms


def _macros(path: Path, prefix: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(rf"#define\s+{prefix}_(\w+)\s+(\d+)\b", path.read_text())}


def _weight_arrays(report: dict) -> tuple[list[str], list[str]]:
    base = [a["name"] for ly in report["layers"] for a in ly["arrays"]]
    ee = [a["name"] for h in report["early_exit"]["heads"] for a in h["arrays"]]
    return base, ee


def test_weights_once_bytes_add_up_and_one_arena(emitted, tmp_path):
    kind, net, ee, x, d, res = emitted
    rep = json.loads((d / "report.json").read_text())
    exe = compile_early_exit(d, tmp_path)
    syms = _nm(exe)
    base, heads = _weight_arrays(rep)
    assert base and heads and not set(base) & set(heads)
    for name in base + heads:
        assert len(syms.get(name, [])) == 1, f"{name} defined {len(syms.get(name, []))} times"
    m, e = _macros(d / "model.h", "MODEL"), _macros(d / "model_ee.h", "MODEL_EE")
    assert sum(syms[n][0] for n in base) == m["WEIGHT_BYTES"] == rep["totals"]["weight_bytes"]
    assert sum(syms[n][0] for n in heads) == e["WEIGHT_BYTES"] == res.ee_weight_bytes
    # the exit part has no weights of the backbone and no copy of its arrays
    assert not any(n in (d / "model_ee.c").read_text() for n in base)
    # ONE arena: model.c's, holding the exit buffers too; model_ee.c only adds the 8-byte step state
    assert e["ARENA_BYTES"] == m["ARENA_BYTES"] == rep["memory"]["arena_bytes"] == syms["model_arena"][0]
    ar = rep["early_exit"]["arena"]
    assert ar["features_offset"] + 4 * e["FEATURES"] <= m["ARENA_BYTES"]
    assert ar["baseline_arena_bytes"] <= m["ARENA_BYTES"]
    state = [n for n in syms if n.startswith("model_ee_") and not n.startswith("model_ee_" + ("gnet" if kind == "global" else "exit"))]
    assert "model_ee_state" in state and syms["model_ee_state"] == [8]


def test_layout_is_the_seeds(emitted):
    """SparseComp's layout for exit models: model.c/.h, model_ee.c/.h, headers/<layer>.h of the backbone with
    headers.h, headers/<head>_ee.h of the exit part with headers_ee.h (which includes them all)."""
    kind, net, ee, x, d, res = emitted
    for f in ("model.c", "model.h", "model_ee.c", "model_ee.h", "headers/headers.h", "headers/headers_ee.h"):
        assert (d / f).is_file(), f
    rep = json.loads((d / "report.json").read_text())
    heads = [h["name"] for h in rep["early_exit"]["heads"]]
    ee_text = (d / "headers" / "headers_ee.h").read_text()
    for h in heads:
        assert (d / "headers" / f"{h}_ee.h").is_file()
        assert f'#include "{h}_ee.h"' in ee_text
        assert f"{h}_ee.h" not in (d / "headers" / "headers.h").read_text()
    assert not list((d / "headers").glob("ee_*.h"))


def test_power_loss_mid_stage_redoes_the_stage(emitted, tmp_path):
    """Before every step, the stage also runs once more "uncommitted" (as when power is lost after
    the stage ran but before the step counter was written): the answers must not change."""
    kind, net, ee, x, d, _ = emitted
    rep = json.loads((d / "report.json").read_text())
    ar = rep["early_exit"]["arena"]
    driver = f"""
#include <stdio.h>
#include <string.h>
#include "model.h"
#include "model_ee.h"
#include "headers/input.h"
int main(void)
{{
    static float ref[MODEL_EE_OUTPUT_SIZE], out[MODEL_EE_OUTPUT_SIZE];
    int k, s, bad = 0;
    for (k = 0; k <= MODEL_EE_FULL; ++k) {{
        int need = k == MODEL_EE_FULL ? MODEL_EE_NUM_STAGES : k + 1;
        if (model_ee_run(model_test_input, ref, k) != 0) return 2;
        model_ee_begin(model_test_input);
        for (s = 0; s < need; ++s) {{
            float *a = model_stage_arena();
            if (model_stage(s, a + {ar['input_offset'] // 4}, a + {ar['output_offset'] // 4}) != 0) return 2;
            if (model_ee_progress() != s) return 3;
            if (model_ee_step() < 0) return 2;
        }}
        if (k == MODEL_EE_FULL || k + 1 < MODEL_EE_NUM_STAGES) {{
            if (model_ee_exit(out) != k) return 4;
            if (memcmp(out, ref, sizeof out) != 0) {{ printf("exit %d differs\\n", k); bad = 1; }}
        }}
    }}
    return bad;
}}
"""
    (tmp_path / "d.c").write_text(driver)
    exe = tmp_path / "d"
    subprocess.run(["cc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{d}", str(d / "model.c"),
                    str(d / "model_ee.c"), str(tmp_path / "d.c"), "-o", str(exe), "-lm"], check=True)  # fmt: skip
    proc = subprocess.run([str(exe)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_stage_plan_keeps_cross_stage_reads_intact(emitted):
    """Every arena buffer read by a later stage lives to the end of the reading stage (report check)."""
    *_, res = emitted
    rep = res.report
    stages = rep["early_exit"]["stages"]
    assert [s["exit"] for s in stages] == [0, 1, 2, None]
    assert stages[1]["layers"][:2] == ["block1.conv1", "block1.conv2"]
    bufs = {b["name"]: b for b in rep["memory"]["buffers"]}
    assert {"ee_input", "ee_output", "ee_features"} <= set(bufs)
    assert bufs["ee_features"]["first"] == -1 and bufs["ee_features"]["last"] == 2 * len(rep["layers"]) + 1
    # no two buffers alive at the same time overlap
    items = list(bufs.values())
    for i, a in enumerate(items):
        for b in items[i + 1 :]:
            if a["last"] < b["first"] or b["last"] < a["first"]:
                continue
            assert a["offset"] + a["bytes"] <= b["offset"] or b["offset"] + b["bytes"] <= a["offset"], (a, b)


def test_exit_at_the_last_layer(tmp_path):
    """No stage after the last exit: its one-shot answer is the head's; incrementally, once every
    stage is done the device answers with the full path (the backbone's output)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10)).eval()
    ee = build_exit_model(net, ["1", "3"], (1, 1, 8, 8), "branch", [2, None], hidden=0)
    x = inputs(3)
    save_compressed_early_exit_model(net, ee, "dense", input_data=x[:1], directory=tmp_path / "m")
    rep = json.loads((tmp_path / "m" / "report.json").read_text())
    assert rep["early_exit"]["num_stages"] == 2
    v = verify_early_exit(net, ee, tmp_path / "m", x)
    for k in range(3):
        assert_parity(v.oneshot[k], v.reference[k], f"exit {k}")
    assert np.array_equal(v.incremental[1], v.baseline)
    proc = subprocess.run(["make", "-C", str(tmp_path / "m"), "check"], capture_output=True, text=True)
    assert proc.returncode == 0 and "SC_PASS" in proc.stdout, proc.stdout[-2000:]


def test_fx_node_names_as_exit_points_and_prefix(tmp_path):
    net = make_net()
    ee = build_exit_model(net, ["relu", "relu_1", "relu3"], (1, 1, 8, 8), "global", POOLS)  # relu_1: block1's output
    assert ee.exit_nodes[1] == "relu_1"
    x = inputs(2)
    res = save_compressed_early_exit_model(net, ee, "csr", input_data=x[:1], directory=tmp_path / "k", prefix="kws")
    text = (tmp_path / "k" / "model_ee.h").read_text()
    assert "int kws_ee_run(const float *input, float *output, int exit_index);" in text
    assert "#ifndef KWS_EE_H" in text
    proc = subprocess.run(["make", "-C", str(tmp_path / "k"), "check"], capture_output=True, text=True)
    assert proc.returncode == 0 and "SC_PASS" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert res.report["early_exit"]["exits"][1]["fx_node"] == "relu_1"


def test_deterministic_and_ordinary_emission_unchanged(tmp_path):
    net = make_net()
    ee = make_exit_model(net, "global")
    x = inputs(1)
    for name in ("a", "b"):
        save_compressed_early_exit_model(net, ee, "csr", input_data=x, directory=tmp_path / name)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert Path("model_ee.c") in files and Path("headers/gnet_ee.h") in files and Path("headers/headers_ee.h") in files
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    # the plain emission of the same backbone knows nothing of stages
    save_compressed_model(net, "csr", input_data=x, directory=tmp_path / "plain")
    plain = (tmp_path / "plain" / "model.c").read_text()
    assert "model_stage" not in plain and "SC_NVM" not in plain
    assert "MODEL_SRCS := model.c\n" in (tmp_path / "plain" / "Makefile").read_text()
    staged = (tmp_path / "a" / "model.c").read_text()
    assert "SC_NVM" in staged and "int model_stage(int stage" in staged


# ---- the emulated board ------------------------------------------------------------------------------
@pytest.mark.board
@pytest.mark.parametrize("target", ["m4", "m3"])
def test_every_exit_on_the_board(emitted, target):
    require_board()
    from codegen import board

    kind, net, ee, x, d, res = emitted
    r = board.run(d, target)
    assert r.passed, r.stdout[-3000:] + r.stderr[-2000:]
    with torch.no_grad():
        ref = np.stack([ee(x[:1], exit_index=k).numpy().reshape(-1) for k in range(len(EXITS) + 1)])
    got = r.outputs.reshape(len(EXITS) + 1, -1)
    for k in range(len(EXITS) + 1):
        assert_parity(got[k], ref[k], f"{kind} exit {k} on {target}")
    assert re.search(r"^SC_BASE_MAX_ABS_ERROR", r.stdout, re.MULTILINE)
    if target == "m4":  # backbone weight symbols once in the firmware; bytes add up
        elf = d / board.TARGETS[target].build_dir / "model.elf"
        syms = _nm(elf, "arm-none-eabi-nm")
        base, heads = _weight_arrays(res.report)
        assert all(len(syms.get(n, [])) == 1 for n in base + heads)
        m, e = _macros(d / "model.h", "MODEL"), _macros(d / "model_ee.h", "MODEL_EE")
        assert sum(syms[n][0] for n in base + heads) == m["WEIGHT_BYTES"] + e["WEIGHT_BYTES"]


@pytest.mark.board
def test_instructions_per_exit_grow_with_the_exit(emitted):
    require_board()
    from codegen import board

    kind, *_, d, _ = emitted
    elf = board.build(d, "m4", profile=True)
    r = board.run_elf(elf, "m4", icount=True)
    assert r.exit_code == 0, r.stdout[-2000:]
    ticks = [int(t) for _, t in sorted((int(k), t) for k, t in re.findall(r"^SC_EE_TICKS (\d+) (\d+)", r.stdout, re.MULTILINE))]
    assert len(ticks) == len(EXITS) + 1
    assert ticks[0] < ticks[1] < ticks[2] and ticks[0] < ticks[-1] / 2  # exit 2's head can cost more than the rest
    shutil.rmtree(d / "build" / "m4-profile", ignore_errors=True)


@pytest.mark.board
def test_flash_and_ram_measured_against_a_stubbed_baseline(emitted):
    """`make size` / board.measure work in an early-exit directory: the baseline firmware stubs the
    <prefix>_ee_* API too (app/baseline_ee.c), and the weights counted are backbone + exit heads."""
    require_board()
    from codegen import board

    kind, *_, d, res = emitted
    m = board.measure(d, instructions=False)
    mm, e = _macros(d / "model.h", "MODEL"), _macros(d / "model_ee.h", "MODEL_EE")
    assert m.weight_bytes == m.weight_bytes_nm == mm["WEIGHT_BYTES"] + e["WEIGHT_BYTES"]
    assert 0 < m.code_bytes < m.weight_bytes
    assert m.arena_bytes == e["ARENA_BYTES"] and 0 <= m.other_ram_bytes <= 256
    proc = subprocess.run(["make", "-C", str(d), "size"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "model (code+weights+arena)" in proc.stdout


def test_lowering_is_the_one_codegen_uses():
    """codegen.early_exit lowers with lower_with_env (to map fx nodes to IR values): same IR as lower()."""
    from codegen import build_graph
    from codegen.early_exit import analyze_backbone

    net = make_net()
    g, _ = build_graph(net, (1, 1, 8, 8))
    an = analyze_backbone(net, (1, 1, 8, 8), EXITS)
    assert [(op.name, op.inputs, op.output) for op in an.graph.ops] == [(op.name, op.inputs, op.output) for op in g.ops]


# ---- compressing an exit model: the heads' bytes are in the budget (issue 18 item 5) -----------------
class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * 4 * 4, 4)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.pool(self.relu2(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


@pytest.mark.parametrize("rep, kind", [("csr", "branch"), ("int8", "global"), ("codebook", "branch"),
                                       ("auto", "global")])
def test_compressing_the_exit_model_counts_its_heads_in_the_budget(rep, kind, tmp_path):
    """compress_NN_models(exit_model, budget): backbone + exit heads <= budget, the heads retrained on the
    compressed backbone and stored as the representation holds them; save_compressed_early_exit_model with
    no representation emits exactly those bytes (nm of model.o + model_ee.o), and the C matches PyTorch at
    every exit.  Passing the backbone alone budgets the backbone only (the heads are not counted)."""
    from torch.utils.data import DataLoader, TensorDataset

    from codegen import weight_bytes
    from codegen.early_exit import exit_weight_bytes
    from sparsecomp import compress_NN_models

    torch.manual_seed(0)
    net = randomize_batchnorm(SmallNet(), 0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].mean((1, 2)) > 0).long() + 2 * (x[:, 0, 4:].mean((1, 2)) > 0).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    ee = build_exit_model(net, ["relu1", "pool"], (1, 1, 8, 8), kind, 2, hidden=8)
    train_exits(ee, loader, epochs=1)
    float_total = weight_bytes(net.eval(), x[:1], "csr").total + exit_weight_bytes(ee, "csr")
    budget = int(float_total * 0.4)
    report = compress_NN_models(ee, f"{budget}B", loader, loader, val_loader=loader, representation=rep,
                                layers_factorization=False, num_epochs=1, max_rounds=1, sensitivity_batches=1,
                                quant_epochs=1, progress=False, sensitivity_sparsities=(0.5, 0.9))
    assert report.final_bytes <= budget == report.target_bytes
    assert report.exit_heads_bytes and report.exit_heads_bytes < report.final_bytes
    assert "exit heads" in str(report)
    d = tmp_path / "ee"
    res = save_compressed_early_exit_model(ee.backbone, ee, input_data=x[:1], directory=d)
    assert res.weight_bytes + res.ee_weight_bytes == report.final_bytes
    assert res.ee_weight_bytes == report.exit_heads_bytes
    syms = _nm(compile_early_exit(d, tmp_path))
    base, heads = _weight_arrays(json.loads((d / "report.json").read_text()))
    assert sum(syms[n][0] for n in base + heads) == report.final_bytes
    v = verify_early_exit(ee.backbone, ee, d, x[:8])
    for k in range(3):
        assert_parity(v.oneshot[k], v.reference[k], f"{rep} exit {k}")
    proc = subprocess.run(["make", "-C", str(d), "check"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "SC_PASS" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the backbone alone: its budget is its own
    net2 = randomize_batchnorm(SmallNet(), 0)
    r2 = compress_NN_models(net2, f"{budget}B", loader, loader, val_loader=loader, representation=rep,
                            layers_factorization=False, num_epochs=1, max_rounds=1, sensitivity_batches=1,
                            quant_epochs=1, progress=False, sensitivity_sparsities=(0.5, 0.9))
    assert r2.exit_heads_bytes is None and r2.final_bytes <= budget
