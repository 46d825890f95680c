"""The canary schedule is kept, and said when it is not: lateness, skipped writes, a warning;
canary writes have their own connection pool, so they never queue behind pipelined reads."""

from __future__ import annotations

import asyncio
import time

import pytest
import structlog

from monitor.aws import AwsClients
from monitor.canary.schedule import WARN_EVERY_SECONDS, WriteSchedule
from monitor.canary.table import ensure_canary_table
from monitor.emulator import DelaySpec, EmulatorServer
from monitor.emulator.control import ControlClient

from .conftest import daemon_config, running, wait_for

# ---- the pure core -------------------------------------------------------------------------


def test_a_write_on_time_belongs_to_its_slot_and_is_not_late() -> None:
    schedule = WriteSchedule(anchor=100.0, interval=1.0)
    for k in range(3):
        slot = schedule.take(100.0 + k + 0.002)
        assert (slot.due, slot.skipped) == (100.0 + k, 0)
        assert schedule.went_out(slot, 100.0 + k + 0.004) == pytest.approx(0.004)
    assert schedule.warning(103.0) is None


def test_a_run_a_hair_early_still_belongs_to_the_slot_it_was_meant_for() -> None:
    schedule = WriteSchedule(anchor=0.0, interval=1.0)
    schedule.take(0.0)
    slot = schedule.take(0.999)  # wall-clock scheduler, monotonic anchor: a little drift
    assert (slot.due, slot.skipped) == (1.0, 0)
    assert schedule.went_out(slot, 0.999) == 0.0


def test_due_writes_that_never_went_out_are_counted_as_skipped() -> None:
    schedule = WriteSchedule(anchor=0.0, interval=1.0)
    schedule.take(0.0)
    slot = schedule.take(3.2)  # the runs due at 1 and 2 were dropped by the scheduler
    assert (slot.due, slot.skipped) == (3.0, 2)


def test_not_keeping_the_interval_warns_once_a_minute_with_what_happened_since() -> None:
    schedule = WriteSchedule(anchor=0.0, interval=1.0)
    schedule.went_out(schedule.take(0.0), 0.7)  # 0.7 of an interval late
    said = schedule.warning(0.7)
    assert said == {"late_writes": 1, "skipped_writes": 0, "worst_late_seconds": 0.7}
    schedule.went_out(schedule.take(3.0), 3.1)  # two skipped
    assert schedule.warning(3.1) is None  # within the minute: kept for the next warning
    schedule.went_out(schedule.take(5.0), 5.6)  # one more skipped, and late
    said = schedule.warning(0.7 + WARN_EVERY_SECONDS)
    assert said == {"late_writes": 1, "skipped_writes": 3, "worst_late_seconds": 0.6}
    assert schedule.warning(0.7 + 3 * WARN_EVERY_SECONDS) is None  # nothing new: silence


# ---- against the emulator --------------------------------------------------------------------

LATENCY = 1.0
READS = 192  # three times the shared pool (64): the reads alone take three round trips


async def test_a_canary_write_does_not_queue_behind_reads_that_fill_the_shared_pool(
    emu: EmulatorServer,
) -> None:
    config = daemon_config(emu.url, aws={"read_timeout_seconds": 10})
    clients = AwsClients(config.aws)
    await clients.start(["us-east-1"])
    try:
        await ensure_canary_table(clients, "gtmon-canary", ["us-east-1"], "gtmon_expires_at", 30)
        emu.emulator.faults.set_latency("us-east-1", DelaySpec(ms=LATENCY * 1000))
        key = {"pk": {"S": "pool-test"}}
        reads = [
            asyncio.create_task(
                clients.call("us-east-1", "dynamodb", "get_item", TableName="gtmon-canary", Key=key)
            )
            for _ in range(READS)
        ]
        await asyncio.sleep(0.2)  # every read has taken its place in the pool or its queue

        async def put(lane: str) -> float:
            started = time.monotonic()
            item = {**key, "lane": {"S": lane}}
            await clients.call(
                "us-east-1", "dynamodb", "put_item", lane=lane, TableName="gtmon-canary", Item=item
            )
            return time.monotonic() - started

        own, shared = await asyncio.gather(put("canary_write"), put("shared"))
        for task in reads:
            task.cancel()
        await asyncio.gather(*reads, return_exceptions=True)
    finally:
        await clients.close()
    # Its own pool: one round trip (plus CPU). On the shared pool the same write waits for
    # two batches of reads first: the comparison shows the test can tell them apart.
    assert own < 2 * LATENCY, (own, shared)
    assert shared >= 2 * LATENCY, (own, shared)


async def test_the_daemon_reports_how_late_writes_go_out_and_warns_when_it_skips_them(
    emu: EmulatorServer,
) -> None:
    config = daemon_config(emu.url)  # 0.5 s interval, 1 s read timeout, one attempt
    labels = {"table": "gtmon-canary", "region": "eu-west-1"}
    with structlog.testing.capture_logs() as logs:
        async with running(config) as service:
            def sample(name: str) -> float:
                return service.registry.get_sample_value(name, labels) or 0.0

            await wait_for(
                lambda: sample("gtmon_canary_schedule_lag_seconds_count") >= 2, 10, "two writes"
            )
            # Present from the start, so rate() and increase() see the first skipped write.
            assert service.registry.get_sample_value("gtmon_canary_writes_skipped_total", labels) is not None
            # A black hole holds each write for the 1 s read timeout: the runs due meanwhile
            # are dropped by the scheduler (one write at a time), and the daemon says so.
            ControlClient(emu.url).fault("outage", region="eu-west-1", mode="blackhole")
            await wait_for(
                lambda: sample("gtmon_canary_writes_skipped_total") >= 1, 15, "a skipped write"
            )
            ControlClient(emu.url).fault("restore", region="eu-west-1")
    warnings = [e for e in logs if e["event"] == "canary_schedule_not_kept"]
    # One warning a minute per writer: on a loaded machine the first may already have gone
    # out for a write late at start-up, and then it names that one (the pure test above
    # pins what a warning after skipped writes says).
    assert any(
        w["region"] == "eu-west-1" and w["skipped_writes"] + w["late_writes"] >= 1 for w in warnings
    ), warnings
