"""What running gtmon costs on AWS per month: a pure model with every price overridable.

Prices are us-east-1 on-demand list prices as published after the November
2024 reduction. A canary write into an R-region global table is billed once as
a write unit and once as a replicated write unit per other replica (same
price), so it costs R units; a strongly consistent read of a small item is one
read unit; a stream reader's GetRecords calls are billed per request after a
free tier; replication moves each canary across R-1 links.

Stream polling depends on the traffic, so it is priced three ways. An idle
shard reader polls at the ceiling (`streams.poll_interval_max_seconds`). A
record of a table starts a *burst*: every region's readers of that table poll
at the floor (`streams.poll_interval_min_seconds`) for `streams.burst_seconds`,
so one write burst costs at most regions x shards x burst_seconds / floor
GetRecords (at most: the idle polls it replaces are not subtracted, and writes
closer together than a burst share one). A table written at least every
burst_seconds is *busy*: it polls at the floor all the time.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CostBreakdown",
    "Prices",
    "ProbeCost",
    "burst_fraction",
    "burst_requests",
    "canary_cost",
    "mean_poll_seconds",
    "probe_cost",
    "stream_reads_usd",
    "stream_requests",
]

SECONDS_PER_MONTH = 30.44 * 86400
SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class Prices:
    write_unit_per_million: float = 0.625
    read_unit_per_million: float = 0.125
    stream_reads_per_100k: float = 0.02
    stream_reads_free_per_month: float = 2_500_000
    transfer_per_gb: float = 0.02
    storage_per_gb_month: float = 0.25


@dataclass(frozen=True)
class CostBreakdown:
    writes_per_month: float
    write_units_per_month: float
    reads_per_month: float
    stream_requests_per_month: float
    transfer_gb_per_month: float
    writes_usd: float
    reads_usd: float
    streams_usd: float
    transfer_usd: float
    storage_usd: float

    @property
    def total_usd(self) -> float:
        return (
            self.writes_usd
            + self.reads_usd
            + self.streams_usd
            + self.transfer_usd
            + self.storage_usd
        )


def canary_cost(
    regions: int,
    canary_targets: int,
    interval_seconds: float,
    reads_per_canary: float,
    stream_readers: int,
    stream_poll_seconds: float,
    prices: Prices,
    item_bytes: int = 200,
) -> CostBreakdown:
    """Monthly cost of `canary_targets` canary tables over `regions` replicas.

    `stream_readers` counts (table, region, shard) readers polling every
    `stream_poll_seconds` on average (an idle reader backs off to its maximum).
    """
    canaries = canary_targets * regions * SECONDS_PER_MONTH / interval_seconds
    write_units = canaries * regions
    reads = canaries * (regions - 1) * reads_per_canary
    stream_requests = stream_readers * SECONDS_PER_MONTH / stream_poll_seconds
    billable_stream = max(0.0, stream_requests - prices.stream_reads_free_per_month)
    transfer_gb = canaries * (regions - 1) * item_bytes / 1e9
    storage_gb = canary_targets * regions * regions * item_bytes / 1e9
    return CostBreakdown(
        writes_per_month=canaries,
        write_units_per_month=write_units,
        reads_per_month=reads,
        stream_requests_per_month=stream_requests,
        transfer_gb_per_month=transfer_gb,
        writes_usd=write_units / 1e6 * prices.write_unit_per_million,
        reads_usd=reads / 1e6 * prices.read_unit_per_million,
        streams_usd=billable_stream / 1e5 * prices.stream_reads_per_100k,
        transfer_usd=transfer_gb * prices.transfer_per_gb,
        storage_usd=storage_gb * prices.storage_per_gb_month,
    )


def stream_requests(readers: int, poll_seconds: float) -> float:
    """GetRecords calls per month of `readers` shard readers polling every `poll_seconds`."""
    return readers * SECONDS_PER_MONTH / poll_seconds


def stream_reads_usd(requests_per_month: float, prices: Prices) -> float:
    """What `requests_per_month` GetRecords calls cost, after the monthly free tier."""
    billable = max(0.0, requests_per_month - prices.stream_reads_free_per_month)
    return billable / 1e5 * prices.stream_reads_per_100k


def burst_requests(readers: int, burst_seconds: float, floor_seconds: float) -> float:
    """GetRecords calls of one write burst, at most: every reader at the floor throughout.

    `readers` are the table's shard readers (regions x shards).
    """
    return readers * burst_seconds / floor_seconds


def burst_fraction(burst_seconds: float, bursts_per_day: float) -> float:
    """The share of the time a table bursts when written `bursts_per_day` times apart.

    Capped at 1: a table written at least every `burst_seconds` bursts all the time.
    """
    return min(1.0, max(0.0, bursts_per_day * burst_seconds / SECONDS_PER_DAY))


def mean_poll_seconds(floor_seconds: float, ceiling_seconds: float, busy_fraction: float) -> float:
    """The mean GetRecords interval of a reader at the floor `busy_fraction` of the time.

    The rest of the time it idles at the ceiling (the few polls an idle shard takes
    to grow from the floor to the ceiling are not counted).
    """
    rate = busy_fraction / floor_seconds + (1.0 - busy_fraction) / ceiling_seconds
    return 1.0 / rate


# ---- conflict probes (issue 13) ----------------------------------------------------------


@dataclass(frozen=True)
class ProbeCost:
    """What conflict probes add per month: their writes, and the canary table's readers."""

    probes_per_month: float
    write_units_per_month: float
    transfer_gb_per_month: float
    writes_usd: float
    transfer_usd: float
    canary_stream_requests_per_month: float


def probe_cost(
    table_regions: list[int],
    interval_seconds: float,
    canary_readers: int,
    canary_poll_seconds: float,
    prices: Prices,
    item_bytes: int = 200,
) -> ProbeCost:
    """Monthly cost of one probe every `interval_seconds` in each table of `table_regions`
    (the replica count of each probed table, the canary table's included).

    A probe is two writes, each billed once per replica (R units) and replicated over
    R-1 links, the losing one too. Probe items are fresh keys that expire by TTL, so
    storage stays a few hundred items. The canary table is read for probes only:
    `canary_readers` shard readers polling at the idle pace `canary_poll_seconds`; their
    GetRecords calls are returned, to be priced together with the other readers' (the
    free tier is shared).
    """
    per_table = SECONDS_PER_MONTH / interval_seconds
    write_units = sum(2 * per_table * regions for regions in table_regions)
    transfer_gb = sum(2 * per_table * (regions - 1) for regions in table_regions) * item_bytes / 1e9
    return ProbeCost(
        probes_per_month=per_table * len(table_regions),
        write_units_per_month=write_units,
        transfer_gb_per_month=transfer_gb,
        writes_usd=write_units / 1e6 * prices.write_unit_per_million,
        transfer_usd=transfer_gb * prices.transfer_per_gb,
        canary_stream_requests_per_month=stream_requests(canary_readers, canary_poll_seconds),
    )
