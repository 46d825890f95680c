"""Conflict probes end to end: the daemon in this process against the emulator over HTTP.

Short settle window, fast polls and a probe a second keep the module well under a minute.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitor.aws import AwsClients
from monitor.canary.table import ensure_canary_table
from monitor.clock import SystemClock
from monitor.config import Config, parse_config
from monitor.emulator import EmulatorServer
from monitor.emulator.control import ControlClient
from monitor.metrics import Metrics
from monitor.probes import ProbeRunner, ProbeTarget
from monitor.service import Service
from tests.helpers import REGIONS, add_replicas

CANARY = "gtmon-canary"


def probe_config(url: str, checkpoints: Path, timeout: float = 5) -> Config:
    return parse_config({
        "instance_id": "probes-test",
        "regions": REGIONS,
        "aws": {"endpoint_url": url, "connect_timeout_seconds": 1, "read_timeout_seconds": 1,
                "max_attempts": 1},
        "canary": {"interval_seconds": 0.5, "stall_seconds": 2, "timeout_seconds": 10},
        "streams": {"poll_interval_min_seconds": 0.05, "poll_interval_max_seconds": 0.2,
                    "settle_seconds": 1, "burst_seconds": 1, "checkpoint_path": str(checkpoints)},
        "conflicts": {"probe_interval_seconds": 1, "probe_timeout_seconds": timeout},
        # No writer attribute: the table is in inferred mode; its probes are attributed by
        # their own mark all the same (the sandbox's Orders has one: bench/probes.py).
        "tables": [{"name": "Orders"}],
        "metrics": {"host": "127.0.0.1", "port": 0},
        "log": {"format": "json", "level": "warning"},
    }, "test")


@pytest.fixture
def orders(client: Callable[..., Any]) -> None:
    client(REGIONS[0]).create_table(
        TableName="Orders",
        KeySchema=[{"AttributeName": "OrderID", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "OrderID", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    add_replicas(client, "Orders", REGIONS)


@asynccontextmanager
async def running(config: Config) -> AsyncIterator[Service]:
    service = Service(config)
    await service.clients.start(list(config.regions))
    await ensure_canary_table(service.clients, CANARY, list(config.regions), "gtmon_expires_at", 30)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def probes(service: Service, table: str, result: str) -> float:
    value = service.registry.get_sample_value(
        "gtmon_conflict_probes_total", {"table": table, "result": result}
    )
    return value or 0.0


def last(service: Service, table: str) -> dict[str, Any]:
    return service.status()["probes"]["tables"][table]["last"] or {}


async def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def conflicts_counted(service: Service) -> float:
    return sum(
        s.value for m in service.registry.collect() if m.name == "gtmon_lww_conflicts"
        for s in m.samples if s.name == "gtmon_lww_conflicts_total"
    )


async def test_probes_are_detected_with_the_right_regions_and_survive_a_restart(
    emu: EmulatorServer, orders: None, tmp_path: Path
) -> None:
    config = probe_config(emu.url, tmp_path / "cp.json")
    async with running(config) as service:
        await wait_for(lambda: all(probes(service, t, "detected") >= 2 for t in ("Orders", CANARY)),
                       30, "two detected probes on each table")
        for table in ("Orders", CANARY):
            assert probes(service, table, "missed") == probes(service, table, "mislabelled") == 0
            assert service.registry.get_sample_value(
                "gtmon_conflict_probe_detection_seconds_count", {"table": table}) >= 2
            # "us-east-1 lost to eu-west-1": the regions the probe versions' marks prove.
            assert last(service, table)["reason"].count(" lost to ") == 1
        # Probe losses are reported apart: users' conflict alerts never see them.
        assert conflicts_counted(service) == 0
        assert service.status()["conflicts"]["total"] == 0
        # Stop while a probe waits for its verdict.
        await wait_for(lambda: service.status()["probes"]["tables"]["Orders"]["waiting"] > 0,
                       10, "a probe in flight")
    async with running(config) as service:
        await wait_for(lambda: all(probes(service, t, "detected") >= 2 for t in ("Orders", CANARY)),
                       30, "two detected probes after the restart")
        for table in ("Orders", CANARY):
            assert probes(service, table, "missed") == probes(service, table, "mislabelled") == 0
        assert conflicts_counted(service) == 0


async def test_with_a_third_region_down_probes_between_the_others_are_missed(
    emu: EmulatorServer, orders: None, tmp_path: Path
) -> None:
    control = ControlClient(emu.url)
    async with running(probe_config(emu.url, tmp_path / "cp.json", timeout=3)) as service:
        await wait_for(lambda: probes(service, "Orders", "detected") >= 1, 20, "a detected probe")
        control.fault("outage", region="ap-southeast-1", mode="error")
        try:
            # A probe written before the region was seen DOWN may miss too; then the DOWN
            # region has left the rotation, and the probes between the other two miss.
            await wait_for(
                lambda: last(service, "Orders").get("regions") == ["us-east-1", "eu-west-1"]
                and last(service, "Orders")["result"] == "missed",
                20, "a missed probe between us-east-1 and eu-west-1",
            )
            # Its stream held the verdict back: nothing can settle without it.
            assert "ap-southeast-1: stream not read" in last(service, "Orders")["reason"]
            assert probes(service, "Orders", "mislabelled") == 0
        finally:
            control.fault("restore", region="ap-southeast-1")


async def test_a_probe_across_a_paused_link_waits_for_it_and_is_detected_not_missed(
    emu: EmulatorServer, orders: None, tmp_path: Path
) -> None:
    """Every reader reads past the probe, but the paused links keep its regions apart: the
    detector holds the item until they agree, and the probe waits with it. It used to be
    counted missed at its timeout ("the detector reported no loss"), paging for a pause the
    stall alert reports, and its verdict came after the pause, unmatched."""
    control = ControlClient(emu.url)
    into_ap = [{"from": "us-east-1", "to": "ap-southeast-1"},
               {"from": "eu-west-1", "to": "ap-southeast-1"}]
    async with running(probe_config(emu.url, tmp_path / "cp.json", timeout=2)) as service:
        await wait_for(lambda: probes(service, "Orders", "detected") >= 1, 20, "a detected probe")
        detected = probes(service, "Orders", "detected")
        for link in into_ap:
            control.fault("pause", **link)
        try:
            await asyncio.sleep(6)  # three probe timeouts
            assert probes(service, "Orders", "missed") == 0
            assert service.status()["probes"]["tables"]["Orders"]["waiting"] > 0
        finally:
            for link in into_ap:
                control.fault("resume", **link)
        # Probes go on every second: the ones held over the pause are judged once it ends.
        await wait_for(lambda: probes(service, "Orders", "detected") >= detected + 8,
                       30, "the held probes judged once the links resumed")
        assert probes(service, "Orders", "missed") == probes(service, "Orders", "mislabelled") == 0, (
            service.status()["probes"]["tables"]["Orders"])


async def test_a_stream_switched_off_in_one_region_is_named_by_the_missed_probe(
    emu: EmulatorServer, orders: None, client: Callable[..., Any], tmp_path: Path
) -> None:
    async with running(probe_config(emu.url, tmp_path / "cp.json", timeout=3)) as service:
        await wait_for(lambda: probes(service, "Orders", "detected") >= 1, 20, "a detected probe")
        client("eu-west-1").update_table(
            TableName="Orders", StreamSpecification={"StreamEnabled": False}
        )
        await wait_for(lambda: probes(service, "Orders", "missed") >= 1, 20, "a missed probe")
        assert "eu-west-1: stream switched off" in last(service, "Orders")["reason"]
        assert probes(service, CANARY, "missed") == 0


@asynccontextmanager
async def probe_runner(url: str, *tables: str) -> AsyncIterator[ProbeRunner]:
    """A probe runner alone (no daemon): it writes probes and judges nothing."""
    config = probe_config(url, Path("unused.json"))
    metrics = Metrics(CollectorRegistry(), "test")
    clients = AwsClients(config.aws, metrics)
    await clients.start(list(REGIONS))
    try:
        yield ProbeRunner(
            [ProbeTarget(table, tuple(REGIONS)) for table in tables], instance_id="t",
            clients=clients, metrics=metrics, clock=SystemClock(), timeout=lambda: 5.0,
            settle_seconds=1.0, ttl_seconds=3600, clock_error=0.005, region_up=dict,
            reader_facts=lambda table: [],
        )
    finally:
        await clients.close()


def skipped(runner: ProbeRunner, table: str) -> tuple[int, str]:
    state = runner.status()["tables"][table]
    return state["results"]["skipped"], state["last"]["reason"]


async def test_a_table_whose_key_cannot_hold_a_probe_key_is_skipped_and_says_why(
    emu: EmulatorServer, client: Callable[..., Any]
) -> None:
    client(REGIONS[0]).create_table(
        TableName="Readings",
        KeySchema=[{"AttributeName": "SensorID", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "SensorID", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
    )
    async with probe_runner(emu.url, "Readings") as runner:
        await runner.probe("Readings")
    count, reason = skipped(runner, "Readings")
    assert count == 1
    assert reason.startswith(
        "key attribute 'SensorID' is of type N; a probe key needs string key attributes")
    assert client(REGIONS[0]).scan(TableName="Readings")["Items"] == []  # nothing written


async def test_probes_that_cannot_race_are_skipped_not_judged(
    emu: EmulatorServer, orders: None
) -> None:
    control = ControlClient(emu.url)
    async with probe_runner(emu.url, "Orders") as runner:
        # A write that fails (the region is not yet known to be down): no race was run.
        control.fault("outage", region="eu-west-1", mode="error")
        try:
            await runner.probe("Orders")  # us-east-1 and eu-west-1, the rotation's first
        finally:
            control.fault("restore", region="eu-west-1")
        count, reason = skipped(runner, "Orders")
        assert count == 1 and reason.startswith("write failed: eu-west-1: "), reason
        # A region 400 ms away takes its write after the other's has replicated (50 ms):
        # the write's old image shows it, so the two did not race.
        control.fault("latency", region="ap-southeast-1", ms=400)
        try:
            await runner.probe("Orders")  # us-east-1 and ap-southeast-1
        finally:
            control.fault("latency", region="ap-southeast-1", ms=0)
        count, reason = skipped(runner, "Orders")
        assert count == 2
        assert reason == "not concurrent: the write in ap-southeast-1 replaced us-east-1's"
        assert runner.status()["tables"]["Orders"]["waiting"] == 0
