"""IR passes run after lowering: dead ops removed, BatchNorm folded into the conv/linear before it,
activations fused into their producer."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from codegen import ir
from codegen.ops import Act, Binary, ChannelAffine, Conv2d, Linear


def _single_consumer(g: ir.Graph, value: str) -> ir.Op | None:
    users = g.consumers(value)
    return users[0] if len(users) == 1 and value != g.output else None


def remove_dead_ops(g: ir.Graph) -> None:
    """Drops ops whose result is never used."""
    changed = True
    while changed:
        used = {v for op in g.ops for v in op.inputs} | {g.output}
        keep = [op for op in g.ops if op.output in used]
        changed = len(keep) != len(g.ops)
        g.ops[:] = keep


def fold_batchnorm(g: ir.Graph) -> None:
    """BatchNorm right after a conv/linear (and used only there) is folded into its weights."""
    for bn in [op for op in g.ops if isinstance(op, ChannelAffine)]:
        prod_op = g.producer(bn.inputs[0])
        if not isinstance(prod_op, (Conv2d, Linear)) or prod_op.act.kind != "none":
            continue
        if _single_consumer(g, prod_op.output) is not bn:
            continue
        if isinstance(prod_op, Linear) and not (bn.channels == prod_op.out_features and bn.inner == 1):
            continue
        if isinstance(prod_op, Conv2d) and bn.channels != prod_op.out_shape[0]:
            continue
        scale, shift = (a.astype(np.float64) for a in bn.scale_shift())
        w = prod_op.params["weight"].astype(np.float64) * scale[:, None]
        b = prod_op.params.get("bias")
        b = (b.astype(np.float64) if b is not None else np.zeros_like(scale)) * scale + shift
        prod_op.params["weight"] = w.astype(np.float32)
        prod_op.params["bias"] = b.astype(np.float32)
        prod_op.torch_op += f" + {bn.source} (BatchNorm folded)"
        prod_op.output = bn.output
        g.ops.remove(bn)


def fuse_activations(g: ir.Graph) -> None:
    """A standalone activation whose input has no other use is fused into the producing op."""
    for act in [op for op in g.ops if isinstance(op, Act)]:
        prod_op = g.producer(act.inputs[0])
        if not isinstance(prod_op, (Conv2d, Linear, ChannelAffine, Binary)):
            continue
        if prod_op.act.kind != "none" or _single_consumer(g, prod_op.output) is not act:
            continue
        prod_op.act = act.act
        prod_op.torch_op += f" + {act.source} ({act.act.kind} fused)"
        prod_op.output = act.output
        g.ops.remove(act)


PASSES: list[Callable[[ir.Graph], None]] = [remove_dead_ops, fold_batchnorm, fuse_activations, remove_dead_ops]
