"""The compressor spends the budget on accuracy (issue 19): bytes left once quantized buy precision, the
plan carries the measured accuracy effect of each layer's encodings, auto's probes measure once, and a
missed criterion says how many more bytes one point needs."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

import sparsecomp.compress as compress_mod
from codegen import weight_bytes
from sparsecomp import bits as bits_mod
from sparsecomp.bits import QuantPlan, make_plan
from sparsecomp.report import CompressionReport


def _task(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 48), nn.ReLU(), nn.Linear(48, 4))
    x = torch.randn(96, 16)
    loader = DataLoader(TensorDataset(x, model(x).argmax(1)), batch_size=32)
    return model, loader


def _ctx(model, loader, plan):
    return compress_mod._Ctx(model, loader, loader, nn.CrossEntropyLoss(), torch.device("cpu"), compress_mod.top1,
                             "adam", None, False, None, torch.randn(1, 16), "auto", plan=plan)


def test_make_plan_measures_every_layer_at_int8_and_each_codebook_width():
    model, loader = _task()
    plan = make_plan(model, "auto", loader, 0.01, candidates=(4, 2))
    assert set(plan.drops) == {"0", "2"}
    for drops in plan.drops.values():
        assert set(drops) == {("codebook", 4), ("codebook", 2), ("int8", None), ("csr", None)}
        assert drops[("csr", None)] == 0.0


def test_bytes_left_once_quantized_buy_precision_and_the_total_still_fits():
    model, loader = _task()
    plan = QuantPlan("auto", {"0": ("codebook", 2), "2": ("codebook", 2)}, ("codebook", 8),
                     drops={"0": {("codebook", 2): 0.05, ("int8", None): 0.0, ("csr", None): 0.0},
                            "2": {("codebook", 2): 0.01, ("int8", None): 0.0, ("csr", None): 0.0}})
    before = weight_bytes(QuantPlan("auto", dict(plan.layers)).apply_(_copy(model)), torch.randn(1, 16), "auto").total
    float_bytes = weight_bytes(model, torch.randn(1, 16), "csr").total
    budget = (before + float_bytes) // 2
    changed = compress_mod._spend_slack(_ctx(model, loader, plan), budget)
    assert changed and plan.kind("0") != ("codebook", 2)  # the layer that loses most got more precision first
    after = weight_bytes(plan.apply_(_copy(model)), torch.randn(1, 16), "auto").total
    assert before < after <= budget


def test_no_slack_no_change():
    model, loader = _task()
    plan = QuantPlan("auto", {"0": ("codebook", 2), "2": ("codebook", 2)}, ("codebook", 8),
                     drops={"0": {("codebook", 2): 0.05, ("int8", None): 0.0}})
    exact = weight_bytes(QuantPlan("auto", dict(plan.layers)).apply_(_copy(model)), torch.randn(1, 16), "auto").total
    assert compress_mod._spend_slack(_ctx(model, loader, plan), exact) == ""
    assert plan.kind("0") == ("codebook", 2)


def test_auto_measures_bits_once_for_its_probes_and_full_run(monkeypatch):
    calls = []
    real = bits_mod.bits_analysis

    def counting(*a, **k):
        calls.append(k.get("layers"))
        return real(*a, **k)

    monkeypatch.setattr(bits_mod, "bits_analysis", counting)
    model, loader = _task()
    budget = int(weight_bytes(model, torch.randn(1, 16), "csr").total * 0.3)
    report = compress_mod.compress_NN_models(
        model, f"{budget}B", loader, loader, val_loader=loader, num_epochs=1, max_rounds=1,
        max_batches_per_epoch=1, sensitivity_batches=1, progress=False, sensitivity_sparsities=(0.5, 0.9),
        layers_factorization=False)
    assert [p.representation for p in report.probes] == list(compress_mod.AUTO_CANDIDATES)
    assert len(calls) == 1, calls  # per-layer and codebook probes and the full run share one analysis
    assert report.final_bytes <= budget


def test_a_missed_criterion_says_how_many_bytes_a_point_needs():
    r = CompressionReport(target_bytes=10_000, initial_bytes=100_000, final_bytes=9_990, representation="int8",
                          success=False, stopped_reason="x", extra_bytes_per_point=2_345)
    assert "the budget needs ~2,345 more bytes for 1 point (a budget of ~12,345 B" in r.hint()
    model = nn.Sequential(nn.Linear(64, 8))
    from sparsecomp.budget import ByteModel

    bm = ByteModel(model, torch.randn(1, 64), "csr")
    numel, min_nnz = {"0": 512}, {"0": 8}

    def drop(name, s):  # one point per 10 % of the weights pruned
        return 0.1 * s

    n = compress_mod._bytes_for_a_point(numel, min_nnz, bm, drop, 1000, bm.exact_total)
    assert n is not None and 0 < n < bm.exact_total - 1000


def _copy(m):
    import copy

    return copy.deepcopy(m)


def test_codebook_widths_are_chosen_together_within_the_allowed_drop():
    """joint_bits: the SUM of the layers' measured drops stays within the allowed drop (one layer at a
    lossless width alone is not enough when the others lose too), the bytes saved per point decide which
    layer goes lower, and a layer that loses more than allowed even at its widest width gets None."""
    from sparsecomp.bits import BitsResult, joint_bits

    big, small = nn.Linear(100, 100), nn.Linear(10, 10)
    res = BitsResult(0.9, [2, 4, 8], {"big": {8: 0.9, 4: 0.899, 2: 0.85},
                                      "small": {8: 0.9, 4: 0.898, 2: 0.895},
                                      "bad": {8: 0.8, 4: 0.7, 2: 0.5}})
    layers = {"big": big, "small": small}
    assert joint_bits(res, layers, 0.0025) == {"big": 4, "small": 8}  # the bytes are in "big": it goes first
    assert joint_bits(res, layers, 0.01) == {"big": 4, "small": 2}
    # each width within the allowed drop alone, but not together: the summed drop decides
    alone = {n: min(b for b, a in res.curves[n].items() if 0.9 - a <= 0.0025) for n in layers}
    assert alone == {"big": 4, "small": 4}
    assert joint_bits(res, {**layers, "bad": nn.Linear(4, 4)}, 0.01)["bad"] is None


def test_allowed_quantization_drop_is_the_noise_of_the_measurement():
    from sparsecomp.bits import quantization_drop_allowed

    assert quantization_drop_allowed(0.9, 0.01, None) == 0.005
    assert abs(quantization_drop_allowed(0.976, 0.01, 5000) - (0.976 * 0.024 / 5000) ** 0.5) < 1e-12
    assert quantization_drop_allowed(0.9, 0.01, 50) == 0.005  # a small validation set: the tolerance bounds it


def test_huffman_byte_model_estimates_an_upper_bound():
    """representation "huffman": the estimates are the codebook forms' (an upper bound of the value-dependent
    Huffman-coded bytes), so an allocation never plans for bytes the coding might not save."""
    from sparsecomp.budget import ByteModel, current_nnz

    model, _ = _task()
    with torch.no_grad():
        for m in (model[0], model[2]):
            m.weight.mul_(torch.rand_like(m.weight) < 0.3)
    plan = QuantPlan("huffman", {"0": ("codebook", 4), "2": ("codebook", 4)}, ("codebook", 8))
    x = torch.randn(1, 16)
    bm = ByteModel(model, x, "huffman", plan)
    exact_huff = weight_bytes(plan.apply_(_copy(model)), x, "huffman").total
    exact_cb = weight_bytes(QuantPlan("codebook", dict(plan.layers)).apply_(_copy(model)), x, "codebook").total
    assert bm.exact_total == exact_huff <= exact_cb
    assert bm.estimate(current_nnz(model)) >= exact_huff


def test_budget_left_after_pruning_is_offered_to_precision(monkeypatch):
    """A pruned model that ends below the budget hands the rest to _spend_slack (more bits / int8 / float
    where the plan measured a gain) before it is quantized; the result still fits."""
    from sparsecomp import compress_NN_models

    calls = []
    real = compress_mod._spend_slack

    def spy(ctx, budget):
        from sparsecomp.budget import exact_weight_bytes

        calls.append((int(exact_weight_bytes(ctx.model, ctx.example, ctx.representation, ctx.plan).total), budget,
                      any(bool((m.weight == 0).any()) for m in (ctx.model[0], ctx.model[2]))))
        return real(ctx, budget)

    monkeypatch.setattr(compress_mod, "_spend_slack", spy)
    model, loader = _task()
    x = next(iter(loader))[0][:1]
    budget = int(weight_bytes(model, x, "csr").total * 0.2)
    report = compress_NN_models(model, f"{budget}B", loader, loader, val_loader=loader, representation="per-layer",
                                layers_factorization=False, num_epochs=1, max_rounds=1, sensitivity_batches=1,
                                quant_epochs=0, progress=False, distillation=0.0,
                                channel_pruning=False)  # keep the layers' shapes: the budget must force pruning
    assert report.rounds, "the budget must force pruning in this test"
    pruned_calls = [c for c in calls if c[2]]
    assert pruned_calls and all(exact < b for exact, b, _ in pruned_calls)
    assert report.final_bytes <= budget
