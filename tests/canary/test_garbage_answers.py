"""Answers of the wrong shape to canary calls are failed calls, not bugs (issue 15, items 3, 6).

`gtmon fault garbage` makes botocore's parser raise (AttributeError, ...) inside the
AWS layer, which counts and logs it and re-raises. For the canary a garbled read is a
failed read (counted, backed off, the canaries it held back settle) and a garbled
write a failed write: the canary is dropped at once instead of waiting, unanswered,
to be given up as lost (which the soak would have counted). In-process AWS, no sockets.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry

from monitor.canary.runner import CanaryRunner, CanaryTarget
from monitor.clock import SystemClock
from monitor.config import parse_config
from monitor.metrics import Metrics
from monitor.supervisor import Supervisor

pytestmark = pytest.mark.timeout(30)

REGIONS = ("us-east-1", "eu-west-1")
TABLE = "gtmon-canary"


class GarbledEveryThird:
    """One item per key in every region at once; every third call of each operation
    raises as botocore's parser does on a garbage body."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.calls: dict[str, int] = {"put_item": 0, "get_item": 0}
        self.garbled: dict[str, int] = {"put_item": 0, "get_item": 0}
        self.garbled_writes: set[int] = set()  # canary sequences whose write answer was garbage

    async def call(self, region: str, service: str, operation: str, **kwargs: Any) -> Any:
        await asyncio.sleep(0.001)
        self.calls[operation] += 1
        if self.calls[operation] % 3 == 0:
            self.garbled[operation] += 1
            if operation == "put_item":  # the write lands; only its answer is garbage
                self.items[kwargs["Item"]["pk"]["S"]] = kwargs["Item"]
                self.garbled_writes.add(int(kwargs["Item"]["gtmon_seq"]["N"]))
            raise AttributeError("'list' object has no attribute 'get'")
        key = kwargs["Key" if operation == "get_item" else "Item"]["pk"]["S"]
        if operation == "put_item":
            self.items[key] = kwargs["Item"]
            return {}
        return {"Item": self.items[key]} if key in self.items else {}


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_garbled_answers_are_failed_calls_and_the_canary_goes_on() -> None:
    config = parse_config({"instance_id": "test", "regions": list(REGIONS),
                           "canary": {"interval_seconds": 0.2}, "streams": {"enabled": False}}, "test")
    metrics = Metrics(CollectorRegistry(), "test")
    clock = SystemClock()
    aws = GarbledEveryThird()
    supervisor = Supervisor(metrics, clock, rng=random.Random(1))
    target = CanaryTarget(TABLE, REGIONS, (("pk", "{instance}#{source}"),))
    runner = CanaryRunner(target, config.canary, "test", aws, metrics, clock,  # type: ignore[arg-type]
                          supervisor)
    measured: list[Any] = []
    runner.observers.append(measured.append)
    runner.start()
    with structlog.testing.capture_logs() as logs:
        try:
            for _ in range(15):
                for source in REGIONS:
                    await runner.write(source)
                await asyncio.sleep(0.1)
        finally:
            await runner.stop()
    assert aws.garbled["put_item"] >= 3 and aws.garbled["get_item"] >= 3
    assert not [e for e in logs if e["log_level"] == "error"], "no garbled answer is a bug here"
    assert supervisor.down() == [] and all(s.restarts == 0 for s in supervisor.components)
    errors = {op: sum(value(metrics, "gtmon_canary_operations_total", table=TABLE, region=r,
                            operation=op, result="error") for r in REGIONS)
              for op in ("write", "read")}
    assert errors == {"write": aws.garbled["put_item"], "read": aws.garbled["get_item"]}
    # The garbled writes were dropped at once, not left pending to be lost after
    # timeout_seconds; the others were measured or are still being read.
    pending = {seq for probe in runner.probes.values() for seq in probe.pending}
    assert not pending & aws.garbled_writes
    assert {m.seq for m in measured}.isdisjoint(aws.garbled_writes)
    written_ok = sum(value(metrics, "gtmon_canary_operations_total", table=TABLE, region=r,
                           operation="write", result="ok") for r in REGIONS)
    assert len(measured) + len(pending) == written_ok and measured
