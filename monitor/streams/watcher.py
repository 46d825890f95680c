"""The conflict watcher: stream readers in, published conflicts out.

`ConflictWatcher` is the glue the service starts and stops. For each table
with ``conflicts.enabled`` (and ``streams.enabled``) it runs a `StreamReader`
per replica region, turns each record into a detector `Observation`, passes
each region's watermark to the detector, polls it, and publishes every verdict:

- ``gtmon_lww_conflicts_total{table, winner_region, loser_region}``, once per
  lost write. Only verdicts the detector calls ``certain`` are counted; the
  others (some explanation of the same streams loses nothing) are logged and
  listed but do not move the counter, so an alert on it never fires on a guess.
  Regions the streams do not determine are labelled ``unknown``.
- one structured log event per conflict, ``event="lww_conflict"``, with the
  item key, regions, creation times and mode. Item images and the detector's
  evidence text (which quotes images) appear only when
  ``streams.log_item_images`` is true: items may hold personal data.
- a bounded list of recent conflicts, newest first, for /api/status and the page.

Verdicts about conflict probe items (their versions carry ``PROBE_MARK``, see
`monitor.probes`) go to ``probe_sink`` instead: a probe is a race gtmon staged
itself, and counting it would pollute users' alerts on real conflicts.

A record's arrival bounds (the reader's ``arrived_after`` and ``arrived_by``,
the detector's ``observed_after`` and ``observed_at``) are hard constraints for
the detector, so they must be true. The latest bound always is (the record was
there when read); the earliest only when the reader marks the record *fresh*
(the shard had been read to its end by the previous poll): a record read from a
backlog, or replayed after a restart, has none. Every record (canary items
aside) also starts or extends a *burst* on its table (``streams.burst_seconds``):
all its regions' readers poll at the floor meanwhile, so the other regions'
arrival bounds for the same write are sharp too. Restart behaviour
(settled checkpoints plus reported-verdict fingerprints) is explained in
`monitor.streams.checkpoints`.

Every reader, the detector loop and the checkpoint loop run under a
`Supervisor` (the service's, or the watcher's own): a crash is logged with its
traceback, counted, and the component restarted; the detector and the readers'
positions live on across restarts. What the readers and the detector know but
would otherwise only log reaches Prometheus too: watermark ages
(``gtmon_stream_watermark_age_seconds``) and the detector's degraded judgements
(``gtmon_detector_degraded_total``) at scrape time, records the detector cannot
use in ``gtmon_internal_errors_total{component="stream_record"}``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import random
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import structlog

from monitor.aws import AwsClients
from monitor.canary.runner import CanaryTarget, canary_targets
from monitor.clock import Clock
from monitor.config import Config, TableConfig
from monitor.conflicts import (
    UNKNOWN,
    Detector,
    DetectorSettings,
    Image,
    ImageError,
    LinkFloorTracker,
    Verdict,
    from_stream_record,
    image_to_json,
)
from monitor.metrics import DetectorReading, Metrics, StreamReading
from monitor.probes.judge import PROBE_MARK, ReaderFacts, is_probe_key, is_probe_verdict
from monitor.streams.checkpoints import (
    MAX_JUDGED_ITEM,
    CheckpointState,
    CheckpointStore,
    ReportedConflicts,
    ShardPosition,
    open_checkpoint_store,
)
from monitor.streams.pacing import TokenBucket
from monitor.streams.reader import (
    ReaderSettings,
    StreamReader,
    StreamRecord,
    describe_stream_bucket,
)
from monitor.streams.risk import WritesAtRisk
from monitor.supervisor import Supervised, Supervisor

__all__ = ["ConflictWatcher", "detector_settings_for", "verdict_fingerprint"]

# An attribute only canary items carry (monitor/canary/runner.py writes it).
CANARY_MARK = "gtmon_seq"
# Judged records kept with a checkpoint from this long before its cutoff: more than a
# record's delivery can trail its observation (one poll's answer, a busy event loop).
JUDGED_MARGIN_SECONDS = 30.0

_log = structlog.get_logger("gtmon.conflicts")

# Detector.stats keys that mean "judged on weaker evidence" -> gtmon_detector_degraded_total reason.
DEGRADED_REASONS = {
    "items_forced": "forced",
    "prefixes_forced": "prefix_forced",
    "items_truncated": "truncated",
    "items_inconsistent": "inconsistent",
    "timing_contradicted": "timing_contradicted",
    "canary_contradicted": "canary_contradicted",
    "items_partial": "partial",
    "items_buffer_full": "buffer_full",
}


def verdict_fingerprint(verdict: Verdict) -> str:
    """A stable identity of a lost write, the same when its records are read again.

    Built from what the stream records themselves carry (key, images, delete
    flags, creation times), never from observation times or inferred regions,
    which change when records are replayed after a restart.
    """
    parts = (
        verdict.table, verdict.key, verdict.lost_image, verdict.winning_image,
        verdict.lost_is_delete, verdict.winner_is_delete, verdict.lost_created_at,
        verdict.winner_created_at, verdict.candidates,
    )
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def detector_settings_for(config: Config, table: TableConfig) -> DetectorSettings:
    """The detector's settings for one watched table."""
    return DetectorSettings(
        version_attribute=table.conflicts.version_attribute,
        # Without a writer attribute of its own, a table's probe items are still
        # attributed by their mark: with three regions the streams alone cannot
        # tell a two-region race from a skip (docs/conflicts.md), and a probe is
        # there to prove the loss is found, not to measure inference. Writes
        # without the attribute are inferred as before.
        writer_attribute=table.conflicts.writer_attribute or PROBE_MARK,
        # The mark is believed on probe keys only: an application item carrying
        # it is inferred, not attributed to whatever region it names.
        writer_attribute_on=None if table.conflicts.writer_attribute else partial(
            is_probe_key, template=table.conflicts.probe_key),
        settle_seconds=config.streams.settle_seconds,
        max_buffered_bytes=int(config.streams.detector_memory_mb * 2**20),
    )


class ConflictWatcher:
    """Runs the stream readers and the conflict detector; publishes verdicts.

    Lifecycle: `start()` loads checkpoints and starts one reader task per
    (table, region) and a detector loop; `stop()` cancels them and saves the
    checkpoints. `status()` is cheap and safe to call at any time.
    """

    def __init__(
        self,
        config: Config,
        clients: AwsClients,
        metrics: Metrics,
        clock: Clock,
        *,
        store: CheckpointStore | None = None,
        reader_settings: ReaderSettings | None = None,
        detector_interval: float = 0.5,
        checkpoint_interval: float = 5.0,
        recent_limit: int = 100,
        rng: random.Random | None = None,
        supervisor: Supervisor | None = None,
        extra_tables: Sequence[TableConfig] = (),
    ) -> None:
        self.config = config
        self.clients = clients
        self.metrics = metrics
        self.clock = clock
        self.reader_settings = reader_settings or ReaderSettings.from_config(config.streams)
        self.detector_interval = detector_interval
        self.checkpoint_interval = checkpoint_interval
        self._rng = rng or random.Random()
        self.store: CheckpointStore = store or open_checkpoint_store(
            config.streams.checkpoint_path, clients, config.instance_id
        )
        self.tables: dict[str, TableConfig] = {}
        # `extra_tables`: tables watched for gtmon's own sake (the canary table, for probes).
        known = {t.name for t in config.tables}
        extra = [t for t in extra_tables if t.name not in known]
        # The canary table is rewritten every canary interval: its readers would never idle.
        # Only probe items matter there, attributed exactly, so they poll at the idle pace.
        self._idle_paced = {t.name for t in extra}
        for table in [*config.tables, *extra] if config.streams.enabled else []:
            regions = config.table_regions(table)
            if not table.conflicts.enabled:
                continue
            if len(regions) < 2:
                _log.info("conflicts_skipped", table=table.name,
                          reason="a table in one region has no conflicts")
                continue
            self.tables[table.name] = table
        # Where gtmon's own canaries are written (embedded in a table, or the canary table).
        self._canaries: dict[str, CanaryTarget] = (
            {target.table: target for target in canary_targets(config)}
            if config.canary.enabled else {}
        )
        self.detectors: dict[str, Detector] = {}
        # Fed by the canary (`observe_canary`): each link's least delay, for the detector.
        self.link_floors = LinkFloorTracker(factor=config.streams.canary_floor_factor)
        self.readers: dict[tuple[str, str], StreamReader] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=recent_limit)
        self.reported: ReportedConflicts = ReportedConflicts()
        self.conflicts_reported = 0
        # Of those, the ones gtmon_lww_conflicts_total counted (certain verdicts) and the
        # uncertain rest, which the status page lists apart and never counts.
        self.conflicts_counted = 0
        self.observe_errors = 0
        # Where verdicts about probe items go (the probe runner); never to the counter.
        self.probe_sink: Callable[[Verdict, float], None] | None = None
        # Per (table, region): records judged before the last stop, to skip when re-read.
        self._judged_unread: dict[tuple[str, str], set[str]] = {}
        self.judged_skipped = 0
        self.supervisor = supervisor or Supervisor(metrics, clock)
        self._components: list[Supervised] = []
        self._buckets: dict[str, TokenBucket] = {}
        self._checkpoint_error: str | None = None
        self._checkpoint_saved_at: float | None = None
        self._running = False
        metrics.add_stream_state(self.stream_readings, self.detector_readings)
        # Writes at risk: pending replication per link, from the same records (risk.py).
        self.risk = WritesAtRisk(
            metrics, clock.wall, self._watermarks,
            cap_per_link=config.streams.pending_keys_per_link,
            keep_images=config.streams.log_item_images,
        )

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Load checkpoints, then start a reader per table and region and the detector loop."""
        if self._running:
            return
        state = await self._load()
        self.reported = ReportedConflicts(state.reported)
        self._judged_unread = {where: set(seqs) for where, seqs in state.judged.items()}
        regions = sorted({r for t in self.tables.values() for r in self.config.table_regions(t)})
        await self.clients.start(regions)
        for name, table in self.tables.items():
            table_regions = self.config.table_regions(table)
            detector_settings = detector_settings_for(self.config, table)
            self.detectors[name] = Detector(
                {name: table_regions}, detector_settings,
                track_judged=MAX_JUDGED_ITEM,
            )
            self.risk.add_table(name, table_regions, detector_settings)
            for region in table_regions:
                positions = {
                    shard: pos for (t, r, shard), pos in state.positions.items()
                    if t == name and r == region
                }
                settings = self.reader_settings
                if name in self._idle_paced:
                    settings = dataclasses.replace(
                        settings, poll_interval_min=settings.poll_interval_max
                    )
                reader = StreamReader(
                    name, region, self.clients, self._on_record, clock=self.clock,
                    settings=settings, metrics=self.metrics,
                    describe_bucket=self._buckets.setdefault(region, describe_stream_bucket()),
                    positions=positions, rng=random.Random(self._rng.random()),
                )
                self.readers[(name, region)] = reader
        self.risk.restore(state.pending)
        self._running = True
        spawn = self.supervisor.spawn
        for (name, region), reader in self.readers.items():
            self._components.append(spawn("stream_reader", reader.run, table=name, region=region))
        self._components.append(spawn("conflict_detector", self._detector_loop))
        self._components.append(spawn("checkpoints", self._checkpoint_loop))
        _log.info(
            "conflict_watcher_started", tables=sorted(self.tables), store=self.store.describe()
        )

    async def stop(self) -> None:
        """Cancel readers and loops cleanly, then save the checkpoints one last time.

        The detector is *not* flushed: judging unsettled items now could report a
        region that is merely behind. Their records lie after the settled
        checkpoint, so the next start reads and judges them again.
        """
        if not self._running:
            return
        self._running = False
        await asyncio.gather(*(c.stop() for c in self._components), return_exceptions=True)
        self._components.clear()
        try:
            self._tick()  # publish what already settled
        except Exception as exc:  # the checkpoints are saved whatever the detector does
            self.metrics.count_internal_error("conflict_detector", exc)
            _log.exception("detector_failed_at_stop")
        await self.save_checkpoints()
        _log.info("conflict_watcher_stopped")

    # ---- records in ---------------------------------------------------------------------------

    def _on_record(self, item: StreamRecord) -> None:
        detector = self.detectors.get(item.table)
        if detector is None:
            return
        if item.replayed:
            unread = self._judged_unread.get((item.table, item.region))
            if unread is not None and item.sequence_number in unread:
                # Judged before the restart, with its item's records in the other regions,
                # which lie before their checkpoints: alone, it would be judged wrongly.
                unread.discard(item.sequence_number)
                self.judged_skipped += 1
                return
        data = item.record.get("dynamodb", {})
        if any(CANARY_MARK in (data.get(side) or {}) for side in ("NewImage", "OldImage")):
            canary = self._canaries.get(item.table)
            if canary is not None and canary.owns(data.get("Keys") or {}):
                # gtmon's own canary: one writer per key, so it cannot conflict, and
                # rewritten every interval it would sit in the detector as a never-quiet
                # item. Known by its key: an application's item that carries the mark
                # attribute too is judged like any other.
                return
        self._burst(item.table)
        try:
            # The reader's arrival bounds, only when both are known (see the reader).
            observation = from_stream_record(
                item.table,
                item.region,
                item.record,
                # The latest bound holds for every record, a backlog's too (it was there when
                # read); the earliest only when the previous poll had read everything.
                observed_at=item.arrived_by,
                observed_after=item.arrived_after if item.fresh else None,
            )
        except (KeyError, ValueError, ImageError) as exc:
            self.observe_errors += 1
            self.metrics.count_internal_error("stream_record", exc)
            _log.warning("stream_record_unusable", table=item.table, region=item.region,
                         sequence=item.sequence_number, error=str(exc))
            return
        detector.observe(observation)
        if not item.replayed:  # a replayed record's effect was saved with the checkpoint
            self.risk.observe(observation, item.fresh)

    def _watermarks(self) -> dict[tuple[str, str], float]:
        """Every reader's watermark, for those that have one."""
        marks = {}
        for key, reader in self.readers.items():
            mark = reader.watermark()
            if mark is not None:
                marks[key] = mark
        return marks

    def _burst(self, table: str) -> None:
        """A write is crossing `table`: every region's readers of it poll at the floor for a while.

        Called for every record; a reader already bursting is only extended, not woken.
        """
        seconds = self.config.streams.burst_seconds
        config = self.tables.get(table)
        if seconds <= 0 or config is None:
            return
        until = self.clock.monotonic() + seconds
        for region in self.config.table_regions(config):
            reader = self.readers.get((table, region))
            if reader is not None:
                reader.burst(until)

    def observe_canary(self, source: str, target: str, low: float, high: float) -> None:
        """A canary just arrived after ``low`` to ``high`` seconds: the link floors.

        It was written at least ``high`` seconds ago: that earliest time stands for
        when it travelled the link (the detector trusts a floor only for items whose
        records arrived before it).
        """
        self.link_floors.add(source, target, low, self.clock.wall() - high)

    # ---- verdicts out -------------------------------------------------------------------------

    async def _detector_loop(self) -> None:
        # A detector bug ends this loop only (the readers go on); its supervisor restarts it.
        while True:
            await self._tick_durably()
            await asyncio.sleep(self.detector_interval)

    async def _tick_durably(self) -> None:
        """`_tick`, with the new verdicts' fingerprints saved before they are published.

        Saved only by the checkpoint loop, a verdict published up to `checkpoint_interval`
        before a crash (kill -9, OOM) was published again after the restart: its records
        are replayed and nothing on disk said it had been reported (bench/soak.py counted
        2 duplicates in 14 losses over two kills). Saved first, only a crash in the instant
        between the save and the log line can lose one; if the save fails, the verdicts
        are published anyway (the failure is logged and on the status page).
        """
        fresh = [(verdict, fingerprint, now) for verdict, now in self._judge()
                 if (fingerprint := self._claim(verdict, now)) is not None]
        if fresh:
            await self.save_checkpoints()
        for verdict, fingerprint, now in fresh:
            self._announce(verdict, fingerprint, now)

    def _tick(self) -> None:
        """Advance watermarks, collect verdicts, publish them, update the gauge."""
        for verdict, now in self._judge():
            self._publish(verdict, now)

    def _judge(self) -> list[tuple[Verdict, float]]:
        """Advance watermarks and poll the detectors: the verdicts due, with the time."""
        for (table, region), mark in self._watermarks().items():
            self.detectors[table].advance_watermark(table, region, mark)
        self.risk.tick(self.clients.region_ok)
        now = self.clock.wall()
        floors = self.link_floors.floors(now)
        written = self.link_floors.written_at()
        due: list[tuple[Verdict, float]] = []
        for table, detector in self.detectors.items():
            detector.set_link_floors(floors, written)
            due.extend((verdict, now) for verdict in detector.poll(now))
            self.metrics.detector_tracked_keys.labels(table).set(detector.tracked_keys(table))
        return due

    def _publish(self, verdict: Verdict, now: float) -> None:
        fingerprint = self._claim(verdict, now)
        if fingerprint is not None:
            self._announce(verdict, fingerprint, now)

    def _claim(self, verdict: Verdict, now: float) -> str | None:
        """The verdict's fingerprint, recorded as reported; None when it was reported before,
        or when it is about a conflict probe's item: those go to the probe runner, never to
        the counter or the fingerprint store."""
        table = self.tables.get(verdict.table)
        if is_probe_verdict(verdict, table.conflicts.probe_key if table is not None else None):
            if self.probe_sink is not None:
                self.probe_sink(verdict, now)
            return None
        fingerprint = verdict_fingerprint(verdict)
        if not self.reported.should_report(fingerprint, now):
            _log.info("lww_conflict_already_reported", table=verdict.table,
                      key=image_to_json(verdict.key), fingerprint=fingerprint)
            return None
        return fingerprint

    def _announce(self, verdict: Verdict, fingerprint: str, now: float) -> None:
        """Count, list and log one verdict."""
        winner = verdict.winner_region or UNKNOWN
        loser = verdict.loser_region or UNKNOWN
        if verdict.certain:
            self.metrics.lww_conflicts.labels(verdict.table, winner, loser).inc()
            self.conflicts_counted += 1
        self.conflicts_reported += 1
        entry: dict[str, Any] = {
            "table": verdict.table,
            "key": image_to_json(verdict.key),
            "winner_region": winner,
            "loser_region": loser,
            "lost_created_at": verdict.lost_created_at,
            "winner_created_at": verdict.winner_created_at,
            "lost_is_delete": verdict.lost_is_delete,
            "winner_is_delete": verdict.winner_is_delete,
            "mode": verdict.mode,
            "certain": verdict.certain,
            "loser_known_by": verdict.loser_known_by,
            "winner_known_by": verdict.winner_known_by,
            "reported_at": now,
            "fingerprint": fingerprint,
        }
        if self.config.streams.log_item_images:
            entry["lost_image"] = image_to_json(verdict.lost_image)
            entry["winning_image"] = image_to_json(verdict.winning_image)
            entry["evidence"] = verdict.evidence
            if verdict.candidates:
                entry["candidates"] = [image_to_json(c) for c in verdict.candidates]
        self.recent.appendleft(entry)
        fields = {k: v for k, v in entry.items() if k not in ("table",)}
        _log.warning("lww_conflict", table=verdict.table, **fields)

    # ---- checkpoints --------------------------------------------------------------------------

    async def _load(self) -> CheckpointState:
        try:
            state = await self.store.load()
        except Exception as exc:  # CheckpointError, AWS errors: all reported
            # Monitoring goes on from the streams' start; fingerprints are gone, so
            # conflicts still in the streams may be reported a second time: say so.
            self._checkpoint_error = str(exc)
            self.metrics.checkpoint_errors.labels("load").inc()
            _log.error("checkpoint_load_failed", store=self.store.describe(), error=str(exc),
                       consequence="reading from TRIM_HORIZON; recent conflicts may be "
                       "reported again")
            return CheckpointState()
        _log.info("checkpoint_loaded", store=self.store.describe(), shards=len(state.positions),
                  fingerprints=len(state.reported))
        return state

    def checkpoint_state(self) -> CheckpointState:
        """What would be saved now: settled positions of every reader, fingerprints, and the
        records after those positions that were judged already."""
        now = self.clock.wall()
        cutoffs: dict[str, float] = {}
        for table, detector in self.detectors.items():
            held = detector.oldest_held(table)
            # A record is delivered no earlier than it was observed: strictly before the
            # oldest held record's observation, everything delivered has been judged.
            cutoffs[table] = now if held is None else min(now, held - 0.001)
        positions: dict[tuple[str, str, str], ShardPosition] = {}
        for (table, region), reader in self.readers.items():
            for shard, pos in reader.checkpoint(now, cutoffs.get(table)).items():
                positions[(table, region, shard)] = pos
        # Judged records after the cutoff (read again after a crash, to be skipped), with a
        # margin for the time between a record's observation and its delivery; and those
        # loaded at start that have not been read again yet.
        judged = {where: sorted(seqs) for where, seqs in self._judged_unread.items() if seqs}
        for table, cutoff in cutoffs.items():
            detector = self.detectors[table]
            since = cutoff - JUDGED_MARGIN_SECONDS
            for region, seqs in detector.judged_since(table, since).items():
                judged.setdefault((table, region), []).extend(seqs)
            detector.forget_judged(table, since)
        return CheckpointState(positions, self.reported.snapshot(now),
                               pending=self.risk.snapshot(), judged=judged)

    async def save_checkpoints(self) -> None:
        """Persist positions and fingerprints; a failure is reported, never raised."""
        try:
            await self.store.save(self.checkpoint_state())
        except Exception as exc:  # a full disk must not stop monitoring
            self._checkpoint_error = str(exc)
            self.metrics.checkpoint_errors.labels("save").inc()
            _log.error("checkpoint_save_failed", store=self.store.describe(), error=str(exc))
            return
        self._checkpoint_error = None
        self._checkpoint_saved_at = self.clock.wall()

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.checkpoint_interval)
            await self.save_checkpoints()

    # ---- status -------------------------------------------------------------------------------

    def stream_readings(self) -> list[StreamReading]:
        """Scrape-time watermark age of every reader."""
        now = self.clock.wall()
        return [
            StreamReading(table, region, reader.watermark_age(now))
            for (table, region), reader in self.readers.items()
        ]

    def detector_readings(self) -> list[DetectorReading]:
        """Scrape-time degradation counts of every table's detector."""
        readings = []
        for table, detector in self.detectors.items():
            stats = detector.stats
            readings.append(DetectorReading(
                table, {reason: stats.get(key, 0) for key, reason in DEGRADED_REASONS.items()},
                judged_dropped=stats["judged_dropped"],
            ))
        return readings

    def status(self) -> dict[str, Any]:
        """Per table and region: shards, lag, last error, records; recent conflicts newest first."""
        tables: dict[str, Any] = {}
        for name, table in self.tables.items():
            detector = self.detectors.get(name)
            tables[name] = {
                "mode": "exact" if (table.conflicts.version_attribute
                                    or table.conflicts.writer_attribute) else "inferred",
                "tracked_keys": detector.tracked_keys(name) if detector else 0,
                "regions": {
                    region: self.readers[(name, region)].status()
                    for region in self.config.table_regions(table)
                    if (name, region) in self.readers
                },
            }
        return {
            "running": self._running,
            "tables": tables,
            "conflicts_reported": self.conflicts_reported,
            "conflicts_counted": self.conflicts_counted,
            "conflicts_suppressed_after_restart": self.reported.suppressed,
            "judged_records_skipped_after_restart": self.judged_skipped,
            "recent_conflicts": list(self.recent),
            # What the detector may assume of each link (from the canary), and how often
            # the streams contradicted it (then arrival times alone were used).
            "link_floors_seconds": {
                f"{src}->{dst}": round(floor, 4)
                for (src, dst), floor in sorted(self.link_floors.floors(self.clock.wall()).items())
            },
            "detector_stats": {name: det.stats for name, det in self.detectors.items()},
            # Per table and link: writes the target's stream has not shown (risk.py).
            "pending_writes": self.risk.status(),
            "checkpoint": {
                "store": self.store.describe(),
                "last_saved_at": self._checkpoint_saved_at,
                "last_error": self._checkpoint_error,
            },
        }

    def holding(self, table: str, key: Image) -> str | None:
        """Why the detector holds item `key` of `table` (`Detector.holding`), if it does."""
        detector = self.detectors.get(table)
        return None if detector is None else detector.holding(table, key)

    def reader_facts(self, table: str) -> list[ReaderFacts]:
        """Per region of `table`: how far its reader has read and why it fails, if it does
        (what a missed probe is diagnosed from)."""
        facts = []
        for (name, region), reader in self.readers.items():
            if name != table:
                continue
            error = reader.last_error if reader.failing_since is not None else None
            facts.append(ReaderFacts(
                region, reader.watermark(),
                f"{error['operation']}: {error['code']}: {error['message']}" if error else None,
            ))
        return facts

    def reader(self, table: str, region: str) -> StreamReader:
        """The reader of one table and region (for tests and diagnostics)."""
        return self.readers[(table, region)]
