"""Shared helpers of the parity tests: emit a model as C, build it with the host compiler, run it
and compare with PyTorch (the oracle).

Tolerance
---------
A C output ``y`` matches PyTorch's ``ref`` when

    max |y - ref|  <=  1e-4 * max |ref|  +  1e-6            (``tolerance(ref)``)

which is ``codegen.api.default_tolerance`` — the same check the emitted ``make check`` self-test
does. Why this bound: float32 accumulations in another order (BLAS/oneDNN versus the C loops) and
BatchNorm folding (done in float64, rounded once) move results by a few ulps of the accumulated
magnitudes, i.e. ~1e-6 relative; 1e-4 relative leaves room for long reductions and for expf/tanhf
of the C library. A wrong index, shape, stride or padding gives errors of the order of the outputs
themselves (relative error ~1e-1..1), so the bound still catches every real bug.
The absolute 1e-6 term covers outputs that are all (near) zero.

Typical use::

    from helpers import emit_and_verify
    res = emit_and_verify(model, (1, 3, 8, 8), "csr", tmp_path)      # asserts parity
    res.report["layers"][0]["format"]                                # the emitted report.json

``emit_and_verify(..., sanitize=True)`` builds with ``SANITIZE_FLAGS`` (AddressSanitizer +
UndefinedBehaviorSanitizer, no recovery); call ``require_sanitizer()`` first to skip cleanly where
the sanitizer runtime is missing.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from codegen.api import VerifyResult, default_tolerance, save_compressed_model, verify

SANITIZE_FLAGS: tuple[str, ...] = (
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
    "-g",
)

TOLERANCE_DOC = "max abs error <= 1e-4 * max|reference| + 1e-6 (codegen.api.default_tolerance)"


def tolerance(reference: np.ndarray) -> float:
    """The parity bound on the max abs error for a reference output (see the module docstring)."""
    return default_tolerance(np.asarray(reference, dtype=np.float64))


def parity_error(outputs: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(max abs error, allowed max abs error)."""
    out = np.asarray(outputs, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if out.shape != ref.shape:
        raise AssertionError(f"output shape {out.shape} != reference shape {ref.shape}")
    if not np.all(np.isfinite(out)):
        return float("inf"), tolerance(ref)
    err = float(np.max(np.abs(out - ref))) if ref.size else 0.0
    return err, tolerance(ref)


def assert_parity(outputs: np.ndarray, reference: np.ndarray, what: str = "") -> None:
    """Raises AssertionError (naming ``what`` and the worst element) when the outputs are out of tolerance."""
    err, tol = parity_error(outputs, reference)
    if err <= tol:
        return
    out = np.asarray(outputs, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    diff = np.where(np.isfinite(out), np.abs(out - ref), np.inf)
    idx = np.unravel_index(int(np.argmax(diff)), ref.shape)
    raise AssertionError(
        f"{what or 'model'}: C output differs from PyTorch: max abs error {err:.3g} > {tol:.3g} "
        f"({TOLERANCE_DOC}); worst at index {tuple(int(i) for i in idx)}: C {out[idx]!r} vs torch {ref[idx]!r}"
    )


@dataclass
class ParityResult(VerifyResult):
    """``codegen.api.VerifyResult`` plus what the test may want to inspect."""

    directory: Path = Path()
    report: dict = field(default_factory=dict)
    tolerance: float = 0.0


def emit_and_verify(
    model: torch.nn.Module,
    x_shape: tuple[int, ...],
    representation: str,
    tmp_path: Path,
    n_inputs: int = 3,
    sanitize: bool = False,
    *,
    inputs: torch.Tensor | None = None,
    name: str = "model",
    seed: int = 0,
    check: bool = True,
    extra_flags: tuple[str, ...] = (),
) -> ParityResult:
    """Emits ``model`` into ``tmp_path/name`` (via ``save_compressed_model`` with a sample input),
    compiles it with the host compiler (``-Wall -Wextra -Werror -pedantic``), runs it on
    ``n_inputs`` random samples of shape ``x_shape`` (batch dim included, e.g. (1, 3, 8, 8)) and
    compares with PyTorch. Asserts parity (``assert_parity``) unless ``check=False``.

    ``inputs`` (N, ...) replaces the random samples. ``sanitize=True`` adds ``SANITIZE_FLAGS``.
    """
    model = model.eval()
    if inputs is None:
        gen = torch.Generator().manual_seed(seed)
        inputs = torch.randn((n_inputs, *tuple(x_shape)[1:]), generator=gen)
    directory = Path(tmp_path) / name
    res = save_compressed_model(
        model, representation, input_data=inputs[:1], directory=directory, overwrite=True
    )
    flags = tuple(extra_flags) + (SANITIZE_FLAGS if sanitize else ())
    v = verify(model, directory, inputs, extra_flags=flags)
    out = ParityResult(
        v.max_abs_error, v.max_rel_error, v.outputs, v.reference,
        directory=directory, report=res.report, tolerance=tolerance(v.reference),
    )  # fmt: skip
    if check:
        assert_parity(v.outputs, v.reference, f"{type(model).__name__} ({representation}) in {directory}")
    return out


def read_report(directory: Path) -> dict:
    return json.loads((Path(directory) / "report.json").read_text())


@functools.cache
def sanitizer_problem(cc: str | None = None) -> str | None:
    """None when ``cc`` builds and runs an ASan+UBSan program here, else the reason it does not."""
    cc = cc or os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        return f"no C compiler {cc!r}"
    d = Path(tempfile.mkdtemp(prefix="sc-asan-probe-"))
    try:
        (d / "p.c").write_text(
            '#include <stdio.h>\nint main(void){int a[3]={1,2,3};printf("%d\\n",a[1]);return 0;}\n'
        )
        cmd = [cc, *SANITIZE_FLAGS, str(d / "p.c"), "-o", str(d / "p")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            return f"{cc} cannot build with {' '.join(SANITIZE_FLAGS)}: {proc.stderr.strip()[:300]}"
        run = subprocess.run([str(d / "p")], capture_output=True, text=True, timeout=60)
        if run.returncode != 0 or run.stdout.strip() != "2":
            return f"sanitizer runtime does not run here (exit {run.returncode}): {run.stderr.strip()[:300]}"
        return None
    finally:
        shutil.rmtree(d, ignore_errors=True)


def require_sanitizer() -> None:
    """Skips the calling test with the reason when AddressSanitizer/UBSan are unavailable."""
    why = sanitizer_problem()
    if why:
        pytest.skip(f"sanitizer runtime not available: {why}")


# ---- building test models -------------------------------------------------------------------------
def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Gives every BatchNorm non-trivial running statistics and affine parameters (in place)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.25)
                if m.weight is not None:
                    m.weight.copy_(torch.randn(n, generator=gen) * 0.5 + 1.0)
                    m.bias.copy_(torch.randn(n, generator=gen) * 0.3)
    return model


def sparsify_(weight: torch.Tensor, density: float, seed: int = 0) -> torch.Tensor:
    """Zeroes all but round(density * numel) randomly chosen entries of ``weight`` (in place)."""
    gen = torch.Generator().manual_seed(seed)
    n = weight.numel()
    keep = int(round(density * n))
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=gen)[:keep]] = True
    with torch.no_grad():
        weight.mul_(mask.view_as(weight).to(weight.dtype))
    return weight


def layer(report: dict, source: str) -> dict:
    """The report.json entry of the layer emitted for torch module path / node name ``source``."""
    for ly in report["layers"]:
        if ly["source"] == source:
            return ly
    raise KeyError(f"no layer {source!r} in report; layers: {[ly['source'] for ly in report['layers']]}")


def nm_symbols(obj: Path) -> list[tuple[str, str, int]]:
    """(name, type, size) of every sized symbol of an object file (``nm -S``)."""
    out = subprocess.run(["nm", "-S", "--size-sort", str(obj)], capture_output=True, text=True, check=True).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4:
            syms.append((parts[3], parts[2], int(parts[1], 16)))
    return syms


def nm_weight_bytes(directory: Path, prefix: str = "model") -> int:
    """Bytes of the read-only data symbols ``<prefix>_*`` of the emitted model's host object (``make object``)."""
    subprocess.run(["make", "-s", "-C", str(directory), "object"], check=True, capture_output=True)
    obj = Path(directory) / "build" / "host" / "model.o"
    return sum(s for n, t, s in nm_symbols(obj) if t in "rR" and n.startswith(prefix + "_"))
