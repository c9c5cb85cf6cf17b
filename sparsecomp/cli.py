"""The ``sparsecomp`` command line.

    sparsecomp emit PACKAGE.MODULE:FACTORY --weights W.pt --input-shape 1,1,28,28 -o DIR
                    [--representation R] [--prefix P] [--overwrite]
                    [--quantize [--codebook-bits B]]   fold BatchNorm + quantize a copy (int8/codebook)
    sparsecomp compress PACKAGE.MODULE:FACTORY --weights W.pt --data DATA --budget 20KB --out DIR
                    [--representation auto] [--epochs N] [--time-limit S]
    sparsecomp report DIR        pretty-print DIR/report.json of an emitted model
    sparsecomp board DIR         build and run DIR on the emulated Cortex-M boards

Example::

    $ sparsecomp emit mypkg.models:lenet5 --weights lenet5.pt --input-shape 1,1,28,28 -o lenet5_c
    $ make -C lenet5_c check
    $ sparsecomp report lenet5_c
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from codegen.formats import REPRESENTATIONS

logger = logging.getLogger(__name__)


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: use comma-separated integers like 1,1,28,28") from None
    if not shape or any(s <= 0 for s in shape):
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: dimensions must be positive")
    return shape


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return n


def _load_factory(spec: str):
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise CLIError(f"model must be PACKAGE.MODULE:FACTORY, got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise CLIError(f"cannot import {mod_name!r}: {exc}") from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CLIError(f"{mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise CLIError(f"{spec} is not callable")
    return obj


def cmd_emit(args: argparse.Namespace) -> int:
    import torch

    from codegen import save_compressed_model

    factory = _load_factory(args.model)
    model = factory()
    if not isinstance(model, torch.nn.Module):
        raise CLIError(f"{args.model}() returned {type(model).__name__}, not a torch.nn.Module")
    if args.weights:
        wpath = Path(args.weights)
        if not wpath.is_file():
            raise CLIError(f"weights file {wpath} does not exist")
        try:
            state = torch.load(wpath, map_location="cpu", weights_only=True)
        except Exception as exc:  # not a torch file, a pickle with foreign objects, a truncated file
            with open(wpath, "rb") as f:
                head = f.read(4)
            if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # zip (torch.save) or pickle
                raise CLIError(f"{wpath} is not a file saved with torch.save; save model.state_dict() with "
                               "torch.save and pass that file") from exc
            raise CLIError(f"cannot load {wpath}: it is damaged or holds Python objects other than tensors "
                           f"(torch.load(weights_only=True): {type(exc).__name__}); save model.state_dict() with "
                           "torch.save and pass that file") from exc
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise CLIError(f"{wpath} does not hold a state_dict")
        try:
            model.load_state_dict(state)
        except Exception as exc:
            raise CLIError(f"{wpath} does not match {args.model}(): {exc}") from exc
    model.eval()
    representation = args.representation or _budgeted_representation(args.weights) or "csr"
    torch.manual_seed(args.seed)
    sample = torch.rand(args.input_shape) if args.self_test else None
    res = save_compressed_model(
        model, representation, input_data=sample, directory=args.output,
        input_shape=None if sample is not None else args.input_shape, prefix=args.prefix,
        overwrite=args.overwrite, quantize=args.quantize, codebook_bits=args.codebook_bits,
        arduino=args.arduino,
    )  # fmt: skip
    print(f"emitted {args.model} to {res.directory} as {representation}: {res.weight_bytes} weight bytes, "
          f"{res.arena_bytes} arena bytes")
    q = res.report.get("quantization")
    if q is not None:
        err = "" if q["max_abs_error_vs_float"] is None else (
            f"; max abs error against the float model {q['max_abs_error_vs_float']:.3g} "
            f"({100 * q['max_rel_error_vs_float']:.2f} % of max |output|)")  # fmt: skip
        print(f"quantized a copy: {q['weights']}, {len(q['batchnorm_folded'])} BatchNorm folded{err}")
    if sample is not None:
        print(f"build and self-test with: make -C {res.directory} check")
    return 0


def _budgeted_representation(weights: str | None) -> str | None:
    """The representation ``sparsecomp compress`` budgeted ``weights`` for: the "emit" entry of the
    report.json it wrote beside model.pt (None when there is no such report)."""
    if not weights:
        return None
    rj = Path(weights).parent / "report.json"
    if not rj.is_file():
        return None
    try:
        emit = json.loads(rj.read_text()).get("emit")
    except (OSError, ValueError, AttributeError) as exc:
        raise CLIError(f"{rj} (written by sparsecomp compress beside the weights) is not readable JSON: {exc}; "
                       "pass --representation explicitly or remove it") from exc
    if not isinstance(emit, dict):
        return None
    rep = emit.get("representation")
    if rep not in REPRESENTATIONS:
        raise CLIError(f"{rj} names representation {rep!r}, which is not one of {sorted(REPRESENTATIONS)}; "
                       "pass --representation explicitly")
    print(f"{rj}: emitting as {rep!r}, the representation the compressor budgeted "
          f"({emit.get('weight_bytes')} B for a budget of {emit.get('budget_bytes')} B)")
    return rep


def _load_data(spec: str, batch_size: int, seed: int):
    """(train, val, test) loaders from ``--data``: PACKAGE.MODULE:CALLABLE returning (train, val, test)
    or (train, test) loaders; a directory with the MNIST idx files; or a ``.pt`` file holding
    ``{"x": inputs, "y": labels}`` (split 70/10/20, seeded)."""
    import torch
    from torch.utils.data import DataLoader, Subset, TensorDataset

    path = Path(spec)
    if path.is_dir():
        from .data import load_mnist

        try:
            return load_mnist(path, batch_size=batch_size, seed=seed)
        except (FileNotFoundError, ValueError) as exc:
            raise CLIError(f"--data {spec}: not an MNIST directory ({exc})") from exc
    if path.suffix == ".pt" or path.is_file():
        if not path.is_file():
            raise CLIError(f"--data file {path} does not exist")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
            raise CLIError(f"--data {path} is not a torch file holding {{'x': inputs, 'y': labels}}: {exc}") from exc
        if not (isinstance(blob, dict) and isinstance(blob.get("x"), torch.Tensor)
                and isinstance(blob.get("y"), torch.Tensor) and len(blob["x"]) == len(blob["y"]) >= 10):
            raise CLIError(f"--data {path} must hold {{'x': inputs, 'y': labels}} tensors of equal length >= 10")
        n = len(blob["y"])
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        n_te, n_va = max(1, n // 5), max(1, n // 10)
        ds = TensorDataset(blob["x"], blob["y"])

        def mk(idx, shuffle):
            return DataLoader(Subset(ds, idx), batch_size=batch_size, shuffle=shuffle,
                              generator=torch.Generator().manual_seed(seed))

        return mk(perm[n_te + n_va:], True), mk(perm[n_te:n_te + n_va], False), mk(perm[:n_te], False)
    loaders = _load_factory(spec)()
    if not isinstance(loaders, (tuple, list)) or len(loaders) not in (2, 3):
        raise CLIError(f"{spec}() must return (train, val, test) or (train, test) loaders")
    return tuple(loaders) if len(loaders) == 3 else (loaders[0], None, loaders[1])


def _factory_state(compressed, fresh) -> dict:
    """The compressed weights as a state_dict of the factory's own structure, so ``sparsecomp emit`` can
    load it.  A BatchNorm the compressor folded into its layer becomes an exact identity (mean 0, a gamma
    with gamma / sqrt(var + eps) == 1.0 in codegen's float32 arithmetic, beta = the folded bias when the
    layer had none), so codegen's own folding at emission gives back the compressed weights bit for bit."""
    import torch
    import torch.nn as nn

    comp_mods = dict(compressed.named_modules())
    state = compressed.state_dict()
    out = {}
    for name, mod in fresh.named_modules():
        got = comp_mods.get(name)
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and isinstance(got, nn.Identity):
            layer = _folded_into(fresh, name)
            if layer is None or not mod.affine or mod.running_var is None:
                raise CLIError(f"cannot express the folded BatchNorm {name!r} in {type(fresh).__name__}'s structure")
            var, gamma = _identity_bn(mod.eps)
            c = mod.num_features
            out[f"{name}.weight"] = torch.full((c,), gamma)
            out[f"{name}.running_mean"] = torch.zeros(c)
            out[f"{name}.running_var"] = torch.full((c,), var)
            has_bias = getattr(fresh.get_submodule(layer), "bias", None) is not None
            out[f"{name}.bias"] = torch.zeros(c) if has_bias else state[f"{layer}.bias"].detach().clone()
            if mod.num_batches_tracked is not None:
                out[f"{name}.num_batches_tracked"] = mod.num_batches_tracked.clone()
            continue
        if got is None or type(got) is not type(mod) and not isinstance(mod, nn.modules.batchnorm._BatchNorm):
            raise CLIError(f"the compressed model's structure differs from the factory's at {name!r} "
                           f"({type(got).__name__} vs {type(mod).__name__})")
    fresh_state = fresh.state_dict()
    for k in fresh_state:
        if k not in out:
            if k not in state:
                raise CLIError(f"the compressed model has no {k!r}")
            out[k] = state[k].detach().clone()
    return out


def _folded_into(model, bn_name: str) -> str | None:
    """The Conv/Linear layer the BatchNorm ``bn_name`` follows (as sparsecomp.fold_batchnorm_ pairs them)."""
    from codegen.trace import LeafTracer

    for node in LeafTracer().trace(model).nodes:
        if node.op == "call_module" and node.target == bn_name and node.args:
            src = node.args[0]
            return getattr(src, "target", None) if getattr(src, "op", "") == "call_module" else None
    return None


def _identity_bn(eps: float) -> tuple[float, float]:
    """(running_var, gamma) with float32(gamma / sqrt(var + eps)) == 1.0 in codegen's arithmetic."""
    import numpy as np

    for var in (1.0, 0.5, 2.0, 0.25, 4.0):
        v = float(np.float32(var))
        target = np.sqrt(np.float64(v) + eps)
        g0 = np.float32(target)
        for g in (g0, np.nextafter(g0, np.float32(0)), np.nextafter(g0, np.float32(2))):
            if np.float32(np.float64(g) / np.sqrt(np.float64(v) + eps)) == np.float32(1.0):
                return v, float(g)
    raise CLIError(f"no exact identity BatchNorm for eps={eps}")  # pragma: no cover


def cmd_compress(args: argparse.Namespace) -> int:
    import torch

    from . import compress_NN_models
    from .compress import BudgetError, CompressionError

    factory = _load_factory(args.model)
    model = factory()
    if not isinstance(model, torch.nn.Module):
        raise CLIError(f"{args.model}() returned {type(model).__name__}, not a torch.nn.Module")
    wpath = Path(args.weights)
    if not wpath.is_file():
        raise CLIError(f"weights file {wpath} does not exist")
    try:
        state = torch.load(wpath, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    except Exception as exc:  # noqa: BLE001 - a wrong or unreadable file is one user error
        raise CLIError(f"{wpath} is not a state_dict of {args.model}(): {exc}") from exc
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise CLIError(f"{out} exists and is not empty; pass --overwrite to replace model.pt and report.json in it")
    train, val, test = _load_data(args.data, args.batch_size, args.seed)
    try:
        report = compress_NN_models(
            model, args.budget, train, test, val_loader=val, representation=args.representation,
            num_epochs=args.epochs, time_limit=args.time_limit, seed=args.seed, progress=not args.quiet,
            finalists=args.finalists,
            # the state_dict must load into the factory's own structure: no factorized layers, no removed channels
            layers_factorization=False, channel_pruning=False,
        )  # fmt: skip
    except (BudgetError, CompressionError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    from codegen.api import EMIT_ATTR

    emit = getattr(model, EMIT_ATTR)
    fresh = factory()
    state = _factory_state(model, fresh)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(state, out / "model.pt")
    info = {**report.to_dict(), "emit": emit, "model": args.model}
    (out / "report.json").write_text(json.dumps(info, indent=1, default=str))
    (out / "report.txt").write_text(str(report) + "\n")
    print(report)
    shape = ",".join(str(s) for s in next(iter(test))[0][:1].shape)
    print(f"\nwrote {out / 'model.pt'} and {out / 'report.json'}; emit it with:\n"
          f"  sparsecomp emit {args.model} --weights {out / 'model.pt'} --input-shape {shape} "
          f"-o DIR   (it reads the representation, " f"{emit['representation']}, from report.json)")
    return 0 if report.within_budget else 1


def format_report(info: dict) -> str:
    """Human-readable table of an emitted directory's report.json."""
    try:
        from codegen.api import format_table

        body = format_table(info)
    except (ImportError, KeyError):  # pragma: no cover - fallback for foreign report files
        body = json.dumps(info.get("layers", []), indent=2)
    head = [
        f"model:          {info.get('model', '?')} (prefix {info.get('prefix', '?')}, "
        f"{info.get('representation', '?')})",
        f"generator:      {info.get('generator', '?')}",
        f"input / output: {info.get('input_shape')} -> {info.get('output_shape')}",
        "",
    ]
    return "\n".join(head) + body


def cmd_report(args: argparse.Namespace) -> int:
    path = Path(args.directory)
    rj = path if path.is_file() else path / "report.json"
    if not rj.is_file():
        raise CLIError(f"{rj} not found: is {args.directory} a directory emitted by sparsecomp?")
    try:
        info = json.loads(rj.read_text())
    except json.JSONDecodeError as exc:
        raise CLIError(f"{rj} is not valid JSON: {exc}") from exc
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_report(info))
    return 0


def cmd_board(args: argparse.Namespace) -> int:
    try:
        from codegen.board import board_command
    except ImportError as exc:
        raise CLIError(f"board support is not available: {exc}") from exc
    rc = board_command(args.directory, tuple(args.target or ("m4",)), json_path=args.json)
    return int(rc) if isinstance(rc, int) else 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="sparsecomp",
        description="Compress PyTorch models to a byte budget and emit plain C99 for Cortex-M.",
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    e = sub.add_parser("emit", help="emit C for a model built by a Python factory",
                       description="Build a model with PACKAGE.MODULE:FACTORY(), load weights, emit C.")
    e.add_argument("model", metavar="PACKAGE.MODULE:FACTORY", help="callable returning the nn.Module")
    e.add_argument("--weights", metavar="W.pt", help="state_dict saved with torch.save (optional)")
    e.add_argument("--input-shape", required=True, type=_parse_shape, metavar="N,C,H,W",
                   help="example input shape including the batch dimension (batch 1), e.g. 1,1,28,28")
    e.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    e.add_argument("--representation", default=None, choices=sorted(REPRESENTATIONS),
                   help="weight storage; by default the one `sparsecomp compress` budgeted (the report.json beside "
                        "--weights), else csr. int8/codebook need a quantized/shared model (or --quantize)")
    e.add_argument("--quantize", action="store_true",
                   help="with --representation int8/codebook: fold BatchNorm and quantize a copy of the float model "
                        "(int8 per output channel, or k-means codebook), emit it and print its error against the float "
                        "model on the self-test input. Without it the weights are emitted exactly as they are")
    e.add_argument("--codebook-bits", type=int, default=4, metavar="B",
                   help="bits per codebook index with --quantize --representation codebook (1..8, default 4)")
    e.add_argument("--prefix", default="model", help="prefix of the C names (default model)")
    e.add_argument("--overwrite", action="store_true",
                   help="also write into a non-empty DIR that sparsecomp did not write (or over files changed since "
                        "it wrote them): replaces the files sparsecomp writes (Makefile, model.c, ...) and keeps every "
                        "other file. Not needed to re-emit into a directory sparsecomp wrote")
    e.add_argument("--no-self-test", dest="self_test", action="store_false",
                   help="do not embed a random test input (headers/input.h) for `make check`")
    e.add_argument("--seed", type=int, default=0, help="seed of the random self-test input")
    e.add_argument("--arduino", action="store_true",
                   help="also lay DIR out as an Arduino library (library.properties, src/, examples/)")
    e.set_defaults(func=cmd_emit)

    c = sub.add_parser("compress", help="compress a model to a byte budget",
                       description="Build a model with PACKAGE.MODULE:FACTORY(), load its weights, compress it to "
                                   "--budget on --data, write DIR/model.pt (a state_dict of the same factory) and "
                                   "DIR/report.json; then `sparsecomp emit` on DIR/model.pt.")
    c.add_argument("model", metavar="PACKAGE.MODULE:FACTORY", help="callable returning the nn.Module")
    c.add_argument("--weights", required=True, metavar="W.pt", help="trained state_dict (torch.save)")
    c.add_argument("--data", required=True, metavar="DATA",
                   help="PACKAGE.MODULE:CALLABLE returning (train, val, test) or (train, test) DataLoaders, "
                        "a directory of MNIST idx files, or a .pt file holding {'x': inputs, 'y': labels}")
    c.add_argument("--budget", required=True, metavar="SIZE", help="weight bytes, e.g. 20KB, 96KiB, 4096B")
    c.add_argument("--representation", default="auto", choices=sorted([*REPRESENTATIONS, "per-layer", "cws", "pws", "uq", "ecsq"]),
                   help="weight storage (default auto: the most accurate at the budget)")
    c.add_argument("--epochs", type=int, default=None, help="epochs per retraining round (default: from the data size)")
    c.add_argument("--time-limit", type=float, default=None, metavar="S", help="stop after S seconds")
    c.add_argument("--finalists", type=_positive_int, default=None, metavar="N",
                   help="auto: how many of the probes' best representations run in full (default: up to "
                        "MAX_FINALISTS within FINALIST_SECONDS; 1 is fastest)")
    c.add_argument("--batch-size", type=int, default=64, help="batch size for a data file or directory")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", required=True, metavar="DIR", help="where model.pt and report.json go")
    c.add_argument("--overwrite", action="store_true", help="write into a non-empty DIR")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    c.set_defaults(func=cmd_compress)

    r = sub.add_parser("report", help="pretty-print report.json of an emitted directory",
                       description="Pretty-print the per-layer table of an emitted model directory.")
    r.add_argument("directory", metavar="DIR")
    r.add_argument("--json", action="store_true", help="print the raw JSON")
    r.set_defaults(func=cmd_report)

    b = sub.add_parser("board", help="build and run an emitted directory on the emulated boards",
                       description="Cross-build DIR for Cortex-M, run it under QEMU and report size/cycles.")
    b.add_argument("directory", metavar="DIR")
    b.add_argument("--target", action="append", choices=["m4", "m3"],
                   help="board to run on (repeatable; default m4)")
    b.add_argument("--json", metavar="FILE", help="also write the flash/RAM/per-layer instruction figures to FILE")
    b.set_defaults(func=cmd_board)

    from .cli_stages import add_parsers  # prune, share, huffman-encode, huffman-decode, compare-stages

    add_parsers(sub)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sparsecomp`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except CLIError as exc:
        print(f"sparsecomp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sparsecomp {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # codegen errors carry actionable messages: show them without a traceback
        from codegen.errors import CodegenError

        if isinstance(exc, (CodegenError, OSError)):
            print(f"sparsecomp {args.command}: error: {cli_message(str(exc))}", file=sys.stderr)
            return 2
        raise


# Library messages name keyword arguments; on the command line they are options.
_API_TO_CLI = {"overwrite=True (--overwrite on the command line)": "--overwrite", "overwrite=True": "--overwrite",
               "input_shape / --input-shape": "--input-shape"}


def cli_message(text: str) -> str:
    """A library error message with the API's argument names replaced by the CLI's options."""
    for api, cli in _API_TO_CLI.items():
        text = text.replace(api, cli)
    return text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
