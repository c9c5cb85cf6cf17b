"""Early-exit models: one global exit ("gNet") or one exit per branch, over a trained backbone.

Batteryless, energy-harvesting devices may have to stop an inference when the energy runs out
and still answer. An exit model adds exits to a (compressed, trained) backbone:

* at each exit point (a module name such as ``"features.2"`` or an fx node name) the feature map
  is average-pooled to a small fixed size (``pool_size`` per exit) and flattened;
* ``kind="global"`` (gNet): the pooled features of all exit points are concatenated — those of
  the stages not reached yet are zeros — and ONE small classifier (dropout + Linear) answers from
  whatever has been computed;
* ``kind="branch"``: every exit point has its own small head (dropout + Linear [+ ReLU + Linear]):
  more flash, usually better early accuracy.

``simulate_exit`` decides which exit is taken and masks the features after it: during training
each batch takes a random exit, so the classifier learns to answer from partial features.
``train_exits`` trains the heads with the backbone frozen (the default: the emitted exit path
reuses the backbone's weights), ``evaluate_exits`` gives accuracy and MACs per exit, and
``codegen.early_exit.save_compressed_early_exit_model`` emits model.c + model_ee.c.

Example::

    >>> ee = build_exit_model(net, ["features.2", "features.5", "features.8"], (1, 1, 8, 8))  # doctest: +SKIP
    >>> train_exits(ee, train_loader, epochs=5)                                               # doctest: +SKIP
    >>> for r in evaluate_exits(ee, test_loader): print(r)                                    # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from codegen.early_exit import (
    EXIT_KINDS,
    ExitSpec,
    HeadLayer,
    analyze_backbone,
    exit_macs,
    feature_size,
)
from codegen.errors import CodegenError
from codegen.trace import LeafTracer, example_from, graph_module

from .training import split_batch

log = logging.getLogger(__name__)

__all__ = [
    "EarlyExitModel",
    "ExitResult",
    "build_exit_model",
    "evaluate_exits",
    "simulate_exit",
    "train_exits",
]


def simulate_exit(
    features: Sequence[torch.Tensor],
    exit_index: int | None = None,
    *,
    training: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[list[torch.Tensor], int]:
    """Decides which exit is taken and masks the features after it.

    ``features``: the pooled, flattened features (B, n_i) of every exit point, in order.
    ``exit_index``: the exit to take; None takes a random exit (uniform, one per call, i.e. per
    batch) when ``training``, the last exit otherwise. Returns (features with those of the exits
    after the one taken replaced by zeros, the exit taken) — what the device computes when it
    stops after that exit's stage.

    >>> f, k = simulate_exit([torch.ones(1, 2), torch.ones(1, 3)], 0); k, f[1].sum().item()
    (0, 0.0)
    """
    n = len(features)
    if exit_index is None:
        exit_index = int(torch.randint(n, (1,), generator=generator)) if training else n - 1
    if not 0 <= exit_index < n:
        raise ValueError(f"exit index {exit_index} is outside 0..{n - 1}")
    return [f if i <= exit_index else torch.zeros_like(f) for i, f in enumerate(features)], exit_index


def _pool_tuple(shape: tuple[int, ...], size) -> tuple[int, ...]:
    """The pooling output size at one exit: () for flat features or size None."""
    if size is None or len(shape) == 1:
        return ()
    if len(shape) == 2:
        return (1, int(size if np.isscalar(size) else size[-1]))
    if np.isscalar(size):
        return (int(size), int(size))
    return (int(size[0]), int(size[1]))


class EarlyExitModel(nn.Module):
    """A backbone with exits (build it with ``build_exit_model``).

    ``forward(x, exit_index=None, simulate_exit=None)``: the answer of exit ``exit_index``
    (0 .. num_exits - 1), or the backbone's own output for ``exit_index == num_exits``; None takes
    a random exit in training mode and the last exit in eval mode (through ``simulate_exit``).
    ``forward_all(x)``: the answers of every exit and of the full path, computing the backbone once.
    """

    def __init__(self, backbone: nn.Module, exit_points: list[str], exit_nodes: list[str], graph: fx.Graph,
                 feature_shapes: list[tuple[int, ...]], pool_sizes: list[tuple[int, ...]], kind: str,
                 num_classes: int, dropout: float, hidden: int, input_shape: tuple[int, ...],
                 simulate: Callable = simulate_exit, leaf_modules: tuple[type, ...] = ()):  # fmt: skip
        super().__init__()
        self.backbone = backbone
        self.exit_points = list(exit_points)
        self.exit_nodes = list(exit_nodes)
        self.feature_shapes = [tuple(s) for s in feature_shapes]
        self.pool_sizes = [tuple(p) for p in pool_sizes]
        self.kind = kind
        self.num_classes = int(num_classes)
        self.input_shape = tuple(input_shape)
        self.leaf_modules = tuple(leaf_modules)
        self.simulate_exit = simulate
        self._graph = graph
        self.__dict__["_fx"] = None  # GraphModule over self.backbone (not a registered submodule)
        sizes = self.feature_sizes
        if kind == "global":
            self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(sum(sizes), num_classes))
        else:
            def head(n: int) -> nn.Sequential:
                if hidden:
                    return nn.Sequential(nn.Dropout(dropout), nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
                return nn.Sequential(nn.Dropout(dropout), nn.Linear(n, num_classes))

            self.heads = nn.ModuleList([head(n) for n in sizes])

    @property
    def num_exits(self) -> int:
        return len(self.exit_points)

    @property
    def feature_sizes(self) -> list[int]:
        return [feature_size(s, p) for s, p in zip(self.feature_shapes, self.pool_sizes)]

    def _gm(self) -> fx.GraphModule:
        gm = self.__dict__.get("_fx")
        if gm is None or gm.__dict__.get("_sc_root") is not self.backbone:
            gm = graph_module(self.backbone, self._graph)
            gm.__dict__["_sc_root"] = self.backbone
            self.__dict__["_fx"] = gm
        return gm

    def backbone_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(the backbone's output, the pooled and flattened features of every exit point)."""
        out = self._gm()(x)
        final, feats = out[0], list(out[1:])
        pooled = []
        for f, p in zip(feats, self.pool_sizes):
            if p and f.dim() == 4:
                f = F.adaptive_avg_pool2d(f, p)
            elif p and f.dim() == 3:
                f = F.adaptive_avg_pool1d(f, p[-1])
            pooled.append(f.flatten(1))
        return final, pooled

    def _answer(self, pooled: list[torch.Tensor], k: int) -> torch.Tensor:
        if self.kind == "global":
            return self.classifier(torch.cat(pooled, dim=1))
        return self.heads[k](pooled[k])

    def forward(self, x: torch.Tensor, exit_index: int | None = None,
                simulate_exit: Callable | None = None) -> torch.Tensor:  # fmt: skip
        if exit_index is not None and not 0 <= exit_index <= self.num_exits:
            raise ValueError(f"exit index {exit_index} is outside 0..{self.num_exits} ({self.num_exits}: the full path)")
        final, pooled = self.backbone_features(x)
        if exit_index == self.num_exits:
            return final
        fn = simulate_exit or self.simulate_exit
        masked, k = fn(pooled, exit_index, training=self.training)
        return self._answer(list(masked), k)

    def forward_all(self, x: torch.Tensor, simulate_exit: Callable | None = None) -> list[torch.Tensor]:
        """The answers of exits 0 .. num_exits - 1, then the backbone's output (one backbone pass)."""
        final, pooled = self.backbone_features(x)
        fn = simulate_exit or self.simulate_exit
        outs = []
        for k in range(self.num_exits):
            masked, k2 = fn(pooled, k, training=False)
            outs.append(self._answer(list(masked), k2))
        return outs + [final]

    def exit_spec(self) -> ExitSpec:
        """The exit part in plain numbers, for codegen (see codegen.early_exit.ExitSpec)."""
        def layers(seq: nn.Sequential) -> list[HeadLayer]:
            out: list[HeadLayer] = []
            for m in seq:
                if isinstance(m, nn.Linear):
                    out.append(HeadLayer(m.weight.detach().cpu().float().numpy().copy(),
                                         None if m.bias is None else m.bias.detach().cpu().float().numpy().copy()))  # fmt: skip
                elif isinstance(m, nn.ReLU) and out:
                    out[-1].act = "relu"
                elif not isinstance(m, (nn.Dropout, nn.Identity)):
                    raise CodegenError(f"exit head layer {type(m).__name__} is not supported (Linear, ReLU, Dropout)")
            return out

        heads = [layers(self.classifier)] if self.kind == "global" else [layers(h) for h in self.heads]
        return ExitSpec(self.kind, list(self.exit_points), list(self.pool_sizes), heads, self.num_classes)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, exit_points={self.exit_points}, pool_sizes={self.pool_sizes}"


def build_exit_model(
    backbone: nn.Module,
    exit_points: Sequence[str],
    example_input: torch.Tensor | tuple[int, ...],
    kind: str = "global",
    pool_size: int | Sequence[int | tuple[int, int] | None] | None = 2,
    *,
    num_classes: int | None = None,
    dropout: float = 0.2,
    hidden: int = 32,
    simulate: Callable = simulate_exit,
    leaf_modules: tuple[type, ...] = (),
    seed: int = 0,
) -> EarlyExitModel:
    """An exit model over ``backbone`` (shared, not copied) with exits after ``exit_points``.

    ``exit_points``: module names (``"features.2"``, ``"layer1"``) or fx node names, in execution
    order. ``pool_size``: one size for every exit, or a list with one per exit (an int p pools (C, H, W) maps to
    p x p and (C, L) signals to p; (h, w) for a rectangle; None keeps the whole map). ``hidden``:
    hidden units of the ``branch`` heads (0: a single Linear). ``num_classes``: default the
    backbone's output size. Raises ``codegen.CodegenError`` for an exit point that does not exist,
    is fused into the next layer in the generated C, or is out of order.
    """
    if kind not in EXIT_KINDS:
        raise ValueError(f"kind must be one of {EXIT_KINDS}, got {kind!r}")
    points = [exit_points] if isinstance(exit_points, str) else list(exit_points)
    x = example_from(example_input)
    an = analyze_backbone(backbone, x, points, leaf_modules)
    shapes = [p.shape for p in an.points]
    if pool_size is None or np.isscalar(pool_size) or isinstance(pool_size, tuple):
        sizes = [pool_size] * len(points)  # one size (or one (h, w) rectangle) for every exit
    else:
        sizes = list(pool_size)
        if len(sizes) != len(points):
            raise ValueError(f"give one pool size per exit point ({len(points)}), got {len(sizes)}")
    pools = [_pool_tuple(s, p) for s, p in zip(shapes, sizes)]
    for pt, s, p in zip(an.points, shapes, pools):
        if p and (len(s) < 2 or p[0] > (s[1] if len(s) == 3 else 1) or p[-1] > s[-1]):
            raise ValueError(f"exit point '{pt.name}': pool size {p} is larger than its feature map {s[1:]}")
    if num_classes is None:
        num_classes = an.graph.output_value.numel
    # the same fx graph codegen traced, over the live backbone, returning (output, exit features...)
    graph = LeafTracer(tuple(leaf_modules)).trace(backbone)
    by_name = {n.name: n for n in graph.nodes}
    exit_nodes = [by_name[p.node] for p in an.points]
    out_node = next(n for n in graph.nodes if n.op == "output")
    final = out_node.args[0]
    graph.erase_node(out_node)
    graph.output((final, *exit_nodes))
    graph.lint()
    torch.manual_seed(seed)
    model = EarlyExitModel(backbone, points, [p.node for p in an.points], graph, shapes, pools, kind,
                           num_classes, dropout, hidden, tuple(x.shape), simulate, leaf_modules)  # fmt: skip
    log.info("exit model: %s exits at %s, features %s", kind, points, model.feature_sizes)
    return model


def train_exits(
    model: EarlyExitModel,
    train_loader: Iterable,
    epochs: int = 10,
    lr: float = 3e-3,
    *,
    freeze_backbone: bool = True,
    simulate_exit: Callable | None = None,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> list[float]:
    """Trains the exits with simulated exits: every batch takes a random exit (``simulate_exit``,
    default the model's) and the loss is the cross-entropy of that exit's answer.

    The backbone is frozen by default (no gradient, eval mode: its BatchNorm statistics do not
    move), which the emitted exit path needs: it reuses the backbone's weights. With
    ``freeze_backbone=False`` the backbone is trained too; emit with ``exit_model.backbone`` as
    the baseline then. Returns the mean loss of every epoch.
    """
    gen = torch.Generator().manual_seed(seed)
    fn = simulate_exit or model.simulate_exit
    if freeze_backbone:
        for p in model.backbone.parameters():
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: every parameter is frozen")
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs * _len(train_loader)))

    def sim(features, exit_index=None, training=False):
        try:
            return fn(features, exit_index, training=training, generator=gen)
        except TypeError:
            return fn(features, exit_index, training=training)

    losses = []
    was_training = model.training
    try:
        for _ in range(epochs):
            model.train()
            if freeze_backbone:
                model.backbone.eval()
            total, count = 0.0, 0
            for batch in train_loader:
                x, y = split_batch(batch)
                opt.zero_grad()
                loss = F.cross_entropy(model(x, simulate_exit=sim), y)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(y)
                count += len(y)
            losses.append(total / max(count, 1))
            log.info("exit training epoch %d: loss %.4f", len(losses), losses[-1])
    finally:
        model.train(was_training)
    return losses


def _len(loader: Iterable) -> int:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return 1


@dataclass
class ExitResult:
    """Accuracy and cost of one exit (``exit == num_exits``: the full backbone)."""

    exit: int
    name: str
    accuracy: float
    macs: int

    def __str__(self) -> str:
        return f"exit {self.exit} ({self.name}): accuracy {self.accuracy:.4f}, {self.macs} MACs"


def exit_macs_of(model: EarlyExitModel) -> list[int]:
    """MACs of every exit (backbone stages up to it + its head) and of the full path, as emitted."""
    an = analyze_backbone(model.backbone, model.input_shape, model.exit_points, model.leaf_modules)
    return exit_macs(an, model.exit_spec())


@torch.no_grad()
def evaluate_exits(model: EarlyExitModel, loader: Iterable, simulate_exit: Callable | None = None) -> list[ExitResult]:
    """Top-1 accuracy and MACs of every exit, then of the full path (the backbone alone).

    MACs count the backbone layers the C runs up to the exit plus the exit's head (dense MACs,
    as codegen's report counts them).
    """
    was_training = model.training
    model.eval()
    n = model.num_exits
    correct = np.zeros(n + 1)
    count = 0
    try:
        for batch in loader:
            x, y = split_batch(batch)
            outs = model.forward_all(x, simulate_exit)
            for k, o in enumerate(outs):
                correct[k] += float((o.argmax(1) == y).sum())
            count += len(y)
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluation loader yielded no samples")
    macs = exit_macs_of(model)
    names = [*model.exit_points, "full"]
    return [ExitResult(k, names[k], correct[k] / count, macs[k]) for k in range(n + 1)]
