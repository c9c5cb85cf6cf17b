"""The report returned by :func:`sparsecomp.compress_NN_models`.

Example::

    >>> r = CompressionReport(target_bytes=1000, initial_bytes=4000, final_bytes=900,
    ...                       representation="csr", success=True, stopped_reason="budget and accuracy met")
    >>> r.to_dict()["final_bytes"]
    900
    >>> "900" in str(r)
    True
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass
class LayerRow:
    """One row of the per-layer table (``bytes`` are codegen's, weights + bias of the layer)."""

    name: str
    op: str
    shape: list[int]
    density: float | None
    format: str
    bytes: int


@dataclass
class DecompositionRecord:
    """What happened when a layer was factorized, or (``method`` "channels") the output channels removed
    from a producer layer and the modules that went with it (``ranks``: the channels kept; ``layer`` "*":
    why channel pruning did not run)."""

    layer: str
    method: str
    ranks: list[int]
    accepted: bool
    reason: str
    bytes_before: int = 0
    bytes_after: int = 0
    val_accuracy: float | None = None


@dataclass
class RoundRecord:
    """One compression round."""

    round: int
    budget_for_allocation: int
    estimated_bytes: int
    exact_bytes: int
    val_accuracy: float
    epochs: int
    seconds: float
    note: str = ""


@dataclass
class ProbeRecord:
    """One short probe of a representation by ``representation="auto"`` (validation accuracy reached
    in one round of one partial epoch at the budget, exact bytes; None when it could not run), or one of its
    finalists' full runs (``CompressionReport.finalists``; None and the reason in ``note`` when not run)."""

    representation: str
    val_accuracy: float | None
    bytes: int | None
    seconds: float
    note: str = ""


@dataclass
class CompressionReport:
    """Outcome of a compression run.  ``str(report)`` is a readable table; ``to_dict()`` is JSON-able."""

    target_bytes: int
    initial_bytes: int
    final_bytes: int
    representation: str
    success: bool
    stopped_reason: str
    val_accuracy_before: float | None = None
    val_accuracy_after: float | None = None
    test_accuracy_before: float | None = None
    test_accuracy_after: float | None = None
    accuracy_tolerance: float | None = None
    smallest_reachable_bytes: int | None = None
    layers: list[LayerRow] = field(default_factory=list)
    decompositions: list[DecompositionRecord] = field(default_factory=list)
    rounds: list[RoundRecord] = field(default_factory=list)
    wall_time_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    quantization: str = ""  # int8/codebook/auto: the per-layer plan and the accuracy after quantizing
    probes: list[ProbeRecord] = field(default_factory=list)  # representation="auto": what each probe reached
    # representation="auto": the finalists' full runs (on copies; the model is the best one's), or why not run
    finalists: list[ProbeRecord] = field(default_factory=list)
    chosen_by: str = ""  # "auto" when the representation was chosen by probing
    # criterion missed: bytes beyond the budget that the sensitivity curves predict win back one point
    extra_bytes_per_point: int | None = None
    # ram_budget given: codegen's tiling plan of the compressed model (peak_ram_bytes = MODEL_ARENA_BYTES)
    ram: dict | None = None
    # an early-exit model: the exit heads' bytes (part of final_bytes, within the same budget)
    exit_heads_bytes: int | None = None

    def hint(self) -> str:
        """When the criterion was missed, what the numbers say may help (empty otherwise)."""
        if self.success:
            return ""
        tips = []
        ok = [p for p in self.probes if p.val_accuracy is not None]
        if ok:
            best = max(ok, key=lambda p: p.val_accuracy)
            worst = min(ok, key=lambda p: p.val_accuracy)
            if best.val_accuracy - worst.val_accuracy > 0.005:
                tips.append(f"in the probes {best.representation} reached {100 * best.val_accuracy:.1f} % vs "
                            f"{100 * worst.val_accuracy:.1f} % for {worst.representation} at this budget")
        if self.extra_bytes_per_point is not None:
            tips.append(f"the budget needs ~{self.extra_bytes_per_point:,} more bytes for 1 point (a budget of "
                        f"~{self.target_bytes + self.extra_bytes_per_point:,} B, by the per-layer sensitivity "
                        "curves measured before retraining)")
        dense_share = [r for r in self.layers if r.density is not None and r.density < 0.1]
        if dense_share:
            tips.append("layers pruned below 10 % density (" + ", ".join(r.name for r in dense_share[:4])
                        + "): a larger budget or a smaller representation (int8/codebook) keeps more weights")
        if self.val_accuracy_after is not None and self.val_accuracy_before is not None:
            tips.append("more epochs (num_epochs, max_rounds) or a longer time_limit let retraining recover more")
        return "; ".join(tips)

    @property
    def within_budget(self) -> bool:
        return self.final_bytes <= self.target_bytes

    @property
    def compression_ratio(self) -> float:
        return self.initial_bytes / self.final_bytes if self.final_bytes else float("inf")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["within_budget"] = self.within_budget
        d["compression_ratio"] = self.compression_ratio
        return d

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    def __str__(self) -> str:
        def pct(x: float | None) -> str:
            return "   n/a" if x is None else f"{100 * x:6.2f}%"

        lines = [
            "sparsecomp compression report",
            f"  budget        {self.target_bytes:>10,d} bytes ({self.target_bytes / 1000:.3f} KB, {self.representation})",
            f"  before        {self.initial_bytes:>10,d} bytes",
            f"  after         {self.final_bytes:>10,d} bytes  ({'within' if self.within_budget else 'OVER'} budget, "
            f"x{self.compression_ratio:.2f})",
            f"  accuracy val  {pct(self.val_accuracy_before)} -> {pct(self.val_accuracy_after)}",
            f"  accuracy test {pct(self.test_accuracy_before)} -> {pct(self.test_accuracy_after)}",
            f"  result        {'OK' if self.success else 'NOT MET'}: {self.stopped_reason}",
            f"  wall time     {self.wall_time_s:.1f} s",
        ]
        if self.exit_heads_bytes is not None:
            lines.append(f"  exit heads    {self.exit_heads_bytes:>10,d} bytes (in 'after'; retrained on the compressed "
                         "backbone)")
        if self.quantization:
            lines.append(f"  quantization  {self.quantization}")
        if self.ram:
            lines.append(f"  activation RAM {self.ram['peak_ram_bytes']:>9,d} bytes (layer by layer "
                         f"{self.ram['layerwise_arena_bytes']:,}; {len(self.ram['stages'])} tiled stage(s), "
                         f"{self.ram['extra_macs']:,} extra MACs)")  # fmt: skip
        lines.append("")
        for title, records in (("probes (one round of a partial epoch each, on a copy", self.probes),
                               ("finalists (full runs, each on a copy; the model is the most accurate", self.finalists)):
            if records:
                lines.append(f"  auto {title}; validation accuracy):")
                for p in records:
                    mark = "*" if p.representation == self.representation or (
                        p.representation == "per-layer" and self.representation == "auto") else " "
                    acc = "   n/a " if p.val_accuracy is None else pct(p.val_accuracy)
                    size = "" if p.bytes is None else f"{p.bytes:>9,d} B"
                    lines.append(f"   {mark} {p.representation:<10} {acc} {size:>11} {p.seconds:6.1f}s  {p.note[:90]}")
                lines.append("")
        hint = self.hint()
        if hint:
            lines.append(f"  what may help: {hint}")
            lines.append("")
        if self.layers:
            w = max(12, *(len(r.name) for r in self.layers))
            fw = max(7, *(len(r.format) for r in self.layers))
            lines.append(f"  {'layer':<{w}}  {'op':<12} {'shape':<18} {'format':<{fw}} {'density':>8} {'bytes':>9}")
            for r in self.layers:
                dens = "" if r.density is None else f"{100 * r.density:7.2f}%"
                shape = "x".join(str(s) for s in r.shape)
                lines.append(f"  {r.name:<{w}}  {r.op:<12} {shape:<18} {r.format:<{fw}} {dens:>8} {r.bytes:>9,d}")
            lines.append("")
        if self.decompositions:
            lines.append("  structure (channel pruning, decompositions):")
            for d in self.decompositions:
                if d.method == "channels":  # "<producer>: 48 -> 28 channels (...)" or why none were removed
                    lines.append(f"    {d.layer}: {d.reason if d.accepted else 'channel pruning ' + d.reason}")
                    continue
                state = "kept" if d.accepted else "rejected"
                lines.append(f"    {d.layer}: {d.method} ranks={d.ranks} {state} ({d.reason})")
            lines.append("")
        if self.rounds:
            lines.append("  rounds:  #  alloc-budget  estimate     exact  val-acc  epochs   time  note")
            for r in self.rounds:
                lines.append(
                    f"          {r.round:2d} {r.budget_for_allocation:>12,d} {r.estimated_bytes:>9,d} "
                    f"{r.exact_bytes:>9,d}  {pct(r.val_accuracy)} {r.epochs:>6d} {r.seconds:5.1f}s  {r.note}"
                )
        for w_ in self.warnings:
            lines.append(f"  warning: {w_}")
        return "\n".join(lines)
