"""The stream reader against DynamoDB Local: a second DynamoDB Streams implementation, not moto.

The emulator is gtmon's own; a reader that only ever ran against it could
share its misunderstandings. DynamoDB Local (Amazon's jar, 3.3.x, installed by
``scripts/ci-dynamodb-local.sh``) is started by tests/helpers.py with Java 17, bound to a free
port and spoken to on 127.0.0.1 only (telemetry off). The test fails, never
skips, when the jar or Java is missing: a gap in CI must be visible.

What DynamoDB Local does not do: it kept a single shard through thousands of
writes and a throughput change when this was written (3.3.1), so shard
lineage across rollovers is covered by the emulator tests; here the reader
must page through GetRecords (full pages of 1000) and deliver every record of
every kind once, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from prometheus_client import CollectorRegistry
from streams_helpers import Collector, reader, running, wait_for

from monitor.aws import AwsClients
from monitor.config import AwsSettings
from monitor.metrics import Metrics
from tests.helpers import dynamodb_local as start_dynamodb_local

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def dynamodb_local(tmp_path: Path) -> Iterator[str]:
    with start_dynamodb_local(tmp_path) as (url, _):
        yield url


def _write_workload(url: str, items: int) -> list[tuple[str, str]]:
    """Inserts in batches, then updates and deletes; returns (event, key) in apply order."""
    ddb = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=url,
                       aws_access_key_id="gtmon", aws_secret_access_key="gtmon")
    ddb.create_table(
        TableName="Orders",
        KeySchema=[{"AttributeName": "OrderID", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "OrderID", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    expected: list[tuple[str, str]] = []
    keys = [f"o{i:05d}" for i in range(items)]
    for start in range(0, items, 25):
        batch = keys[start : start + 25]
        ddb.batch_write_item(RequestItems={"Orders": [
            {"PutRequest": {"Item": {"OrderID": {"S": k}, "Status": {"S": "New"}}}} for k in batch
        ]})
        expected += [("INSERT", k) for k in batch]
    for k in keys[:100]:
        ddb.put_item(TableName="Orders", Item={"OrderID": {"S": k}, "Status": {"S": "Paid"}})
        expected.append(("MODIFY", k))
    for k in keys[:50]:
        ddb.delete_item(TableName="Orders", Key={"OrderID": {"S": k}})
        expected.append(("REMOVE", k))
    return expected


async def test_reader_reads_every_record_from_dynamodb_local(dynamodb_local: str) -> None:
    metrics = Metrics(CollectorRegistry(), "test")
    clients = AwsClients(
        AwsSettings(endpoint_url=dynamodb_local, connect_timeout_seconds=2,
                    read_timeout_seconds=10, max_attempts=1),
        metrics=metrics,
    )
    await clients.start(["us-east-1"])
    try:
        expected = await asyncio.to_thread(_write_workload, dynamodb_local, 1500)
        sink = Collector()
        r = reader(clients, sink, metrics=metrics)
        async with running(r):
            await wait_for(lambda: len(sink.records) >= len(expected), timeout=60,
                           what=f"{len(expected)} records from DynamoDB Local")
            await asyncio.sleep(0.5)
            status = r.status()
        got: list[tuple[str, Any]] = [
            (x.record["eventName"], x.record["dynamodb"]["Keys"]["OrderID"]["S"])
            for x in sink.records
        ]
        assert got == expected
        sequences = [int(x.sequence_number) for x in sink.records]
        assert sequences == sorted(set(sequences))
        assert status["last_error"] is None and status["lag_seconds"] == 0.0
        assert status["shards"]["open"] + status["shards"]["closed"] + \
            status["shards"]["finished"] >= 1
        for event, count in (("INSERT", 1500), ("MODIFY", 100), ("REMOVE", 50)):
            assert metrics.registry.get_sample_value(
                "gtmon_stream_records_total",
                {"table": "Orders", "region": "us-east-1", "event": event}) == count
        assert r.watermark() is not None
    finally:
        await clients.close()

