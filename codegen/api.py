"""Public API of the code generator: sizes, emission and verification against PyTorch."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from codegen import emit, formats, ir, tiling
from codegen.emission import (  # noqa: F401 - public names re-exported by codegen.api
    ATOL,
    RTOL,
    VERSION,
    ArrayInfo,
    ByteReport,
    Emission,
    EmitResult,
    allocate_symbols,
    build_report,
    byte_report,
    check_prefix,
    default_tolerance,
    each_adder,
    format_table,
    write_emission,
)
from codegen.errors import CodegenError
from codegen.export_frontend import trace_model
from codegen.integer_emit import save_integer_model
from codegen.intermittent import add_files as intermittent_files
from codegen.intermittent import plan as intermittent_plan
from codegen.lower import lower
from codegen.memory import GraphMemory, plan_graph
from codegen.resources import runtime_dir
from codegen.trace import example_from, prepare_model

log = logging.getLogger(__name__)

_ROLE_SUFFIX = {"weight": "w", "bias": "b", "scale": "scale", "shift": "shift"}


def encode_graph(g: ir.Graph, representation: formats.Representation, prefix: str) -> None:
    """Chooses and builds the storage of every constant tensor (op.encoded). ``representation``: the table
    entry the caller checked once (``formats.check_representation``)."""
    for op in g.ops:
        op.encoded = {}
        for role, arr in op.params.items():
            base = f"{prefix}_{op.name}_{_ROLE_SUFFIX.get(role, role)}"
            if role in op.encodable:
                op.encoded[role] = formats.encode_tensor(arr, base, representation, layer=op.source)
            else:
                op.encoded[role] = formats.ENCODINGS["dense"].encode(arr.reshape(-1, 1), base)
    allocate_symbols(g, prefix)


def build_graph(
    model: torch.nn.Module,
    example_input: torch.Tensor | tuple[int, ...],
    representation: str = "csr",
    prefix: str = "model",
    leaf_modules: tuple[type, ...] = (),
    concrete_args: dict | None = None,
) -> tuple[ir.Graph, GraphMemory]:
    """Traces, lowers, encodes and plans a model: everything but rendering. The model is not modified."""
    check_prefix(prefix)
    rep = formats.check_representation(representation)
    m = prepare_model(model)
    x = example_from(example_input)
    gm = trace_model(m, x, leaf_modules, concrete_args)
    g = lower(gm)
    encode_graph(g, rep, prefix)
    return g, plan_graph(g)


def weight_bytes(
    model: torch.nn.Module,
    example_input: torch.Tensor | tuple[int, ...],
    representation: str = "csr",
    leaf_modules: tuple[type, ...] = (),
) -> ByteReport:
    """Exact bytes of const weight data ``save_compressed_model`` would emit (MODEL_WEIGHT_BYTES).

    The compressor budgets with this function, so the budget and the C agree by construction.

    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    >>> r = weight_bytes(net, (1, 4)); (r.total, r.layers)
    (60, {'0': 60})
    """
    g, _ = build_graph(model, example_input, representation, leaf_modules=leaf_modules)
    return byte_report(g)


# How a model must be emitted, recorded on it by sparsecomp.compress_NN_models (codegen never imports
# sparsecomp): a plain dict attribute {"representation": str, "weight_bytes": int, "budget_bytes": int}.
EMIT_ATTR = "sparsecomp_emit"


def emit_representation(model: torch.nn.Module, representation: str | None) -> str:
    """``representation`` if given, else the one recorded on ``model`` under ``EMIT_ATTR``, else "csr".

    >>> net = torch.nn.Linear(2, 2); setattr(net, EMIT_ATTR, {"representation": "int8"})
    >>> emit_representation(net, None), emit_representation(net, "csr")
    ('int8', 'csr')
    """
    if representation is not None:
        return representation
    recorded = getattr(model, EMIT_ATTR, None)
    if isinstance(recorded, dict) and isinstance(recorded.get("representation"), str):
        return recorded["representation"]
    return "csr"


def save_compressed_model(
    model: torch.nn.Module,
    representation: str | None = None,
    input_data: torch.Tensor | None = None,
    directory: str | os.PathLike = "sparsecomp_model",
    *,
    input_shape: tuple[int, ...] | None = None,
    prefix: str = "model",
    overwrite: bool = False,
    tolerance: float | None = None,
    leaf_modules: tuple[type, ...] = (),
    concrete_args: dict | None = None,
    integer: bool = False,
    calibration_data=None,
    quantize: bool = False,
    codebook_bits: int = 4,
    arduino: bool = False,
    ram_budget: int | None = None,
    tiling_stages: list[tiling.Stage] | None = None,
    intermittent: bool = False,
    max_unit_macs: int | None = None,
) -> EmitResult:
    """Emits the model as a self-contained C directory (its layout: docs/architecture.md, "The emitted directory").

    ``input_data`` (a batch of 1) becomes headers/input.h with PyTorch's output for it, and
    ``make -C directory check`` compares the C against it. Without it, give ``input_shape``
    (with the batch dim, e.g. (1, 1, 28, 28)). ``representation``, chosen per tensor, the smallest allowed
    form wins: "dense" (float32), "csr" (float32 CSR where smaller than dense), "int8" (int8 dense /
    CSR / relative-index; the weights must lie on an int8 grid: codegen.quantize.quantize_int8_),
    "codebook" (k-means shared values, b-bit packed indices, dense / CSR / relative-index; at most 256
    distinct values per tensor: codegen.quantize.share_weights_), "auto" (the smallest of all).
    Encodings are exact: the C computes with the weights the model has. ``representation=None`` emits
    what ``sparsecomp.compress_NN_models`` budgeted (recorded on the model, ``EMIT_ATTR``), else "csr".

    ``integer=True``: fully integer inference for MCUs without an FPU (codegen/integer.py): int8
    activations calibrated on ``calibration_data`` (a tensor (N, ...) of sample inputs or a DataLoader;
    required), int8 weights per output channel, int32 accumulation. model.h then also declares
    ``<prefix>_run_int8(const int8_t *, int8_t *)`` with the input/output scale and zero point;
    ``<prefix>_run`` keeps its float signature. ``representation`` chooses the int8 weight encodings:
    "int8"/"auto" (dense, CSR or relative-index, the smallest), "csr" (dense or CSR), "dense".
    The self-test (``make check``) then checks the C is bit-exact against the integer reference, and
    that its output is within ``tolerance`` of PyTorch's float output (default
    ``codegen.integer.float_tolerance``: 8 % of max|output| + 2 output quantization steps).

    ``quantize=True`` (with "int8" or "codebook"): one call from a float model to weight-only int8 /
    codebook C. A COPY of the model gets its BatchNorms folded (``codegen.quantize.fold_batchnorm_``) and
    its weights quantized (``quantize_int8_``, or ``share_weights_`` with ``codebook_bits``); that copy is
    emitted (the self-test compares the C with it) and report.json's ``quantization`` section gives the
    error of the copy against the float model on ``calibration_data`` (a tensor (N, ...)) or else
    ``input_data``, as TFLite's converter does (also logged). The default, ``quantize=False``, emits exactly the weights the model has.
    The directory always holds a CMakeLists.txt (a static library target named ``prefix``, for
    ``add_subdirectory`` from a Zephyr / ESP-IDF / STM32Cube / plain CMake project); ``arduino=True`` also
    lays it out as an Arduino library (library.properties, src/, examples/<prefix>_run/).
    ``ram_budget`` (bytes of activation RAM, MODEL_ARENA_BYTES): when layer-by-layer execution needs
    more, the first layers run as a tiled stage (codegen/tiling.py: depth-first over spatial tiles,
    halos recomputed); of the schedules that fit, the one with the fewest extra MACs is emitted, and
    report.json's ``tiling`` section lists the stage, its tile grid, the peak RAM and the extra MACs.
    No schedule fits: CodegenError naming the layer that sets the smallest arena reachable, and that
    figure. ``tiling_stages`` forces the given ``tiling.Stage`` list instead (graph op indices, see
    ``build_graph``). With ``integer=True`` the same search runs over the int8 arena (1-byte values) and
    the int8 kernels run on the tiles (bit-exact with the untiled integer C). ``representation=None`` on a
    model from ``compress_NN_models(..., ram_budget=N)`` also takes its recorded ``ram_budget``.

    ``intermittent=True``: the model also gets ``<prefix>_run_intermittent`` and ``<prefix>_intermittent_reset``
    (model.h), an inference that survives power failures at any instruction: its activations and progress
    live in ``SC_NVM``, every layer is a unit of work committed when done and never overwrites what it
    reads (codegen/intermittent.py, docs/intermittent.md). The Makefile gets ``power-fail-check`` (host, NVM in
    a file, the process killed at seeded points) and ``qemu-power-fail`` (the emulated Cortex-M4 reset at
    seeded instruction counts); report.json an ``intermittent`` section (units, MACs, NVM and SRAM bytes).
    ``<prefix>_run`` and its C are unchanged. With ``ram_budget`` / ``tiling_stages`` each tile of a tiled
    stage is a unit, its tile buffers in ordinary RAM (recomputed after a failure), the rest in NVM.
    ``max_unit_macs`` (layer separation, float and integer paths): a layer of more MACs is split into tiles of
    output channels (convolutions, depthwise convolutions, fully connected layers; weights with addressable
    rows: dense or CSR, float32 or int8), each its own committed unit; a layer that cannot be split that far
    is a CodegenError naming it.

    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
    ...                           torch.nn.Linear(4 * 6 * 6, 10))
    >>> res = save_compressed_model(net, "csr", torch.randn(1, 1, 8, 8), "/tmp/doc_model",
    ...                             overwrite=True)                      # doctest: +SKIP
    >>> res.weight_bytes                                                  # doctest: +SKIP
    5960
    """
    if representation is None and ram_budget is None and not tiling_stages:
        recorded = getattr(model, EMIT_ATTR, None)  # compress_NN_models(..., ram_budget=) records its bound
        if isinstance(recorded, dict) and recorded.get("ram_budget") is not None:
            ram_budget = int(recorded["ram_budget"])
    representation = emit_representation(model, representation)
    if quantize and integer:
        raise CodegenError("quantize=True makes weight-only int8/codebook weights for float inference; integer=True "
                           "quantizes weights and activations by itself: use one of them")  # fmt: skip
    if max_unit_macs is not None and not intermittent:
        raise CodegenError("max_unit_macs bounds the work between two commits of an intermittent inference: "
                           "give intermittent=True with it")
    if integer:
        return save_integer_model(
            model, representation, input_data, directory, calibration_data=calibration_data,
            input_shape=input_shape, prefix=prefix, overwrite=overwrite, leaf_modules=leaf_modules,
            concrete_args=concrete_args, tolerance=tolerance, arduino=arduino, intermittent=intermittent,
            max_unit_macs=max_unit_macs, ram_budget=ram_budget, tiling_stages=tiling_stages,
        )  # fmt: skip
    if calibration_data is not None and not quantize:
        raise CodegenError("calibration_data is only used with integer=True (fully integer inference) or "
                           "quantize=True (the inputs the error is measured on); pass one or drop "
                           "calibration_data")  # fmt: skip
    if quantize and calibration_data is not None and not isinstance(calibration_data, torch.Tensor):
        raise CodegenError("with quantize=True, calibration_data is a tensor (N, ...) of sample inputs on which "
                           f"the error against the float model is measured; got {type(calibration_data).__name__}")
    if input_data is None and input_shape is None:
        raise CodegenError("give input_data (a sample of batch size 1) or input_shape, e.g. (1, 1, 28, 28)")
    example = example_from(input_data if input_data is not None else tuple(input_shape))
    quant_report = None
    if quantize:
        probe = calibration_data if calibration_data is not None else (example if input_data is not None else None)
        model, quant_report = _quantized(model, representation, codebook_bits, probe)
    g, mem = build_graph(model, example, representation, prefix, leaf_modules, concrete_args)
    name = type(model).__name__
    schedule = None
    if tiling_stages:
        schedule = tiling.plan_schedule(g, list(tiling_stages))
    elif ram_budget is not None:
        schedule = tiling.choose_schedule(g, int(ram_budget))
    if schedule is not None:
        mem = schedule.memory
    report = build_report(g, mem, prefix, representation, name)
    if quant_report is not None:
        report["quantization"] = quant_report
    test_io = None
    if input_data is not None:
        m = prepare_model(model)
        with torch.no_grad():
            y = m(example.clone()).detach().float().numpy()
        if not np.all(np.isfinite(y)):
            raise CodegenError("the model's output for input_data is not finite (NaN/inf); check the model")
        tol = default_tolerance(y) if tolerance is None else float(tolerance)
        doc = "given by the caller" if tolerance is not None else (
            f"max abs error <= {RTOL:g} x max|output| + {ATOL:g} (codegen.api.default_tolerance)")  # fmt: skip
        test_io = (example.numpy().astype(np.float32), y.astype(np.float32), tol, doc)
        report["test"] = {"tolerance": tol, "max_abs_output": float(np.max(np.abs(y)))}
    e = Emission(g, mem, prefix, representation, name, report, test_io, arduino=arduino)
    adders = []
    if schedule is not None:
        report["tiling"] = schedule.report(g)
        if schedule.stages:
            e.extra_context = tiling.emission_context(g, schedule, emit.model_runtime_headers(g))
            adders.append(_add_tile_runtime)
    if intermittent:
        it = intermittent_plan(g, prefix, report, max_unit_macs=max_unit_macs, schedule=schedule)
        report["intermittent"] = it.report(mem.arena_bytes)
        e.extra_context = {**e.extra_context, "intermittent": it.context()}
        adders.append(intermittent_files(e))
    if adders:
        e.add_files = each_adder(adders)
    return write_emission(e, directory, overwrite)


def plan_ram(model: torch.nn.Module, example: torch.Tensor | tuple[int, ...], ram_budget: int,
             representation: str = "csr") -> dict:  # fmt: skip
    """The ``tiling`` report section of the schedule ``save_compressed_model(model, representation,
    ram_budget=ram_budget)`` emits (layer-by-layer arena, peak RAM, stages, extra MACs), without emitting;
    CodegenError naming the smallest arena reachable when no schedule fits. sparsecomp's
    ``compress_NN_models(..., ram_budget=)`` calls it before and after compressing."""
    g, _ = build_graph(model, example, representation)
    return tiling.choose_schedule(g, int(ram_budget)).report(g)


def _add_tile_runtime(r: emit.Rendered) -> None:
    r.copies[f"runtime/{tiling.TILE_HEADER}"] = runtime_dir() / tiling.TILE_HEADER




def _quantized(model: torch.nn.Module, representation: str, bits: int,
               x: torch.Tensor | None) -> tuple[torch.nn.Module, dict]:  # fmt: skip
    """The folded, quantized copy of ``model`` to emit, and its report section: what was done and the
    error of the copy against the float model on ``x`` (None: no input to measure on)."""
    from codegen.quantize import quantized_copy

    float_model = prepare_model(model)
    q, folded = quantized_copy(float_model, representation, bits)
    section: dict = {
        "weights": "int8 per output channel" if representation == "int8" else f"codebook, {bits} bits per layer",
        "batchnorm_folded": [f"{layer} <- {bn}" for layer, bn in folded],
        "max_abs_error_vs_float": None, "max_rel_error_vs_float": None,
    }  # fmt: skip
    if x is not None:
        with torch.no_grad():
            x = x.detach().to("cpu").float()
            ref = float_model(x.clone()).detach().double()
            out = q(x.clone()).detach().double()
        err = float((out - ref).abs().max()) if ref.numel() else 0.0
        scale = float(ref.abs().max()) if ref.numel() else 0.0
        section["max_abs_error_vs_float"] = err
        section["max_rel_error_vs_float"] = err / scale if scale else err
        section["samples"] = int(x.shape[0])
        log.info("quantized %s (%s, %d BatchNorm folded): max abs error %.3g (%.3g of max |output|) against "
                 "the float model on the given input", type(model).__name__, section["weights"], len(folded),
                 err, section["max_rel_error_vs_float"])  # fmt: skip
    return q, section


@dataclass
class VerifyResult:
    max_abs_error: float
    max_rel_error: float  # max abs error / max |reference|
    outputs: np.ndarray
    reference: np.ndarray


def _prefix_of(directory: Path) -> str:
    import json

    try:
        return str(json.loads((directory / emit.REPORT_NAME).read_text())["prefix"])
    except (OSError, ValueError, KeyError) as exc:
        raise CodegenError(f"{directory} is not a directory emitted by sparsecomp (no report.json)") from exc


def compile_host(directory: str | os.PathLike, driver_c: str, out_dir: Path, cc: str | None = None,
                 extra_flags: tuple[str, ...] = ()) -> Path:  # fmt: skip
    """Compiles the emitted model plus a driver source with the host compiler; returns the binary."""
    directory = Path(directory)
    cc = cc or os.environ.get("CC", "cc")
    drv = out_dir / "driver.c"
    drv.write_text(driver_c)
    exe = out_dir / "driver"
    cmd = [cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", *extra_flags,
           f"-I{directory}", str(directory / "model.c"), str(drv), "-o", str(exe), "-lm"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CodegenError(f"compiling {directory} failed:\n{' '.join(cmd)}\n{proc.stderr}")
    return exe


def verify(
    model: torch.nn.Module,
    directory: str | os.PathLike,
    inputs: torch.Tensor,
    *,
    cc: str | None = None,
    extra_flags: tuple[str, ...] = (),
) -> VerifyResult:
    """Builds the emitted C with the host compiler, runs it on every sample of ``inputs`` (N, ...)
    and compares with PyTorch.

    >>> res = verify(net, "my_model", torch.randn(16, 1, 28, 28))   # doctest: +SKIP
    >>> res.max_abs_error < 1e-4                                      # doctest: +SKIP
    True
    """
    directory = Path(directory)
    prefix = _prefix_of(directory)
    m = prepare_model(model)
    x = inputs.detach().to("cpu").float()
    with torch.no_grad():
        ref = torch.cat([m(x[i : i + 1].clone()) for i in range(x.shape[0])]).numpy()
    build = Path(tempfile.mkdtemp(prefix="sparsecomp-verify-"))
    try:
        exe = compile_host(directory, emit.render_verify_main(prefix, VERSION), build, cc, extra_flags)
        proc = subprocess.run([str(exe)], input=x.numpy().astype("<f4").tobytes(), capture_output=True, timeout=600)
        if proc.returncode != 0:
            raise CodegenError(f"the emitted model failed with exit code {proc.returncode}: {proc.stderr.decode()}")
    finally:
        shutil.rmtree(build, ignore_errors=True)
    out = np.frombuffer(proc.stdout, dtype="<f4").reshape(ref.shape)
    err = float(np.max(np.abs(out.astype(np.float64) - ref))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    return VerifyResult(err, err / scale if scale else err, out, ref)
