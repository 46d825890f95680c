"""`gtmon sandbox`: the emulator, demo traffic and the monitor, on one laptop.

Starts the global-tables emulator with realistic distances (link delays of
roughly 0.5–2 s by distance, and the client round trips a monitor in us-east-1
would see), creates the canary table and the seed's Orders table with replicas
in three regions, runs demo traffic with occasional real conflicts, runs the
daemon against it, and shows a live view. The AWS CLI and `gtmon fault` work
against it while it runs.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from monitor.canary.table import ensure_canary_table
from monitor.config import Config, parse_config
from monitor.emulator import DelaySpec, EmulatorSettings, StreamSettings
from monitor.emulator.process import EmulatorProcess
from monitor.emulator.traffic import ORDERS_TABLE, DemoTraffic, create_orders_table
from monitor.logs import configure_logging
from monitor.service import Service
from monitor.waiting import wait_event
from monitor.web import format_key

__all__ = [
    "SANDBOX_CLIENT_LATENCY",
    "SANDBOX_LINK_DELAYS",
    "SandboxOptions",
    "run_sandbox",
    "sandbox_settings",
]

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-1"]

# One-way replication delay per region pair (both directions): base + lognormal jitter.
_DISTANCES = {
    ("us-east-1", "eu-west-1"): DelaySpec(ms=600, jitter_ms=120, kind="lognormal"),
    ("us-east-1", "ap-southeast-1"): DelaySpec(ms=1200, jitter_ms=200, kind="lognormal"),
    ("eu-west-1", "ap-southeast-1"): DelaySpec(ms=1500, jitter_ms=250, kind="lognormal"),
}
SANDBOX_LINK_DELAYS = {**_DISTANCES, **{(b, a): spec for (a, b), spec in _DISTANCES.items()}}
# Round trips from a monitor sitting in us-east-1 (10% jitter).
SANDBOX_CLIENT_LATENCY = {
    "us-east-1": DelaySpec(ms=4, jitter_ms=0.4, kind="uniform"),
    "eu-west-1": DelaySpec(ms=75, jitter_ms=7.5, kind="uniform"),
    "ap-southeast-1": DelaySpec(ms=220, jitter_ms=22, kind="uniform"),
}
_COLOURS = {
    "OK": "green",
    "UNKNOWN": "grey50",
    "WARNING": "yellow",
    "CRITICAL": "dark_orange",
    "STALLED": "red",
    "DOWN": "magenta",
}


@dataclass(frozen=True)
class SandboxOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    metrics_port: int = 9108
    traffic: bool = True
    ui: bool = True
    realistic_latency: bool = True
    canary_interval: float = 2.0
    log_file: str = "gtmon-sandbox.log"
    checkpoint_path: str = "gtmon-sandbox-checkpoints.json"


def sandbox_config(options: SandboxOptions, endpoint: str) -> Config:
    return parse_config(
        {
            "instance_id": "sandbox",
            "regions": REGIONS,
            "aws": {
                "endpoint_url": endpoint,
                "connect_timeout_seconds": 1,
                "read_timeout_seconds": 3,
                "max_attempts": 2,
            },
            "canary": {"interval_seconds": options.canary_interval, "stall_seconds": 10},
            # The demo traffic stores the writing region in UpdatedIn, as applications
            # should: it makes the attribution of every lost write exact.
            "tables": [{"name": ORDERS_TABLE, "conflicts": {"writer_attribute": "UpdatedIn"}}],
            "streams": {
                "poll_interval_min_seconds": 0.2,
                "poll_interval_max_seconds": 1.0,
                "checkpoint_path": options.checkpoint_path,
                "settle_seconds": 5,
            },
            "metrics": {"host": options.host, "port": options.metrics_port},
            "log": {"format": "auto", "level": "info"},
        },
        "gtmon sandbox",
    )


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def render(status: dict[str, Any], traffic: DemoTraffic | None, endpoint: str, metrics_url: str) -> Group:
    """The live view: lag matrix per canary table, regions, conflicts."""
    parts: list[Any] = [
        Text.from_markup(
            f"[bold]gtmon sandbox[/]  emulator {endpoint}   metrics {metrics_url}/metrics   "
            f"status page {metrics_url}/   Ctrl-C to stop"
        )
    ]
    pairs = status.get("pairs", [])
    for table_name in sorted({p["table"] for p in pairs}):
        rows = [p for p in pairs if p["table"] == table_name]
        regions = sorted({p["source_region"] for p in rows})
        matrix = Table(title=f"replication lag — {table_name} (last / p99; pending)", expand=False)
        matrix.add_column("source \\ target")
        for region in regions:
            matrix.add_column(region, justify="center")
        by_pair = {(p["source_region"], p["target_region"]): p for p in rows}
        for source in regions:
            cells: list[Any] = [source]
            for target in regions:
                pair = by_pair.get((source, target))
                if pair is None:
                    cells.append("·")
                    continue
                text = f"{_fmt(pair['last_lag_seconds'])} / {_fmt(pair['p99_seconds'])}"
                if pair["oldest_pending_seconds"] >= 1:
                    text += f"\npending {_fmt(pair['oldest_pending_seconds'])}"
                cells.append(Text(f"{pair['state']}\n{text}", style=_COLOURS.get(pair["state"], "")))
            matrix.add_row(*cells)
        parts.append(matrix)
    regions_table = Table(title="regions")
    regions_table.add_column("region")
    regions_table.add_column("up")
    regions_table.add_column("last error")
    for region, info in sorted(status.get("regions", {}).items()):
        regions_table.add_row(
            region,
            Text("up", style="green") if info["up"] else Text("DOWN", style="red"),
            info.get("last_error") or "",
        )
    parts.append(regions_table)
    conflicts = status.get("conflicts", {})
    recent = conflicts.get("recent", [])
    conflict_table = Table(
        title=f"last-writer-wins conflicts: {conflicts.get('total', len(recent))} detected"
    )
    for column in ("table", "key", "lost in", "won by", "mode"):
        conflict_table.add_column(column)
    for conflict in recent[:8]:
        conflict_table.add_row(
            str(conflict.get("table")),
            format_key(conflict.get("key")),
            str(conflict.get("loser_region")),
            str(conflict.get("winner_region")),
            str(conflict.get("mode")),
        )
    parts.append(conflict_table)
    if traffic is not None:
        parts.append(
            Text(
                f"demo traffic: {traffic.writes} writes, {traffic.conflicts_staged} conflicts staged, "
                f"{traffic.errors} errors"
            )
        )
    return Group(*parts)


def sandbox_settings(realistic_latency: bool = True) -> EmulatorSettings:
    """The sandbox's emulator: distances as seen from a monitor in us-east-1."""
    return EmulatorSettings(
        regions=list(REGIONS),
        link_delays=dict(SANDBOX_LINK_DELAYS),
        client_latency=dict(SANDBOX_CLIENT_LATENCY) if realistic_latency else {},
        default_delay=DelaySpec(ms=800),
        # Left running for days, 24 h of stream records and ground truth would take
        # gigabytes; the monitor reads streams within seconds, so keep 15 minutes.
        streams=StreamSettings(retention_seconds=900.0),
        truth_max_writes=20_000,
    )


async def run_sandbox(options: SandboxOptions) -> int:
    log_stream = open(options.log_file, "a", encoding="utf-8") if options.ui else sys.stderr  # noqa: SIM115
    try:
        # A child process: in this one, the emulator's threads would skew the monitor's timing.
        server = EmulatorProcess(
            sandbox_settings(options.realistic_latency),
            options.host,
            options.port,
            stderr=log_stream if log_stream is not sys.stderr else None,
        )
    except OSError:
        if log_stream is not sys.stderr:
            log_stream.close()
        raise
    endpoint = server.url
    config = sandbox_config(options, endpoint)
    configure_logging("json" if options.ui else "auto", "info", stream=log_stream)
    service = Service(config)
    traffic: DemoTraffic | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.to_thread(create_orders_table, endpoint, REGIONS)
        await service.clients.start(REGIONS)
        await ensure_canary_table(service.clients, config.canary.table, REGIONS, "gtmon_expires_at", 60)
        if options.traffic:
            traffic = DemoTraffic(endpoint, REGIONS)
            traffic.start()
        await service.start()
        metrics_url = f"http://{options.host}:{service.web.port}"
        if not options.ui:
            print(
                f"gtmon sandbox: emulator {endpoint}, metrics {metrics_url}/metrics",
                file=sys.stderr,
                flush=True,
            )
            await stop.wait()
        else:
            with Live(render(service.status(), traffic, endpoint, metrics_url), refresh_per_second=2) as live:
                while not stop.is_set():
                    await wait_event(stop, 1.0)
                    live.update(render(service.status(), traffic, endpoint, metrics_url))
    finally:
        await service.stop()
        if traffic is not None:
            await asyncio.to_thread(traffic.stop)
        server.close()
        if log_stream is not sys.stderr:
            log_stream.close()
            print(f"gtmon sandbox stopped; the monitor's log is in {Path(options.log_file).resolve()}")
    return 0
