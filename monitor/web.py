"""HTTP endpoints: /metrics, /healthz, /readyz, /api/status and the status page.

A small asyncio server in the daemon's own event loop: scrape-time collectors
and the status page read the monitor's state without threads or locks, TLS
comes from the standard library, and every request has a deadline.
"""

from __future__ import annotations

import asyncio
import html
import json
from collections.abc import Callable
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from monitor.webconfig import WebConfig

__all__ = ["KNOWN_BY", "WebServer", "format_key", "render_status_page"]

_log = structlog.get_logger("gtmon.web")
_REASONS = {
    200: "OK",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
_COLOURS = {
    "OK": "#2e7d32",
    "UNKNOWN": "#757575",
    "WARNING": "#f9a825",
    "CRITICAL": "#e65100",
    "STALLED": "#c62828",
    "DOWN": "#6a1b9a",
}


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def format_key(key: Any) -> str:
    """An item key as `Attr=value, ...` (DynamoDB JSON types dropped)."""
    if not isinstance(key, dict):
        return str(key)
    parts = []
    for name, value in key.items():
        shown = next(iter(value.values())) if isinstance(value, dict) and len(value) == 1 else value
        parts.append(f"{name}={shown}")
    return ", ".join(parts)


# How a conflict's loser or winner region was established (the entries' `loser_known_by`
# and `winner_known_by`): the word shown, and what it means.
KNOWN_BY = {
    "attribute": "the write carries the writer attribute",
    "structure": "the streams alone admit only this region",
    "timing": "stream arrival times rule the other regions out",
    "canary": "it took the link delays the canary measured to rule the others out",
    "unknown": "the region could not be established",
}


def _region_cell(conflict: dict[str, Any], side: str) -> str:
    """`eu-west-1 by timing` (the how in grey, explained on hover); just the region when the
    entry does not say how (older daemons)."""
    region = html.escape(str(conflict.get(f"{side}_region")))
    how = conflict.get(f"{side}_known_by")
    if how is None:
        return region
    meaning = html.escape(KNOWN_BY.get(str(how), ""), quote=True)
    return f"{region} <span class='muted' title='{meaning}'>by {html.escape(str(how))}</span>"


def _health_section(status: dict[str, Any]) -> list[str]:
    """What keeps the monitor from doing its job (fails /readyz) and what needs an operator;
    components that crashed, with their restarts. Nothing when all is well."""
    health = status.get("health") or {}
    parts = []
    problems, warnings = health.get("problems") or [], health.get("warnings") or []
    if problems or warnings:
        parts.append("<h2>Health: " + ("NOT READY" if problems else "warnings") + "</h2><ul>")
        parts.extend(f"<li style='color:#c62828'>{html.escape(str(p))}</li>" for p in problems)
        parts.extend(f"<li style='color:#e65100'>{html.escape(str(w))}</li>" for w in warnings)
        parts.append("</ul>")
    troubled = [c for c in status.get("components") or [] if not c.get("up") or c.get("restarts")]
    if troubled:
        parts.append(
            "<h2>Components</h2><table><tr><th>component</th><th>table</th><th>region</th>"
            "<th>up</th><th>restarts</th><th>last crash</th></tr>"
        )
        for c in troubled:
            crash = c.get("last_crash") or {}
            cells = [
                html.escape(str(c.get("component"))),
                html.escape(str(c.get("table") or "")),
                html.escape(str(c.get("region") or "")),
                "up" if c.get("up") else "DOWN",
                html.escape(str(c.get("restarts", 0))),
                html.escape(f"{crash.get('type', '')}: {crash.get('message', '')}" if crash else ""),
            ]
            parts.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
        parts.append("</table>")
    return parts


def render_status_page(status: dict[str, Any]) -> str:
    """A page a person reads at a glance: the lag matrix per table, regions, errors, conflicts."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><meta http-equiv='refresh' content='5'>",
        "<title>gtmon</title><style>body{font-family:sans-serif;margin:2em}"
        "table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:.4em .7em}"
        "td.cell{color:#fff;text-align:center}.muted{color:#777}</style></head><body>",
        f"<h1>gtmon</h1><p class='muted'>instance {html.escape(str(status.get('instance_id')))}, "
        f"version {html.escape(str(status.get('version')))}, refreshed every 5 s</p>",
        *_health_section(status),
    ]
    pairs = status.get("pairs", [])
    for table in sorted({p["table"] for p in pairs}):
        rows = [p for p in pairs if p["table"] == table]
        regions = sorted({p["source_region"] for p in rows} | {p["target_region"] for p in rows})
        by_pair = {(p["source_region"], p["target_region"]): p for p in rows}
        parts.append(
            f"<h2>Replication lag: {html.escape(table)}</h2><table><tr><th>source \\ target</th>"
        )
        parts.extend(f"<th>{html.escape(r)}</th>" for r in regions)
        parts.append("</tr>")
        for source in regions:
            parts.append(f"<tr><th>{html.escape(source)}</th>")
            for target in regions:
                pair = by_pair.get((source, target))
                if pair is None:
                    parts.append("<td class='muted'>·</td>")
                    continue
                state = pair["state"]
                detail = _fmt(pair["last_lag_seconds"])
                if pair["oldest_pending_seconds"] >= 1:
                    detail += f"<br>pending {_fmt(pair['oldest_pending_seconds'])}"
                parts.append(
                    f"<td class='cell' style='background:{_COLOURS.get(state, '#999')}' "
                    f"title='p50 {_fmt(pair['p50_seconds'])}, p99 {_fmt(pair['p99_seconds'])}'>"
                    f"<b>{state}</b><br>{detail}</td>"
                )
            parts.append("</tr>")
        parts.append("</table>")
    parts.append("<h2>Regions</h2><table><tr><th>region</th><th>up</th><th>last error</th></tr>")
    for region, info in sorted(status.get("regions", {}).items()):
        up = "up" if info["up"] else "DOWN"
        colour = "#2e7d32" if info["up"] else "#c62828"
        parts.append(
            f"<tr><td>{html.escape(region)}</td><td class='cell' style='background:{colour}'>{up}</td>"
            f"<td>{html.escape(info.get('last_error') or '')}</td></tr>"
        )
    parts.append("</table>")
    conflicts = status.get("conflicts", {}).get("recent", [])
    total = status.get("conflicts", {}).get("total", len(conflicts))
    parts.append(f"<h2>Last-writer-wins conflicts: {total} detected</h2>")
    if conflicts:
        parts.append(
            "<table><tr><th>table</th><th>key</th><th>lost in</th><th>won by</th><th>mode</th></tr>"
        )
        for conflict in conflicts[:50]:
            cells = [
                html.escape(str(conflict.get("table"))),
                html.escape(format_key(conflict.get("key"))),
                _region_cell(conflict, "loser"),
                _region_cell(conflict, "winner"),
                html.escape(str(conflict.get("mode"))),
            ]
            parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
        shown = {str(c.get(f"{side}_known_by")) for c in conflicts[:50] for side in ("loser", "winner")}
        legend = [f"<b>{html.escape(how)}</b>: {html.escape(text)}" for how, text in KNOWN_BY.items()
                  if how in shown]
        if legend:
            parts.append("<p class='muted'>How each region was known: " + "; ".join(legend) + ".</p>")
    else:
        parts.append("<p class='muted'>none seen</p>")
    parts.append("</body></html>")
    return "".join(parts)


class WebServer:
    """Serves the endpoints on host:port, optionally with TLS and basic auth."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        status: Callable[[], dict[str, Any]],
        ready: Callable[[], bool | tuple[bool, str]],
        web_config: WebConfig | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._registry = registry
        self._status = status
        self._ready = ready
        self._web_config = web_config or WebConfig()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle,
            self.host,
            self.port,
            ssl=self._web_config.ssl_context(),
        )
        sockets = list(self._server.sockets or ())
        if sockets and self.port == 0:
            self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = ([*lines[0].split(" ", 2), "", ""])[:3]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            status, content_type, body = self._route(method, target.split("?", 1)[0], headers)
            extra = 'WWW-Authenticate: Basic realm="gtmon"\r\n' if status == 401 else ""
            writer.write(
                (
                    f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
                ).encode()
                + (body if method != "HEAD" else b"")
            )
            await asyncio.wait_for(writer.drain(), timeout=10)
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ):
            pass
        except Exception:  # one bad request must never take the endpoint down
            _log.exception("http_request_failed")
        finally:
            writer.close()

    def _route(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET\n"
        if not self._web_config.authorized(headers.get("authorization")):
            return 401, "text/plain", b"unauthorized\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            answer = self._ready()  # True/False, or (ready, why not in a few words)
            ready, text = answer if isinstance(answer, tuple) else (answer, "")
            text = text or ("ready" if ready else "starting")
            return (200 if ready else 503), "text/plain", f"{text}\n".encode()
        if path == "/api/status":
            return 200, "application/json", json.dumps(self._status(), indent=2).encode()
        if path == "/":
            return 200, "text/html; charset=utf-8", render_status_page(self._status()).encode()
        return 404, "text/plain", b"not found; try /, /metrics, /api/status, /healthz, /readyz\n"
