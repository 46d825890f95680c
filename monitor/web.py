"""HTTP endpoints on aiohttp.web: /metrics, /healthz, /readyz, /api/status and the status page.

aiohttp parses the requests (header and line limits, HTTP/1.1, HEAD), answers
them and shuts down gracefully, in the daemon's own event loop, so that the
scrape-time collectors and the status page read the monitor's state without
threads or locks. What aiohttp has no hook for, which connections get in and
for how long (caps, lazy TLS, handshake and request deadlines), is
`monitor.listener`; the password checks, off the event loop and limited per
client, are `monitor.webauth`; the page itself is `monitor.statuspage`.

`/healthz` and `/readyz` answer without credentials, also when basic auth is on:
they tell a probe "up" or "not ready (why)" and nothing else, and the probes of
Kubernetes, Docker and systemd carry no passwords. Everything else (`/metrics`,
`/api/status`, the status page, and 404s) needs them.

Every answer closes its connection (`Connection: close`): the listener's deadline is
then the request's deadline, and no idle keep-alive connection holds a slot.
Refusals (401, 429) are answered no sooner than `failure_delay_seconds` after the
request arrived (an idle sleep, no CPU), so a client hammering the port gets one
answer a second per connection, not thousands.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from monitor.listener import HANDSHAKE_TIMEOUT, REQUEST_TIMEOUT, Listener
from monitor.statuspage import render_status_page
from monitor.webauth import AuthLimits, BasicAuth, client_key
from monitor.webconfig import WebConfig

if TYPE_CHECKING:
    from monitor.metrics import Metrics

__all__ = ["BODY_LIMIT", "OPEN_PATHS", "WebServer"]

_log = structlog.get_logger("gtmon.web")
# Answered without credentials: probes must work with basic auth on.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
# No endpoint takes a body: a larger declared one is refused (413) before anything else.
BODY_LIMIT = 64 * 1024
# aiohttp's parser limits: one line or header of 8 KiB (a 4 KiB Authorization token fits),
# at most 64 headers, so one request head holds at most ~0.5 MiB.
MAX_LINE = 8190
MAX_HEADERS = 64
# After the answer, unread request bytes are drained this long before the close (a close
# with unread bytes is a reset, which can destroy the answer in flight).
LINGER_SECONDS = 1.0
SHUTDOWN_TIMEOUT = 5.0
_NOT_FOUND = "not found; try /, /metrics, /api/status, /healthz, /readyz\n"

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _async(answer: Callable[[web.Request], web.StreamResponse]) -> _Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return answer(request)

    return handler


class _ServerLog(logging.Logger):
    """aiohttp's server logger. aiohttp logs a malformed request with a traceback at error
    level, so every garbage request would flood the log (issue 16): a client's mistake is a
    debug line here; anything else aiohttp reports stays an error with its traceback."""

    def __init__(self) -> None:
        super().__init__("gtmon.web.aiohttp")

    def handle(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            _log.debug("http_bad_request", status=error.code, error=str(error.message)[:200])
        else:
            _log.error("http_server_error", message=record.getMessage(), exc_info=record.exc_info)


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
        routes: Mapping[str, Callable[[web.Request], web.StreamResponse]] | None = None,
    ) -> None:
        self._registry = registry
        # Further GET paths, each answered by its own module (behind the same auth).
        self._routes = dict(routes or {})
        self._status = status
        self._ready = ready
        self._metrics = metrics
        self._web_config = web_config or WebConfig()
        self._auth = BasicAuth(self._web_config.users, auth_limits) if self._web_config.users else None
        self._runner: web.AppRunner | None = None
        self._listener = Listener(
            host,
            port,
            self._protocol,
            ssl_context=self._web_config.ssl_context,
            max_connections=max_connections,
            max_per_client=max_connections_per_client,
            handshake_timeout=handshake_timeout,
            request_timeout=request_timeout,
            on_refused=self._count_refused,
        )

    @property
    def host(self) -> str:
        return self._listener.host

    @property
    def port(self) -> int:
        return self._listener.port

    @property
    def open_connections(self) -> int:
        return self._listener.open_connections

    def _protocol(self) -> asyncio.Protocol:
        """aiohttp's protocol for one admitted connection."""
        assert self._runner is not None and self._runner.server is not None
        return self._runner.server()

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=BODY_LIMIT)
        app.router.add_get("/", self._page)
        app.router.add_get("/metrics", self._scrape)
        app.router.add_get("/api/status", self._api_status)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        for path, answer in self._routes.items():
            app.router.add_get(path, _async(answer))
        return app

    async def start(self) -> None:
        if self._auth is not None:
            await self._auth.start()
        runner = web.AppRunner(
            self._app(),
            access_log=None,
            logger=_ServerLog(),
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            lingering_time=LINGER_SECONDS,
            max_line_size=MAX_LINE,
            max_field_size=MAX_LINE,
            max_headers=MAX_HEADERS,
        )
        try:
            await runner.setup()
            self._runner = runner
            await self._listener.start()
        except BaseException:
            await runner.cleanup()
            self._runner = None
            if self._auth is not None:
                self._auth.close()
            raise

    async def stop(self) -> None:
        """Stop accepting, let answers in flight finish (up to SHUTDOWN_TIMEOUT), then close."""
        await self._listener.stop_accepting()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._listener.abort_all()
        if self._auth is not None:
            self._auth.close()

    def _count_refused(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.web_connections_refused.labels(reason).inc()

    @web.middleware
    async def _guard(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """Every answer: the web config's headers, and one answer per connection."""
        response = await self._route(request, handler)
        for name, value in self._web_config.headers:
            response.headers[name] = value
        response.headers["Server"] = "gtmon"  # not aiohttp's and Python's versions
        response.force_close()
        return response

    async def _route(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """Method and size checks, then credentials (but for the probes), then the route;
        a bug in a handler is one 500 and one logged traceback, never a dropped connection."""
        arrived = asyncio.get_running_loop().time()
        problem = request.match_info.http_exception
        if isinstance(problem, web.HTTPMethodNotAllowed):
            return web.Response(status=405, text="only GET and HEAD\n", headers={"Allow": "GET, HEAD"})
        if request.content_length is not None and request.content_length > BODY_LIMIT:
            return web.Response(status=413, text=f"request body over {BODY_LIMIT} bytes\n")
        if request.path not in OPEN_PATHS:
            refusal = await self._authorize(request, arrived)
            if refusal is not None:
                return refusal
        if isinstance(problem, web.HTTPNotFound):
            return web.Response(status=404, text=_NOT_FOUND)
        try:
            return await handler(request)
        except Exception as exc:  # a bug in one handler must never take the endpoint down
            _log.exception("http_request_failed", path=request.path[:200])
            if self._metrics is not None:
                self._metrics.count_internal_error("web", exc)
            return web.Response(status=500, text="internal error\n")

    async def _authorize(self, request: web.Request, arrived: float) -> web.Response | None:
        """None when the request may proceed, else the refusal to answer with."""
        if self._auth is None:
            return None
        # Two Authorization headers are ambiguous: malformed, whichever one is right.
        values = request.headers.getall("Authorization", [])
        header = "" if len(values) > 1 else (values[0] if values else None)
        peer = request.remote or ""
        outcome = await self._auth.check(header, client_key(peer))
        if outcome.ok:
            return None
        if self._metrics is not None:
            self._metrics.web_auth_failures.labels(outcome.reason).inc()
        if outcome.log:
            _log.warning(
                "http_auth_refused",
                client=peer,
                reason=outcome.reason,
                user=(outcome.user or "")[:64],
                path=request.path[:100],
            )
        held = arrived + self._auth.limits.failure_delay_seconds
        await asyncio.sleep(max(0.0, held - asyncio.get_running_loop().time()))
        if outcome.status == 429:
            text = (
                "too many failed attempts; retry later\n"
                if outcome.reason == "rate_limited"
                else "busy checking passwords; retry later\n"
            )
            return web.Response(
                status=429, text=text, headers={"Retry-After": str(outcome.retry_after or 1)}
            )
        return web.Response(
            status=401,
            text="unauthorized\n",
            headers={"WWW-Authenticate": 'Basic realm="gtmon", charset="UTF-8"'},
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        answer = self._ready()  # True/False, or (ready, why not: one problem a line)
        ready, text = answer if isinstance(answer, tuple) else (answer, "")
        text = text or ("ready" if ready else "starting")
        return web.Response(status=200 if ready else 503, text=f"{text}\n")

    async def _scrape(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _api_status(self, request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(self._status(), indent=2), content_type="application/json")

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(text=render_status_page(self._status()), content_type="text/html")
