"""Every metric gtmon exports, in one place: this module is the contract.

Dashboards, alert rules and docs/metrics.md are written against these names
(docs are generated from `METRIC_DOCS`, and a test fails when they drift).
All metrics are built on a registry passed in, so tests use a fresh
`CollectorRegistry` each and read values with `get_sample_value`.
Nothing here imports the rest of gtmon.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "LAG_BUCKETS",
    "METRIC_DOCS",
    "DetectorReading",
    "Metrics",
    "PairReading",
    "PendingReading",
    "PendingStateCollector",
    "ReplicationStateCollector",
    "StreamReading",
    "StreamStateCollector",
]

# Replication lag spans milliseconds (same continent, healthy) to minutes (a stall
# that resolved); AWS's own alarm advice sits at 180 s.
LAG_BUCKETS = (
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
AWS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A probe's verdict waits at least the settle window (10 s by default) plus reader polls.
PROBE_BUCKETS = (1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 300.0, 600.0)
# A kept schedule is a few milliseconds late; past half an interval it is not kept.
SCHEDULE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

PAIR = ("table", "source_region", "target_region")

# name -> (type, labels, help). The single source for help texts and docs/metrics.md.
METRIC_DOCS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "gtmon_replication_lag_seconds": (
        "histogram",
        PAIR,
        "Canary propagation delay from source to target region.",
    ),
    "gtmon_replication_lag_last_seconds": (
        "gauge",
        PAIR,
        "Last measured canary propagation delay.",
    ),
    "gtmon_replication_lag_error_seconds": (
        "gauge",
        PAIR,
        "Half-width of the error bound of the last measured delay.",
    ),
    "gtmon_replication_oldest_pending_seconds": (
        "gauge",
        PAIR,
        "Age of the oldest canary not yet seen at the target (0 when none); rises during a stall.",
    ),
    "gtmon_replication_heartbeat_age_seconds": (
        "gauge",
        PAIR,
        "Now minus the write time of the newest canary seen at the target.",
    ),
    "gtmon_canary_operations_total": (
        "counter",
        ("table", "region", "operation", "result"),
        "Canary writes and reads, by result (ok or error).",
    ),
    "gtmon_canary_lost_total": (
        "counter",
        PAIR,
        "Canaries given up on: not seen at the target within canary.timeout_seconds, so their "
        "lag is never measured; gtmon_replication_oldest_pending_seconds counts from the oldest "
        "of them until a read shows it.",
    ),
    "gtmon_region_up": (
        "gauge",
        ("region",),
        "1 when the last calls to the region succeeded, else 0.",
    ),
    "gtmon_aws_request_duration_seconds": (
        "histogram",
        ("region", "operation"),
        "Latency of AWS API calls.",
    ),
    "gtmon_aws_request_errors_total": (
        "counter",
        ("region", "operation", "code"),
        "AWS API errors by error code.",
    ),
    "gtmon_lww_conflicts_total": (
        "counter",
        ("table", "winner_region", "loser_region"),
        "Writes lost to last-writer-wins conflict resolution.",
    ),
    "gtmon_stream_records_total": (
        "counter",
        ("table", "region", "event"),
        "Stream records processed.",
    ),
    "gtmon_stream_lag_seconds": (
        "gauge",
        ("table", "region"),
        "How far the stream reader is behind the newest record.",
    ),
    "gtmon_stream_shards": (
        "gauge",
        ("table", "region", "state"),
        "Shards being read, open or closed.",
    ),
    "gtmon_detector_tracked_keys": ("gauge", ("table",), "Items held by the conflict detector."),
    "gtmon_build_info": ("gauge", ("version",), "Always 1; the version label says which build."),
    "gtmon_web_connections_refused_total": (
        "counter",
        ("reason",),
        "Connections to the HTTP endpoints closed without an answer, by reason: max_connections "
        "and max_connections_per_client (metrics.max_connections*), tls_handshake_timeout (no "
        "complete TLS handshake within 10 s), tls_handshake_failed.",
    ),
    "gtmon_web_auth_failures_total": (
        "counter",
        ("reason",),
        "Requests refused by basic auth, by reason: missing, malformed, invalid (wrong user or "
        "password), rate_limited (too many failures from one client: 429), busy (password "
        "checks queued: 429).",
    ),
    "gtmon_component_up": (
        "gauge",
        ("component", "table", "region"),
        "1 while a supervised component runs, 0 while it waits to be restarted after a crash.",
    ),
    "gtmon_component_restarts_total": (
        "counter",
        ("component", "table", "region"),
        "Restarts of a supervised component after a crash (each crash is logged with its traceback).",
    ),
    "gtmon_stream_watermark_age_seconds": (
        "gauge",
        ("table", "region"),
        "Now minus the reader's watermark (everything in the stream up to it has been read); "
        "since the reader started while it has none. Rises while a reader is stuck, alive or not.",
    ),
    "gtmon_internal_errors_total": (
        "counter",
        ("component", "type"),
        "Bugs and unexpected answers (a body of the wrong shape, a record the detector cannot "
        "use), by exception type; never a region outage, never counted in gtmon_region_up.",
    ),
    "gtmon_stream_gaps_total": (
        "counter",
        ("table", "region"),
        "Times a stream reader lost records before reading them (past the 24 h retention, or the "
        "shard was gone); how many records each gap held is unknown, and conflicts in them are "
        "never seen.",
    ),
    "gtmon_detector_degraded_total": (
        "counter",
        ("table", "reason"),
        "Items the conflict detector judged on weaker evidence, by reason: forced (judged before "
        "every region's reader had passed it: a reader far behind, or too much held), "
        "prefix_forced (part of a hot item, cut for memory), truncated (the search was cut "
        "short), inconsistent (the streams fit no replication history), timing_contradicted "
        "(arrival times fit no history; judged without them), canary_contradicted (a link was "
        "faster than its canary floor; judged without floors), partial (judged on part of its "
        "history: the regions' streams start from different versions or a region's records are "
        "missing, after a restart or a forced judgement; what it finds is logged, never counted), "
        "buffer_full (judged early: the records held passed streams.detector_memory_mb).",
    ),
    "gtmon_checkpoint_errors_total": (
        "counter",
        ("operation",),
        "Failed loads and saves of the stream checkpoints (`streams.checkpoint_path` or the "
        "DynamoDB store; saved every few seconds). While saves fail, a restart reads the "
        "streams again from the last saved positions and may count conflicts reported since a "
        "second time.",
    ),
    "gtmon_checkpoint_judged_dropped_total": (
        "counter",
        ("table",),
        "Judged stream records left out of the checkpoints (the last 12,000 per table are listed "
        "while an unjudged item holds the checkpoints back, as in a long link pause): "
        "after a crash these records are read again without the rest of their item's history; "
        "the detector does not count a write its writer attribute shows it cannot judge, but "
        "on tables without attributes such a partial history may be judged.",
    ),
    "gtmon_stream_images_missing": (
        "gauge",
        ("table", "region"),
        "1 while the replica's stream does not carry both images (its StreamViewType is not "
        "NEW_AND_OLD_IMAGES): conflict detection needs each write's old and new image, so lost "
        "writes in this table go unseen; 0 when it does.",
    ),
    # ---- writes at risk (pending replication of real traffic, from the streams) ----
    "gtmon_replication_pending_writes": (
        "gauge",
        PAIR,
        "Real writes the source's stream showed as its own that the target's stream has not "
        "shown (nor a newer version the source applied after them), counted once the target's "
        "reader has read past the time the source's reader saw them: a reader that is behind "
        "adds nothing here.",
    ),
    "gtmon_replication_pending_oldest_seconds": (
        "gauge",
        PAIR,
        "Now minus the write time of the oldest write counted in "
        "gtmon_replication_pending_writes (0 when none): the link's RPO exposure. Write times "
        "are the record's creation second narrowed by its arrival, within 0.5 s.",
    ),
    "gtmon_stream_replication_lag_seconds": (
        "histogram",
        PAIR,
        "Real-traffic propagation from source to target as the streams show it: when the "
        "target's record became visible minus when the source's did. Resolution: each end is "
        "known within the reader's polling interval (streams.poll_interval_min_seconds while "
        "a write crosses the table); records read from a backlog are not timed.",
    ),
    "gtmon_replication_pending_truncated_total": (
        "counter",
        PAIR,
        "Pending writes kept without their key because the link already listed "
        "streams.pending_keys_per_link writes: still counted exactly, missing from /api/at-risk "
        "key lists and write_at_risk events.",
    ),
    # ---- conflict probes (issue 13) ----
    "gtmon_conflict_probes_total": (
        "counter",
        ("table", "result"),
        "Conflict probes (a deliberate two-region write race on a probe item) by result: "
        "detected (the detector reported the lost write with the right regions), missed (no "
        "verdict within conflicts.probe_timeout_seconds: detection is not working), "
        "mislabelled (reported, but not as the one loss the images prove), skipped (no race "
        "was run: key schema, regions DOWN, a failed write). Never counted in "
        "gtmon_lww_conflicts_total.",
    ),
    "gtmon_conflict_probe_detection_seconds": (
        "histogram",
        ("table",),
        "From a conflict probe's writes to the detector's verdict on it (detected probes).",
    ),
    # Canary schedule (issue 14): how late writes go out, and those never written.
    "gtmon_canary_schedule_lag_seconds": (
        "histogram",
        ("table", "region"),
        "How late each canary write went out: the moment its PutItem was sent minus the moment "
        "the schedule (canary.interval_seconds) said it was due.",
    ),
    "gtmon_canary_writes_skipped_total": (
        "counter",
        ("table", "region"),
        "Canary writes the schedule asked for that never went out: the daemon was still busy "
        "with an earlier one (a slow or failing region, or too little CPU).",
    ),
}


@dataclass(frozen=True)
class StreamReading:
    """Scrape-time state of one stream reader (table, region)."""

    table: str
    region: str
    watermark_age_seconds: float


@dataclass(frozen=True)
class DetectorReading:
    """Cumulative counts of one table's conflict detector: degradation by reason, and judged
    records let go over the checkpoints' cap."""

    table: str
    degraded: Mapping[str, int]
    judged_dropped: int = 0


@dataclass(frozen=True)
class PairReading:
    """Scrape-time state of one (table, source, target) pair."""

    table: str
    source_region: str
    target_region: str
    oldest_pending_seconds: float
    heartbeat_age_seconds: float | None


class ReplicationStateCollector(Collector):
    """Computes the stall gauges when Prometheus scrapes, not on a timer.

    A stalled link writes nothing and reads nothing new, so only a value computed
    at scrape time keeps rising while the stall lasts.
    """

    def __init__(self, source: Callable[[], Iterable[PairReading]]) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pending = GaugeMetricFamily(
            "gtmon_replication_oldest_pending_seconds",
            METRIC_DOCS["gtmon_replication_oldest_pending_seconds"][2],
            labels=list(PAIR),
        )
        age = GaugeMetricFamily(
            "gtmon_replication_heartbeat_age_seconds",
            METRIC_DOCS["gtmon_replication_heartbeat_age_seconds"][2],
            labels=list(PAIR),
        )
        for reading in self._source():
            labels = [reading.table, reading.source_region, reading.target_region]
            pending.add_metric(labels, reading.oldest_pending_seconds)
            if reading.heartbeat_age_seconds is not None:
                age.add_metric(labels, reading.heartbeat_age_seconds)
        yield pending
        yield age

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Declared up front so registration checks names without calling the source.
        yield GaugeMetricFamily("gtmon_replication_oldest_pending_seconds", "", labels=list(PAIR))
        yield GaugeMetricFamily("gtmon_replication_heartbeat_age_seconds", "", labels=list(PAIR))


class StreamStateCollector(Collector):
    """Watermark ages and detector degradation, computed when Prometheus scrapes.

    A reader that is stuck reads nothing and moves nothing: only a value computed at
    scrape time keeps rising while it lasts. Detector counts live in the detector
    (they survive a restart of the loop that polls it) and are read from there.
    """

    def __init__(
        self,
        streams: Callable[[], Iterable[StreamReading]],
        detectors: Callable[[], Iterable[DetectorReading]],
    ) -> None:
        self._streams = streams
        self._detectors = detectors

    def collect(self) -> Iterator[Metric]:
        age = GaugeMetricFamily(
            "gtmon_stream_watermark_age_seconds",
            _help("gtmon_stream_watermark_age_seconds"),
            labels=list(_labels("gtmon_stream_watermark_age_seconds")),
        )
        for reading in self._streams():
            age.add_metric([reading.table, reading.region], reading.watermark_age_seconds)
        degraded = CounterMetricFamily(
            "gtmon_detector_degraded",
            _help("gtmon_detector_degraded_total"),
            labels=list(_labels("gtmon_detector_degraded_total")),
        )
        dropped = CounterMetricFamily(
            "gtmon_checkpoint_judged_dropped",
            _help("gtmon_checkpoint_judged_dropped_total"),
            labels=list(_labels("gtmon_checkpoint_judged_dropped_total")),
        )
        for detector in self._detectors():
            for reason, count in sorted(detector.degraded.items()):
                degraded.add_metric([detector.table, reason], count)
            dropped.add_metric([detector.table], detector.judged_dropped)
        yield age
        yield degraded
        yield dropped

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("gtmon_stream_watermark_age_seconds", "", labels=["table", "region"])
        yield CounterMetricFamily("gtmon_detector_degraded", "", labels=["table", "reason"])
        yield CounterMetricFamily("gtmon_checkpoint_judged_dropped", "", labels=["table"])


@dataclass(frozen=True)
class PendingReading:
    """Scrape-time pending writes of one link (table, source, target), from the streams."""

    table: str
    source_region: str
    target_region: str
    pending: int
    oldest_seconds: float
    truncated: int


class PendingStateCollector(Collector):
    """Pending writes per link, computed when Prometheus scrapes.

    The oldest pending write grows older with every second a link stays stalled,
    with nothing else happening: only a scrape-time value shows that. The
    truncation counter lives with the pending writes (it is kept across restarts
    with them) and is read from there.
    """

    NAMES = (
        "gtmon_replication_pending_writes",
        "gtmon_replication_pending_oldest_seconds",
    )

    def __init__(self, source: Callable[[], Iterable[PendingReading]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        count, oldest = (
            GaugeMetricFamily(name, _help(name), labels=list(PAIR)) for name in self.NAMES
        )
        truncated = CounterMetricFamily(
            "gtmon_replication_pending_truncated",
            _help("gtmon_replication_pending_truncated_total"),
            labels=list(PAIR),
        )
        for reading in self._source():
            labels = [reading.table, reading.source_region, reading.target_region]
            count.add_metric(labels, reading.pending)
            oldest.add_metric(labels, reading.oldest_seconds)
            truncated.add_metric(labels, reading.truncated)
        yield count
        yield oldest
        yield truncated

    def describe(self) -> Iterator[Metric]:
        for name in self.NAMES:
            yield GaugeMetricFamily(name, "", labels=list(PAIR))
        yield CounterMetricFamily("gtmon_replication_pending_truncated", "", labels=list(PAIR))


def _help(name: str) -> str:
    return METRIC_DOCS[name][2]


def _labels(name: str) -> tuple[str, ...]:
    return METRIC_DOCS[name][1]


class Metrics:
    """All gtmon metrics, registered on one registry."""

    def __init__(self, registry: CollectorRegistry, version: str) -> None:
        self.registry = registry
        # `_created` series double the output and no dashboard or rule uses them.
        disable_created_metrics()

        def counter(name: str) -> Counter:
            # prometheus_client appends _total itself; the contract names include it.
            return Counter(name.removesuffix("_total"), _help(name), _labels(name), registry=registry)

        def gauge(name: str) -> Gauge:
            return Gauge(name, _help(name), _labels(name), registry=registry)

        def histogram(name: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, _help(name), _labels(name), buckets=buckets, registry=registry)

        self.replication_lag = histogram("gtmon_replication_lag_seconds", LAG_BUCKETS)
        self.replication_lag_last = gauge("gtmon_replication_lag_last_seconds")
        self.replication_lag_error = gauge("gtmon_replication_lag_error_seconds")
        self.canary_operations = counter("gtmon_canary_operations_total")
        self.canary_lost = counter("gtmon_canary_lost_total")
        self.region_up = gauge("gtmon_region_up")
        self.aws_request_duration = histogram("gtmon_aws_request_duration_seconds", AWS_BUCKETS)
        self.aws_request_errors = counter("gtmon_aws_request_errors_total")
        self.lww_conflicts = counter("gtmon_lww_conflicts_total")
        self.stream_records = counter("gtmon_stream_records_total")
        self.stream_lag = gauge("gtmon_stream_lag_seconds")
        self.stream_shards = gauge("gtmon_stream_shards")
        self.detector_tracked_keys = gauge("gtmon_detector_tracked_keys")
        self.build_info = gauge("gtmon_build_info")
        self.build_info.labels(version=version).set(1)
        self.web_connections_refused = counter("gtmon_web_connections_refused_total")
        self.web_auth_failures = counter("gtmon_web_auth_failures_total")
        self.component_up = gauge("gtmon_component_up")
        self.component_restarts = counter("gtmon_component_restarts_total")
        self.internal_errors = counter("gtmon_internal_errors_total")
        self.stream_gaps = counter("gtmon_stream_gaps_total")
        self.checkpoint_errors = counter("gtmon_checkpoint_errors_total")
        for operation in ("load", "save"):
            self.checkpoint_errors.labels(operation)
        self.stream_images_missing = gauge("gtmon_stream_images_missing")
        self.stream_replication_lag = histogram("gtmon_stream_replication_lag_seconds", LAG_BUCKETS)
        self.conflict_probes = counter("gtmon_conflict_probes_total")
        self.conflict_probe_detection = histogram(
            "gtmon_conflict_probe_detection_seconds", PROBE_BUCKETS
        )
        # Canary schedule (issue 14).
        self.canary_schedule_lag = histogram("gtmon_canary_schedule_lag_seconds", SCHEDULE_BUCKETS)
        self.canary_writes_skipped = counter("gtmon_canary_writes_skipped_total")

    def count_internal_error(self, component: str, error: BaseException) -> bool:
        """Count `error` once in gtmon_internal_errors_total; False if it was counted before.

        An unexpected exception may be seen twice on its way up (where it happened,
        then by the supervisor of the component it ended): only the first place counts it.
        """
        if getattr(error, "_gtmon_counted", False):
            return False
        # An exception class with __slots__ cannot be marked: it is counted every time.
        with contextlib.suppress(AttributeError):
            error._gtmon_counted = True  # type: ignore[attr-defined]
        self.internal_errors.labels(component, type(error).__name__).inc()
        return True

    def add_replication_state(self, source: Callable[[], Iterable[PairReading]]) -> None:
        """Register the scrape-time stall gauges, fed by `source`."""
        self.registry.register(ReplicationStateCollector(source))

    def add_stream_state(
        self,
        streams: Callable[[], Iterable[StreamReading]],
        detectors: Callable[[], Iterable[DetectorReading]],
    ) -> None:
        """Register the scrape-time watermark ages, detector degradation counts and judged
        records left out of the checkpoints."""
        self.registry.register(StreamStateCollector(streams, detectors))

    def add_pending_state(self, source: Callable[[], Iterable[PendingReading]]) -> None:
        """Register the scrape-time pending-writes gauges and truncation counter."""
        self.registry.register(PendingStateCollector(source))
