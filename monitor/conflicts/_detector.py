"""The detector: buffers observations per item until every region has spoken, then judges.

An item is judged ("settled") once every region's reader has read past the
item's last write by ``settle_seconds`` and all regions hold the same version.
Waiting for the slowest reader is what keeps a region that is merely behind
from looking like a conflict: its records for the item simply are not in yet.
Waiting for convergence is what keeps a paused link from hiding one: the lost
write only becomes visible when the link resumes. After judging, the item's
state is dropped, so memory is proportional to items written in the last
settle window, not to the table. Time is always passed in; nothing here reads
a clock.

An item rewritten more often than the settle window never goes quiet, so the
same two conditions are applied to a *prefix* of its history instead: a version
that every region applied (a cut, see ``_history``) whose records are all past
the settle horizon closes a piece of history that no later record can change,
because each region applies in order and has already applied the cut. That
piece is judged and dropped; the rest stays buffered with the cut as its base.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from monitor.conflicts._history import Analysis, LinkFloors, analyze
from monitor.conflicts._images import Image
from monitor.conflicts._model import DetectorSettings, Observation, Verdict


@dataclass(slots=True)
class _Item:
    key: Image
    by_region: dict[str, list[Observation]] = field(default_factory=dict)
    first_seen: float = math.inf
    last_created: float = -math.inf
    due: int | None = None
    records: int = 0
    # The horizon before which no settled prefix is looked for (bounds the rescans of a
    # hot item). Once a prefix has been judged: the image every region held at the cut
    # (what a region with no record since still holds) and the cut's position in each
    # region's stream (a redelivered record at or before it was judged already).
    next_look: float = -math.inf
    base: Image | None = None
    floors: dict[str, tuple[int, str]] | None = None
    footprint: int = 0  # estimated bytes of the records held (see `footprint`)
    # Each version's image once: a region's record overwrites the image its previous record
    # wrote, and every region shows the same versions; equal tuples share one object.
    images: dict[Image, Image] = field(default_factory=dict)


@dataclass(slots=True)
class _Table:
    regions: tuple[str, ...]
    watermarks: dict[str, float]
    items: dict[Image, _Item] = field(default_factory=dict)
    buckets: dict[int, list[Image]] = field(default_factory=dict)
    heap: list[int] = field(default_factory=list)
    waiting: dict[Image, None] = field(default_factory=dict)
    footprint: int = 0


_RECORD_BYTES = 400  # see `footprint`
_ATTRIBUTE_BYTES = 250  # per top-level attribute of a held image


def footprint(ob: Observation, attributes: int | None = None) -> int:
    """Estimated bytes a held record takes: a fixed part, a part per top-level attribute of
    its images (canonical images are tuples of tuples; `attributes`: of the images not
    already held for the item) and the item's own bytes.

    Measured with tracemalloc over 2000 records each of three item shapes, every image
    new (5 attributes of 20 bytes, 20 of 500, 2 of 10 000): 4027, 30 376 and 42 404 bytes
    per record, against 4346, 32 176 and 42 544 estimated.
    """
    if attributes is None:
        attributes = len(ob.old_image or ()) + len(ob.new_image or ())
    return _RECORD_BYTES + _ATTRIBUTE_BYTES * attributes + ob.size_bytes


def _shared(item: _Item, ob: Observation) -> tuple[Observation, int]:
    """`ob` with its key and the images already held for its item replaced by the held
    objects (one copy per item, not per record), and how many top-level attributes its
    images newly add."""
    old, added_old = _held(item.images, ob.old_image)
    new, added_new = _held(item.images, ob.new_image)
    if old is not ob.old_image or new is not ob.new_image or ob.key is not item.key:
        ob = replace(ob, key=item.key, old_image=old, new_image=new)
    return ob, added_old + added_new


def _held(images: dict[Image, Image], image: Image | None) -> tuple[Image | None, int]:
    """The held object equal to `image` (it, if new) and its attributes if it is new."""
    if image is None:
        return None, 0
    kept = images.setdefault(image, image)
    return kept, len(image) if kept is image else 0


def _seq_key(ob: Observation) -> tuple[int, str]:
    s = ob.sequence_number
    return (int(s), "") if s.isdigit() else (0, s)


class Detector:
    """Last-writer-wins conflict detector over the streams of all replicas of some tables.

    Feed it with :meth:`observe` (any order across regions, apply order within a
    region), tell it how far each region's reader has read with
    :meth:`advance_watermark`, and collect verdicts with :meth:`poll`.
    """

    def __init__(
        self,
        regions_by_table: Mapping[str, Sequence[str]],
        settings: DetectorSettings,
        *,
        track_judged: int = 0,
    ) -> None:
        self.settings = settings
        # (observed, region, sequence number) of the last `track_judged` records judged, per
        # table, until `forget_judged`: for a caller that saves them with its checkpoints.
        # A long stall holds the checkpoints back while records keep being judged; the cap
        # bounds memory then, and `judged_dropped` counts what it let go.
        self._judged_cap = track_judged
        self._judged: dict[str, deque[tuple[float, str, str]]] | None = (
            {} if track_judged > 0 else None
        )
        self._tables: dict[str, _Table] = {}
        for table, regions in regions_by_table.items():
            regs = tuple(dict.fromkeys(regions))
            if not regs:
                raise ValueError(f"table {table!r} has no regions")
            self._tables[table] = _Table(regs, {r: -math.inf for r in regs})
        self._ready: list[Verdict] = []
        self._records = 0
        self._floors: dict[tuple[str, str], tuple[float, float]] = {}
        # How often a hot item is scanned for a settled prefix: half a settle window keeps
        # the added delay below the window while each record is scanned only a few times.
        self._look_step = max(1.0, settings.settle_seconds / 2)
        self._stats: dict[str, int] = {
            "items_settled": 0,
            "items_forced": 0,
            "items_inconsistent": 0,
            "items_truncated": 0,
            "prefixes_judged": 0,
            "prefixes_forced": 0,
            "timing_contradicted": 0,
            "canary_contradicted": 0,
            "items_buffer_full": 0,
            "judged_dropped": 0,
            "items_partial": 0,
        }

    @property
    def stats(self) -> dict[str, int]:
        """Counters for logs and the bench: records seen, items judged, forced, degraded.

        ``prefixes_judged`` counts pieces of hot items judged before the item went quiet,
        ``prefixes_forced`` those of them cut by ``max_records_per_key`` before settling.
        ``items_buffer_full`` counts items judged early because the records held passed
        ``max_buffered_bytes`` (not in ``items_forced``).
        ``timing_contradicted`` counts items whose arrival times fit no history (the
        reader's bounds were wrong), ``canary_contradicted`` those that fit none with
        the link floors (a link delivered faster than the canary had measured); both
        were judged on the looser evidence instead. ``items_partial`` counts items judged
        on part of their history (regions starting from different versions, or a region's
        records missing): nothing found in them was counted. ``judged_dropped`` counts judged
        records let go over the `track_judged` cap before `forget_judged` reached them.
        """
        return {"records": self._records, **self._stats}

    # -- input ----------------------------------------------------------------------

    def set_link_floors(
        self, floors: LinkFloors, measured_after: Mapping[tuple[str, str], float] | None = None
    ) -> None:
        """The least delay, in seconds, of each directed link (source, target).

        A write cannot reach ``target`` sooner than this after ``source`` applied
        it, which rules out origins that could not have delivered a write in time.
        The canary measures them; links not given have no floor (0).
        ``measured_after[link]`` is when the newest canary behind the floor was
        written (daemon clock): a floor is used for an item only if that canary
        travelled the link after the item's records arrived, so a link that got
        faster before or while the item was written has shown it in the floor.
        """
        after = measured_after or {}
        self._floors = {
            link: (max(0.0, float(s)), after.get(link, math.inf)) for link, s in floors.items()
        }

    def _table(self, name: str) -> _Table:
        try:
            return self._tables[name]
        except KeyError:
            raise ValueError(f"unknown table {name!r}; known: {sorted(self._tables)}") from None

    def observe(self, obs: Observation) -> None:
        """Buffer one record. Records of one region must come in apply order."""
        t = self._tables.get(obs.table) or self._table(obs.table)
        region = obs.region
        if region not in t.watermarks:
            raise ValueError(f"region {region!r} is not a replica of table {obs.table!r}")
        key = obs.key
        item = t.items.get(key)
        if item is None:
            while len(t.items) >= self.settings.max_tracked_keys and self._evict(
                obs.table, t, "items_forced"
            ):
                pass
            item = t.items[key] = _Item(key)
            # An item is looked at for a settled prefix only once it has been written for
            # a while: one written twice across a second boundary just settles as a whole.
            item.next_look = obs.created_at + self._look_step
        elif item.floors is not None:
            floor = item.floors.get(region)
            if floor is not None and _seq_key(obs) <= floor:
                self._records += 1
                return  # a redelivered record of a prefix already judged
        obs, new_attributes = _shared(item, obs)
        key = item.key  # the record's own copy is not kept (the buckets below hold keys)
        recs = item.by_region.get(region)
        if recs is None:
            item.by_region[region] = [obs]
        else:
            recs.append(obs)
        item.records += 1
        self._records += 1
        seen = obs.observed_at if obs.observed_at is not None else obs.created_at
        if seen < item.first_seen:
            item.first_seen = seen
        created = obs.created_at
        if created > item.last_created:
            item.last_created = created
            due = math.floor(created)
            if due != item.due:
                if t.waiting:
                    t.waiting.pop(key, None)
                self._schedule(t, key, item, due)
        elif t.waiting and key in t.waiting:
            del t.waiting[key]  # new evidence: look again when its second is due
            self._schedule(t, key, item, math.floor(item.last_created))
        cost = footprint(obs, new_attributes)
        item.footprint += cost
        t.footprint += cost
        if item.records >= self.settings.max_records_per_key and not self._settle_prefix(
            obs.table, t, key, item, math.inf
        ):
            self._settle(obs.table, t, key, forced="items_forced")
        while t.footprint > self.settings.max_buffered_bytes and self._evict(
            obs.table, t, "items_buffer_full"
        ):
            # Over the memory budget (big items, or many): the oldest are judged now, on
            # what has been read of them.
            pass

    @staticmethod
    def _schedule(t: _Table, key: Image, item: _Item, due: int) -> None:
        item.due = due
        bucket = t.buckets.get(due)
        if bucket is None:
            bucket = t.buckets[due] = []
            heapq.heappush(t.heap, due)
        bucket.append(key)

    def _evict(self, name: str, t: _Table, reason: str) -> bool:
        """Judge the oldest items now, to make room; False when none is held.

        First those waiting for their regions to agree (a paused link: every reader is
        past them already), the longest waiting first; then the scheduled ones whose last
        write is oldest.
        """
        while t.waiting:
            key = next(iter(t.waiting))
            if key in t.items:
                self._settle(name, t, key, forced=reason)
                return True
            del t.waiting[key]
        if t.heap:
            self._force_bucket(name, t, heapq.heappop(t.heap), reason)
            return True
        return False

    def _force_bucket(self, name: str, t: _Table, due: int, reason: str) -> None:
        """Judge now every item whose last write fell in second ``due`` (memory or age bound);
        `reason` is the stats key that counts them."""
        for key in t.buckets.pop(due, []):
            item = t.items.get(key)
            if item is not None and item.due == due:
                self._settle(name, t, key, forced=reason)

    def advance_watermark(self, table: str, region: str, t: float) -> None:
        """The reader of ``region`` has read every record created up to ``t`` (never goes back)."""
        tab = self._table(table)
        if region not in tab.watermarks:
            raise ValueError(f"region {region!r} is not a replica of table {table!r}")
        if t > tab.watermarks[region]:
            tab.watermarks[region] = t

    # -- output ---------------------------------------------------------------------

    def poll(self, now: float) -> list[Verdict]:
        """Judge every item that has settled; ``now`` only bounds how long items may wait."""
        limit = self.settings.max_pending_seconds
        step = self._look_step
        for name, t in self._tables.items():
            horizon = min(t.watermarks.values()) - self.settings.settle_seconds
            while t.heap and t.heap[0] <= horizon:
                due = heapq.heappop(t.heap)
                for key in t.buckets.pop(due, []):
                    item = t.items.get(key)
                    if item is None:
                        continue
                    if item.due != due:
                        # Written again after this entry was made: the item may be hot,
                        # and this stale entry is the chance to judge what has settled of
                        # it. At most one scan a step, so a hot item costs a few per record.
                        if horizon >= item.next_look:
                            item.next_look = horizon + step
                            self._settle_prefix(name, t, key, item, horizon)
                        continue
                    if self._converged(t, item):
                        self._settle(name, t, key, forced=None)
                    else:
                        t.waiting[key] = None
            for key in list(t.waiting):
                item = t.items.get(key)
                if item is None:
                    del t.waiting[key]
                elif now - item.first_seen >= limit:
                    self._settle(name, t, key, forced="items_forced")
            # Items whose regions never pass their writes (a region down for good).
            stale = now - limit
            while t.heap and t.heap[0] <= stale:
                self._force_bucket(name, t, heapq.heappop(t.heap), "items_forced")
        out, self._ready = self._ready, []
        return out

    def flush(self) -> list[Verdict]:
        """Judge everything buffered now, settled or not (shutdown, tests)."""
        for name, t in self._tables.items():
            for key in list(t.items):
                self._settle(name, t, key, forced=None)
            t.buckets.clear()
            t.heap.clear()
            t.waiting.clear()
        out, self._ready = self._ready, []
        return out

    def oldest_held(self, table: str) -> float | None:
        """When the earliest record still held for ``table`` was observed (None: none held;
        -inf while a verdict on the table waits for the next `poll`).

        A reader's checkpoint must not pass a record the detector has not judged and
        published yet: after a crash the record would not be read again, and the item
        would be judged on the other regions' records alone (a kill -9 during a region's
        outage made the soak count writes as lost that were not). O(items held); called
        per checkpoint.
        """
        if any(verdict.table == table for verdict in self._ready):
            return -math.inf
        seen = [item.first_seen for item in self._table(table).items.values()]
        oldest = min(seen, default=math.inf)
        return None if oldest == math.inf else oldest

    def judged_since(self, table: str, since: float) -> dict[str, list[str]]:
        """Sequence numbers, per region, of the records judged (with `track_judged`) that were
        observed at or after `since`.

        After a crash a reader re-reads what lies after its settled checkpoint; records of
        items judged before the crash must not come back alone (one region's records of
        an item, the others' before the checkpoint: the detector would judge that part
        of a history, as the soak saw). The watcher saves these with the checkpoint and
        drops them when they are read again.
        """
        out: dict[str, list[str]] = {}
        for seen, region, seq in (self._judged or {}).get(table, []):
            if seen >= since:
                out.setdefault(region, []).append(seq)
        return out

    def forget_judged(self, table: str, before: float) -> None:
        """Drop judged records observed before `before` (their checkpoints have passed them)."""
        if self._judged is not None and table in self._judged:
            kept = [j for j in self._judged[table] if j[0] >= before]
            self._judged[table] = deque(kept, maxlen=self._judged_cap)

    def holding(self, table: str, key: Image) -> str | None:
        """Why item `key` is held: "regions" when every reader has read past it but its
        regions do not hold the same version yet (a paused link), "settling" while it waits
        for readers or its settle window; None once judged (or never seen)."""
        t = self._table(table)
        if key in t.waiting:
            return "regions"
        return "settling" if key in t.items else None

    def tracked_keys(self, table: str) -> int:
        """Items currently buffered for ``table`` (the gtmon_detector_tracked_keys gauge)."""
        return len(self._table(table).items)

    # -- judging --------------------------------------------------------------------

    @staticmethod
    def _converged(t: _Table, item: _Item) -> bool:
        ends = set()
        for region in t.regions:
            recs = item.by_region.get(region)
            if recs:
                ends.add(recs[-1].new_image)
            elif item.floors is not None:
                ends.add(item.base)  # nothing since the judged prefix: it still holds the cut
            else:
                return False
            if len(ends) > 1:
                return False
        return True

    def _settle_prefix(
        self, name: str, t: _Table, key: Image, item: _Item, horizon: float
    ) -> bool:
        """Judge a hot item's history up to its newest settled cut; False if it has none.

        A cut every region applied, with every region's record of it at or before
        ``horizon``, ends a piece of history that is final: each region applies in
        order and has applied the cut, so no record can still come in before it, and
        everything after it descends from it, so nothing lost before it can be saved
        later. Judging that piece alone is the segment split ``_history`` makes
        anyway; the records after the cut stay buffered and start from it. With an
        infinite horizon (too many records buffered) the newest cut is taken unsettled.
        """
        lists: list[list[Observation]] = []
        for region in t.regions:
            recs = item.by_region.get(region)
            if not recs:
                return False  # this region applied nothing since the base: no newer cut
            if len(recs) > 1:
                recs = item.by_region[region] = _in_apply_order(recs)
            lists.append(recs)
        cut = _find_cut(lists, horizon)
        if cut is None:
            return False
        forced = horizon == math.inf
        if all(i == len(recs) - 1 for i, recs in zip(cut, lists, strict=True)):
            # the cut is the item's last version
            self._settle(name, t, key, forced="items_forced" if forced else None)
            return True
        head: dict[str, list[Observation]] = {}
        floors = item.floors if item.floors is not None else {}
        first_seen = math.inf
        for region, recs, i in zip(t.regions, lists, cut, strict=True):
            head[region], tail = recs[: i + 1], recs[i + 1 :]
            item.by_region[region] = tail
            floors[region] = _seq_key(recs[i])
            for ob in tail:
                seen = ob.observed_at if ob.observed_at is not None else ob.created_at
                if seen < first_seen:
                    first_seen = seen
        item.floors = floors
        item.base = lists[0][cut[0]].new_image
        item.first_seen = first_seen
        item.records = sum(len(recs) for recs in item.by_region.values())
        # Only the images the records still held use (the judged prefix's go).
        item.images = {
            image: image
            for recs in item.by_region.values() for ob in recs
            for image in (ob.old_image, ob.new_image) if image is not None
        }
        # As `observe` counts it: each held image once.
        kept = sum(footprint(ob, 0) for recs in item.by_region.values() for ob in recs) + (
            _ATTRIBUTE_BYTES * sum(len(image) for image in item.images))
        t.footprint -= item.footprint - kept
        item.footprint = kept
        self._stats["prefixes_judged"] += 1
        if forced:
            self._stats["prefixes_forced"] += 1
        self._judge(name, key, head)
        return True

    def _settle(self, name: str, t: _Table, key: Image, forced: str | None) -> None:
        """Judge a whole item and drop it; `forced`: the stats key of why it could not wait."""
        item = t.items.pop(key)
        t.waiting.pop(key, None)
        t.footprint -= item.footprint
        self._stats["items_settled"] += 1
        if forced is not None:
            self._stats[forced] += 1
        # A region with no record here holds the judged prefix's cut, if there was one;
        # otherwise its part of the history is unknown (judged before a restart, or it has
        # not spoken in max_pending_seconds): what is found is not proof.
        unknown = () if item.floors is not None else tuple(
            r for r in t.regions if not item.by_region.get(r))
        self._judge(name, key, item.by_region, unknown)

    def _floors_for(self, by_region: Mapping[str, Sequence[Observation]]) -> LinkFloors:
        """The floors whose newest canary was written after every record here arrived."""
        if not self._floors:
            return {}
        last = max(
            (ob.observed_at if ob.observed_at is not None else ob.created_at + 1.0)
            for recs in by_region.values()
            for ob in recs
        )
        return {link: floor for link, (floor, since) in self._floors.items() if since >= last}

    def _judge(
        self, name: str, key: Image, records: Mapping[str, list[Observation]],
        unknown: Sequence[str] = (),
    ) -> None:
        if self._judged is not None:
            judged = self._judged.get(name)
            if judged is None:
                judged = self._judged[name] = deque(maxlen=self._judged_cap)
            over = len(judged) + sum(map(len, records.values())) - self._judged_cap
            if over > 0:
                self._stats["judged_dropped"] += over
            judged.extend(
                (ob.observed_at if ob.observed_at is not None else ob.created_at, region,
                 ob.sequence_number)
                for region, recs in records.items() for ob in recs
            )
        by_region = {}
        for region, recs in records.items():
            if not recs:
                continue  # a region with nothing after a judged prefix holds the cut
            by_region[region] = _in_apply_order(recs) if len(recs) > 1 else recs
        if _uniform(by_region):
            return
        result = judge(name, key, by_region, self.settings, self._floors_for(by_region), unknown)
        if result.partial:
            self._stats["items_partial"] += 1
        if result.timing_contradicted:
            self._stats["timing_contradicted"] += 1
        if result.canary_contradicted:
            self._stats["canary_contradicted"] += 1
        if result.inconsistent:
            self._stats["items_inconsistent"] += 1
        if result.truncated:
            self._stats["items_truncated"] += 1
        self._ready.extend(result.verdicts)


def _in_apply_order(recs: list[Observation]) -> list[Observation]:
    """Sorted by sequence number, redeliveries dropped (readers may hand a record twice)."""
    recs.sort(key=_seq_key)
    dedup = [recs[0]]
    for r in recs[1:]:
        if r.sequence_number != dedup[-1].sequence_number:
            dedup.append(r)
    return dedup


def _find_cut(lists: Sequence[Sequence[Observation]], horizon: float) -> list[int] | None:
    """Per region, the index of the newest cut whose records are all at or before ``horizon``.

    Versions are named as ``_history.build_chains`` names them (image and occurrence
    number, counted from the start of what is buffered), so the cut is one the
    analysis of the whole buffer would also split at. Deletes are never cuts: a
    tombstone's name rests on what follows it. When regions disagree on the order
    of their common versions the names are confused (an image written again), and
    the analysis would not split at all, so neither is a cut taken here.
    """
    positions: list[dict[tuple[Image, int], int]] = []
    for recs in lists:
        seen: dict[Image, int] = {}
        pos: dict[tuple[Image, int], int] = {}
        for i, ob in enumerate(recs):
            image = ob.new_image
            if image is not None:
                k = seen.get(image, 0)
                seen[image] = k + 1
                pos[(image, k)] = i
        positions.append(pos)
    first, rest = positions[0], positions[1:]
    common = [n for n in first if all(n in pos for pos in rest)]  # in the first region's order
    if not common:
        return None
    for pos in rest:
        last = -1
        for n in common:
            if pos[n] <= last:
                return None
            last = pos[n]
    for n in reversed(common):
        idx = [pos[n] for pos in positions]
        if all(recs[i].created_at <= horizon for recs, i in zip(lists, idx, strict=True)):
            return idx
    return None


def _uniform(by_region: Mapping[str, Sequence[Observation]]) -> bool:
    """Fast path: every region applied the same versions in the same order (no conflict)."""
    it = iter(by_region.values())
    first = next(it, None)
    if first is None:
        return True
    news = [o.new_image for o in first]
    old = first[0].old_image
    for recs in it:
        if len(recs) != len(news) or recs[0].old_image != old:
            return False
        for o, n in zip(recs, news, strict=True):
            if o.new_image != n:
                return False
    return True


def judge(
    table: str,
    key: Image,
    by_region: Mapping[str, Sequence[Observation]],
    settings: DetectorSettings,
    floors: LinkFloors | None = None,
    unknown: Sequence[str] = (),
) -> Analysis:
    """Judge one item's records directly (no buffering): for tests and offline use."""
    return analyze(table, key, by_region, settings, floors, unknown)
