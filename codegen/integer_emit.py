"""Integer emission: trace, lower, calibrate and quantize a model (``build_integer``), plan its int8
arena and emit it through the emission core (``save_integer_model``, behind
``save_compressed_model(..., integer=True)``). The fixed-point math, calibration, the int8 forms of the
ops and the quantization pass are in ``codegen.integer``.

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
>>> qm = build_integer(net, torch.zeros(1, 4), torch.randn(64, 4))
>>> qm.run(qm.quantize_input(torch.randn(1, 4).numpy())).dtype
dtype('int8')
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from codegen import emission, emit, formats, integer, ir, tiling
from codegen import intermittent as nvm
from codegen.emit import cfloat
from codegen.errors import CodegenError
from codegen.export_frontend import trace_model
from codegen.formats import CArray
from codegen.integer import Calibration, IntegerModel, calibrate, int8_handler
from codegen.lower import lower
from codegen.memory import GraphMemory, plan_graph
from codegen.resources import runtime_dir
from codegen.trace import example_from, prepare_model

log = logging.getLogger(__name__)


# ---- building --------------------------------------------------------------------------------------


class _Int8Value(ir.Value):
    """A Value whose elements are int8 (for the arena planner)."""

    @property
    def nbytes(self) -> int:
        return self.numel



def int8_graph(g: ir.Graph) -> ir.Graph:
    """The graph with 1-byte values (same ops): what the planners (memory, tiling) see on the integer path."""
    return ir.Graph({k: _Int8Value(v.name, v.shape, "int8") for k, v in g.values.items()}, g.ops, g.input, g.output)


def plan_int8(g: ir.Graph) -> GraphMemory:
    """The arena of the integer path: the ordinary planner over 1-byte elements (offsets in bytes)."""
    return plan_graph(int8_graph(g))



def build_integer(
    model: torch.nn.Module,
    example_input: torch.Tensor | tuple[int, ...],
    calibration_data,
    representation: str = "int8",
    prefix: str = "model",
    leaf_modules: tuple[type, ...] = (),
    concrete_args: dict | None = None,
) -> IntegerModel:
    """Traces, lowers, calibrates and quantizes a model for the integer path (see the module docstring)."""
    formats.check_representation(representation, integer=True)
    m = prepare_model(model)
    x = example_from(example_input)
    gm = trace_model(m, x, leaf_modules, concrete_args)
    env: dict[str, str] = {}
    producers: dict[str, str] = {}
    g = lower(gm, env, producers)
    ranges, n = calibrate(gm, calibration_data, tuple(x.shape[1:]))
    value_ranges = integer.value_ranges_of(env, producers, ranges)
    g.ops[:] = [int8_handler(op).rewrite(op) for op in g.ops]
    cal = Calibration(gm, env, ranges, value_ranges, producers)
    for p in integer.INT8_PASSES:
        p(g, cal)
    for op in g.ops:
        int8_handler(op)  # refuse unsupported ops before any other work, naming the layer
    qp, qops = integer.quantize_graph(g, value_ranges, representation, prefix)
    emission.allocate_symbols(g, prefix)
    qm = IntegerModel(g, qp, qops, calibration_samples=n)
    qm.memory = plan_int8(g)
    return qm



# ---- emission --------------------------------------------------------------------------------------


def _add_tile_runtime(r: emit.Rendered) -> None:
    r.copies[f"runtime/{tiling.TILE_HEADER}"] = runtime_dir() / tiling.TILE_HEADER


def template_context(qm: IntegerModel, prefix: str) -> dict:
    """The ``integer`` variable of the templates (model.h.j2, model.c.j2 -> model_int8.c.j2)."""
    mem = qm.memory
    assert mem is not None

    def qbuf(value: str) -> str:
        s = mem.storage[value]
        if s.kind == "arena":
            return f"(arena + {s.offset})" if s.offset else "arena"
        return s.kind

    def qscratch(op: ir.Op) -> str:  # the op's kernel scratch in the int8 arena (offsets in bytes)
        off = mem.scratch[op.name]
        return f"(arena + {off})" if off else "arena"

    return {
        "input_scale": cfloat(qm.input_q.scale),
        "input_zero_point": qm.input_q.zero_point,
        "output_scale": cfloat(qm.output_q.scale),
        "output_zero_point": qm.output_q.zero_point,
        "qops": qm.qops,
        "buf": qbuf,
        "scratch": qscratch,
        "arena_bytes": mem.arena_bytes,
    }



def integer_report(qm: IntegerModel) -> dict:
    return {
        "activations": "int8 per tensor (scale, zero point), calibrated min/max",
        "weights": "int8 symmetric per output channel",
        "calibration_samples": qm.calibration_samples,
        "input": qm.input_q.as_dict(),
        "output": qm.output_q.as_dict(),
        "values": {v: q.as_dict() for v, q in sorted(qm.qparams.items())},
    }



def save_integer_model(
    model: torch.nn.Module,
    representation: str,
    input_data: torch.Tensor | None,
    directory,
    *,
    calibration_data,
    input_shape: tuple[int, ...] | None = None,
    prefix: str = "model",
    overwrite: bool = False,
    leaf_modules: tuple[type, ...] = (),
    concrete_args: dict | None = None,
    tolerance: float | None = None,
    arduino: bool = False,
    ram_budget: int | None = None,
    tiling_stages: list | None = None,
    intermittent: bool = False,
    max_unit_macs: int | None = None,
):
    """``save_compressed_model(..., integer=True, calibration_data=...)``: emits the integer path.

    headers/input.h then holds the sample input and the output the integer reference
    (``IntegerModel.run_float``) computes for it, with tolerance 0: the self-test checks the C is
    bit-exact. It also holds PyTorch's float output, and the self-test checks the C's output is
    within ``tolerance`` of it (default ``integer.float_tolerance``: 8 % of max|output| + 2 output steps)
    and fails with a message saying so otherwise. report.json gets an "integer" section (scales, zero
    points) and, under "test", the error against PyTorch's float output and its bound.

    ``ram_budget`` / ``tiling_stages``: tiled execution as on the float path (codegen/tiling.py, planned over
    the int8 graph's 1-byte values; the int8 kernels run on the tiles, bit-exact with the untiled C).
    """
    emission.check_prefix(prefix)
    if input_data is None and input_shape is None:
        raise CodegenError("give input_data (a sample of batch size 1) or input_shape, e.g. (1, 1, 28, 28)")
    example = example_from(input_data if input_data is not None else tuple(input_shape))
    qm = build_integer(model, example, calibration_data, representation, prefix, leaf_modules, concrete_args)
    g = qm.graph
    schedule = None
    if tiling_stages:
        schedule = tiling.plan_schedule(int8_graph(g), list(tiling_stages))
    elif ram_budget is not None:
        schedule = tiling.choose_schedule(int8_graph(g), int(ram_budget))
    if schedule is not None:
        qm.memory = schedule.memory
    mem = qm.memory
    assert mem is not None
    name = type(model).__name__
    report = emission.build_report(g, mem, prefix, representation, name)
    report["integer"] = integer_report(qm)
    test_io = None
    if input_data is not None:
        with torch.no_grad():
            y = prepare_model(model)(example).detach().float().numpy()
        x = example.numpy().astype(np.float32)
        yq = qm.run_float(x).astype(np.float32).reshape(y.shape)
        err = float(np.max(np.abs(yq.astype(np.float64) - y))) if y.size else 0.0
        doc = ("output of the integer reference (codegen.integer.IntegerModel.run_float) for the sample: the C "
               "must be bit-exact")  # fmt: skip
        test_io = (x, yq, 0.0, doc)
        ftol = integer.float_tolerance(y, qm.output_q.scale) if tolerance is None else float(tolerance)
        fdoc = integer.FLOAT_TOLERANCE_DOC if tolerance is None else "given by the caller"
        report["test"] = {"tolerance": 0.0, "max_abs_output": float(np.max(np.abs(yq))) if yq.size else 0.0,
                          "float_model_max_abs_error": err,
                          "float_model_max_abs_output": float(np.max(np.abs(y))) if y.size else 0.0,
                          "float_model_tolerance": ftol, "float_model_tolerance_doc": fdoc}  # fmt: skip
        if not err <= ftol:
            log.warning("%s: the int8 output is %.4g away from PyTorch's float output on the sample, above the bound "
                        "%.4g: `make check` will fail", name, err, ftol)  # fmt: skip
        float_ctx = {"float_expected": CArray(f"{prefix}_test_float_expected", "float", y.reshape(-1)),
                     "float_tolerance": ftol, "float_tolerance_doc": fdoc}  # fmt: skip
    e = emission.Emission(g, mem, prefix, representation, name, report, test_io,
                          extra_context={"integer": template_context(qm, prefix),
                                         **(float_ctx if input_data is not None else {})},
                          what="integer ", arduino=arduino)
    adders = []
    if schedule is not None:
        report["tiling"] = schedule.report(g)
        if schedule.stages:
            qop = {qo.op.name: qo for qo in qm.qops}

            def tile_qop(op: ir.Op) -> integer.QOp:
                return int8_handler(op).tile_form(qop[op.name], op)

            e.extra_context.update(tiling.emission_context(g, schedule, emit.model_runtime_headers(g), tile_qop))
            adders.append(_add_tile_runtime)
    if intermittent:
        it = nvm.plan(int8_graph(g), prefix, report, elem_bytes=1, max_unit_macs=max_unit_macs, schedule=schedule)
        report["intermittent"] = it.report(mem.arena_bytes)
        e.extra_context["intermittent"] = it.context()
        adders.append(nvm.add_files(e))
    if adders:
        e.add_files = emission.each_adder(adders)
    res = emission.write_emission(e, directory, overwrite)
    res.integer_model = qm  # type: ignore[attr-defined]
    return res
