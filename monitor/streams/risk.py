"""Writes at risk in the daemon: the pending-writes trackers and region-loss reports, wired.

The conflict watcher owns one `WritesAtRisk` and calls it from the places it
already has: every record the detector gets (`observe`), every detector tick
(`tick`: watermarks, and regions turning DOWN or coming back), the checkpoints
(`snapshot`, `restore`) and the status (`status`, `at_risk`). Here the pure
cores (`monitor.streams.pending`, `monitor.streams.atrisk`) meet the metrics
and the log:

- ``gtmon_replication_pending_writes`` / ``..._pending_oldest_seconds`` /
  ``..._pending_truncated_total`` at scrape time, and one
  ``gtmon_stream_replication_lag_seconds`` sample per timed delivery;
- when a region turns DOWN (``gtmon_region_up`` 0), one ``write_at_risk``
  warning per write it had not passed on (key; the image only with
  ``streams.log_item_images``), one ``writes_at_risk`` summary with the count
  (writes beyond the key cap included), and an incident whose outcomes fill in
  as the streams show them (`/api/at-risk`); ``region_returned`` with the
  outcomes so far when it answers again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog

from monitor.conflicts import DetectorSettings, Observation
from monitor.metrics import Metrics, PendingReading
from monitor.streams.atrisk import RegionLossReports
from monitor.streams.pending import PendingTracker

__all__ = ["WritesAtRisk"]

_log = structlog.get_logger("gtmon.pending")


class WritesAtRisk:
    """Pending writes of every watched table, and the reports of regions that went down."""

    def __init__(
        self,
        metrics: Metrics,
        wall: Callable[[], float],
        watermarks: Callable[[], Mapping[tuple[str, str], float]],
        *,
        cap_per_link: int,
        keep_images: bool,
    ) -> None:
        self.metrics = metrics
        self.wall = wall
        # The readers' watermarks now: figures read between two detector ticks are as
        # current as the records the trackers have already been given.
        self.watermarks = watermarks
        self.cap_per_link = cap_per_link
        self.keep_images = keep_images
        self.trackers: dict[str, PendingTracker] = {}
        self.reports = RegionLossReports()
        self._up: dict[str, bool] = {}
        metrics.add_pending_state(self.readings)

    def add_table(self, table: str, regions: list[str], settings: DetectorSettings) -> None:
        """Track a table, attributing origins with the detector's own settings."""
        self.trackers[table] = PendingTracker(
            table, regions, settings, cap_per_link=self.cap_per_link, keep_images=self.keep_images
        )

    def observe(self, ob: Observation, fresh: bool) -> None:
        """One record (never a replayed one: its effect was saved with the checkpoint)."""
        tracker = self.trackers.get(ob.table)
        if tracker is None:
            return
        for ended in tracker.observe(ob, fresh):
            if ended.outcome == "delivered" and ended.lag is not None:
                self.metrics.stream_replication_lag.labels(
                    ob.table, ended.source, ended.target
                ).observe(ended.lag)
            self.reports.resolved(ob.table, ended)

    def refresh(self) -> None:
        """Pass the readers' watermarks on to the trackers."""
        for (table, region), mark in self.watermarks().items():
            tracker = self.trackers.get(table)
            if tracker is not None:
                tracker.advance_watermark(region, mark)

    def tick(self, region_ok: Mapping[str, bool]) -> None:
        """Advance the trackers' watermarks; report regions that went down or came back."""
        self.refresh()
        now = self.wall()
        regions = {r for t in self.trackers.values() for r in t.regions}
        for region in sorted(regions):
            if region not in region_ok:
                continue  # not called yet: nothing known
            up = region_ok[region]
            # After a restart, a region an incident left down counts as down until it answers.
            was = self._up.get(region, not self.reports.any_open(region))
            self._up[region] = up
            if was and not up:
                self._region_down(region, now)
            elif up and not was:
                self._region_returned(region, now)

    def _region_down(self, region: str, now: float) -> None:
        for table, tracker in self.trackers.items():
            if region not in tracker.regions or self.reports.is_open(table, region):
                continue
            writes = tracker.at_risk(region)
            incident = self.reports.region_down(table, region, now, writes)
            for w in writes:
                if w.key is None:
                    continue
                fields: dict[str, Any] = {
                    "key": w.key, "written_at": w.written_at, "first_seen_at": w.seen_at,
                    "deleted": w.deleted,
                    "missing_in": list(w.missing_in),
                    "unconfirmed_in": list(w.unconfirmed_in),
                }
                if w.image is not None:
                    fields["image"] = w.image
                _log.warning("write_at_risk", table=table, region=region, **fields)
            _log.warning(
                "writes_at_risk", table=table, region=region, writes=len(incident.writes),
                unlisted=sum(1 for w in writes if w.key is None),
                meaning=f"accepted in {region} and not shown by the others' streams as of the "
                "last successful read; listed in /api/at-risk",
            )

    def _region_returned(self, region: str, now: float) -> None:
        self.reports.region_up(region, now)
        for incident in self.reports.incidents(region=region):
            if incident.returned_at == now:
                _log.info("region_returned", table=incident.table, region=region,
                          down_seconds=round(now - incident.down_at, 3),
                          outcomes=incident.to_json()["outcomes"])

    # ---- out ----------------------------------------------------------------------------

    def readings(self) -> list[PendingReading]:
        self.refresh()
        now = self.wall()
        out = []
        for table, tracker in self.trackers.items():
            for link in tracker.links():
                oldest = 0.0 if link.oldest_written_at is None else max(
                    0.0, now - link.oldest_written_at
                )
                out.append(PendingReading(
                    table, link.source, link.target, link.pending, oldest,
                    tracker.truncated[(link.source, link.target)],
                ))
        return out

    def status(self) -> dict[str, Any]:
        """For /api/status: per table and link, pending (confirmed and not) and the oldest age."""
        self.refresh()
        now = self.wall()
        return {
            table: {
                f"{link.source}->{link.target}": {
                    "pending": link.pending,
                    "unconfirmed": link.unconfirmed,
                    "oldest_seconds": None if link.oldest_written_at is None
                    else round(max(0.0, now - link.oldest_written_at), 3),
                    "listed": link.listed,
                    "truncated_total": tracker.truncated[(link.source, link.target)],
                }
                for link in tracker.links()
            }
            for table, tracker in self.trackers.items()
        }

    def at_risk(self, region: str, table: str | None = None) -> dict[str, Any]:
        """What `region` accepted that others have not shown, now and in its last incidents."""
        self.refresh()
        tables = [t for t in self.trackers if table is None or t == table]
        now_lists = {}
        for name in tables:
            tracker = self.trackers[name]
            if region not in tracker.regions:
                continue
            writes = tracker.at_risk(region)
            now_lists[name] = {
                "writes": len(writes),
                "unlisted": sum(1 for w in writes if w.key is None),
                "list": [
                    {"id": w.wid, "key": w.key, "written_at": w.written_at,
                     "first_seen_at": w.seen_at, "deleted": w.deleted, "missing_in": list(w.missing_in),
                     "unconfirmed_in": list(w.unconfirmed_in),
                     **({"image": w.image} if w.image is not None else {})}
                    for w in writes if w.key is not None
                ],
            }
        return {
            "region": region,
            "region_up": self._up.get(region, True),
            "as_of": self.wall(),
            "now": now_lists,
            "incidents": [
                i.to_json() for name in tables
                for i in self.reports.incidents(table=name, region=region)
            ],
        }

    # ---- persistence ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Pending writes and incidents as JSON, saved with the reader positions."""
        return {
            "tables": {name: t.snapshot() for name, t in self.trackers.items()},
            "incidents": self.reports.snapshot(),
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        """Load a `snapshot` saved with the checkpoints (after `add_table`, before reading)."""
        for name, snap in dict(data.get("tables", {})).items():
            tracker = self.trackers.get(name)
            if tracker is not None:
                tracker.restore(snap)
        self.reports.restore(data.get("incidents", []))
