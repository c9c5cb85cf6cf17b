"""Frontend: torch.fx symbolic tracing with standard torch.nn modules kept whole, plus ShapeProp."""

from __future__ import annotations

import contextlib
import copy
import keyword
import logging
import os
import threading
import traceback

import torch
import torch.fx as fx
from torch.fx.passes.shape_prop import ShapeProp

from codegen.errors import CodegenError, UntraceableModelError

log = logging.getLogger(__name__)


class LeafTracer(fx.Tracer):
    """Keeps every standard torch.nn module (and the user's ``leaf_modules``) as one node."""

    def __init__(self, leaf_types: tuple[type, ...] = ()):
        super().__init__()
        self.leaf_types = leaf_types

    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        if self.leaf_types and isinstance(m, self.leaf_types):
            return True
        return super().is_leaf_module(m, module_qualified_name)


_UNTRACEABLE_HELP = (
    "torch.fx traces forward() with symbolic tensors, so Python control flow that depends on tensor "
    "values or shapes (if/while on a tensor, loops over a tensor, len(x), .item()) cannot be "
    "recorded. Fix it in one of these ways: (1) move the dynamic part into its own nn.Module and "
    "pass its class in leaf_modules=... together with a registered lowering; (2) make the branch "
    "static, e.g. decide it in __init__ or pass the decided value through concrete_args; "
    "(3) rewrite it with tensor ops (torch.where, masks)."
)


_FX_PATCH_LOCK = threading.Lock()


def _fx_target(base: str, target: str) -> str:
    # torch.fx's own _format_target writes getattr(self, "<name>") without escaping <name>, so a
    # submodule named with a quote, a backslash or a newline (or after a keyword: self.block.if)
    # gives Python that does not compile. Quote every non-plain name properly instead.
    r = base
    for e in target.split("."):
        plain = e.isascii() and e.isidentifier() and not keyword.iskeyword(e)
        r = f"{r}.{e}" if plain else f"getattr({r}, {e!r})"
    return r


@contextlib.contextmanager
def _quoted_fx_targets():
    import torch.fx.graph as fx_graph

    if not callable(getattr(fx_graph, "_format_target", None)):  # another torch: keep its own
        yield
        return
    with _FX_PATCH_LOCK:
        original = fx_graph._format_target
        fx_graph._format_target = _fx_target
        try:
            yield
        finally:
            fx_graph._format_target = original


def graph_module(root: torch.nn.Module, graph: fx.Graph, class_name: str = "GraphModule") -> fx.GraphModule:
    """``fx.GraphModule(root, graph, class_name)`` that also works for submodules whose names are
    not Python identifiers (any text: quotes, backslashes, newlines, keywords)."""
    with _quoted_fx_targets():
        return fx.GraphModule(root, graph, class_name)


def recompile(gm: fx.GraphModule) -> None:
    """``gm.recompile()`` after a graph rewrite, for submodule names that are not Python identifiers too."""
    with _quoted_fx_targets():
        gm.recompile()


def prepare_model(model: torch.nn.Module) -> torch.nn.Module:
    """A float32 CPU copy of the model in eval mode; the user's model is left untouched."""
    if not isinstance(model, torch.nn.Module):
        raise CodegenError(f"expected a torch.nn.Module, got {type(model).__name__}")
    meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if meta:
        raise CodegenError(
            f"the model's tensor '{meta[0]}' ({len(meta)} in all) is on the 'meta' device, which holds shapes but "
            "no values, so there are no weights to emit. Give the model real weights first, e.g. "
            "model = model.to_empty(device='cpu') followed by model.load_state_dict(torch.load(...)), or build it "
            "without device='meta'"
        )
    try:
        m = copy.deepcopy(model)
    except Exception as exc:  # pragma: no cover - exotic models
        raise CodegenError(f"could not copy the model to trace it: {exc}") from exc
    return m.to("cpu").float().eval()


def example_from(example_input: torch.Tensor | tuple[int, ...] | list[int]) -> torch.Tensor:
    """Accepts a batch-1 tensor or a shape (with the batch dimension) and returns a CPU tensor."""
    if isinstance(example_input, torch.Tensor):
        x = example_input.detach().to("cpu").float()
    elif isinstance(example_input, (tuple, list, torch.Size)) and all(isinstance(d, int) for d in example_input):
        x = torch.zeros(tuple(example_input))
    else:
        raise CodegenError(
            "input must be a tensor of shape (1, ...) or a shape tuple such as (1, 1, 28, 28); "
            f"got {type(example_input).__name__}"
        )
    if x.dim() < 2 or x.shape[0] != 1:
        raise CodegenError(
            f"input has shape {tuple(x.shape)}: the generated C runs one sample at a time, so give one "
            "sample with a batch dimension of 1, e.g. x[:1] or x.unsqueeze(0)"
        )
    return x


def _run_eager(model: torch.nn.Module, x: torch.Tensor):
    """Runs the (prepared) model once; a failure names the innermost module that raised it."""
    entered: list[str] = []

    def enter(name: str):
        def hook(module, args) -> None:
            entered.append(name)

        return hook

    def leave(module, args, output) -> None:
        entered.pop()

    hooks = []
    for name, mod in model.named_modules():
        hooks.append(mod.register_forward_pre_hook(enter(name)))
        hooks.append(mod.register_forward_hook(leave))
    try:
        with torch.no_grad():
            return model(x.clone())
    except Exception as exc:
        where = f" in layer '{entered[-1]}' ({type(model.get_submodule(entered[-1])).__name__})" \
            if entered and entered[-1] else ""
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "indices" in why and ("Long" in why or "Int" in why):
            raise CodegenError(
                f"the model fails on a float32 input{where}: {why}. The generated C takes float32 inputs, so the "
                "example input is converted to float32; integer inputs (token ids for nn.Embedding, index "
                "tensors) are not supported. Look the embeddings up outside the model and pass them as its input"
            ) from exc
        raise CodegenError(
            f"the model fails on an input of shape {tuple(x.shape)}{where}: {why}. Check the input shape "
            "(input_shape / --input-shape, with the batch dimension of 1 first): it must be the one the model "
            "expects"
        ) from exc
    finally:
        for h in hooks:
            h.remove()


def offending_line(exc: BaseException) -> str:
    """' at FILE:LINE: CODE' of the innermost frame of the traceback outside torch (the model's or a
    library's expression that torch.fx could not trace), or "" when there is none."""
    torch_dir = os.path.dirname(torch.__file__) + os.sep
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(torch_dir)]
    frames = [f for f in frames if os.path.abspath(f.filename) != os.path.abspath(__file__)]
    if not frames:
        return ""
    f = frames[-1]
    code = f" ({f.line.strip()})" if f.line else ""
    return f"\n  at {f.filename}:{f.lineno}, in {f.name}{code}"


def trace(
    model: torch.nn.Module,
    example_input: torch.Tensor,
    leaf_modules: tuple[type, ...] = (),
    concrete_args: dict | None = None,
) -> fx.GraphModule:
    """Symbolically traces a prepared model and records shapes on every node (node.meta['tensor_meta'])."""
    tracer = LeafTracer(tuple(leaf_modules))
    try:
        graph = tracer.trace(model, concrete_args=concrete_args)
    except (torch.fx.proxy.TraceError, TypeError, RuntimeError, AttributeError, NotImplementedError) as exc:
        raise UntraceableModelError(
            f"torch.fx could not trace {type(model).__name__}.forward(): {exc}{offending_line(exc)}\n"
            f"{_UNTRACEABLE_HELP}"
        ) from exc
    try:
        gm = graph_module(tracer.root, graph, type(model).__name__)
    except SyntaxError as exc:  # should not happen any more (graph_module quotes names); kept clear
        raise UntraceableModelError(
            f"torch.fx cannot generate Python code for {type(model).__name__}: {exc.msg} in "
            f"'{(exc.text or '').strip()}'. Rename the submodules whose names are not Python identifiers."
        ) from exc
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise CodegenError(
            f"{type(model).__name__}.forward() takes {len(placeholders)} inputs; the generated C has one "
            "input tensor. Wrap the model so forward(x) takes a single tensor."
        )
    eager_out = _run_eager(model, example_input)
    try:
        with torch.no_grad():  # clones: an in-place op on the input must not change the caller's tensor
            traced_out = ShapeProp(gm).propagate(example_input.clone())
    except Exception as exc:
        raise CodegenError(
            f"running the traced model on an input of shape {tuple(example_input.shape)} failed: {exc}. "
            "Check that the input shape is the one the model expects."
        ) from exc
    if (
        isinstance(traced_out, torch.Tensor)
        and isinstance(eager_out, torch.Tensor)
        and not (
            traced_out.shape == eager_out.shape
            and torch.allclose(traced_out, eager_out, rtol=1e-5, atol=1e-6, equal_nan=True)
        )
    ):
        raise UntraceableModelError(
            f"the graph torch.fx traced from {type(model).__name__}.forward() computes a different result "
            "than forward() itself. The usual cause is an in-place update (x += y, x.relu_(), x[...] = ...) "
            "of a tensor that another variable also refers to, which torch.fx records as an out-of-place "
            "op. Rewrite it out of place (x = x + y)."
        )
    log.debug("traced %s: %d nodes", type(model).__name__, len(gm.graph.nodes))
    return gm
