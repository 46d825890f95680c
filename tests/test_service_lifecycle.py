"""Service start and stop: a failed start undoes what it started; stop runs every phase."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from monitor import service as service_module
from monitor.config import Config, parse_config
from monitor.emulator import EmulatorServer
from monitor.service import Service, StartError

pytestmark = pytest.mark.timeout(60)
REGIONS = ["us-east-1", "eu-west-1"]


def config(url: str, tmp_path: Path, port: int = 0) -> Config:
    return parse_config({
        "instance_id": "test",
        "regions": REGIONS,
        "aws": {"endpoint_url": url, "connect_timeout_seconds": 1, "read_timeout_seconds": 1,
                "max_attempts": 1},
        "canary": {"interval_seconds": 0.5},
        "streams": {"checkpoint_path": str(tmp_path / "cp.json")},
        "tables": [{"name": "Orders"}],
        "metrics": {"host": "127.0.0.1", "port": port},
        "log": {"format": "json", "level": "error"},
    }, "test")


def gtmon_tasks() -> list[asyncio.Task[Any]]:
    this = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not this and not t.done()]


async def refused(port: int) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            await http.get(f"http://127.0.0.1:{port}/healthz")
    except httpx.ConnectError:
        return True
    return False


async def test_a_busy_metrics_port_is_one_clear_start_error_and_leaves_nothing_behind(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        service = Service(config(emu.url, tmp_path, port))
        with pytest.raises(StartError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            await service.start()
    assert gtmon_tasks() == []
    assert not service.ready()[0]
    await service.stop()  # harmless after a failed start


async def test_a_failure_midway_stops_what_had_started_in_reverse(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = Service(config(emu.url, tmp_path))
    assert service.watcher is not None
    stopped: list[str] = []
    for name, part in (("canary", service.runners[0]), ("web", service.web),
                       ("clients", service.clients)):
        method = "close" if name == "clients" else "stop"
        original = getattr(part, method)

        async def recording(name: str = name, original: Any = original) -> None:
            stopped.append(name)
            await original()

        monkeypatch.setattr(part, method, recording)

    async def broken_start() -> None:
        raise RuntimeError("checkpoint store exploded")

    monkeypatch.setattr(service.watcher, "start", broken_start)
    with structlog.testing.capture_logs() as logs, pytest.raises(RuntimeError, match="exploded"):
        await service.start()
    assert stopped == ["canary", "clients", "web"]  # reverse order of starting
    port = service.web.port
    assert await refused(port), "the web server still answers after a failed start"
    assert gtmon_tasks() == [], "probe loops left running after a failed start"
    assert any(e["event"] == "start_failed" for e in logs)


async def test_stop_runs_every_phase_whatever_earlier_ones_raised_or_how_long_they_hung(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "STOP_PHASE_SECONDS", 0.3)
    service = Service(config(emu.url, tmp_path))
    assert service.watcher is not None
    await service.start()
    port = service.web.port

    async def hangs() -> None:
        await asyncio.Event().wait()

    async def raises() -> None:
        raise RuntimeError("watcher bug at stop")

    original_runner_stop = service.runners[0].stop
    monkeypatch.setattr(service.runners[0], "stop", hangs)
    monkeypatch.setattr(service.watcher, "stop", raises)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with structlog.testing.capture_logs() as logs:
        await service.stop()
    assert loop.time() - started < 3.0
    events = {(e["event"], e.get("phase")) for e in logs}
    assert ("stop_timed_out", "canary gtmon-canary") in events
    assert ("stop_phase_failed", "stream readers") in events
    assert ("stopped", None) in events
    # The later phases ran: supervised components, web and clients are down.
    assert await refused(port)
    assert service.clients._clients == {}
    assert all(s.task is not None and s.task.done() for s in service.supervisor.components)
    await original_runner_stop()  # what the hung phase would have done
    assert gtmon_tasks() == []


async def test_a_write_still_waiting_for_aws_at_stop_is_abandoned_in_one_line_not_a_traceback(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(service_module, "IN_FLIGHT_GRACE_SECONDS", 0.2)
    service = Service(config(emu.url, tmp_path))
    runner = service.runners[0]
    hanging = asyncio.Event()

    async def write_that_never_answers(*_: Any) -> None:
        hanging.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(runner, "write", write_that_never_answers)
    await service.start()
    await asyncio.wait_for(hanging.wait(), 10)
    with structlog.testing.capture_logs() as logs, caplog.at_level("ERROR"):
        await service.stop()
        await asyncio.sleep(0)  # let the cancelled job's task finish
    abandoned = [e for e in logs if e["event"] == "job_abandoned_at_stop"]
    assert abandoned and abandoned[0]["component"] == "canary_writer"
    assert not [r for r in caplog.records if r.name.startswith("apscheduler")], caplog.text
    assert gtmon_tasks() == []
