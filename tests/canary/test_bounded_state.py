"""What a stall leaves behind in the canary runner: bounded, and still visible (issue 15, item 2).

The runner is driven by hand here with a fake clock and answers fed straight into it,
so a stall of any length takes no time: canaries are written, reads answered, and the
state, the oldest-pending gauge and gtmon_canary_lost_total checked after each step.
bench/stall_memory.py runs the same in virtual time with the probe loops and measures
memory and event-loop blocking.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitor.canary.lag import Interval, estimate_lag, pick_bracket
from monitor.canary.runner import (
    BRACKET_READS,
    MAX_PENDING,
    SETTLE_BATCH,
    CanaryRunner,
    CanaryTarget,
    Measurement,
    PairProbe,
)
from monitor.config import parse_config
from monitor.metrics import Metrics

SOURCE, TARGET = "us-east-1", "eu-west-1"
LABELS = {"table": "gtmon-canary", "source_region": SOURCE, "target_region": TARGET}


@dataclass
class FakeClock:
    now: float = 1000.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_700_000_000.0 + self.now


class NoAws:
    """Every write succeeds at once; reads are fed to the runner by the test."""

    async def call(self, region: str, service: str, operation: str, **kwargs: Any) -> Any:
        return {}


def make_runner(timeout: float = 10.0, interval: float = 1.0) -> tuple[CanaryRunner, FakeClock, Metrics]:
    config = parse_config(
        {
            "instance_id": "test",
            "regions": [SOURCE, TARGET],
            "canary": {"interval_seconds": interval, "timeout_seconds": timeout, "stall_seconds": 5},
            "streams": {"enabled": False},
        },
        "test",
    )
    clock = FakeClock()
    metrics = Metrics(CollectorRegistry(), "test")
    target = CanaryTarget("gtmon-canary", (SOURCE, TARGET), (("pk", "{instance}#{source}"),))
    runner = CanaryRunner(target, config.canary, "test", NoAws(), metrics, clock)  # type: ignore[arg-type]
    metrics.add_replication_state(runner.readings)
    return runner, clock, metrics


def probe_of(runner: CanaryRunner) -> PairProbe:
    return runner.probes[(SOURCE, TARGET)]


def answer(seq: int | None) -> dict[str, Any]:
    return {} if seq is None else {"gtmon_seq": {"N": str(seq)}, "gtmon_written_at": {"N": "0"}}


def oldest_pending(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("gtmon_replication_oldest_pending_seconds", LABELS)
    assert value is not None
    return value


def lost(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("gtmon_canary_lost_total", LABELS) or 0.0


async def stall(
    runner: CanaryRunner, clock: FakeClock, seconds: int, reads_per_second: int = 20
) -> list[int]:
    """One canary a second, every read a miss (the link is paused); the written sequences."""
    probe = probe_of(runner)
    written = []
    for _ in range(seconds):
        await runner.write(SOURCE)
        written.append(next(reversed(probe.pending)))
        for _ in range(reads_per_second):
            clock.now += 1.0 / reads_per_second
            runner._absorb(probe, Interval(clock.now - 0.01, clock.now), answer(None))
        runner._expire(probe, clock.now)
    return written


async def test_a_canary_keeps_only_the_reads_its_bracket_can_use():
    runner, clock, _ = make_runner(timeout=3600)
    await stall(runner, clock, 120)
    probe = probe_of(runner)
    assert len(probe.pending) == 120
    # Before: 20 reads a second appended to every waiting canary, ~1.2 million references here.
    assert all(len(p.misses) <= BRACKET_READS and not p.hits for p in probe.pending.values())
    newest = next(reversed(probe.pending.values()))
    assert max(m.sent for m in newest.misses) == clock.now - 0.01  # the latest misses are the ones kept


async def test_the_kept_reads_bracket_exactly_as_all_of_them_would():
    rng = random.Random(5)
    for _ in range(200):
        runner, clock, _ = make_runner()
        probe = probe_of(runner)
        for _ in range(10):
            probe.read_floor.add(rng.uniform(0.004, 0.04))  # a floor is known: looks are bounded
        await runner.write(SOURCE)
        seq = next(iter(probe.pending))
        write = probe.pending[seq].write
        arrival = write.received + rng.uniform(0.1, 1.0)
        reads = []
        for i in range(rng.randint(20, 80)):  # pipelined, out-of-order answers
            sent = write.received + i * rng.uniform(0.005, 0.03)
            read = Interval(sent, sent + rng.uniform(0.004, 0.3))
            # Looks near either end break the floor's assumption now and then: some misses
            # then contradict the hit and are passed over (as with all reads kept).
            look = read.sent + read.round_trip * rng.choice([0.02, 0.5, 0.98])
            reads.append((read, look >= arrival))
        probe.in_flight[object()] = write.received  # type: ignore[index]  # holds settling back
        for read, hit in sorted(reads, key=lambda r: r[0].received):
            clock.now = read.received
            runner._absorb(probe, read, answer(seq if hit else None))
        measured: list[Measurement] = []
        runner.observers.append(measured.append)
        probe.in_flight.clear()
        runner._settle(probe)
        floor = probe.read_floor.one_way()
        if not any(hit for _, hit in reads):
            assert not measured
            continue
        miss, hit = pick_bracket([r for r, h in reads if not h], [r for r, h in reads if h], floor)
        expected = estimate_lag(write, miss, hit, None, floor)
        assert [m.estimate for m in measured] == [expected]


async def test_canaries_older_than_the_timeout_are_given_up_and_counted_while_the_gauge_keeps_rising():
    runner, clock, metrics = make_runner(timeout=10)
    probe = probe_of(runner)
    await runner.write(SOURCE)
    first_commit = next(iter(probe.pending.values())).write.midpoint
    ages = []
    for _ in range(60):
        await stall(runner, clock, 1)
        ages.append(oldest_pending(metrics))
        assert len(probe.pending) <= 11  # timeout / interval, plus the newest
    # Rises by the elapsed time for the whole stall, through every canary given up.
    assert ages == sorted(ages) and all(b - a > 0.99 for a, b in itertools.pairwise(ages))
    assert abs(ages[-1] - (clock.now - first_commit)) < 1e-9
    assert lost(metrics) == 61 - len(probe.pending)
    assert probe.lost == lost(metrics)


async def test_a_read_that_shows_a_given_up_canary_moves_the_gauge_on_and_the_newest_ends_the_stall():
    runner, clock, metrics = make_runner(timeout=10)
    written = await stall(runner, clock, 40)
    probe = probe_of(runner)
    given_up = [s for s in written if s not in probe.pending]
    assert len(given_up) == 40 - len(probe.pending) > 20
    # The backlog drains in order: first only the oldest canaries are visible.
    middle = given_up[len(given_up) // 2]
    before = oldest_pending(metrics)
    runner._absorb(probe, Interval(clock.now, clock.now + 0.01), answer(middle))
    after = oldest_pending(metrics)
    assert 0 < after < before
    # Within one interval of the oldest canary not yet shown.
    assert before - after == pytest.approx(len(given_up) // 2, abs=1.0)
    clock.now += 0.02
    runner._absorb(probe, Interval(clock.now, clock.now + 0.01), answer(written[-1]))
    assert probe.unseen is None and not probe.pending
    assert oldest_pending(metrics) == 0.0


async def test_the_newest_canary_is_never_given_up_so_a_silent_source_still_ends_its_stall():
    runner, clock, metrics = make_runner(timeout=5)
    probe = probe_of(runner)
    written = await stall(runner, clock, 3)
    clock.now += 60  # the source stopped taking writes; nobody reads for a minute
    runner._expire(probe, clock.now)
    assert list(probe.pending) == written[-1:]
    assert lost(metrics) == 2
    # It is still polled (the late poll) and the gauge counts from the oldest.
    assert runner._next_due(probe) is not None
    assert oldest_pending(metrics) > 60
    runner._absorb(probe, Interval(clock.now, clock.now + 0.01), answer(written[-1]))
    assert oldest_pending(metrics) == 0.0


async def test_pending_canaries_are_capped_at_max_pending_whatever_the_timeout():
    runner, clock, metrics = make_runner(timeout=3600)
    await stall(runner, clock, MAX_PENDING + 50, reads_per_second=1)
    assert len(probe_of(runner).pending) == MAX_PENDING
    assert lost(metrics) == 50


async def test_settling_a_thousand_canaries_after_a_stall_yields_to_the_loop_between_batches():
    runner, clock, metrics = make_runner(timeout=3600)
    written = await stall(runner, clock, MAX_PENDING, reads_per_second=2)
    probe = probe_of(runner)
    measured: list[Measurement] = []
    runner.observers.append(measured.append)
    settle = runner._settle
    calls: list[tuple[float, int]] = []

    def timed(p: PairProbe) -> None:
        before, started = len(p.pending), time.perf_counter()
        settle(p)
        calls.append((time.perf_counter() - started, before - len(p.pending)))

    runner._settle = timed  # type: ignore[method-assign]
    clock.now += 0.05
    runner._absorb(probe, Interval(clock.now, clock.now + 0.01), answer(written[-1]))  # the stall ends
    assert len(measured) == SETTLE_BATCH  # the rest waits behind the loop's other callbacks
    for _ in range(MAX_PENDING // SETTLE_BATCH + 2):
        await asyncio.sleep(0)
    assert len(measured) == MAX_PENDING and not probe.pending
    assert max(n for _, n in calls) == SETTLE_BATCH
    # The bound itself (50 ms) with room for a loaded machine; bench/stall_memory.py measures it.
    assert max(t for t, _ in calls) < 0.05, calls
    assert oldest_pending(metrics) == 0.0


async def test_canaries_released_together_after_a_stall_leave_the_read_plan_as_it_was():
    runner, clock, _ = make_runner(timeout=120)
    probe = probe_of(runner)
    # A steady link: each canary arrives 0.5 s after its write, bracketed within 25 ms.
    for _ in range(40):
        await runner.write(SOURCE)
        seq = next(reversed(probe.pending))
        for offset, seen in ((0.475, None), (0.525, seq)):
            runner._absorb(probe, Interval(clock.now + offset, clock.now + offset), answer(seen))
        clock.now += 1.0
    window = probe.history.window(0.06)
    written = await stall(runner, clock, 30)
    clock.now += 0.5
    runner._absorb(probe, Interval(clock.now, clock.now), answer(written[-1]))
    measured = probe.measurements
    assert measured == 40 + 30
    assert len(probe.history.samples) == 41  # one of the 30: the newest
    after = probe.history.window(0.06)
    assert after is not None and window is not None
    assert (after.core_low, after.core_high) == (window.core_low, window.core_high)


class SlowWrites(NoAws):
    """Writes answered `seconds` after they are sent (the SDK retrying a throttled write)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.seconds = 0.01

    async def call(self, region: str, service: str, operation: str, **kwargs: Any) -> Any:
        if operation == "put_item":
            self.clock.now += self.seconds
        return {}


async def canary_through(runner: CanaryRunner, clock: FakeClock, aws: SlowWrites,
                         write_seconds: float, commit_share: float) -> None:
    """One canary whose write takes `write_seconds` and commits `commit_share` of the way
    through it; the target shows it 0.5 s after the commit, bracketed within 50 ms."""
    probe = probe_of(runner)
    aws.seconds = write_seconds
    sent = clock.now
    await runner.write(SOURCE)
    seq = next(reversed(probe.pending))
    arrival = sent + commit_share * write_seconds + 0.5
    for at, seen in ((arrival - 0.025, None), (arrival + 0.025, seq)):
        runner._absorb(probe, Interval(at, at), answer(seen))
    clock.now = sent + 1.0


async def test_canaries_whose_writes_were_retried_leave_the_read_plan_as_it_was():
    """A throttled write is retried after a backoff and answered 0.3-0.45 s late instead of
    10 ms: it committed somewhere in that, so its lag is known only that widely and its
    midpoint is off by up to 0.2 s. In the plan's history, such canaries spread the core
    over the backoffs (the soak: the pairs from a region throttled for 70 s were bracketed
    twice as widely for 30 canaries after). They are still measured, not planned from."""
    runner, clock, _ = make_runner(timeout=120)
    aws = SlowWrites(clock)
    runner._clients = aws  # type: ignore[assignment]
    probe = probe_of(runner)
    rng = random.Random(7)
    for _ in range(40):
        await canary_through(runner, clock, aws, 0.01, 0.5)
    window = probe.history.window(0.06)
    # Fewer than a quarter of the history: too few for the planner to take them for a fault.
    for _ in range(12):
        await canary_through(runner, clock, aws, rng.uniform(0.3, 0.45), rng.random())
    assert probe.measurements == 52
    assert probe.history.window(0.06) == window
    assert len(probe.history.samples) == 40
    # A path that stays that slow raises its floor within 64 writes (the 12 above and 52
    # more) and shapes the plan again: the last 13 of these are in the history.
    for _ in range(64):
        await canary_through(runner, clock, aws, 0.4, rng.random())
    assert len(probe.history.samples) == 53
    assert probe.history.window(0.06) != window
