"""Attention, rewritten into ops the generator has, on the traced graph before lowering
(``codegen.export_frontend.trace_model``; shapes are propagated again afterwards).

- ``F.scaled_dot_product_attention(q, k, v)`` -> ``softmax((q @ k^T) * scale, -1) @ v``.
- ``nn.MultiheadAttention`` (batch_first=True) -> three F.linear projections (slices of ``in_proj_weight``,
  folded to constants by codegen.constfold), heads split by reshape + transpose, ``softmax((q / sqrt(d))
  @ k^T) @ v`` per head (as torch's need_weights path computes it), heads merged, ``out_proj``.
- ``nn.TransformerEncoderLayer`` (batch_first=True, either norm_first) -> its self-attention as above plus
  its own linear1 / activation / linear2 / norm1 / norm2 modules; ``nn.TransformerEncoder`` -> its layers in
  order, then its norm.

Masks (attn_mask, key_padding_mask, is_causal), dropout in training, ``bias_k``/``bias_v``/``add_zero_attn``
and a used attention-weights output are refused naming the layer. The products of two activations are
``codegen.ops.matmul.MatMul`` (float and int8).
"""

from __future__ import annotations

import logging
import math
import operator
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from codegen.errors import UnsupportedConfigError
from codegen.trace import recompile

log = logging.getLogger(__name__)

REWRITTEN_MODULES = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerEncoder)
REWRITTEN_FUNCTIONS = (F.scaled_dot_product_attention,)


def _fail(where: str, why: str, fix: str) -> UnsupportedConfigError:
    return UnsupportedConfigError(f"layer '{where}': {why}. {fix}", layer=where, why=why, fix=fix)


def _shape(node: Any) -> tuple[int, ...]:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    if meta is None:
        name = getattr(node, "name", repr(node))
        raise _fail(name, "an attention input has no known shape", "Pass tensors computed from the model input")
    return tuple(int(d) for d in meta.shape)


def _arg(node: fx.Node, i: int, name: str, default: Any = None) -> Any:
    if name in node.kwargs:
        return node.kwargs[name]
    return node.args[i] if len(node.args) > i else default


class _Builder:
    """Inserts the rewritten ops before ``anchor`` (all new nodes carry its module stack, for names)."""

    def __init__(self, gm: fx.GraphModule, anchor: fx.Node):
        self.g, self.anchor = gm.graph, anchor
        self.stack = dict(anchor.meta.get("nn_module_stack") or {})

    def _tag(self, n: fx.Node) -> fx.Node:
        n.meta["nn_module_stack"] = dict(self.stack)
        return n

    def fn(self, target: Any, *args: Any, **kwargs: Any) -> fx.Node:
        with self.g.inserting_before(self.anchor):
            return self._tag(self.g.call_function(target, args, kwargs))

    def method(self, name: str, *args: Any) -> fx.Node:
        with self.g.inserting_before(self.anchor):
            return self._tag(self.g.call_method(name, args))

    def module(self, path: str, *args: Any) -> fx.Node:
        with self.g.inserting_before(self.anchor):
            return self._tag(self.g.call_module(path, args))

    def attr(self, path: str) -> fx.Node:
        with self.g.inserting_before(self.anchor):
            return self._tag(self.g.get_attr(path))


def _scores_softmax_values(b: _Builder, q: fx.Node, k: fx.Node, v: fx.Node, scale: float | None,
                           scale_q_first: bool) -> fx.Node:  # fmt: skip
    kt = b.method("transpose", k, -2, -1)
    if scale_q_first and scale is not None:
        q = b.fn(operator.mul, q, scale)
    s = b.fn(torch.matmul, q, kt)
    if not scale_q_first and scale is not None:
        s = b.fn(operator.mul, s, scale)
    p = b.fn(torch.softmax, s, -1)
    return b.fn(torch.matmul, p, v)


def _mha(b: _Builder, path: str, mod: nn.MultiheadAttention, q_in: Any, k_in: Any, v_in: Any, lq: int,
         lk: int) -> fx.Node:
    """The attention of ``mod`` on (1, lq, E) queries and (1, lk, E) keys / values."""
    if not mod.batch_first:
        raise _fail(path, "nn.MultiheadAttention with batch_first=False takes (L, N, E) inputs; the C runs one "
                    "sample with the batch dimension first", "Construct it with batch_first=True")  # fmt: skip
    if mod.bias_k is not None or mod.bias_v is not None or mod.add_zero_attn:
        raise _fail(path, "nn.MultiheadAttention with add_bias_kv or add_zero_attn",
                    "Construct it without them")  # fmt: skip
    e, h = mod.embed_dim, mod.num_heads
    d = e // h
    bias = b.attr(f"{path}.in_proj_bias") if mod.in_proj_bias is not None else None

    def project(x: Any, i: int, separate: str) -> fx.Node:
        rows = slice(i * e, (i + 1) * e)
        if mod._qkv_same_embed_dim:
            w = b.fn(operator.getitem, b.attr(f"{path}.in_proj_weight"), rows)
        else:
            w = b.attr(f"{path}.{separate}")
        bi = b.fn(operator.getitem, bias, rows) if bias is not None else None
        return b.fn(F.linear, x, w, bi)

    def heads(x: fx.Node, length: int) -> fx.Node:  # (1, L, E) -> (1, H, L, d)
        return b.method("transpose", b.method("reshape", x, 1, length, h, d), 1, 2)

    q = heads(project(q_in, 0, "q_proj_weight"), lq)
    k = heads(project(k_in, 1, "k_proj_weight"), lk)
    v = heads(project(v_in, 2, "v_proj_weight"), lk)
    o = _scores_softmax_values(b, q, k, v, 1.0 / math.sqrt(d), scale_q_first=True)
    o = b.method("reshape", b.method("transpose", o, 1, 2), 1, lq, e)
    ob = b.attr(f"{path}.out_proj.bias") if mod.out_proj.bias is not None else None
    return b.fn(F.linear, o, b.attr(f"{path}.out_proj.weight"), ob)


def _no_masks(path: str, node: fx.Node, names: dict[str, int]) -> None:
    for name, i in names.items():
        v = _arg(node, i, name)
        if v is not None and v is not False:
            raise _fail(path, f"it is called with {name}", "Call it without masks (the C runs unmasked attention)")


def _encoder_layer(b: _Builder, path: str, mod: nn.TransformerEncoderLayer, x: Any, length: int) -> Any:
    """One encoder layer on a (1, length, E) sequence."""
    def sa(t: Any) -> fx.Node:
        return _mha(b, f"{path}.self_attn", mod.self_attn, t, t, t, length, length)

    def act(t: fx.Node) -> fx.Node:
        a = mod.activation
        if isinstance(a, nn.Module):
            return b.module(f"{path}.activation", t)
        return b.fn(a, t)

    def ff(t: Any) -> fx.Node:
        return b.module(f"{path}.linear2", act(b.module(f"{path}.linear1", t)))

    if mod.norm_first:
        x = b.fn(operator.add, x, sa(b.module(f"{path}.norm1", x)))
        return b.fn(operator.add, x, ff(b.module(f"{path}.norm2", x)))
    x = b.module(f"{path}.norm1", b.fn(operator.add, x, sa(x)))
    return b.module(f"{path}.norm2", b.fn(operator.add, x, ff(x)))


def _replace_tuple_output(path: str, node: fx.Node, out: fx.Node) -> None:
    """An nn.MultiheadAttention node returns (output, weights): item 0 becomes ``out``; weights must be unused."""
    for user in list(node.users):
        if user.op == "call_function" and user.target is operator.getitem and user.args[1] in (0, 1):
            if user.args[1] == 0:
                user.replace_all_uses_with(out)
            elif user.users:
                raise _fail(path, "its attention weights (output 1) are used",
                            "Use only the attention output (output 0)")  # fmt: skip
        else:
            raise _fail(path, "its (output, weights) tuple is used whole", "Use output 0 only: y, _ = attn(x, x, x)")
    for user in list(node.users):
        node.graph.erase_node(user)


def decompose_attention(gm: fx.GraphModule) -> int:
    """Rewrites every attention module / call of ``gm`` in place (see the module docstring); returns how
    many. The caller propagates shapes again when it is not 0."""
    modules = dict(gm.named_modules())
    n = 0
    for node in list(gm.graph.nodes):
        mod = modules.get(str(node.target)) if node.op == "call_module" else None
        if node.op == "call_function" and node.target is F.scaled_dot_product_attention:
            where = node.name
            _no_masks(where, node, {"attn_mask": 3, "is_causal": 5})
            if _arg(node, 4, "dropout_p", 0.0):
                raise _fail(where, "scaled_dot_product_attention with dropout_p > 0",
                            "Pass dropout_p=0.0 in eval mode (e.g. self.dropout if self.training else 0.0)")  # fmt: skip
            if _arg(node, 7, "enable_gqa", False):
                raise _fail(where, "scaled_dot_product_attention with enable_gqa", "Repeat k and v per head first")
            q, k, v = (_arg(node, i, nm) for i, nm in enumerate(("query", "key", "value")))
            scale = _arg(node, 6, "scale")
            scale = 1.0 / math.sqrt(_shape(q)[-1]) if scale is None else float(scale)
            b = _Builder(gm, node)
            out = _scores_softmax_values(b, q, k, v, scale, scale_q_first=False)
            node.replace_all_uses_with(out)
            gm.graph.erase_node(node)
            n += 1
        elif isinstance(mod, nn.MultiheadAttention):
            path = str(node.target)
            _no_masks(path, node, {"key_padding_mask": 3, "attn_mask": 5, "is_causal": 7})
            q, k, v = (_arg(node, i, nm) for i, nm in enumerate(("query", "key", "value")))
            b = _Builder(gm, node)
            out = _mha(b, path, mod, q, k, v, _shape(q)[1], _shape(k)[1])
            _replace_tuple_output(path, node, out)
            gm.graph.erase_node(node)
            n += 1
        elif isinstance(mod, (nn.TransformerEncoderLayer, nn.TransformerEncoder)):
            path = str(node.target)
            x = _arg(node, 0, "src")
            layers = ([(path, mod)] if isinstance(mod, nn.TransformerEncoderLayer)
                      else [(f"{path}.layers.{i}", m) for i, m in enumerate(mod.layers)])  # fmt: skip
            if isinstance(mod, nn.TransformerEncoderLayer):
                _no_masks(path, node, {"src_mask": 1, "src_key_padding_mask": 2, "is_causal": 3})
            else:
                _no_masks(path, node, {"mask": 1, "src_key_padding_mask": 2, "is_causal": 3})
            length = _shape(x)[1]
            b = _Builder(gm, node)
            y = x
            for lp, layer in layers:
                if not layer.self_attn.batch_first:
                    raise _fail(lp, "nn.TransformerEncoderLayer with batch_first=False takes (L, N, E) inputs",
                                "Construct it with batch_first=True")  # fmt: skip
                y = _encoder_layer(b, lp, layer, y, length)
            if isinstance(mod, nn.TransformerEncoder) and mod.norm is not None:
                y = b.module(f"{path}.norm", y)
            node.replace_all_uses_with(y)
            gm.graph.erase_node(node)
            n += 1
    if n:
        gm.graph.lint()
        recompile(gm)
        log.debug("rewrote %d attention op(s)", n)
    return n
