"""Training and evaluation loops shared by the compressor and the sensitivity analysis.

All metrics are all-reduced over the process group when torch.distributed is initialized,
so every rank takes the same decisions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch
import torch.distributed as dist
import torch.nn as nn

logger = logging.getLogger(__name__)

Metric = Callable[[torch.Tensor, torch.Tensor], tuple[float, int]]


def top1(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, int]:
    """(number correct, number of samples) for classification logits."""
    return float((outputs.argmax(dim=1) == targets).sum()), int(targets.shape[0])


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Sum ``values`` over all ranks (identity when not distributed)."""
    if not distributed():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank if ``flag`` is true on any rank."""
    return all_reduce_sum([1.0 if flag else 0.0], device)[0] > 0


def split_batch(batch) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, dict):
        return batch["input"], batch["target"]
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise ValueError("loaders must yield (inputs, targets) pairs or dicts with 'input' and 'target'")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str = "cpu",
    metric: Metric = top1,
    max_batches: int | None = None,
) -> float:
    """Metric (default top-1 accuracy in [0, 1]) of ``model`` on ``loader``; restores train mode."""
    was_training = model.training
    model.eval()
    correct, count = 0.0, 0
    try:
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, y = split_batch(batch)
            out = model(x.to(device))
            c, n = metric(out, y.to(device))
            correct += c
            count += n
    finally:
        model.train(was_training)
    correct, count = all_reduce_sum([correct, float(count)], device)
    if count == 0:
        raise ValueError("evaluation loader yielded no samples")
    return correct / count


def make_optimizer(params, name: str, lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {name!r}")
