"""Second front end: ``torch.export`` for models torch.fx cannot trace symbolically.

torch.fx traces ``forward()`` with symbolic tensors, so Python arithmetic or control flow on shapes
(timm's ``Conv2dSame`` computing its padding from the input size, ``if x.shape[-1] > 8``) stops it.
``torch.export.export(model, (x,), strict=False)`` runs ``forward()`` on the example input, so such
code sees concrete sizes and the graph records what it decided. Its graph holds ATen ops
(``aten.conv2d``, ``aten.add.Tensor``, ...); :func:`translate` maps them onto the SAME lowering
registry the fx front end uses (``codegen.lowering.LOWERINGS``), so the IR and the C are those the fx
front end gives for the same computation:

* ops with parameter operands (``aten.conv1d/conv2d/convolution``, ``aten.linear``, the inference
  batch norms) become a ``call_module`` of the standard torch.nn module they stand for, built around the
  model's own tensors (no copy) and named after the module whose ``forward()`` made the op (so
  ``conv_stem`` stays ``conv_stem``); the module lowerings then run unchanged;
* ops with an explicit entry in ``_ADAPTERS`` get their arguments adapted (``aten.hardtanh(x, 0, 6)`` is
  ``F.relu6``, ``aten.constant_pad_nd`` is ``F.pad``, ``aten._softmax`` is ``F.softmax``, identities
  such as ``aten.clone`` disappear);
* every other op ``aten.<name>`` becomes the first of ``F.<name>``, ``torch.<name>``,
  ``Tensor.<name>`` that has a registered lowering, with the same arguments (ATen schemas follow the
  torch signatures), so an op added to the registry is reached from both front ends;
* anything else keeps its ATen target and is reported by the driver's UnsupportedOpError as
  ``aten.<name>``.

``trace_model`` is the front end the emitters call: torch.fx first, torch.export when fx cannot trace.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

from codegen.constfold import simplify_graph
from codegen.errors import CodegenError, UntraceableModelError
from codegen.lowering import LOWERINGS, NameAllocator
from codegen.trace import offending_line, trace

log = logging.getLogger(__name__)

aten = torch.ops.aten


class _Param:
    """A parameter, buffer or constant tensor operand of an exported op (not computed from the input)."""

    def __init__(self, name: str, tensor: torch.Tensor):
        self.name, self.tensor = name, tensor


class _Translator:
    """Builds the fx graph of standard modules and registry functions from an exported program."""

    def __init__(self, ep: Any, model_name: str):
        self.ep = ep
        self.root: dict[str, Any] = {}  # qualified name -> module or tensor (fx.GraphModule builds the tree)
        self.graph = fx.Graph()
        self.env: dict[str, Any] = {}  # exported node name -> new node, _Param or python value
        self.first_of: dict[str, fx.Node] = {}  # tuple-returning op -> the new node of its element 0
        self.module_names = NameAllocator()
        self.const_names = NameAllocator()
        self.model_name = model_name

    # ---- helpers for adapters -------------------------------------------------------------------
    def owner_path(self, node: fx.Node) -> str:
        """Module path of the innermost module whose forward() made ``node`` ("" for the model's own)."""
        stack = node.meta.get("nn_module_stack") or {}
        if not stack:
            return ""
        last = list(stack.values())[-1]
        path = last[0] if isinstance(last, tuple) else str(last)
        return str(path)

    def add_module(self, node: fx.Node, module: nn.Module, inputs: list[Any]) -> fx.Node:
        """A call_module of ``module`` named after the owner of ``node`` (unique), on ``inputs``."""
        base = self.owner_path(node) or node.name
        name = base
        i = 2
        while name.lower() in self.module_names.used:
            name, i = f"{base}_{i}", i + 1
        self.module_names.used.add(name.lower())
        self.root[name] = module
        return self.graph.call_module(name, tuple(inputs))

    def const(self, p: _Param) -> fx.Node:
        """A get_attr node for a constant operand (the registry refuses or accepts it, as for fx)."""
        name = "_const." + self.const_names(p.name)
        self.root[name] = p.tensor.detach()
        return self.graph.get_attr(name)

    def value(self, a: Any) -> Any:
        """An argument of an exported node mapped into the new graph (constant tensors as get_attr)."""
        if isinstance(a, fx.Node):
            v = self.env[a.name]
            return self.const(v) if isinstance(v, _Param) else v
        if isinstance(a, (list, tuple)):
            return type(a)(self.value(x) for x in a)
        return a

    # ---- the translation ------------------------------------------------------------------------
    def run(self, x: torch.Tensor) -> fx.GraphModule:
        sig = self.ep.graph_signature
        params = {**getattr(sig, "inputs_to_parameters", {}), **getattr(sig, "inputs_to_buffers", {}),
                  **getattr(sig, "inputs_to_lifted_tensor_constants", {})}  # fmt: skip
        state = {**self.ep.state_dict, **getattr(self.ep, "constants", {})}
        user_inputs = list(sig.user_inputs)
        for node in self.ep.graph.nodes:
            if node.op == "placeholder":
                if node.name in params:
                    self.env[node.name] = _Param(params[node.name], state[params[node.name]])
                elif node.name in user_inputs:
                    self.env[node.name] = self.graph.placeholder("x")
                else:
                    raise CodegenError(f"torch.export gave an input '{node.name}' that is neither the model "
                                       "input nor a parameter")  # fmt: skip
            elif node.op == "output":
                outs = node.args[0]
                if len(outs) != 1:
                    raise CodegenError(f"the model must return one tensor; it returns {len(outs)} outputs. Wrap it "
                                       "so forward() returns a single tensor.")  # fmt: skip
                self.graph.output(self.value(outs[0]))
            elif node.op == "call_function":
                self.call(node)
            else:  # get_attr of submodules (higher-order ops): not translated
                raise CodegenError(f"torch.export gave a '{node.op}' node ({node.target}) that codegen cannot "
                                   "translate")  # fmt: skip
        gm = _graph_module(self.root, self.graph, self.model_name)
        with torch.no_grad():
            ShapeProp(gm).propagate(x.clone())
        return gm

    def call(self, node: fx.Node) -> None:
        target = node.target
        if target is operator.getitem and node.args[0].name in self.first_of:
            if node.args[1] == 0:
                self.env[node.name] = self.first_of[node.args[0].name]
            return  # other elements (saved statistics) of inference batch norm / pool indices: unused
        val = node.meta.get("val")
        if val is None and target not in (operator.getitem,):
            return  # assertions and other side-effect-only nodes
        packet = getattr(target, "overloadpacket", None)
        key = getattr(packet, "__name__", None)
        adapter = _ADAPTERS.get(target) or _ADAPTERS.get(packet)
        new: Any
        if adapter is not None:
            new = adapter(self, node)
        else:
            new = self.default(node, key)
        if new is None:
            return
        if isinstance(new, fx.Node):
            new.meta["nn_module_stack"] = dict(node.meta.get("nn_module_stack") or {})
        self.env[node.name] = new

    def default(self, node: fx.Node, key: str | None) -> fx.Node:
        """``aten.<name>`` -> F.<name> / torch.<name> / Tensor.<name> with a lowering; else kept as is."""
        args, kwargs = self.value(tuple(node.args)), self.value(dict(node.kwargs))
        if key:
            for ns in (F, torch):
                fn = getattr(ns, key, None)
                if fn is not None and fn in LOWERINGS:
                    return self.graph.call_function(fn, args, kwargs)
            method = getattr(torch.Tensor, key, None)
            if method is not None and method in LOWERINGS:
                return self.graph.call_method(key, args, kwargs)
        return self.graph.call_function(node.target, args, kwargs)  # reported as aten.<name>


def _graph_module(root: dict[str, Any], graph: fx.Graph, name: str) -> fx.GraphModule:
    from codegen.trace import graph_module

    return graph_module(root, graph, name)


# ---- adapters: exported ATen op -> registry key with its arguments ---------------------------------


def _tensor(a: Any) -> torch.Tensor | None:
    return a.tensor if isinstance(a, _Param) else None


def _params_or_default(tr: _Translator, node: fx.Node) -> Callable[[int], Any]:
    def get(i: int) -> Any:
        a = node.args[i] if len(node.args) > i else None
        return tr.env.get(a.name) if isinstance(a, fx.Node) else a

    return get


def _conv(tr: _Translator, node: fx.Node) -> Any:
    """aten.conv1d/conv2d(x, w, b, stride, padding, dilation, groups) and aten.convolution(x, w, b, stride,
    padding, dilation, transposed, output_padding, groups) with parameter weights -> nn.Conv1d/Conv2d."""
    get = _params_or_default(tr, node)
    w, b = _tensor(get(1)), get(2)
    if w is None or (b is not None and _tensor(b) is None) or w.dim() not in (3, 4):
        # computed weights: F.conv1d/conv2d (same arguments) when the registry has a lowering for it
        return tr.default(node, None if node.target.overloadpacket is aten.convolution else node.target.__name__.split(".")[0])
    n = w.dim() - 2
    if node.target.overloadpacket is aten.convolution:
        stride, padding, dilation, transposed, _out_pad, groups = (get(i) for i in range(3, 9))
        if transposed:
            return tr.default(node, None)
    else:
        stride, padding, dilation, groups = get(3) or 1, get(4) or 0, get(5) or 1, get(6) or 1
    cls = nn.Conv1d if n == 1 else nn.Conv2d
    m = cls(w.shape[1] * int(groups), w.shape[0], tuple(w.shape[2:]), stride=stride, padding=padding,
            dilation=dilation, groups=int(groups), bias=b is not None, device="meta")  # fmt: skip
    m.weight = nn.Parameter(w, requires_grad=False)
    if b is not None:
        m.bias = nn.Parameter(_tensor(b), requires_grad=False)
    return tr.add_module(node, m, [tr.value(node.args[0])])


def _linear(tr: _Translator, node: fx.Node) -> Any:
    get = _params_or_default(tr, node)
    w, b = _tensor(get(1)), get(2)
    if w is None or w.dim() != 2 or (b is not None and _tensor(b) is None):
        return tr.default(node, "linear")  # computed weights: F.linear when the registry has a lowering for it
    m = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device="meta")
    m.weight = nn.Parameter(w, requires_grad=False)
    if b is not None:
        m.bias = nn.Parameter(_tensor(b), requires_grad=False)
    return tr.add_module(node, m, [tr.value(node.args[0])])


def _batch_norm(tr: _Translator, node: fx.Node) -> Any:
    """aten._native_batch_norm_legit_no_training(x, w, b, mean, var, momentum, eps) (a tuple) and
    aten.batch_norm(x, w, b, mean, var, training, momentum, eps, cudnn) -> nn.BatchNorm1d/2d (eval)."""
    get = _params_or_default(tr, node)
    w, b, mean, var = (get(i) for i in range(1, 5))
    tuple_form = node.target.overloadpacket is not aten.batch_norm
    if tuple_form:
        eps = get(6)
    else:
        if get(5):  # training=True: batch statistics
            return tr.default(node, None)
        eps = get(7)
    stats = [mean, var] + [t for t in (w, b) if t is not None]
    x = node.args[0]
    rank = len(x.meta["val"].shape) if isinstance(x, fx.Node) and "val" in x.meta else 0
    if any(_tensor(t) is None for t in stats) or rank not in (2, 3, 4):
        return tr.default(node, None)
    cls = nn.BatchNorm2d if rank == 4 else nn.BatchNorm1d
    mean_t = _tensor(mean)
    m = cls(mean_t.shape[0], eps=float(eps), affine=w is not None or b is not None)
    with torch.no_grad():
        m.running_mean.copy_(mean_t)
        m.running_var.copy_(_tensor(var))
        if m.affine:
            m.weight.copy_(_tensor(w) if w is not None else torch.ones_like(mean_t))
            m.bias.copy_(_tensor(b) if b is not None else torch.zeros_like(mean_t))
    m.eval()
    new = tr.add_module(node, m, [tr.value(x)])
    if tuple_form:
        tr.first_of[node.name] = new
    return new


def _first_of_tuple(fn: Any, n_args: int) -> Callable[[_Translator, fx.Node], Any]:
    """A tuple-returning op (max_pool2d_with_indices) whose element 0 is ``fn`` of its first n_args."""

    def adapt(tr: _Translator, node: fx.Node) -> Any:
        new = tr.graph.call_function(fn, tr.value(tuple(node.args[:n_args])))
        tr.first_of[node.name] = new
        return new

    return adapt


def _as(fn: Any, n_args: int | None = None, **fixed: Any) -> Callable[[_Translator, fx.Node], Any]:
    """The op is ``fn`` with its first n_args positional arguments (all by default) and ``fixed`` keywords."""

    def adapt(tr: _Translator, node: fx.Node) -> Any:
        args = tr.value(tuple(node.args if n_args is None else node.args[:n_args]))
        return tr.graph.call_function(fn, args, fixed)

    return adapt


def _identity(tr: _Translator, node: fx.Node) -> Any:
    return tr.value(node.args[0])


def _hardtanh(tr: _Translator, node: fx.Node) -> Any:
    lo = node.args[1] if len(node.args) > 1 else -1.0
    hi = node.args[2] if len(node.args) > 2 else 1.0
    if (float(lo), float(hi)) == (0.0, 6.0):
        return tr.graph.call_function(F.relu6, (tr.value(node.args[0]),))
    return tr.graph.call_function(F.hardtanh, tr.value(tuple(node.args)))


def _constant_pad(tr: _Translator, node: fx.Node) -> Any:
    value = node.args[2] if len(node.args) > 2 else 0.0
    return tr.graph.call_function(F.pad, (tr.value(node.args[0]), list(node.args[1]), "constant", value))


def _dropout(tr: _Translator, node: fx.Node) -> Any:
    return tr.value(node.args[0])  # inference: identity (export records train=False dropouts as such)


_ADAPTERS: dict[Any, Callable[[_Translator, fx.Node], Any]] = {
    aten.conv1d: _conv, aten.conv2d: _conv, aten.convolution: _conv,
    aten.linear: _linear,
    aten._native_batch_norm_legit_no_training: _batch_norm, aten.batch_norm: _batch_norm,
    aten.max_pool2d_with_indices: _first_of_tuple(F.max_pool2d, 6),
    aten.max_pool1d_with_indices: _first_of_tuple(F.max_pool1d, 6),
    aten.hardtanh: _hardtanh,
    aten.constant_pad_nd: _constant_pad,
    aten._softmax: _as(F.softmax, 2), aten._log_softmax: _as(F.log_softmax, 2),
    aten.softmax: _as(F.softmax, 2), aten.log_softmax: _as(F.log_softmax, 2),
    aten.add: _as(operator.add, 2), aten.mul: _as(operator.mul, 2),
    aten.scaled_dot_product_attention: _as(F.scaled_dot_product_attention),  # codegen/attention.py
    aten.layer_norm: _as(F.layer_norm, 5), aten.group_norm: _as(F.group_norm, 5),  # without cudnn_enable
    aten.view: _as(torch.reshape), aten._unsafe_view: _as(torch.reshape), aten.reshape: _as(torch.reshape),
    aten.dropout: _dropout, aten.feature_dropout: _dropout,
    aten.clone: _identity, aten.alias: _identity, aten.detach: _identity, aten.contiguous: _identity,
    aten.lift_fresh_copy: _identity,
}  # fmt: skip


# ---- the front end -------------------------------------------------------------------------------


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def export_graph(model: nn.Module, x: torch.Tensor) -> fx.GraphModule:
    """The prepared model exported with ``torch.export`` (static shapes) and translated onto the lowering
    registry, with node.meta['tensor_meta'] on every node, like ``codegen.trace.trace`` gives."""
    try:
        with torch.no_grad():
            # run_decompositions({}): functional ATen (in-place ops rewritten), composite ops kept whole
            ep = torch.export.export(model, (x.clone(),), strict=False).run_decompositions({})
    except Exception as exc:  # noqa: BLE001 - torch.export raises many kinds
        raise UntraceableModelError(
            f"torch.export could not export {type(model).__name__}.forward(): {_first_line(exc)}"
            f"{offending_line(exc)}"
        ) from exc
    gm = _Translator(ep, type(model).__name__).run(x)
    with torch.no_grad():
        ours, theirs = gm(x.clone()), model(x.clone())
    if not (isinstance(ours, torch.Tensor) and isinstance(theirs, torch.Tensor) and ours.shape == theirs.shape
            and torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6, equal_nan=True)):  # fmt: skip
        raise UntraceableModelError(
            f"the graph torch.export recorded for {type(model).__name__}.forward() computes a different result "
            "than forward() itself on the example input; emit it with a model torch.fx can trace"
        )
    log.info("exported %s with torch.export: %d nodes", type(model).__name__, len(gm.graph.nodes))
    return gm


def trace_model(
    model: nn.Module,
    x: torch.Tensor,
    leaf_modules: tuple[type, ...] = (),
    concrete_args: dict | None = None,
) -> fx.GraphModule:
    """The front end of every emission: torch.fx symbolic tracing (``codegen.trace.trace``), and when fx
    cannot trace the model, ``torch.export`` (``export_graph``). A model neither can take gets one
    UntraceableModelError naming both failures (each with the file:line of the offending expression).
    Then attention rewritten (``codegen.attention``; shapes propagated again) and ``codegen.constfold``:
    eval-mode identities removed, parameter-only computations folded."""
    gm = _trace_either(model, x, leaf_modules, concrete_args)
    simplify_graph(gm, x)
    return gm


def _trace_either(model: nn.Module, x: torch.Tensor, leaf_modules: tuple[type, ...],
                  concrete_args: dict | None) -> fx.GraphModule:
    try:
        return trace(model, x, leaf_modules, concrete_args)
    except UntraceableModelError as fx_exc:
        log.info("torch.fx could not trace %s; trying torch.export", type(model).__name__)
        try:
            gm = export_graph(model, x)
        except UntraceableModelError as ex_exc:
            raise UntraceableModelError(
                f"{fx_exc}\nThe fallback front end failed too: {ex_exc}"
            ) from ex_exc
        if leaf_modules:
            log.warning("torch.export front end: leaf_modules %s are traced through (not kept whole)",
                        [c.__name__ for c in leaf_modules])  # fmt: skip
        return gm
