"""Writes at risk end to end: the daemon over HTTP against the emulator's ground truth.

A paused link, 25 writes, an outage of the region that took them and a restart
of the daemon in between; then the link resumes and everything drains. The
figures gtmon publishes (/metrics, /api/at-risk) are compared with what the
emulator knows happened to each write.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from streams_helpers import make_global, put, wait_for

from monitor import cli
from monitor.config import Config, parse_config
from monitor.emulator import EmulatorServer
from monitor.emulator.control import ControlClient
from monitor.service import Service

pytestmark = pytest.mark.timeout(120)

US, EU, AP = "us-east-1", "eu-west-1", "ap-southeast-1"
REGIONS = [US, EU, AP]
POLL = 0.5  # streams.poll_interval_max_seconds: an idle reader's polling interval


def config(url: str, tmp_path: Path) -> Config:
    return parse_config({
        "instance_id": "test",
        "regions": REGIONS,
        "aws": {"endpoint_url": url, "connect_timeout_seconds": 1, "read_timeout_seconds": 1,
                "max_attempts": 1},
        "canary": {"enabled": False},
        "streams": {"poll_interval_min_seconds": 0.1, "poll_interval_max_seconds": POLL,
                    "settle_seconds": 1.0, "checkpoint_path": str(tmp_path / "cp.json")},
        # The writer attribute makes origins exact: the emulator's 50 ms links are far
        # shorter than a polling interval, so arrival times alone could not place them.
        "tables": [{"name": "Orders", "conflicts": {"writer_attribute": "UpdatedIn"}}],
        "metrics": {"host": "127.0.0.1", "port": 0},
        "log": {"format": "json", "level": "error"},
    }, "test")


class Daemon:
    """A whole gtmon service; its figures read over HTTP like an operator would."""

    def __init__(self, cfg: Config) -> None:
        self.service = Service(cfg)
        self.http = httpx.AsyncClient(timeout=5)

    async def __aenter__(self) -> Daemon:
        await self.service.start()
        watcher = self.service.watcher
        assert watcher is not None
        await wait_for(lambda: all(r.watermark() is not None for r in watcher.readers.values()),
                       what="every reader to read its stream once")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()
        await self.service.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service.web.port}"

    def pending(self) -> dict[tuple[str, str], int]:
        """Confirmed pending writes per link, straight from the in-process tracker."""
        assert self.service.watcher is not None
        tracker = self.service.watcher.risk.trackers["Orders"]
        return {(s.source, s.target): s.pending for s in tracker.links()}

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = (await self.http.get(f"{self.url}/metrics")).text
        out = {}
        for line in text.splitlines():
            if line.startswith("gtmon_") and "{" in line:
                name, rest = line.split("{", 1)
                labels, value = rest.rsplit("} ", 1)
                pairs = tuple(sorted(
                    tuple(p.split("=", 1)) for p in labels.split(",") if p  # type: ignore[misc]
                ))
                out[(name, tuple((k, v.strip('"')) for k, v in pairs))] = float(value)
        return out

    async def at_risk(self, region: str) -> dict[str, Any]:
        answer = await self.http.get(f"{self.url}/api/at-risk", params={"region": region,
                                                                        "table": "Orders"})
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]


def link(source: str, target: str) -> tuple[tuple[str, str], ...]:
    return (("source_region", source), ("table", "Orders"), ("target_region", target))


def listed(report: dict[str, Any], part: str = "now") -> list[str]:
    if part == "now":
        return sorted(w["key"]["OrderID"]["S"] for w in report["now"]["Orders"]["list"])
    return sorted(w["key"]["OrderID"]["S"] for w in report["incidents"][-1]["list"])


async def test_a_paused_link_an_outage_and_a_restart_match_the_ground_truth(
    emu: EmulatorServer, client: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tables = make_global(client)
    ctl = ControlClient(emu.url)
    cfg = config(emu.url, tmp_path)
    ctl.fault("pause", **{"from": US, "to": EU})
    async with Daemon(cfg) as daemon:
        for i in range(25):
            await asyncio.to_thread(put, tables[US], "Orders", f"o-{i:02}", Status="Paid",
                                    UpdatedIn=US)
        written = time.monotonic()
        others: list[int] = []  # every reading of the links out of the other regions

        def reached() -> bool:
            now = daemon.pending()
            others.append(max(v for (s, _t), v in now.items() if s != US))
            return now[(US, EU)] == 25

        await wait_for(reached, timeout=10, what="25 pending writes on us-east-1 -> eu-west-1")
        took = time.monotonic() - written
        assert took <= 2 * POLL, f"25 pending only {took:.2f} s after the last write"
        assert not [w for w in emu.emulator.truth.writes("Orders") if EU in w.applied]
        await wait_for(lambda: daemon.pending()[(US, AP)] == 0, what="us-east-1 -> ap delivered")
        assert {k: v for k, v in daemon.pending().items() if v} == {(US, EU): 25}
        assert max(others) == 0, "a link out of eu-west-1 or ap-southeast-1 counted a write"

        truth = emu.emulator.truth.writes("Orders")
        oldest = min(w.accepted_at for w in truth)
        before = time.time()
        scraped = await daemon.metrics()
        after = time.time()
        age = scraped[("gtmon_replication_pending_oldest_seconds", link(US, EU))]
        assert before - oldest - 1.0 <= age <= after - oldest + 1.0
        assert scraped[("gtmon_replication_pending_writes", link(US, EU))] == 25
        assert scraped[("gtmon_replication_pending_writes", link(EU, US))] == 0
        before_restart = await daemon.at_risk(US)

    # A restart in the middle: the count and the list come back the same.
    async with Daemon(cfg) as daemon:
        await wait_for(lambda: daemon.pending()[(US, EU)] == 25, what="the restored count")
        again = await daemon.at_risk(US)
        assert listed(again) == listed(before_restart)
        assert again["now"]["Orders"]["list"] == before_restart["now"]["Orders"]["list"]

        # us-east-1 goes dark: what eu-west-1 never received, no more, no fewer.
        with structlog.testing.capture_logs() as logs:
            ctl.fault("outage", region=US, mode="blackhole")
            await wait_for(lambda: daemon.service.clients.region_ok.get(US) is False, timeout=10,
                           what="us-east-1 DOWN")
            await wait_for(lambda: daemon.service.watcher.risk.reports.any_open(US),  # type: ignore[union-attr]
                           what="the incident")
        never = sorted(w.key["OrderID"]["S"] for w in emu.emulator.truth.writes("Orders")
                       if w.origin == US and EU not in w.applied)
        report = await daemon.at_risk(US)
        assert len(never) == 25
        assert listed(report) == never
        assert listed(report, "incident") == never
        assert {r for w in report["now"]["Orders"]["list"] for r in w["missing_in"]} == {EU}
        assert report["incidents"][-1]["outcomes"] == {"missing": 25}
        # The same from the command line, reading the running daemon (its config file).
        daemon_yaml = tmp_path / "daemon.yaml"
        daemon_yaml.write_text(json.dumps({
            "regions": REGIONS, "tables": [{"name": "Orders"}],
            "metrics": {"host": "127.0.0.1", "port": daemon.service.web.port},
        }))
        command = ["at-risk", "--config", str(daemon_yaml), "--region", US, "--table", "Orders"]
        capsys.readouterr()
        with structlog.testing.capture_logs():  # the daemon's own log lines stay out of stdout
            assert await asyncio.to_thread(cli.main, [*command, "--json"]) == 0
            printed = json.loads(capsys.readouterr().out)
            assert await asyncio.to_thread(cli.main, command) == 0
            text = capsys.readouterr().out
            assert await asyncio.to_thread(cli.main, [*command[:3], "--region", "mars-1"]) == 2
            error = capsys.readouterr().err
        assert listed(printed) == never
        assert "Orders: 25 writes at risk" in text and "OrderID=o-00" in text
        assert "400 /api/at-risk: region='mars-1': give one of" in error
        events = [e for e in logs if e["event"] == "write_at_risk"]
        assert sorted(e["key"]["OrderID"]["S"] for e in events) == never
        assert all(e["missing_in"] == [EU] and "image" not in e for e in events)

        # The region returns and the link resumes: every listed write ends delivered.
        ctl.fault("restore", region=US)
        ctl.fault("resume", **{"from": US, "to": EU})
        resumed = time.monotonic()
        await wait_for(lambda: daemon.pending()[(US, EU)] == 0, timeout=10,
                       what="the backlog to drain")
        assert time.monotonic() - resumed <= 10
        await wait_for(lambda: not daemon.service.watcher.risk.reports.any_open(US),  # type: ignore[union-attr]
                       what="us-east-1 back up")
        report = await daemon.at_risk(US)
        assert report["incidents"][-1]["outcomes"] == {"delivered": 25}
        assert report["now"]["Orders"]["writes"] == 0
        scraped = await daemon.metrics()
        assert scraped[("gtmon_stream_replication_lag_seconds_count", link(US, EU))] == 25


async def test_conflicting_writes_are_not_pending_once_the_winner_is_everywhere(
    emu: EmulatorServer, client: Any, tmp_path: Path
) -> None:
    tables = make_global(client)
    ctl = ControlClient(emu.url)
    async with Daemon(config(emu.url, tmp_path)) as daemon:
        await asyncio.to_thread(put, tables[US], "Orders", "o-1", Status="Placed",
                                UpdatedIn=US)
        assert await asyncio.to_thread(emu.emulator.settle, 10)
        ctl.fault("pause")
        await asyncio.to_thread(put, tables[US], "Orders", "o-1", Status="Shipped",
                                UpdatedIn=US)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(put, tables[EU], "Orders", "o-1", Status="Delivered",
                                UpdatedIn=EU)
        await wait_for(lambda: daemon.pending()[(US, EU)] == 1 and daemon.pending()[(EU, US)] == 1,
                       what="each write pending while the links are paused")
        ctl.fault("resume")
        assert await asyncio.to_thread(emu.emulator.settle, 10)
        assert [w for w in emu.emulator.truth.writes("Orders") if w.discarded], "a real conflict"
        await wait_for(lambda: not any(daemon.pending().values()), what="nothing pending")
        assert daemon.service.watcher is not None
        assert daemon.service.watcher.risk.trackers["Orders"].tracked() == 0
