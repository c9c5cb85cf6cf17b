"""Errors raised by the code generator. Each names the layer and says what to do."""

from __future__ import annotations

# The module a functional form with parameter operands stands for (named in UnsupportedOpError's advice).
_MODULE_FORM = {
    "F.batch_norm": "nn.BatchNorm1d/2d",
    "F.linear": "nn.Linear",
    "F.conv1d": "nn.Conv1d",
    "F.conv2d": "nn.Conv2d",
    "F.layer_norm": "nn.LayerNorm",
    "F.group_norm": "nn.GroupNorm",
}


class CodegenError(Exception):
    """Base class of every error the code generator raises on bad input."""


class UnsupportedOpError(CodegenError):
    """The model uses operations the generator cannot lower to C.

    ``nodes`` lists every offending node as (fx node name, target, module path). ``owners`` (same
    order, optional) gives for each the class of the user module whose forward() made the node
    ("" for torch.nn modules and the model's own forward), and ``consumers`` for each constant
    tensor node the ops that use it. The message groups the nodes by op, with counts, so a model
    with 1,000 offending nodes still gets a message of a few lines.
    """

    MAX_GROUPS = 20  # op groups listed in the message; the rest are counted

    def __init__(
        self,
        nodes: list[tuple[str, str, str]],
        supported: list[str],
        owners: list[str] | None = None,
        consumers: list[list[str]] | None = None,
        config_errors: list[tuple[str, UnsupportedConfigError]] | None = None,
    ):
        self.nodes = nodes
        self.supported = supported
        self.owners = owners if owners is not None else [""] * len(nodes)
        self.consumers = consumers if consumers is not None else [[] for _ in nodes]
        # (op name, error) of every supported op whose arguments could not be lowered, found in the same pass
        self.config_errors = list(config_errors or [])
        super().__init__(self._message())

    def _message(self) -> str:
        ops: dict[str, list[int]] = {}  # op -> indices of its nodes
        consts: dict[tuple[str, str], list[int]] = {}  # (owner class, ops using them) -> constant nodes
        for i, (_name, target, _path) in enumerate(self.nodes):
            if target.startswith("constant tensor "):
                key = (self.owners[i], ", ".join(sorted(set(self.consumers[i]))) or "?")
                consts.setdefault(key, []).append(i)
            else:
                ops.setdefault(target, []).append(i)
        lines: list[str] = []
        groups: list[tuple[int, str]] = []
        for target, idx in ops.items():
            owners = sorted({self.owners[i] for i in idx if self.owners[i]})
            name, _, path = self.nodes[idx[0]]
            where = f" in module '{path}'" if path else ""
            line = f"  - {target}: {len(idx)} node(s), e.g. node '{name}'{where}"
            if owners:
                line += f"; called in the forward() of {', '.join(owners)}"
            groups.append((len(idx), line))
        for (owner, users), idx in consts.items():
            name, target, path = self.nodes[idx[0]]
            inside = f"{owner}.forward()" if owner else "the model's forward()"
            groups.append((len(idx), (
                f"  - {len(idx)} parameter/buffer tensor(s) used as operands of {users} in {inside}, "
                f"e.g. {target.removeprefix('constant tensor ')}"
            )))  # fmt: skip
        groups += config_groups(self.config_errors)
        n_nodes = len(self.nodes) + len(self.config_errors)
        lines.append(f"{n_nodes} node(s) in the model cannot be emitted as C, for {len(groups)} reason(s):")
        groups.sort(key=lambda g: -g[0])
        lines += [line for _, line in groups[: self.MAX_GROUPS]]
        if len(groups) > self.MAX_GROUPS:
            lines.append(f"  - ... and {len(groups) - self.MAX_GROUPS} more reason(s) (see .nodes)")
        # name the user's construct: a module class whose forward() calls functional forms
        traced_into: dict[str, set[str]] = {}
        for (owner, users), _idx in consts.items():
            if owner:
                traced_into.setdefault(owner, set()).update(u for u in users.split(", ") if u != "?")
        for target, idx in ops.items():
            for i in idx:
                if self.owners[i] in traced_into:
                    traced_into[self.owners[i]].add(target)
        for owner, users in sorted(traced_into.items()):
            modules = [f"{u} -> {_MODULE_FORM[u]}" for u in sorted(users) if u in _MODULE_FORM]
            instead = f" ({', '.join(modules)})" if modules else ""
            lines.append(
                f"{owner} was traced into; its forward() calls {', '.join(sorted(users)) or 'ops'} with its own "
                f"parameters as operands. Replace it with the torch.nn modules it stands for{instead}, or pass "
                f"leaf_modules=({owner.rsplit('.', 1)[-1]},) together with a registered lowering for it."
            )
        lines.append("Supported operations: " + ", ".join(self.supported) + " (arguments as listed above).")
        lines.append(
            "Replace these operations with supported ones, or register a lowering for them "
            "(see docs/architecture.md, 'Adding an op')."
        )
        return "\n".join(lines)


class UntraceableModelError(CodegenError):
    """torch.fx could not trace the model's forward()."""


class UnsupportedConfigError(CodegenError):
    """A supported op is used with arguments the generator does not handle.

    ``why`` and ``fix`` (when the lowering gave them, ``LowerContext.fail``) let a model-wide error
    group the nodes that fail for the same reason; ``errors`` holds every (op, error) of such a
    grouped error (``UnsupportedConfigError.grouped``).
    """

    def __init__(self, message: str, *, layer: str = "", why: str = "", fix: str = "",
                 errors: list[tuple[str, UnsupportedConfigError]] | None = None):  # fmt: skip
        super().__init__(message)
        self.layer, self.why, self.fix = layer, why, fix
        self.errors = list(errors or [])

    @classmethod
    def grouped(cls, errors: list[tuple[str, UnsupportedConfigError]]) -> UnsupportedConfigError:
        """One error for every (op name, error) of a model: the error itself when there is one, else
        a message grouping them by op and fix, with counts."""
        if len(errors) == 1:
            return errors[0][1]
        n_groups = len(config_groups(errors))
        lines = [f"{len(errors)} node(s) use supported operations with arguments that cannot be emitted as C, "
                 f"for {n_groups} reason(s):"]  # fmt: skip
        lines += [line for _, line in sorted(config_groups(errors), key=lambda g: -g[0])]
        return cls("\n".join(lines), errors=errors)


def config_groups(errors: list[tuple[str, UnsupportedConfigError]]) -> list[tuple[int, str]]:
    """(count, message line) per (op, fix) of unsupported-argument errors: the first error of each
    group is quoted whole (it names the layer and the arguments), the others are counted."""
    groups: dict[tuple[str, str], list[UnsupportedConfigError]] = {}
    for op, err in errors:
        groups.setdefault((op, err.fix or str(err)), []).append(err)
    out = []
    for (op, _), errs in groups.items():
        others = [e.layer for e in errs[1:] if e.layer]
        more = f" ({len(errs)} node(s)" if len(errs) > 1 else ""
        if others:
            more += f"; also {', '.join(others[:3])}{', ...' if len(others) > 3 else ''}"
        more += ")" if more else ""
        out.append((len(errs), f"  - {op} with unsupported arguments{more}: {errs[0]}"))
    return out
