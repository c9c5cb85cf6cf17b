"""Hashes of the emitted directories of the test suite's models, to prove a refactor byte-identical.

Emits the end-to-end zoo of tests/models.py in every representation (dense, csr, int8, codebook,
auto), with integer=True, the integer op zoo of tests/test_integer.py, the conv shapes of
tests/test_ops.py (dense and CSR) and both early-exit models of tests/test_early_exit.py; prints one
line per emission: the hash of the generated files (model.c, model.h, headers/, app/, Makefile,
report.json) and, separately, of the copied runtime (runtime/, board/).

    .venv/bin/python benchmarks/emission_hashes.py --out /tmp/before.json      # on the base commit
    .venv/bin/python benchmarks/emission_hashes.py --check /tmp/before.json    # after the change

``--check`` exits 1 and names every emission whose generated files differ. ``--runtime`` also
compares the copied runtime headers (they change when runtime_c/ is reorganized). ``--sans-includes``
compares a third hash instead, of the generated files without their ``#include "runtime/..."`` lines
and without the ``runtime/`` entries of report.json's file list and its hashes of C files: it proves a
runtime reorganization changed nothing but which runtime headers the model includes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from codegen import save_compressed_model  # noqa: E402
from codegen.quantize import quantize_int8_, share_weights_  # noqa: E402
from sparsecomp.folding import fold_batchnorm_  # noqa: E402

REPRESENTATIONS = ("dense", "csr", "int8", "codebook", "auto")


def _sans_includes(rel: str, data: bytes) -> bytes:
    """The file without what names the runtime headers: model C's runtime #include lines, and the
    runtime/ entries of report.json's file list and its hashes of C files (hashed here, sans includes)."""
    if rel == "report.json":
        def drop(v):  # the runtime/ entries of the file list; the file hashes of C files (hashed here sans includes)
            if isinstance(v, dict):
                return {k: drop(x) for k, x in v.items()
                        if not k.startswith("runtime/") and not (k.endswith((".c", ".h")) and isinstance(x, str))}
            if isinstance(v, list):
                return [drop(x) for x in v if not (isinstance(x, str) and x.startswith("runtime/"))]
            return v

        return json.dumps(drop(json.loads(data)), sort_keys=True).encode()
    if rel.endswith((".c", ".h")):
        return b"".join(ln for ln in data.splitlines(keepends=True) if not ln.startswith(b'#include "runtime/'))
    return data


def _digest(directory: Path, runtime: bool, sans_includes: bool = False) -> str:
    h = hashlib.sha256()
    for p in sorted(directory.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(directory).as_posix()
        if rel.startswith(("runtime/", "board/")) != runtime:
            continue
        data = _sans_includes(rel, p.read_bytes()) if sans_includes else p.read_bytes()
        h.update(rel.encode() + b"\0" + data + b"\0")
    return h.hexdigest()[:16]


def _cases() -> Iterator[tuple[str, Callable[[Path], object]]]:
    import test_early_exit as tee
    import test_integer as ti
    import test_ops as to
    from models import E2E_MODELS, build_model

    for name in E2E_MODELS:
        for rep in REPRESENTATIONS:
            def emit(d: Path, name=name, rep=rep):
                model, x = build_model(name)
                if rep in ("int8", "auto", "codebook"):
                    fold_batchnorm_(model)  # BN folding after quantization would move the weights off the grid
                if rep in ("int8", "auto"):
                    quantize_int8_(model)
                elif rep == "codebook":
                    share_weights_(model, 4)
                return save_compressed_model(model, rep, x, d)
            yield f"e2e/{name}/{rep}", emit
        for rep in ("int8", "csr"):
            def emit_int(d: Path, name=name, rep=rep):
                model, x = build_model(name)
                cal = torch.randn((16, *x.shape[1:]), generator=torch.Generator().manual_seed(0))
                return save_compressed_model(model, rep, x, d, integer=True, calibration_data=cal)
            yield f"integer/{name}/{rep}", emit_int
    for name, (make, shape) in ti.OPS.items():
        def emit_op(d: Path, make=make, shape=shape, name=name):
            torch.manual_seed(sum(map(ord, name)))
            model = make().eval()
            cal = torch.randn((16, *shape[1:]), generator=torch.Generator().manual_seed(0))
            return save_compressed_model(model, "int8", cal[:1], d, integer=True, calibration_data=cal)
        yield f"integer_op/{name}", emit_op
    for table, conv in ((to.CONV2D, torch.nn.Conv2d), (to.CONV1D, torch.nn.Conv1d)):
        for name, (cin, cout, k, s, p, dil, groups, bias, size) in table.items():
            for rep in ("dense", "csr"):
                def emit_conv(d: Path, args=(cin, cout, k, s, p, dil, groups, bias), size=size, rep=rep, conv=conv):
                    torch.manual_seed(0)
                    cin, cout, k, s, p, dil, groups, bias = args
                    m = torch.nn.Sequential(conv(cin, cout, k, s, p, dil, groups, bias), torch.nn.ReLU()).eval()
                    if rep == "csr":
                        to.sparsify_(m[0].weight, 0.4, 0)
                    shape = (1, cin, *size) if isinstance(size, tuple) else (1, cin, size)
                    return save_compressed_model(m, rep, torch.randn(shape), d)
                yield f"conv/{conv.__name__}/{name}/{rep}", emit_conv
    for kind in ("global", "branch"):
        def emit_ee(d: Path, kind=kind):
            from codegen.early_exit import save_compressed_early_exit_model

            net = tee.make_net()
            ee = tee.make_exit_model(net, kind)
            x = tee.inputs()
            return save_compressed_early_exit_model(net, ee, "csr", simulate_exit=tee.simulate_exit,
                                                    input_data=x[:1], directory=d)
        yield f"early_exit/{kind}", emit_ee


def hashes(pattern: str = "") -> dict[str, dict[str, str]]:
    # PyTorch's float results (the expected outputs in headers/input.h, the integer calibration ranges)
    # depend on its thread count: hash with one thread, whatever the machine or pytest-xdist set
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _hashes(pattern)
    finally:
        torch.set_num_threads(threads)


def _hashes(pattern: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (key, emit) in enumerate(_cases()):
            if pattern not in key:
                continue
            d = Path(tmp) / f"m{i}"
            try:
                emit(d)
            except Exception as exc:  # an emission that refuses is part of the record
                out[key] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
                continue
            out[key] = {"generated": _digest(d, False), "runtime": _digest(d, True),
                        "sans_includes": _digest(d, False, sans_includes=True)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write the hashes to this JSON file")
    ap.add_argument("--check", help="compare with a JSON file written by --out; exit 1 on a difference")
    ap.add_argument("--runtime", action="store_true", help="with --check: compare the copied runtime too")
    ap.add_argument("--sans-includes", action="store_true",
                    help="with --check: compare the generated files without their runtime #include lines")
    ap.add_argument("-k", default="", help="only emissions whose key contains this text")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    got = hashes(args.k)
    for key, h in got.items():
        print(f"{key:60s} {h.get('generated', h.get('error'))} {h.get('runtime', '')}")
    if args.out:
        Path(args.out).write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    if args.check:
        want = json.loads(Path(args.check).read_text())
        fields = ("sans_includes", "error") if args.sans_includes else ("generated", "error")
        fields += ("runtime",) if args.runtime else ()
        bad = [k for k in got if k in want and any(got[k].get(f) != want[k].get(f) for f in fields)]
        missing = sorted(set(want) - set(got)) if not args.k else []
        for k in bad:
            print(f"DIFFERS: {k}: {want[k]} -> {got[k]}")
        for k in missing:
            print(f"MISSING: {k}")
        print(f"{len(got) - len(bad)}/{len(got)} emissions identical")
        return 1 if bad or missing else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
