"""Reference models used by the examples, the benchmark and the CLI.

Example::

    >>> sum(p.numel() for p in lenet300_100().parameters()), sum(p.numel() for p in lenet5().parameters())
    (266610, 431080)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
import torch.nn as nn
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


def lenet300_100() -> nn.Module:
    """LeNet-300-100 (Caffe variant, 266,610 parameters) for 1x28x28 inputs."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10),
    )  # fmt: skip


def lenet5() -> nn.Module:
    """LeNet-5 (Caffe variant, 431,080 parameters) for 1x28x28 inputs."""
    return nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10),
    )  # fmt: skip


def digits_cnn() -> nn.Module:
    """The small CNN of the digits demo (1x8x8 inputs)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
    )  # fmt: skip


def train_classifier(model: nn.Module, loader: Iterable, epochs: int, lr: float = 1e-3,
                     device: str | torch.device = "cpu", progress: bool = True) -> nn.Module:
    """Plain Adam + cosine schedule + cross-entropy training (for examples and benchmarks)."""
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr)
    n = len(loader)  # type: ignore[arg-type]
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs * n))
    for ep in range(epochs):
        for x, y in tqdm(loader, desc=f"train epoch {ep + 1}/{epochs}", disable=not progress, leave=False):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x.to(device)), y.to(device)).backward()
            opt.step()
            sched.step()
    return model
