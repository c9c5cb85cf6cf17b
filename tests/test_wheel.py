"""The wheel is self-sufficient: templates/ and runtime_c/ ship inside it (as codegen/templates and
codegen/runtime_c, found with importlib.resources), and an installed wheel emits a model that builds.

How the test installs the wheel without network and without re-installing torch:
  * the wheel is built from a copy of the source tree (so the checkout gets no build/ or
    egg-info from the test) with ``python -m build --wheel --no-isolation`` (no download of
    setuptools into an isolated build env);
  * a fresh venv (``--without-pip``) gets the wheel with the project's pip
    (``pip --python NEW install --no-deps --no-index``);
  * torch, numpy, jinja2, ... are made importable by a .pth file in the new venv that appends the
    project venv's site-packages to sys.path. A plain path line in a .pth is only appended: the
    .pth files *inside* that directory are not processed, so the project's editable install of
    sparsecomp (an import hook started by a .pth) stays inactive, and the new venv's own
    site-packages (the wheel) comes first on sys.path anyway. The test then asserts where codegen,
    its templates and its runtime were actually loaded from.
Everything runs from a directory outside the repository, so the checkout is not importable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# ~16 s on 2 cores (wheel build ~3 s, venv ~4 s, emit + make ~8 s): not marked slow.

_SKIP_NAMES = {
    ".venv",
    ".git",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "build",
    "dist",
    "__pycache__",
    "tests",
    "examples",
    "benchmarks",
    "docs",
    "out",
}


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)


def _resource_files(top: Path) -> dict[str, bytes]:
    return {
        p.relative_to(top).as_posix(): p.read_bytes()
        for p in sorted(top.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("build")
    src = tmp_path_factory.mktemp("src") / "sparsecomp"
    shutil.copytree(
        REPO,
        src,
        ignore=lambda d, names: [n for n in names if n in _SKIP_NAMES or n.endswith((".egg-info", ".pyc"))],
    )
    dist = tmp_path_factory.mktemp("dist")
    proc = _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", dist, src], cwd=src)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels = list(dist.glob("sparsecomp-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> tuple[Path, Path]:
    """(python of a fresh venv with the wheel installed, its site-packages)."""
    root = tmp_path_factory.mktemp("venv") / "env"
    proc = _run([sys.executable, "-m", "venv", "--without-pip", root])
    assert proc.returncode == 0, proc.stderr
    py = root / "bin" / "python"
    proc = _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", wheel])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = Path(
        _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    ).resolve()
    (site / "_sparsecomp_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return py, site


def test_wheel_ships_templates_and_runtime(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for pkg_dir, repo_dir in (("codegen/templates", "templates"), ("codegen/runtime_c", "runtime_c")):
            for rel, data in _resource_files(REPO / repo_dir).items():
                name = f"{pkg_dir}/{rel}"
                assert name in names, (
                    f"{repo_dir}/{rel} is missing from the wheel (package-data in pyproject.toml)"
                )
                assert z.read(name) == data
        assert "codegen/api.py" in names and "sparsecomp/__init__.py" in names
        assert not any(n.startswith("tests/") for n in names)
        entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "sparsecomp = sparsecomp.cli:main" in z.read(entry).decode()


_LOCATE = r"""
import json, sys
import codegen, sparsecomp
from codegen import resources

info = {"codegen": codegen.__file__, "sparsecomp": sparsecomp.__file__, "sys_path": sys.path}
for name in ("templates", "runtime_c"):
    try:
        info[name] = str(resources.resource_dir(name))
    except Exception as exc:
        info[name] = f"ERROR {type(exc).__name__}: {exc}"
json.dump(info, sys.stdout)
"""

_EMIT = r"""
import json, sys
import torch, torch.nn as nn
import codegen

torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                    nn.Linear(4 * 3 * 3, 5))
with torch.no_grad():
    net[5].weight[:, ::2] = 0.0
res = codegen.save_compressed_model(net, "csr", input_data=torch.randn(1, 1, 8, 8), directory="emitted")
# the integer path uses its own templates (templates/ops_int8) and runtime headers
codegen.save_compressed_model(net.eval(), "int8", input_data=torch.randn(1, 1, 8, 8), directory="emitted_int8",
                              integer=True, calibration_data=torch.randn(16, 1, 8, 8))
json.dump({"weight_bytes": res.weight_bytes}, sys.stdout)
"""

def _outside(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    work = tmp_path / "outside"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return work, env


def _installed(path: str, site: Path, what: str) -> None:
    assert not path.startswith("ERROR"), f"{what}: {path}"
    p = Path(path).resolve()
    assert p.is_relative_to(site), f"{what} loaded from {p}, not from the installed wheel in {site}"
    assert not p.is_relative_to(REPO), f"{what} loaded from the checkout: {p}"


def test_installed_wheel_imports_from_its_site_packages(venv, tmp_path):
    py, site = venv
    work, env = _outside(tmp_path)
    proc = _run([py, "-c", _LOCATE], cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout)
    _installed(info["codegen"], site, "codegen")
    _installed(info["sparsecomp"], site, "sparsecomp")
    assert not any((work / p).resolve() == REPO for p in info["sys_path"])  # "" is the cwd: work


def test_installed_wheel_finds_its_templates_and_runtime(venv, tmp_path):
    py, site = venv
    work, env = _outside(tmp_path)
    info = json.loads(_run([py, "-c", _LOCATE], cwd=work, env=env).stdout)
    _installed(info["templates"], site, "templates")
    _installed(info["runtime_c"], site, "runtime_c")


def test_installed_wheel_emits_a_model_that_builds(venv, tmp_path):
    py, site = venv
    work, env = _outside(tmp_path)
    proc = _run([py, "-c", _EMIT], cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout)

    d = work / "emitted"
    assert (d / "runtime" / "sc_runtime.h").read_bytes() == (REPO / "runtime_c" / "sc_runtime.h").read_bytes()
    check = _run(["make", "-C", d, "check"], env=env)
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    assert "SC_PASS" in check.stdout
    check = _run(["make", "-C", work / "emitted_int8", "check"], env=env)
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    assert "SC_PASS" in check.stdout

    # the console script of the wheel works too
    cli = py.parent / "sparsecomp"
    assert cli.exists()
    rep = _run([cli, "report", d], cwd=work, env=env)
    assert rep.returncode == 0, rep.stderr
    assert str(info["weight_bytes"]) in rep.stdout
