"""Burst polling: a write crossing a table makes every region's readers poll at the floor.

The pure rules with plain numbers, a reader's pause woken by a burst, the
watcher's trigger, and the whole thing against the emulator: idle readers of
the other regions poll at the floor after a write in one region, then fall
back to the ceiling.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from streams_helpers import REGIONS, make_global, put, wait_for

from monitor.aws import AwsClients, Throttled
from monitor.clock import SystemClock
from monitor.config import AwsSettings, Config, parse_config
from monitor.emulator import EmulatorServer
from monitor.metrics import Metrics
from monitor.streams.pacing import AdaptiveInterval, Burst
from monitor.streams.reader import ReaderSettings, StreamReader, StreamRecord, _Shard
from monitor.streams.watcher import ConflictWatcher

pytestmark = pytest.mark.timeout(60)


# ---- pure rules ----------------------------------------------------------------------------


def test_burst_starts_once_extends_and_ends() -> None:
    burst = Burst()
    assert not burst.active(0.0)
    assert burst.extend(5.0, now=0.0) is True  # starts: sleeping readers need waking
    assert burst.active(4.9) and not burst.active(5.0)
    assert burst.extend(7.0, now=1.0) is False  # running: only extended
    assert burst.extend(6.0, now=2.0) is False and burst.until == 7.0  # never shortened
    assert burst.active(6.9)
    assert burst.extend(9.0, now=8.0) is True  # over, a new one starts
    assert burst.extend(8.5, now=9.0) is False and not burst.active(9.0)  # already past


def test_bursting_polls_at_the_floor_and_returns_to_the_interval_underneath() -> None:
    interval = AdaptiveInterval(floor=0.2, ceiling=2.0, growth=2.0)
    for _ in range(5):
        interval.after_poll(0, False)
    assert interval.current == 2.0  # idle at the ceiling
    assert interval.after_poll(0, False, bursting=True) == 0.2
    assert interval.after_poll(0, False, bursting=True) == 0.2
    assert interval.after_poll(1000, True, bursting=True) == 0.0  # a full page: at once
    # Records during the burst reset the interval underneath, which grows meanwhile ...
    assert interval.after_poll(3, False, bursting=True) == 0.2
    delays = [interval.after_poll(0, False, bursting=True) for _ in range(4)]
    assert delays == [0.2] * 4
    # ... so after the burst an idle shard is back at the ceiling, not climbing from the floor.
    assert interval.after_poll(0, False) == 2.0


# ---- one reader ----------------------------------------------------------------------------

FLOOR = 0.1


def _idle_reader(region: str = "us-east-1") -> StreamReader:
    clients = AwsClients(AwsSettings(endpoint_url="http://127.0.0.1:9"))  # never called
    settings = ReaderSettings(poll_interval_min=FLOOR, poll_interval_max=5.0)
    return StreamReader("Orders", region, clients, lambda record: None, clock=SystemClock(),
                        settings=settings)


async def test_a_burst_wakes_a_shard_sleeping_at_the_ceiling_at_once() -> None:
    reader = _idle_reader()
    shard = reader._shards.setdefault("s1", _Shard("s1", None))
    pause = asyncio.create_task(reader._pause(shard, 5.0))
    await asyncio.sleep(0.3)
    assert not pause.done()
    woken = time.monotonic()
    assert reader.burst(time.monotonic() + 2.0) is True
    await asyncio.wait_for(pause, 1.0)
    assert time.monotonic() - woken < 0.05  # the floor had passed since the last poll
    assert reader.bursting()
    # A burst already running is extended without waking anyone.
    assert reader.burst(time.monotonic() + 3.0) is False
    assert not shard.wake.is_set()


async def test_a_woken_shard_still_waits_the_floor_after_its_last_poll() -> None:
    reader = _idle_reader()
    shard = reader._shards.setdefault("s1", _Shard("s1", None))
    started = time.monotonic()
    pause = asyncio.create_task(reader._pause(shard, 5.0))
    await asyncio.sleep(0.01)
    reader.burst(time.monotonic() + 2.0)
    await asyncio.wait_for(pause, 1.0)
    assert FLOOR - 0.01 <= time.monotonic() - started < FLOOR + 0.1


class _Throttling:
    """AWS refusing every GetRecords: the shard backs off."""

    def __init__(self) -> None:
        self.get_records: list[float] = []

    async def call(self, region: str, service: str, operation: str, **kwargs: Any) -> Any:
        if operation == "get_shard_iterator":
            return {"ShardIterator": "iterator-1"}
        self.get_records.append(time.monotonic())
        raise Throttled(region, operation, "ThrottlingException", "Rate exceeded")


async def test_a_burst_does_not_cut_a_backoff_short() -> None:
    """Only the pause between polls is woken: a throttled shard keeps backing off."""
    aws = _Throttling()
    settings = ReaderSettings(poll_interval_min=FLOOR, backoff_base=2.0, backoff_cap=2.0)
    reader = StreamReader("Orders", "us-east-1", aws, lambda record: None,  # type: ignore[arg-type]
                          clock=SystemClock(), settings=settings)
    reader.stream_arn = "arn:stream"
    shard = reader._shards.setdefault("s1", _Shard("s1", None))
    task = asyncio.create_task(reader._read_shard(shard))
    try:
        await wait_for(lambda: aws.get_records, what="the first, throttled poll")
        assert reader.burst(time.monotonic() + 5.0) is True
        await asyncio.sleep(0.6)  # the backoff is at least 1 s (half the base)
        assert len(aws.get_records) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# ---- the watcher's trigger ------------------------------------------------------------------


def _config(tmp_path: Path, url: str = "http://127.0.0.1:9", canary_key: dict[str, str] | None = None,
            **streams: Any) -> Config:
    orders: dict[str, Any] = {"name": "Orders"}
    if canary_key is not None:
        orders["canary_key"] = canary_key
    return parse_config({
        "instance_id": "test",
        "regions": REGIONS,
        "aws": {"endpoint_url": url, "connect_timeout_seconds": 1, "read_timeout_seconds": 1,
                "max_attempts": 1},
        "streams": {"checkpoint_path": str(tmp_path / "cp.json"), **streams},
        "tables": [orders, {"name": "Other"}],
    })


class _Detector:
    def __init__(self) -> None:
        self.observations: list[Any] = []

    def observe(self, observation: Any) -> None:
        self.observations.append(observation)


def _watcher(cfg: Config) -> tuple[ConflictWatcher, _Detector]:
    metrics = Metrics(CollectorRegistry(), "test")
    watcher = ConflictWatcher(cfg, AwsClients(cfg.aws, metrics), metrics, SystemClock())
    detector = _Detector()
    for table in ("Orders", "Other"):
        watcher.detectors[table] = detector  # type: ignore[assignment]
        for region in REGIONS:
            watcher.readers[(table, region)] = _idle_reader(region)
    return watcher, detector


def _record(key: str, *, fresh: bool = True, **image: Any) -> StreamRecord:
    data = {
        "Keys": {"OrderID": {"S": key}},
        "NewImage": {"OrderID": {"S": key}, **image},
        "SequenceNumber": "100000000000000000001",
        "ApproximateCreationDateTime": 1_700_000_000,
    }
    return StreamRecord(
        "Orders", "eu-west-1", "shard-1", "100000000000000000001",
        {"eventName": "INSERT", "dynamodb": data}, 1_700_000_000.5, fresh,
        1_700_000_000.1 if fresh else None, arrived_by=1_700_000_000.7,
    )


def test_a_record_bursts_every_reader_of_its_table_and_passes_the_bounds(tmp_path: Path) -> None:
    watcher, detector = _watcher(_config(tmp_path, burst_seconds=5.0))
    watcher._on_record(_record("o-1"))
    assert all(watcher.readers[("Orders", r)].bursting() for r in REGIONS)
    assert not any(watcher.readers[("Other", r)].bursting() for r in REGIONS)
    (fresh,) = detector.observations
    assert (fresh.observed_after, fresh.observed_at) == (1_700_000_000.1, 1_700_000_000.7)
    watcher._on_record(_record("o-2", fresh=False))
    # A backlog record has no earliest bound; its latest one (it was there when read) holds.
    assert (detector.observations[1].observed_after, detector.observations[1].observed_at) == (
        None, 1_700_000_000.7)


def test_no_burst_when_switched_off_or_for_canary_items(tmp_path: Path) -> None:
    off, _ = _watcher(_config(tmp_path, burst_seconds=0))
    off._on_record(_record("o-1"))
    assert not any(reader.bursting() for reader in off.readers.values())
    on, detector = _watcher(_config(tmp_path, canary_key={"OrderID": "__gtmon__#{instance}#{source}"}))
    assert on.config.streams.burst_seconds == 5.0  # the default
    # gtmon's own canary, rewritten every interval, would keep a table bursting for ever.
    on._on_record(_record("__gtmon__#a#us-east-1", gtmon_seq={"N": "1"}))
    assert not any(reader.bursting() for reader in on.readers.values())
    assert detector.observations == []


# ---- against the emulator ------------------------------------------------------------------

CEILING = 1.0
BURST = 1.5


async def test_after_a_write_idle_regions_poll_at_the_floor_then_fall_back_to_idle(
    emu: EmulatorServer, client: Any, tmp_path: Path
) -> None:
    tables = make_global(client)
    cfg = _config(tmp_path, emu.url, poll_interval_min_seconds=FLOOR,
                  poll_interval_max_seconds=CEILING, burst_seconds=BURST, settle_seconds=1.0)
    cfg = cfg.model_copy(update={"tables": cfg.tables[:1]})
    metrics = Metrics(CollectorRegistry(), "test")
    clients = AwsClients(cfg.aws, metrics=metrics)
    settings = ReaderSettings.from_config(cfg.streams, describe_interval=5.0)
    watcher = ConflictWatcher(cfg, clients, metrics, SystemClock(), reader_settings=settings,
                              detector_interval=0.1, rng=random.Random(5))
    polls: dict[str, list[float]] = defaultdict(list)
    deliveries: list[tuple[str, float]] = []
    call = clients.call

    async def counting_call(region: str, service: str, operation: str, *args: Any,
                            **kwargs: Any) -> Any:
        if operation == "get_records":
            polls[region].append(time.monotonic())
        return await call(region, service, operation, *args, **kwargs)

    clients.call = counting_call  # type: ignore[method-assign]
    await watcher.start()
    try:
        for reader in watcher.readers.values():
            sink = reader.sink

            def noting(item: StreamRecord, sink: Any = sink) -> None:
                deliveries.append((item.region, time.monotonic()))
                sink(item)

            reader.sink = noting

        def idle() -> bool:
            return all(len(p) >= 3 and p[-1] - p[-2] > 0.9 * CEILING for p in polls.values())

        await wait_for(lambda: len(polls) == 3 and idle(), what="every reader idle at the ceiling")
        await asyncio.to_thread(put, tables["us-east-1"], "Orders", "o-1", Status="New")
        await wait_for(lambda: {r for r, _ in deliveries} == set(REGIONS),
                       what="the write in every region's stream")
        start = min(t for _, t in deliveries)
        end = max(t for _, t in deliveries) + BURST  # every record extends the burst
        await asyncio.sleep(end - time.monotonic() + 2.5 * CEILING)
    finally:
        await watcher.stop()
        await clients.close()

    first_region = min(deliveries, key=lambda d: d[1])[0]
    for region, times in polls.items():
        during = [t for t in times if start + 0.3 < t < end - 0.1]
        after = [t for t in times if end + CEILING < t]
        gaps = [b - a for a, b in itertools.pairwise(during)]
        # At the floor while the write crosses the table (idle, it would be one poll a second) ...
        assert len(during) >= (end - start - 0.4) / (FLOOR + 0.1), (region, during)
        assert max(gaps) < FLOOR + 0.15, (region, gaps)
        if region != first_region:
            # ... woken at once, not at the end of its idle sleep ...
            woken = min(t for t in times if t > start)
            assert woken - start < FLOOR + 0.1, (region, woken - start)
        # ... and back at the ceiling afterwards.
        after_gaps = [b - a for a, b in itertools.pairwise(after)]
        assert after_gaps and min(after_gaps) > 0.8 * CEILING, (region, after_gaps)
