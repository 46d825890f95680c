"""Rebuild one item's version history from every region's stream and find lost writes.

Model (global tables 2019.11.21): each write has an origin region and a hidden
timestamp; it is applied in its origin, then shipped to every other region on a
directed link that keeps order; a region applies it only if it is newer than
what the region holds. Each region's stream is therefore a chain of versions
``root -> n0 -> n1 -> ...`` (OldImage -> NewImage), in increasing timestamp.
The *parent* of a write is what its origin held when writing it, i.e. the
previous version in the origin's chain. A write is lost when it is not an
ancestor of the version that survives.

The streams do not say which region originated a write. So the analysis
enumerates *worlds* (an origin for every write, among the regions whose stream
holds it), keeps those the replication model and the arrival times allow, and
reports only what all remaining worlds agree on: ``exact`` when no timing was
needed, ``inferred`` when arrival times ruled worlds out, ``ambiguous`` where the
worlds disagree on a region. Two cheap facts make this
tractable:

* **cuts**: a version present in every region's chain splits the history. All
  later versions descend from it (anything newer was written by a region that
  already held it or something after it), so each segment between cuts is
  judged alone, against the cut that closes it as survivor. Sequential history
  is all cuts and costs almost nothing.
* **per-link FIFO + LWW** prunes worlds: if region ``o`` wrote ``w`` and later
  ``v``, every region that applied ``v`` received ``w`` first, so it either
  shows ``w`` before ``v`` or held something that may be newer than ``w``
  when ``w`` arrived. "May be newer" is checked against the order the chains
  themselves prove, so the test never rejects a world that could have happened.

Timing: every record carries bounds on when it became visible in its region
(daemon clock) and its creation second (AWS clock). A world is also checked
against them: apply times must exist, within every record's bounds, such that
each region applies in stream order and a write reaches every other region no
sooner than its origin applied it plus the link's floor (0, or the canary's
minimum link delay). That is a system of difference constraints, solved per
world by longest paths. Worlds are kept on three levels, each a subset of the
one before: allowed by *structure*, by *timing* (floors 0) and by the *canary*
floors. Verdicts come from the strictest level that any world survives, so a
wrong floor (a link that suddenly got faster) at worst sends a verdict back to
the looser level, where it may become uncertain; it is never decided by a
preference among worlds that the evidence allows.

Version identity: a version is its canonical image (plus an occurrence number,
so that an image written again later is a new version). A delete leaves no
image; a tombstone is identified by the version that follows it in the same
region (or by "end"), which is enough to tell successive deletes apart and to
merge the records of one delete seen in several regions. That merge is a reading,
not proof: the same tombstone in several regions may be several deletes (one
reaching a region that already holds a tombstone leaves no record), and a region
without the item may hold, unseen, a delete shown only elsewhere; verdicts that
rest on either reading are logged but not counted (see ``_tombstones_shared``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise

from monitor.conflicts._images import (
    Image,
    format_image,
    number_attribute,
)
from monitor.conflicts._model import (
    UNKNOWN,
    DetectorSettings,
    KnownBy,
    Mode,
    Observation,
    Verdict,
)

NodeId = tuple[Hashable, ...]
ABSENT: NodeId = ("R", None)

# One outcome entry: (lost node, its origin, winner node or None, winner origin).
Entry = tuple[NodeId, str, NodeId | None, str]
Outcome = frozenset[Entry]
#: Directed link (source, target) -> the least time it takes to deliver a write.
LinkFloors = Mapping[tuple[str, str], float]

#: The levels of evidence a world is checked against, loosest first.
LEVELS: tuple[KnownBy, ...] = ("structure", "timing", "canary")


@dataclass(slots=True)
class _Chain:
    """One region's view of a segment: the version it started from and what it applied."""

    region: str
    root: NodeId
    nodes: list[NodeId]
    obs: list[Observation]


@dataclass(slots=True)
class Analysis:
    """Result of judging one episode of one item (exposed for tests and the bench)."""

    verdicts: list[Verdict]
    outcomes: list[dict[Outcome, None]]  # per segment with losses: outcomes the verdicts used
    segments: int
    inconsistent: bool = False
    truncated: bool = False
    # No world fits the arrival times (the reader's bounds are broken), or none fits the
    # canary's link floors (a link got faster than measured): a looser level was used.
    timing_contradicted: bool = False
    canary_contradicted: bool = False
    # The regions' streams start from different versions: part of the item's history was
    # judged before (a restart, a forced judgement); nothing found here is counted.
    partial: bool = False


def _image_of(node: NodeId) -> Image | None:
    if node[0] in ("I", "R"):
        image = node[1]
        return image if isinstance(image, tuple) else None
    return None


def _is_delete(node: NodeId) -> bool:
    return node[0] == "D" or node == ABSENT


def build_chains(by_region: Mapping[str, Sequence[Observation]]) -> list[_Chain]:
    """Turn each region's records (in apply order) into a chain of version ids.

    A tombstone is named after the next version that every region applied (and
    how many other tombstones stand between them): one delete seen in several
    regions, each of which may have skipped different versions around it, then
    gets one name everywhere.
    """
    raw: list[tuple[str, Sequence[Observation], list[NodeId | None]]] = []
    for region, records in by_region.items():
        if not records:
            continue
        seen: dict[Image, int] = {}
        ids: list[NodeId | None] = []
        for rec in records:
            if rec.new_image is None:
                ids.append(None)  # tombstone, named below
            else:
                k = seen.get(rec.new_image, 0)
                seen[rec.new_image] = k + 1
                ids.append(("I", rec.new_image, k))
        raw.append((region, records, ids))
    common: set[NodeId] = set()
    if raw:
        common = {n for n in raw[0][2] if n is not None}
        for _, _, ids in raw[1:]:
            common &= {n for n in ids if n is not None}
    # A region's first record may overwrite a version that another region's stream shows
    # being written (its own record of that write was judged in an earlier episode): the
    # same version, so name the root after it and what was written over it descends from
    # it. Only an image written once in this episode can be matched without a guess.
    written: dict[Image, int] = {}  # image -> most times one region's stream shows it written
    for _, records, _ in raw:
        counts: dict[Image, int] = {}
        for rec in records:
            if rec.new_image is not None:
                counts[rec.new_image] = counts.get(rec.new_image, 0) + 1
        for image, n in counts.items():
            written[image] = max(written.get(image, 0), n)
    chains: list[_Chain] = []
    for region, records, ids in raw:
        root: NodeId = ("R", records[0].old_image)
        old = records[0].old_image
        if old is not None and written.get(old) == 1:
            root = ("I", old, 0)
        nodes: list[NodeId] = []
        for i, node in enumerate(ids):
            if node is not None:
                nodes.append(node)
                continue
            succ: NodeId | None = None
            between = 0
            for later in ids[i + 1 :]:
                if later is None:
                    between += 1
                elif later in common:
                    succ = later
                    break
            nodes.append(("D", succ, between))
        chains.append(_Chain(region, root, nodes, list(records)))
    return chains


def _split(chains: list[_Chain]) -> list[list[_Chain]]:
    """Split at versions present in every chain (cuts), in an order all chains agree on."""
    if len(chains) < 2:
        return [chains]
    common = set(chains[0].nodes)
    for ch in chains[1:]:
        common &= set(ch.nodes)
    if not common:
        return [chains]
    order = [n for n in chains[0].nodes if n in common]
    positions = [{n: i for i, n in enumerate(ch.nodes)} for ch in chains]
    for pos in positions:
        idx = [pos[n] for n in order]
        if any(a >= b for a, b in pairwise(idx)):
            return [chains]  # chains disagree on order: identity confusion, judge as one
    segments: list[list[_Chain]] = []
    starts = [0] * len(chains)
    roots = [ch.root for ch in chains]
    for cut in order:
        seg = []
        for c, ch in enumerate(chains):
            end = positions[c][cut] + 1
            seg.append(
                _Chain(ch.region, roots[c], ch.nodes[starts[c] : end], ch.obs[starts[c] : end])
            )
            starts[c] = end
            roots[c] = cut
        segments.append(seg)
    tail = [
        _Chain(ch.region, roots[c], ch.nodes[starts[c] :], ch.obs[starts[c] :])
        for c, ch in enumerate(chains)
    ]
    if any(t.nodes for t in tail):
        segments.append(tail)
    return segments


class _Segment:
    """Search state for one segment: candidates, precedence, FIFO and timing checks."""

    def __init__(
        self,
        chains: list[_Chain],
        settings: DetectorSettings,
        closed_by_cut: bool,
        floors: LinkFloors | None = None,
    ) -> None:
        self.chains = chains
        self.settings = settings
        self.floors = floors or {}
        self.pos: dict[str, dict[NodeId, int]] = {
            ch.region: {n: i for i, n in enumerate(ch.nodes)} for ch in chains
        }
        self.chain_of = {ch.region: ch for ch in chains}
        self.obs: dict[NodeId, dict[str, Observation]] = {}
        for ch in chains:
            for node, ob in zip(ch.nodes, ch.obs, strict=True):
                self.obs.setdefault(node, {})[ch.region] = ob
        self.written = list(self.obs)
        self.roots = {ch.root for ch in chains}
        self.closed_by_cut = closed_by_cut
        self.before = self._precedence()
        self.attributed: set[NodeId] = set()  # origin given by the writer attribute
        # Writes whose attribute names a region of this episode that does not show them
        # (that region's record lies outside what is judged, so the origin the rest of the
        # evidence picks contradicts the attribute) or cannot have applied them first
        # (`_could_be_first`): no verdict on them is proof.
        self.unattributable: set[NodeId] = set()
        self._timing_vars()

    def _timing_vars(self) -> None:
        """One apply-time variable per record, with its bounds on both clocks."""
        self.var: dict[tuple[str, NodeId], int] = {}
        self.seen_lo: list[float] = []
        self.seen_hi: list[float] = []
        self.created_lo: list[float] = []
        self.chain_edges: list[tuple[int, int, float]] = []
        for ch in self.chains:
            prev: int | None = None
            for node, ob in zip(ch.nodes, ch.obs, strict=True):
                v = self.var[(ch.region, node)] = len(self.seen_lo)
                self.seen_lo.append(-math.inf if ob.observed_after is None else ob.observed_after)
                self.seen_hi.append(math.inf if ob.observed_at is None else ob.observed_at)
                self.created_lo.append(ob.created_at)
                if prev is not None:
                    self.chain_edges.append((prev, v, 0.0))  # a region applies in stream order
                prev = v
        # Creation seconds are floored: the write was applied within the following second.
        self.created_hi = [c + 1.0 for c in self.created_lo]
        self.timed = any(lo > -math.inf or hi < math.inf
                         for lo, hi in zip(self.seen_lo, self.seen_hi, strict=True))

    def timing_ok(self, origin: Mapping[NodeId, str], floors: LinkFloors | None) -> bool:
        """Apply times exist within every record's bounds for this world.

        Each write reaches every other region that applied it no sooner than its
        origin applied it plus the link's floor; each region applies in stream
        order. On AWS's clock (creation seconds) only the order is used, with no
        floor, so it holds whatever that timestamp means for a replicated write.
        """
        edges: list[tuple[int, int, float]] = []
        created_edges: list[tuple[int, int, float]] = []
        for node, o in origin.items():
            u = self.var[(o, node)]
            for r in self.obs[node]:
                if r != o:
                    v = self.var[(r, node)]
                    edges.append((u, v, floors.get((o, r), 0.0) if floors else 0.0))
                    created_edges.append((u, v, 0.0))
        if not _bounded(self.created_lo, self.created_hi, self.chain_edges + created_edges):
            return False
        return not self.timed or _bounded(self.seen_lo, self.seen_hi, self.chain_edges + edges)

    # -- facts proved by the chains -------------------------------------------------

    def _precedence(self) -> dict[NodeId, frozenset[NodeId]] | None:
        """For each version, the versions the chains prove are older (None on a cycle)."""
        preds: dict[NodeId, set[NodeId]] = {n: set() for n in self.written}
        for r in self.roots:
            preds.setdefault(r, set())
        written = set(self.written)
        for ch in self.chains:
            prev = ch.root
            for node in ch.nodes:
                preds[node].add(prev)
                prev = node
        for node in self.written:
            preds[node].update(r for r in self.roots if r not in written)
        before: dict[NodeId, frozenset[NodeId]] = {}
        state: dict[NodeId, int] = {}
        for start in preds:
            if start in before:
                continue
            stack: list[tuple[NodeId, bool]] = [(start, False)]
            while stack:
                node, done = stack.pop()
                if done:
                    acc: set[NodeId] = set()
                    for p in preds[node]:
                        acc.add(p)
                        acc |= before[p]
                    before[node] = frozenset(acc)
                    state[node] = 2
                    continue
                if state.get(node) == 2:
                    continue
                if state.get(node) == 1:
                    return None
                state[node] = 1
                stack.append((node, True))
                for p in preds[node]:
                    if state.get(p) == 1:
                        return None
                    if state.get(p) != 2:
                        stack.append((p, False))
        return before

    def prev(self, region: str, node: NodeId) -> NodeId:
        ch = self.chain_of[region]
        i = self.pos[region][node]
        return ch.nodes[i - 1] if i > 0 else ch.root

    def _version(self, node: NodeId) -> int | None:
        attr = self.settings.version_attribute
        if attr is None:
            return None
        if _is_delete(node):
            return 0
        return number_attribute(_image_of(node), attr)

    def candidates(self, node: NodeId) -> list[str]:
        """Regions that may have originated ``node``, judged write by write.

        A write that carries the writer attribute has its origin; one that carries
        the version attribute must sit one level above its parent. A write without
        them (or a delete) keeps every region whose stream holds it, and timing
        decides among them: configuring an attribute never blinds the detector to
        the writes that lack it.
        """
        seen = self.obs[node]
        regions = sorted(seen)
        s = self.settings
        image = _image_of(node)
        if image is not None:
            region = s.writer_region(image, next(iter(seen.values())).key)
            if region is not None and region in seen and self._could_be_first(node, region):
                self.attributed.add(node)
                return [region]
            if region is not None and region in self.chain_of:
                self.unattributable.add(node)
        if s.version_attribute is not None and node[0] == "I":
            mine = self._version(node)
            if mine is not None:
                fits = [
                    r
                    for r in regions
                    if (pv := self._version(self.prev(r, node))) is None or pv + 1 == mine
                ]
                if fits:
                    return fits
        return regions

    def _could_be_first(self, node: NodeId, region: str) -> bool:
        """Whether ``region`` can have applied ``node`` no later than every other region
        that holds it, as its origin did, by each record's own time bounds.

        A writer attribute is the application's claim, and an application can be wrong:
        an update that leaves the attribute as the previous writer set it, a copy job that
        keeps it. A region that cannot have applied the write first did not write it; the
        write is then inferred like one without the attribute, and no verdict on it is
        proof (``unattributable``)."""
        u = self.var[(region, node)]
        for other in self.obs[node]:
            if other != region:
                v = self.var[(other, node)]
                if self.seen_lo[u] > self.seen_hi[v] or self.created_lo[u] > self.created_hi[v]:
                    return False
        return True

    # -- search ---------------------------------------------------------------------

    def search(self) -> tuple[list[dict[Outcome, None]], list[bool], bool]:
        """Outcomes of the worlds on each level (structure, timing, canary); whether each
        level's search was complete; relaxed.

        The timing levels are searched on their own, pruned by the arrival times as each
        origin is chosen: a partial world no apply times fit has no extension they fit
        (every choice only adds constraints), so a long segment of concurrent writes that
        has far too many structural worlds to list usually has few that the times allow.
        Relaxed: no world passes the replication model's checks at all (the streams
        contradict it), so the structure level holds every assignment.
        """
        order = self._topological()
        cands = {n: self.candidates(n) for n in order}
        levels: list[dict[Outcome, None]] = [{} for _ in LEVELS]
        floors = self.floors

        def structural(origin: Mapping[NodeId, str]) -> None:
            levels[0][self._outcome(origin)] = None

        def timed(origin: Mapping[NodeId, str]) -> None:
            out = self._outcome(origin)
            levels[1][out] = None
            if floors and self.timing_ok(origin, floors):
                levels[2][out] = None

        timing_complete = not self._enumerate(order, cands, timed, check=True, timed=True)
        structure_complete = not self._enumerate(order, cands, structural, check=True)
        if levels[0] or not structure_complete:
            return levels, [structure_complete, timing_complete, timing_complete], False
        structure_complete = not self._enumerate(order, cands, structural, check=False)
        return levels, [structure_complete, True, True], True

    def _topological(self) -> list[NodeId]:
        assert self.before is not None
        before = self.before
        return sorted(self.written, key=lambda n: (len(before[n]), repr(n)))

    def _enumerate(
        self,
        order: list[NodeId],
        cands: dict[NodeId, list[str]],
        leaf: Callable[[Mapping[NodeId, str]], None],
        *,
        check: bool,
        timed: bool = False,
    ) -> bool:
        """Call `leaf` with every world (an origin per write) that passes the per-link FIFO
        check (`check`) and, with `timed`, fits the arrival times at floors 0; True when
        the search was cut short by ``max_worlds``."""
        origin: dict[NodeId, str] = {}
        locals_: dict[str, list[NodeId]] = {ch.region: [] for ch in self.chains}
        budget = [self.settings.max_worlds]
        truncated = [False]
        clocks: list[_Clock] = []
        if timed:
            clocks.append(_Clock(self.created_lo, self.created_hi, self.chain_edges))
            if self.timed:
                clocks.append(_Clock(self.seen_lo, self.seen_hi, self.chain_edges))
            if not all(c.feasible for c in clocks):
                return False

        def spend() -> bool:
            budget[0] -= 1
            if budget[0] <= 0:
                truncated[0] = True
                return False
            return True

        def rec(i: int) -> None:
            if budget[0] <= 0:
                truncated[0] = True
                return
            if i == len(order):
                budget[0] -= 1
                leaf(origin)
                return
            node = order[i]
            for region in cands[node]:
                if check and not self._fifo_ok(node, region, locals_[region]):
                    if not spend():
                        return
                    continue
                if clocks:
                    pairs = self._delivery(node, region)
                    marks = [c.mark() for c in clocks]
                    fits = all([c.add(pairs) for c in clocks])
                    if not fits:
                        for c, m in zip(clocks, marks, strict=True):
                            c.undo(m)
                        if not spend():
                            return
                        continue
                origin[node] = region
                locals_[region].append(node)
                rec(i + 1)
                locals_[region].pop()
                del origin[node]
                if clocks:
                    for c, m in zip(clocks, marks, strict=True):
                        c.undo(m)

        rec(0)
        return truncated[0]

    def _delivery(self, node: NodeId, origin: str) -> list[tuple[int, int]]:
        """(origin's record, other region's record) of `node`: it was applied there later."""
        u = self.var[(origin, node)]
        return [(u, self.var[(r, node)]) for r in self.obs[node] if r != origin]

    def _fifo_ok(self, node: NodeId, origin: str, earlier_locals: Iterable[NodeId]) -> bool:
        """Per-link order: ``origin``'s earlier writes reached every region before ``node``."""
        assert self.before is not None
        for region, pos in self.pos.items():
            if region == origin or node not in pos:
                continue
            j = pos[node]
            ch = self.chain_of[region]
            last = ch.nodes[j - 1] if j > 0 else ch.root
            for w in earlier_locals:
                pw = pos.get(w)
                if pw is not None and pw < j:
                    continue
                if w == ch.root:
                    continue
                if pw is not None and pw > j:
                    return False
                # w arrived before node and left no record: the region must then have
                # held something not provably older than w.
                if last in self.before[w]:
                    return False
        return True

    def _outcome(self, origin: Mapping[NodeId, str]) -> Outcome:
        parent = {n: self.prev(o, n) for n, o in origin.items()}
        if self.closed_by_cut:
            survivors = [self.chains[0].nodes[-1]]
        else:
            survivors = sorted({ch.nodes[-1] for ch in self.chains if ch.nodes}, key=repr)
        keep: set[NodeId] = set()
        chains: list[list[NodeId]] = []
        for s in survivors:
            chain = []
            node: NodeId | None = s
            while node is not None and node in origin:
                chain.append(node)
                keep.add(node)
                node = parent[node]
            chains.append(chain)
        entries: list[Entry] = []
        for lost in origin:
            if lost in keep:
                continue
            anc: set[NodeId] = set()
            node = lost
            while node in origin and node not in anc:
                anc.add(node)
                node = parent[node]
            anc.add(node)  # the root the lost branch grew from
            # The winner is the first version of the surviving line after the fork:
            # the concurrent write that the lost branch never saw.
            winner: NodeId | None = None
            for chain in chains:
                winner = next((c for c in chain if parent[c] in anc), None)
                if winner is None and chain:
                    winner = chain[-1]  # the branches grew from different roots
                if winner is not None:
                    break
            entries.append(
                (lost, origin[lost], winner, origin[winner] if winner is not None else UNKNOWN)
            )
        return frozenset(entries)


class _Clock:
    """Earliest apply times under ``t[v] >= t[u]`` constraints added and undone one world
    choice at a time, so the depth-first search can test every partial world.

    Zero weights only (floors 0): every earliest time is one of the lower bounds, so
    propagation ends even around cycles. `feasible` is False once an earliest time passes
    its upper bound; `undo` restores the state of a `mark`.
    """

    def __init__(
        self, lo: Sequence[float], hi: Sequence[float], edges: Sequence[tuple[int, int, float]]
    ) -> None:
        self.earliest = list(lo)
        self.hi = hi
        self.out: list[list[int]] = [[] for _ in lo]
        self.log: list[tuple[int, float]] = []
        self.added: list[int] = []
        for u, v, _ in edges:
            self.out[u].append(v)
        self.feasible = self._propagate(list(range(len(lo))))
        self.log.clear()

    def mark(self) -> tuple[int, int]:
        return len(self.log), len(self.added)

    def add(self, pairs: Sequence[tuple[int, int]]) -> bool:
        for u, v in pairs:
            self.out[u].append(v)
            self.added.append(u)
        return self._propagate([u for u, _ in pairs])

    def undo(self, mark: tuple[int, int]) -> None:
        logged, added = mark
        while len(self.log) > logged:
            v, old = self.log.pop()
            self.earliest[v] = old
        while len(self.added) > added:
            self.out[self.added.pop()].pop()

    def _propagate(self, work: list[int]) -> bool:
        earliest, hi, log = self.earliest, self.hi, self.log
        while work:
            u = work.pop()
            t = earliest[u]
            for v in self.out[u]:
                if t > earliest[v] + 1e-9:
                    log.append((v, earliest[v]))
                    earliest[v] = t
                    if t > hi[v] + 1e-9:
                        return False
                    work.append(v)
        return True


def _bounded(lo: Sequence[float], hi: Sequence[float], edges: Sequence[tuple[int, int, float]]) -> bool:
    """Difference constraints ``t[v] >= t[u] + w`` with ``lo <= t <= hi`` have a solution.

    The earliest time of every variable is a longest path (Bellman-Ford on a few
    dozen variables); a cycle that keeps growing, or an earliest time past a
    variable's upper bound, means no solution.
    """
    earliest = list(lo)
    for _ in range(len(earliest) + 1):
        changed = False
        for u, v, w in edges:
            t = earliest[u] + w
            if t > earliest[v] + 1e-9:
                earliest[v] = t
                changed = True
        if not changed:
            break
    else:
        return False
    return all(e <= h + 1e-9 for e, h in zip(earliest, hi, strict=True))


def analyze(
    table: str,
    key: Image,
    by_region: Mapping[str, Sequence[Observation]],
    settings: DetectorSettings,
    floors: LinkFloors | None = None,
    unknown: Sequence[str] = (),
) -> Analysis:
    """Judge one settled episode of one item; ``by_region`` holds records in apply order.

    ``floors`` are the least delays of the directed links (the canary's), or None.
    ``unknown``: regions of the table whose part of this episode is not known (no
    records, and no judged prefix says what they hold).
    """
    chains = build_chains(by_region)
    blurred = _tombstones_blurred(chains)
    segments = _split(chains)
    # A whole episode starts where every region stands on the same version (nothing yet,
    # the last version all held, or a judged prefix's cut). Different starts mean some
    # region's earlier records are not here: a start that is not older than everything
    # written here breaks the analysis (it may descend from a write it calls lost).
    partial = len({ch.root for ch in chains}) > 1 or bool(unknown)
    result = Analysis([], [], len(segments), partial=partial)
    doubtful = _tombstones_shared(segments)
    for index, seg_chains in enumerate(segments):
        written = {n for ch in seg_chains for n in ch.nodes}
        if len(written) <= 1:
            continue
        seg = _Segment(seg_chains, settings, _closed(seg_chains), floors)
        if seg.before is None:
            result.inconsistent = True
            continue
        levels, complete, relaxed = seg.search()
        result.inconsistent |= relaxed
        if not relaxed and not levels[1] and complete[1]:
            result.timing_contradicted = True
        elif floors and levels[1] and not levels[2]:
            result.canary_contradicted = True
        depth = max(i for i, outs in enumerate(levels) if outs or i == 0)
        result.truncated |= not complete[depth]
        if not any(levels[depth]):
            continue
        result.outcomes.append(levels[depth])
        found = _verdicts(
            table, key, seg, levels[: depth + 1], complete, settings,
            not complete[depth] or relaxed,
        )
        if blurred:
            found = [_blur(v, _SEVERAL_DELETES) for v in found]
        elif index in doubtful:
            found = [_blur(v, doubtful[index]) for v in found]
        if partial:
            found = [_unproven(v) for v in found]
        result.verdicts.extend(found)
    return result


def _tombstones_blurred(chains: Sequence[_Chain]) -> bool:
    """True when tombstone names rest on a guess.

    A region holding several deletes before the same next common version, while
    another region holds a different number of them, leaves it open which of its
    deletes the others saw. Then nothing about the item is named (see _blur).
    """
    counts: list[dict[NodeId | None, int]] = []
    for ch in chains:
        per: dict[NodeId | None, int] = {}
        for node in ch.nodes:
            if node[0] == "D":
                succ = node[1]
                per[succ if isinstance(succ, tuple) else None] = (
                    per.get(succ if isinstance(succ, tuple) else None, 0) + 1
                )
        counts.append(per)
    succs = {s for per in counts for s in per}
    for succ in succs:
        seen = [per.get(succ, 0) for per in counts]
        if max(seen) >= 2 and len(set(seen)) > 1:
            return True
    return False


def _tombstones_shared(segments: Sequence[Sequence[_Chain]]) -> dict[int, str]:
    """The segments whose verdicts rest on naming a tombstone, each with the reason.

    A REMOVE record has no image and no attribute, and a delete that reaches a region
    already holding a tombstone (or nothing) leaves no record there. So:

    * the tombstone that several regions show under one name may be one delete or
      several, each written in a region that shows it (over whatever that region held)
      and absorbed unseen by the others; a write after the tombstone may then descend
      from any of them. The readings give different parents, and so different losers
      and winners (an update "lost" to a delete that its own region wrote after it is no
      loss at all), and the world search knows only the first.
    * a region that holds nothing (the item missing where its stream starts, or a
      tombstone it shows) may hold, unseen, a delete of the segment that its stream
      does not show: one that reached it while it held nothing. That delete may be newer
      than writes that reach the region next, which it then drops without a record, not
      "shows later"; read as the start of the history (or as its own tombstone), the
      region's next write can only have been written there, and the writes it dropped
      look lost to it.

    Until the search knows those readings, nothing that depends on them is counted: every
    segment with a tombstone shown by two or more regions or with a delete that a region
    holding nothing does not show, and the segments it is joined to by tombstone cuts
    (what follows descends from whichever delete survived), up to the next cut on an
    image. Segments without deletes are unaffected, and so is one whose only delete is
    in the stream of every region that ever holds nothing in it.
    """
    doubtful: dict[int, str] = {}
    zone: list[int] = []
    reason: str | None = None
    for index, seg in enumerate(segments):
        zone.append(index)
        shown: dict[NodeId, int] = {}
        for ch in seg:
            for node in ch.nodes:
                if node[0] == "D":
                    shown[node] = shown.get(node, 0) + 1
        if reason is None and any(n >= 2 for n in shown.values()):
            reason = _SHARED_TOMBSTONE
        for ch in seg:
            empty = any(n[0] == "D" for n in ch.nodes) or (_is_delete(ch.root) and ch.nodes)
            if reason is None and empty and set(shown) - set(ch.nodes):
                reason = _UNSEEN_DELETE
        cut = seg[0].nodes[-1] if _closed(list(seg)) else None
        if cut is None or cut[0] != "D":
            if reason is not None:
                doubtful.update(dict.fromkeys(zone, reason))
            zone, reason = [], None
    if reason is not None:
        doubtful.update(dict.fromkeys(zone, reason))
    return doubtful


_SEVERAL_DELETES = (
    "several deletes of this item cannot be told apart across regions "
    "(tombstones carry no attributes)"
)
_SHARED_TOMBSTONE = (
    "a tombstone that several regions show may be one delete or several (a delete "
    "leaves no image or attribute, and none where the item is already absent), and "
    "the readings differ on what was lost"
)
_UNSEEN_DELETE = (
    "a region that held no item may have held a delete it shows no record of (a delete "
    "that reaches a region already without the item leaves none), which drops older "
    "writes there unseen, and the readings differ on what was lost"
)


def _blur(v: Verdict, reason: str) -> Verdict:
    return replace(
        v,
        loser_region=UNKNOWN,
        winner_region=UNKNOWN,
        lost_image=None,
        winning_image=None,
        lost_is_delete=False,
        winner_is_delete=False,
        mode="ambiguous",
        certain=False,
        loser_known_by="unknown",
        winner_known_by="unknown",
        candidates=v.candidates or ((v.lost_image,) if v.lost_image is not None else ()),
        evidence=reason + "; a write was probably lost: " + v.evidence,
    )


def _unproven(v: Verdict) -> Verdict:
    if not v.certain:
        return v
    return replace(
        v,
        certain=False,
        evidence=v.evidence + "; the regions' streams start from different versions here "
        "(part of this item's history was judged before), so this is not proof",
    )


def _closed(segment: list[_Chain]) -> bool:
    """A segment is closed by a cut when every chain ends on the same version."""
    ends = {ch.nodes[-1] if ch.nodes else None for ch in segment}
    return len(ends) == 1 and None not in ends


def _determined(
    levels: Sequence[dict[Outcome, None]], complete: Sequence[bool], lost: NodeId, field: int
) -> tuple[str | NodeId | None, KnownBy]:
    """The one value of ``field`` that every outcome on some level gives ``lost``.

    Levels are searched loosest first, so the answer says the least evidence that
    settles it. A level where some world does not lose ``lost``, or whose search was
    cut short, settles nothing.
    """
    for level, outcomes, whole in zip(LEVELS, levels, complete, strict=False):
        if not whole:
            continue
        values = set()
        for outcome in outcomes:
            found = [e[field] for e in outcome if e[0] == lost]
            if not found:
                break
            values.update(found)
        else:
            if len(values) == 1:
                (value,) = values
                if value != UNKNOWN and value is not None:
                    return value, level
    return None, "unknown"


def _verdicts(
    table: str,
    key: Image,
    seg: _Segment,
    levels: Sequence[dict[Outcome, None]],
    complete: Sequence[bool],
    settings: DetectorSettings,
    degraded: bool,
) -> list[Verdict]:
    """What every world on the strictest level agrees on; the rest as uncertain candidates."""
    selected = list(levels[-1])
    lost_sets = [{e[0] for e in o} for o in selected]
    always = set.intersection(*lost_sets) if lost_sets else set()
    out: list[Verdict] = []
    for lost in sorted(always, key=repr):
        loser, loser_by = _determined(levels, complete, lost, 1)
        winner, _ = _determined(levels, complete, lost, 2)
        wregion, winner_by = _determined(levels, complete, lost, 3)
        if lost in seg.attributed and loser is not None:
            loser_by = "attribute"
        if winner in seg.attributed and wregion is not None:
            winner_by = "attribute"
        mode: Mode = "exact"
        if loser is None or wregion is None or winner is None:
            mode = "ambiguous"
        elif "timing" in (loser_by, winner_by) or "canary" in (loser_by, winner_by):
            mode = "inferred"
        certain = lost not in seg.unattributable and winner not in seg.unattributable
        if degraded:
            # The search was cut short or the streams contradict the replication model:
            # what the worlds seen agree on is not proof.
            mode, certain = "ambiguous", False
            if settings.exact:
                loser = wregion = None
        out.append(
            _verdict(
                table, key, seg, lost,
                str(loser) if loser is not None else UNKNOWN,
                winner if isinstance(winner, tuple) else None,
                str(wregion) if wregion is not None else UNKNOWN,
                mode, certain, (),
                loser_by if loser is not None else "unknown",
                winner_by if wregion is not None else "unknown",
            )
        )
    rest = [len(s - always) for s in lost_sets]
    if rest and max(rest) > 0:
        cands = sorted({n for s in lost_sets for n in s - always}, key=repr)
        images = tuple(_image_of(n) for n in cands)
        kmin, kmax = min(rest), max(rest)
        for i in range(kmax):
            out.append(
                _verdict(
                    table, key, seg, None, UNKNOWN, None, UNKNOWN, "ambiguous",
                    i < kmin and not degraded, images, "unknown", "unknown",
                )
            )
    return out


def _created(seg: _Segment, node: NodeId | None, region: str) -> float | None:
    if node is None:
        return None
    seen = seg.obs.get(node, {})
    if region in seen:
        return seen[region].created_at
    return min((ob.created_at for ob in seen.values()), default=None)


def _verdict(
    table: str,
    key: Image,
    seg: _Segment,
    lost: NodeId | None,
    loser: str,
    winner: NodeId | None,
    wregion: str,
    mode: Mode,
    certain: bool,
    candidates: tuple[Image | None, ...],
    loser_by: KnownBy,
    winner_by: KnownBy,
) -> Verdict:
    if lost is None:
        shown = ", ".join(format_image(c, 80) for c in candidates)
        evidence = (
            "the streams fit several histories (a skip looks like a conflict with the regions "
            f"renamed); lost write is one of: {shown}"
            + ("" if certain else "; some history loses nothing here")
        )
    else:
        applied = sorted(seg.obs[lost])
        lost_parent = seg.prev(loser, lost) if loser in seg.obs[lost] else None
        evidence = (
            f"{loser} wrote {format_image(_image_of(lost))}"
            + (f" over {format_image(_image_of(lost_parent))}" if lost_parent else "")
            + f" (applied in {', '.join(applied)}); it is not an ancestor of the surviving"
            + " version"
        )
        if winner is not None:
            wparent = seg.prev(wregion, winner) if wregion in seg.obs.get(winner, {}) else None
            evidence += (
                f"; {wregion} wrote {format_image(_image_of(winner))}"
                + (f" over {format_image(_image_of(wparent))}" if wparent else "")
                + " without having seen it, and that write survived"
            )
        if mode == "ambiguous":
            evidence += "; the streams do not name every region here"
    return Verdict(
        table=table,
        key=key,
        loser_region=loser,
        winner_region=wregion,
        lost_image=_image_of(lost) if lost is not None else None,
        winning_image=_image_of(winner) if winner is not None else None,
        lost_is_delete=lost is not None and _is_delete(lost),
        winner_is_delete=winner is not None and _is_delete(winner),
        lost_created_at=_created(seg, lost, loser),
        winner_created_at=_created(seg, winner, wregion),
        mode=mode,
        certain=certain,
        evidence=evidence,
        candidates=candidates,
        loser_known_by=loser_by,
        winner_known_by=winner_by,
    )
