"""Admission of connections to the web port: the one piece of serving aiohttp has no hook for.

aiohttp.web parses and answers the requests (`monitor.web`); this module decides
which connections it gets, and for how long, because the port listens on
production networks and the canary measures time on the same event loop:

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
- **a deadline per connection**: `request_timeout` (10 s) after the handshake the
  connection is aborted, whatever it is doing. The web layer answers once per
  connection (`Connection: close`), so this is the request's deadline: a client
  sending its head a byte a second is cut off, and a client that never reads its
  answer does not hold the slot.

Why not aiohttp's own `TCPSite`: it builds the TLS layer at accept, has no
handshake timeout, no connection cap, and no deadline for a request head. So the
sockets are accepted here and handed, once admitted, to aiohttp's protocol
factory (`web.Server`) with `loop.connect_accepted_socket`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable

import structlog

from monitor.webauth import client_key

__all__ = ["HANDSHAKE_TIMEOUT", "REQUEST_TIMEOUT", "Listener"]

_log = structlog.get_logger("gtmon.web")

HANDSHAKE_TIMEOUT = 10.0
REQUEST_TIMEOUT = 10.0
TLS_SHUTDOWN_TIMEOUT = 2.0
# A connection over a cap is closed this long after it was accepted (unread).
REFUSED_HOLD_SECONDS = 1.0


class _Tracked(asyncio.Protocol):
    """aiohttp's protocol for one connection, with its slot released when it ends."""

    def __init__(self, inner: asyncio.Protocol, on_lost: Callable[[], None]) -> None:
        self._inner = inner
        self._on_lost = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._inner.connection_lost(exc)
        finally:
            self._on_lost()


class _Slot:
    """One admitted connection's share of the caps, released exactly once."""

    def __init__(self, listener: Listener, client: str) -> None:
        self._listener = listener
        self.client = client
        self.deadline: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self.released = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        if self.deadline is not None:
            self.deadline.cancel()
        self._listener._release(self)


class Listener:
    """Accepts on host:port (TLS when `ssl_context` is given) and hands each admitted
    connection to `protocol_factory`, within the budgets of the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        protocol_factory: Callable[[], asyncio.Protocol],
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 64,
        max_per_client: int = 16,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        request_timeout: float = REQUEST_TIMEOUT,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._factory = protocol_factory
        self._ssl = ssl_context
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self._handshake_timeout = handshake_timeout
        self._request_timeout = request_timeout
        self._on_refused = on_refused
        self._listeners: list[socket.socket] = []
        self._acceptors: list[asyncio.Task[None]] = []
        self._handshakes: dict[asyncio.Task[None], socket.socket] = {}
        self._refused_sockets: dict[socket.socket, asyncio.TimerHandle] = {}
        self._slots: set[_Slot] = set()
        self._per_client: dict[str, int] = {}

    @property
    def open_connections(self) -> int:
        return len(self._slots)

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

    async def stop_accepting(self) -> None:
        """Close the port and drop connections not yet handed over (refused, mid-handshake);
        the handed-over ones are the web layer's to finish (graceful shutdown)."""
        for task in (*self._acceptors, *self._handshakes):
            task.cancel()
        tasks = [*self._acceptors, *self._handshakes]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for sock in self._handshakes.values():
            sock.close()  # a task cancelled before it ran never closed its socket
        for sock, timer in self._refused_sockets.items():
            timer.cancel()
            sock.close()
        self._refused_sockets.clear()
        for sock in self._listeners:
            sock.close()
        self._acceptors.clear()
        self._listeners.clear()

    def abort_all(self) -> None:
        """Abort whatever connection is still open (after the web layer's shutdown)."""
        for slot in list(self._slots):
            if slot.transport is not None:
                slot.transport.abort()
            slot.release()

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
        if len(self._slots) >= self.max_connections:
            self._refuse(conn, "max_connections")
            return
        if self._per_client.get(client, 0) >= self.max_per_client:
            self._refuse(conn, "max_connections_per_client")
            return
        slot = _Slot(self, client)
        self._slots.add(slot)
        self._per_client[client] = self._per_client.get(client, 0) + 1
        task = asyncio.get_running_loop().create_task(self._hand_over(conn, slot))
        self._handshakes[task] = conn
        task.add_done_callback(self._handshakes.pop)

    def _release(self, slot: _Slot) -> None:
        self._slots.discard(slot)
        left = self._per_client.get(slot.client, 1) - 1
        if left > 0:
            self._per_client[slot.client] = left
        else:
            self._per_client.pop(slot.client, None)

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

    async def _hand_over(self, conn: socket.socket, slot: _Slot) -> None:
        """Handshake (TLS) and give the connection to the web layer, with its deadline."""
        loop = asyncio.get_running_loop()
        started = loop.time()

        def protocol() -> asyncio.Protocol:
            return _Tracked(self._factory(), slot.release)

        try:
            if self._ssl is None:
                transport, _ = await loop.connect_accepted_socket(protocol, conn)
            else:
                spoke = await self._client_spoke(conn, self._handshake_timeout)
                if not spoke:
                    if spoke is None:
                        self._refused("tls_handshake_timeout")
                    conn.close()
                    slot.release()
                    return
                left = max(0.05, started + self._handshake_timeout - loop.time())
                try:
                    transport, _ = await loop.connect_accepted_socket(
                        protocol,
                        conn,
                        ssl=self._ssl,
                        ssl_handshake_timeout=left,
                        ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT,
                    )
                except OSError:  # ssl.SSLError, a reset, or the handshake deadline
                    timed_out = loop.time() - started >= self._handshake_timeout - 0.05
                    self._refused("tls_handshake_timeout" if timed_out else "tls_handshake_failed")
                    conn.close()
                    slot.release()
                    return
        except OSError:  # the client left before the hand-over
            conn.close()
            slot.release()
            return
        except BaseException:  # cancelled by stop_accepting
            conn.close()
            slot.release()
            raise
        if slot.released:  # the client left during the hand-over
            return
        slot.transport = transport
        slot.deadline = loop.call_later(self._request_timeout, _abort, transport)


def _abort(transport: asyncio.Transport) -> None:
    with contextlib.suppress(Exception):
        transport.abort()
