"""The benchmark suite: one entry point, one results file, one page.

    make bench          # = .venv/bin/python benchmarks/run.py --mode full
    make bench-quick    # = .venv/bin/python benchmarks/run.py --mode quick   (a few minutes)
    python benchmarks/run.py --render-only      # redraw docs/ from docs/results.json

Writes ``docs/results.json`` (every number, with the settings and the command that produced it),
``docs/benchmarks.md`` (rendered from that JSON only, so no figure on the page is typed by hand)
and PNG plots under ``docs/img/``.  ``--out DIR`` writes them elsewhere (DIR/results.json,
DIR/benchmarks.md, DIR/img/).

What it measures:

1. Accuracy vs exact emitted weight bytes on MNIST (LeNet-300-100, LeNet-5 Caffe), one curve per
   representation (csr / int8 / codebook / auto), each point = ``compress_NN_models`` to a budget,
   then ``save_compressed_model`` (the emitted MODEL_WEIGHT_BYTES is the x value) and the test
   accuracy of exactly those weights.  Deep Compression's published points are drawn beside them.
2. Per model and representation, dense float32 as the baseline row: flash (weights / code),
   RAM (arena vs the planner's lower bound) and instructions per inference on the emulated
   Cortex-M4F (``codegen.board.measure``: QEMU mps2-an386, -icount, -O2).  Models: the MNIST
   models at the budget nearest Deep Compression's point, the bundled digits CNN (sklearn
   digits) and, on synthetic data of the right shape (footprint and speed only, their accuracy
   means nothing), the keyword-spotting DS-CNN and the 1-D sensor CNN of tests/models.py.
3. Wall time: compression, code generation, host gcc build + self-test, Cortex-M4 build.
4. Exact bytes of every weight encoding (``benchmarks/encodings_m4.byte_table``).

Float models are trained once per (model, epochs, train size) and cached in WORKDIR
(default out/bench/<mode>/).  Sizes are set by --mode and can be overridden (--budgets,
--epochs, ...); the page states the settings of the run that wrote it.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import re
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

log = logging.getLogger("bench")

REPRESENTATIONS = ["csr", "int8", "codebook", "auto"]  # --reps narrows it
# Deep Compression (Han, Mao, Dally, ICLR 2016), Table 1: pruning + quantization, before Huffman.
DEEP_COMPRESSION = {
    "lenet300": {"bytes": 27_000, "accuracy": 0.9842, "label": "Deep Compression (27 KB, 98.42%)"},
    "lenet5": {"bytes": 44_000, "accuracy": 0.9926, "label": "Deep Compression (44 KB, 99.26%)"},
}
TITLES = {"lenet300": "LeNet-300-100", "lenet5": "LeNet-5 (Caffe)", "digits_cnn": "digits CNN",
          "ds_cnn": "DS-CNN (KWS, synthetic)", "conv1d_sensor": "1-D sensor CNN (synthetic)"}

MODES: dict[str, dict] = {
    "quick": {
        "mnist_models": ["lenet300", "lenet5"],
        "budgets": {"lenet300": [27], "lenet5": [44]},  # KB (1000 bytes)
        "limit_train": 10_000, "epochs": 1, "compress_epochs": 1, "max_rounds": 1, "max_batches": 25,
        "quant_epochs": 1, "time_limit": 120, "tolerance": 0.005, "analysis_batches": 2,
        "small_models": ["digits_cnn", "ds_cnn", "conv1d_sensor"], "small_ratio": 8, "small_epochs": 3,
        "synthetic_samples": 512,
    },
    "full": {
        "mnist_models": ["lenet300", "lenet5"],
        "budgets": {"lenet300": [100, 50, 27, 14, 8], "lenet5": [88, 44, 22]},
        "limit_train": None, "epochs": 3, "compress_epochs": 2, "max_rounds": 2, "max_batches": 100,
        "quant_epochs": 1, "time_limit": 150, "tolerance": 0.005, "analysis_batches": 3,
        "small_models": ["digits_cnn", "ds_cnn", "conv1d_sensor"], "small_ratio": 8, "small_epochs": 30,
        "synthetic_samples": 2048,
        # LeNet-300-100 is cheap: fine-tune it on every batch (LeNet-5 keeps max_batches)
        "per_model": {"lenet300": {"max_batches": None}},
    },
}


# ---- environment ----------------------------------------------------------------------------------


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "not found"


def environment() -> dict:
    cpu = "unknown"
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        cpu = m.group(1).strip() if m else platform.processor() or "unknown"
    except OSError:
        pass
    mem = None
    try:
        m = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
        mem = round(int(m.group(1)) / 1024**2, 1) if m else None
    except OSError:
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    commit = _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return {
        "cores": os.cpu_count(), "cpu": cpu, "memory_gib": mem, "load_average_at_start": None if load is None else round(load, 1),
        "os": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gcc": _first_line(["gcc", "--version"]), "arm_none_eabi_gcc": _first_line(["arm-none-eabi-gcc", "--version"]),
        "qemu": _first_line(["qemu-system-arm", "--version"]),
        "git_commit": commit + (" (working tree had uncommitted changes)" if dirty else ""),
        "uncommitted_files": sorted(line[3:] for line in dirty.splitlines()),
    }  # fmt: skip


# ---- models and data -----------------------------------------------------------------------------


def synthetic_loaders(model: torch.nn.Module, shape: tuple[int, ...], n: int, seed: int = 0):
    """Random inputs of ``shape`` labelled by a random-weight teacher of the same architecture
    (so there is something to fit); train/val/test loaders.  For footprint and speed only."""
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *shape[1:]), generator=g)
    teacher = copy.deepcopy(model).eval()
    with torch.no_grad():
        y = teacher(x).argmax(1)
    a, b = int(n * 0.7), int(n * 0.85)
    return (DataLoader(TensorDataset(x[:a], y[:a]), batch_size=64, shuffle=True, generator=g),
            DataLoader(TensorDataset(x[a:b], y[a:b]), batch_size=256),
            DataLoader(TensorDataset(x[b:], y[b:]), batch_size=256))  # fmt: skip


def mnist_model(name: str, data, cfg: dict, work: Path) -> tuple[torch.nn.Module, bool]:
    from compress_mnist import train_or_load  # benchmarks/compress_mnist.py

    tag = f"{name}_e{cfg['epochs']}_n{cfg['limit_train'] or 'all'}.pt"
    cached = (work / tag).exists()
    return train_or_load(name, data[0], work / tag, cfg["epochs"]), cached


def small_model(name: str, cfg: dict):
    """(float model, loaders, example input, synthetic?) for the non-MNIST models."""
    from sparsecomp.models import digits_cnn, train_classifier

    if name == "digits_cnn":
        from sparsecomp.data import load_digits

        data = load_digits(seed=0)
        torch.manual_seed(0)
        model = digits_cnn()
        train_classifier(model, data[0], cfg["small_epochs"], lr=3e-3, progress=False)
        return model.eval(), data, data[2].dataset.tensors[0][:1], False
    import models  # tests/models.py

    factory, shape = models.E2E_MODELS[name]
    torch.manual_seed(0)
    model = factory()
    data = synthetic_loaders(model, shape, cfg["synthetic_samples"])
    torch.manual_seed(1)
    model = factory()
    train_classifier(model, data[0], 1, lr=1e-3, progress=False)
    return model.eval(), data, data[2].dataset.tensors[0][:1], True


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- one point: compress, emit, build, measure -----------------------------------------------------


def analyses(model, val, cfg: dict) -> tuple[object, dict, float]:
    """Pruning sensitivity and per-layer codebook bits of the float model, computed once per model
    (``compress_NN_models`` would recompute them at every budget; they do not depend on it)."""
    from sparsecomp.bits import bits_analysis
    from sparsecomp.sensitivity import sensitivity_analysis

    t = time.monotonic()
    nb = cfg["analysis_batches"]
    sens = sensitivity_analysis(model, val, max_batches=nb, progress=False)
    res = bits_analysis(model, val, (8, 7, 6, 5, 4, 3, 2), max_batches=nb, progress=False)
    bits = {n: res.smallest_bits(n, cfg["tolerance"] / 2) for n in res.curves}
    return sens, {n: b for n, b in bits.items() if b is not None}, time.monotonic() - t


def compress_point(model, budget_bytes: int, rep: str, data, cfg: dict, sens=None,
                   bits: dict | None = None) -> tuple[torch.nn.Module, dict]:
    from sparsecomp import compress_NN_models

    train, val, test = data
    m = copy.deepcopy(model)
    t = time.monotonic()
    r = compress_NN_models(m, f"{budget_bytes}B", train, test, val_loader=val, representation=rep,
                           num_epochs=cfg["compress_epochs"], max_rounds=cfg["max_rounds"],
                           accuracy_tolerance=cfg["tolerance"], layers_factorization=False,
                           quant_epochs=cfg["quant_epochs"], max_batches_per_epoch=cfg["max_batches"],
                           time_limit=cfg["time_limit"], progress=False, sensitivity=sens,
                           sensitivity_batches=cfg["analysis_batches"],
                           bits=(bits or None) if rep in ("codebook", "auto") else None)  # fmt: skip
    return m.eval(), {"compress_s": time.monotonic() - t, "report_bytes": r.final_bytes,
                      "val_accuracy": r.val_accuracy_after, "stopped": r.stopped_reason,
                      "layers": [[x.name, x.format, x.density, x.bytes] for x in r.layers]}  # fmt: skip


def emit_point(model, rep: str, x, d: Path) -> dict:
    from codegen import save_compressed_model

    t = time.monotonic()
    res = save_compressed_model(model, rep, input_data=x, directory=d, overwrite=True)
    return {"emit_s": time.monotonic() - t, "weight_bytes": res.weight_bytes, "dir": str(d),
            "arena_bytes": res.arena_bytes, "lower_bound_bytes": res.report["memory"]["lower_bound_bytes"],
            "macs": res.report["totals"]["macs"]}  # fmt: skip


def board_point(d: Path) -> dict:
    """Host build + self-test, M4 build (timed), then flash/RAM/instructions on QEMU."""
    from codegen import board

    out: dict = {}
    t = time.monotonic()
    host = subprocess.run(["make", "-s", "-C", str(d), "check"], capture_output=True, text=True)
    out["host_build_check_s"] = time.monotonic() - t
    out["host_check_passed"] = host.returncode == 0
    t = time.monotonic()
    board.build(d, "m4")
    out["m4_build_s"] = time.monotonic() - t
    run = board.run(d, "m4")
    out["m4_selftest_passed"] = bool(run.passed)
    m = board.measure(d)
    out.update({k: getattr(m, k) for k in ("code_bytes", "model_flash_bytes", "other_ram_bytes", "model_ram_bytes",
                                           "instructions", "weight_bytes_nm")})  # fmt: skip
    out["layers_instructions"] = [[lp.name, lp.instructions] for lp in m.layers]
    return out


def guarded(fn, *a, **kw):
    try:
        return fn(*a, **kw), None
    except Exception as exc:  # a failed point is recorded, the run goes on
        log.warning("%s failed: %s", getattr(fn, "__name__", fn), exc)
        log.debug("%s", traceback.format_exc())
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"


# ---- the sections -----------------------------------------------------------------------------------


def run_mnist(cfg: dict, data_dir: Path, work: Path, results: dict, save) -> None:
    from sparsecomp import load_mnist
    from sparsecomp.training import evaluate

    data = load_mnist(data_dir, batch_size=128, seed=0, limit_train=cfg["limit_train"])
    x = data[2].dataset.tensors[0][:1]
    base_cfg = cfg
    for name in base_cfg["mnist_models"]:
        cfg = {**base_cfg, **base_cfg.get("per_model", {}).get(name, {})}
        t = time.monotonic()
        model, cached = mnist_model(name, data, cfg, work)
        model.eval()
        entry = {"title": TITLES[name], "params": n_params(model),
                 "float_train_s": None if cached else time.monotonic() - t,
                 "float_test_accuracy": evaluate(model, data[2]), "points": [], "board": {}}  # fmt: skip
        results["models"][name] = entry
        dense, err = guarded(emit_point, model, "dense", x, work / f"{name}_dense")
        entry["dense"] = dense
        if dense:
            entry["board"]["dense float32"], err = guarded(board_point, Path(dense["dir"]))
        log.info("%s: float test accuracy %.4f, %s dense bytes", name, entry["float_test_accuracy"],
                 dense and dense["weight_bytes"])  # fmt: skip
        sens, bits, entry["analysis_s"] = analyses(model, data[1], cfg)
        entry["codebook_bits"] = bits
        save()
        headline = DEEP_COMPRESSION[name]["bytes"]
        for rep in REPRESENTATIONS:
            for kb in cfg["budgets"][name]:
                budget = int(kb * 1000)
                point = {"representation": rep, "budget_bytes": budget}
                cm, err = guarded(compress_point, model, budget, rep, data, cfg, sens, bits)
                if cm is not None:
                    m, info = cm
                    point.update(info)
                    point["test_accuracy"] = evaluate(m, data[2])
                    em, err = guarded(emit_point, m, rep, x, work / f"{name}_{rep}_{budget}")
                    if em:
                        point.update(em)
                point["error"] = err
                log.info("%s %s @ %d B: %s", name, rep, budget,
                         {k: v for k, v in point.items() if k != "layers"})  # fmt: skip
                entry["points"].append(point)
                save()
            # the footprint row: the point whose budget is nearest Deep Compression's size
            pts = [p for p in entry["points"] if p["representation"] == rep and p.get("dir")]
            if pts:
                p = min(pts, key=lambda p: abs(p["budget_bytes"] - headline))
                b, err = guarded(board_point, Path(p["dir"]))
                entry["board"][rep] = {**(b or {}), "error": err, "point": p["budget_bytes"]}
                save()


def run_small(cfg: dict, work: Path, results: dict, save) -> None:
    from sparsecomp.training import evaluate

    for name in cfg["small_models"]:
        t = time.monotonic()
        model, data, x, synthetic = small_model(name, cfg)
        entry = {"title": TITLES[name], "params": n_params(model), "synthetic": synthetic,
                 "float_train_s": time.monotonic() - t, "points": [], "board": {}}  # fmt: skip
        entry["float_test_accuracy"] = None if synthetic else evaluate(model, data[2])
        results["models"][name] = entry
        dense, err = guarded(emit_point, model, "dense", x, work / f"{name}_dense")
        entry["dense"] = dense
        if dense is None:
            entry["error"] = err
            continue
        entry["board"]["dense float32"], err = guarded(board_point, Path(dense["dir"]))
        budget = dense["weight_bytes"] // cfg["small_ratio"]
        for rep in REPRESENTATIONS:
            point = {"representation": rep, "budget_bytes": budget}
            cm, err = guarded(compress_point, model, budget, rep, data, cfg)
            if cm is not None:
                m, info = cm
                point.update(info)
                point["test_accuracy"] = None if synthetic else evaluate(m, data[2])
                em, err = guarded(emit_point, m, rep, x, work / f"{name}_{rep}")
                if em:
                    point.update(em)
                    b, err = guarded(board_point, Path(em["dir"]))
                    entry["board"][rep] = {**(b or {}), "error": err, "point": budget}
            point["error"] = err
            log.info("%s %s @ %d B: %s", name, rep, budget, {k: v for k, v in point.items() if k != "layers"})
            entry["points"].append(point)
            save()


def run_encodings(results: dict) -> None:
    from encodings_m4 import byte_table  # benchmarks/encodings_m4.py

    t = time.monotonic()
    rows, err = guarded(byte_table, 0.08, 5)
    results["encodings"] = {"density": 0.08, "bits": 5, "rows": rows, "error": err, "s": time.monotonic() - t}


# ---- plots and page -------------------------------------------------------------------------------

COLORS = {"csr": "tab:blue", "int8": "tab:orange", "codebook": "tab:green", "auto": "tab:red",
          "dense float32": "tab:gray"}  # fmt: skip


def plot(results: dict, img: Path) -> list[str]:
    import matplotlib

    REPRESENTATIONS = results["settings"]["representations"]  # noqa: N806

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    img.mkdir(parents=True, exist_ok=True)
    files = []
    for name in ("lenet300", "lenet5"):
        e = results["models"].get(name)
        if not e:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        dc = DEEP_COMPRESSION[name]
        accs = [100 * p["test_accuracy"] for p in e["points"] if p.get("test_accuracy") is not None]
        zoom_lo = min(97.0, 100 * e["float_test_accuracy"] - 1)
        for k, ax in enumerate(axes):
            for rep in REPRESENTATIONS:
                pts = sorted((p["weight_bytes"], p["test_accuracy"]) for p in e["points"]
                             if p["representation"] == rep and p.get("weight_bytes"))  # fmt: skip
                if pts:
                    ax.plot([p[0] / 1000 for p in pts], [100 * p[1] for p in pts], "o-", color=COLORS[rep], label=rep)
            ax.plot([dc["bytes"] / 1000], [100 * dc["accuracy"]], "k*", markersize=14, label=dc["label"])
            dense_kb = (e.get("dense") or {}).get("weight_bytes", 0) / 1000
            ax.axhline(100 * e["float_test_accuracy"], color="gray", ls="--", lw=1,
                       label=f"our float32 dense ({dense_kb:,.0f} KB)")  # fmt: skip
            ax.set_xscale("log")
            xs = [p["weight_bytes"] / 1000 for p in e["points"] if p.get("weight_bytes")] + [dc["bytes"] / 1000]
            ax.set_xlim(min(xs) / 1.4, max(xs) * 1.4)
            ticks = sorted({round(v) for v in [*results["settings"]["budgets"].get(name, []), dc["bytes"] / 1000]})
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("emitted weight bytes, KB (1 KB = 1000 B, log; ticks at the budgets)")
            ax.set_ylabel("MNIST test accuracy (%)")
            if k == 0:
                ax.set_ylim(max(min(accs + [97.0]) - 2, 0), 100)
                ax.set_title(f"{e['title']}: accuracy vs exact emitted bytes")
                ax.legend(fontsize=8, loc="lower right")
            else:
                ax.set_ylim(zoom_lo, 100)
                ax.set_title(f"zoom: {zoom_lo:g}-100%")
            ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        f = img / f"accuracy_vs_bytes_{name}.png"
        fig.savefig(f, dpi=110)
        plt.close(fig)
        files.append(f.name)

    names = [n for n, e in results["models"].items() if e.get("board")]
    rows = ["dense float32", *REPRESENTATIONS]
    if names:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        width = 0.8 / len(rows)
        for j, rep in enumerate(rows):
            wts, code, ins, xs = [], [], [], []
            for i, n in enumerate(names):
                b = results["models"][n]["board"].get(rep) or {}
                if b.get("instructions") is None:
                    continue
                w = (results["models"][n]["dense"] or {}).get("weight_bytes", 0) if rep == "dense float32" else \
                    next((p["weight_bytes"] for p in results["models"][n]["points"]
                          if p["representation"] == rep and p.get("dir") and p["budget_bytes"] == b.get("point")), 0)
                xs.append(i + (j - (len(rows) - 1) / 2) * width)
                wts.append(w / 1000)
                code.append(b["code_bytes"] / 1000)
                ins.append(b["instructions"] / 1e6)
            axes[0].bar(xs, wts, width, color=COLORS[rep], label=rep)
            axes[0].bar(xs, code, width, bottom=wts, color=COLORS[rep], alpha=0.4, hatch="//")
            axes[1].bar(xs, ins, width, color=COLORS[rep], label=rep)
        for ax, yl, t in ((axes[0], "flash KB: weights (solid) + code (hatched), log", "Flash per model"),
                          (axes[1], "M instructions per inference (QEMU), log", "Cortex-M4F instructions")):
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels([TITLES[n].replace(" (", "\n(") for n in names], fontsize=8)
            ax.set_yscale("log")
            ax.set_ylim(bottom=1 if ax is axes[0] else 0.01)
            ax.set_ylabel(yl)
            ax.set_title(t)
            ax.grid(True, axis="y", which="both", alpha=0.3)
        axes[1].legend(fontsize=8)
        fig.tight_layout()
        f = img / "flash_and_instructions.png"
        fig.savefig(f, dpi=110)
        plt.close(fig)
        files.append(f.name)
    return files


def _kb(n) -> str:
    return "-" if n is None else f"{n / 1000:,.1f} KB"


def _pct(a) -> str:
    return "-" if a is None else f"{100 * a:.2f}%"


def _s(t) -> str:
    return "-" if t is None else f"{t:.1f}"


def render(results: dict, out: Path, img_files: list[str]) -> str:
    env, cfg = results["environment"], results["settings"]
    REPRESENTATIONS = cfg["representations"]  # noqa: N806 (those of the run, not this process's default)
    L = ["# Benchmarks", "",
         f"Generated by `{results['command']}` (mode **{results['mode']}**) on {results['finished']}, "
         f"in {results['wall_s'] / 60:.1f} minutes.  Every number below comes from that run, read from "
         f"[`{results['json_name']}`]({results['json_name']}); rerun the command to reproduce it, "
         "`python benchmarks/run.py --render-only` to redraw this page from the JSON.", ""]  # fmt: skip
    L += [f"Machine: {env.get('cpu')}, {env.get('cores')} cores, {env.get('memory_gib')} GiB, shared with other "
          f"jobs (load average {env.get('load_average_at_start')} at start); Python {env.get('python')}, "
          f"torch {env.get('torch')}, {env.get('arm_none_eabi_gcc')}, {env.get('qemu')} (full list at the end). "
          "Instruction counts come from QEMU's instruction counter, not from a cycle-accurate model.", ""]
    L += ["## Where we stand", ""]
    L += ["| model | representation | emitted weight bytes | x smaller than float32 | test accuracy "
          "| Deep Compression (published) |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name in ("lenet300", "lenet5"):
        e = results["models"].get(name)
        if not e:
            continue
        dc = DEEP_COMPRESSION[name]
        dcs = f"{dc['bytes'] / 1000:g} KB at {100 * dc['accuracy']:.2f}%"
        dense_b = (e.get("dense") or {}).get("weight_bytes")
        L.append(f"| {e['title']} | float32 dense | {dense_b:,} B | 1 | {_pct(e['float_test_accuracy'])} | |")
        for rep in REPRESENTATIONS:
            pts = [p for p in e["points"] if p["representation"] == rep and p.get("weight_bytes")]
            near = [p for p in pts if p["budget_bytes"] <= dc["bytes"]]
            best = max(near, key=lambda p: (p["test_accuracy"], -p["weight_bytes"])) if near else None
            if best:
                L.append(f"| {e['title']} | {rep} | {best['weight_bytes']:,} B | {dense_b / best['weight_bytes']:.1f} "
                         f"| {_pct(best['test_accuracy'])} | {dcs} |")
            else:
                L.append(f"| {e['title']} | {rep} | no point at or below {dc['bytes']:,} B | - | - | {dcs} |")
    L.append("")
    for name in ("lenet300", "lenet5"):
        e = results["models"].get(name)
        if not e:
            continue
        base = e["float_test_accuracy"]
        ok = [p for p in e["points"] if p.get("weight_bytes") and p.get("test_accuracy") is not None
              and p["test_accuracy"] >= base - 0.01]  # fmt: skip
        dense_b = (e.get("dense") or {}).get("weight_bytes") or 1
        if ok:
            p = min(ok, key=lambda q: q["weight_bytes"])
            L.append(f"* {e['title']}: the smallest point within 1 accuracy point of our float32 model "
                     f"({_pct(base)}) is {p['weight_bytes']:,} B ({p['representation']}, "
                     f"{dense_b / p['weight_bytes']:.0f}x smaller) at {_pct(p['test_accuracy'])}.")  # fmt: skip
        else:
            L.append(f"* {e['title']}: no point within 1 accuracy point of our float32 model ({_pct(base)}).")
    for e in results["models"].values():
        d = (e["board"].get("dense float32") or {}).get("instructions")
        parts = [f"{rep} {b['instructions'] / d:.2f}x" for rep, b in e["board"].items()
                 if rep != "dense float32" and b and b.get("instructions") and d]  # fmt: skip
        if parts:
            L.append(f"* {e['title']} on the M4, instructions per inference vs dense float32 (rows of the flash table): "
                     f"{', '.join(parts)}.")
    L += ["", "Every point is one `compress_NN_models(model, budget, ..., representation=R)` call (it accepts csr, "
          "int8, codebook and auto at this commit, so no point needed quantizing after the fact), followed by "
          "`save_compressed_model(model, R)`. "
          "The table shows, per representation, the most accurate point whose budget is at most Deep Compression's size. "
          "Deep Compression's bytes are its paper's (pruning + quantization, before Huffman coding, "
          "index overhead included); ours are the exact `MODEL_WEIGHT_BYTES` of the emitted C "
          "(biases and CSR indices included).", ""]  # fmt: skip

    L += ["## Accuracy vs exact emitted bytes", ""]
    for f in img_files:
        if f.startswith("accuracy_vs_bytes"):
            L.append(f"![{f}](img/{f})")
            L.append("")
    L += ["| model | representation | budget B | emitted weight B | x smaller than float32 | test acc | val acc "
          "| compression s | codegen s | stopped because / error |", "|---|---|---|---|---|---|---|---|---|---|"]
    for e in results["models"].values():
        dense_b = (e.get("dense") or {}).get("weight_bytes")
        for p in e["points"]:
            ratio = f"{dense_b / p['weight_bytes']:.1f}" if dense_b and p.get("weight_bytes") else "-"
            acc = "n/a (synthetic)" if e.get("synthetic") else _pct(p.get("test_accuracy"))
            why = p.get("error") or p.get("stopped") or ""
            L.append(f"| {e['title']} | {p['representation']} | {p['budget_bytes']:,} | "
                     f"{p.get('weight_bytes', '-') if not p.get('weight_bytes') else format(p['weight_bytes'], ',')} | "
                     f"{ratio} | {acc} | {_pct(p.get('val_accuracy')) if not e.get('synthetic') else '-'} | "
                     f"{_s(p.get('compress_s'))} | {_s(p.get('emit_s'))} | {why.replace('|', '/')[:120]} |")  # fmt: skip
    L.append("")

    L += ["## Flash, RAM and instructions per inference (Cortex-M4F, QEMU)", ""]
    for f in img_files:
        if not f.startswith("accuracy_vs_bytes"):
            L.append(f"![{f}](img/{f})")
            L.append("")
    L += ["| model | representation | budget B | weights B | code B | arena B | arena lower bound B | MACs "
          "| M4 instructions | x vs dense | instr / MAC | self-test (host / M4) | host build+check s | M4 build s |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for e in results["models"].values():
        base = (e["board"].get("dense float32") or {}).get("instructions")
        for rep in ["dense float32", *REPRESENTATIONS]:
            b = e["board"].get(rep)
            if b is None:
                continue
            if rep == "dense float32":
                p = e.get("dense") or {}
            else:
                p = next((q for q in e["points"] if q["representation"] == rep and q.get("dir")
                          and q["budget_bytes"] == b.get("point")), {})  # fmt: skip
            if b.get("instructions") is None:
                L.append(f"| {e['title']} | {rep} | | | | | | | failed: {(b.get('error') or '')[:100]} | | | | | |")
                continue
            ins = b["instructions"]
            macs = p.get("macs")
            st = f"{'ok' if b.get('host_check_passed') else 'FAIL'} / {'ok' if b.get('m4_selftest_passed') else 'FAIL'}"
            L.append(f"| {e['title']} | {rep} | {format(b['point'], ',') if b.get('point') else '-'} "
                     f"| {p.get('weight_bytes', 0):,} | {b['code_bytes']:,} | {p.get('arena_bytes', 0):,} "
                     f"| {p.get('lower_bound_bytes', 0):,} | {macs:,} | {ins:,} | {ins / base:.2f} "
                     f"| {ins / macs:.2f} | {st} | {_s(b.get('host_build_check_s'))} | {_s(b.get('m4_build_s'))} |"
                     if base and macs else
                     f"| {e['title']} | {rep} | | {p.get('weight_bytes', 0):,} | {b['code_bytes']:,} | | | | {ins:,} "
                     f"| | | {st} | | |")  # fmt: skip
    L += ["", "Weights = `MODEL_WEIGHT_BYTES` (equal to the `nm -S` sum of the weight arrays in the ELF); code = "
          "flash of the firmware minus a baseline firmware with the model stubbed, minus the weights "
          "(`codegen.board.measure`). The arena is the static activation memory; its lower bound is the "
          "planner's (largest live set). Instructions come from QEMU `-icount shift=0` on mps2-an386 "
          "(Cortex-M4F, hard float, -O2), resolution 40 instructions: **QEMU counts instructions, not cycles** "
          "(no flash wait states, no pipeline or load costs), so read ratios, not microseconds. "
          "Compressed rows use the point whose budget is nearest Deep Compression's size (MNIST) or "
          f"1/{cfg['small_ratio']} of the dense float32 bytes (other models). DS-CNN and the sensor CNN are "
          "trained and compressed on synthetic data of their input shape: their footprint and speed are "
          "real, their accuracy means nothing and is not shown.", ""]  # fmt: skip

    L += ["## Wall time", ""]
    L += ["| model | float training s | compressions | compression s (min / median / max) | codegen s (median) "
          "| host gcc build + self-test s (median) | M4 build s (median) |", "|---|---|---|---|---|---|---|"]
    for e in results["models"].values():
        cs = sorted(p["compress_s"] for p in e["points"] if p.get("compress_s") is not None)
        es = sorted(p["emit_s"] for p in e["points"] if p.get("emit_s") is not None)
        hb = sorted(b["host_build_check_s"] for b in e["board"].values() if b and b.get("host_build_check_s"))
        mb = sorted(b["m4_build_s"] for b in e["board"].values() if b and b.get("m4_build_s"))
        med = lambda v: _s(v[len(v) // 2]) if v else "-"  # noqa: E731
        ft = e.get("float_train_s")
        L.append(f"| {e['title']} | {'cached' if ft is None else _s(ft)} | {len(cs)} | "
                 f"{_s(cs[0]) if cs else '-'} / {med(cs)} / {_s(cs[-1]) if cs else '-'} | {med(es)} | {med(hb)} | {med(mb)} |")
    L += ["", "Compression time is bounded by the settings below (batches per epoch, rounds, time limit): "
          "it measures this run, not the best accuracy the compressor can reach with longer fine-tuning.", ""]

    enc = results.get("encodings") or {}
    if enc.get("rows"):
        L += ["## Bytes of every weight encoding", "",
              f"`benchmarks/encodings_m4.byte_table`: every weight magnitude-pruned to density {enc['density']:g}, "
              f"int8 per channel or {enc['bits']}-bit codebook, random weights (bytes depend on shapes and "
              "sparsity only); LeNet-5 here is the classic 6/16-channel one.", "",
              "| encoding | LeNet-300-100 B | x dense | LeNet-5 (classic) B | x dense |", "|---|---|---|---|---|"]
        by = {(r["model"], r["encoding"]): r for r in enc["rows"]}
        for k in dict.fromkeys(r["encoding"] for r in enc["rows"]):
            a, b = by.get(("LeNet-300-100", k)), by.get(("LeNet-5", k))
            if a and b:
                L.append(f"| {k} | {a['bytes']:,} | {a['vs_dense']:.3f} | {b['bytes']:,} | {b['vs_dense']:.3f} |")
        L.append("")

    L += ["## Settings of this run", "", "| setting | value |", "|---|---|"]
    L += [f"| {k} | `{json.dumps(v)}` |" for k, v in cfg.items()]
    L += ["", "Budgets are in KB (1000 bytes); max_batches caps the batches per fine-tuning epoch (null = all); "
          "time_limit is seconds per compression; analysis_batches are the validation batches (1000 images) of "
          "the pruning-sensitivity and codebook-bits analyses, run once per MNIST model and shared by its points; "
          "small_ratio: the non-MNIST models are compressed to 1/small_ratio of their float32 bytes; per_model "
          "overrides the settings of one model.", ""]
    L += ["## Machine and versions", "", "| | |", "|---|---|"]
    for k in ("cpu", "cores", "memory_gib", "load_average_at_start", "os", "python", "torch", "torch_threads",
              "gcc", "arm_none_eabi_gcc", "qemu", "git_commit", "uncommitted_files"):
        L.append(f"| {k} | {env.get(k)} |")
    L += ["", "The machine was shared with other jobs while this ran (see the load average): wall times "
          "are upper bounds; instruction counts are deterministic and unaffected.", ""]
    L += ["## Reproduce", "", "```", "make bench          # full mode (sizes above); MNIST from ../shared/data/mnist,",
          "                    # elsewhere: make bench BENCH_ARGS='--data DIR'",
          "make bench-quick    # quick mode: 1 budget per representation, tiny training",
          "python benchmarks/run.py --help", "",
          "# one point / one row of the tables, e.g. LeNet-5, int8, 44 KB, with this run's settings:",
          f"python benchmarks/run.py --mode {results['mode']} --models lenet5 --reps int8 --budgets 'lenet5=44' "
          "--no-encodings --out /tmp/one", "```", "",
          "Everything is seeded: the whole command repeats its numbers on the same machine and torch build "
          "(wall times aside). A single point run alone sees the MNIST loader's shuffle in another state, so its "
          "accuracy can differ slightly; its bytes and instruction counts for the same weights are exact. "
          "Float models are cached in out/bench/<mode>/ (delete them to retrain).", ""]
    text = "\n".join(L)
    (out / "benchmarks.md").write_text(text)
    return text


# ---- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from sparsecomp.data import default_mnist_dir

    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=sorted(MODES), default="quick")
    ap.add_argument("--data", default=str(default_mnist_dir(ROOT) or ""), help="MNIST IDX dir (../shared/data/mnist)")
    ap.add_argument("--out", default=str(ROOT / "docs"), help="results.json, benchmarks.md and img/ go here")
    ap.add_argument("--workdir", default=None, help="emitted models and cached float models (out/bench/<mode>)")
    ap.add_argument("--budgets", default=None, help="e.g. 'lenet300=100,27,8;lenet5=44' (KB)")
    ap.add_argument("--models", default=None, help="comma list among lenet300,lenet5,digits_cnn,ds_cnn,conv1d_sensor")
    ap.add_argument("--reps", default=None, help="comma list among csr,int8,codebook,auto")
    for k in ("epochs", "compress_epochs", "max_rounds", "max_batches", "quant_epochs", "limit_train",
              "small_ratio", "small_epochs", "synthetic_samples"):
        ap.add_argument("--" + k.replace("_", "-"), type=int, default=None)
    ap.add_argument("--time-limit", type=float, default=None, help="seconds per compression")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--no-encodings", action="store_true")
    ap.add_argument("--render-only", action="store_true", help="redraw the page and plots from OUT/results.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    json_path = out / "results.json"
    if args.render_only:
        results = json.loads(json_path.read_text())
        render(results, out, plot(results, out / "img"))
        return 0

    if args.reps:
        REPRESENTATIONS[:] = args.reps.split(",")
    torch.set_num_threads(args.threads)
    cfg = copy.deepcopy(MODES[args.mode])
    for k in ("epochs", "compress_epochs", "max_rounds", "max_batches", "quant_epochs", "limit_train",
              "small_ratio", "small_epochs", "synthetic_samples", "time_limit"):
        if getattr(args, k) is not None:
            cfg[k] = getattr(args, k)
    if args.budgets:
        for part in args.budgets.split(";"):
            n, v = part.split("=")
            cfg["budgets"][n] = [float(b) for b in v.split(",")]
    if args.models:
        sel = args.models.split(",")
        cfg["mnist_models"] = [m for m in cfg["mnist_models"] if m in sel]
        cfg["small_models"] = [m for m in cfg["small_models"] if m in sel]
    cfg["representations"] = list(REPRESENTATIONS)
    cfg["torch_threads"] = args.threads
    work = Path(args.workdir or ROOT / "out" / "bench" / args.mode)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    from codegen import board

    ok, why = board.board_toolchain_available()
    if not ok:
        print(f"cannot run the board measurements: {why}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    cmd = "python benchmarks/run.py " + " ".join(shlex.quote(a) for a in argv)
    results = {"mode": args.mode, "command": cmd.strip(), "settings": cfg, "environment": environment(),
               "json_name": json_path.name, "models": {}, "started": time.strftime("%Y-%m-%d %H:%M %Z")}  # fmt: skip

    def save() -> None:
        results["wall_s"] = time.monotonic() - t0
        results["finished"] = time.strftime("%Y-%m-%d %H:%M %Z")
        json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")

    if cfg["mnist_models"]:
        if not args.data or not Path(args.data).is_dir():
            ap.error("no MNIST directory: pass --data DIR (nothing is downloaded)")
        run_mnist(cfg, Path(args.data), work, results, save)
    run_small(cfg, work, results, save)
    if not args.no_encodings:
        run_encodings(results)
    save()
    files = plot(results, out / "img")
    text = render(results, out, files)
    print(text.split("## Accuracy vs")[0])
    print(f"wrote {json_path}, {out / 'benchmarks.md'}, {len(files)} plots in {out / 'img'} "
          f"({(time.monotonic() - t0) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
