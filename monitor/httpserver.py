"""A small HTTP/1.1 server for the daemon's endpoints, hardened for a hostile network.

It runs in the daemon's own event loop (the scrape-time collectors and the status
page read the monitor's state without threads or locks) and holds every
connection to a budget, because the port listens on production networks and the
canary measures time on the same loop:

- **connections**: at most `max_connections` open at once and `max_per_client` from
  one client address (an IPv6 /64); more are counted (`on_refused`) and closed
  a second later, unread (at most `max_connections` of them wait so: beyond, they
  are closed at once), so that a client retrying at once costs one accept a
  second, not hundreds;
- **TLS costs nothing until the client speaks**: the socket is accepted plain and
  the TLS layer (asyncio gives each TLS connection a 256 KiB buffer) is built only
  when the first bytes of a ClientHello arrive; a handshake not complete within
  `handshake_timeout` (10 s) is dropped. 900 silent connections used to hold
  275 MB for 60 s each;
- **deadlines**: the request head must arrive within `request_timeout` (10 s) of
  the handshake and fit in 32 KiB; a slow client is cut off without an answer;
- **one answer per connection** (`Connection: close`): no keep-alive state to
  hold open; a malformed request gets 400 and an oversized head 431, never a
  traceback; a handler's bug is one 500 and one logged traceback;
- a `Response.not_before` holds the answer (an idle sleep, no CPU): refusals are
  answered no sooner than a second after the request, so a client hammering the
  port gets one answer a second per connection, not thousands.

Why not aiohttp.web (issue 17 proposes it): every defence above sits below the
HTTP layer, at accept and TLS-handshake time, where aiohttp offers no hook
(its TCPSite has no handshake timeout, no connection cap and builds the TLS
layer at accept); and aiohttp's server has no deadline for a request head.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

import structlog

from monitor.webauth import client_key

__all__ = ["HttpServer", "Request", "Response"]

_log = structlog.get_logger("gtmon.web")

HANDSHAKE_TIMEOUT = 10.0
REQUEST_TIMEOUT = 10.0
HEAD_LIMIT = 32 * 1024
# After the answer: wait this long for the client to close (its unread bytes would
# otherwise turn our close into a reset that can destroy the answer in flight).
LINGER_SECONDS = 1.0
TLS_SHUTDOWN_TIMEOUT = 2.0
# A connection over a cap is closed this long after it was accepted (unread).
REFUSED_HOLD_SECONDS = 1.0
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    path: str
    headers: Mapping[str, str]  # lower-case names
    repeated: frozenset[str]  # header names sent more than once
    peer: str  # the client's address
    client: str  # the address limits apply to (webauth.client_key)
    arrived: float  # loop time


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    not_before: float | None = None  # loop time: hold the answer until then


Handler = Callable[[Request], Awaitable[Response]]


def _parse_head(head: bytes, peer: str, arrived: float) -> Request | None:
    """The request line and headers, or None when they are not HTTP/1.x."""
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if not method.isalpha() or not method.isupper() or version not in ("HTTP/1.0", "HTTP/1.1"):
        return None
    if not target.startswith("/"):
        return None
    headers: dict[str, str] = {}
    repeated: set[str] = set()
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or " " in name:
            return None  # no folded or nameless lines
        key = name.lower()
        if key in headers:
            repeated.add(key)
        headers[key] = value.strip()
    return Request(
        method,
        target,
        target.split("?", 1)[0],
        headers,
        frozenset(repeated),
        peer,
        client_key(peer),
        arrived,
    )


@dataclass
class _Counts:
    open: int = 0
    per_client: dict[str, int] = field(default_factory=dict)


class HttpServer:
    """Serves `handler` on host:port (TLS when `ssl_context` is given) within the budgets
    described in the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        handler: Handler,
        *,
        ssl_context: ssl.SSLContext | None = None,
        headers: Iterable[tuple[str, str]] = (),
        max_connections: int = 64,
        max_per_client: int = 16,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        request_timeout: float = REQUEST_TIMEOUT,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._handler = handler
        self._ssl = ssl_context
        self._headers = tuple(headers)
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self._handshake_timeout = handshake_timeout
        self._request_timeout = request_timeout
        self._on_refused = on_refused
        self._listeners: list[socket.socket] = []
        self._acceptors: list[asyncio.Task[None]] = []
        self._connections: dict[asyncio.Task[None], socket.socket] = {}
        self._refused_sockets: dict[socket.socket, asyncio.TimerHandle] = {}
        self._counts = _Counts()

    @property
    def open_connections(self) -> int:
        return self._counts.open

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        seen: set[tuple[int, object]] = set()
        try:
            for family, kind, proto, _, address in infos:
                if (family, address) in seen:
                    continue
                seen.add((family, address))
                sock = socket.socket(family, kind, proto)
                self._listeners.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if self.port == 0 and len(self._listeners) > 1:  # one port for every address
                    address = (address[0], self.port, *address[2:])
                sock.bind(address)
                sock.listen(128)
                sock.setblocking(False)
                if self.port == 0:
                    self.port = sock.getsockname()[1]
        except BaseException:
            for sock in self._listeners:
                sock.close()
            self._listeners.clear()
            raise
        self._acceptors = [loop.create_task(self._accept(sock)) for sock in self._listeners]

    async def stop(self) -> None:
        for task in self._acceptors:
            task.cancel()
        tasks = [*self._acceptors, *self._connections]
        for task in self._connections:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for sock in self._connections.values():
            sock.close()  # a task cancelled before it ran never closed its socket
        for sock, timer in self._refused_sockets.items():
            timer.cancel()
            sock.close()
        self._refused_sockets.clear()
        for sock in self._listeners:
            sock.close()
        self._acceptors.clear()
        self._listeners.clear()

    def _refused(self, reason: str) -> None:
        if self._on_refused is not None:
            self._on_refused(reason)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, address = await loop.sock_accept(listener)
            except OSError as exc:  # out of descriptors: wait rather than spin
                _log.warning("http_accept_failed", error=str(exc))
                await asyncio.sleep(0.5)
                continue
            self._admit(conn, str(address[0]))
            await asyncio.sleep(0)  # a burst of connections must not hold the loop

    def _refuse(self, conn: socket.socket, reason: str) -> None:
        self._refused(reason)
        if len(self._refused_sockets) >= self.max_connections:
            conn.close()
            return
        loop = asyncio.get_running_loop()
        self._refused_sockets[conn] = loop.call_later(REFUSED_HOLD_SECONDS, self._close_refused, conn)

    def _close_refused(self, conn: socket.socket) -> None:
        self._refused_sockets.pop(conn, None)
        conn.close()

    def _admit(self, conn: socket.socket, peer: str) -> None:
        client = client_key(peer)
        counts = self._counts
        if counts.open >= self.max_connections:
            self._refuse(conn, "max_connections")
            return
        if counts.per_client.get(client, 0) >= self.max_per_client:
            self._refuse(conn, "max_connections_per_client")
            return
        counts.open += 1
        counts.per_client[client] = counts.per_client.get(client, 0) + 1
        task = asyncio.get_running_loop().create_task(self._connection(conn, peer, client))
        self._connections[task] = conn
        task.add_done_callback(self._connections.pop)

    def _release(self, client: str) -> None:
        counts = self._counts
        counts.open -= 1
        left = counts.per_client.get(client, 1) - 1
        if left > 0:
            counts.per_client[client] = left
        else:
            counts.per_client.pop(client, None)

    async def _client_spoke(self, conn: socket.socket, timeout: float) -> bool | None:
        """Wait until the client sends its first byte (left in the socket for TLS to read):
        True when it did, False when it closed, None when `timeout` passed."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(conn.fileno(), readable)
        try:
            await asyncio.wait_for(ready, timeout)
        except TimeoutError:
            return None
        finally:
            loop.remove_reader(conn.fileno())
        try:
            return bool(conn.recv(1, socket.MSG_PEEK))
        except BlockingIOError:
            return True
        except OSError:
            return False

    async def _connection(self, conn: socket.socket, peer: str, client: str) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        transport: asyncio.BaseTransport | None = None
        try:
            reader = asyncio.StreamReader(limit=HEAD_LIMIT)
            protocol = asyncio.StreamReaderProtocol(reader)
            if self._ssl is None:
                transport, _ = await loop.connect_accepted_socket(lambda: protocol, conn)
            else:
                spoke = await self._client_spoke(conn, self._handshake_timeout)
                if not spoke:
                    if spoke is None:
                        self._refused("tls_handshake_timeout")
                    return
                left = max(0.05, started + self._handshake_timeout - loop.time())
                try:
                    transport, _ = await loop.connect_accepted_socket(
                        lambda: protocol,
                        conn,
                        ssl=self._ssl,
                        ssl_handshake_timeout=left,
                        ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT,
                    )
                except OSError:  # ssl.SSLError, a reset, or the handshake deadline
                    timed_out = loop.time() - started >= self._handshake_timeout - 0.05
                    self._refused("tls_handshake_timeout" if timed_out else "tls_handshake_failed")
                    return
            assert isinstance(transport, asyncio.WriteTransport)
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            with contextlib.suppress(TimeoutError, ConnectionError, OSError):
                await asyncio.wait_for(self._exchange(reader, writer, peer), self._request_timeout)
        finally:
            if transport is not None:
                transport.close()
            else:
                conn.close()
            self._release(client)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return  # the client left
        except asyncio.LimitOverrunError:
            await self._answer(reader, writer, "GET", Response(431, b"request head too large\n"))
            return
        arrived = loop.time()
        request = _parse_head(head, peer, arrived)
        if request is None:
            await self._answer(reader, writer, "GET", Response(400, b"bad request\n"))
            return
        try:
            response = await self._handler(request)
        except Exception:  # a bug in one handler must never take the endpoint down
            _log.exception("http_request_failed", path=request.path[:200])
            response = Response(500, b"internal error\n")
        if response.not_before is not None:
            await asyncio.sleep(max(0.0, response.not_before - loop.time()))
        await self._answer(reader, writer, request.method, response)

    async def _answer(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        method: str,
        response: Response,
    ) -> None:
        lines = [
            f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Error')}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in (*response.headers, *self._headers)),
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        writer.write(head + (response.body if method != "HEAD" else b""))
        await writer.drain()
        # Let the client read the answer and close first; whatever it still sends is dropped.
        if writer.can_write_eof():
            writer.write_eof()
        with contextlib.suppress(TimeoutError, ConnectionError, OSError):
            async with asyncio.timeout(LINGER_SECONDS):
                while await reader.read(16 * 1024):
                    pass
