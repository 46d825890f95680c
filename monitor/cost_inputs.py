"""What `gtmon cost` asks the world before it prices a configuration (the I/O of `cost`).

Two inputs are not in the config file and change the estimate the most:

* how many shards each replica's stream has: stream polling is one reader per open shard,
  and a busy table's stream has many. DescribeStream says, when AWS (or the emulator) can
  be reached with the config's credentials; otherwise the caller assumes and says so;
* how many reads a canary really takes at each target: the read planner may spend up to
  `canary.max_reads_per_canary`, a running daemon knows what it spent
  (`reads_per_canary` per pair in /api/status).

The pricing itself stays in `monitor.cost`, pure.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from monitor.aws import AwsCallError, AwsClients, AwsSetupError
from monitor.config import Config

__all__ = [
    "MeasuredReads",
    "ShardsFound",
    "ShardsUnknown",
    "average_reads",
    "discover_shards",
    "fetch_measured_reads",
]


@dataclass(frozen=True)
class ShardsFound:
    """Open shards per (table, region), from DescribeStream."""

    open_shards: dict[tuple[str, str], int]


@dataclass(frozen=True)
class ShardsUnknown:
    """DescribeStream could not be asked: why, in a few words."""

    reason: str


@dataclass(frozen=True)
class MeasuredReads:
    """The reads a running daemon spent per canary and pair, over all its pairs."""

    per_canary: float
    pairs: int
    canaries: int


async def _open_shards(clients: AwsClients, table: str, region: str) -> int:
    description = (await clients.call(region, "dynamodb", "describe_table", TableName=table))["Table"]
    arn = description.get("LatestStreamArn")
    if not arn:
        return 0
    count, start = 0, None
    while True:
        kwargs: dict[str, Any] = {"StreamArn": arn}
        if start:
            kwargs["ExclusiveStartShardId"] = start
        page = (await clients.call(region, "dynamodbstreams", "describe_stream", **kwargs))[
            "StreamDescription"
        ]
        # A closed shard is read to its end once and then left: only open ones are polled.
        count += sum(
            1
            for shard in page.get("Shards") or []
            if "EndingSequenceNumber" not in (shard.get("SequenceNumberRange") or {})
        )
        start = page.get("LastEvaluatedShardId")
        if not start:
            return count


async def _discover(config: Config, watched: Mapping[str, list[str]]) -> dict[tuple[str, str], int]:
    clients = AwsClients(config.aws)
    regions = sorted({region for regions in watched.values() for region in regions})
    await clients.start(regions)
    try:
        return {
            (table, region): await _open_shards(clients, table, region)
            for table, table_regions in watched.items()
            for region in table_regions
        }
    finally:
        await clients.close()


def discover_shards(
    config: Config, watched: Mapping[str, list[str]], timeout: float
) -> ShardsFound | ShardsUnknown:
    """Open stream shards of each watched table (name -> its regions) in each region, or why
    they could not be counted (no credentials, no network, no such table, `timeout` seconds)."""
    if not watched:
        return ShardsFound({})
    try:
        return ShardsFound(asyncio.run(asyncio.wait_for(_discover(config, watched), timeout)))
    except (AwsCallError, AwsSetupError) as exc:
        return ShardsUnknown(" ".join(str(exc).split()))
    except TimeoutError:
        return ShardsUnknown(f"no answer within {timeout:g} s")


def average_reads(pairs: Iterable[Mapping[str, Any]]) -> MeasuredReads | None:
    """The reads per canary over every pair of an /api/status answer, weighted by how many
    canaries each pair measured; None before the first measurement."""
    rows = [
        (float(p["reads_per_canary"]), int(p["measurements"]))
        for p in pairs
        if p.get("reads_per_canary") is not None and p.get("measurements")
    ]
    canaries = sum(n for _, n in rows)
    if not canaries:
        return None
    return MeasuredReads(sum(r * n for r, n in rows) / canaries, len(rows), canaries)


def fetch_measured_reads(status_url: str, timeout: float) -> MeasuredReads | None:
    """`average_reads` of a running gtmon's /api/status (`status_url` is its base URL).

    Raises ValueError with a one-line reason when it cannot be read.
    """
    url = status_url.rstrip("/") + "/api/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = json.loads(response.read(10_000_000))
    except (OSError, urllib.error.URLError, json.JSONDecodeError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ValueError(f"cannot read {url}: {reason}") from None
    if not isinstance(status, dict) or not isinstance(status.get("pairs"), list):
        raise ValueError(f"{url} is not a gtmon /api/status answer (no 'pairs' list)")
    return average_reads(status["pairs"])
