"""A stream that does not carry both images cannot serve conflict detection: the reader says
so (log, status, metric) as soon as it has described the stream, and still reads it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog
from streams_helpers import Collector, put, reader, running, wait_for

from monitor.aws import AwsClients
from monitor.emulator import EmulatorServer
from monitor.metrics import Metrics


def _table(client: Any, view: str) -> None:
    client("us-east-1").create_table(
        TableName="Orders",
        KeySchema=[{"AttributeName": "OrderID", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "OrderID", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": view},
    )


@pytest.mark.parametrize(
    ("view", "missing"),
    [("KEYS_ONLY", True), ("NEW_IMAGE", True), ("OLD_IMAGE", True), ("NEW_AND_OLD_IMAGES", False)],
)
async def test_a_stream_without_both_images_is_reported_at_start(
    emu: EmulatorServer, client: Any, aws: AwsClients, metrics: Metrics, sample: Any,
    view: str, missing: bool,
) -> None:
    _table(client, view)
    sink = Collector()
    with structlog.testing.capture_logs() as logs:
        async with running(reader(aws, sink, metrics=metrics)) as r:
            await wait_for(lambda: r.status()["view_type"], what="the stream to be described")
            await asyncio.to_thread(put, client("us-east-1"), "Orders", "o1", Status="New")
            await wait_for(lambda: sink.records, what="the record, read all the same")
    status = r.status()
    assert status["view_type"] == view
    assert status["images_missing"] is missing
    assert sample("gtmon_stream_images_missing", table="Orders", region="us-east-1") == (
        1.0 if missing else 0.0
    )
    warnings = [e for e in logs if e["event"] == "stream_lacks_images"]
    if missing:
        assert len(warnings) == 1, "warned once, not at every DescribeStream"
        assert warnings[0]["log_level"] == "warning"
        assert warnings[0]["view_type"] == view and warnings[0]["needed"] == "NEW_AND_OLD_IMAGES"
    else:
        assert warnings == []
