"""Every metric gtmon exports, in one place: this module is the contract.

Dashboards, alert rules and docs/metrics.md are written against these names
(docs are generated from `METRIC_DOCS`, and a test fails when they drift).
All metrics are built on a registry passed in, so tests use a fresh
`CollectorRegistry` each and read values with `get_sample_value`.
Nothing here imports the rest of gtmon.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["LAG_BUCKETS", "METRIC_DOCS", "Metrics", "PairReading", "ReplicationStateCollector"]

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
}


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

    def add_replication_state(self, source: Callable[[], Iterable[PairReading]]) -> None:
        """Register the scrape-time stall gauges, fed by `source`."""
        self.registry.register(ReplicationStateCollector(source))
