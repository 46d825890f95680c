"""Helpers for the stream-reader tests: global tables, writes, running readers."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from monitor.aws import AwsClients
from monitor.clock import SystemClock
from monitor.metrics import Metrics
from monitor.streams.checkpoints import ShardPosition
from monitor.streams.reader import ReaderSettings, StreamReader, StreamRecord
from tests.helpers import REGIONS, ClientFactory, add_replicas, wait_sync

__all__ = ["REGIONS", "ClientFactory", "wait_sync"]

FAST = ReaderSettings(
    poll_interval_min=0.05, poll_interval_max=0.2, describe_interval=0.5, retry_slow_seconds=0.3,
    backoff_base=0.05, backoff_cap=0.5,
)




async def wait_for(
    predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition"
) -> Any:
    """Poll `predicate` on the event loop until truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def read_through(
    readers: StreamReader | Iterable[StreamReader], emu: Any = None, timeout: float = 15.0
) -> None:
    """Wait until each reader has read everything its stream held when this was called.

    With `emu`, replication in flight lands first. Then every reader's watermark must
    pass a wall time taken now: every shard has since been polled to its end, so a record
    that has not been delivered by then was never in the stream. This is how the tests
    assert that something did *not* arrive, instead of sleeping and hoping.
    """
    if emu is not None:
        assert await asyncio.to_thread(emu.emulator.settle, timeout), "replication did not settle"
    group = [readers] if isinstance(readers, StreamReader) else list(readers)
    now = time.time()
    await wait_for(lambda: all((r.watermark() or 0.0) > now for r in group), timeout,
                   "every reader to read past now")


def create_table(ddb: Any, name: str, stream: bool = True) -> None:
    extra: dict[str, Any] = {}
    if stream:
        extra["StreamSpecification"] = {
            "StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES",
        }
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "OrderID", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "OrderID", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST", **extra,
    )


def make_global(
    client: ClientFactory, name: str = "Orders", regions: list[str] | None = None
) -> dict[str, Any]:
    """Create `name` in the first region, add replicas with UpdateTable, wait until ACTIVE."""
    regions = regions or REGIONS
    create_table(client(regions[0]), name)
    return add_replicas(client, name, regions)


def put(ddb: Any, table: str, key: str, **attrs: str) -> None:
    item = {"OrderID": {"S": key}, **{k: {"S": v} for k, v in attrs.items()}}
    ddb.put_item(TableName=table, Item=item)


class Collector:
    """A sink that keeps every delivered record."""

    def __init__(self) -> None:
        self.records: list[StreamRecord] = []

    def __call__(self, record: StreamRecord) -> None:
        self.records.append(record)

    def keys(self) -> list[str]:
        return [r.record["dynamodb"]["Keys"]["OrderID"]["S"] for r in self.records]

    def sequences(self) -> list[int]:
        return [int(r.sequence_number) for r in self.records]


def reader(
    aws: AwsClients, sink: Collector, *, table: str = "Orders", region: str = "us-east-1",
    settings: ReaderSettings = FAST, metrics: Metrics | None = None,
    positions: dict[str, ShardPosition] | None = None,
) -> StreamReader:
    return StreamReader(
        table, region, aws, sink, clock=SystemClock(), settings=settings, metrics=metrics,
        positions=positions, rng=random.Random(7),
    )


@asynccontextmanager
async def running(stream_reader: StreamReader) -> AsyncIterator[StreamReader]:
    """Run the reader in a task; cancel it (and its shard tasks) on exit."""
    task = asyncio.create_task(stream_reader.run())
    try:
        yield stream_reader
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert not [
            t for t in asyncio.all_tasks()
            if t.get_name().startswith("gtmon-stream-") and not t.done()
        ], "shard tasks left running after the reader was cancelled"
