"""A canary probe loop that crashes is seen, restarted and measures again (issue 15, item 1).

The runner's probe loops run under the supervisor, one component per link
(`canary_probe`, region "source->target"). A bug in one loop must show as
gtmon_component_up 0 and a restart, leave the other links alone, and the pair's
canaries must be measured again after the restart. AWS is an in-process table that
replicates at once (no sockets): only the supervision is under test.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitor.canary.runner import CanaryRunner, CanaryTarget, Measurement, PairProbe
from monitor.clock import SystemClock
from monitor.config import parse_config
from monitor.metrics import Metrics
from monitor.supervisor import Supervisor

pytestmark = pytest.mark.timeout(30)

REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")
BROKEN = ("us-east-1", "eu-west-1")
TABLE = "gtmon-canary"


class InstantTable:
    """PutItem and GetItem on one item per key, the same in every region."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    async def call(self, region: str, service: str, operation: str, **kwargs: Any) -> Any:
        await asyncio.sleep(0)
        key = kwargs["Key" if operation == "get_item" else "Item"]["pk"]["S"]
        if operation == "put_item":
            self.items[key] = kwargs["Item"]
            return {}
        return {"Item": self.items[key]} if key in self.items else {}


def sample(metrics: Metrics, name: str, source: str, target: str) -> float:
    labels = {"component": "canary_probe", "table": TABLE, "region": f"{source}->{target}"}
    value = metrics.registry.get_sample_value(name, labels)
    assert value is not None, f"{name} {labels} is not exported"
    return value


async def until(condition: Any, what: str, timeout: float = 10.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what}") from None


async def test_a_crashed_probe_loop_is_down_then_restarted_and_measures_again() -> None:
    config = parse_config({"instance_id": "test", "regions": list(REGIONS),
                           "canary": {"interval_seconds": 0.2}, "streams": {"enabled": False}}, "test")
    metrics = Metrics(CollectorRegistry(), "test")
    clock = SystemClock()
    # The first restart comes 0.5-1 s after the crash: long enough to see the loop down.
    supervisor = Supervisor(metrics, clock, backoff_base=1.0, backoff_cap=1.0, rng=random.Random(2))
    target = CanaryTarget(TABLE, REGIONS, (("pk", "{instance}#{source}"),))
    runner = CanaryRunner(target, config.canary, "test", InstantTable(), metrics, clock,  # type: ignore[arg-type]
                          supervisor)
    measured: list[Measurement] = []
    runner.observers.append(measured.append)
    crash = {"armed": True}
    next_due = runner._next_due

    def next_due_with_a_bug(probe: PairProbe) -> float | None:
        if crash["armed"] and (probe.source, probe.target) == BROKEN:
            crash["armed"] = False
            raise TypeError("a bug in the read plan")
        return next_due(probe)

    runner._next_due = next_due_with_a_bug  # type: ignore[method-assign]

    async def write_canaries() -> None:
        while True:
            for source in REGIONS:
                await runner.write(source)
            await asyncio.sleep(0.2)

    runner.start()
    writer = asyncio.create_task(write_canaries())
    try:
        pairs = [(s, t) for s in REGIONS for t in REGIONS if s != t]
        assert {f"{s}->{t}" for s, t in pairs} == {c.region for c in supervisor.components}
        await until(lambda: not crash["armed"], "the bug hit")
        assert sample(metrics, "gtmon_component_up", *BROKEN) == 0
        assert [s.region for s in supervisor.down()] == ["us-east-1->eu-west-1"]
        assert all(sample(metrics, "gtmon_component_up", *p) == 1 for p in pairs if p != BROKEN)
        assert metrics.registry.get_sample_value(
            "gtmon_internal_errors_total", {"component": "canary_probe", "type": "TypeError"}) == 1

        await until(lambda: sample(metrics, "gtmon_component_up", *BROKEN) == 1, "the restart")
        assert sample(metrics, "gtmon_component_restarts_total", *BROKEN) == 1
        restarted = len([m for m in measured if (m.source, m.target) == BROKEN])
        await until(lambda: len([m for m in measured if (m.source, m.target) == BROKEN])
                    >= restarted + 3, "three canaries of the pair measured after the restart")
        assert supervisor.down() == []
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await runner.stop()
    assert all(s.task is not None and s.task.done() for s in supervisor.components)
