"""The stream reader against the emulator over HTTP: lineage, expiry, trimming, faults, restarts.

Every test writes through real boto3 clients, reads with gtmon's own aioboto3
clients, and checks the exact sequence delivered: every record once, in
apply order, parents before children.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from streams_helpers import (
    FAST,
    Collector,
    create_table,
    make_global,
    put,
    read_through,
    reader,
    running,
    wait_for,
)

from monitor.aws import AwsClients
from monitor.clock import SystemClock
from monitor.config import AwsSettings
from monitor.emulator import EmulatorServer
from monitor.emulator.control import ControlClient
from monitor.metrics import Metrics
from monitor.streams.checkpoints import CheckpointState, JsonFileCheckpointStore

pytestmark = pytest.mark.timeout(60)


def assert_exactly_once_in_order(sink: Collector, expected_keys: list[str]) -> None:
    assert sink.keys() == expected_keys, "records missing, repeated or out of order"
    seqs = sink.sequences()
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def write(ddb: Any, keys: list[str], pause: float = 0.0, **attrs: str) -> None:
    """Write items from a thread, so the reader keeps polling meanwhile."""

    def run() -> None:
        for key in keys:
            put(ddb, "Orders", key, **(attrs or {"Status": "New"}))
            if pause:
                time.sleep(pause)

    await asyncio.to_thread(run)


async def test_shard_rollover_reads_every_record_once_parent_before_child(
    client: Any, aws: AwsClients, metrics: Metrics, sample: Any, stream_settings: Any
) -> None:
    tables = make_global(client)
    stream_settings(shard_rollover_seconds=0.25)
    first = [f"a{i:03d}" for i in range(20)]
    await write(tables["us-east-1"], first, pause=0.03)  # history spread over closed shards
    sink = Collector()
    # Two shards per DescribeStream page: the listing is paged (ExclusiveStartShardId).
    settings = replace(FAST, describe_page_limit=2)
    async with running(reader(aws, sink, metrics=metrics, settings=settings)) as r:
        second = [f"b{i:03d}" for i in range(30)]
        await write(tables["us-east-1"], second, pause=0.03)
        await wait_for(lambda: len(sink.records) >= 50, what="all 50 records")
        # Shards that roll over faster than a paged listing completes hold the watermark back;
        # once they stop, whatever else there was has been delivered when it passes now.
        stream_settings(shard_rollover_seconds=3600.0)
        await read_through(r)
        # One open shard once the listing after the last parent's end is in.
        await wait_for(lambda: sample("gtmon_stream_shards", table="Orders", region="us-east-1",
                                      state="open") == 1, what="the open-shard gauge")
        status = r.status()
    assert_exactly_once_in_order(sink, first + second)
    by_shard: dict[str, list[int]] = {}
    for position, record in enumerate(sink.records):
        by_shard.setdefault(record.shard_id, []).append(position)
    assert len(by_shard) >= 4, f"expected several shards, got {len(by_shard)}"
    # Lineage: every record of a shard is delivered before any record of a later shard.
    spans = sorted((min(p), max(p)) for p in by_shard.values())
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))
    assert status["shards"]["finished"] >= 3
    assert sample("gtmon_stream_records_total", table="Orders", region="us-east-1",
                  event="INSERT") == 50
    assert sample("gtmon_aws_request_duration_seconds_count", region="us-east-1",
                  operation="describe_stream") >= 3


async def test_modify_and_remove_records_are_counted_by_event(
    emu: EmulatorServer, client: Any, aws: AwsClients, metrics: Metrics, sample: Any
) -> None:
    tables = make_global(client)
    sink = Collector()
    async with running(reader(aws, sink, region="eu-west-1", metrics=metrics)) as r:
        ddb = tables["us-east-1"]
        put(ddb, "Orders", "o1", Status="New")
        put(ddb, "Orders", "o1", Status="Paid")
        put(ddb, "Orders", "o1", Status="Paid")  # no change: no record
        await asyncio.to_thread(ddb.delete_item, TableName="Orders", Key={"OrderID": {"S": "o1"}})
        await wait_for(lambda: len(sink.records) >= 3, what="3 replicated records")
        await read_through(r, emu)  # replicated and read: a fourth record would be here
    assert [r.record["eventName"] for r in sink.records] == ["INSERT", "MODIFY", "REMOVE"]
    assert all(r.record["awsRegion"] == "eu-west-1" for r in sink.records)
    for event in ("INSERT", "MODIFY", "REMOVE"):
        assert sample("gtmon_stream_records_total", table="Orders", region="eu-west-1",
                      event=event) == 1


async def test_iterator_expiry_resumes_after_the_last_record_without_loss_or_duplicates(
    client: Any, aws: AwsClients, sample: Any, stream_settings: Any
) -> None:
    tables = make_global(client)
    stream_settings(iterator_ttl_seconds=0.3)
    sink = Collector()
    # Idle polls back off to 0.8 s, so the iterator kept between polls expires.
    settings = replace(FAST, poll_interval_max=0.8)
    keys: list[str] = []
    async with running(reader(aws, sink, settings=settings)):
        for burst in range(3):
            batch = [f"k{burst}-{i}" for i in range(5)]
            keys += batch
            await write(tables["us-east-1"], batch)
            expected = len(keys)
            await wait_for(lambda n=expected: len(sink.records) >= n, what=f"burst {burst}")
            await asyncio.sleep(1.5)  # idle: the interval grows past the iterator's lifetime
    assert sample("gtmon_aws_request_errors_total", region="us-east-1", operation="get_records",
                  code="ExpiredIteratorException") >= 1
    assert_exactly_once_in_order(sink, keys)


async def test_trimmed_records_are_counted_and_reading_restarts_at_trim_horizon(
    client: Any, aws: AwsClients, sample: Any, stream_settings: Any, control: ControlClient
) -> None:
    tables = make_global(client)
    sink = Collector()
    async with running(reader(aws, sink, metrics=aws.metrics)) as r:
        await write(tables["us-east-1"], ["before"])
        await wait_for(lambda: sink.keys() == ["before"], what="the first record")
        # The reader cannot reach us-east-1 while records age past retention there.
        control.fault("outage", region="us-east-1", mode="error")
        stream_settings(retention_seconds=0.5)
        await write(tables["eu-west-1"], ["lost1", "lost2"])  # replicated into us-east-1's stream
        await asyncio.sleep(1.0)
        control.fault("restore", region="us-east-1")
        await write(tables["eu-west-1"], ["after"])
        await wait_for(lambda: sink.keys()[-1:] == ["after"], what="the record after the trim")
        assert r.records_lost_events >= 1
        assert sample("gtmon_stream_gaps_total", table="Orders", region="us-east-1") == (
            r.records_lost_events)
    assert sink.keys() == ["before", "after"]
    assert sample("gtmon_aws_request_errors_total", region="us-east-1", operation="get_records",
                  code="TrimmedDataAccessException") >= 1


async def test_throttling_backs_off_and_still_reads_everything(
    emu: EmulatorServer, client: Any, aws: AwsClients, sample: Any, control: ControlClient
) -> None:
    tables = make_global(client)
    sink = Collector()
    keys = [f"t{i:02d}" for i in range(25)]

    def throttled() -> float:
        return sample("gtmon_aws_request_errors_total", region="ap-southeast-1",
                      operation="get_records", code="ThrottlingException")

    async with running(reader(aws, sink, region="ap-southeast-1")) as r:
        await wait_for(lambda: r.watermark() is not None, what="the reader to be reading")
        # Every call refused for a while (botocore's own retry cannot hide it), then half.
        control.fault("throttle", region="ap-southeast-1", fraction=1.0)
        await write(tables["us-east-1"], keys[:10], pause=0.02)
        assert await asyncio.to_thread(emu.emulator.settle, 10)
        refused = throttled()
        await wait_for(lambda: throttled() >= refused + 3, what="three polls refused after the writes")
        assert sink.records == []
        control.fault("throttle", region="ap-southeast-1", fraction=0.5)
        await write(tables["us-east-1"], keys[10:], pause=0.02)
        await wait_for(lambda: len(sink.records) >= len(keys), what="all records, throttled")
        await read_through(r, emu)
    assert sample("gtmon_aws_request_errors_total", region="ap-southeast-1",
                  operation="get_records", code="ThrottlingException") >= 1
    assert_exactly_once_in_order(sink, keys)


@pytest.mark.parametrize("mode", ["error", "blackhole"])
async def test_region_outage_is_reported_then_the_reader_catches_up(
    mode: str, emu: EmulatorServer, client: Any, aws: AwsClients, sample: Any,
    control: ControlClient,
) -> None:
    tables = make_global(client)
    sink = Collector()
    async with running(reader(aws, sink)) as r:
        await write(tables["us-east-1"], ["o0", "o1"])
        await wait_for(lambda: len(sink.records) == 2, what="records before the outage")
        await wait_for(lambda: r.watermark() is not None, what="a watermark")
        control.fault("outage", region="us-east-1", mode=mode)
        mark = r.watermark()
        # Written elsewhere, replicated into us-east-1's stream meanwhile.
        await write(tables["eu-west-1"], [f"x{i}" for i in range(10)])
        await wait_for(lambda: r.status()["state"] == "error", what="the outage to be reported")
        assert await asyncio.to_thread(emu.emulator.settle, 10)  # x0..x9 sit in its stream
        failed = sum(sample("gtmon_aws_request_errors_total", region="us-east-1",
                            operation="get_records", code=code)
                     for code in ("InternalServerError", "ReadTimeout"))
        await wait_for(
            lambda: sum(sample("gtmon_aws_request_errors_total", region="us-east-1",
                               operation="get_records", code=code)
                        for code in ("InternalServerError", "ReadTimeout")) >= failed + 2,
            what="two more polls to fail", timeout=20,
        )
        assert len(sink.records) == 2
        status = r.status()
        assert status["last_error"]["code"] in ("InternalServerError", "ReadTimeout")
        assert sample("gtmon_region_up", region="us-east-1") == 0
        assert r.watermark() == mark, "the watermark moved while the region was unreachable"
        control.fault("restore", region="us-east-1")
        await wait_for(lambda: len(sink.records) >= 12, what="catch-up after the outage")
        await wait_for(lambda: (r.watermark() or 0) > (mark or 0), what="the watermark to move on")
        await read_through(r, emu)
        assert r.status()["state"] == "reading"
    assert_exactly_once_in_order(sink, ["o0", "o1"] + [f"x{i}" for i in range(10)])


async def test_watermark_passes_the_writes_read_and_never_goes_back(
    client: Any, aws: AwsClients
) -> None:
    tables = make_global(client)
    sink = Collector()
    marks: list[float] = []
    async with running(reader(aws, sink)) as r:
        await wait_for(lambda: r.watermark() is not None, what="a first watermark")
        for i in range(3):
            before = time.time()
            await write(tables["us-east-1"], [f"w{i}"])
            await wait_for(
                lambda t=before: (r.watermark() or 0) > t + 0.05, what="watermark past the write"
            )
            assert len(sink.records) == i + 1, "watermark passed a record not yet delivered"
            marks.append(r.watermark() or 0)
            await asyncio.sleep(0.2)
            marks.append(r.watermark() or 0)
    assert marks == sorted(marks)


async def test_idle_shard_polls_slow_down_to_the_ceiling(
    client: Any, aws: AwsClients, sample: Any
) -> None:
    make_global(client)
    sink = Collector()
    settings = replace(FAST, poll_interval_min=0.05, poll_interval_max=0.5, describe_interval=5.0)
    async with running(reader(aws, sink, settings=settings)):
        await asyncio.sleep(0.5)
        start = sample("gtmon_aws_request_duration_seconds_count", region="us-east-1",
                       operation="get_records")
        await asyncio.sleep(2.0)
        polls = sample("gtmon_aws_request_duration_seconds_count", region="us-east-1",
                       operation="get_records") - start
    # At the floor it would be 40 polls; at the ceiling about 4.
    assert 2 <= polls <= 7, polls


async def test_restart_from_checkpoint_reads_only_what_is_new(
    client: Any, aws: AwsClients, tmp_path: Path, stream_settings: Any
) -> None:
    tables = make_global(client)
    stream_settings(shard_rollover_seconds=0.4)
    store = JsonFileCheckpointStore(tmp_path / "cp.json")
    first_sink = Collector()
    first = [f"r{i:02d}" for i in range(12)]
    async with running(reader(aws, first_sink)) as r:
        await write(tables["us-east-1"], first, pause=0.05)
        await wait_for(lambda: len(first_sink.records) == 12, what="the first run")
        positions = r.checkpoint(time.time())
    await store.save(CheckpointState({("Orders", "us-east-1", s): p for s, p in positions.items()}))

    second = [f"s{i:02d}" for i in range(8)]
    await write(tables["us-east-1"], second, pause=0.05)
    loaded = await store.load()
    resumed = {s: p for (_, _, s), p in loaded.positions.items()}
    assert any(p.finished for p in resumed.values()), "closed, fully read shards are remembered"
    second_sink = Collector()
    async with running(reader(aws, second_sink, positions=resumed)) as again:
        await wait_for(lambda: len(second_sink.records) >= 8, what="the records written meanwhile")
        await read_through(again)
    assert_exactly_once_in_order(second_sink, second)
    assert not any(r.replayed for r in second_sink.records)


async def test_restart_replays_unsettled_records_flagged_as_replays(
    client: Any, aws: AwsClients
) -> None:
    """With a replay window, records read just before the stop come again, marked."""
    tables = make_global(client)
    sink = Collector()
    settings = replace(FAST, replay_seconds=60.0)
    async with running(reader(aws, sink, settings=settings)) as r:
        await write(tables["us-east-1"], ["p0", "p1", "p2"])
        await wait_for(lambda: len(sink.records) == 3, what="three records")
        positions = r.checkpoint(time.time())
    (position,) = positions.values()
    assert position.sequence is None and position.read == sink.records[-1].sequence_number
    await write(tables["us-east-1"], ["p3"])
    again = Collector()
    async with running(reader(aws, again, settings=settings, positions=positions)):
        await wait_for(lambda: len(again.records) == 4, what="replay plus the new record")
    assert again.keys() == ["p0", "p1", "p2", "p3"]
    assert [r.replayed for r in again.records] == [True, True, True, False]
    assert not any(r.fresh for r in again.records[:3])


async def test_the_checkpoint_stays_before_records_the_detector_still_holds(
    client: Any, aws: AwsClients
) -> None:
    """No replay window, but the detector still holds p1 (another region is behind): the
    settled position stays before p1, so a restart reads p1 and p2 again."""
    tables = make_global(client)
    sink = Collector()
    async with running(reader(aws, sink)) as r:
        await write(tables["us-east-1"], ["p0"])
        await wait_for(lambda: len(sink.records) == 1, what="p0")
        await write(tables["us-east-1"], ["p1", "p2"])  # written after p0 was delivered
        await wait_for(lambda: len(sink.records) == 3, what="three records")
        # What the watcher passes: just before the oldest held record was observed.
        positions = r.checkpoint(time.time(), sink.records[1].arrived_by - 0.001)
        # Without it, everything read is settled.
        assert [p.sequence for p in r.checkpoint(time.time()).values()] == [
            sink.records[2].sequence_number]
    (position,) = positions.values()
    assert position.sequence == sink.records[0].sequence_number
    again = Collector()
    async with running(reader(aws, again, positions=positions)):
        await wait_for(lambda: len(again.records) == 2, what="the held records again")
    assert again.keys() == ["p1", "p2"] and all(r.replayed for r in again.records)


async def test_missing_table_is_reported_and_picked_up_once_created(
    client: Any, aws: AwsClients, metrics: Metrics
) -> None:
    sink = Collector()
    async with running(reader(aws, sink, table="Later")) as r:
        await wait_for(lambda: r.status()["last_error"], what="the missing table to be reported")
        status = r.status()
        assert status["state"] == "error"
        assert status["last_error"]["code"] == "ResourceNotFoundException"
        ddb = client("us-east-1")
        create_table(ddb, "Later", stream=False)
        await wait_for(
            lambda: (r.status()["last_error"] or {}).get("code") == "StreamNotEnabled",
            what="a table without a stream to be reported",
        )
        await asyncio.to_thread(
            ddb.update_table, TableName="Later",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        await asyncio.to_thread(put, ddb, "Later", "l1", Status="New")
        await wait_for(lambda: len(sink.records) == 1, what="the record once the stream exists")
        assert r.status()["state"] == "reading"


async def test_access_denied_is_reported_without_crashing(strict_regions: EmulatorServer) -> None:
    # The emulator with --strict-regions refuses regions it does not serve with
    # UnrecognizedClientException, which gtmon maps to AccessDenied (credentials or policy:
    # an operator must act).
    emu = strict_regions
    clients = AwsClients(
        AwsSettings(endpoint_url=emu.url, connect_timeout_seconds=1, read_timeout_seconds=1,
                    max_attempts=1),
        metrics=Metrics(CollectorRegistry(), "test"),
    )
    await clients.start(["us-west-2"])
    try:
        sink = Collector()
        r = reader(clients, sink, region="us-west-2")
        async with running(r):
            await wait_for(lambda: r.status()["last_error"], what="the refusal to be reported")
            await asyncio.sleep(0.5)  # retried slowly, still alive
        assert r.status()["last_error"]["code"] == "UnrecognizedClientException"
        assert r.status()["state"] == "error"
    finally:
        await clients.close()


async def test_reader_survives_a_failing_sink(client: Any, aws: AwsClients) -> None:
    tables = make_global(client)
    seen: list[str] = []

    def sink(record: Any) -> None:
        seen.append(record.sequence_number)
        if len(seen) == 2:
            raise RuntimeError("detector bug")

    r = reader(aws, sink, metrics=aws.metrics)  # type: ignore[arg-type]
    async with running(r):
        await write(tables["us-east-1"], ["f0", "f1", "f2"])
        await wait_for(lambda: len(seen) == 3, what="all records despite the failure")
    assert r.sink_errors == 1
    assert r.status()["last_error"]["code"] == "RuntimeError"
    assert aws.metrics is not None
    assert aws.metrics.registry.get_sample_value(
        "gtmon_internal_errors_total", {"component": "stream_sink", "type": "RuntimeError"}) == 1


def test_clock_is_injected() -> None:
    assert isinstance(SystemClock().wall(), float)
