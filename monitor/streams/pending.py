"""Writes at risk: per directed link, the writes a source has and its target does not yet.

A pure core (no I/O, no clock: times are passed in), fed with the same
`Observation`s the conflict detector gets, so it costs no AWS call.

A write is *pending* on ``source -> target`` from the moment the source's stream
shows it as the source's own write until the target's stream shows it
(*delivered*) or shows a version the source applied after it (*superseded*: a
newer write replaced it before it arrived; whether that newer write descended
from it or beat it under last-writer-wins is the conflict detector's verdict,
and a write the target discarded under LWW always ends this way, because the
target shows the winner and the source applies the winner after its own
write). Nothing here waits for the detector's settle window: every answer is
structural, from the order each region applied versions in.

Origin, as the detector attributes it (`DetectorSettings.writer_region`): the
region the writer attribute names, once that region's stream shows the write;
otherwise the first region whose stream showed it (inferred). While the named
region's reader has not shown it yet, the first region stands in, and the
write moves to the named region when it does.

Readers that are behind: a write is *confirmed* pending on a link only once
the target's reader watermark has passed the time the source's reader saw it
(the target's reader then had its chance to show it and did not). Writes the
target's reader has not read that far yet are *unconfirmed*: reported apart
(`LinkState.unconfirmed`), never counted in the pending gauge, so a slow
reader does not read as missing writes. While the target region is down its
watermark stops, so new writes stay unconfirmed; while the source is down
nothing new is seen, and the confirmed writes are exactly what it accepted
and the others never showed, as of the last successful read.

Memory: each pending write holds two 16-byte digests (key, version), a few
per-region numbers and, for the first ``cap_per_link`` writes pending on each
link (oldest first), the item key (and the image, if asked for). Beyond the
cap a write is tracked by its digests only: the count stays exact, the list
of keys is truncated, and `LinkState.truncated` counts the writes listed
without their key.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from monitor.conflicts import DetectorSettings, Observation, image_to_json

__all__ = [
    "AtRiskWrite",
    "LinkState",
    "Outcome",
    "PendingTracker",
    "Resolution",
    "visibility",
]

#: How a pending write ended on one link.
Outcome = Literal["delivered", "superseded"]


def _digest(value: object) -> bytes:
    return hashlib.blake2b(repr(value).encode(), digest_size=16).digest()


def visibility(ob: Observation) -> tuple[float, float]:
    """Bounds on when ``ob`` became visible in its region's stream (wall clock).

    No earlier than its creation second (AWS clock, rounded down) or the reader's
    earliest arrival bound, no later than the reader's latest arrival bound (or the
    end of the creation second, for a record built without one).
    """
    hi = ob.observed_at if ob.observed_at is not None else ob.created_at + 1.0
    lo = ob.created_at if ob.observed_after is None else max(ob.created_at, ob.observed_after)
    return min(lo, hi), hi


def written_at(ob: Observation) -> float:
    """Estimate of when the write was accepted in its origin: within half a second.

    ApproximateCreationDateTime is the second it was applied (rounded down); the
    record was visible by the reader's latest bound, which narrows the second.
    """
    lo = ob.created_at
    hi = lo + 1.0
    if ob.observed_at is not None:
        hi = max(lo, min(hi, ob.observed_at))
    return (lo + hi) / 2


@dataclass(slots=True)
class _Write:
    wid: int
    key_digest: bytes
    version: bytes
    origin: str
    by_attribute: bool  # origin named by the writer attribute (and its stream showed it)
    named: str | None  # the region the writer attribute names, not shown there yet
    written_at: float = math.nan
    seen_at: float = math.nan  # the origin's reader saw it by then (daemon clock)
    index: dict[str, int] = field(default_factory=dict)  # position in each region's chain
    visible: dict[str, float] = field(default_factory=dict)  # midpoint of visibility bounds
    seq: dict[str, str] = field(default_factory=dict)
    open: set[str] = field(default_factory=set)  # targets it is pending on
    key: dict[str, Any] | None = None  # DynamoDB JSON, kept within the cap only
    image: dict[str, Any] | None = None  # kept within the cap, and only when asked for
    deleted: bool = False


@dataclass(slots=True)
class _Key:
    writes: list[_Write] = field(default_factory=list)
    next_index: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Resolution:
    """A write stopped being pending on one link; ``lag`` only for fresh deliveries."""

    wid: int
    source: str
    target: str
    outcome: Outcome
    lag: float | None


@dataclass(frozen=True, slots=True)
class LinkState:
    """One link's figures: confirmed pending, age of the oldest, unconfirmed, truncated."""

    source: str
    target: str
    pending: int
    oldest_written_at: float | None
    unconfirmed: int
    listed: int


@dataclass(frozen=True, slots=True)
class AtRiskWrite:
    """A write its origin accepted that some other regions' streams have not shown."""

    wid: int
    key: dict[str, Any] | None  # DynamoDB JSON; None beyond the cap
    image: dict[str, Any] | None
    deleted: bool
    written_at: float
    missing_in: tuple[str, ...]
    unconfirmed_in: tuple[str, ...]


class PendingTracker:
    """Pending writes of one table on every directed link between its regions."""

    def __init__(
        self,
        table: str,
        regions: Sequence[str],
        settings: DetectorSettings | None = None,
        *,
        cap_per_link: int = 1000,
        keep_images: bool = False,
    ) -> None:
        if cap_per_link < 0:
            raise ValueError("cap_per_link must be >= 0")
        self.table = table
        self.regions = tuple(dict.fromkeys(regions))
        self.settings = settings or DetectorSettings()
        self.cap_per_link = cap_per_link
        self.keep_images = keep_images
        self._keys: dict[bytes, _Key] = {}
        self._by_id: dict[int, _Write] = {}
        # Per link, pending writes in the order their origin's reader saw them (oldest first).
        self._links: dict[tuple[str, str], dict[int, _Write]] = {
            (s, t): {} for s in self.regions for t in self.regions if s != t
        }
        self._listed: dict[tuple[str, str], int] = dict.fromkeys(self._links, 0)
        #: Writes whose key was not kept because their link's list was full, per link (cumulative).
        self.truncated: dict[tuple[str, str], int] = dict.fromkeys(self._links, 0)
        self.watermarks: dict[str, float] = dict.fromkeys(self.regions, -math.inf)
        self._next_id = 1

    # ---- input --------------------------------------------------------------------------

    def advance_watermark(self, region: str, t: float) -> None:
        """The region's reader has read everything visible in its stream before ``t``."""
        if t > self.watermarks.get(region, math.inf):
            self.watermarks[region] = t

    def observe(self, ob: Observation, fresh: bool = True) -> list[Resolution]:
        """One record, in apply order per region; what stopped being pending because of it.

        ``fresh`` False (a record read again, from a backlog) keeps its delivery out of
        the lag figures: its arrival is not timed.
        """
        region = ob.region
        if region not in self.watermarks:
            raise ValueError(f"region {region!r} is not a replica of table {self.table!r}")
        kd = _digest(ob.key)
        state = self._keys.get(kd)
        if state is None:
            state = self._keys[kd] = _Key()
        for w in state.writes:
            if w.seq.get(region) == ob.sequence_number:
                return []  # delivered twice by the reader
        deleted = ob.new_image is None
        version = _digest(("D", ob.old_image) if deleted else ("I", ob.new_image))
        write = next(
            (w for w in state.writes if w.version == version and region not in w.index), None
        )
        out: list[Resolution] = []
        if write is None:
            write = self._new_write(ob, kd, version, deleted)
            state.writes.append(write)
        index = state.next_index.get(region, 0)
        state.next_index[region] = index + 1
        write.index[region] = index
        lo, hi = visibility(ob)
        write.visible[region] = (lo + hi) / 2
        write.seq[region] = ob.sequence_number
        if write.named == region:
            self._move_to_named(write, ob, out)
        elif region == write.origin and math.isnan(write.seen_at):
            self._origin_shows(write, ob)
        elif region in write.open:
            lag = write.visible[region] - write.visible[write.origin] if fresh else None
            self._resolve(write, region, "delivered", None if lag is None else max(0.0, lag), out)
        self._supersede(state, write, region, out)
        state.writes = [w for w in state.writes if not self._done(w)]
        if not state.writes:
            del self._keys[kd]
        return out

    def _new_write(self, ob: Observation, kd: bytes, version: bytes, deleted: bool) -> _Write:
        named = None if deleted else self.settings.writer_region(ob.new_image)
        if named is not None and named not in self.watermarks:
            named = None  # names no region of this table: infer
        write = _Write(
            self._next_id, kd, version, origin=ob.region,
            by_attribute=named == ob.region, named=None if named == ob.region else named,
            deleted=deleted,
        )
        self._next_id += 1
        self._by_id[write.wid] = write
        return write

    def _origin_shows(self, write: _Write, ob: Observation) -> None:
        """The origin's stream shows its own write: pending on every link it has not crossed."""
        write.written_at = written_at(ob)
        write.seen_at = ob.observed_at if ob.observed_at is not None else ob.created_at + 1.0
        targets = [t for t in self.regions if t != write.origin and t not in write.index]
        listed = all(self._listed[(write.origin, t)] < self.cap_per_link for t in targets)
        if listed:
            write.key = image_to_json(ob.key)
            write.image = image_to_json(ob.new_image) if self.keep_images else None
        for t in targets:
            link = (write.origin, t)
            write.open.add(t)
            self._links[link][write.wid] = write
            if listed:
                self._listed[link] += 1
            else:
                self.truncated[link] += 1

    def _move_to_named(self, write: _Write, ob: Observation, out: list[Resolution]) -> None:
        """The region the writer attribute names shows the write: it is the origin after all."""
        for t in list(write.open):
            self._drop(write, t)
        write.origin, write.by_attribute, write.named = ob.region, True, None
        write.seen_at = math.nan
        had_key = write.key is not None
        self._origin_shows(write, ob)
        if had_key and write.key is None:
            write.key = image_to_json(ob.key)  # it was listed under the stand-in: keep it listed

    def _supersede(self, state: _Key, shown: _Write, region: str, out: list[Resolution]) -> None:
        """``region`` just showed ``shown``: earlier writes it replaced stop being pending.

        A write ``w`` pending on ``o -> t`` is superseded when ``t`` shows a version that
        ``o`` applied after ``w``: checked both when ``t`` shows it and when ``o`` does.
        """
        for w in state.writes:
            if w is shown or not w.open:
                continue
            o = w.origin
            if region == o and w.index.get(o, math.inf) < shown.index[region]:
                for t in [t for t in w.open if t in shown.index]:
                    self._resolve(w, t, "superseded", None, out)
            elif region in w.open and shown.index.get(o, -1) > w.index.get(o, math.inf):
                self._resolve(w, region, "superseded", None, out)

    def _resolve(
        self, write: _Write, target: str, outcome: Outcome, lag: float | None,
        out: list[Resolution],
    ) -> None:
        self._drop(write, target)
        out.append(Resolution(write.wid, write.origin, target, outcome, lag))

    def _drop(self, write: _Write, target: str) -> None:
        write.open.discard(target)
        link = (write.origin, target)
        if self._links[link].pop(write.wid, None) is not None and write.key is not None:
            self._listed[link] -= 1

    def _done(self, write: _Write) -> bool:
        """Nothing left to wait for: its origin showed it and no link has it pending.

        A write whose named origin has not shown it is kept until every region did.
        """
        if write.open or math.isnan(write.seen_at):
            return False
        if write.named is not None and len(write.index) < len(self.regions):
            return False
        self._by_id.pop(write.wid, None)
        return True

    # ---- output -------------------------------------------------------------------------

    def links(self) -> list[LinkState]:
        """Every link's figures now (pending counts only what the target's reader confirmed)."""
        out = []
        for (source, target), writes in self._links.items():
            mark = self.watermarks[target]
            unconfirmed = 0
            for w in reversed(writes.values()):  # the newest are the ones not yet confirmed
                if w.seen_at <= mark:
                    break
                unconfirmed += 1
            pending = len(writes) - unconfirmed
            oldest = None
            if pending:
                oldest = min(w.written_at for w in _first(writes.values(), pending, mark))
            out.append(LinkState(source, target, pending, oldest, unconfirmed,
                                 self._listed[(source, target)]))
        return out

    def at_risk(self, source: str) -> list[AtRiskWrite]:
        """Writes ``source`` accepted that another region's stream has not shown, oldest first."""
        seen: dict[int, _Write] = {}
        for (s, _t), writes in self._links.items():
            if s == source:
                for wid, w in writes.items():
                    seen.setdefault(wid, w)
        out = []
        for w in sorted(seen.values(), key=lambda w: (w.seen_at, w.wid)):
            missing = tuple(t for t in self.regions if t in w.open and w.seen_at <= self.watermarks[t])
            behind = tuple(t for t in self.regions if t in w.open and t not in missing)
            out.append(AtRiskWrite(w.wid, w.key, w.image, w.deleted, w.written_at, missing, behind))
        return out

    def still_open(self, wid: int) -> frozenset[str]:
        """The targets write ``wid`` is still pending on (empty once it ended everywhere)."""
        w = self._by_id.get(wid)
        return frozenset(w.open) if w is not None else frozenset()

    def tracked(self) -> int:
        """Writes held (pending, or waiting for the region their attribute names)."""
        return len(self._by_id)

    # ---- persistence ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state, kept with the reader checkpoints so a restart resumes it."""
        writes = []
        for state in self._keys.values():
            for w in state.writes:
                writes.append({
                    "id": w.wid, "kd": w.key_digest.hex(), "v": w.version.hex(),
                    "origin": w.origin, "attr": w.by_attribute, "named": w.named,
                    "written_at": _num(w.written_at), "seen_at": _num(w.seen_at),
                    "index": w.index, "visible": w.visible, "seq": w.seq, "open": sorted(w.open),
                    "key": w.key, "image": w.image, "deleted": w.deleted,
                })
        return {
            "writes": sorted(writes, key=lambda e: e["id"]),
            "next_index": {kd.hex(): s.next_index for kd, s in self._keys.items()},
            "truncated": [[s, t, n] for (s, t), n in self.truncated.items() if n],
            "next_id": self._next_id,
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        """Load a `snapshot`; entries for regions no longer watched are dropped."""
        self._next_id = max(self._next_id, int(data.get("next_id", 1)))
        for s, t, n in data.get("truncated", []):
            if (s, t) in self.truncated:
                self.truncated[(s, t)] = int(n)
        for e in data.get("writes", []):
            if e["origin"] not in self.watermarks:
                continue
            kd = bytes.fromhex(e["kd"])
            state = self._keys.setdefault(kd, _Key())
            w = _Write(
                int(e["id"]), kd, bytes.fromhex(e["v"]), e["origin"], bool(e["attr"]), e["named"],
                written_at=_num_in(e["written_at"]), seen_at=_num_in(e["seen_at"]),
                index={r: int(i) for r, i in e["index"].items()},
                visible={r: float(v) for r, v in e["visible"].items()},
                seq={r: str(s) for r, s in e["seq"].items()},
                key=e["key"], image=e["image"], deleted=bool(e["deleted"]),
            )
            state.writes.append(w)
            self._by_id[w.wid] = w
            for t in e["open"]:
                if (w.origin, t) in self._links:
                    w.open.add(t)
                    self._links[(w.origin, t)][w.wid] = w
                    if w.key is not None:
                        self._listed[(w.origin, t)] += 1
        for kd_hex, counters in data.get("next_index", {}).items():
            known = self._keys.get(bytes.fromhex(kd_hex))
            if known is not None:
                known.next_index = {r: int(i) for r, i in counters.items()}
        for writes in self._links.values():
            ordered = sorted(writes.values(), key=lambda w: (w.seen_at, w.wid))
            writes.clear()
            writes.update((w.wid, w) for w in ordered)


def _first(writes: Iterable[_Write], n: int, mark: float) -> Iterator[_Write]:
    """The first ``n`` (the confirmed ones), or all confirmed when order is not strict."""
    for i, w in enumerate(writes):
        if i >= n:
            return
        if w.seen_at <= mark:
            yield w


def _num(value: float) -> float | None:
    return None if math.isnan(value) else value


def _num_in(value: Any) -> float:
    return math.nan if value is None else float(value)
