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
region the writer attribute names, once that region's stream shows the write
(until then it is pending nowhere; if that region's reader reads past the
moment another region showed the write without showing it, the attribute was
copied along by an update, and the first region is the origin). Without the
attribute: the first region whose stream showed it (inferred), moved to
another region whose arrival bounds show it certainly had the write earlier.
With links faster than a polling interval the first region is often wrong
(bench/pending.py measures it): configure the writer attribute.

Readers that are behind: a write is *confirmed* pending on a link only once
the target's reader watermark has passed the write's time (its creation
second, narrowed by the source reader's arrival bound: within half a second):
the target's reader then had its chance to show it and did not. Writes the
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

from monitor.conflicts import DetectorSettings, Image, Observation, image_from_json, image_to_json

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


def _restored(data: Mapping[str, Any] | None) -> Image | None:
    return None if data is None else image_from_json(data)


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


@dataclass(slots=True)
class _Write:
    wid: int
    key_digest: bytes
    version: bytes
    origin: str  # the region it is pending from (or, while ``named`` is set, the first to show it)
    by_attribute: bool  # origin named by the writer attribute, and that region showed it
    named: str | None  # the region the writer attribute names, while it has not shown it
    started: bool = False  # pending from ``origin`` (its stream showed it, and it is the origin)
    written_at: float = math.nan
    timed: bool = False  # the origin's record was read fresh: its arrival is bounded
    index: dict[str, int] = field(default_factory=dict)  # position in each region's chain
    # Per region that showed it: visibility bounds (lo, hi), creation second, read fresh.
    marks: dict[str, tuple[float, float, float, bool]] = field(default_factory=dict)
    seq: dict[str, str] = field(default_factory=dict)
    open: set[str] = field(default_factory=set)  # targets it is pending on
    # Canonical, the objects the stream's record came with (the detector holds the same
    # ones): DynamoDB JSON copies cost ~0.5-1.5 KB per write held through a long stall.
    key: Image | None = None  # dropped beyond the cap
    image: Image | None = None  # only when asked for, and within the cap
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
    seen_at: float  # when gtmon's reader of the origin first returned it (daemon clock)
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
        self._awaiting: dict[int, _Write] = {}  # writes whose named origin has not shown them
        self._next_id = 1

    # ---- input --------------------------------------------------------------------------

    def advance_watermark(self, region: str, t: float) -> None:
        """The region's reader has read everything visible in its stream before ``t``.

        A write whose writer attribute names this region, and that this region's stream
        has not shown although its reader has now read past the time another region
        showed it, was not written there (an attribute copied along by an update): it is
        pending from the region that showed it first.
        """
        if t <= self.watermarks.get(region, math.inf):
            return
        self.watermarks[region] = t
        for write in [w for w in self._awaiting.values() if w.named == region]:
            self._named_passed(write, [])

    def _named_passed(self, write: _Write, out: list[Resolution]) -> None:
        """Start ``write`` from the region that showed it first if its named origin's reader
        has read past that moment without showing it."""
        assert write.named is not None
        if write.marks[write.origin][1] <= self.watermarks[write.named]:
            del self._awaiting[write.wid]
            write.named = None
            state = self._keys[write.key_digest]
            self._start(state, write, write.origin, out)
            if self._done(write):  # every target already showed a newer version
                state.writes.remove(write)
                if not state.writes:
                    del self._keys[write.key_digest]

    def observe(self, ob: Observation, fresh: bool = True) -> list[Resolution]:
        """One record, in apply order per region; what stopped being pending because of it.

        ``fresh`` False (a record read from a backlog) keeps its delivery out of the lag
        figures: its arrival is not timed.
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
        new = write is None
        if write is None:
            write = self._new_write(ob, kd, version, deleted)
            state.writes.append(write)
        index = state.next_index.get(region, 0)
        state.next_index[region] = index + 1
        write.index[region] = index
        lo, hi = visibility(ob)
        write.marks[region] = (lo, hi, ob.created_at, fresh)
        write.seq[region] = ob.sequence_number
        if new and write.named is None:
            self._start(state, write, region, out)
        elif new:
            self._named_passed(write, out)
        elif write.named == region:  # the named origin shows it: pending from there
            del self._awaiting[write.wid]
            write.named, write.by_attribute = None, True
            self._start(state, write, region, out)
        elif write.started and not write.by_attribute and hi < write.marks[write.origin][0]:
            # Certainly visible here before the region taken for its origin: this is it.
            for t in list(write.open):
                self._drop(write, t)
            self._start(state, write, region, out)
        elif region in write.open:
            origin = write.marks[write.origin]
            lag = None
            if fresh and origin[3]:
                lag = max(0.0, (lo + hi) / 2 - (origin[0] + origin[1]) / 2)
            self._resolve(write, region, "delivered", lag, out)
        self._supersede(state, write, region, out)
        state.writes = [w for w in state.writes if not self._done(w)]
        if not state.writes:
            self._keys.pop(kd, None)
        return out

    def _new_write(self, ob: Observation, kd: bytes, version: bytes, deleted: bool) -> _Write:
        claimed = None if deleted else self.settings.writer_region(ob.new_image, ob.key)
        # Nothing to wait for when the attribute names this region, or no region of the table.
        named = claimed if claimed in self.watermarks and claimed != ob.region else None
        write = _Write(
            self._next_id, kd, version, origin=ob.region, by_attribute=claimed == ob.region,
            named=named, deleted=deleted, key=ob.key,
            image=ob.new_image if self.keep_images else None,
        )
        self._next_id += 1
        self._by_id[write.wid] = write
        if named is not None:
            self._awaiting[write.wid] = write
        return write

    def _start(self, state: _Key, write: _Write, origin: str, out: list[Resolution]) -> None:
        """``origin``'s stream showed its own write: pending on every link it has not crossed."""
        _lo, hi, created, fresh = write.marks[origin]
        write.origin, write.started, write.timed = origin, True, fresh
        write.written_at = (created + max(created, min(created + 1.0, hi))) / 2
        targets = [t for t in self.regions if t != origin and t not in write.index]
        listed = write.key is not None and all(
            self._listed[(origin, t)] < self.cap_per_link for t in targets
        )
        if not listed:
            write.key = write.image = None
        for t in targets:
            link = (origin, t)
            write.open.add(t)
            self._links[link][write.wid] = write
            if listed:
                self._listed[link] += 1
            else:
                self.truncated[link] += 1
        # A target may already show a version the origin applied after this one.
        mine = write.index[origin]
        for t in targets:
            if any(w.index.get(origin, -1) > mine and t in w.index for w in state.writes):
                self._resolve(write, t, "superseded", None, out)

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
        """Nothing left to wait for: pending from its origin, and on no link any more."""
        if write.open or not write.started:
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
                if w.written_at <= mark:
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
        for w in sorted(seen.values(), key=lambda w: (w.written_at, w.wid)):
            missing = tuple(t for t in self.regions if t in w.open and w.written_at <= self.watermarks[t])
            behind = tuple(t for t in self.regions if t in w.open and t not in missing)
            out.append(AtRiskWrite(w.wid, image_to_json(w.key), image_to_json(w.image),
                                   w.deleted, w.written_at,
                                   w.marks[w.origin][1], missing, behind))
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
                    "started": w.started, "written_at": _num(w.written_at),
                    "timed": w.timed, "index": w.index,
                    "marks": {r: list(m) for r, m in w.marks.items()}, "seq": w.seq,
                    "open": sorted(w.open), "key": image_to_json(w.key),
                    "image": image_to_json(w.image), "deleted": w.deleted,
                })
        return {
            "writes": sorted(writes, key=lambda e: e["id"]),
            "next_index": {kd.hex(): s.next_index for kd, s in self._keys.items()},
            "truncated": [[s, t, n] for (s, t), n in self.truncated.items() if n],
            "next_id": self._next_id,
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        """Load a `snapshot` into an empty tracker; regions no longer watched are dropped."""
        self._next_id = max(self._next_id, int(data.get("next_id", 1)))
        for s, t, n in data.get("truncated", []):
            if (s, t) in self.truncated:
                self.truncated[(s, t)] = int(n)
        for e in data.get("writes", []):
            if e["origin"] not in self.watermarks:
                continue
            kd = bytes.fromhex(e["kd"])
            state = self._keys.setdefault(kd, _Key())
            marks = {r: (float(m[0]), float(m[1]), float(m[2]), bool(m[3]))
                     for r, m in e["marks"].items() if r in self.watermarks}
            w = _Write(
                int(e["id"]), kd, bytes.fromhex(e["v"]), e["origin"], bool(e["attr"]),
                e["named"] if e["named"] in self.watermarks else None,
                started=bool(e["started"]), written_at=_num_in(e["written_at"]),
                timed=bool(e["timed"]),
                index={r: int(i) for r, i in e["index"].items() if r in self.watermarks},
                marks=marks, seq={r: str(q) for r, q in e["seq"].items()},
                key=_restored(e["key"]), image=_restored(e["image"]),
                deleted=bool(e["deleted"]),
            )
            state.writes.append(w)
            self._by_id[w.wid] = w
            if w.named is not None and not w.started:
                self._awaiting[w.wid] = w
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
            ordered = sorted(writes.values(), key=lambda w: (w.written_at, w.wid))
            writes.clear()
            writes.update((w.wid, w) for w in ordered)


def _first(writes: Iterable[_Write], n: int, mark: float) -> Iterator[_Write]:
    """The first ``n`` (the confirmed ones), or all confirmed when order is not strict."""
    for i, w in enumerate(writes):
        if i >= n:
            return
        if w.written_at <= mark:
            yield w


def _num(value: float) -> float | None:
    return None if math.isnan(value) else value


def _num_in(value: Any) -> float:
    return math.nan if value is None else float(value)
