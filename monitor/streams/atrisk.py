"""Region-loss reports: which acknowledged writes a region that went down had not passed on.

When a region turns DOWN (``gtmon_region_up`` 0), its pending writes
(`PendingTracker.at_risk`) are frozen into an *incident*: each write with its
key, write time and the regions still missing it, as of the last successful
read. From then on every way a write stops being pending is recorded against
it, so when the region returns each listed write reads ``delivered`` (the other
region's stream showed it), ``superseded`` (a newer write replaced it before it
arrived: lost to it, when the detector reports that newer write's conflict) or
``missing`` (not yet either). A pure core: times are passed in; the watcher logs
and persists it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from monitor.streams.pending import AtRiskWrite, Resolution

__all__ = ["Incident", "RegionLossReports"]

MISSING = "missing"


@dataclass(eq=False)
class Incident:
    """One region's writes at risk from the moment it went down."""

    table: str
    region: str
    down_at: float
    returned_at: float | None = None
    # write id -> {"key", "image", "deleted", "written_at", "first_seen_at",
    #              "outcomes": {target: outcome}}
    writes: dict[int, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        totals: dict[str, int] = {}
        for w in self.writes.values():
            for outcome in w["outcomes"].values():
                totals[outcome] = totals.get(outcome, 0) + 1
        return {
            "table": self.table,
            "region": self.region,
            "down_at": self.down_at,
            "returned_at": self.returned_at,
            "writes": len(self.writes),
            "unlisted": sum(1 for w in self.writes.values() if w["key"] is None),
            "outcomes": totals,
            "list": [{"id": wid, **w} for wid, w in self.writes.items() if w["key"] is not None],
        }


class RegionLossReports:
    """The recent incidents of every (table, region), newest last; ``keep`` of each."""

    def __init__(self, keep: int = 5) -> None:
        self.keep = keep
        self._incidents: dict[tuple[str, str], deque[Incident]] = {}
        # (table, write id) -> the incidents that list it with an outcome still missing
        self._open: dict[tuple[str, int], list[Incident]] = {}

    def region_down(
        self, table: str, region: str, now: float, writes: Iterable[AtRiskWrite]
    ) -> Incident:
        """Freeze the writes ``region`` had not passed on; returns the new incident."""
        incident = Incident(table, region, now)
        for w in writes:
            targets = (*w.missing_in, *w.unconfirmed_in)
            incident.writes[w.wid] = {
                "key": w.key, "image": w.image, "deleted": w.deleted,
                "written_at": w.written_at, "first_seen_at": w.seen_at,
                "outcomes": dict.fromkeys(targets, MISSING),
            }
            self._open.setdefault((table, w.wid), []).append(incident)
        history = self._incidents.setdefault((table, region), deque(maxlen=self.keep))
        if len(history) == history.maxlen:
            self._forget(history[0])
        history.append(incident)
        return incident

    def region_up(self, region: str, now: float) -> None:
        for (_table, r), history in self._incidents.items():
            if r == region and history and history[-1].returned_at is None:
                history[-1].returned_at = now

    def is_open(self, table: str, region: str) -> bool:
        """The region went down and has not returned since (no new incident meanwhile)."""
        history = self._incidents.get((table, region))
        return bool(history) and history[-1].returned_at is None  # type: ignore[index]

    def any_open(self, region: str) -> bool:
        """Some table's latest incident of ``region`` has no return yet."""
        return any(self.is_open(t, r) for (t, r) in self._incidents if r == region)

    def resolved(self, table: str, resolution: Resolution) -> None:
        """A write stopped being pending on one link: record how, if an incident lists it."""
        listing = self._open.get((table, resolution.wid), [])
        for incident in list(listing):
            outcomes = incident.writes[resolution.wid]["outcomes"]
            if outcomes.get(resolution.target) == MISSING:
                outcomes[resolution.target] = resolution.outcome
            if MISSING not in outcomes.values():
                listing.remove(incident)
        if not listing:
            self._open.pop((table, resolution.wid), None)

    def incidents(self, table: str | None = None, region: str | None = None) -> list[Incident]:
        return [
            i for (t, r), history in sorted(self._incidents.items()) for i in history
            if (table is None or t == table) and (region is None or r == region)
        ]

    def _forget(self, incident: Incident) -> None:
        for wid in incident.writes:
            listing = self._open.get((incident.table, wid), [])
            if incident in listing:
                listing.remove(incident)
            if not listing:
                self._open.pop((incident.table, wid), None)

    # ---- persistence ----------------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        return [
            {"table": i.table, "region": i.region, "down_at": i.down_at,
             "returned_at": i.returned_at,
             "writes": [{"id": wid, **w} for wid, w in i.writes.items()]}
            for i in self.incidents()
        ]

    def restore(self, data: Iterable[Mapping[str, Any]]) -> None:
        """Replace the incidents with a `snapshot`'s."""
        self._incidents.clear()
        self._open.clear()
        for entry in data:
            incident = Incident(str(entry["table"]), str(entry["region"]),
                                float(entry["down_at"]), entry.get("returned_at"))
            for w in entry.get("writes", []):
                wid = int(w["id"])
                incident.writes[wid] = {k: v for k, v in w.items() if k != "id"}
                if MISSING in w["outcomes"].values():
                    self._open.setdefault((incident.table, wid), []).append(incident)
            history = self._incidents.setdefault(
                (incident.table, incident.region), deque(maxlen=self.keep)
            )
            history.append(incident)
