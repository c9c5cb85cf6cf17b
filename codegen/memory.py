"""Static memory planning: every intermediate activation gets an offset in ONE arena.

Two layers:

* ``MemoryPlanner`` — the tiny, C-free interface (as TFLM's micro_memory_planner): add buffers with
  their size and first/last use, get offsets. It tries a two-ended "ping-pong" placement at the
  lower bound (optimal for chains of layers) and greedy-by-size first fit, and keeps the smaller.
* ``plan_graph`` — turns an IR graph into buffers: views share their input's storage, elementwise
  ops run in place when their input dies there, the model input and output live in the caller's
  memory. The lower bound is the largest total of simultaneously live arena buffers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from codegen import ir


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


@dataclass
class Buffer:
    name: str
    size: int
    first: int
    last: int
    side: int = 0  # preferred end of the arena for the two-ended strategy: 0 bottom, 1 top
    # (first, last, size) pieces of a buffer whose size changes over its life (an op that writes a
    # smaller output over its input, e.g. pooling in place); empty: ``size`` all along
    pieces: tuple[tuple[int, int, int], ...] = ()

    def overlaps_in_time(self, other: Buffer) -> bool:
        return not (self.last < other.first or other.last < self.first)

    def size_during(self, lo: int, hi: int) -> int:
        """Bytes the buffer occupies (from its offset) at some time in [lo, hi]."""
        if not self.pieces:
            return self.size
        return max((sz for f, la, sz in self.pieces if not (la < lo or hi < f)), default=0)

    def size_against(self, other: Buffer) -> int:
        return self.size_during(max(self.first, other.first), min(self.last, other.last))


@dataclass
class Plan:
    offsets: dict[str, int]
    arena_bytes: int
    lower_bound: int
    strategy: str


class MemoryPlanner:
    """Plans offsets of buffers with known lifetimes in one arena.

    >>> p = MemoryPlanner()
    >>> p.add_buffer("a", 40, 0, 1); p.add_buffer("b", 36, 1, 2); p.add_buffer("c", 20, 2, 3)
    >>> plan = p.plan(); (plan.arena_bytes, plan.lower_bound)
    (76, 76)
    """

    def __init__(self, alignment: int = 4):
        self.alignment = alignment
        self.buffers: list[Buffer] = []

    def add_buffer(self, name: str, size: int, first: int, last: int, side: int = 0,
                   pieces: Sequence[tuple[int, int, int]] = ()) -> None:
        """``pieces``: optional (first, last, bytes) parts of a buffer whose size changes over time
        (``size`` must be their largest); the buffer then occupies only the live part's bytes."""
        if size < 0 or last < first:
            raise ValueError(f"buffer {name}: bad size {size} or lifetime [{first}, {last}]")
        if any(b.name == name for b in self.buffers):
            raise ValueError(f"buffer {name} added twice")
        parts = tuple((f, la, _align(sz, self.alignment)) for f, la, sz in pieces)
        self.buffers.append(Buffer(name, _align(size, self.alignment), first, last, side, parts))

    def lower_bound(self) -> int:
        """The largest total size of buffers live at the same time: no plan can use less."""
        if not self.buffers:
            return 0
        times = sorted({b.first for b in self.buffers} | {f for b in self.buffers for f, _, _ in b.pieces})
        return max(sum(b.size_during(t, t) for b in self.buffers if b.first <= t <= b.last) for t in times)

    def _conflicts(self, b: Buffer, placed: dict[str, int]) -> list[tuple[int, int, int]]:
        """(offset, bytes, b's bytes) of every placed buffer live at the same time as b."""
        by_name = {x.name: x for x in self.buffers}
        return sorted(
            (placed[n], by_name[n].size_against(b), b.size_against(by_name[n]))
            for n in placed if by_name[n].overlaps_in_time(b)
        )  # fmt: skip

    @staticmethod
    def _fits(off: int, spans: list[tuple[int, int, int]]) -> bool:
        return all(off + own <= lo or lo + size <= off for lo, size, own in spans)

    def _first_fit(self, b: Buffer, placed: dict[str, int], limit: int | None, from_top: bool) -> int | None:
        spans = self._conflicts(b, placed)
        a = self.alignment
        if not from_top:
            for off in sorted({0} | {_align(lo + size, a) for lo, size, _ in spans}):
                if self._fits(off, spans):
                    return off if limit is None or off + b.size <= limit else None
            return None  # unreachable: past every span fits
        assert limit is not None
        cands = {(limit - b.size) // a * a} | {(lo - own) // a * a for lo, _, own in spans}
        for off in sorted(cands, reverse=True):
            if 0 <= off <= limit - b.size and self._fits(off, spans):
                return off
        return None

    def _two_ended(self, limit: int, sides: dict[str, int]) -> dict[str, int] | None:
        placed: dict[str, int] = {}
        for b in sorted(self.buffers, key=lambda x: (x.first, x.last, x.name)):
            off = self._first_fit(b, placed, limit, from_top=bool(sides[b.name]))
            if off is None:
                off = self._first_fit(b, placed, limit, from_top=not sides[b.name])
            if off is None:
                return None
            placed[b.name] = off
        return placed

    def _greedy_by_size(self) -> dict[str, int]:
        placed: dict[str, int] = {}
        for b in sorted(self.buffers, key=lambda x: (-x.size, x.first, x.name)):
            placed[b.name] = self._first_fit(b, placed, None, from_top=False)  # type: ignore[assignment]
        return placed

    def _extent(self, placed: dict[str, int]) -> int:
        return max((placed[b.name] + b.size for b in self.buffers), default=0)

    def plan(self) -> Plan:
        lb = self.lower_bound()
        greedy = self._greedy_by_size()
        best, best_size, strategy = greedy, self._extent(greedy), "greedy-by-size"
        order = sorted(self.buffers, key=lambda x: (x.first, x.last, x.name))
        hinted = {b.name: b.side for b in self.buffers}
        alternating = {b.name: i % 2 for i, b in enumerate(order)}
        a = self.alignment
        for sides in (hinted, alternating):
            # the smallest arena (a multiple of the alignment) in which the two-ended placement fits
            lo, hi = -(-lb // a), best_size // a
            found = None
            while lo < hi:
                mid = (lo + hi) // 2
                two = self._two_ended(mid * a, sides)
                if two is None:
                    lo = mid + 1
                else:
                    found, hi = two, mid
            if found is not None and self._extent(found) < best_size:
                best, best_size, strategy = found, self._extent(found), "two-ended"
        self._validate(best)
        return Plan(dict(sorted(best.items())), best_size, lb, strategy)

    def _validate(self, placed: dict[str, int]) -> None:
        for i, a in enumerate(self.buffers):
            for b in self.buffers[i + 1 :]:
                if a.overlaps_in_time(b) and a.size and b.size:
                    oa, ob = placed[a.name], placed[b.name]
                    if oa < ob + b.size_against(a) and ob < oa + a.size_against(b):
                        raise AssertionError(f"planner bug: {a.name} and {b.name} overlap")


@dataclass
class Storage:
    """Where a value lives: the caller's input or output, or an offset (bytes) in the arena."""

    kind: str  # "input", "output" or "arena"
    offset: int = 0
    group: str = ""


@dataclass
class GraphMemory:
    storage: dict[str, Storage]
    arena_bytes: int
    lower_bound: int
    strategy: str
    buffers: list[dict] = field(default_factory=list)
    extra_offsets: dict[str, int] = field(default_factory=dict)  # offsets of plan_graph's ``extra`` buffers
    # the lower bound without any in-place execution (every value its own buffer): the classic
    # "largest input + output" bound of a chain; in-place kernels can take the arena below it
    chained_lower_bound: int = 0
    scratch: dict[str, int] = field(default_factory=dict)  # op name -> offset of its kernel's arena scratch


def value_lifetimes(g: ir.Graph) -> tuple[dict[str, int], dict[str, int]]:
    """First definition and last use of every value, op i running at time i; the input is defined
    at -1 and the output used at len(ops). Values neither defined nor used get first > last."""
    n = len(g.ops)
    first = {v: -1 if v == g.input else n for v in g.values}
    last = {v: -1 for v in g.values}
    for i, op in enumerate(g.ops):
        first[op.output] = min(first[op.output], i)
        for v in op.inputs:
            last[v] = max(last[v], i)
    last[g.output] = n
    return first, last


def plan_graph(
    g: ir.Graph,
    alignment: int = 4,
    *,
    lifetimes: tuple[dict[str, int], dict[str, int]] | None = None,
    op_time: Callable[[int], int] = lambda i: i,
    extra: Sequence[tuple[str, int, int, int, int]] = (),
    in_place: bool = True,
    caller_io: bool = True,
) -> GraphMemory:
    """Assigns storage to every value of the graph (see module docstring).

    ``in_place=False``: no op writes over a buffer it reads (codegen.intermittent: a unit re-run after a
    power failure finds its inputs intact). ``caller_io=False``: the model input and output get arena
    buffers too (then ``lifetimes`` must define them).

    Callers with their own notion of time (codegen.early_exit: stages that must be restartable)
    pass ``lifetimes`` (first, last per value) and ``op_time`` (the time op i runs at), and
    ``extra`` buffers (name, bytes, first, last, preferred side) planned in the same arena.

    A kernel scratch that only buys speed (``ir.KernelChoice.optional``: the column of the dense conv)
    is dropped, op by op, where the arena is smaller without it (``ir.Op.drop_optional_scratch``: the
    op then runs its kernel without scratch), so such a scratch never costs RAM.
    """
    kw = {"lifetimes": lifetimes, "op_time": op_time, "extra": extra, "in_place": in_place, "caller_io": caller_io}
    mem = _plan_graph(g, alignment, **kw)
    for op in g.ops:
        kc = op.kernel_choice()
        if kc is None or kc.scratch is None or not kc.optional:
            continue
        op.drop_optional_scratch(True)
        trial = _plan_graph(g, alignment, **kw)
        if trial.arena_bytes < mem.arena_bytes:
            mem = trial
        else:
            op.drop_optional_scratch(False)
    return mem


def _plan_graph(
    g: ir.Graph,
    alignment: int = 4,
    *,
    lifetimes: tuple[dict[str, int], dict[str, int]] | None = None,
    op_time: Callable[[int], int] = lambda i: i,
    extra: Sequence[tuple[str, int, int, int, int]] = (),
    in_place: bool = True,
    caller_io: bool = True,
) -> GraphMemory:
    """plan_graph with every op's kernel choice as it stands."""
    first, last = lifetimes if lifetimes is not None else value_lifetimes(g)
    parent = {v: v for v in first}

    def find(v: str) -> str:
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    def members(root: str) -> list[str]:
        return [v for v in first if find(v) == root]

    # In-place: an elementwise op writes over an input that dies at this op (same size); a kernel
    # whose op says so (ir.Op.overwrites_input: pooling, depthwise and 1x1 convs) over input 0.
    for i, op in enumerate(g.ops):
        if not in_place or not op.overwrites_input():
            continue
        for v in op.inputs if op.inplace else op.inputs[:1]:
            root = find(v)
            group = members(root)
            if g.input in group or max(last[m] for m in group) != op_time(i):
                continue
            n_in, n_out = g.values[v].numel, g.values[op.output].numel
            if n_in != n_out if op.inplace else n_out > n_in:
                continue
            merged = group + ([] if find(op.output) == root else members(find(op.output)))
            if g.output in merged and any(g.values[m].numel > g.values[g.output].numel for m in merged):
                continue  # the caller's output buffer holds only the output
            if find(op.output) == root:
                break
            parent[find(op.output)] = root
            break

    groups: dict[str, list[str]] = {}
    for v in first:
        if first[v] <= last[v] or v == g.output:
            groups.setdefault(find(v), []).append(v)

    planner = MemoryPlanner(alignment)
    side: dict[str, int] = {}
    for op in g.ops:  # ping-pong: an op's output goes to the other end than its input
        root = find(op.output)
        if root not in side:
            src = find(op.inputs[0]) if op.inputs else None
            side[root] = 1 - side.get(src, 1) if src is not None else 0

    storage: dict[str, Storage] = {}
    for root, vs in sorted(groups.items()):
        if caller_io and g.input in vs:
            kind = "input"
        elif caller_io and g.output in vs:
            kind = "output"
        else:
            kind = "arena"
            size = max(g.values[v].nbytes for v in vs)
            pieces = [(first[v], last[v], g.values[v].nbytes) for v in vs]
            uniform = len({p[2] for p in pieces}) == 1
            planner.add_buffer(root, size, min(first[v] for v in vs), max(last[v] for v in vs), side.get(root, 0),
                               () if uniform else pieces)  # fmt: skip
        for v in vs:
            storage[v] = Storage(kind, 0, root)
    # kernel scratch that grows with the layer (ir.Op.arena_scratch_bytes): live only while its op runs,
    # so it never overlaps the op's input or output
    scratch = [(f"{op.name}.scratch", op.arena_scratch_bytes(), op_time(i), op_time(i), 0) for i, op in enumerate(g.ops)]
    extra = [*extra, *(s for s in scratch if s[1] > 0)]
    for name, size, b_first, b_last, b_side in extra:
        planner.add_buffer(name, size, b_first, b_last, b_side)
    chained = MemoryPlanner(alignment)
    for v in first:
        if first[v] <= last[v] and ((v != g.input and v != g.output) or not caller_io):
            chained.add_buffer(v, g.values[v].nbytes, first[v], last[v])
    for name, size, b_first, b_last, _ in extra:
        chained.add_buffer(name, size, b_first, b_last)
    plan = planner.plan()
    for st in storage.values():
        if st.kind == "arena":
            st.offset = plan.offsets[st.group]
    buffers = [
        {"name": b.name, "offset": plan.offsets[b.name], "bytes": b.size, "first": b.first, "last": b.last}
        for b in sorted(planner.buffers, key=lambda b: (plan.offsets[b.name], b.first))
    ]
    return GraphMemory(
        storage, plan.arena_bytes, plan.lower_bound, plan.strategy, buffers,
        {name: plan.offsets[name] for name, *_ in extra}, chained.lower_bound(),
        {op.name: plan.offsets[f"{op.name}.scratch"] for op in g.ops if f"{op.name}.scratch" in plan.offsets},
    )  # fmt: skip
