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
import contextlib
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import structlog
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from monitor.canary.table import ensure_canary_table
from monitor.config import Config, parse_config
from monitor.emulator import DelaySpec, EmulatorSettings, StreamSettings
from monitor.emulator.process import EmulatorProcess
from monitor.emulator.traffic import ORDERS_TABLE, DemoTraffic, create_orders_table
from monitor.logs import configure_logging
from monitor.service import Service
from monitor.statuspage import format_key
from monitor.waiting import wait_event

__all__ = [
    "SANDBOX_CLIENT_LATENCY",
    "SANDBOX_LINK_DELAYS",
    "SandboxOptions",
    "prepare_state_dir",
    "run_sandbox",
    "sandbox_settings",
]

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-1"]
_log = structlog.get_logger("gtmon.sandbox")

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
    # Where the log (with the live view) and the stream checkpoints go; None: a new
    # temporary directory per run, kept after it stops so the log can be read.
    state_dir: str | None = None


SANDBOX_PROBE_INTERVAL = 20.0
LOG_FILE = "gtmon-sandbox.log"
CHECKPOINT_FILE = "gtmon-sandbox-checkpoints.json"


def prepare_state_dir(state_dir: str | None) -> Path:
    """The sandbox's own directory: `state_dir`, or a new temporary one.

    Never the working directory, where the files of a sandbox started elsewhere would
    pile up. Every sandbox starts a new emulator, whose shards an earlier run's checkpoint
    does not describe, so a checkpoint already there is deleted rather than resumed from.
    """
    path = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="gtmon-sandbox-"))
    path.mkdir(parents=True, exist_ok=True)
    (path / CHECKPOINT_FILE).unlink(missing_ok=True)
    return path


def sandbox_config(options: SandboxOptions, endpoint: str, state: Path) -> Config:
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
            # should, in most writes: those are attributed exactly. A third of its ordinary
            # writes and every third staged conflict leave it out, and are placed by timing.
            "tables": [{"name": ORDERS_TABLE, "conflicts": {"writer_attribute": "UpdatedIn"}}],
            "streams": {
                "poll_interval_min_seconds": 0.2,
                "poll_interval_max_seconds": 1.0,
                "checkpoint_path": str(state / CHECKPOINT_FILE),
                "settle_seconds": 5,
            },
            # Conflict probes every 20 s, not 300 s, so they show in the view at once.
            "conflicts": {"probe_interval_seconds": SANDBOX_PROBE_INTERVAL},
            "metrics": {"host": options.host, "port": options.metrics_port},
            "log": {"format": "auto", "level": "info"},
        },
        "gtmon sandbox",
    )


# The view fits a standard 80x24 terminal: Live crops anything taller from the bottom
# and a wider line wraps, either of which pushes the top out of sight.
_VIEW_WIDTH = 80
_VIEW_ROWS = 24
_MAX_CONFLICT_ROWS = 5
# Two-line matrix cells only while at least this many conflict rows still fit.
_MIN_CONFLICT_ROWS = 3
# How each side's region was known (see monitor.web.KNOWN_BY), in a few characters.
_KNOWN_BY_SHORT = {"attribute": "attr", "unknown": "?"}


def _fmt(seconds: float | None) -> str:
    """A duration in at most six characters: 712ms, 1.52s, 12.3s, 123s, 17m."""
    if seconds is None:
        return "–"
    if abs(seconds) < 1:
        return f"{seconds * 1000:.0f}ms"
    if abs(seconds) < 1000:
        return f"{seconds:.{_decimals(seconds)}f}s"
    if abs(seconds) < 60_000:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def _decimals(seconds: float) -> int:
    return 2 if abs(seconds) < 10 else 1 if abs(seconds) < 100 else 0


def _fmt_bound(seconds: float | None, bound: float | None) -> str:
    """A lag with its error bound in the lag's unit: 712±9ms, 1.52±0.02s."""
    if seconds is None or bound is None or abs(seconds) >= 1000:
        return _fmt(seconds)
    if abs(seconds) < 1:
        return f"{seconds * 1000:.0f}±{bound * 1000:.0f}ms"
    digits = _decimals(seconds)
    return f"{seconds:.{digits}f}±{bound:.{digits}f}s"


def _first_fitting(candidates: list[str], width: int) -> str:
    return next((c for c in candidates if len(c) <= width), candidates[-1])


def _lag_cell(pair: dict[str, Any], width: int, lines: int) -> Text:
    """State, pending age when >= 1 s, last lag (± error if it fits) / p99, coloured by state."""
    state = str(pair.get("state"))
    pending = pair.get("oldest_pending_seconds") or 0.0
    pend = f" pend {_fmt(pending)}" if pending >= 1 else ""
    last = _fmt(pair.get("last_lag_seconds"))
    bounded = _fmt_bound(pair.get("last_lag_seconds"), pair.get("last_error_bound_seconds"))
    p99 = _fmt(pair.get("p99_seconds"))
    if lines >= 2:
        lag = _first_fitting([f"{bounded} / {p99}", f"{last} / {p99}", f"{last}/{p99}"], width)
        text = f"{state}{pend}\n{lag}"
    else:
        text = _first_fitting(
            [
                f"{state} {bounded}/{p99}{pend}",
                f"{state} {last}/{p99}{pend}",
                f"{state} {last}{pend}",
                f"{state}{pend}",
            ],
            width,
        )
    return Text(text, style=_COLOURS.get(state, ""), no_wrap=True, overflow="ellipsis")


def _heading(markup: str) -> Text:
    text = Text.from_markup(markup)
    text.no_wrap, text.overflow = True, "ellipsis"
    return text


def _lag_matrix(table_name: str, rows: list[dict[str, Any]], lines: int) -> list[Any]:
    regions = sorted({p["source_region"] for p in rows} | {p["target_region"] for p in rows})
    corner = "from \\ to"
    # Columns share the width: label column, then one per target, one space either side between them.
    cell_width = (_VIEW_WIDTH - max([len(corner), *map(len, regions)]) - 2 * len(regions)) // max(
        1, len(regions)
    )
    matrix = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    matrix.add_column(corner, no_wrap=True)
    for region in regions:
        matrix.add_column(region, no_wrap=True, overflow="ellipsis", max_width=cell_width)
    by_pair = {(p["source_region"], p["target_region"]): p for p in rows}
    for source in regions:
        cells: list[Any] = [source]
        for target in regions:
            pair = by_pair.get((source, target))
            cells.append("·" if pair is None else _lag_cell(pair, cell_width, lines))
        matrix.add_row(*cells)
    return [
        _heading(f"[bold]replication lag — {table_name}[/]  (last±error / p99, pend: oldest pending)"),
        matrix,
    ]


def _known_by(conflict: dict[str, Any]) -> tuple[str, bool]:
    """`timing` when both sides were known the same way, else `attr/timing` (lost/won), and
    whether it is such a split; the verdict's mode for entries that do not say (older daemons)."""
    lost, won = conflict.get("loser_known_by"), conflict.get("winner_known_by")
    if lost is None and won is None:
        return str(conflict.get("mode")), False
    lost_text, won_text = (_KNOWN_BY_SHORT.get(str(h), str(h)) for h in (lost, won))
    return (lost_text, False) if lost_text == won_text else (f"{lost_text}/{won_text}", True)


def _pending_line(pending: dict[str, Any]) -> Text | None:
    """One line: the links with real writes pending (from the streams), oldest age each.

    `gtmon fault pause` makes a link's count climb with the demo traffic; `resume` drains it.
    """
    if not pending:
        return None
    busy = [
        f"{table} {link.replace('->', '→')} {info['pending']} ({_fmt(info['oldest_seconds'])})"
        for table, links in sorted(pending.items())
        for link, info in sorted(links.items())
        if info.get("pending")
    ]
    text = Text.from_markup("[bold]pending writes:[/] ")
    text.append(", ".join(busy) if busy else "none")
    text.no_wrap, text.overflow = True, "ellipsis"
    return text


def _probe_lines(probes: dict[str, Any]) -> list[Text]:
    """Detected probes per table (reported apart from the conflicts above), and a line per
    table whose last probe was not detected, with the reason (where the fault is)."""
    if not probes.get("enabled"):
        return []
    counts, lines = [], []
    for table, state in sorted(probes.get("tables", {}).items()):
        results = state.get("results", {})
        judged = sum(results.get(r, 0) for r in ("detected", "missed", "mislabelled"))
        counts.append(f"{table} {results.get('detected', 0)}/{judged}")
        last = state.get("last") or {}
        if last.get("result") not in (None, "detected"):
            lines.append(_heading(
                f"  [bold red]{table} {last['result']}:[/] " + escape(str(last.get("reason")))
            ))
    return [_heading("[bold]conflict probes detected:[/] " + ", ".join(counts)), *lines]


def render(status: dict[str, Any], traffic: DemoTraffic | None, endpoint: str, metrics_url: str) -> Group:
    """The live view: lag matrix per canary table, regions, conflicts; fits 80 columns x 24 rows."""
    pairs = status.get("pairs", [])
    regions_info: dict[str, Any] = status.get("regions", {})
    conflicts = status.get("conflicts", {})
    recent = conflicts.get("recent", [])
    by_table = {
        name: [p for p in pairs if p["table"] == name] for name in sorted({p["table"] for p in pairs})
    }
    counts = {
        name: len({p["source_region"] for p in rows} | {p["target_region"] for p in rows})
        for name, rows in by_table.items()
    }

    # Rows: 2 header lines, per table a heading, column labels and the matrix, the regions
    # table with its column labels, the conflicts heading (+ labels and rows), the traffic line.
    fixed = 2 + (1 + len(regions_info) if regions_info else 0) + 1 + (1 if traffic is not None else 0)
    pending = _pending_line(status.get("pending_writes") or {})
    fixed += 1 if pending is not None else 0
    probes = _probe_lines(status.get("probes", {}))
    fixed += len(probes)

    def left(lines: int) -> int:
        return _VIEW_ROWS - fixed - sum(2 + lines * n for n in counts.values())

    wanted = min(len(recent), _MIN_CONFLICT_ROWS)
    cell_lines = 2 if left(2) >= wanted + (1 if wanted else 0) else 1
    shown = min(len(recent), _MAX_CONFLICT_ROWS, max(0, left(cell_lines) - 1))

    parts: list[Any] = [
        _heading(f"[bold]gtmon sandbox[/]  emulator {endpoint}  Ctrl-C to stop"),
        _heading(f"status page {metrics_url}/  metrics {metrics_url}/metrics"),
    ]
    for table_name, rows in by_table.items():
        parts.extend(_lag_matrix(table_name, rows, cell_lines))
    if regions_info:
        regions_table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        regions_table.add_column("region", no_wrap=True)
        regions_table.add_column("up", no_wrap=True)
        # Wrappable, so this column is the one narrowed; its text is truncated, not wrapped.
        regions_table.add_column("last error")
        for region, info in sorted(regions_info.items()):
            regions_table.add_row(
                region,
                Text("up", style="green") if info.get("up") else Text("DOWN", style="bold red"),
                Text(info.get("last_error") or "", no_wrap=True, overflow="ellipsis"),
            )
        parts.append(regions_table)
    if pending is not None:
        parts.append(pending)
    total = conflicts.get("total", len(recent))
    latest = f", latest {shown}" if 0 < shown < total else ""
    found = f"{total} detected" if conflicts.get("enabled", True) else "detection off"
    known = [_known_by(conflict) for conflict in recent[:shown]]
    split = "  (known by: lost/won)" if any(is_split for _, is_split in known) else ""
    parts.append(_heading(f"[bold]last-writer-wins conflicts: {found}[/]{latest}{split}"))
    if shown:
        conflict_table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        conflict_table.add_column("table", no_wrap=True, overflow="ellipsis", max_width=14)
        conflict_table.add_column("key")
        for column in ("lost in", "won by"):
            conflict_table.add_column(column, no_wrap=True, overflow="ellipsis", max_width=14)
        conflict_table.add_column("known by", no_wrap=True, overflow="ellipsis", max_width=16)
        for conflict, (how, _) in zip(recent[:shown], known, strict=True):
            conflict_table.add_row(
                str(conflict.get("table")),
                Text(format_key(conflict.get("key")), no_wrap=True, overflow="ellipsis"),
                str(conflict.get("loser_region")),
                str(conflict.get("winner_region")),
                how,
            )
        parts.append(conflict_table)
    parts.extend(probes)
    if traffic is not None:
        parts.append(
            _heading(
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
    state = prepare_state_dir(options.state_dir)
    log_file = state / LOG_FILE
    log_stream = open(log_file, "a", encoding="utf-8") if options.ui else sys.stderr  # noqa: SIM115
    with contextlib.ExitStack() as cleanup:
        if log_stream is not sys.stderr:
            cleanup.callback(log_stream.close)
        # A child process: in this one, the emulator's threads would skew the monitor's timing.
        server = cleanup.enter_context(
            EmulatorProcess(
                sandbox_settings(options.realistic_latency),
                options.host,
                options.port,
                stderr=log_stream if log_stream is not sys.stderr else None,
            )
        )
        await _serve_sandbox(options, server.url, log_stream, state)
    if log_stream is not sys.stderr:
        print(f"gtmon sandbox stopped; the monitor's log is in {log_file.resolve()}")
    return 0


async def _serve_sandbox(options: SandboxOptions, endpoint: str, log_stream: TextIO, state: Path) -> None:
    """Tables, demo traffic and the monitor against the running emulator, until a signal."""
    config = sandbox_config(options, endpoint, state)
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
        for action in await ensure_canary_table(
            service.clients, config.canary.table, REGIONS, "gtmon_expires_at", 60
        ):
            _log.info("canary_table", action=action)
        if options.traffic:
            traffic = DemoTraffic(endpoint, REGIONS)
            traffic.start()
        await service.start()
        metrics_url = f"http://{options.host}:{service.web.port}"
        if not options.ui:
            print(
                f"gtmon sandbox: emulator {endpoint}, metrics {metrics_url}/metrics, "
                f"state {state.resolve()}",
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
