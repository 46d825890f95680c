"""Arrival bounds: when a record became visible in a region's stream, as true bounds.

The pure rules (the one-way floor, the bounds of one poll) with plain numbers,
then readers against the emulator, whose ground truth knows when each write
was applied in each region (the emulator runs in this process: the same wall
clock, and a stream is read under the same lock a write is applied under).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest
from streams_helpers import FAST, Collector, make_global, put, reader, running, wait_for

from monitor.aws import AwsClients
from monitor.emulator import EmulatorServer
from monitor.emulator.control import ControlClient
from monitor.streams.reader import RoundTripFloor, StreamReader, StreamRecord, arrival_bounds

pytestmark = pytest.mark.timeout(60)


# ---- pure rules ----------------------------------------------------------------------------


def test_floor_is_half_the_shortest_recent_round_trip_less_a_margin_and_zero_until_known() -> None:
    floor = RoundTripFloor(size=4, min_samples=3)
    floor.add(0.30)
    floor.add(0.10)
    assert floor.one_way() == 0.0  # too few round trips: assume nothing
    floor.add(0.20)
    assert floor.one_way() == pytest.approx(0.05 - floor.margin)
    for rt in (0.4, 0.4, 0.4, 0.4):  # the 0.10 and 0.20 leave the window: the route got slower
        floor.add(rt)
    assert floor.one_way() == pytest.approx(0.2 - floor.margin)
    floor.add(-1.0)  # a clock oddity never makes the floor negative
    assert floor.one_way() == 0.0


def test_bounds_of_one_poll() -> None:
    # Sent at 10.0, answered at 10.2, one-way floor 0.08; the previous poll, sent at 9.0,
    # read everything.
    assert arrival_bounds(10.0, 10.2, 9.0, 0.08) == (pytest.approx(9.08), pytest.approx(10.12))
    # No previous poll that read everything: no earliest bound, the latest still holds.
    assert arrival_bounds(10.0, 10.2, None, 0.08) == (None, pytest.approx(10.12))
    # A floor larger than half this poll's round trip is capped: the served instant
    # cannot lie outside [sent, received] and the bounds never cross.
    after, by = arrival_bounds(10.0, 10.1, 9.99, 0.3)
    assert by == pytest.approx(10.05) and after is not None and after <= by
    assert arrival_bounds(10.0, 10.2, 9.0, 0.0) == (9.0, 10.2)


# ---- against the emulator ------------------------------------------------------------------

LATENCY_MS = {"us-east-1": 10.0, "eu-west-1": 60.0, "ap-southeast-1": 150.0}


def _applied(emu: EmulatorServer) -> dict[str, dict[str, float]]:
    """Per item key: region -> when the emulator applied the write there (its stream got it)."""
    with emu.emulator.lock:
        writes = emu.emulator.truth.writes("Orders")
        return {w.key["OrderID"]["S"]: dict(w.applied) for w in writes}


#: What the symmetric-path assumption neglects: the client's and the emulator's own
#: processing on either side of the instant the stream is read (signing, parsing, JSON,
#: the GIL both share here). Measured: up to tens of microseconds, rarely.
SLACK = 0.002


def _check_bounds(sink: Collector, applied: dict[str, dict[str, float]]) -> list[float]:
    """Every record's true visibility inside its bounds; returns the fresh bounds' widths."""
    widths = []
    for record in sink.records:
        key = record.record["dynamodb"]["Keys"]["OrderID"]["S"]
        visible = applied[key][record.region]
        assert record.arrived_by is not None
        assert visible <= record.arrived_by + SLACK, (key, record.region, visible, record)
        assert record.fresh == (record.arrived_after is not None)
        if record.arrived_after is not None:
            assert record.arrived_after - SLACK <= visible, (key, record.region, visible, record)
            widths.append(record.arrived_by - record.arrived_after)
    return widths


@asynccontextmanager
async def running_all(readers: list[StreamReader]) -> AsyncIterator[None]:
    """Run several readers at once; cancel them all on exit."""
    tasks = [asyncio.create_task(r.run()) for r in readers]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
def latency(emu: EmulatorServer) -> Any:
    """Client round trips like a monitor far from two of its regions; removed after the test."""
    ctl = ControlClient(emu.url)
    for region, ms in LATENCY_MS.items():
        ctl.fault("latency", region=region, ms=ms, jitter_ms=ms / 5)
    yield ctl
    for region in LATENCY_MS:
        ctl.fault("latency", region=region, ms=0)


async def test_true_visibility_lies_inside_the_bounds_in_every_region(
    emu: EmulatorServer, client: Any, aws: AwsClients, latency: Any
) -> None:
    tables = make_global(client)
    put(tables["us-east-1"], "Orders", "before", Status="New")  # read by a first poll
    assert emu.emulator.settle(10)
    sinks = {region: Collector() for region in LATENCY_MS}
    readers = [reader(aws, sinks[region], region=region) for region in LATENCY_MS]
    async with running_all(readers):
        await wait_for(lambda: all(len(s.records) == 1 for s in sinks.values()),
                       what="the first record everywhere")
        # Enough round trips for a floor, then writes from every region, spaced so that
        # some land between polls (fresh) and some while a poll is in flight.
        await wait_for(lambda: all(r.one_way_floor() > 0 for r in readers), what="a floor")

        def writes() -> None:
            for i in range(12):
                region = list(LATENCY_MS)[i % 3]
                put(tables[region], "Orders", f"k{i:02d}", Status=f"s{i}")
                time.sleep(0.07 * (i % 4))

        await asyncio.to_thread(writes)
        await wait_for(lambda: all(len(s.records) == 13 for s in sinks.values()),
                       what="every write in every region")
        floors = {r.region: r.one_way_floor() for r in readers}
    applied = _applied(emu)
    for region, sink in sinks.items():
        first = sink.records[0]
        assert not first.fresh and first.arrived_after is None, "a first read has no earliest bound"
        widths = _check_bounds(sink, applied)
        assert len(widths) >= 6, f"{region}: too few fresh records ({len(widths)})"
        # The floor takes half a round trip off each side: the latest bound lies within the
        # latency's jitter of the midpoint (without it: half a round trip after it) ...
        rt = LATENCY_MS[region] / 1000
        # (the median poll: a call slowed by the busy test process is later, not wrong).
        late = statistics.median(r.arrived_by - r.observed_at for r in sink.records if r.arrived_by)
        assert late < 0.25 * rt + 0.01, (region, late)
        # ... and a fresh record's bounds span one polling interval (at most the 0.2 s
        # ceiling) plus about one round trip (two consecutive polls are served a round trip
        # apart at least), not plus two.
        assert max(widths) < FAST.poll_interval_max + 1.2 * 1.2 * rt + 0.08, (region, widths)
        print(region, f"late={late:.4f}", f"floor={floors[region]:.4f}",
              "widths", [round(w, 3) for w in widths])
        # Half the shortest round trip: at least half the injected latency's minimum.
        assert floors[region] >= 0.5 * LATENCY_MS[region] / 1000 * 0.95 - 0.002, floors


async def test_no_earliest_bound_after_a_failed_poll(
    emu: EmulatorServer, client: Any, aws: AwsClients, control: ControlClient
) -> None:
    tables = make_global(client)
    sink = Collector()
    async with running(reader(aws, sink)) as r:
        put(tables["us-east-1"], "Orders", "o0", Status="New")
        await wait_for(lambda: len(sink.records) == 1, what="a record before the outage")
        await asyncio.sleep(0.3)  # idle polls that read everything
        control.fault("outage", region="us-east-1", mode="error")
        await wait_for(lambda: r.status()["state"] == "error", what="the outage")
        await asyncio.to_thread(put, tables["eu-west-1"], "Orders", "o1", Status="New")
        assert emu.emulator.settle(10)  # replicated into us-east-1's stream meanwhile
        control.fault("restore", region="us-east-1")
        await wait_for(lambda: len(sink.records) == 2, what="the record after the outage")
        await asyncio.sleep(0.3)
        await asyncio.to_thread(put, tables["eu-west-1"], "Orders", "o2", Status="New")
        await wait_for(lambda: len(sink.records) == 3, what="a record after catching up")
    after_outage = sink.records[1]
    assert not after_outage.fresh and after_outage.arrived_after is None
    assert after_outage.arrived_by is not None
    assert sink.records[2].fresh and sink.records[2].arrived_after is not None
    _check_bounds(sink, _applied(emu))


async def test_a_full_page_leaves_the_rest_of_the_backlog_without_an_earliest_bound(
    emu: EmulatorServer, client: Any, aws: AwsClients, control: ControlClient
) -> None:
    tables = make_global(client)
    sink = Collector()
    settings = replace(FAST, get_records_limit=2)
    async with running(reader(aws, sink, region="eu-west-1", settings=settings)) as r:
        await wait_for(lambda: r.watermark() is not None, what="the reader to catch up")
        await asyncio.sleep(0.3)
        # Six writes held on the link, then delivered at once: a backlog of three pages.
        control.fault("pause", **{"from": "us-east-1", "to": "eu-west-1"})

        def writes() -> None:
            for i in range(6):
                put(tables["us-east-1"], "Orders", f"b{i}", Status="New")

        await asyncio.to_thread(writes)
        control.fault("resume", **{"from": "us-east-1", "to": "eu-west-1"})
        await wait_for(lambda: len(sink.records) == 6, what="the backlog")
    # The first page follows a poll that read everything; the next two follow full pages.
    assert [rec.fresh for rec in sink.records] == [True, True, False, False, False, False]
    _check_bounds(sink, _applied(emu))


def test_records_built_by_hand_carry_no_latest_bound() -> None:
    record = StreamRecord("Orders", "us-east-1", "s", "1", {}, 1.0, False, None)
    assert record.arrived_by is None and not record.replayed
