"""The supervisor: a crash is logged with its traceback, counted once, and restarted with backoff."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry

from monitor.clock import SystemClock
from monitor.metrics import Metrics
from monitor.supervisor import Supervisor

pytestmark = pytest.mark.timeout(30)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def until(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def supervisor(metrics: Metrics, **kwargs: Any) -> Supervisor:
    return Supervisor(metrics, SystemClock(), backoff_base=0.02, backoff_cap=0.08,
                      rng=random.Random(1), **kwargs)


async def test_a_crash_is_logged_with_its_traceback_counted_and_restarted() -> None:
    metrics = Metrics(CollectorRegistry(), "test")
    sup = supervisor(metrics)
    runs: list[int] = []
    release = asyncio.Event()

    async def reader() -> None:
        runs.append(len(runs))
        if len(runs) <= 2:
            raise KeyError("Records")  # an answer of the wrong shape, say
        await release.wait()
        await asyncio.Event().wait()  # runs until cancelled

    labels = {"component": "stream_reader", "table": "Orders", "region": "eu-west-1"}
    with structlog.testing.capture_logs() as logs:
        handle = sup.spawn("stream_reader", reader, table="Orders", region="eu-west-1")
        await until(lambda: len(runs) == 3)
        assert handle.up and value(metrics, "gtmon_component_up", **labels) == 1
        assert handle.restarts == 2
        assert value(metrics, "gtmon_component_restarts_total", **labels) == 2
        assert value(metrics, "gtmon_internal_errors_total", component="stream_reader",
                     type="KeyError") == 2
        assert handle.last_crash is not None and handle.last_crash["type"] == "KeyError"
        assert sup.down() == []
        await sup.stop()
    assert handle.task is not None and handle.task.cancelled()
    crashes = [e for e in logs if e["event"] == "component_crashed"]
    assert len(crashes) == 2
    assert all(isinstance(e["exc_info"], KeyError) for e in crashes)  # rendered as a traceback
    assert crashes[0]["component"] == "stream_reader" and crashes[0]["region"] == "eu-west-1"


async def test_while_it_waits_to_restart_the_component_is_down() -> None:
    metrics = Metrics(CollectorRegistry(), "test")
    sup = Supervisor(metrics, SystemClock(), backoff_base=30.0, backoff_cap=60.0)

    async def broken() -> None:
        raise TypeError("bug")

    handle = sup.spawn("conflict_detector", broken)
    await until(lambda: handle.last_crash is not None)
    assert not handle.up
    assert [s.component for s in sup.down()] == ["conflict_detector"]
    assert value(metrics, "gtmon_component_up", component="conflict_detector", table="",
                 region="") == 0
    assert sup.status()[0]["up"] is False and sup.status()[0]["last_crash"]["type"] == "TypeError"
    await handle.stop()  # cancelling during the backoff ends it at once
    assert handle.task is not None and handle.task.done()


async def test_a_component_that_returns_is_restarted_like_a_crash() -> None:
    metrics = Metrics(CollectorRegistry(), "test")
    sup = supervisor(metrics)
    runs: list[int] = []

    async def quits() -> None:
        runs.append(1)
        if len(runs) > 1:
            await asyncio.Event().wait()

    handle = sup.spawn("checkpoints", quits)
    await until(lambda: len(runs) == 2)
    assert handle.restarts == 1 and handle.last_crash is not None
    assert handle.last_crash["type"] == "ComponentExited"
    await sup.stop()


async def test_an_error_counted_where_it_happened_is_not_counted_again() -> None:
    metrics = Metrics(CollectorRegistry(), "test")
    sup = supervisor(metrics)
    runs: list[int] = []

    async def calls_aws() -> None:
        runs.append(1)
        if len(runs) == 1:
            error = AttributeError("'list' object has no attribute 'get'")
            metrics.count_internal_error("aws", error)  # what AwsClients.call does
            raise error
        await asyncio.Event().wait()

    sup.spawn("stream_reader", calls_aws, table="T", region="r")
    await until(lambda: len(runs) == 2)
    assert value(metrics, "gtmon_internal_errors_total", component="aws",
                 type="AttributeError") == 1
    assert value(metrics, "gtmon_internal_errors_total", component="stream_reader",
                 type="AttributeError") == 0
    await sup.stop()


async def test_backoff_grows_in_a_crash_loop_and_starts_over_after_a_healthy_run() -> None:
    metrics = Metrics(CollectorRegistry(), "test")
    sup = Supervisor(metrics, SystemClock(), backoff_base=1.0, backoff_cap=8.0,
                     rng=random.Random(2))
    ceilings = [min(8.0, 2.0**n) for n in range(6)]
    delays = [sup._delay(n) for n in range(6)]
    assert all(0.5 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(sup._delay(5) for _ in range(50)) > 4.0  # the ceiling did grow

    async def restart_delays(healthy_after: float) -> list[float]:
        sup = Supervisor(metrics, SystemClock(), backoff_base=0.01, backoff_cap=10.0,
                         healthy_after=healthy_after, rng=random.Random(3))
        runs: list[int] = []

        async def crashes_after_a_while() -> None:
            runs.append(1)
            await asyncio.sleep(0.03)
            raise RuntimeError("once in a while")

        with structlog.testing.capture_logs() as logs:
            sup.spawn("checkpoints", crashes_after_a_while)
            await until(lambda: len(runs) == 7)
            await sup.stop()
        return [e["restart_in"] for e in logs if e["event"] == "component_crashed"]

    # Runs longer than healthy_after: every restart waits at most the base again.
    assert max(await restart_delays(healthy_after=0.02)) <= 0.01
    # The same crashes counted as a loop: the wait grows.
    assert max(await restart_delays(healthy_after=60.0)) > 0.05
