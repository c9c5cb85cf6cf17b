"""The model zoo report (issue 14): which real architectures emit C today, and what blocks the rest.

For every model of tests/zoo.py (timm and torchvision definitions with random weights and
BatchNorm statistics, plus standard TinyML blocks) it

* emits it with ``codegen.save_compressed_model(model, "dense", input_data=x[:1], directory=tmp)``,
* builds the C with the host compiler (-Wall -Wextra -Werror -pedantic) and compares it with PyTorch
  on 3 random inputs (``codegen.verify``): max abs error relative to max |output|, and whether it
  is within ``zoo.parity_bound`` (``codegen.api.default_tolerance`` plus twice PyTorch's own
  fp32-vs-fp64 noise: the bound tests/test_zoo.py checks),
* where it matches and fits the emulated board (mps2-an386: 4 MiB flash, 4 MiB RAM), runs it on the
  Cortex-M4F under QEMU ``-icount`` (``codegen.board.run(..., profile=True)``): instructions of one
  inference; a model whose weights exceed the flash is not built (the column says why),
* where it emits, also tries the fully integer path (``integer=True``, calibrated on 16 random
  inputs) and runs its bit-exact ``make check`` self-test,

and writes docs/zoo.md: one row per model (result, or the error class and the first line of its
message; weight bytes; arena against the planner's lower bound, codegen/memory.py) and a table of
the blocking reasons grouped by op with the number of models each blocks. Usage:

    nice .venv/bin/python benchmarks/zoo.py [--models a,b] [--out docs/zoo.md] [--no-integer] [--no-board]
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import zoo  # noqa: E402

from codegen import board, save_compressed_model, verify  # noqa: E402
from codegen.api import default_tolerance  # noqa: E402
from codegen.errors import CodegenError, UnsupportedOpError  # noqa: E402

# the emulated board (runtime_c/board/mps2-an386.ld): FLASH 4M, RAM 4M
BOARD_FLASH_BYTES = 4 * 1024 * 1024
BOARD_RAM_BYTES = 4 * 1024 * 1024

log = logging.getLogger("zoo")


@dataclass
class Row:
    name: str
    source: str
    params: int
    result: str = ""  # "emits" or the error class
    message: str = ""  # first line of the error
    blockers: list[tuple[str, str]] = field(default_factory=list)  # (reason, construct) pairs
    weight_bytes: int | None = None
    arena: int | None = None
    lower_bound: int | None = None
    max_rel_error: float | None = None
    within_tolerance: bool | None = None
    fp32_noise: float | None = None  # PyTorch's own fp32-vs-fp64 max abs difference on the inputs
    m4: str = ""  # instructions of one inference on the emulated M4, or why not run
    m4_instructions: int | None = None
    integer: str = ""
    seconds: float = 0.0


def _owner_type(model: torch.nn.Module, attr: str) -> str:
    """The class of the module that owns the parameter/buffer ``attr`` ('blocks.0.bn1.running_mean')."""
    path = attr.rsplit(".", 1)[0] if "." in attr else ""
    try:
        return type(model.get_submodule(path)).__name__
    except AttributeError:
        return "?"


def blockers_of(exc: Exception, model: torch.nn.Module) -> list[tuple[str, str]]:
    """The distinct (reason, construct) pairs an error names: the op (or argument problem) and the
    class of the module whose forward() used it ("" at the top level)."""
    if isinstance(exc, UnsupportedOpError):
        # the constant-tensor nodes of a module whose op is already listed (F.batch_norm's
        # running_mean in BatchNormAct2d) add nothing: they are that op's operands
        reasons, owners = set(), set()
        for _name, target, path in exc.nodes:
            if not target.startswith("constant tensor self."):
                owner = _owner_type(model, path + ".x") if path else ""
                owners.add(owner)
                reasons.add((target, "" if target.endswith(owner) else owner))
        for _name, target, _path in exc.nodes:
            if target.startswith("constant tensor self."):
                owner = _owner_type(model, target[len("constant tensor self.") :])
                if owner not in owners:
                    reasons.add(("parameter used as a tensor operand", owner))
        return sorted(reasons)
    first = str(exc).splitlines()[0] if str(exc) else ""
    name = type(exc).__name__
    if name == "UntraceableModelError":
        m = re.search(r"forward\(\): (.*)", first)
        return [(f"untraceable: {(m.group(1) if m else first)[:90]}", "")]
    # UnsupportedConfigError and the rest: "layer 'x' in 'path': <why>. <fix>" -> <why>
    m = re.match(r"^layer '[^']*'(?: in '([^']*)')?: ", first)
    owner = _owner_type(model, m.group(1) + ".x") if m and m.group(1) else ""
    why = first[m.end() :] if m else first
    why = why.split(". ")[0]
    why = re.sub(r"'[^']*'", "'...'", why)  # node names differ per model; the construct does not
    why = re.sub(r"\([0-9, ]+\)", "(...)", why)  # and so do the shapes
    return [(f"{name}: {why[:100]}", owner)]


def run_one(name: str, work: Path, integer: bool, on_board: bool) -> Row:
    t0 = time.time()
    entry = zoo.ZOO[name]
    model, x = zoo.build(name)
    row = Row(name, entry.source, sum(p.numel() for p in model.parameters()))
    d = work / name
    try:
        res = save_compressed_model(model, "dense", input_data=x[:1], directory=d, overwrite=True)
    except Exception as exc:  # noqa: BLE001 - the report records whatever it is
        row.result = type(exc).__name__
        row.blockers = blockers_of(exc, model)
        first = (str(exc).splitlines() or [""])[0]
        if isinstance(exc, UnsupportedOpError):  # its first line is a count: name the ops instead
            first = f"{len(exc.nodes)} nodes: " + ", ".join(dict.fromkeys(r for r, _ in row.blockers))
        row.message = first
        row.seconds = time.time() - t0
        return row
    row.weight_bytes = res.weight_bytes
    row.arena = res.arena_bytes
    row.lower_bound = int(res.report["memory"]["lower_bound_bytes"])
    try:
        v = verify(model, d, x)
        row.max_rel_error = v.max_rel_error
        bound, row.fp32_noise = zoo.parity_bound(model, x, v.reference, default_tolerance(v.reference))
        row.within_tolerance = v.max_abs_error <= bound
        row.result = "emits" if row.within_tolerance else "emits, WRONG"
        if row.within_tolerance and v.max_abs_error > default_tolerance(v.reference):
            row.message = f"error {v.max_abs_error:.2g} within PyTorch's own fp32-vs-fp64 noise {row.fp32_noise:.2g}"
    except Exception as exc:  # noqa: BLE001
        row.result = f"emits, C fails ({type(exc).__name__})"
        row.message = (str(exc).splitlines() or [""])[0]
    if on_board and row.within_tolerance:
        row.m4, row.m4_instructions = try_board(d, res.weight_bytes, res.arena_bytes)
    if integer and row.within_tolerance:
        row.integer = try_integer(model, x, work / f"{name}_int8")
    row.seconds = time.time() - t0
    return row


def try_board(d: Path, weight_bytes: int, arena_bytes: int) -> tuple[str, int | None]:
    """Instructions of one inference on the emulated Cortex-M4F (QEMU -icount), or why it was not run."""
    if weight_bytes > BOARD_FLASH_BYTES:
        return f"does not fit: {weight_bytes / 2**20:.1f} MiB of weights > 4 MiB flash", None
    if arena_bytes > BOARD_RAM_BYTES:
        return f"does not fit: {arena_bytes / 2**20:.1f} MiB of arena > 4 MiB RAM", None
    try:
        r = board.run(d, "m4", profile=True, timeout=600)
    except CodegenError as exc:  # a link error when the weights and code overflow the flash
        text = str(exc)
        if "overflowed" in text or "will not fit" in text:
            return "does not fit: weights + code overflow the 4 MiB flash (link error)", None
        return f"build fails ({type(exc).__name__})", None
    if r.profile is None or r.exit_code not in (0, 1):
        return f"run fails (exit {r.exit_code})", None
    n = r.profile.total_instructions
    # exit 1: the board's own self-test bound (default_tolerance, without the fp32 noise allowance) missed
    return (f"{n:,}" if r.exit_code == 0 else f"{n:,} (self-test outside default_tolerance)"), n


def try_integer(model: torch.nn.Module, x: torch.Tensor, d: Path) -> str:
    cal = torch.randn((16, *x.shape[1:]), generator=torch.Generator().manual_seed(7))
    try:
        res = save_compressed_model(model, "dense", input_data=x[:1], directory=d, overwrite=True,
                                    integer=True, calibration_data=cal)  # fmt: skip
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:80]}"
    proc = subprocess.run(["make", "-s", "-C", str(d), "check"], capture_output=True, text=True)
    if proc.returncode != 0 or "SC_PASS" not in proc.stdout:
        return "emits, self-test FAILS"
    t = res.report["test"]
    rel = t["float_model_max_abs_error"] / max(t["float_model_max_abs_output"], 1e-30)
    return f"bit-exact; {rel:.3f} rel. vs float"


def _fmt(v, spec: str = "") -> str:
    return "" if v is None else format(v, spec)


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render(rows: list[Row], integer: bool, on_board: bool) -> str:
    n_emit = sum(r.result == "emits" for r in rows)
    lines = [
        "# Model zoo: real architectures through the code generator",
        "",
        "Generated by `benchmarks/zoo.py` (models: `tests/zoo.py`; CI check: `tests/test_zoo.py`). Every model",
        "has random weights and random BatchNorm statistics; timm "
        f"{zoo.import_timm().__version__} and torchvision {zoo.import_torchvision().__version__} definitions",
        "are used as the libraries ship them. Emitted with `save_compressed_model(model, \"dense\", x)`, built with",
        "`cc -Wall -Wextra -Werror -pedantic` and compared with PyTorch on 3 random inputs; \"emits\" means the",
        "max abs error is within `codegen.api.default_tolerance` (1e-4 x max|output| + 1e-6) plus twice PyTorch's",
        "own float32-vs-float64 difference on those inputs (`zoo.parity_bound`, the bound `tests/test_zoo.py`",
        "checks: random weights and BatchNorm statistics make some nets ill-conditioned). The arena is the",
        "activation memory of the emitted C; the lower bound is the planner's (the largest live set).",
    ]
    if on_board:
        lines += [
            "\"M4 instructions\": one inference of the float C on the emulated Cortex-M4F (QEMU mps2-an386,",
            "`-icount shift=0`, `codegen.board.run(d, \"m4\", profile=True)`, gcc -O2), for the models that fit",
            "the board's 4 MiB flash and 4 MiB RAM; the others say why not.",
        ]
    if integer:
        lines += [
            "\"integer=True\": calibrated on 16 random inputs; \"bit-exact\" means `make check` passed (the C equals",
            "the integer reference and is within `codegen.integer.float_tolerance` of PyTorch's float output),",
            "followed by the max error against the float model relative to max|output|. \"self-test FAILS\" is that",
            "8 % bound missed: random weights and statistics, not trained ones.",
        ]
    lines += [
        "",
        f"**{n_emit} of {len(rows)} emit C that matches PyTorch.**",
        "",
        "| model | source | params | result | weight bytes | arena / lower bound (bytes) | max error (rel.) |"
        + (" M4 instructions |" if on_board else "") + (" integer=True |" if integer else ""),
        "| --- | --- | ---: | --- | ---: | ---: | ---: |" + (" ---: |" if on_board else "")
        + (" --- |" if integer else ""),
    ]
    for r in rows:
        result = r.result if not r.message else f"{r.result}: {r.message[:140]}"
        arena = f"{r.arena} / {r.lower_bound}" if r.arena is not None else ""
        lines.append(
            f"| {r.name} | {r.source} | {r.params} | {_md_escape(result)} | {_fmt(r.weight_bytes)} | {arena} | "
            f"{_fmt(r.max_rel_error, '.1e')} |" + (f" {_md_escape(r.m4)} |" if on_board else "")
            + (f" {_md_escape(r.integer)} |" if integer else "")
        )
    groups: dict[str, list[str]] = defaultdict(list)
    constructs: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        for reason, owner in r.blockers:
            if r.name not in groups[reason]:
                groups[reason].append(r.name)
            if owner:
                constructs[reason].add(owner)
    lines += [
        "",
        "## What blocks the rest, by number of models",
        "",
        "A model counts once under every reason its error names (an UnsupportedOpError lists every node",
        "without a lowering in one pass; argument errors are raised one at a time, so only the first shows).",
        "\"called in\" names the classes whose forward() used the op (none: the model's own forward or a",
        "torch module).",
        "",
        "| op or reason | models | called in | which |",
        "| --- | ---: | --- | --- |",
    ]
    for reason, names in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        lines.append(f"| {_md_escape(reason)} | {len(names)} | {', '.join(sorted(constructs[reason]))} | "
                     f"{', '.join(names)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated names from tests/zoo.py (default: all)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "zoo.md"))
    ap.add_argument("--no-integer", action="store_true", help="skip the integer=True column")
    ap.add_argument("--no-board", action="store_true", help="skip the M4 instructions column (QEMU)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    names = args.models.split(",") if args.models else list(zoo.ZOO)
    on_board = not args.no_board
    if on_board and not board.board_toolchain_available()[0]:
        log.warning("no M4 column: %s", board.board_toolchain_available()[1])
        on_board = False
    work = Path(tempfile.mkdtemp(prefix="sparsecomp-zoo-"))
    rows = []
    try:
        for name in tqdm(names, desc="zoo", unit="model"):
            rows.append(run_one(name, work, not args.no_integer, on_board))
            r = rows[-1]
            tqdm.write(f"{r.name:34s} {r.result:14s} {r.seconds:5.1f}s {r.message[:90]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = render(rows, not args.no_integer, on_board)
    print(text)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
