"""Finds templates/ and runtime_c/: inside the installed wheel (codegen/templates, codegen/runtime_c)
or, in a source checkout, at the top of the repository."""

from __future__ import annotations

import importlib.resources
from pathlib import Path


def resource_dir(name: str) -> Path:
    """Path of the packaged directory ``name`` ("templates" or "runtime_c")."""
    try:
        p = importlib.resources.files(f"codegen.{name}")
        path = Path(str(p))
        if path.is_dir():
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    path = Path(__file__).resolve().parent.parent / name
    if not path.is_dir():
        raise FileNotFoundError(f"sparsecomp installation is missing its {name}/ directory (looked in {path})")
    return path


def templates_dir() -> Path:
    return resource_dir("templates")


def runtime_dir() -> Path:
    return resource_dir("runtime_c")
