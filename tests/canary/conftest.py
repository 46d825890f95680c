"""Daemon fixtures: a Service in this process, watching the session's emulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from monitor.canary.table import ensure_canary_table
from monitor.config import Config, parse_config
from monitor.emulator import EmulatorServer
from monitor.service import Service

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-1"]


def daemon_config(url: str, **overrides: Any) -> Config:
    data: dict[str, Any] = {
        "instance_id": "test",
        "regions": REGIONS,
        "aws": {
            "endpoint_url": url,
            "connect_timeout_seconds": 1,
            "read_timeout_seconds": 1,
            "max_attempts": 1,
        },
        "canary": {"interval_seconds": 0.5, "stall_seconds": 2, "timeout_seconds": 10},
        "streams": {"enabled": False},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "log": {"format": "json", "level": "warning"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_config(data, "test")


@asynccontextmanager
async def running(config: Config, create_table: bool = True) -> AsyncIterator[Service]:
    service = Service(config)
    if create_table:
        await service.clients.start(list(config.regions))
        await ensure_canary_table(
            service.clients, config.canary.table, list(config.regions), "gtmon_expires_at", 30
        )
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def pair(service: Service, source: str, target: str) -> Any:
    return service.runners[0].probes[(source, target)]


@pytest.fixture
def url(emu: EmulatorServer) -> str:
    return emu.url


def _dump_tasks(*_: object) -> None:  # debugging aid: kill -USR1 <pytest pid>
    import sys

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    for task in asyncio.all_tasks(loop):
        task.print_stack(file=sys.stderr)


@pytest.fixture(autouse=True)
def _task_dump_on_usr1() -> Any:
    import signal

    previous = signal.signal(signal.SIGUSR1, _dump_tasks)
    yield
    signal.signal(signal.SIGUSR1, previous)
