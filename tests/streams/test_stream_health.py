"""Honest health, end to end: a Service against the emulator, read over HTTP as Prometheus
and a load balancer would (/metrics, /readyz, /api/status, the page)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from streams_helpers import REGIONS, make_global, put, read_through, wait_for

from monitor.config import Config, parse_config
from monitor.emulator import EmulatorServer
from monitor.emulator.control import ControlClient
from monitor.service import Service

pytestmark = pytest.mark.timeout(120)


def service_config(url: str, tmp_path: Path, table: str = "Orders") -> Config:
    return parse_config({
        "instance_id": "test",
        "regions": REGIONS,
        "aws": {"endpoint_url": url, "connect_timeout_seconds": 1, "read_timeout_seconds": 1,
                "max_attempts": 1},
        "canary": {"enabled": False},
        "streams": {"poll_interval_min_seconds": 0.05, "poll_interval_max_seconds": 0.2,
                    "settle_seconds": 1.0, "checkpoint_path": str(tmp_path / "cp.json")},
        "tables": [{"name": table}],
        "metrics": {"host": "127.0.0.1", "port": 0},
        "log": {"format": "json", "level": "error"},
    }, "test")


@asynccontextmanager
async def serving(config: Config) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    service = Service(config)
    await service.start()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{service.web.port}", timeout=5
        ) as http:
            yield service, http
    finally:
        await service.stop()


async def scrape(http: httpx.AsyncClient, name: str, **labels: str) -> float | None:
    """One sample from /metrics over HTTP, None when the series is absent."""
    text = (await http.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


async def until(check: Any, what: str, timeout: float = 20.0) -> Any:
    """Poll an async `check` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_garbage_on_one_regions_streams_shows_as_a_restarted_component_and_recovers(
    emu: EmulatorServer, client: Any, tmp_path: Path
) -> None:
    tables = make_global(client)
    control = ControlClient(emu.url)
    reader_labels = {"component": "stream_reader", "table": "Orders", "region": "eu-west-1"}
    async with serving(service_config(emu.url, tmp_path)) as (service, http):
        assert service.watcher is not None
        eu = service.watcher.reader("Orders", "eu-west-1")
        await asyncio.to_thread(lambda: [put(tables["us-east-1"], "Orders", f"a{i}") for i in range(5)])
        await wait_for(lambda: eu.records_total == 5, what="the first records in eu-west-1")
        assert await scrape(http, "gtmon_component_restarts_total", **reader_labels) == 0
        # Counters present at 0 from the start, so increase() sees the first one.
        assert await scrape(http, "gtmon_stream_gaps_total", table="Orders", region="eu-west-1") == 0

        control.fault("garbage", region="eu-west-1", fraction=0.5)
        await asyncio.to_thread(lambda: [put(tables["us-east-1"], "Orders", f"b{i}") for i in range(5)])
        restarts = await until(
            lambda: scrape(http, "gtmon_component_restarts_total", **reader_labels),
            "the reader's restart to show in /metrics",
        )
        control.fault("clear")
        assert restarts >= 1
        internal = [
            await scrape(http, "gtmon_internal_errors_total", component=component, type=kind)
            for component, kind in (("aws", "AttributeError"), ("stream_reader", "UnexpectedAnswer"))
        ]
        assert sum(v or 0 for v in internal) >= 1, internal
        # Not a region outage: region_up was never touched.
        assert await scrape(http, "gtmon_region_up", region="eu-west-1") == 1

        # Recovered: up again, every record read exactly once, ready.
        await until(lambda: scrape(http, "gtmon_component_up", **reader_labels), "the reader up")
        await asyncio.to_thread(lambda: [put(tables["us-east-1"], "Orders", f"c{i}") for i in range(5)])
        await wait_for(lambda: eu.records_total >= 15, what="every record in eu-west-1")
        await read_through(eu, emu)
        assert eu.records_total == 15, "a record was lost or delivered twice across restarts"
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        components = (await http.get("/api/status")).json()["components"]
        (row,) = [c for c in components if c["component"] == "stream_reader"
                  and c["region"] == "eu-west-1"]
        assert row["up"] and row["restarts"] >= 1 and row["last_crash"]["type"]
        assert "Components" in (await http.get("/")).text  # the page lists the restarted one


async def test_a_table_that_does_not_exist_fails_readyz_and_shows_its_aws_error(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    async with serving(service_config(emu.url, tmp_path, table="NoSuchTable")) as (_, http):
        answer = await until(
            lambda: _not_ready(http), "readyz to fail for the missing table", timeout=10
        )
        assert "without a working stream reader" in answer.text
        assert "NoSuchTable" not in answer.text  # /readyz needs no credentials: no names
        health = (await http.get("/api/status")).json()["health"]
        assert not health["ready"]
        (problem,) = health["problems"]
        assert "NoSuchTable" in problem and "ResourceNotFoundException" in problem
        page = (await http.get("/")).text
        assert "NOT READY" in page and "ResourceNotFoundException" in page
        for region in REGIONS:  # the regions answered: none is down
            assert await scrape(http, "gtmon_region_up", region=region) == 1


async def _not_ready(http: httpx.AsyncClient) -> httpx.Response | None:
    answer = await http.get("/readyz")
    return answer if answer.status_code == 503 else None


async def test_watermark_age_rises_while_a_reader_is_stuck_and_falls_once_it_reads(
    emu: EmulatorServer, client: Any, tmp_path: Path
) -> None:
    make_global(client)
    control = ControlClient(emu.url)

    def age(region: str) -> Any:
        return lambda: scrape(http, "gtmon_stream_watermark_age_seconds", table="Orders",
                              region=region)

    async with serving(service_config(emu.url, tmp_path)) as (_, http):
        for region in REGIONS:
            await until(lambda r=region: _below(age(r), 1.0), f"a fresh watermark in {region}")
        control.fault("outage", region="ap-southeast-1", mode="error")
        try:
            first = await until(lambda: _above(age("ap-southeast-1"), 2.0), "the age to rise")
            await until(lambda: _above(age("ap-southeast-1"), first + 0.5), "it to keep rising")
            assert await age("us-east-1")() < 1.0  # the others read on
        finally:
            control.fault("restore", region="ap-southeast-1")
        await until(lambda: _below(age("ap-southeast-1"), 1.0), "the age to fall after the outage")


async def _below(read: Any, limit: float) -> bool:
    value = await read()
    return value is not None and value < limit


async def _above(read: Any, limit: float) -> float | None:
    value = await read()
    return value if value is not None and value > limit else None
