"""Errors raised by the code generator. Each names the layer and says what to do."""

from __future__ import annotations


class CodegenError(Exception):
    """Base class of every error the code generator raises on bad input."""


class UnsupportedOpError(CodegenError):
    """The model uses operations the generator cannot lower to C.

    ``nodes`` lists every offending node as (fx node name, target, module path).
    """

    def __init__(self, nodes: list[tuple[str, str, str]], supported: list[str]):
        self.nodes = nodes
        self.supported = supported
        lines = [f"{len(nodes)} operation(s) in the model cannot be emitted as C:"]
        for name, target, path in nodes:
            where = f" (module '{path}')" if path else ""
            lines.append(f"  - node '{name}': {target}{where}")
        lines.append("Supported operations: " + ", ".join(supported) + ".")
        lines.append(
            "Replace these operations with supported ones, or register a lowering for them "
            "(see docs/architecture.md, 'Adding an op')."
        )
        super().__init__("\n".join(lines))


class UntraceableModelError(CodegenError):
    """torch.fx could not trace the model's forward()."""


class UnsupportedConfigError(CodegenError):
    """A supported op is used with arguments the generator does not handle."""
