"""Finds templates/ and runtime_c/: inside the installed wheel (codegen/templates, codegen/runtime_c)
or, in a source checkout, at the top of the repository."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def resource_dir(name: str) -> Path:
    """Path of the packaged directory ``name`` ("templates" or "runtime_c").

    In the wheel they are data-only (namespace) packages ``codegen.templates`` and
    ``codegen.runtime_c``; their spec's search locations give the real directory (for a namespace
    package ``importlib.resources.files`` returns a MultiplexedPath, which is not a path).
    """
    try:
        spec = importlib.util.find_spec(f"codegen.{name}")
    except ModuleNotFoundError:
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if Path(loc).is_dir():
            return Path(loc)
    path = Path(__file__).resolve().parent.parent / name
    if not path.is_dir():
        raise FileNotFoundError(f"sparsecomp installation is missing its {name}/ directory (looked in {path})")
    return path


def templates_dir() -> Path:
    return resource_dir("templates")


def runtime_dir() -> Path:
    return resource_dir("runtime_c")
