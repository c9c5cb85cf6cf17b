"""The emitted C stays what benchmarks/emission_hashes.json recorded (refactors must not change it).

A fast subset here (the integer op zoo, the conv shapes, the early-exit models: about 70 emissions);
the full zoo is ``benchmarks/emission_hashes.py --check benchmarks/emission_hashes.json``. After an
intended change of the emitted C, re-record with ``--out benchmarks/emission_hashes.json`` and say in
the commit which emissions changed and why.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import emission_hashes  # noqa: E402


@pytest.mark.parametrize("subset", ["integer_op/", "conv/Conv2d/", "early_exit/"])
def test_emitted_files_match_the_recorded_hashes(subset):
    want = json.loads((ROOT / "benchmarks" / "emission_hashes.json").read_text())
    got = emission_hashes.hashes(subset)
    assert got, subset
    differ = {k: (want.get(k), v) for k, v in got.items() if want.get(k, {}).get("generated") != v.get("generated")}
    assert not differ, (
        f"{len(differ)} emissions changed (recorded, now): {differ}; if intended, re-record with "
        "benchmarks/emission_hashes.py --out benchmarks/emission_hashes.json"
    )
