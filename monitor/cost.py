"""What running gtmon costs on AWS per month: a pure model with every price overridable.

Prices are us-east-1 on-demand list prices as published after the November
2024 reduction. A canary write into an R-region global table is billed once as
a write unit and once as a replicated write unit per other replica (same
price), so it costs R units; a strongly consistent read of a small item is one
read unit; a stream reader's GetRecords calls are billed per request after a
free tier; replication moves each canary across R-1 links.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CostBreakdown", "Prices", "canary_cost"]

SECONDS_PER_MONTH = 30.44 * 86400


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
