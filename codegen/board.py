"""Cortex-M board support: cross builds, runs on QEMU's emulated Arm MPS2 boards, sizes.

An emitted model directory (see ``save_compressed_model``) carries ``board/`` (startup code,
linker scripts, semihosting glue, a SysTick profiler) and ``board/board.mk``, included by its
Makefile. This module drives that Makefile and QEMU from Python:

* ``build(d, "m4")`` cross-compiles ``d/build/m4/<prefix>.elf`` (Cortex-M4F, hard float,
  QEMU ``mps2-an386``); ``"m3"`` gives a Cortex-M3 soft-float build (``mps2-an385``).
* ``run(d, "m4")`` runs the self-test (``app/main.c``) on the emulator and returns its exit
  code, the outputs decoded bit-exactly from the ``SC_OUT`` lines and the maximum error.
* ``measure(d)`` splits flash into weights and code (against a baseline firmware that is the
  same program with the inference function stubbed out), reports RAM and the instructions
  one inference takes on the M4, in total and per layer (deterministic: QEMU ``-icount``).
* ``board_command(d)`` does all of that and prints a report (``sparsecomp board DIR``).

Everything is built inside ``d/build/``; no other file of the directory is written.

Example:
    >>> from codegen import board
    >>> ok, reason = board.board_toolchain_available()
    >>> if ok:                                            # doctest: +SKIP
    ...     result = board.run("my_model", "m4")
    ...     assert result.passed, result.stdout
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from codegen.errors import CodegenError

log = logging.getLogger(__name__)

__all__ = [
    "BoardBuildError",
    "BoardError",
    "BoardMeasurement",
    "BoardRun",
    "BoardTarget",
    "LayerProfile",
    "Profile",
    "SectionSizes",
    "TARGETS",
    "board_command",
    "board_toolchain_available",
    "build",
    "measure",
    "profile",
    "qemu_command",
    "run",
]

#: Instructions per SysTick tick under ``-icount shift=0`` on the mps2 boards (1 ns per
#: instruction, SysTick on the 25 MHz SYSCLK). ``make profile-calibrate`` re-measures it.
INSNS_PER_TICK_DEFAULT = 40

DEFAULT_RUN_TIMEOUT = 60.0
DEFAULT_BUILD_TIMEOUT = 600.0


class BoardError(CodegenError):
    """A board build or emulator run could not be done (toolchain missing, crash, timeout)."""


class BoardBuildError(BoardError):
    """The cross build failed; the message carries the compiler's output."""


@dataclass(frozen=True)
class BoardTarget:
    """One emulated board: how to build for it and how to run it."""

    name: str  # "m4" / "m3"
    cpu: str  # human-readable
    make_target: str  # board.mk target that builds the firmware
    build_dir: str  # relative to the model directory
    machine: str  # qemu-system-arm -M
    profile_dir: str  # build dir of the -DSC_PROFILE variant


TARGETS: dict[str, BoardTarget] = {
    "m4": BoardTarget("m4", "Cortex-M4F (hard float, fpv4-sp-d16)", "cortex-m4", "build/m4",
                      "mps2-an386", "build/m4-profile"),
    "m3": BoardTarget("m3", "Cortex-M3 (soft float)", "cortex-m3", "build/m3",
                      "mps2-an385", "build/m3-profile"),
}

_TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-nm", "qemu-system-arm", "make")


@functools.lru_cache(maxsize=1)
def board_toolchain_available() -> tuple[bool, str]:
    """Whether the Cortex-M cross compiler, newlib and QEMU are installed.

    Returns ``(True, "")`` or ``(False, reason)`` where the reason says what to install.

    >>> ok, reason = board_toolchain_available()
    >>> isinstance(ok, bool) and isinstance(reason, str)
    True
    """
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        return False, (
            "missing " + ", ".join(missing) + " (Debian/Ubuntu: apt-get install gcc-arm-none-eabi "
            "libnewlib-arm-none-eabi qemu-system-arm make)"
        )
    try:
        proc = subprocess.run(
            ["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard",
             "-mfpu=fpv4-sp-d16", "--specs=nano.specs", "-print-file-name=libc_nano.a"],
            capture_output=True, text=True, timeout=30, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"arm-none-eabi-gcc does not run: {exc}"
    lib = proc.stdout.strip()
    if proc.returncode != 0 or not os.path.isabs(lib) or not os.path.exists(lib):
        return False, "newlib for arm-none-eabi is missing (apt-get install libnewlib-arm-none-eabi)"
    return True, ""


def _require_toolchain() -> None:
    ok, reason = board_toolchain_available()
    if not ok:
        raise BoardError(f"Cortex-M board toolchain not available: {reason}")


def _target(target: str) -> BoardTarget:
    try:
        return TARGETS[target]
    except KeyError:
        raise BoardError(f"unknown board target {target!r}; choose one of {sorted(TARGETS)}") from None


# ---- reading the emitted directory ---------------------------------------------------------


def _model_dir(directory: str | os.PathLike[str]) -> Path:
    d = Path(directory)
    if not (d / "Makefile").is_file() or not (d / "board" / "board.mk").is_file():
        raise BoardError(
            f"{d} is not an emitted model directory with board support "
            "(expected Makefile and board/board.mk; emit it with codegen.save_compressed_model)"
        )
    return d


def _prefix(d: Path) -> str:
    """The C name prefix: PREFIX in the Makefile, else the header defining *_RUN/ *_WEIGHT_BYTES."""
    text = (d / "Makefile").read_text()
    m = re.search(r"^\s*PREFIX\s*[:?]?=\s*(\w+)\s*$", text, re.MULTILINE)
    if m:
        return m.group(1)
    for header in sorted(d.glob("*.h")):
        m = re.search(r"#define\s+(\w+)_WEIGHT_BYTES\b", header.read_text())
        if m:
            return m.group(1).lower()
    return "model"


def _header_defines(d: Path, prefix: str, header: Path | None = None) -> dict[str, int]:
    """Integer #defines of model.h (<PREFIX>_*), prefix removed: INPUT_SIZE, ARENA_BYTES, ..."""
    header = header or d / "model.h"
    if not header.is_file():
        header = d / f"{prefix}.h"
    if not header.is_file():
        raise BoardError(f"{d / 'model.h'} not found (the model's public header)")
    out: dict[str, int] = {}
    pattern = re.compile(rf"#define\s+{re.escape(prefix.upper())}_(\w+)\s+\(?\s*(\d+)[uUlL]*\s*\)?")
    for m in pattern.finditer(header.read_text()):
        out[m.group(1)] = int(m.group(2))
    return out


def _report_json(d: Path) -> dict:
    path = d / "report.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return {}


def _find_number(obj: object, keys: Iterable[str]) -> int | None:
    """First integer found under one of ``keys`` in a JSON object, searched breadth-first."""
    keys = tuple(keys)
    queue = [obj]
    while queue:
        cur = queue.pop(0)
        if isinstance(cur, dict):
            for k in keys:
                v = cur.get(k)
                if isinstance(v, int) and not isinstance(v, bool):
                    return v
            queue.extend(v for v in cur.values() if isinstance(v, dict))
    return None


def _declared_arrays(text: str) -> list[str]:
    """Names of initialised const arrays declared in C source text (``SC_WEIGHT float w[3] = ...``,
    ``static const int8_t w[3] = ...``)."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL)
    text = re.sub(r"//[^\n]*", " ", text)
    text = re.sub(r"^\s*#[^\n]*", " ", text, flags=re.MULTILINE)
    text = re.sub(r"\{[^{}]*\}", "{}", text)  # initialisers (weights are flat lists)
    names = []
    for stmt in text.split(";"):
        head, eq, _ = stmt.partition("=")
        if not eq or not re.search(r"\b(const|SC_WEIGHT)\b", head):
            continue
        m = re.search(r"\b([A-Za-z_]\w*)\s*\[[^\]]*\](?:\s*\[[^\]]*\])*[^\[]*$", head)
        if m:
            names.append(m.group(1))
    return names


def _report_array_names(report: dict) -> list[str]:
    """Names of the const weight arrays listed in report.json (layers[].arrays[].name, and
    early_exit.heads[].arrays[].name in an early-exit directory)."""
    names: list[str] = []
    if not isinstance(report, dict):
        return names
    ee = report.get("early_exit")
    heads = ee.get("heads", []) if isinstance(ee, dict) else []
    for layer in [*report.get("layers", []), *heads]:
        for arr in layer.get("arrays", []) if isinstance(layer, dict) else []:
            if isinstance(arr, dict) and isinstance(arr.get("name"), str):
                names.append(arr["name"])
    return names


def weight_symbols(directory: str | os.PathLike[str]) -> list[str]:
    """Names of the const arrays defined in ``headers/*.h``, except the sample in ``input.h``."""
    d = Path(directory)
    names: list[str] = []
    for header in sorted((d / "headers").glob("*.h")):
        if header.name in ("input.h", "headers.h"):
            continue
        names.extend(_declared_arrays(header.read_text()))
    return names


# ---- building -------------------------------------------------------------------------------


def _make(d: Path, goals: Sequence[str], make_vars: dict[str, str] | None, timeout: float) -> None:
    cmd = ["make", "-C", str(d), "--no-print-directory"]
    cmd += [f"{k}={v}" for k, v in (make_vars or {}).items()]
    cmd += list(goals)
    log.info("building: %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BoardBuildError(f"cross build timed out after {timeout:.0f} s: {' '.join(cmd)}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise BoardBuildError(f"cross build failed ({' '.join(cmd)}):\n{tail}")
    log.debug("build output:\n%s", proc.stdout)


def build(
    directory: str | os.PathLike[str],
    target: str = "m4",
    *,
    profile: bool = False,
    baseline: bool = False,
    make_vars: dict[str, str] | None = None,
    timeout: float = DEFAULT_BUILD_TIMEOUT,
) -> Path:
    """Cross-compile the model directory's self-test for ``target`` ("m4" or "m3").

    Returns the path of the ELF: ``build/<target>/<prefix>.elf``, or with ``profile=True``
    the ``-DSC_PROFILE`` variant in ``build/<target>-profile/``. ``baseline=True`` also
    builds ``build/<target>/baseline.elf`` (the same program without the model).
    ``make_vars`` overrides board.mk variables, e.g. ``{"ARM_OPT": "-Os"}``.
    """
    _require_toolchain()
    d = _model_dir(directory)
    t = _target(target)
    prefix = (make_vars or {}).get("PREFIX") or _prefix(d)
    elf = d / (t.profile_dir if profile else t.build_dir) / f"{prefix}.elf"
    goals = [str(elf.relative_to(d))]
    if baseline:
        goals.append(f"{t.build_dir}/baseline.elf")
    _make(d, goals, make_vars, timeout)
    return elf


# ---- running ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerProfile:
    """Instructions spent in one layer (between SC_LAYER_BEGIN and SC_LAYER_END)."""

    index: int
    name: str
    instructions: int
    ticks: int
    calls: int


@dataclass(frozen=True)
class Profile:
    """Per-layer and total instruction counts of one inference (QEMU -icount, deterministic).

    Resolution is ``insns_per_tick`` (40) instructions; ``total_instructions`` covers the whole
    ``<prefix>_run`` call, the profiling hooks included (a few dozen instructions per layer).
    """

    layers: list[LayerProfile]
    total_instructions: int
    total_ticks: int
    insns_per_tick: int

    @property
    def layer_sum(self) -> int:
        return sum(layer.instructions for layer in self.layers)


@dataclass
class BoardRun:
    """What one emulator run of the self-test gave."""

    target: str
    exit_code: int
    stdout: str
    stderr: str
    outputs: np.ndarray  # float32, decoded from the SC_OUT bit patterns
    max_abs_error: float | None
    tolerance: float | None
    timed_out: bool = False
    profile: Profile | None = None
    command: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """The program exited 0 (its own comparison against PyTorch's answer passed)."""
        return self.exit_code == 0 and not self.timed_out


def qemu_command(elf: str | os.PathLike[str], target: str = "m4", *, icount: bool = False) -> list[str]:
    """The qemu-system-arm command line that runs ``elf`` on the target's emulated board."""
    t = _target(target)
    cmd = [
        "qemu-system-arm", "-M", t.machine, "-nographic", "-monitor", "none", "-serial", "none",
        "-semihosting-config", "enable=on,target=native",
    ]
    if icount:
        cmd += ["-icount", "shift=0"]
    return cmd + ["-kernel", str(elf)]


_OUT_RE = re.compile(r"^SC_OUT\s+(\d+)\s+0x([0-9a-fA-F]{8})\s*$", re.MULTILINE)


def _parse_float(line_key: str, text: str) -> float | None:
    m = re.search(rf"^{line_key}\s+(\S+)\s*$", text, re.MULTILINE)
    if not m:
        return None
    try:
        return float(m.group(1))
    except ValueError:
        return None


def parse_outputs(stdout: str) -> np.ndarray:
    """Decode ``SC_OUT <i> 0x<bits>`` lines into a float32 array (bit-exact)."""
    pairs = sorted((int(i), int(bits, 16)) for i, bits in _OUT_RE.findall(stdout))
    if [i for i, _ in pairs] != list(range(len(pairs))):
        raise BoardError("SC_OUT lines are not numbered 0..n-1:\n" + stdout[-2000:])
    return np.array([bits for _, bits in pairs], dtype=np.uint32).view(np.float32)


def parse_profile(stdout: str) -> Profile | None:
    """Read the ``SC_PROFILE_*`` lines printed by board/profile.c.

    profile.c prints one block (``SC_PROFILE_TICK_INSNS``, the layers, ``SC_PROFILE_TOTAL``) per
    ``<prefix>_run`` call, and at exit one more block without a total for layers run outside it (the
    early-exit self-test runs the stages again through ``<prefix>_ee_run``). The profile of one inference
    is the first block with a total (else the first block).
    """
    starts = [m.start() for m in re.finditer(r"^SC_PROFILE_TICK_INSNS\s", stdout, re.MULTILINE)]
    if not starts:
        return None
    blocks = [stdout[a:b] for a, b in zip(starts, [*starts[1:], len(stdout)])]
    block = next((b for b in blocks if re.search(r"^SC_PROFILE_TOTAL\s", b, re.MULTILINE)), blocks[0])
    m = re.search(r"^SC_PROFILE_TICK_INSNS\s+(\d+)", block, re.MULTILINE)
    if not m:
        return None
    per_tick = int(m.group(1))
    layers = [
        LayerProfile(int(idx), name.strip(), int(ticks) * per_tick, int(ticks), int(calls))
        for idx, ticks, calls, name in re.findall(
            r"^SC_PROFILE_LAYER\s+(\d+)\s+(\d+)\s+(\d+)\s+(.*)$", block, re.MULTILINE
        )
    ]
    mt = re.search(r"^SC_PROFILE_TOTAL\s+(\d+)", block, re.MULTILINE)
    total_ticks = int(mt.group(1)) if mt else sum(layer.ticks for layer in layers)
    return Profile(layers, total_ticks * per_tick, total_ticks, per_tick)


def run_elf(elf: str | os.PathLike[str], target: str = "m4", *, timeout: float = DEFAULT_RUN_TIMEOUT,
            icount: bool = False) -> BoardRun:
    """Run an already built ELF on the emulator and parse what it printed."""
    _require_toolchain()
    cmd = qemu_command(elf, target, icount=icount)
    log.info("running: %s", " ".join(cmd))
    timed_out = False
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        timed_out = True
        code = 124
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        log.warning("%s did not finish within %.0f s", elf, timeout)
    if "SC_FAULT" in err:
        log.warning("the program faulted on %s: %s", target, err.strip())
    return BoardRun(
        target=target,
        exit_code=code,
        stdout=out,
        stderr=err,
        outputs=parse_outputs(out),
        max_abs_error=_parse_float("SC_MAX_ABS_ERROR", out),
        tolerance=_parse_float("SC_TOLERANCE", out),
        timed_out=timed_out,
        profile=parse_profile(out),
        command=cmd,
    )


def run(
    directory: str | os.PathLike[str],
    target: str = "m4",
    *,
    timeout: float = DEFAULT_RUN_TIMEOUT,
    profile: bool = False,
    make_vars: dict[str, str] | None = None,
) -> BoardRun:
    """Build (if needed) and run the self-test of an emitted directory on the emulated board.

    ``profile=True`` runs the ``-DSC_PROFILE`` build under ``-icount shift=0``; the result's
    ``profile`` then holds per-layer instruction counts. The program's exit code is returned
    as is (0: outputs within tolerance of PyTorch's, 1: not, 134: the program faulted,
    124: timeout).
    """
    elf = build(directory, target, profile=profile, make_vars=make_vars)
    return run_elf(elf, target, timeout=timeout, icount=profile)


def profile(directory: str | os.PathLike[str], target: str = "m4", *,
            timeout: float = DEFAULT_RUN_TIMEOUT) -> Profile:
    """Instructions of one inference on ``target``, in total and per layer (deterministic)."""
    result = run(directory, target, timeout=timeout, profile=True)
    if result.exit_code != 0 or result.profile is None:
        raise BoardError(
            f"profile run on {target} failed (exit code {result.exit_code}):\n"
            + (result.stdout + result.stderr)[-2000:]
        )
    return result.profile


# ---- sizes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SectionSizes:
    """Berkeley-style sizes of one ELF (``arm-none-eabi-size``); heap and stack reservations
    (NOLOAD sections) are reported apart from bss."""

    text: int  # code + rodata (weights) + vector table + exidx
    data: int  # initialised RAM (its initial values also occupy flash)
    bss: int  # zeroed RAM, without the heap and stack reservations
    heap: int
    stack: int

    @property
    def flash(self) -> int:
        return self.text + self.data

    @property
    def ram(self) -> int:
        """Static RAM: data + bss (heap and stack not included)."""
        return self.data + self.bss


def section_sizes(elf: str | os.PathLike[str]) -> SectionSizes:
    """Sizes of an ELF built with board/cortex_m.ld (``arm-none-eabi-size -A``)."""
    proc = subprocess.run(["arm-none-eabi-size", "-A", "-d", str(elf)], capture_output=True,
                          text=True, check=True)
    sections: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1].isdigit():
            sections[parts[0]] = int(parts[1])
    text_like = (".isr_vector", ".text", ".rodata", ".ARM.extab", ".ARM.exidx", ".preinit_array",
                 ".init_array", ".fini_array")
    return SectionSizes(
        text=sum(sections.get(s, 0) for s in text_like),
        data=sections.get(".data", 0),
        bss=sections.get(".bss", 0),
        heap=sections.get(".heap", 0),
        stack=sections.get(".stack", 0),
    )


def symbol_sizes(elf: str | os.PathLike[str]) -> dict[str, int]:
    """Sizes of the data and code symbols of an ELF (``arm-none-eabi-nm -S``)."""
    proc = subprocess.run(["arm-none-eabi-nm", "-S", str(elf)], capture_output=True, text=True,
                          check=True)
    sizes: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4:
            sizes[parts[3]] = sizes.get(parts[3], 0) + int(parts[1], 16)
    return sizes


@dataclass
class BoardMeasurement:
    """Flash, RAM and time of a model on the emulated Cortex-M4F (same flags for everything).

    Flash: ``weight_bytes`` (MODEL_WEIGHT_BYTES) + ``code_bytes`` (the model's functions,
    runtime kernels and any other constant data they use) = ``model_flash_bytes``, the flash
    difference between the firmware and the baseline firmware (app/main.c with the inference
    function stubbed out). RAM: ``arena_bytes`` (MODEL_ARENA_BYTES) + ``other_ram_bytes``
    (other static data of the model) = ``model_ram_bytes``. ``firmware``/``baseline`` hold
    the whole programs' sizes (newlib's printf included).
    """

    target: str
    firmware: SectionSizes
    baseline: SectionSizes
    weight_bytes: int
    weight_bytes_nm: int  # sum of the weight arrays' sizes in the ELF's symbol table
    code_bytes: int
    model_flash_bytes: int
    arena_bytes: int
    other_ram_bytes: int
    model_ram_bytes: int
    instructions: int | None
    layers: list[LayerProfile]
    options: dict[str, str] = field(default_factory=dict)
    stack: StackUsage | None = None

    def as_dict(self) -> dict:
        """JSON-friendly form (for reports and benchmarks)."""
        return {
            "target": self.target,
            "weight_bytes": self.weight_bytes,
            "weight_bytes_nm": self.weight_bytes_nm,
            "code_bytes": self.code_bytes,
            "model_flash_bytes": self.model_flash_bytes,
            "arena_bytes": self.arena_bytes,
            "other_ram_bytes": self.other_ram_bytes,
            "model_ram_bytes": self.model_ram_bytes,
            "firmware": vars(self.firmware),
            "baseline": vars(self.baseline),
            "instructions": self.instructions,
            "layers": [vars(layer) for layer in self.layers],
            "stack": vars(self.stack) if self.stack else None,
        }


@dataclass(frozen=True)
class StackUsage:
    """Stack of one inference from gcc's -fstack-usage (board.mk) on model.c: the run function's frame and
    the largest frames of the model's other (non-inlined) functions. ``bound`` = run + the two largest
    other frames: the runtime's kernels call at most one more non-inlined level (an activation)."""

    run_frame: int
    largest: list[tuple[str, int]]
    bound: int
    dynamic: bool  # a frame gcc could not bound statically (a VLA or alloca): the bound is not safe


def stack_usage(su_file: str | os.PathLike[str], prefix: str) -> StackUsage:
    """Parses a gcc ``.su`` file ("file:line:col:function<TAB>bytes<TAB>static|dynamic[,bounded]")."""
    frames: dict[str, int] = {}
    dynamic = False
    for line in Path(su_file).read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or not parts[1].strip().isdigit():
            continue
        name = parts[0].rsplit(":", 1)[-1]
        frames[name] = max(frames.get(name, 0), int(parts[1]))
        dynamic |= "dynamic" in parts[2] and "bounded" not in parts[2]
    run = max(frames.get(f"{prefix}_run", 0), frames.get(f"{prefix}_run_int8", 0))
    others = sorted(((n, b) for n, b in frames.items() if n not in (f"{prefix}_run", f"{prefix}_run_int8")),
                    key=lambda nb: (-nb[1], nb[0]))  # fmt: skip
    return StackUsage(run, others[:5], run + sum(b for _, b in others[:2]), dynamic)


def measure(
    directory: str | os.PathLike[str],
    *,
    target: str = "m4",
    instructions: bool = True,
    timeout: float = DEFAULT_RUN_TIMEOUT,
    make_vars: dict[str, str] | None = None,
) -> BoardMeasurement:
    """Flash split, RAM and instructions per inference of an emitted model on the M4.

    >>> m = measure("my_model")                                       # doctest: +SKIP
    >>> m.weight_bytes + m.code_bytes == m.model_flash_bytes
    True
    """
    d = _model_dir(directory)
    t = _target(target)
    prefix = _prefix(d)
    elf = build(d, target, baseline=True, make_vars=make_vars)
    fw = section_sizes(elf)
    base = section_sizes(d / t.build_dir / "baseline.elf")

    defines = _header_defines(d, prefix)
    report = _report_json(d)
    weight_bytes = defines.get("WEIGHT_BYTES")
    if weight_bytes is None:
        weight_bytes = _find_number(report, ("weight_bytes", "total_weight_bytes"))
    arena_bytes = defines.get("ARENA_BYTES")
    if arena_bytes is None:
        arena_bytes = _find_number(report, ("arena_bytes", "arena"))
    if weight_bytes is None or arena_bytes is None:
        raise BoardError(f"model.h defines no {prefix.upper()}_WEIGHT_BYTES / _ARENA_BYTES")
    if (d / "model_ee.h").is_file():  # an early-exit directory: the exit heads' weights are weights too
        ee_defines = _header_defines(d, f"{prefix}_ee", header=d / "model_ee.h")
        weight_bytes += ee_defines.get("WEIGHT_BYTES", 0)

    symbols = symbol_sizes(elf)
    names = _report_array_names(report) or weight_symbols(d)
    weight_bytes_nm = sum(symbols.get(name, 0) for name in set(names))

    su = d / t.build_dir / "obj" / "model.su"
    stack = stack_usage(su, prefix) if su.is_file() else None
    model_flash = fw.flash - base.flash
    model_ram = fw.ram - base.ram
    layers: list[LayerProfile] = []
    total: int | None = None
    if instructions:
        prof = profile(d, target, timeout=timeout)
        layers, total = prof.layers, prof.total_instructions
    return BoardMeasurement(
        target=target,
        firmware=fw,
        baseline=base,
        weight_bytes=weight_bytes,
        weight_bytes_nm=weight_bytes_nm,
        code_bytes=model_flash - weight_bytes,
        model_flash_bytes=model_flash,
        arena_bytes=arena_bytes,
        other_ram_bytes=model_ram - arena_bytes,
        model_ram_bytes=model_ram,
        instructions=total,
        layers=layers,
        options=dict(make_vars or {}),
        stack=stack,
    )


# ---- command line -----------------------------------------------------------------------------


def _fmt_bytes(n: int) -> str:
    return f"{n:,} B" if abs(n) < 10 * 1024 else f"{n:,} B ({n / 1024:.1f} KiB)"


def board_command(directory: str | os.PathLike[str], targets: Sequence[str] = ("m4",), *,
                  timeout: float = DEFAULT_RUN_TIMEOUT, measure_m4: bool = True,
                  json_path: str | os.PathLike[str] | None = None) -> int:
    """Build, run on the emulated boards and print a report. Returns a process exit code.

    0: every target's self-test passed; 1: a self-test failed or a build failed;
    2: the toolchain is missing. (This is what ``sparsecomp board DIR`` calls.) ``json_path``: also
    write the printed figures there as JSON (``board_json``; ``sparsecomp board DIR --json FILE``).
    """
    figures: dict = {"directory": str(directory), "targets": {}, "measure": None}
    status = _board_command(directory, targets, timeout, measure_m4, figures)
    if json_path is not None:
        figures["status"] = status
        Path(json_path).write_text(json.dumps(figures, indent=2) + "\n")
    return status


def board_json(m: BoardMeasurement, macs: dict[int, int]) -> dict:
    """The figures ``sparsecomp board`` prints for the M4, as a JSON-ready dict (bytes and instructions)."""
    return {
        "target": m.target,
        "flash": {"weights": m.weight_bytes, "weights_nm": m.weight_bytes_nm, "code": m.code_bytes,
                  "model_total": m.model_flash_bytes, "firmware": m.firmware.flash,
                  "baseline_firmware": m.baseline.flash},
        "ram": {"arena": m.arena_bytes, "other_static": m.other_ram_bytes, "model_total": m.model_ram_bytes,
                "firmware_static": m.firmware.ram, "heap": m.firmware.heap, "stack_reserved": m.firmware.stack,
                "model_stack_bound": None if m.stack is None else m.stack.bound},
        "instructions": m.instructions,
        "layers": [{"index": ly.index, "name": ly.name, "instructions": ly.instructions,
                    "macs": macs.get(ly.index, 0)} for ly in m.layers],
    }  # fmt: skip


def _board_command(directory, targets: Sequence[str], timeout: float, measure_m4: bool, figures: dict) -> int:
    ok, reason = board_toolchain_available()
    if not ok:
        print(f"sparsecomp board: cannot run: {reason}")
        return 2
    status = 0
    try:
        d = _model_dir(directory)
    except BoardError as exc:
        print(f"sparsecomp board: {exc}")
        return 1
    print(f"board report for {d}")
    for target in targets:
        t = _target(target)
        try:
            result = run(d, target, timeout=timeout)
        except BoardError as exc:
            print(f"  {target}: {exc}")
            status = 1
            continue
        verdict = "PASS" if result.passed else ("TIMEOUT" if result.timed_out else "FAIL")
        err = "n/a" if result.max_abs_error is None else f"{result.max_abs_error:.3g}"
        tol = "n/a" if result.tolerance is None else f"{result.tolerance:.3g}"
        print(f"  {target} {t.cpu} on qemu {t.machine}: {verdict} (exit code {result.exit_code}, "
              f"{result.outputs.size} outputs, max abs error {err}, tolerance {tol})")
        figures["targets"][target] = {"passed": bool(result.passed), "exit_code": result.exit_code,
                                      "max_abs_error": result.max_abs_error, "tolerance": result.tolerance}
        if not result.passed:
            status = 1
            tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
            for line in tail:
                print(f"      {line}")
    if measure_m4 and "m4" in targets and status == 0:
        try:
            m = measure(d, timeout=timeout)
        except BoardError as exc:
            print(f"  measure: {exc}")
            return 1
        print("  flash (Cortex-M4F, same flags as the baseline firmware):")
        print(f"    {'weights':<22}{_fmt_bytes(m.weight_bytes)}")
        print(f"    {'code (model+runtime)':<22}{_fmt_bytes(m.code_bytes)}")
        print(f"    {'model total':<22}{_fmt_bytes(m.model_flash_bytes)}")
        print(f"    {'whole firmware':<22}{_fmt_bytes(m.firmware.flash)} "
              f"(baseline self-test without the model: {_fmt_bytes(m.baseline.flash)})")
        print("  RAM:")
        print(f"    {'arena':<22}{_fmt_bytes(m.arena_bytes)}")
        print(f"    {'other static data':<22}{_fmt_bytes(m.other_ram_bytes)}")
        print(f"    {'whole firmware':<22}{_fmt_bytes(m.firmware.ram)} static + "
              f"{_fmt_bytes(m.firmware.heap)} heap + {_fmt_bytes(m.firmware.stack)} stack reserved")
        if m.stack is not None:
            top = ", ".join(f"{n} {b} B" for n, b in m.stack.largest[:3])
            print(f"    {'stack (model)':<22}{_fmt_bytes(m.stack.bound)} at most (gcc -fstack-usage: run "
                  f"{m.stack.run_frame} B; largest other frames: {top or 'none'})"
                  + ("; a frame is dynamic, the bound is not safe" if m.stack.dynamic else ""))
        macs = {}
        for layer in _report_json(d).get("layers", []):
            if isinstance(layer, dict) and isinstance(layer.get("index"), int):
                macs[layer["index"]] = layer.get("macs") or 0
        figures["measure"] = board_json(m, macs)
        if m.instructions is not None:
            print(f"  instructions per inference (qemu -icount, resolution {INSNS_PER_TICK_DEFAULT}): "
                  f"{m.instructions:,}")
            print(f"    {'layer':<38s} {'instructions':>12}  share  insns/MAC (MACs of report.json)")
            for layer in m.layers:
                share = 100.0 * layer.instructions / m.instructions if m.instructions else 0.0
                n_mac = macs.get(layer.index, 0)
                per_mac = f"{layer.instructions / n_mac:9.2f}" if n_mac else f"{'-':>9}"
                print(f"    [{layer.index:3d}] {layer.name:<32s} {layer.instructions:>12,} {share:5.1f}%  {per_mac}")
    return status
