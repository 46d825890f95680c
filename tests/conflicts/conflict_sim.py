"""A small, pure simulator of global-table replication that also knows the truth.

It models what the detector assumes and nothing more: each write gets a hidden
timestamp in the region that accepts it; it is shipped to every other region on
a directed link with its own delay and FIFO order; a region applies an incoming
write only if it is newer than what it holds (a delete leaves a tombstone with
its timestamp); a write that changes nothing (same image) or loses emits no
stream record. Ground truth: every write's origin, its parent (what the origin
held when writing) and whether it is lost (not an ancestor of the survivor),
with its winner (first write of the surviving line after the fork).

Used by the property tests, the inferred-mode measurement and the benchmark.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from monitor.conflicts import (
    Detector,
    DetectorSettings,
    Image,
    Observation,
    Verdict,
    canonical_image,
)

REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")
TABLE = "Orders"


@dataclass(frozen=True)
class Op:
    """A client write: at ``time`` in ``region`` on item ``item``; delete or put."""

    time: float
    region: int
    item: int
    delete: bool = False


@dataclass
class TrueWrite:
    id: int
    origin: str
    item: int
    parent: int | None
    image: Image | None
    ts: float
    lost: bool = False
    winner: int | None = None


@dataclass
class SimResult:
    observations: list[Observation]
    writes: dict[int, TrueWrite]
    keys: dict[int, Image]
    regions: tuple[str, ...]
    noise: float
    survivors: dict[int, int | None] = field(default_factory=dict)
    transitions: list[tuple[int | None, int]] = field(default_factory=list)

    def lost(self, item: int) -> list[TrueWrite]:
        """Visible lost writes of ``item``.

        A lost write is visible when, in some region, a version of its branch
        (itself or a descendant) was replaced *with a stream record* by a write
        that does not descend from it. Not visible: a loser whose winner had
        the same image (the overwrite was a no-op everywhere), and a delete
        overtaken only by other deletes (tombstones are identical).
        """
        return [w for w in self.writes.values() if w.item == item and w.lost and self._visible(w)]

    def _descends(self, node: int | None, ancestor: int) -> bool:
        while node is not None:
            if node == ancestor:
                return True
            node = self.writes[node].parent
        return False

    def _visible(self, w: TrueWrite) -> bool:
        return any(
            old is not None and self._descends(old, w.id) and not self._descends(new, w.id)
            for old, new in self.transitions
        )


def key_of(item: int) -> Image:
    return canonical_image({"OrderID": {"S": f"o{item}"}})


def simulate(
    ops: Sequence[Op],
    delays: dict[tuple[int, int], float],
    *,
    regions: Sequence[str] = REGIONS,
    jitter: float = 0.2,
    noise: float = 0.05,
    seed: int = 0,
    version_attribute: str | None = "version",
    writer_attribute: str | None = "writer",
    payloads: Sequence[str] | None = None,
) -> SimResult:
    """Run ``ops`` through the replication model.

    ``delays[(a, b)]`` is the base delay in seconds of link a->b (indices into
    ``regions``); each message gets up to ``jitter`` relative extra delay but
    never overtakes the previous one on its link. Each record's arrival is
    bounded the way a reader polling every ``noise`` seconds bounds it: an
    interval of width ``noise`` that holds the apply time at a uniform random
    place (``observed_after``, ``observed_at``). ``payloads`` draws images from a small set instead
    of making every image unique.
    """
    rng = random.Random(seed)
    regs = tuple(regions)
    n = len(regs)
    # state[(region, item)] = (image, ts, write id)
    state: dict[tuple[int, int], tuple[Image | None, float, int | None]] = {}
    writes: dict[int, TrueWrite] = {}
    obs: list[Observation] = []
    seqs = [0] * n
    last_on_link: dict[tuple[int, int], float] = {}
    events: list[tuple[float, int, int, int, int]] = []  # time, order, kind, region, payload
    order = 0
    for op in sorted(ops, key=lambda o: o.time):
        events.append((op.time, order, 0, op.region, order))
        order += 1
    heapq.heapify(events)
    op_list = sorted(ops, key=lambda o: o.time)

    transitions: list[tuple[int | None, int]] = []

    def emit(r: int, item: int, old: Image | None, new: Image | None, t: float) -> None:
        seqs[r] += 1
        event = "REMOVE" if new is None else ("INSERT" if old is None else "MODIFY")
        obs.append(
            Observation(
                table=TABLE,
                region=regs[r],
                key=key_of(item),
                event=event,
                old_image=old,
                new_image=new,
                sequence_number=str(seqs[r]),
                created_at=float(math.floor(t)),
                observed_at=(seen := t + rng.uniform(0.0, noise)),
                observed_after=seen - noise,
            )
        )

    next_id = 0
    while events:
        t, _, kind, r, payload = heapq.heappop(events)
        if kind == 0:
            op = op_list[payload]
            item = op.item
            held, held_ts, held_id = state.get((r, item), (None, -math.inf, None))
            if op.delete:
                if held is None:
                    continue  # deleting nothing: no record, nothing replicated
                image: Image | None = None
            else:
                version = 0
                if held is not None and version_attribute is not None:
                    version = int(str(dict(held)[version_attribute][1]))
                attrs: dict[str, dict[str, str]] = {"OrderID": {"S": f"o{item}"}}
                if payloads is None:
                    attrs["payload"] = {"S": f"w{next_id}"}
                else:
                    attrs["payload"] = {"S": rng.choice(list(payloads))}
                if version_attribute is not None:
                    attrs[version_attribute] = {"N": str(version + 1)}
                if writer_attribute is not None:
                    attrs[writer_attribute] = {"S": regs[r]}
                image = canonical_image(attrs)
                if image == held:
                    continue  # a write that changes nothing: no record, not replicated
            ts = t + next_id * 1e-9
            w = TrueWrite(next_id, regs[r], item, held_id, image, ts)
            writes[w.id] = w
            next_id += 1
            state[(r, item)] = (image, ts, w.id)
            transitions.append((held_id, w.id))
            emit(r, item, held, image, t)
            for dst in range(n):
                if dst == r:
                    continue
                base = delays[(r, dst)]
                at = t + base * (1.0 + rng.uniform(0.0, jitter))
                at = max(at, last_on_link.get((r, dst), -math.inf) + 1e-6)
                last_on_link[(r, dst)] = at
                heapq.heappush(events, (at, order, 1, dst, w.id))
                order += 1
        else:
            w = writes[payload]
            held, held_ts, held_id = state.get((r, w.item), (None, -math.inf, None))
            if w.ts <= held_ts:
                continue  # loses LWW here: no record
            state[(r, w.item)] = (w.image, w.ts, w.id)
            if w.image == held:
                continue  # no visible change: no record
            transitions.append((held_id, w.id))
            emit(r, w.item, held, w.image, t)

    result = SimResult(obs, writes, {}, regs, noise, transitions=transitions)
    items = {w.item for w in writes.values()}
    for item in items:
        result.keys[item] = key_of(item)
        finals = {state.get((r, item), (None, 0.0, None))[2] for r in range(n)}
        assert len(finals) == 1, f"regions did not converge on item {item}: {finals}"
        survivor = finals.pop()
        result.survivors[item] = survivor
        _mark_lost(writes, item, survivor)
    return result


def _mark_lost(writes: dict[int, TrueWrite], item: int, survivor: int | None) -> None:
    chain: list[int] = []
    node = survivor
    while node is not None:
        chain.append(node)
        node = writes[node].parent
    keep = set(chain)
    for w in writes.values():
        if w.item != item or w.id in keep:
            continue
        w.lost = True
        anc: set[int | None] = set()
        a: int | None = w.id
        while a is not None:
            anc.add(a)
            a = writes[a].parent
        anc.add(None)
        w.winner = next((c for c in chain if writes[c].parent in anc), None)


def random_delays(
    rng: random.Random, n: int, low: float, high: float
) -> dict[tuple[int, int], float]:
    """Independent log-uniform base delay per directed link."""
    return {
        (a, b): math.exp(rng.uniform(math.log(low), math.log(high)))
        for a in range(n)
        for b in range(n)
        if a != b
    }


def random_ops(
    rng: random.Random, *, n_ops: int, items: int, span: float, p_delete: float, n: int = 3
) -> list[Op]:
    return [
        Op(rng.uniform(0.0, span), rng.randrange(n), rng.randrange(items), rng.random() < p_delete)
        for _ in range(n_ops)
    ]


def hot_ops(
    rng: random.Random,
    *,
    items: int,
    writes: int,
    interval: float,
    p_conflict: float,
    p_other: float = 0.1,
    n: int = 3,
) -> list[Op]:
    """Items that never go quiet: each rewritten about every ``interval`` seconds.

    Most writes come from the item's home region (sequential, the common shape of
    a hot item); a share ``p_other`` from another region, and with probability
    ``p_conflict`` a second region writes the same item a moment later, before
    the first write can have reached it on any link: a conflict.
    """
    ops: list[Op] = []
    for item in range(items):
        home = rng.randrange(n)
        t = rng.uniform(0.0, interval)
        for _ in range(writes):
            region = rng.randrange(n) if rng.random() < p_other else home
            ops.append(Op(t, region, item))
            if rng.random() < p_conflict:
                other = rng.choice([r for r in range(n) if r != region])
                ops.append(Op(t + rng.uniform(0.001, 0.04), other, item))
            t += interval * rng.uniform(0.8, 1.2)
    return ops


@dataclass
class Replay:
    """Verdicts per item with the time they came out (None: only at the final flush)."""

    verdicts: dict[int, list[tuple[float | None, Verdict]]]
    stats: dict[str, int]


def link_floors(
    result: SimResult, delays: dict[tuple[int, int], float], factor: float = 0.5
) -> dict[tuple[str, str], float]:
    """Floors as the canary gives them: a share of each link's least delay."""
    regs = result.regions
    return {(regs[a], regs[b]): factor * d for (a, b), d in delays.items()}


def replay(
    result: SimResult,
    settings: DetectorSettings,
    floors: dict[tuple[str, str], float] | None = None,
) -> Replay:
    """Feed the observations in the order a set of readers would see them, then flush.

    Watermarks trail the newest observation by the observation noise plus the
    second lost to rounding, so the detector never sees a watermark a real
    reader could not have claimed. The detector is polled after every record.
    """
    det = Detector({TABLE: result.regions}, settings)
    if floors:
        det.set_link_floors(floors)
    timed: list[tuple[float | None, Verdict]] = []
    stream = sorted(result.observations, key=lambda o: o.observed_at or 0.0)
    for ob in stream:
        det.observe(ob)
        now = ob.observed_at or 0.0
        for region in result.regions:
            det.advance_watermark(TABLE, region, now - result.noise - 1.0)
        timed.extend((now, v) for v in det.poll(now))
    timed.extend((None, v) for v in det.flush())
    item_of = {k: i for i, k in result.keys.items()}
    out: dict[int, list[tuple[float | None, Verdict]]] = {i: [] for i in result.keys}
    for at, v in timed:
        out[item_of[v.key]].append((at, v))
    return Replay(out, det.stats)


def run_detector(
    result: SimResult,
    settings: DetectorSettings,
    floors: dict[tuple[str, str], float] | None = None,
) -> dict[int, list[Verdict]]:
    """The verdicts of :func:`replay` per item, without their times."""
    return {
        item: [v for _, v in verdicts]
        for item, verdicts in replay(result, settings, floors).verdicts.items()
    }


@dataclass
class Score:
    """Comparison of one item's verdicts with the truth."""

    truth: int
    certain: int
    uncertain: int
    named_wrong: list[str]
    matched: int  # verdicts whose lost write, loser and winner all match a true loss


def compare(result: SimResult, item: int, verdicts: Sequence[Verdict]) -> Score:
    """Match verdicts to true losses; a named (non-unknown) field must never be wrong."""
    truth = result.lost(item)
    pool = list(truth)
    wrong: list[str] = []
    matched = 0
    for v in verdicts:
        if v.lost_image is None and not v.lost_is_delete:
            continue  # ambiguous "one of" verdict: nothing named
        fits = [
            w for w in pool if w.image == v.lost_image and (w.image is not None or v.lost_is_delete)
        ]
        if not fits:
            wrong.append(f"not a true loss: {v.lost_image} ({v.mode})")
            continue

        def agrees(w: TrueWrite, v: Verdict = v) -> bool:
            win = result.writes[w.winner] if w.winner is not None else None
            if v.loser_region != "unknown" and v.loser_region != w.origin:
                return False
            if v.winner_region != "unknown" and (win is None or v.winner_region != win.origin):
                return False
            return not (
                (v.winning_image is not None or v.winner_is_delete)
                and (win is None or win.image != v.winning_image)
            )

        good = [w for w in fits if agrees(w)]
        if not good:
            w = fits[0]
            win = result.writes[w.winner] if w.winner is not None else None
            wrong.append(
                f"{v.mode}: said loser {v.loser_region} winner {v.winner_region}; truth loser "
                f"{w.origin} winner {win.origin if win else None}"
            )
            pool.remove(w)
            continue
        pool.remove(good[0])
        if v.loser_region != "unknown" and v.winner_region != "unknown":
            matched += 1
    return Score(
        truth=len(truth),
        certain=sum(1 for v in verdicts if v.certain),
        uncertain=sum(1 for v in verdicts if not v.certain),
        named_wrong=wrong,
        matched=matched,
    )
