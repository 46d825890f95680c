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
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from monitor.conflicts._history import Analysis, analyze
from monitor.conflicts._images import Image
from monitor.conflicts._model import DetectorSettings, Observation, Verdict


@dataclass(slots=True)
class _Item:
    by_region: dict[str, list[Observation]] = field(default_factory=dict)
    first_seen: float = math.inf
    last_created: float = -math.inf
    due: int | None = None
    records: int = 0


@dataclass(slots=True)
class _Table:
    regions: tuple[str, ...]
    watermarks: dict[str, float]
    items: dict[Image, _Item] = field(default_factory=dict)
    buckets: dict[int, list[Image]] = field(default_factory=dict)
    heap: list[int] = field(default_factory=list)
    waiting: dict[Image, None] = field(default_factory=dict)


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
        self, regions_by_table: Mapping[str, Sequence[str]], settings: DetectorSettings
    ) -> None:
        self.settings = settings
        self._tables: dict[str, _Table] = {}
        for table, regions in regions_by_table.items():
            regs = tuple(dict.fromkeys(regions))
            if not regs:
                raise ValueError(f"table {table!r} has no regions")
            self._tables[table] = _Table(regs, {r: -math.inf for r in regs})
        self._ready: list[Verdict] = []
        self._records = 0
        self._stats: dict[str, int] = {
            "items_settled": 0,
            "items_forced": 0,
            "items_inconsistent": 0,
            "items_truncated": 0,
            "prefixes_judged": 0,
        }

    @property
    def stats(self) -> dict[str, int]:
        """Counters for logs and the bench: records seen, items judged, forced, degraded."""
        return {"records": self._records, **self._stats}

    # -- input ----------------------------------------------------------------------

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
            while len(t.items) >= self.settings.max_tracked_keys and t.heap:
                self._force_bucket(obs.table, t, heapq.heappop(t.heap))
            item = t.items[key] = _Item()
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
        if item.records >= self.settings.max_records_per_key:
            self._settle_prefix(obs.table, t, key, item)

    @staticmethod
    def _schedule(t: _Table, key: Image, item: _Item, due: int) -> None:
        item.due = due
        bucket = t.buckets.get(due)
        if bucket is None:
            bucket = t.buckets[due] = []
            heapq.heappush(t.heap, due)
        bucket.append(key)

    def _force_bucket(self, name: str, t: _Table, due: int) -> None:
        """Judge now every item whose last write fell in second ``due`` (memory or age bound)."""
        for key in t.buckets.pop(due, []):
            item = t.items.get(key)
            if item is not None and item.due == due:
                self._settle(name, t, key, forced=True)

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
        for name, t in self._tables.items():
            horizon = min(t.watermarks.values()) - self.settings.settle_seconds
            while t.heap and t.heap[0] <= horizon:
                due = heapq.heappop(t.heap)
                for key in t.buckets.pop(due, []):
                    item = t.items.get(key)
                    if item is None or item.due != due:
                        continue
                    if self._converged(t, item):
                        self._settle(name, t, key, forced=False)
                    else:
                        t.waiting[key] = None
            for key in list(t.waiting):
                item = t.items.get(key)
                if item is None:
                    del t.waiting[key]
                elif now - item.first_seen >= limit:
                    self._settle(name, t, key, forced=True)
            # Items whose regions never pass their writes (a region down for good).
            stale = now - limit
            while t.heap and t.heap[0] <= stale:
                self._force_bucket(name, t, heapq.heappop(t.heap))
        out, self._ready = self._ready, []
        return out

    def flush(self) -> list[Verdict]:
        """Judge everything buffered now, settled or not (shutdown, tests)."""
        for name, t in self._tables.items():
            for key in list(t.items):
                self._settle(name, t, key, forced=False)
            t.buckets.clear()
            t.heap.clear()
            t.waiting.clear()
        out, self._ready = self._ready, []
        return out

    def tracked_keys(self, table: str) -> int:
        """Items currently buffered for ``table`` (the gtmon_detector_tracked_keys gauge)."""
        return len(self._table(table).items)

    # -- judging --------------------------------------------------------------------

    @staticmethod
    def _converged(t: _Table, item: _Item) -> bool:
        ends = set()
        for region in t.regions:
            recs = item.by_region.get(region)
            if not recs:
                return False
            ends.add(recs[-1].new_image)
            if len(ends) > 1:
                return False
        return True

    def _settle_prefix(self, name: str, t: _Table, key: Image, item: _Item) -> None:
        """A hot item: judge its history up to the last version every region holds.

        The newest version all regions applied is a cut (everything after it
        descends from it), so judging the part before it early is safe; the rest
        stays buffered. Without such a version the whole item is judged, forced.
        """
        lists = [item.by_region.get(r, []) for r in t.regions]
        common = set.intersection(*({o.new_image for o in recs} for recs in lists))
        cut = next((o.new_image for o in reversed(lists[0]) if o.new_image in common), None)
        if cut is None or not common:
            self._settle(name, t, key, forced=True)
            return
        head: dict[str, list[Observation]] = {}
        for region, recs in zip(t.regions, lists, strict=True):
            i = max(j for j, o in enumerate(recs) if o.new_image == cut)
            head[region], item.by_region[region] = recs[: i + 1], recs[i + 1 :]
        item.records = sum(len(v) for v in item.by_region.values())
        self._stats["prefixes_judged"] += 1
        self._judge(name, key, head)

    def _settle(self, name: str, t: _Table, key: Image, forced: bool) -> None:
        item = t.items.pop(key)
        t.waiting.pop(key, None)
        self._stats["items_settled"] += 1
        if forced:
            self._stats["items_forced"] += 1
        self._judge(name, key, item.by_region)

    def _judge(self, name: str, key: Image, records: Mapping[str, list[Observation]]) -> None:
        by_region = {}
        for region, recs in records.items():
            if len(recs) > 1:
                recs.sort(key=_seq_key)
                dedup = [recs[0]]
                for r in recs[1:]:
                    if r.sequence_number != dedup[-1].sequence_number:
                        dedup.append(r)
                recs = dedup
            by_region[region] = recs
        if _uniform(by_region):
            return
        result = judge(name, key, by_region, self.settings)
        if result.inconsistent:
            self._stats["items_inconsistent"] += 1
        if result.truncated:
            self._stats["items_truncated"] += 1
        self._ready.extend(result.verdicts)


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
) -> Analysis:
    """Judge one item's records directly (no buffering): for tests and offline use."""
    return analyze(table, key, by_region, settings)
