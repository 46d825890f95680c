"""HTTP endpoints: /metrics, /healthz, /readyz, /api/status and the status page.

The routes and what each answers live here; the HTTP/1.1 and TLS serving, with
its connection budgets and deadlines, in `monitor.httpserver`; the password
checks, off the event loop and limited per client, in `monitor.webauth`.

`/healthz` and `/readyz` answer without credentials, also when basic auth is on:
they tell a probe "up" or "not ready (why)" and nothing else, and the probes of
Kubernetes, Docker and systemd carry no passwords. Everything else (`/metrics`,
`/api/status`, the status page, and 404s) needs them.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from monitor.httpserver import HANDSHAKE_TIMEOUT, REQUEST_TIMEOUT, HttpServer, Request, Response
from monitor.webauth import AuthLimits, BasicAuth
from monitor.webconfig import WebConfig

if TYPE_CHECKING:
    from monitor.metrics import Metrics

__all__ = ["KNOWN_BY", "OPEN_PATHS", "WebServer", "format_key", "render_status_page"]

_log = structlog.get_logger("gtmon.web")
# Answered without credentials: probes must work with basic auth on.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
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
    parts.extend(_probes_section(status.get("probes", {})))
    parts.append("</body></html>")
    return "".join(parts)


def _probes_section(probes: dict[str, Any]) -> list[str]:
    """Conflict probes per table: results and the last one with its reason (issue 13)."""
    if not probes.get("enabled"):
        return []
    parts = [
        "<h2>Conflict probes</h2>",
        "<p class='muted'>Races gtmon stages to prove detection works; "
        "never counted in the conflicts above.</p>",
        "<table><tr><th>table</th><th>detected</th><th>missed</th><th>mislabelled</th>"
        "<th>skipped</th><th>last</th></tr>",
    ]
    for table, state in sorted(probes.get("tables", {}).items()):
        results = state.get("results", {})
        last = state.get("last") or {}
        latest = f"{last.get('result')}: {last.get('reason')}" if last else "none yet"
        cells = [table, *(str(results.get(r, 0)) for r in
                          ("detected", "missed", "mislabelled", "skipped")), latest]
        parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
    return parts


class WebServer:
    """Serves the endpoints on host:port, optionally with TLS and basic auth (web config)."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        status: Callable[[], dict[str, Any]],
        ready: Callable[[], bool | tuple[bool, str]],
        web_config: WebConfig | None = None,
        *,
        metrics: Metrics | None = None,
        max_connections: int = 64,
        max_connections_per_client: int = 16,
        auth_limits: AuthLimits | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self._registry = registry
        self._status = status
        self._ready = ready
        self._metrics = metrics
        self._web_config = web_config or WebConfig()
        self._auth = BasicAuth(self._web_config.users, auth_limits) if self._web_config.users else None
        self._http = HttpServer(
            host,
            port,
            self._handle,
            ssl_context=self._web_config.ssl_context,
            headers=self._web_config.headers,
            max_connections=max_connections,
            max_per_client=max_connections_per_client,
            handshake_timeout=handshake_timeout,
            request_timeout=request_timeout,
            on_refused=self._count_refused,
        )

    @property
    def host(self) -> str:
        return self._http.host

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def open_connections(self) -> int:
        return self._http.open_connections

    async def start(self) -> None:
        if self._auth is not None:
            await self._auth.start()
        try:
            await self._http.start()
        except BaseException:
            if self._auth is not None:
                self._auth.close()
            raise

    async def stop(self) -> None:
        await self._http.stop()
        if self._auth is not None:
            self._auth.close()

    def _count_refused(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.web_connections_refused.labels(reason).inc()

    async def _authorize(self, request: Request) -> Response | None:
        """None when the request may proceed, else the refusal to answer with."""
        if self._auth is None:
            return None
        # Two Authorization headers are ambiguous: malformed, whichever one is right.
        header = "" if "authorization" in request.repeated else request.headers.get("authorization")
        outcome = await self._auth.check(header, request.client)
        if outcome.ok:
            return None
        if self._metrics is not None:
            self._metrics.web_auth_failures.labels(outcome.reason).inc()
        if outcome.log:
            _log.warning(
                "http_auth_refused",
                client=request.peer,
                reason=outcome.reason,
                user=(outcome.user or "")[:64],
                path=request.path[:100],
            )
        held = request.arrived + self._auth.limits.failure_delay_seconds
        if outcome.status == 429:
            return Response(
                429,
                b"too many failed attempts; retry later\n" if outcome.reason == "rate_limited"
                else b"busy checking passwords; retry later\n",
                headers=(("Retry-After", str(outcome.retry_after or 1)),),
                not_before=held,
            )
        return Response(
            401,
            b"unauthorized\n",
            headers=(("WWW-Authenticate", 'Basic realm="gtmon", charset="UTF-8"'),),
            not_before=held,
        )

    async def _handle(self, request: Request) -> Response:
        method, path = request.method, request.path
        if method not in ("GET", "HEAD"):
            return Response(405, b"only GET and HEAD\n", headers=(("Allow", "GET, HEAD"),))
        if path == "/healthz":
            return Response(200, b"ok\n")
        if path == "/readyz":
            answer = self._ready()  # True/False, or (ready, why not: one problem a line)
            ready, text = answer if isinstance(answer, tuple) else (answer, "")
            text = text or ("ready" if ready else "starting")
            return Response(200 if ready else 503, f"{text}\n".encode())
        refusal = await self._authorize(request)
        if refusal is not None:
            return refusal
        if path == "/metrics":
            return Response(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)
        if path == "/api/status":
            return Response(200, json.dumps(self._status(), indent=2).encode(), "application/json")
        if path == "/":
            return Response(200, render_status_page(self._status()).encode(), "text/html; charset=utf-8")
        return Response(404, b"not found; try /, /metrics, /api/status, /healthz, /readyz\n")
