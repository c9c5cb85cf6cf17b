"""compress_NN_models: compress a trained model in place to an exact byte budget.

Pipeline (every step logged; nothing written to disk unless asked):

1. Measure the model with codegen (the same count the emitted C will have), the baseline
   accuracy on validation and test data, and refuse budgets below the smallest reachable size.
2. Optional layer separation: Tucker-2 (VBMF ranks) / CP for Conv2d, truncated SVD for Linear
   (rank searched on validation accuracy).  Each factorization is fine-tuned and kept only if
   validation accuracy stays within tolerance; rejections and failures are in the report.
3. Per-layer sensitivity (each layer pruned alone) -> byte allocation by accuracy lost per
   byte saved (:mod:`sparsecomp.allocation`).
4. Rounds of sparsity-constrained retraining: masks tightened along an AGP cubic ramp, then
   fine-tuning with fixed masks; masks persist (pruned weights stay zero), BN and biases train.
   The best state on validation data among those within budget is kept in memory.
5. Stop when the exact bytes fit and validation accuracy is within tolerance, or at
   ``max_rounds`` / ``time_limit`` / a NaN loss, with the reason in the report.

Example::

    >>> report = compress_NN_models(model, 100, train_loader, test_loader,
    ...                             val_loader=val_loader)            # doctest: +SKIP
    >>> print(report)                                                 # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .allocation import UnreachableBudget, allocate
from .bits import QuantPlan, make_plan, weights_fingerprint
from .budget import ByteModel, LayerBytes, current_nnz, exact_weight_bytes, exit_heads_bytes, parse_size
from .decompose import (
    DecompositionError,
    cp_conv,
    max_useful_linear_rank,
    svd_linear,
    tucker2_conv,
)
from .folding import fold_batchnorm_
from .pruning import MaskedPruner, find_compressible_layers, magnitude_mask, replace_module
from .report import CompressionReport, DecompositionRecord, LayerRow, ProbeRecord, RoundRecord
from .rollback import ModelSnapshot
from .schedule import agp_sparsity, pruning_steps
from .sensitivity import DEFAULT_SPARSITIES, SensitivityResult, sensitivity_analysis
from .training import Metric, all_reduce_sum, distributed, evaluate, make_optimizer, split_batch, top1
from .vbmf import tucker2_ranks
from .weight_sharing import WeightSharingError, attach_int8_, attach_shared_, check_finite, detach_quantizers_

logger = logging.getLogger(__name__)


class BudgetError(ValueError):
    """The requested budget cannot be reached; the message states the smallest reachable size."""

    def __init__(self, message: str, smallest_reachable_bytes: int):
        super().__init__(message)
        self.smallest_reachable_bytes = smallest_reachable_bytes


class CompressionError(RuntimeError):
    """Compression could not run (bad model, bad loaders, ...)."""


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _check_model(model: nn.Module, frozen_ok: bool = False) -> None:
    if not isinstance(model, nn.Module):
        raise CompressionError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, torch.jit.ScriptModule):
        raise CompressionError("model is a TorchScript module; pass the original nn.Module (it must be fx-traceable)")
    if torch.is_inference_mode_enabled():
        raise CompressionError("compress_NN_models was called inside torch.inference_mode(); call it outside")
    params = list(model.parameters())
    if not params:
        raise CompressionError("model has no parameters: nothing to compress")
    if any(p.is_inference() for p in params):
        raise CompressionError(
            "model parameters are inference tensors (created under torch.inference_mode()); "
            "rebuild or load the model outside inference mode so it can be retrained"
        )
    if not frozen_ok and not any(p.requires_grad for p in params):
        raise CompressionError(
            "model is in an eval-only state: no parameter requires grad, so it cannot be retrained. "
            "Call model.requires_grad_(True) first (compress_NN_models switches train/eval itself)"
        )
    if not find_compressible_layers(model):
        raise CompressionError("model has no Conv1d/Conv2d/Linear layer to compress")


def _first_batch(loader: Iterable, what: str):
    try:
        n = len(loader)  # type: ignore[arg-type]
    except TypeError:
        n = None
    if n == 0:
        raise CompressionError(f"{what} is empty (len == 0)")
    for batch in loader:
        return split_batch(batch)
    raise CompressionError(f"{what} yielded no batches")


def _carve_validation(train_loader, fraction: float, seed: int) -> tuple[DataLoader, DataLoader]:
    """Deterministic, seeded split of the training data into (train, val) loaders."""
    ds = getattr(train_loader, "dataset", None)
    if ds is None or not hasattr(ds, "__len__"):
        raise CompressionError("val_loader is None and train_loader has no sized .dataset to split; pass val_loader")
    n = len(ds)
    n_val = max(1, int(round(n * fraction)))
    if n - n_val < 1:
        raise CompressionError(f"training set has {n} samples: too few to carve a validation split")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    val_ds, tr_ds = Subset(ds, perm[:n_val]), Subset(ds, perm[n_val:])
    bs = train_loader.batch_size or 32
    kw = dict(num_workers=train_loader.num_workers, collate_fn=train_loader.collate_fn)
    sampler = None
    if distributed():
        sampler = torch.utils.data.distributed.DistributedSampler(tr_ds, shuffle=True, seed=seed)
    tr = DataLoader(
        tr_ds, batch_size=bs, shuffle=sampler is None, sampler=sampler,
        generator=torch.Generator().manual_seed(seed + 1), drop_last=train_loader.drop_last, **kw,
    )
    val = DataLoader(val_ds, batch_size=bs, shuffle=False, **kw)
    logger.info("carved a seeded validation split: %d train / %d val samples (seed %d)", n - n_val, n_val, seed)
    return tr, val


class _Masks(MaskedPruner):
    """The compressor's masks: magnitude masks tightened layer by layer."""

    def tighten(self, model: nn.Module, layer: str, sparsity: float) -> None:
        p = model.get_submodule(layer).weight
        name = f"{layer}.weight"
        old = self.masks.get(name)
        if old is None:
            old = p.detach() != 0
        mask = magnitude_mask(p.detach() * old, sparsity, old)
        if distributed():  # identical masks on every rank
            m8 = mask.to(torch.uint8)
            dist.broadcast(m8, src=0)
            mask = m8.bool()
        self.set_mask(name, p, mask)

    def cover(self, model: nn.Module) -> None:
        """Add a mask (its zeros) for every pruned layer that has none, so no training step can revive
        pruned weights.  Parametrized (quantized) weights keep their zeros themselves."""
        from torch.nn.utils import parametrize

        for layer, mod in find_compressible_layers(model).items():
            name = f"{layer}.weight"
            if name in self.masks or parametrize.is_parametrized(mod, "weight"):
                continue
            w = mod.weight
            if bool((w == 0).any()):
                self.set_mask(name, w, w.detach() != 0)


@dataclass
class _Ctx:
    model: nn.Module
    train_loader: Iterable
    val_loader: Iterable
    criterion: nn.Module
    device: torch.device
    metric: Metric
    optimizer: str
    max_batches: int | None
    progress: bool
    deadline: float | None
    example: torch.Tensor
    representation: str
    teacher: nn.Module | None = None
    distill_alpha: float = 0.0
    distill_temperature: float = 4.0
    plan: QuantPlan | None = None  # int8/codebook/auto: how each layer is quantized (bytes measured on a copy)
    quant_epochs: int = 0
    quant_lr: float = 1e-4
    tol: float = 0.01
    cache: dict | None = None  # CompressConfig.cache
    exits: nn.Module | None = None  # an EarlyExitModel over ``model`` (its heads' bytes are in the budget)
    exit_reserve: int = 0  # bytes of the budget kept for the exit heads (measured before compressing)
    exit_epochs: int = 0  # epochs of head retraining on the compressed backbone (0: a probe, none)
    exit_sharing: str = "cws"  # the quantizer of codebook heads
    structure: list[DecompositionRecord] = field(default_factory=list)  # channel pruning (_channel_stage)
    before: tuple[int, float, float] | None = None  # (float bytes, val, test) of the model before _channel_stage

    def loss(self, outputs: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_labels(outputs, y, self.criterion)
        loss = self.criterion(outputs, y)
        if self.teacher is None or self.distill_alpha <= 0 or y.is_floating_point() or outputs.dim() != 2:
            return loss
        with torch.no_grad():
            t_out = self.teacher(x)
        T = self.distill_temperature
        kd = nn.functional.kl_div(nn.functional.log_softmax(outputs / T, dim=1),
                                  nn.functional.softmax(t_out / T, dim=1), reduction="batchmean") * T * T
        return (1 - self.distill_alpha) * loss + self.distill_alpha * kd


def _check_labels(outputs: torch.Tensor, y: torch.Tensor, criterion: nn.Module) -> None:
    """Class labels must index the model's outputs; checked before the loss so a bad label is a clear
    error instead of an IndexError (CPU) or an asynchronous device-side assert (CUDA)."""
    if y.is_floating_point() or y.is_complex() or outputs.dim() < 2 or y.numel() == 0:
        return
    ignore = getattr(criterion, "ignore_index", None)
    valid = y if ignore is None else y[y != ignore]
    if valid.numel() == 0:
        return
    lo, hi, n_out = int(valid.min()), int(valid.max()), outputs.shape[1]
    if lo < 0 or hi >= n_out:
        raise CompressionError(
            f"training labels lie in [{lo}, {hi}] but the model has {n_out} outputs, so labels must lie in "
            f"[0, {n_out - 1}]; check the labels of train_loader or the size of the model's last layer"
        )


class _Stop(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _train(
    ctx: _Ctx,
    masks: _Masks,
    epochs: int,
    lr: float,
    targets: dict[str, float] | None = None,
    desc: str = "train",
    select_best: bool = True,
    patience: int = 2,
) -> tuple[float, dict[str, torch.Tensor] | None, int]:
    """Train ``epochs`` epochs with masks applied; ramp sparsities to ``targets`` (AGP).

    Returns (best val accuracy, best state (only states at the final masks), epochs run).
    Raises :class:`_Stop` on NaN loss or time limit (the model is left as it was at the
    last epoch end).
    """
    model = ctx.model
    train_model: nn.Module = model
    if distributed():
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [ctx.device.index or 0] if ctx.device.type == "cuda" else None
        train_model = DDP(model, device_ids=ids)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, ctx.optimizer, lr)
    masks.rebind(model)
    masks.cover(model)  # every pruned layer keeps its zeros, whatever the caller passed
    masks.attach(opt)
    try:
        n_batches = _num_batches(ctx.train_loader, ctx.max_batches)
        # cosine decay to 5% of lr over the round: large steps while masks tighten, small ones after
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs * n_batches), eta_min=0.05 * lr)
        ramp = {}
        steps: list[int] = []
        if targets:
            start = {n: 1.0 - int((model.get_submodule(n).weight != 0).sum()) / model.get_submodule(n).weight.numel()
                     for n in targets}
            ramp = {n: (start[n], max(start[n], s)) for n, s in targets.items() if s > start[n] + 1e-12}
            if ramp:
                steps = pruning_steps(epochs * n_batches, ramp_fraction=0.6 if epochs > 1 else 0.5)
        step_index = {it: k + 1 for k, it in enumerate(steps)}
        best_acc, best_state, best_epoch = -math.inf, None, 0
        last_good = _state(model)
        it = 0
        bar = tqdm(total=epochs * n_batches, desc=desc, disable=not ctx.progress, leave=False)
        for epoch in range(epochs):
            sampler = getattr(ctx.train_loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            model.train()
            for b, batch in enumerate(ctx.train_loader):
                if ctx.max_batches is not None and b >= ctx.max_batches:
                    break
                if it in step_index:
                    for n, (s0, s1) in ramp.items():
                        masks.tighten(model, n, agp_sparsity(s0, s1, step_index[it], len(steps)))
                    masks.apply()
                x, y = split_batch(batch)
                x, y = x.to(ctx.device), y.to(ctx.device)
                opt.zero_grad(set_to_none=True)
                loss = ctx.loss(train_model(x), x, y)
                bad = not bool(torch.isfinite(loss.detach()))
                late = ctx.deadline is not None and time.monotonic() > ctx.deadline
                if distributed():
                    bad_all, late_all = all_reduce_sum([float(bad), float(late)], ctx.device)
                    bad, late = bad_all > 0, late_all > 0
                if bad:
                    model.load_state_dict(last_good)
                    masks.apply()
                    raise _Stop(f"NaN/Inf loss in {desc}, epoch {epoch + 1}, batch {b + 1}")
                if late:
                    raise _Stop(f"time limit reached during {desc}")
                loss.backward()
                opt.step()
                sched.step()
                it += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}")
            at_final = not steps or it > steps[-1]
            last_good = _state(model)
            if select_best and at_final:
                acc = evaluate(model, ctx.val_loader, ctx.device, ctx.metric)
                logger.info("%s epoch %d/%d: val accuracy %.4f", desc, epoch + 1, epochs, acc)
                if acc > best_acc:
                    best_acc, best_state, best_epoch = acc, last_good, epoch
                elif epoch - best_epoch >= patience:  # validation plateau: more epochs would not help
                    logger.info("%s: no better val accuracy for %d epochs; stopping the round", desc, patience)
                    break
        bar.close()
        if ramp:  # make sure the final sparsity is reached even with very few batches
            for n, (_, s1) in ramp.items():
                masks.tighten(model, n, s1)
            masks.apply()
            if best_state is None and select_best:
                best_acc = evaluate(model, ctx.val_loader, ctx.device, ctx.metric)
                best_state = _state(model)
        return best_acc, best_state, epochs
    finally:
        masks.detach()


def default_epochs(train_loader: Iterable, max_batches: int | None = None, steps: int = 1500) -> int:
    """Epochs per retraining round when ``num_epochs`` is None: about ``steps`` optimizer steps, between 2
    and 6 epochs (small data sets get more passes, large ones fewer; a validation plateau ends a round
    earlier)."""
    return int(min(6, max(2, math.ceil(steps / _num_batches(train_loader, max_batches)))))


def _num_samples(loader: Iterable) -> int:
    ds = getattr(loader, "dataset", None)
    if ds is not None and hasattr(ds, "__len__"):
        return len(ds)
    return sum(int(split_batch(b)[1].shape[0]) for b in loader)


def _eval_samples(loader: Iterable, max_batches: int | None) -> int:
    """Samples an evaluation of at most ``max_batches`` batches of ``loader`` sees."""
    n = _num_samples(loader)
    bs = getattr(loader, "batch_size", None)
    return min(n, max_batches * bs) if max_batches and bs else n


def _num_batches(loader: Iterable, cap: int | None) -> int:
    try:
        n = len(loader)  # type: ignore[arg-type]
    except TypeError:
        n = sum(1 for _ in loader)
    return max(1, min(n, cap) if cap is not None else n)


# --------------------------------------------------------------------------------------
# decomposition
# --------------------------------------------------------------------------------------
def _factorize_layers(
    ctx: _Ctx, masks: _Masks, base_val: float, tol: float, lr: float, epochs: int, conv_method: str,
    min_params: int, budget: int | None = None,
) -> list[DecompositionRecord]:
    """Try to factorize every large layer (largest first); keep each one only if validation
    accuracy stays within ``tol`` of ``base_val`` after fine-tuning.

    Linear: first the smallest SVD rank whose accuracy before fine-tuning is within ``2*tol``
    (fine-tuning usually recovers the rest); if that is rejected, the smallest rank already
    within ``tol`` before fine-tuning (accepted unless fine-tuning fails).  With a ``budget`` the rank
    is at least the one that leaves the model (dense, quantized as planned) at the budget
    (:func:`_budget_rank`): a smaller rank would cost accuracy for bytes the budget does not ask for, and
    pruning fills the rest.  Layers are separated only while the model is over budget.  Conv2d: VBMF ranks.
    """
    model = ctx.model
    records: list[DecompositionRecord] = []
    layers = sorted(find_compressible_layers(model).items(), key=lambda kv: -kv[1].weight.numel())
    for name, mod in layers:
        if mod.weight.numel() < min_params:
            continue
        if budget is not None and int(exact_weight_bytes(model, ctx.example, ctx.representation,
                                                         ctx.plan).total) <= budget:
            break  # the budget no longer asks for separation
        if isinstance(mod, nn.Linear):
            method = "svd"
        elif isinstance(mod, nn.Conv2d) and mod.groups == 1 and mod.weight.shape[2:].numel() > 1:
            method = conv_method
        else:
            continue
        bytes_before = mod.weight.numel() * 4
        if method == "svd":
            out_f, in_f = mod.weight.shape
            r_max = max_useful_linear_rank(out_f, in_f)
            if r_max < 1:
                continue
            tried: set[int] = set()
            for slack in (2 * tol, tol):
                try:
                    rank = _search_linear_rank(ctx, name, mod, r_max, base_val - slack)
                except DecompositionError as exc:
                    records.append(_failed(name, method, exc, bytes_before))
                    break
                if rank is None:
                    records.append(DecompositionRecord(
                        name, method, [], False,
                        f"no rank <= {r_max} keeps val accuracy within {slack:.4f} of baseline", bytes_before,
                        bytes_before))  # fmt: skip
                    continue
                if budget is not None and ctx.representation != "dense":  # dense: pruning cannot fill it
                    rank = max(rank, _budget_rank(ctx, name, mod, r_max, budget))
                if rank in tried:
                    continue
                tried.add(rank)
                rec = _try_factorization(ctx, masks, name, mod, method, [rank], partial(svd_linear, mod, rank),
                                         base_val, tol, lr, epochs)
                records.append(rec)
                if rec.accepted or "time limit" in rec.reason:
                    break
        else:
            try:
                r_out, r_in = tucker2_ranks(mod.weight.detach().cpu().numpy())
            except ValueError as exc:
                records.append(_failed(name, method, exc, bytes_before))
                continue
            if method == "cp":
                ranks = [max(r_out, r_in)]
                factory = partial(cp_conv, mod, ranks[0])
            else:
                ranks = [r_out, r_in]
                factory = partial(tucker2_conv, mod, (r_out, r_in))
            records.append(_try_factorization(ctx, masks, name, mod, method, ranks, factory, base_val, tol, lr,
                                              epochs))
        if records and "time limit" in records[-1].reason:
            break
    return records


# layer separation runs only when pruning alone would keep fewer of the weights than this (uniformly):
# above it, magnitude pruning with retraining loses less than a factorization (LeNet-5 at 44 KB int8:
# SVD cost 0.4 points where pruning alone loses none)
FACTORIZE_BELOW_DENSITY = 0.04


def _uniform_density(bm: ByteModel, budget: int) -> float:
    """The largest density d such that every compressible layer at d of its weights (at least one per row)
    fits ``budget`` by the byte model's estimate (0 when even the floor does not fit)."""
    def est(d: float) -> int:
        return bm.estimate({n: max(min(g.numel, g.rows), int(round(d * g.numel))) for n, g in bm.layers.items()})

    if est(1.0) <= budget:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if est(mid) <= budget else (lo, mid)
    return lo


# channel pruning runs when pruning alone would keep fewer weights than this per output row (uniformly, all
# compressible layers): per-channel costs (biases, scales, the row itself) then eat the budget (the kws2d
# DS-CNN at 15x: 4.6 per row; LeNet-5 at 44 KB and LeNet-300-100 at 27 KB: ~30)
CHANNELS_BELOW_NNZ_PER_ROW = 8.0
# ...and removes the fewest channels (one fraction for every prunable group) at which pruning alone would
# keep at least this fraction of the remaining weights
CHANNELS_TARGET_DENSITY = 0.5
# the narrower model is fine-tuned (distilled from the given one) for up to this many rounds' epochs (a
# validation plateau ends it earlier): it has to learn again what the removed channels did
CHANNELS_EPOCHS = 3


def _nnz_per_row(bm: ByteModel, budget: int) -> tuple[float, float]:
    """(the uniform density the budget allows, the nonzeros per output row it keeps over all layers)."""
    d = _uniform_density(bm, budget)
    nnz = sum(max(min(g.numel, g.rows), int(round(d * g.numel))) for g in bm.layers.values())
    return d, nnz / max(1, sum(g.rows for g in bm.layers.values()))


def _channel_stage(ctx: _Ctx, cfg: CompressConfig, test_loader: Iterable) -> bool:
    """Structured channel pruning (:mod:`sparsecomp.channels`) when the budget would leave fewer than
    :data:`CHANNELS_BELOW_NNZ_PER_ROW` weights per output row: remove the lowest-scored channels of every
    prunable group, one fraction for all, the fewest at which pruning alone keeps
    :data:`CHANNELS_TARGET_DENSITY` of the weights (by the byte model), then fine-tune (distilled from the
    original).  The records (channels before -> after per group, or why not) go to ``ctx.structure``.
    Returns whether the model changed."""
    from .channels import channel_groups, channel_scores, keep_top, prune_channels_

    model, budget = ctx.model, cfg.budget  # the exit heads, if any, are already off it

    def skip(why: str) -> bool:
        logger.info("channel pruning: %s", why)
        ctx.structure.append(DecompositionRecord("*", "channels", [], False, f"skipped: {why}"))
        return False

    if ctx.exits is not None:
        return skip("an early-exit model (its heads read the backbone's channels)")
    bm = ByteModel(model, ctx.example, ctx.representation, ctx.plan)
    if bm.exact_total <= budget:
        return False
    density, per_row = _nnz_per_row(bm, budget)
    if per_row >= CHANNELS_BELOW_NNZ_PER_ROW:
        return skip(f"pruning alone keeps {per_row:.1f} weights per output row ({100 * density:.1f} % of the "
                    f"weights; channels are removed below {CHANNELS_BELOW_NNZ_PER_ROW:g} per row)")
    groups, why = channel_groups(model, ctx.example)
    if not groups:
        return skip("no prunable channel group (" + "; ".join(f"{k}: {v}" for k, v in why.items()) + ")")
    scores = channel_scores(model, groups, ctx.val_loader, max_batches=4, device=ctx.device)
    if distributed():  # the same channels on every rank
        for k, v in scores.items():
            t = v.to(ctx.device)
            dist.broadcast(t, src=0)
            scores[k] = t.cpu()

    def keep_at(f: float) -> dict[str, list[int]]:
        return {g.producer: keep_top(scores[g.producer], math.ceil(f * g.channels)) for g in groups}

    def density_at(f: float) -> float:
        trial = copy.deepcopy(model)
        prune_channels_(trial, keep_at(f), groups)
        return _uniform_density(ByteModel(trial, ctx.example, ctx.representation, ctx.plan), budget)

    lo, hi = 0.0, 1.0  # density_at(hi) < target; find the largest f with density_at(f) >= target
    for _ in range(7):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if density_at(mid) >= CHANNELS_TARGET_DENSITY else (lo, mid)
    f = max(lo, 1.0 / min(g.channels for g in groups))
    keep = keep_at(f)
    weights = {n: m.weight.numel() for n, m in find_compressible_layers(model).items()}
    val0 = evaluate(model, ctx.val_loader, ctx.device, ctx.metric)
    before = (int(exact_weight_bytes(model, ctx.example, "csr").total), val0,
              val0 if test_loader is ctx.val_loader else evaluate(model, test_loader, ctx.device, ctx.metric))
    changed = prune_channels_(model, keep, groups)
    if not changed:
        return skip(f"{per_row:.1f} weights per output row, but pruning alone keeps {100 * density:.1f} % of the "
                    f"weights (at least {100 * CHANNELS_TARGET_DENSITY:.0f} % with every channel)")
    ctx.before = before
    after = {n: m.weight.numel() for n, m in find_compressible_layers(model).items()}
    acc0 = evaluate(model, ctx.val_loader, ctx.device, ctx.metric)
    acc, note = acc0, ""
    try:
        acc, state, _ = _train(ctx, _Masks(), CHANNELS_EPOCHS * cfg.num_epochs, cfg.learning_rate,
                               desc="fine-tune after channel pruning")
        if state is not None and acc >= acc0:
            model.load_state_dict(state)
        acc = max(acc, acc0)
    except _Stop as stop:
        note = f"; fine-tuning stopped: {stop.reason}"
    logger.info("channel pruning: kept %.0f %% of the channels (%s); val %.4f -> %.4f after fine-tuning",
                100 * f, ", ".join(f"{p} {a}->{b}" for p, a, b in changed), acc0, acc)
    by = {g.producer: g for g in groups}
    ctx.structure.append(DecompositionRecord(
        "*", "channels", [], True,
        f"removed {100 * (1 - f):.0f} % of the channels of {len(changed)} group(s): pruning alone would have kept "
        f"{per_row:.1f} weights per output row ({100 * density:.1f} % of the weights); val {val0:.4f} -> "
        f"{acc0:.4f} without them -> {acc:.4f} after fine-tuning{note}"
        + "".join(f"; {k} not prunable: {v}" for k, v in why.items()), val_accuracy=acc))
    for prod, before, n in changed:
        g = by[prod]
        touched = [prod, *g.followers, *g.consumers]
        ctx.structure.append(DecompositionRecord(
            prod, "channels", [n], True, f"{before} -> {n} output channels (" + "; ".join(filter(None, (
                g.followers and f"the same channels of {', '.join(g.followers)}",
                f"inputs of {', '.join(g.consumers)}"))) + ")",
            4 * sum(weights[t] for t in touched if t in weights), 4 * sum(after[t] for t in touched if t in after),
            acc))
    return True


def _budget_rank(ctx: _Ctx, name: str, mod: nn.Linear, r_max: int, budget: int) -> int:
    """The smallest SVD rank of ``name`` at which the model (dense factors, quantized as planned, the other
    layers as they are) is still at least ``budget`` bytes: lower ranks would drop below the budget.
    Not called for "dense" (pruning cannot fill the rest)."""
    out_f, in_f = mod.weight.shape
    store = LayerBytes(ctx.model, ctx.representation, ctx.plan)
    here = int(exact_weight_bytes(ctx.model, ctx.example, ctx.representation, ctx.plan).total)
    rest = here - store.nbytes(name, kind=store.kind(name))

    def size(r: int) -> int:  # the factors are new layers: stored as the plan's default
        return rest + store.shape_nbytes(r, in_f, r * in_f) + store.shape_nbytes(out_f, r, out_f * r)

    for r in range(1, r_max + 1):
        if size(r) >= budget:
            return r
    return r_max


def _failed(name: str, method: str, exc: Exception, nbytes: int) -> DecompositionRecord:
    logger.warning("decomposition of %s (%s) failed: %s", name, method, exc)
    return DecompositionRecord(name, method, [], False, f"failed: {exc}", nbytes, nbytes)


def _try_factorization(ctx: _Ctx, masks: _Masks, name: str, mod: nn.Module, method: str, ranks: list[int],
                       factory, base_val: float, tol: float, lr: float, epochs: int) -> DecompositionRecord:
    """Replace ``name`` by ``factory()``, fine-tune, keep it if val accuracy >= base_val - tol
    (the state before fine-tuning is a candidate too); otherwise restore the layer and weights."""
    model = ctx.model
    bytes_before = mod.weight.numel() * 4
    try:
        new = factory()
    except (DecompositionError, ValueError) as exc:
        return _failed(name, method, exc, bytes_before)
    bytes_after = sum(p.numel() for n_, p in new.named_parameters() if n_.endswith("weight")) * 4
    if bytes_after >= 0.8 * bytes_before:
        return DecompositionRecord(name, method, ranks, False,
                                   f"ranks {ranks} save too little ({bytes_after} vs {bytes_before} B)",
                                   bytes_before, bytes_after)
    saved_state = _state(model)
    replace_module(model, name, new)
    pre_acc = evaluate(model, ctx.val_loader, ctx.device, ctx.metric)
    pre_state = _state(model)
    try:
        acc, state, _ = _train(ctx, masks, epochs, lr, desc=f"fine-tune {name} ({method})")
    except _Stop as stop:
        replace_module(model, name, mod)
        model.load_state_dict(saved_state)
        return DecompositionRecord(name, method, ranks, False, f"fine-tuning stopped: {stop.reason}",
                                   bytes_before, bytes_after)
    if state is None or pre_acc >= acc:
        acc, state = pre_acc, pre_state
    if acc >= base_val - tol:
        model.load_state_dict(state)
        logger.info("decomposed %s with %s ranks %s: %d -> %d weight bytes, val %.4f",
                    name, method, ranks, bytes_before, bytes_after, acc)
        return DecompositionRecord(name, method, ranks, True,
                                   f"val accuracy {acc:.4f} within {tol} of {base_val:.4f}",
                                   bytes_before, bytes_after, acc)
    replace_module(model, name, mod)
    model.load_state_dict(saved_state)
    logger.info("rejected %s decomposition of %s (ranks %s): val %.4f < %.4f", method, name, ranks, acc,
                base_val - tol)
    return DecompositionRecord(name, method, ranks, False,
                               f"val accuracy {acc:.4f} below {base_val - tol:.4f} after fine-tuning",
                               bytes_before, bytes_after, acc)


@torch.no_grad()
def _search_linear_rank(ctx: _Ctx, name: str, mod: nn.Linear, r_max: int, threshold: float) -> int | None:
    """Smallest rank in [1, r_max] whose factorization (before fine-tuning) keeps val accuracy
    >= threshold (binary search, accuracy assumed monotone in rank)."""
    model = ctx.model

    def acc_at(r: int) -> float:
        replace_module(model, name, svd_linear(mod, r))
        try:
            return evaluate(model, ctx.val_loader, ctx.device, ctx.metric)
        finally:
            replace_module(model, name, mod)

    if acc_at(r_max) < threshold:
        return None
    lo, hi = 1, r_max
    while lo < hi:
        mid = (lo + hi) // 2
        if acc_at(mid) >= threshold:
            hi = mid
        else:
            lo = mid + 1
    return lo


# --------------------------------------------------------------------------------------
# main entry point
# --------------------------------------------------------------------------------------
def compress_NN_models(  # noqa: N802 - public name fixed by the issue
    model: nn.Module,
    target_size: int | float | str,
    train_loader: Iterable,
    test_loader: Iterable,
    val_loader: Iterable | None = None,
    *,
    num_epochs: int | None = None,
    learning_rate: float = 1e-3,
    criterion: nn.Module | None = None,
    device: str | torch.device = "cpu",
    representation: str = "auto",
    accuracy_tolerance: float = 0.01,
    layers_factorization: bool = True,
    max_rounds: int = 4,
    seed: int = 0,
    progress: bool = True,
    optimizer: str = "adam",
    conv_decomposition: str = "tucker2",
    factorization_min_params: int = 4096,
    sensitivity: SensitivityResult | str | os.PathLike | None = None,
    sensitivity_sparsities: Iterable[float] = DEFAULT_SPARSITIES,
    sensitivity_batches: int | None = 8,
    val_fraction: float = 0.1,
    max_batches_per_epoch: int | None = None,
    time_limit: float | None = None,
    example_input: torch.Tensor | None = None,
    metric: Metric = top1,
    checkpoint_path: str | os.PathLike | None = None,
    distillation: float = 0.5,
    bits: int | dict[str, int] | None = None,
    quant_epochs: int | None = None,
    quant_learning_rate: float | None = None,
    ram_budget: int | None = None,
    prefer_speed: bool = False,
    finalists: int | None = None,
    channel_pruning: bool = True,
) -> CompressionReport:
    """Compress ``model`` in place so codegen emits at most ``target_size`` of weight data.

    ``target_size`` is in KB (1 KB = 1000 bytes) of ``MODEL_WEIGHT_BYTES`` for
    ``representation``, or a string like ``"100KB"``, ``"96KiB"``, ``"4096B"``.
    ``accuracy_tolerance`` is a fraction (0.01 = one accuracy point) of allowed validation
    accuracy loss.  Model selection uses validation data only: when ``val_loader`` is None a
    seeded ``val_fraction`` split is carved from ``train_loader.dataset``; ``test_loader`` is
    only reported.  Under ``torch.distributed`` the model is trained with
    DistributedDataParallel and every decision is taken identically on all ranks.

    Raises :class:`BudgetError` when the budget is below the smallest reachable size and
    :class:`CompressionError` on unusable models or loaders.

    The model is moved to ``device`` and modified in place (weights, and layers replaced by
    their factorizations or by narrower layers when channels are pruned: its state_dict then loads
    only into the compressed structure; ``layers_factorization=False, channel_pruning=False`` keep
    the given structure).  Nothing is written to disk unless ``checkpoint_path`` is given
    (the final state_dict is saved there).  ``sensitivity`` may be a
    :class:`SensitivityResult` or the CSV path written by :func:`sensitivity_analysis`;
    layers missing from it are analysed.  ``max_batches_per_epoch`` and ``time_limit``
    (seconds) bound the run; ``example_input`` (batch 1) defaults to the first training sample.
    ``distillation`` (0..1, default 0.5) mixes a knowledge-distillation loss from a frozen copy of the
    original model into retraining (classification outputs with integer labels only; 0 = off).
    ``num_epochs`` per retraining round defaults to about 1,500 optimizer steps (2 to 6 epochs,
    :func:`default_epochs`); a round ends early when validation accuracy stops improving for two
    epochs, and rounds stop once the budget and ``accuracy_tolerance`` are met.

    ``representation`` defaults to "auto": a short probe of "int8", "per-layer", "codebook" and "csr"
    on copies of the model (one round on part of an epoch each, the report lists them), then the full
    run with the most accurate; the model records the representation so ``save_compressed_model(model,
    input_data=...)`` emits exactly what was budgeted.  "per-layer" chooses float, int8 or codebook per
    layer (emitted as codegen's "auto").  When the codebook probe had to prune to fit, "huffman" (the
    codebook weights with canonical-Huffman-coded entries, never larger, so more weights fit; decoded bit by
    bit, several times the instructions) is probed too and chosen only when it is more accurate beyond the
    probes' noise; ``prefer_speed=True`` leaves it out.  Otherwise any of ``codegen.formats.REPRESENTATIONS``:
    "csr"/"dense" (float),
    "int8" (per-channel int8, pruned to a budget counted in int8 bytes, then quantized and
    fine-tuned ``quant_epochs`` (default: as many as a retraining round, ended by a validation plateau)
    with a straight-through estimator), "codebook" (Deep Compression
    weight sharing: ``bits`` per layer -- an int, {layer: bits}, or None to choose them with
    :func:`sparsecomp.bits.bits_analysis` -- then centroid fine-tuning).  For int8/codebook/per-layer every
    BatchNorm after a conv/linear is first folded into it (:func:`sparsecomp.fold_batchnorm_`),
    the budget counts the bytes of the quantized model exactly, and the model ends quantized /
    weight-shared so ``save_compressed_model(model, representation)`` emits exactly those bytes.

    ``ram_budget`` (bytes of activation RAM): checked first (codegen.api.plan_ram: tiled execution of the
    first layers when layer by layer needs more; a CompressionError states the smallest arena reachable),
    planned again on the compressed model (``report.ram``: peak RAM, stages, extra MACs) and recorded on
    it, so ``save_compressed_model(model, input_data=...)`` emits within it.

    Example::

        >>> report = compress_NN_models(model, "16KB", train_loader, test_loader,
        ...                             num_epochs=2, accuracy_tolerance=0.02)  # doctest: +SKIP
        >>> report.final_bytes <= 16000                                           # doctest: +SKIP
        True
    """
    t0 = time.monotonic()
    budget = parse_size(target_size)
    if isinstance(sensitivity, (str, os.PathLike)):
        sensitivity = SensitivityResult.from_csv(sensitivity)
    from codegen.formats import REPRESENTATIONS

    from .sham import METHODS as SHARING

    # SHARING: sHAM's quantizers (cws, pws, uq, ecsq), codebook weights whose values they choose
    if representation not in REPRESENTATIONS and representation not in ("per-layer", *SHARING):
        raise ValueError(f"representation must be one of {sorted([*REPRESENTATIONS, 'per-layer', *SHARING])}, "
                         f"got {representation!r}")
    if quant_epochs is not None and quant_epochs < 0:
        raise ValueError(f"quant_epochs must be >= 0, got {quant_epochs}")
    if (num_epochs is not None and num_epochs < 1) or max_rounds < 1:
        raise ValueError("num_epochs and max_rounds must be >= 1")
    if finalists is not None and (isinstance(finalists, bool) or not isinstance(finalists, int) or finalists < 1):
        raise ValueError(f"finalists is the number of full runs auto may make (an int >= 1) or None, got {finalists!r}")
    if not 0 <= distillation <= 1:
        raise ValueError(f"distillation is a weight in [0, 1], got {distillation}")
    if not 0 <= accuracy_tolerance < 1:
        raise ValueError(f"accuracy_tolerance is a fraction in [0, 1), got {accuracy_tolerance}")
    if conv_decomposition not in ("tucker2", "cp"):
        raise ValueError(f"conv_decomposition must be 'tucker2' or 'cp', got {conv_decomposition!r}")
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module  # compress the wrapped model; DDP is applied internally when distributed
    from .early_exit import EarlyExitModel

    exits, frozen = None, []
    if isinstance(model, EarlyExitModel):  # the budget holds the backbone AND its exit heads
        exits, model = model, model.backbone
        # train_exits froze the backbone for the heads: retrained here (frozen again at the end)
        if not any(p.requires_grad for p in model.parameters()):
            frozen = list(model.parameters())
    _check_model(model, frozen_ok=bool(frozen))
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CompressionError("device='cuda' requested but CUDA is not available")

    x0, _ = _first_batch(train_loader, "train_loader")
    _first_batch(test_loader, "test_loader")
    if val_loader is None:
        train_loader, val_loader = _carve_validation(train_loader, val_fraction, seed)
    else:
        _first_batch(val_loader, "val_loader")
    example = (example_input if example_input is not None else x0[:1]).to(device)

    if num_epochs is None:
        num_epochs = default_epochs(train_loader, max_batches_per_epoch)
        logger.info("%d epochs per retraining round (from the size of the training data)", num_epochs)
    if quant_epochs is None:  # as long as a retraining round; a validation plateau ends it earlier
        quant_epochs = num_epochs
    cfg = CompressConfig(
        budget=budget, representation=representation, num_epochs=num_epochs, learning_rate=learning_rate,
        criterion=criterion if criterion is not None else nn.CrossEntropyLoss(), device=device,
        accuracy_tolerance=accuracy_tolerance, layers_factorization=layers_factorization, max_rounds=max_rounds,
        seed=seed, progress=progress and _is_rank0(), optimizer=optimizer, conv_decomposition=conv_decomposition,
        factorization_min_params=factorization_min_params, sensitivity=sensitivity,
        sensitivity_sparsities=tuple(sensitivity_sparsities), sensitivity_batches=sensitivity_batches,
        max_batches_per_epoch=max_batches_per_epoch, deadline=None if time_limit is None else t0 + time_limit,
        metric=metric, distillation=float(distillation), bits=bits, quant_epochs=quant_epochs,
        quant_learning_rate=quant_learning_rate if quant_learning_rate is not None else learning_rate / 5,
        prefer_speed=bool(prefer_speed), finalists=finalists, channel_pruning=bool(channel_pruning),
    )
    data = _Data(train_loader, val_loader, test_loader, example, exits)
    if ram_budget is not None:
        _plan_ram(model, example, ram_budget, "csr")  # activations do not depend on the weights: fail early
    snapshot = ModelSnapshot(model if exits is None else exits)
    for p in frozen:
        p.requires_grad_(True)
    try:
        if representation == "auto":
            report = _compress_auto(model, cfg, data, t0)
        else:
            report = _compress(model, cfg, data, t0)
        if ram_budget is not None:
            report.ram = _plan_ram(model, example, ram_budget, cfg.codegen_representation)
    except BaseException:
        # Ctrl-C, the user's DataLoader, bad labels, our own errors: hand back the model as it was given
        snapshot.restore()
        if exits is not None:
            exits.__dict__["_fx"] = None  # its cached graph module may hold replaced layers
        if frozen:
            model.requires_grad_(False)
        logger.error("compression failed; the model was restored to the state it was given in")
        raise
    if frozen:
        model.requires_grad_(False)
    (model if exits is None else exits).train(snapshot.training)
    if checkpoint_path is not None and _is_rank0():
        torch.save(model.state_dict(), checkpoint_path)
        logger.info("saved the compressed state_dict to %s", checkpoint_path)
    return report


def _plan_ram(model: nn.Module, example: torch.Tensor, ram_budget: int, representation: str) -> dict:
    """codegen's tiling plan within ``ram_budget`` (recorded on the model for save_compressed_model)."""
    from codegen.api import EMIT_ATTR, plan_ram
    from codegen.errors import CodegenError

    try:
        plan = plan_ram(model, example[:1].detach().cpu(), int(ram_budget), representation)
    except CodegenError as exc:
        raise CompressionError(f"ram_budget={int(ram_budget)} bytes of activation RAM cannot be met: {exc}") from exc
    recorded = getattr(model, EMIT_ATTR, None)
    if isinstance(recorded, dict):
        recorded["ram_budget"] = int(ram_budget)
    logger.info("ram_budget %d B: arena %d B (layer by layer %d B), %d extra MACs", ram_budget,
                plan["peak_ram_bytes"], plan["layerwise_arena_bytes"], plan["extra_macs"])  # fmt: skip
    return plan


@dataclass(frozen=True)
class CompressConfig:
    """Every option of :func:`compress_NN_models`, checked and resolved (budget in bytes, an absolute
    deadline instead of ``time_limit``).  ``representation`` "per-layer" is the plan that picks float,
    int8 or codebook per layer (what "auto" runs when it is the best probe)."""

    budget: int
    representation: str
    num_epochs: int
    learning_rate: float
    criterion: nn.Module
    device: torch.device
    accuracy_tolerance: float
    layers_factorization: bool
    max_rounds: int
    seed: int
    progress: bool
    optimizer: str
    conv_decomposition: str
    factorization_min_params: int
    sensitivity: SensitivityResult | None
    sensitivity_sparsities: tuple[float, ...]
    sensitivity_batches: int | None
    max_batches_per_epoch: int | None
    deadline: float | None
    metric: Metric
    distillation: float
    bits: int | dict[str, int] | None
    quant_epochs: int
    quant_learning_rate: float
    prefer_speed: bool = False
    # "auto": how many finalists may run in full (None: up to MAX_FINALISTS within FINALIST_SECONDS)
    finalists: int | None = None
    # structured channel pruning when the budget leaves few weights per output row (_channel_stage)
    channel_pruning: bool = True
    # measurements (bits/int8 accuracy per layer, sensitivity curves) shared by auto's probes and its full
    # run, keyed by a fingerprint of the weights: the same weights and data give the same answers
    cache: dict | None = field(default=None, compare=False, repr=False)

    @property
    def codegen_representation(self) -> str:
        """The representation codegen emits the result with."""
        from .sham import METHODS

        if self.representation in METHODS:  # sHAM's quantizers (issue 18): codebook encodings
            return "codebook"
        return "auto" if self.representation == "per-layer" else self.representation


@dataclass
class _Data:
    train: Iterable
    val: Iterable
    test: Iterable
    example: torch.Tensor
    exits: nn.Module | None = None  # an EarlyExitModel over the model: its heads' bytes count in the budget


# a round that gains less validation accuracy than this over the previous ones ends the rounds
PLATEAU = 0.001

# the candidates "auto" probes, in order of preference on equal validation accuracy
AUTO_CANDIDATES = ("int8", "per-layer", "codebook", "csr")
# probed after them when it could win: the codebook weights with Huffman-coded entries, never larger than
# "codebook" (so more weights fit a budget that forces pruning) but decoded bit by bit (several times the
# instructions); last in preference, left out with prefer_speed=True
SIZE_CANDIDATES = ("huffman",)
# probes within this many standard errors of the best probe's validation accuracy are finalists: a probe is
# one short round, so its ranking is only a hint (digits: int8/codebook/huffman probed 95.91 % and per-layer
# 94.80 % at 269 validation samples, 1.2 points = one standard error, yet per-layer ends 1.1 points higher)
FINALIST_NOISE = 2.0
# probes this far (a fraction) below the model's own validation accuracy have not settled (one partial epoch is
# not enough for the model to recover, e.g. after channel pruning): their ranking says little, so every probe
# that fits the budget is a finalist, best probe first, within MAX_FINALISTS / FINALIST_SECONDS as usual
UNSETTLED_PROBES = 0.05
# at most this many finalists run in full by default (finalists=N allows N)...
MAX_FINALISTS = 4
# ...and the extra ones only while they are estimated to take at most this many seconds in all (by the first
# full run's wall time): a small data set runs all of them, LeNet-5 on 55,000 MNIST samples (~40 min a run) one
FINALIST_SECONDS = 600.0


def _probe_batches(loader: Iterable, cap: int | None) -> int:
    """Batches of one probe epoch: a quarter of the data, at least 40 batches (or all), at most 300."""
    n = _num_batches(loader, cap)
    return min(n, max(min(n, 40), min(300, n // 4)))


def _compress_auto(model: nn.Module, cfg: CompressConfig, data: _Data, t0: float) -> CompressionReport:
    """"auto": a short probe of every candidate representation (one epoch on part of the data, one
    round, no factorization) on a copy of the model, then full runs of the finalists (:func:`_finalists`),
    each on a copy, each exactly the call with that representation (the loaders' shuffling generators are
    set back to where the call found them), and the model becomes the run with the best validation accuracy
    (ties: preference order).  Extra finalists run while their estimated time fits ``cfg.finalists`` /
    :data:`FINALIST_SECONDS` and the deadline.  The probes and the full runs share their measurements
    (sensitivity curves, per-layer bits/int8 accuracy) through ``cfg.cache``: each is taken once per distinct
    set of weights (the float model; its BatchNorm-folded copy)."""
    from dataclasses import replace

    initial = int(exact_weight_bytes(model, data.example, "csr").total)
    if initial <= cfg.budget:
        return _compress(model, replace(cfg, representation="csr"), data, t0)
    cfg = replace(cfg, cache={} if cfg.cache is None else cfg.cache)
    rng = _LoaderRng(data.train, data.val, data.test)
    n_probe = _probe_batches(data.train, cfg.max_batches_per_epoch)
    deadline = cfg.deadline
    probe_deadline = None if deadline is None else time.monotonic() + 0.4 * (deadline - time.monotonic())
    probes: list[ProbeRecord] = []
    pcfg = replace(cfg, num_epochs=1, max_rounds=1, layers_factorization=False,
                   quant_epochs=min(1, cfg.quant_epochs), max_batches_per_epoch=n_probe, progress=False,
                   deadline=probe_deadline)
    for rep in tqdm(AUTO_CANDIDATES, desc="auto: probing representations", disable=not cfg.progress, leave=False):
        probes.append(_probe(model, replace(pcfg, representation=rep), data))
    cb = next((p for p in probes if p.representation == "codebook"), None)
    if not cfg.prefer_speed and cb is not None and cb.bytes is not None and "no pruning needed" not in cb.note:
        # the codebook model had to be pruned to fit: Huffman-coded entries keep more of its weights
        for rep in SIZE_CANDIDATES:
            probes.append(_probe(model, replace(pcfg, representation=rep), data))
    ok = [p for p in probes if p.val_accuracy is not None and p.bytes is not None and p.bytes <= cfg.budget]
    if not ok:
        raise BudgetError(f"no representation can reach the budget of {cfg.budget} bytes: "
                          + "; ".join(f"{p.representation}: {p.note}" for p in probes),
                          min((p.bytes for p in probes if p.bytes), default=cfg.budget))
    baseline = cfg.cache.get("val_baseline")  # the model's validation accuracy, as the probes measured it
    cands = _finalists(ok, _num_samples(data.val), baseline)
    logger.info("auto: %s gives the best probe accuracy (%.4f, model %s); finalists %s", cands[0].representation,
                cands[0].val_accuracy, baseline, ", ".join(p.representation for p in cands))
    cap = MAX_FINALISTS if cfg.finalists is None else cfg.finalists
    order = (*AUTO_CANDIDATES, *SIZE_CANDIDATES)

    def rank(r: CompressionReport, rep: str) -> tuple:  # the best validation accuracy; ties: preference order
        return -(r.val_accuracy_after if r.val_accuracy_after is not None else -1.0), order.index(rep)

    best: tuple | None = None  # (rank, model copy, report, the loaders' generator states): only the best is kept
    finals: list[ProbeRecord] = []
    # the first completed full run's seconds (it always runs) and its probe's, the extra runs' seconds
    first_s, first_probe_s, extra_s = None, 1.0, 0.0
    for i, p in enumerate(cands):
        rep = p.representation
        if i >= cap:
            finals.append(ProbeRecord(rep, None, None, 0.0, f"not run: finalists={cap}"))
            continue
        if first_s is not None:  # the first full run's time, scaled by the probes' times, estimates this one
            est = first_s * max(1.0, p.seconds / max(first_probe_s, 1e-9))
            why = ("" if cfg.finalists is not None or extra_s + est <= FINALIST_SECONDS else
                   f"not run: estimated {est:.0f} s would take the extra full runs beyond {FINALIST_SECONDS:.0f} s "
                   "(finalists=N allows N)")
            if not why and deadline is not None and time.monotonic() + est > deadline:
                why = f"not run: estimated {est:.0f} s would pass time_limit"
            if distributed() and all_reduce_sum([float(bool(why))], cfg.device)[0] > 0:  # every rank decides alike
                why = why or "not run: another rank's estimate passed the bound"
            if why:
                finals.append(ProbeRecord(rep, None, None, 0.0, why))
                continue
        rng.restore()  # each finalist sees the data as the call with its representation alone would
        ft = time.monotonic()
        try:
            run, report = _finalist(model, replace(cfg, representation=rep), data, ft)
        except (BudgetError, WeightSharingError) as exc:  # a probe fitted, the full run cannot: not a finalist
            finals.append(ProbeRecord(rep, None, None, time.monotonic() - ft, f"not possible: {exc}"))
            continue
        secs = time.monotonic() - ft
        if first_s is None:
            first_s, first_probe_s = secs, p.seconds
        else:
            extra_s += secs
        finals.append(ProbeRecord(rep, report.val_accuracy_after, report.final_bytes, secs, report.stopped_reason))
        logger.info("auto finalist %s: val %s at %d bytes (%.1f s)", rep, report.val_accuracy_after,
                    report.final_bytes, secs)
        if report.final_bytes <= cfg.budget:
            if best is None or rank(report, rep) < best[0]:
                best = (rank(report, rep), run, report, rng.states())
        del run
    if best is None:
        raise BudgetError(f"no representation reached the budget of {cfg.budget} bytes in full: "
                          + "; ".join(f"{p.representation}: {p.note}" for p in finals), cfg.budget)
    _, run, report, states = best
    _adopt_(model if data.exits is None else data.exits, run)
    if data.exits is not None:
        data.exits.__dict__["_fx"] = None  # a cached graph module over the copy's layers
    rng.restore(states)
    report.probes = probes
    report.finalists = finals
    report.chosen_by = "auto"
    report.wall_time_s = time.monotonic() - t0
    return report


def _finalists(ok: list[ProbeRecord], n_val: int, baseline: float | None = None) -> list[ProbeRecord]:
    """The probes worth a full run, in the order they run: first the one the probes alone would choose (of
    those within one standard error of the best, the first in preference order), then the others within
    :data:`FINALIST_NOISE` standard errors of the best -- every other one when the best probe is more than
    :data:`UNSETTLED_PROBES` below ``baseline`` (the model's validation accuracy) -- best probe first (ties:
    preference order)."""
    order = (*AUTO_CANDIDATES, *SIZE_CANDIDATES)
    top = max(p.val_accuracy for p in ok)
    se = math.sqrt(max(top * (1 - top), 1e-4) / max(1, n_val))
    floor = -1.0 if baseline is not None and top < baseline - UNSETTLED_PROBES else top - FINALIST_NOISE * se
    by_pref = sorted(ok, key=lambda p: order.index(p.representation))
    first = next(p for p in by_pref if p.val_accuracy >= top - se)
    rest = sorted((p for p in by_pref if p is not first and p.val_accuracy >= floor),
                  key=lambda p: -p.val_accuracy)  # stable: preference order on equal accuracy
    return [first, *rest]


def _finalist(model: nn.Module, cfg: CompressConfig, data: _Data, t0: float) -> tuple[nn.Module, CompressionReport]:
    """One full run of "auto": the call with ``cfg.representation`` on a copy of ``model`` (of the early-exit
    model over it when there is one); returns the copy (what :func:`_adopt_` makes the model) and the report."""
    from dataclasses import replace

    if data.exits is None:
        run = copy.deepcopy(model)
        return run, _compress(run, cfg, data, t0)
    run = copy.deepcopy(data.exits)
    return run, _compress(run.backbone, cfg, replace(data, exits=run), t0)


@torch.no_grad()
def _adopt_(dst: nn.Module, src: nn.Module) -> None:
    """Make ``dst`` exactly the module ``src`` is (``src``: a deep copy of ``dst`` that a finalist changed), in
    place.  ``dst`` keeps its identity, and so do its submodules, parameters and buffers that ``src`` still has
    under the same name with the same class (shape, dtype, device for tensors): their values, classes and
    attributes become ``src``'s; everything else (a factorized layer, a new bias) is ``src``'s object."""
    seen: dict[int, object] = {}  # id(an object of src) -> the object dst ends with (shared modules, tied weights)
    used: set[int] = set()  # ids of dst's objects already given a src object

    def tensor(old, new):
        if new is None or id(new) in seen:
            return None if new is None else seen[id(new)]
        keep = (old is not None and id(old) not in used and type(old) is type(new) and old.shape == new.shape
                and old.dtype == new.dtype and old.device == new.device)
        if keep:
            old.data = new.data
            old.grad = new.grad
            if old.is_leaf:
                old.requires_grad_(new.requires_grad)
            used.add(id(old))
        seen[id(new)] = old if keep else new
        return seen[id(new)]

    def module(d: nn.Module, s: nn.Module) -> None:
        seen[id(s)] = d
        used.add(id(d))
        children = {}
        for name, child in s._modules.items():
            old = d._modules.get(name)
            if child is None or id(child) in seen:
                children[name] = None if child is None else seen[id(child)]
            elif old is not None and type(old) is type(child) and id(old) not in used:
                module(old, child)
                children[name] = old
            else:
                seen[id(child)] = children[name] = child
        params = {n: tensor(d._parameters.get(n), p) for n, p in s._parameters.items()}
        buffers = {n: tensor(d._buffers.get(n), b) for n, b in s._buffers.items()}
        state = {**s.__dict__, "_modules": children, "_parameters": params, "_buffers": buffers}
        d.__class__ = s.__class__
        d.__dict__.clear()
        d.__dict__.update(state)

    module(dst, src)


class _LoaderRng:
    """The shuffling generators of the loaders "auto" was given (``DataLoader.generator``, its sampler's):
    every full run starts from the states the call found, and the call ends with the winning run's."""

    def __init__(self, *loaders: Iterable):
        gens: dict[int, torch.Generator] = {}
        for ld in loaders:
            sampler = getattr(ld, "sampler", None)
            inner = getattr(getattr(ld, "batch_sampler", None), "sampler", None)
            for g in (getattr(ld, "generator", None), getattr(sampler, "generator", None),
                      getattr(inner, "generator", None)):
                if isinstance(g, torch.Generator):
                    gens[id(g)] = g
        self.gens = list(gens.values())
        self.initial = self.states()

    def states(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.gens]

    def restore(self, states: list[torch.Tensor] | None = None) -> None:
        for g, s in zip(self.gens, self.initial if states is None else states):
            g.set_state(s)


def _probe(model: nn.Module, pcfg: CompressConfig, data: _Data) -> ProbeRecord:
    """One probe of "auto": ``pcfg`` (one short round) on a copy of ``model``; validation data stands in
    for the test data."""
    rep, pt = pcfg.representation, time.monotonic()
    try:
        r = _compress(copy.deepcopy(model), pcfg, _Data(data.train, data.val, data.val, data.example), pt)
    except (BudgetError, WeightSharingError) as exc:  # this representation cannot reach the budget
        return ProbeRecord(rep, None, None, time.monotonic() - pt, f"not possible: {exc}")
    logger.info("auto probe %s: val %.4f at %d bytes (%.1f s)", rep, r.val_accuracy_after, r.final_bytes,
                time.monotonic() - pt)
    if pcfg.cache is not None and r.val_accuracy_before is not None:
        pcfg.cache.setdefault("val_baseline", r.val_accuracy_before)
    return ProbeRecord(rep, r.val_accuracy_after, r.final_bytes, time.monotonic() - pt, r.stopped_reason)


def _compress(model: nn.Module, cfg: CompressConfig, data: _Data, t0: float) -> CompressionReport:
    from dataclasses import replace

    from .sham import METHODS as SHARING_METHODS

    device = cfg.device
    model.to(device)
    reserve = 0
    if data.exits is not None:  # the exit heads take their exact bytes (stored as they will be) off the budget
        reserve = _exit_heads_bytes(data.exits, cfg.codegen_representation, _head_sharing(cfg))
        if reserve >= cfg.budget:
            raise BudgetError(f"the exit heads alone take {reserve} bytes as {cfg.codegen_representation!r}, "
                              f"more than the budget of {cfg.budget} bytes: raise the budget or give the exit "
                              "model smaller heads (pool size, hidden units)", reserve)
        cfg = replace(cfg, budget=cfg.budget - reserve)
    quantized = cfg.representation not in ("csr", "dense")
    if quantized:
        check_finite(model)
        # codegen would fold BatchNorm at emission and rescale quantized rows: fold it here, once
        fold_batchnorm_(model)
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices), torch.enable_grad():
        torch.manual_seed(cfg.seed)
        ctx = _Ctx(model, data.train, data.val, cfg.criterion, device, cfg.metric, cfg.optimizer,
                   cfg.max_batches_per_epoch, cfg.progress, cfg.deadline, data.example, cfg.codegen_representation,
                   quant_epochs=cfg.quant_epochs, tol=cfg.accuracy_tolerance, quant_lr=cfg.quant_learning_rate,
                   cache=cfg.cache, exits=data.exits, exit_reserve=reserve, exit_sharing=_head_sharing(cfg),
                   exit_epochs=cfg.num_epochs if data.exits is not None and model is data.exits.backbone else 0)
        if cfg.distillation > 0:
            # the uncompressed model teaches the compressed one (Hinton et al.): a frozen copy
            ctx.teacher = copy.deepcopy(model).eval().requires_grad_(False)
            ctx.distill_alpha = cfg.distillation

        def plan(m: nn.Module) -> QuantPlan:
            return make_plan(m, cfg.codegen_representation, data.val, cfg.accuracy_tolerance, cfg.bits,
                             device=device, metric=cfg.metric, max_batches=cfg.sensitivity_batches,
                             progress=ctx.progress, cache=cfg.cache,
                             sharing=cfg.representation if cfg.representation in SHARING_METHODS else "cws",
                             eval_samples=_eval_samples(data.val, cfg.sensitivity_batches))

        if quantized:
            ctx.plan = plan(model)
        if cfg.channel_pruning and _channel_stage(ctx, cfg, data.test) and quantized:
            ctx.plan = plan(model)  # the encodings measured again on the narrower layers
        return _run(ctx, cfg, data.test, t0)


def _is_rank0() -> bool:
    return not distributed() or dist.get_rank() == 0


def _run(ctx: _Ctx, cfg: CompressConfig, test_loader: Iterable, t0: float) -> CompressionReport:
    """Budget the model and retrain it round by round (``cfg``: the checked options, ``ctx``: the model, data
    and the state shared by the stages)."""
    budget, num_epochs, lr, tol = cfg.budget, cfg.num_epochs, cfg.learning_rate, cfg.accuracy_tolerance
    factorize, max_rounds = cfg.layers_factorization, cfg.max_rounds
    conv_method, min_params = cfg.conv_decomposition, cfg.factorization_min_params
    sensitivity, sens_batches = cfg.sensitivity, cfg.sensitivity_batches
    sens_sparsities = list(cfg.sensitivity_sparsities)
    quant_epochs, quant_lr = cfg.quant_epochs, cfg.quant_learning_rate
    model = ctx.model
    bm = ByteModel(model, ctx.example, ctx.representation, ctx.plan)
    initial_bytes = bm.exact_total
    if ctx.plan is not None:  # "before" is the float model (csr); the quantized copy is what pruning budgets
        initial_bytes = int(exact_weight_bytes(model, ctx.example, "csr").total)
    floor = _reachable_floor(bm, model, factorize)
    logger.info("initial weight bytes %d, budget %d, smallest reachable %d", initial_bytes, budget, floor)
    if budget < floor:
        how = "pruned and factorized to rank 1" if factorize else "pruned"
        raise BudgetError(
            f"budget of {budget} bytes is below the smallest reachable size of {floor} bytes "
            f"({floor / 1000:.3f} KB, {ctx.representation}): {bm.fixed} bytes are not prunable "
            f"(biases, folded BatchNorm, other layers) and every compressible layer, {how}, keeps at least "
            f"one weight per output row. Use a target_size of at least {math.ceil(floor / 10) / 100} KB.",
            floor,
        )
    if ctx.before is not None:  # channels were removed: "before" and the criterion are the given model's
        initial_bytes, val_before, test_before = ctx.before
    else:
        val_before = evaluate(model, ctx.val_loader, ctx.device, ctx.metric)
        test_before = val_before if test_loader is ctx.val_loader else evaluate(model, test_loader, ctx.device,
                                                                                 ctx.metric)
    logger.info("baseline accuracy: val %.4f, test %.4f", val_before, test_before)
    report = CompressionReport(
        target_bytes=budget, initial_bytes=initial_bytes, final_bytes=initial_bytes,
        representation=ctx.representation, success=False, stopped_reason="",
        val_accuracy_before=val_before, test_accuracy_before=test_before, accuracy_tolerance=tol,
        smallest_reachable_bytes=floor,
    )
    masks = _Masks()
    report.decompositions.extend(ctx.structure)

    if bm.exact_total <= budget:
        report.success = True
        report.stopped_reason = "model already within budget; nothing to do"
        if ctx.plan is not None:
            report.stopped_reason = "model within budget once quantized; no pruning needed"
            upgraded = _spend_slack(ctx, budget)
            if upgraded:
                report.stopped_reason += f"; the unused budget bought more precision ({upgraded})"
            _quantize_stage(ctx, report, quant_epochs, quant_lr, tol)
        return _finish(report, ctx, test_loader, t0)

    try:
        density = _uniform_density(bm, budget)
        if factorize and density >= FACTORIZE_BELOW_DENSITY:
            # pruning alone reaches the budget at a moderate density: a factorization would only spend accuracy
            factorize = False
            logger.info("pruning alone reaches the budget at %.1f %% density (>= %.0f %%): no layer separation",
                        100 * density, 100 * FACTORIZE_BELOW_DENSITY)
            report.decompositions.append(DecompositionRecord(
                "*", "none", [], False,
                f"skipped: pruning alone reaches the budget keeping {100 * density:.1f} % of the weights "
                f"(separation runs below {100 * FACTORIZE_BELOW_DENSITY:.0f} %)", bm.exact_total, bm.exact_total))
        if factorize:
            report.decompositions += _factorize_layers(ctx, masks, val_before, tol, lr, 1, conv_method,
                                                       min_params, budget)
            bm = ByteModel(model, ctx.example, ctx.representation, ctx.plan)
            logger.info("after layer separation: %d bytes", bm.exact_total)
            floor = bm.floor()
            report.smallest_reachable_bytes = floor
            if budget < floor:
                report.stopped_reason = (
                    f"budget unreachable after layer separation: pruning can reach {floor} bytes at best "
                    f"(budget {budget}); the factorizations that would go lower were rejected or not possible"
                )
                logger.error("%s", report.stopped_reason)
                return _finish(report, ctx, test_loader, t0)
            if bm.exact_total <= budget:
                report.success = True
                report.stopped_reason = "within budget after layer separation"
                return _finish(report, ctx, test_loader, t0)

        names = list(bm.layers)
        if sensitivity is None or any(n not in sensitivity.curves for n in names):
            missing = [n for n in names if sensitivity is None or n not in sensitivity.curves]
            key = ("sensitivity", weights_fingerprint(model), id(ctx.val_loader), tuple(sens_sparsities), tuple(missing),
                   sens_batches)
            computed = None if ctx.cache is None else ctx.cache.get(key)
            if computed is None:
                computed = sensitivity_analysis(model, ctx.val_loader, sens_sparsities, layers=missing,
                                                device=ctx.device, metric=ctx.metric, max_batches=sens_batches,
                                                progress=ctx.progress)
                if ctx.cache is not None:
                    ctx.cache[key] = computed
            if sensitivity is None:
                sensitivity = computed
            else:
                sensitivity = SensitivityResult(sensitivity.baseline, sensitivity.sparsities,
                                                {**sensitivity.curves, **computed.curves})
    except _Stop as stop:
        report.stopped_reason = stop.reason
        report.warnings.append("stopped before pruning; model is over budget")
        return _finish(report, ctx, test_loader, t0)

    numel = {n: g.numel for n, g in bm.layers.items()}
    min_nnz = {n: min(g.numel, g.rows) for n, g in bm.layers.items()}

    def drop(name: str, s: float) -> float:
        return sensitivity.accuracy_drop(name, s)

    alloc_budget = budget
    best: tuple[float, dict, int] | None = None  # (val acc, state, exact bytes) within budget
    round_lr = lr
    stop_reason = f"max_rounds={max_rounds} reached"
    for rnd in range(1, max_rounds + 1):
        rt = time.monotonic()
        round_alloc = alloc_budget  # the budget this round allocates for (alloc_budget may shrink below)
        nnz_now = current_nnz(model)
        try:
            targets_nnz = allocate(numel, nnz_now, min_nnz, bm.layer_bytes, drop, bm.fixed, alloc_budget)
            if rnd == 1:  # measure the allocation with codegen on a pruned copy and use the budget it leaves
                alloc_budget, targets_nnz = _calibrate(ctx, masks, targets_nnz, alloc_budget, budget, floor,
                                                       partial(allocate, numel, nnz_now, min_nnz, bm.layer_bytes,
                                                               drop, bm.fixed))
                round_alloc = alloc_budget
        except UnreachableBudget as exc:
            stop_reason = f"round {rnd}: {exc}"
            break
        estimate = bm.estimate(targets_nnz)
        targets = {n: 1.0 - targets_nnz[n] / numel[n] for n in names}
        logger.info("round %d: allocation for %d bytes (estimate %d): %s", rnd, alloc_budget, estimate,
                    ", ".join(f"{n}={100 * (1 - s):.1f}%" for n, s in targets.items()))
        try:
            acc, state, ep = _train(ctx, masks, num_epochs, round_lr, targets, desc=f"round {rnd}")
        except _Stop as stop:
            stop_reason = stop.reason
            report.rounds.append(RoundRecord(rnd, round_alloc, estimate, -1, float("nan"), 0,
                                             time.monotonic() - rt, stop.reason))
            break
        if state is not None:
            model.load_state_dict(state)
            masks.apply()
        exact = int(exact_weight_bytes(model, ctx.example, ctx.representation, ctx.plan).total)
        note = ""
        prev_best = best[0] if best is not None else None
        if exact <= budget and (best is None or acc > best[0]):
            best = (acc, state if state is not None else _state(model), exact)
        if exact > budget:
            # the estimate disagreed with codegen (BN folding made zeros; value-dependent index or Huffman
            # streams of the retrained weights): tighten by the measured ratio of the two and go again
            alloc_budget = max(floor, min(alloc_budget - (exact - budget), int(alloc_budget * budget / exact))
                               - max(16, budget // 200))
            note = f"over budget by {exact - budget} B; re-allocating for {alloc_budget} B"
        else:
            round_lr = round_lr * 0.5
            met = acc >= val_before - tol
            plateau = prev_best is not None and acc < prev_best + PLATEAU
            if met:
                report.success = True
            if acc >= val_before or plateau:
                if best[0] >= val_before - tol:
                    stop_reason = "budget and accuracy criterion met" + ("" if acc >= val_before else
                                                                          "; validation plateau")
                else:
                    stop_reason = (f"validation plateau at {best[0]:.4f}, below baseline {val_before:.4f} - "
                                   f"tolerance {tol}")
                note = "stop: " + ("no accuracy lost" if acc >= val_before else
                                   f"no gain of {100 * PLATEAU:.1f} point over the previous round")
                logger.info("round %d: exact %d bytes, val %.4f %s", rnd, exact, acc, note)
                report.rounds.append(RoundRecord(rnd, round_alloc, estimate, exact, acc, ep,
                                                 time.monotonic() - rt, note))
                break
            note = (f"criterion met; fine-tuning on while validation improves (lr {round_lr:g})" if met else
                    f"val accuracy {acc:.4f} below {val_before - tol:.4f}; fine-tuning again (lr {round_lr:g})")
        logger.info("round %d: exact %d bytes, val %.4f %s", rnd, exact, acc, note)
        report.rounds.append(RoundRecord(rnd, round_alloc, estimate, exact, acc, ep, time.monotonic() - rt, note))
    else:
        if best is not None and best[0] >= val_before - tol:
            stop_reason = f"budget and accuracy criterion met; max_rounds={max_rounds} reached"
        elif best is not None:
            stop_reason = (f"max_rounds={max_rounds} reached: within budget but val accuracy {best[0]:.4f} "
                           f"is below baseline {val_before:.4f} - tolerance {tol}")

    if best is None or best[0] < val_before - tol:
        report.extra_bytes_per_point = _bytes_for_a_point(numel, min_nnz, bm, drop, budget, initial_bytes)
    if best is not None:
        model.load_state_dict(best[1])
        masks.apply()
    exact = int(exact_weight_bytes(model, ctx.example, ctx.representation, ctx.plan).total)
    if exact > budget:
        exact = _force_into_budget(ctx, bm, masks, budget, numel, min_nnz, drop, floor)
        report.warnings.append("no retrained state fit the budget; weights were pruned to fit without fine-tuning")
    report.stopped_reason = stop_reason
    if ctx.plan is not None:
        if exact < budget:  # bytes the pruned model leaves unused buy precision where it was measured to help
            upgraded = _spend_slack(ctx, budget)
            if upgraded:
                report.stopped_reason += f"; the budget left after pruning bought more precision ({upgraded})"
        _quantize_stage(ctx, report, quant_epochs, quant_lr, tol)
    return _finish(report, ctx, test_loader, t0)


def _bytes_for_a_point(numel: dict[str, int], min_nnz: dict[str, int], bm: ByteModel, drop, budget: int,
                       ceiling: int) -> int | None:
    """How many more bytes than ``budget`` the sensitivity curves say win back one accuracy point: the
    allocation at larger budgets (steps of 10 %, up to ``ceiling``) and the summed per-layer drop it
    predicts (measured before retraining, so an estimate).  None when no larger budget predicts a point."""
    dense = {n: numel[n] for n in numel}

    def predicted(b: int) -> float | None:
        try:
            k = allocate(numel, dense, min_nnz, bm.layer_bytes, drop, bm.fixed, b)
        except UnreachableBudget:
            return None
        return sum(drop(n, 1.0 - k[n] / numel[n]) for n in numel)

    here = predicted(budget)
    if here is None:
        return None
    b = budget
    while b < ceiling:
        b = min(ceiling, int(b * 1.1) + 1)
        d = predicted(b)
        if d is not None and here - d >= 0.01:
            return b - budget
    return None


def _calibrate(ctx: _Ctx, masks: _Masks, targets: dict[str, int], alloc_budget: int, budget: int, floor: int,
               allocate_for) -> tuple[int, dict[str, int]]:
    """The per-layer estimates (sparse index layouts, codebook sizes) can be off by several percent, which
    leaves bytes of the budget unused.  Prune a copy of the model to the allocation by magnitude, count
    it exactly (codegen, quantized as planned), and rescale the allocation budget by budget / exact
    (a few steps), keeping the largest allocation whose pruned copy fits."""
    best = (alloc_budget, targets) if _trial_bytes(ctx, masks, targets) <= budget else None
    b = alloc_budget
    for _ in range(4):
        exact = _trial_bytes(ctx, masks, targets)
        if exact <= budget and (best is None or b >= best[0]):
            best = (b, targets)
        if abs(exact - budget) <= max(16, budget // 200):
            break
        b = max(floor, int(b * budget / max(1, exact)))
        try:
            targets = allocate_for(b)
        except UnreachableBudget:
            break
    if best is None:
        return alloc_budget, allocate_for(alloc_budget)
    if best[0] != alloc_budget:
        logger.info("calibrated the allocation with codegen: allocating for %d bytes to fill %d", best[0], budget)
    return best


def _trial_bytes(ctx: _Ctx, masks: _Masks, targets: dict[str, int]) -> int:
    trial = copy.deepcopy(ctx.model)
    comp = find_compressible_layers(trial)
    with torch.no_grad():
        for n, k in targets.items():
            w = comp[n].weight
            old = masks.masks.get(f"{n}.weight")
            w.mul_(magnitude_mask(w, 1.0 - k / w.numel(), old if old is not None else w != 0))
    return int(exact_weight_bytes(trial, ctx.example, ctx.representation, ctx.plan).total)


def _quantize_stage(ctx: _Ctx, report: CompressionReport, epochs: int, lr: float, tol: float) -> None:
    """Quantize / weight-share the pruned model as planned (zeros kept), fine-tune ``epochs`` with the
    quantization kept (int8: straight-through estimator; codebook: centroids trained with summed
    gradients, index assignment fixed), keep the better of before/after fine-tuning on validation data."""
    model, plan = ctx.model, ctx.plan
    assert plan is not None
    names = find_compressible_layers(model)
    int8 = [n for n in names if plan.kind(n)[0] == "int8"]
    shared = [n for n in names if plan.kind(n)[0] == "codebook"]
    plan.apply_(model)
    ctx.plan = None  # the model itself now holds the emitted values
    acc0 = evaluate(model, ctx.val_loader, ctx.device, ctx.metric)
    logger.info("quantized as planned (%s): val %.4f", plan.describe(), acc0)
    note = f"quantized ({plan.describe()}): val {acc0:.4f}"
    if epochs > 0 and (int8 or shared):
        state0 = _state(model)
        attach_shared_(model, shared)
        attach_int8_(model, int8)
        state = None
        try:
            _, state, _ = _train(ctx, _Masks(), epochs, lr, desc="quantized fine-tuning")
        except _Stop as stop:
            report.warnings.append(f"quantized fine-tuning stopped: {stop.reason}")
        if state is not None:
            model.load_state_dict(state)
        detach_quantizers_(model)
        acc1 = evaluate(model, ctx.val_loader, ctx.device, ctx.metric)
        if acc1 < acc0:
            model.load_state_dict(state0)
            note += f"; fine-tuning gave {acc1:.4f}, kept the state before it"
        else:
            note += f" -> {acc1:.4f} after {epochs} epoch(s) of quantized fine-tuning"
        acc0 = max(acc0, acc1)
    if acc0 < report.val_accuracy_before - tol:
        report.warnings.append(f"after quantization val accuracy {acc0:.4f} is below baseline "
                               f"{report.val_accuracy_before:.4f} - tolerance {tol}")
        if report.success:
            report.success = False
            report.stopped_reason += "; accuracy lost by quantization exceeds the tolerance"
    report.quantization = note


# precision order of the per-layer storage kinds (a later one stores the layer's weights more exactly)
def _precision(kind: tuple[str, int | None]) -> int:
    return {"codebook": int(kind[1] or 8), "int8": 9, "csr": 10, "dense": 10}[kind[0]]


def _spend_slack(ctx: _Ctx, budget: int) -> str:
    """The model fits the budget once quantized as planned: spend the bytes left on precision instead of
    leaving them unused.  Greedily move a layer to a more precise kind of its representation (codebook bits
    up; for "auto" also int8, float) with the best measured accuracy gain per extra byte (the plan's
    ``drops``; a tiny bonus per precision step so a tie still buys precision), while the estimate fits;
    then count exactly and undo the last moves while over.  Returns what changed ("" if nothing)."""
    plan = ctx.plan
    if plan is None or plan.representation not in ("auto", "codebook", "huffman") or not plan.drops:
        return ""
    store = LayerBytes(ctx.model, ctx.representation, plan)  # the layers at their current nonzeros
    exact = int(exact_weight_bytes(ctx.model, ctx.example, ctx.representation, plan).total)

    def size(n: str, kind: tuple[str, int | None]) -> int:
        return store.nbytes(n, kind=kind)

    slack, moves = budget - exact, []
    while True:
        best = None
        for n, opts in plan.drops.items():
            if n not in store.layers:
                continue
            cur = plan.kind(n)
            d0 = opts.get(cur, 0.0)
            for kind, d in opts.items():
                if plan.representation in ("codebook", "huffman") and kind[0] != "codebook":
                    continue
                if _precision(kind) <= _precision(cur):
                    continue
                extra = size(n, kind) - size(n, cur)
                if extra > slack:
                    continue
                gain = max(0.0, d0 - d) + 1e-6 * (_precision(kind) - _precision(cur))
                score = gain / max(1, extra)
                if best is None or score > best[0]:
                    best = (score, n, kind, extra)
        if best is None:
            break
        _, n, kind, extra = best
        moves.append((n, plan.kind(n)))
        plan.layers[n] = kind
        slack -= extra
    while moves and int(exact_weight_bytes(ctx.model, ctx.example, ctx.representation, plan).total) > budget:
        n, old = moves.pop()
        plan.layers[n] = old
    if not moves:
        return ""
    changed = ", ".join(f"{n}={k}{'' if b is None else f'/{b}b'}" for n, (k, b) in
                        ((n, plan.kind(n)) for n in dict.fromkeys(n for n, _ in moves)))
    logger.info("budget left once quantized: more precision for %s", changed)
    return changed


def _reachable_floor(bm: ByteModel, model: nn.Module, factorize: bool) -> int:
    """Lower bound of the reachable size: each layer at one nonzero per output row, or (when
    factorization is allowed) its rank-1 factorization at one nonzero per row, whichever is smaller."""
    kind = (bm.representation if bm.plan is None else "csr", None)  # factor layers: a float upper bound
    size = partial(bm.store.shape_nbytes, kind=kind)
    total = bm.fixed
    for name, g in bm.layers.items():
        best = bm.layer_bytes(name, min(g.numel, g.rows))
        mod = model.get_submodule(name)
        if factorize and isinstance(mod, nn.Linear):
            out_f, in_f = mod.weight.shape
            best = min(best, size(1, in_f, 1) + size(out_f, 1, out_f))
        elif factorize and isinstance(mod, nn.Conv2d) and mod.groups == 1:
            c_out, c_in, kh, kw = mod.weight.shape
            best = min(best, size(1, c_in, 1) + size(1, kh * kw, 1) + size(c_out, 1, c_out))
        total += best
    return total


def _force_into_budget(ctx: _Ctx, bm: ByteModel, masks: _Masks, budget, numel, min_nnz, drop, floor) -> int:
    model = ctx.model
    target = budget
    for _ in range(20):
        try:
            nnz = allocate(numel, current_nnz(model), min_nnz, bm.layer_bytes, drop, bm.fixed, max(target, floor))
        except UnreachableBudget as exc:
            raise CompressionError(f"could not bring the model under {budget} bytes: {exc}") from exc
        for n, k in nnz.items():
            masks.tighten(model, n, 1.0 - k / numel[n])
        masks.apply()
        exact = int(exact_weight_bytes(model, ctx.example, ctx.representation, ctx.plan).total)
        if exact <= budget:
            return exact
        target -= exact - budget + 16
    raise CompressionError(f"could not bring the model under {budget} bytes (codegen counts {exact})")


def _finish(report: CompressionReport, ctx: _Ctx, test_loader, t0: float) -> CompressionReport:
    model = ctx.model
    if ctx.plan is not None:  # every path ends with the model holding the values it was budgeted as
        _quantize_stage(ctx, report, ctx.quant_epochs, ctx.quant_lr, ctx.tol)
    heads = 0
    if ctx.exits is not None:  # the budget was the backbone's and the heads' together
        report.target_bytes += ctx.exit_reserve
        heads = _finish_exit_heads(ctx, report)
    _enforce_budget(ctx, report, report.target_bytes - heads)
    final = exact_weight_bytes(model, ctx.example, ctx.representation)
    report.final_bytes = int(final.total) + heads
    report.val_accuracy_after = evaluate(model, ctx.val_loader, ctx.device, ctx.metric)
    report.test_accuracy_after = (report.val_accuracy_after if test_loader is ctx.val_loader else
                                  evaluate(model, test_loader, ctx.device, ctx.metric))
    report.layers = _layer_rows(model, final, ctx.representation)
    report.wall_time_s = time.monotonic() - t0
    if report.final_bytes > report.target_bytes:  # cannot happen after _enforce_budget; never report "met" if so
        report.success = False
    record_emission(model, ctx.representation, int(final.total), report.target_bytes - heads)
    if ctx.exits is not None and ctx.exit_epochs:
        record_emission(ctx.exits, ctx.representation, report.final_bytes, report.target_bytes)
    logger.info("compression finished: %d bytes (budget %d), val %.4f, test %.4f: %s", report.final_bytes,
                report.target_bytes, report.val_accuracy_after, report.test_accuracy_after, report.stopped_reason)
    return report


def _head_sharing(cfg: CompressConfig) -> str:
    from .sham import METHODS

    return cfg.representation if cfg.representation in METHODS else "cws"


def _exit_head_layers(exits: nn.Module) -> list[nn.Linear]:
    return [m for n, m in exits.named_modules() if isinstance(m, nn.Linear) and not n.startswith("backbone.")]


@torch.no_grad()
def _store_exit_heads_(exits: nn.Module, representation: str, sharing: str) -> None:
    """Give the exit heads the values the C will hold: the int8 grid (int8, per-layer "auto") or 8-bit
    shared weights (codebook, huffman, sHAM's quantizers); float representations keep them as they are."""
    from codegen.quantize import int8_quantize_array

    from .sham import share

    for m in _exit_head_layers(exits):
        w = m.weight.detach().cpu().numpy()
        if representation in ("int8", "auto"):
            new = int8_quantize_array(w.astype("float64"))
        elif representation in ("codebook", "huffman"):
            new = share(w, 8, sharing)
        else:
            continue
        m.weight.copy_(torch.from_numpy(new).to(m.weight))


def _exit_heads_bytes(exits: nn.Module, representation: str, sharing: str) -> int:
    """Exact bytes codegen emits for the exit heads stored as :func:`_store_exit_heads_` stores them (the
    heads themselves are left unchanged)."""
    heads = _exit_head_layers(exits)
    saved = [m.weight.detach().clone() for m in heads]
    try:
        _store_exit_heads_(exits, representation, sharing)
        return exit_heads_bytes(exits, representation)
    finally:
        with torch.no_grad():
            for m, w in zip(heads, saved):
                m.weight.copy_(w)


def _finish_exit_heads(ctx: _Ctx, report: CompressionReport) -> int:
    """The backbone is compressed: retrain the exit heads on its features (backbone frozen, ``exit_epochs``;
    probes skip it), store them as the representation holds them, return their exact bytes."""
    from .early_exit import train_exits

    exits = ctx.exits
    exits.__dict__["_fx"] = None  # the backbone's layers may have been replaced (BatchNorm folded, factorized)
    sharing = ctx.exit_sharing
    if not ctx.exit_epochs:  # a probe (a copy of the backbone): the bytes only
        return _exit_heads_bytes(exits, ctx.representation, sharing)
    grads = [p.requires_grad for p in ctx.model.parameters()]
    try:
        train_exits(exits, ctx.train_loader, epochs=ctx.exit_epochs, lr=3e-3, freeze_backbone=True)
    finally:
        for p, g in zip(ctx.model.parameters(), grads):
            p.requires_grad_(g)
    _store_exit_heads_(exits, ctx.representation, sharing)
    heads = exit_heads_bytes(exits, ctx.representation)
    report.exit_heads_bytes = heads
    logger.info("exit heads retrained on the compressed backbone (%d epochs): %d bytes as %s", ctx.exit_epochs,
                heads, ctx.representation)
    return heads


def record_emission(model: nn.Module, representation: str, weight_bytes: int, budget: int) -> None:
    """Store on ``model`` how it must be emitted, in the plain attribute codegen reads
    (``codegen.api.EMIT_ATTR``): ``save_compressed_model(model, input_data=...)`` then emits exactly
    the representation -- and the bytes -- the compressor budgeted."""
    from codegen.api import EMIT_ATTR

    setattr(model, EMIT_ATTR, {"representation": representation, "weight_bytes": int(weight_bytes),
                               "budget_bytes": int(budget)})


def _enforce_budget(ctx: _Ctx, report: CompressionReport, budget: int) -> None:
    """The hard guarantee: measure the model with codegen's count (the bytes the C will hold) and, while
    it is over budget, prune the smallest weights of every layer that still has more than one nonzero
    per output row (each row keeps its largest weight, so int8 grids and codebooks stay exact), then
    measure again.  Raises :class:`CompressionError` if even that cannot fit (the model is restored)."""
    model = ctx.model
    exact = int(exact_weight_bytes(model, ctx.example, ctx.representation).total)
    if exact <= budget:
        return
    start, pruned, frac = exact, 0, 0.0
    for _ in range(200):
        comp = find_compressible_layers(model)
        nnz = current_nnz(model)
        rows = {n: m.weight.shape[0] for n, m in comp.items()}
        prunable = [n for n in comp if nnz[n] > rows[n]]
        if not prunable:
            break
        over = exact - budget
        share = sum(int(v) for k, v in dict(exact_weight_bytes(model, ctx.example, ctx.representation)
                                            .layers).items() if k in prunable)
        frac = min(0.5, max(frac * 1.5 if frac else 0.0, over / max(1, share) * 1.05, 0.01))
        with torch.no_grad():
            for n in prunable:
                w = comp[n].weight
                keep = max(rows[n], int(nnz[n] * (1.0 - frac)))
                mask = magnitude_mask(w, 1.0 - keep / w.numel(), w != 0)
                w2 = w.detach().reshape(w.shape[0], -1)
                top = torch.zeros_like(w2, dtype=torch.bool)
                top.scatter_(1, w2.abs().argmax(dim=1, keepdim=True), True)
                mask = (mask | top.view_as(w)) & (w != 0)
                pruned += int((w != 0).sum()) - int(mask.sum())
                w.mul_(mask)
        new = int(exact_weight_bytes(model, ctx.example, ctx.representation).total)
        if new < exact:
            frac = 0.0  # progress: size the next step from what is still over
        exact = new
        if exact <= budget:
            break
    if exact > budget:
        raise BudgetError(
            f"cannot fit the model into {budget} bytes as {ctx.representation!r}: codegen counts {exact} bytes "
            "with one weight per output row left in every layer; raise the budget or choose a smaller "
            "representation (int8, codebook or auto)", exact)
    msg = (f"the trained model measured {start} bytes (> budget {budget}); pruned {pruned} more weights "
           f"without fine-tuning to reach {exact} bytes")
    logger.warning("%s", msg)
    report.warnings.append(msg)


def _layer_rows(model: nn.Module, byte_report, representation: str) -> list[LayerRow]:
    comp = find_compressible_layers(model)
    store = LayerBytes(comp, representation)
    per_layer = {k: int(v) for k, v in dict(getattr(byte_report, "layers", {})).items()}
    rows: list[LayerRow] = []
    for name in list(per_layer) + [n for n in comp if n not in per_layer]:
        mod = model.get_submodule(name) if name else model
        if name in comp:
            g, nnz = store.layers[name], store.nnz[name]
            if representation in ("dense", "csr"):
                fmt = store.format_of(name)
            else:  # the encoding codegen picks for these exact values
                fmt = _encoding_name(mod.weight, representation, name)
            rows.append(LayerRow(name, type(mod).__name__, list(mod.weight.shape), nnz / g.numel, fmt,
                                 per_layer.get(name, 0)))
        else:
            shape = list(getattr(mod, "weight", torch.empty(0)).shape) if hasattr(mod, "weight") else []
            rows.append(LayerRow(name, type(mod).__name__, shape, None, "dense", per_layer.get(name, 0)))
    return rows



def _encoding_name(weight: torch.Tensor, representation: str, layer: str) -> str:
    from codegen.errors import CodegenError
    from codegen.formats import choose_encoding

    try:
        return choose_encoding(weight.detach().cpu().numpy(), representation, layer).name
    except CodegenError:
        return "?"
