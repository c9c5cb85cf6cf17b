"""The bytes of a layer have one owner (issue 19 item 6): sparsecomp.budget.LayerBytes knows each compressible
layer's geometry and how it is stored, and turns nonzeros into bytes; QuantPlan only says how a layer is stored;
no other sparsecomp module counts bytes or imports a byte counter except from sparsecomp.budget, and budget.py
never calls into bits.py.  The estimates agree with codegen's exact count where codegen's formula is exact."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from codegen import weight_bytes
from codegen.formats import encoded_nbytes
from sparsecomp.bits import joint_bits
from sparsecomp.budget import ByteModel, LayerBytes, QuantPlan, current_nnz

SPARSECOMP = Path(__file__).resolve().parents[1] / "sparsecomp"
# what counts bytes: codegen's counters, and the owner's own formulas
BYTE_COUNTERS = {"weight_bytes", "encoded_nbytes", "tensor_nbytes", "exit_weight_bytes", "ENCODINGS", "byte_report",
                 "layer_nbytes", "LayerBytes", "ByteModel", "exact_weight_bytes", "exit_heads_bytes"}


def _pruned_mlp(density: float = 0.3, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(40, 32), nn.ReLU(), nn.Linear(32, 6))
    with torch.no_grad():
        for m in (model[0], model[2]):
            m.weight.mul_(torch.rand_like(m.weight) < density)
    return model


def _imports(path: Path):
    """(module imported from, names) of every ``from X import names`` in ``path``, inside functions too."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            yield ("." * node.level) + (node.module or ""), [a.name for a in node.names]


def test_byte_counters_are_imported_only_from_the_owner():
    bad = []
    for path in sorted(SPARSECOMP.glob("*.py")):
        if path.name == "budget.py":
            continue
        for module, names in _imports(path):
            counters = sorted(set(names) & BYTE_COUNTERS)
            if counters and module not in (".budget", "sparsecomp.budget"):
                bad.append(f"{path.name}: from {module} import {counters}")
    assert not bad, "byte counters imported from outside sparsecomp.budget: " + "; ".join(bad)


def test_budget_does_not_call_into_bits_and_the_plan_counts_no_bytes():
    modules = {m for m, _ in _imports(SPARSECOMP / "budget.py")}
    assert not {".bits", "sparsecomp.bits", ".compress", "sparsecomp.compress"} & modules
    assert not [a for a in vars(QuantPlan) if "byte" in a.lower()]
    import sparsecomp.bits

    assert sparsecomp.bits.QuantPlan is QuantPlan  # the public name still resolves


@pytest.mark.parametrize("representation", ["csr", "dense"])
def test_float_layer_bytes_are_codegens_exact_ones(representation):
    """Float weights: the owner's bytes are codegen's exact per-layer bytes minus the float bias."""
    model = _pruned_mlp(0.2)
    x = torch.randn(1, 40)
    report = weight_bytes(model, x, representation)
    lb = LayerBytes(model, representation)
    assert lb.nnz == current_nnz(model)
    for name, m in (("0", model[0]), ("2", model[2])):
        assert lb.nbytes(name) + 4 * m.out_features == report.layers[name]
        assert lb.nbytes(name) == encoded_nbytes(*m.weight.shape, int((m.weight != 0).sum()), representation)
    assert lb.format_of("0") == ("csr" if representation == "csr" else "dense")
    bm = ByteModel(model, x, representation)
    assert bm.estimate(current_nnz(model)) == bm.exact_total == report.total
    assert bm.fixed == report.total - sum(report.layers[n] for n in ("0", "2")) + 4 * (32 + 6)


def test_auto_stores_a_layer_float_where_that_is_smaller():
    """Under "auto" a planned layer costs the smaller of its kind and float (codegen picks it); the plan's kind
    alone (``kind=``) is what make_plan compares; the same plan under "codebook" has no float escape."""
    model = _pruned_mlp(0.02)
    plan = QuantPlan("auto", {"0": ("codebook", 8), "2": ("codebook", 8)}, ("codebook", 8))
    auto = LayerBytes(model, "auto", plan)
    cb = LayerBytes(model, "codebook", QuantPlan("codebook", dict(plan.layers), plan.default))
    name, nnz = "0", auto.nnz["0"]
    csr, book = auto.nbytes(name, nnz, ("csr", None)), auto.nbytes(name, nnz, ("codebook", 8))
    assert csr < book, "the test needs a layer where float is smaller than an 8-bit codebook"
    assert auto.nbytes(name, nnz) == csr
    assert cb.nbytes(name, nnz) == book
    # and codegen agrees: the auto model stores that layer float, at exactly those bytes
    exact = ByteModel(model, torch.randn(1, 40), "auto", plan).exact_layers[name]
    assert exact == csr + 4 * 32


def test_new_layers_are_stored_as_the_plan_default_and_huffman_is_estimated_as_codebook():
    model = _pruned_mlp()
    plan = QuantPlan("huffman", {"0": ("codebook", 4), "2": ("codebook", 4)}, ("codebook", 8))
    lb = LayerBytes(model, "huffman", plan)
    assert lb.shape_nbytes(3, 40, 120) == lb.shape_nbytes(3, 40, 120, ("codebook", 8))
    assert LayerBytes(model, "csr").shape_nbytes(3, 40, 120) == encoded_nbytes(3, 40, 120, "csr")
    rep, as_plan = lb.estimated_as
    assert rep == "codebook" and as_plan.representation == "codebook" and as_plan.layers == plan.layers
    assert plan.representation == "huffman"  # the caller's plan is not changed
    cb_plan = QuantPlan("codebook", dict(plan.layers), plan.default)
    assert LayerBytes(model, "codebook", cb_plan).estimated_as == ("codebook", cb_plan)


def test_joint_bits_and_the_plan_ask_the_owner_at_the_current_density():
    """joint_bits lowers first the layer whose narrower width saves the most of the owner's bytes (here the big
    one, and only once pruned to the point where the codebook indices dominate)."""
    from sparsecomp.bits import BitsResult

    model = _pruned_mlp(0.9)
    layers = {"0": model[0], "2": model[2]}
    res = BitsResult(0.9, [4, 8], {"0": {8: 0.9, 4: 0.897}, "2": {8: 0.9, 4: 0.897}})
    lb = LayerBytes(layers)
    saved = {n: lb.nbytes(n, kind=("codebook", 8)) - lb.nbytes(n, kind=("codebook", 4)) for n in layers}
    assert saved["0"] > saved["2"] > 0
    assert joint_bits(res, layers, 0.004) == {"0": 4, "2": 8}
    clone = copy.deepcopy(model)  # the owner reads the model; it does not change it
    LayerBytes(clone, "auto", QuantPlan("auto")).nbytes("0")
    assert all(torch.equal(a, b) for a, b in zip(clone.state_dict().values(), model.state_dict().values()))
