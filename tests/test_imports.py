"""The shape of codegen's import graph (docs/architecture.md, "The pipeline"): no import cycle between
its modules (counting imports inside functions too), no module reaching into another's private names,
and no import of the compressor (sparsecomp) from codegen. Read from the source with ``ast``: nothing
is imported to check it."""

from __future__ import annotations

import ast
from pathlib import Path

CODEGEN = Path(__file__).resolve().parents[1] / "codegen"


def _module_name(path: Path) -> str:
    parts = path.relative_to(CODEGEN.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(CODEGEN.rglob("*.py"))}


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """codegen module -> the codegen modules it imports; and the rule violations found on the way."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    problems: list[str] = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        aliases: set[str] = set()  # local names bound to codegen modules
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "sparsecomp":
                        problems.append(f"{mod} imports {a.name} (codegen must not depend on the compressor)")
                    if a.name in mods:
                        graph[mod].add(a.name)
                        aliases.add(a.asname or a.name)
            elif isinstance(node, ast.ImportFrom) and node.module:
                if node.module.split(".")[0] == "sparsecomp":
                    problems.append(f"{mod} imports from {node.module} (codegen must not depend on the compressor)")
                if node.module not in mods:
                    continue
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    if sub in mods:  # from codegen import ir
                        graph[mod].add(sub)
                        aliases.add(a.asname or a.name)
                    else:
                        graph[mod].add(node.module)
                        if a.name.startswith("_"):
                            problems.append(f"{mod} imports the private name {node.module}.{a.name}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):  # fmt: skip
                problems.append(f"{mod} uses the private name {node.value.id}.{node.attr}")
        graph[mod].discard(mod)
    return graph, problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle (one per strongly connected component with more than one module). The package
    ``codegen`` itself (its __init__ re-exports the public API) is left out."""
    g = {m: {d for d in deps if d != "codegen"} for m, deps in graph.items() if m != "codegen"}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_codegen_has_no_import_cycle():
    graph, _ = import_graph()
    assert "codegen.ops.conv" in graph and "codegen.integer" in graph["codegen.ops.conv"]
    assert cycles(graph) == []


def test_cycle_detector_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_cross_module_imports_and_no_sparsecomp():
    _, problems = import_graph()
    assert problems == []
