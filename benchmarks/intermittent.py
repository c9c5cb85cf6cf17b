"""Intermittent inference on the emulated Cortex-M4 (issue 16): cost of surviving power failures.

For LeNet-5 (Caffe), DS-CNN (tests/models.py, trained-like state, 70 % pruned, "csr") and the digits CNN of
benchmarks/integer_accuracy.py (trained a few epochs on scikit-learn's digits, "dense"), it emits the model with
``intermittent=True`` (and once more with ``max_unit_macs`` = a quarter of the largest layer: layer
separation) and runs ``make qemu-power-fail`` (QEMU mps2-an386, ``-icount shift=0``, arm-none-eabi-gcc -O2):

* instructions of ``<prefix>_run`` and of one uninterrupted ``<prefix>_run_intermittent`` (SysTick, resolution
  40 instructions, both timed the same way on the first boot) and the overhead (target <= 10 %);
* bytes: the NVM state (progress slots + the out-of-place arena, MODEL_NVM_BYTES), the SRAM the intermittent run
  still needs (bounded kernel scratch on the stack, report.json), the normal arena (MODEL_ARENA_BYTES);
* the smallest failure interval K (a reset every K instructions after boot) that still completes an inference:
  binary search over ``INTERVAL_TICKS`` (K = 40 x ticks; each run resets until one inference finishes, or gives
  up after 4 x units + 16 boots without one). Forward progress needs the largest unit plus the boot to fit in K.

Every run also checks the output bit for bit against the uninterrupted run (a mismatch raises). Usage:

    .venv/bin/python benchmarks/intermittent.py [--models lenet5,ds_cnn,digits] [--json out.json] [--ram-fraction 0.5]

``--ram-fraction F`` adds rows emitted with ``ram_budget`` = F x the layer-by-layer arena: the tiled stages run as
one unit per tile (their tile buffers in SRAM, the SRAM column), only the values between stages in NVM.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import models  # noqa: E402  (tests/models.py)

from codegen import save_compressed_model  # noqa: E402

TICK = 40  # instructions per SysTick tick under -icount shift=0 (board/profile.c)


def get_model(name: str):
    if name == "digits":
        import integer_accuracy as ia  # benchmarks/integer_accuracy.py

        xtr, ytr, xte, _ = ia.digits()
        import torch

        torch.manual_seed(0)
        model = ia.cnn()
        ia.train(model, xtr, ytr, 3)
        return model.eval(), xte[:1], "dense"
    model, x = models.build_model(name)
    return model, x, "csr"


def make(d: Path, *args: str) -> str:
    proc = subprocess.run(["make", "-s", "-C", str(d), "qemu-power-fail", *args], capture_output=True, text=True,
                          timeout=1800)  # fmt: skip
    out = proc.stdout + proc.stderr
    if "SC_MISMATCH" in out or "SC_FAIL" in out:
        raise RuntimeError(f"{d}: wrong output under failures:\n{out[-2000:]}")
    return out


def completes(d: Path, ticks: int) -> bool:
    out = make(d, "FAILURES=0", f"INTERVAL_TICKS={ticks}")
    if "SC_NO_PROGRESS" in out:
        return False
    if "SC_PASS" not in out:
        raise RuntimeError(f"{d}: {out[-2000:]}")
    return True


def smallest_interval(d: Path, hi: int) -> int:
    """The smallest INTERVAL_TICKS in [1, hi] that completes (hi must complete)."""
    lo = 1
    assert completes(d, hi), "the uninterrupted run length must complete"
    while lo < hi:
        mid = (lo + hi) // 2
        if completes(d, mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def measure(name: str, work: Path, bound_div: int | None, ram_fraction: float | None = None) -> dict:
    model, x, rep = get_model(name)
    kw = {}
    if ram_fraction:  # tiled stages as units: ram_budget = this fraction of the layer-by-layer arena
        plain = save_compressed_model(model, rep, x, work / f"{name}_plain")
        kw["ram_budget"] = int(plain.report["memory"]["arena_bytes"] * ram_fraction)
    if bound_div:
        probe = save_compressed_model(model, rep, x, work / f"{name}_probe", intermittent=True, **kw)
        units = probe.report["intermittent"]["units"]
        # a tile of a tiled stage is not split further: the bound is at least the largest tile
        kw["max_unit_macs"] = max(max(u["macs"] for u in units) // bound_div,
                                  max((u["macs"] for u in units if u["op"] == "tile"), default=0))  # fmt: skip
    res = save_compressed_model(model, rep, x, work / name, intermittent=True, **kw)
    it = res.report["intermittent"]
    out = make(res.directory, "FAILURES=0")
    normal = int(re.search(r"SC_NORMAL_RUN_TICKS (\d+)", out)[1])
    inter = int(re.search(r"SC_REFERENCE_TICKS (\d+)", out)[1])
    k = smallest_interval(res.directory, inter + 2000)
    return {
        "model": name, "representation": rep, "max_unit_macs": kw.get("max_unit_macs"),
        "ram_budget": kw.get("ram_budget"), "tile_workspace_bytes": it.get("tile_workspace_bytes", 0), "units": len(it["units"]),
        "largest_unit_macs": it["max_unit_macs"], "normal_insns": normal * TICK, "intermittent_insns": inter * TICK,
        "overhead_pct": 100.0 * (inter - normal) / normal, "nvm_bytes": it["nvm_bytes"],
        "sram_bytes": it["sram_bytes"], "normal_arena_bytes": it["normal_arena_bytes"],
        "smallest_k_insns": k * TICK, "smallest_k_vs_run_pct": 100.0 * k / inter,
    }  # fmt: skip


def table(rows: list[dict]) -> str:
    head = ("model", "units", "largest unit MACs", "normal run insns", "intermittent insns", "overhead",
            "NVM bytes", "SRAM bytes", "normal arena", "smallest K insns", "K / run")  # fmt: skip
    lines = [head]
    for r in rows:
        tag = r["model"] + (f" (ram_budget={r['ram_budget']})" if r.get("ram_budget") else "")
        tag += f" (max_unit_macs={r['max_unit_macs']})" if r["max_unit_macs"] else ""
        lines.append((tag, str(r["units"]), str(r["largest_unit_macs"]), str(r["normal_insns"]),
                      str(r["intermittent_insns"]), f"{r['overhead_pct']:+.2f} %", str(r["nvm_bytes"]),
                      str(r["sram_bytes"]), str(r["normal_arena_bytes"]), str(r["smallest_k_insns"]),
                      f"{r['smallest_k_vs_run_pct']:.1f} %"))  # fmt: skip
    w = [max(len(ln[i]) for ln in lines) for i in range(len(head))]
    fmt = [" | ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(ln)) for ln in lines]
    fmt.insert(1, "-|-".join("-" * x for x in w))
    return "\n".join(fmt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="lenet5,ds_cnn,digits")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--ram-fraction", type=float, default=None,
                    help="also emit with ram_budget = this fraction of the layer-by-layer arena (tiled stages: a "
                         "unit per tile, tile buffers in SRAM)")  # fmt: skip
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="sc-intermittent-") as tmp:
        for name in args.models.split(","):
            for frac in (None, args.ram_fraction) if args.ram_fraction else (None,):
                for div in (None, 4):
                    rows.append(measure(name, Path(tmp) / f"d{div}_{frac}", div, frac))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
