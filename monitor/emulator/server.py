"""Serving the emulator over HTTP on loopback, in a thread or in the foreground.

The server keeps connections open between answers (HTTP/1.1 keep-alive), as DynamoDB
does. werkzeug's development server, used before, closes every connection (http.server
cannot skip a request body the application left unread): a client then paid a TCP
connection per call, which AWS does not charge, and a monitor tested here churned
through connection objects it would not make against AWS. A connection stays open
after an answer only when the request's body was read to its end and the application
did not answer `Connection: close` itself (it does to the requests it refuses unread).
One thread per connection, as before: a black-holed request holds its own thread only.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import sys
import threading
from collections.abc import Callable, Iterable
from typing import IO, Any
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

from monitor.emulator.emulator import Emulator

__all__ = ["EmulatorServer"]

#: Set in a request's environ when its connection must close after the answer.
_CLOSE = "gtmon.close_connection"
#: An idle connection's thread ends after this (aiohttp drops idle ones after 15 s).
IDLE_SECONDS = 60.0

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _CountedBody:
    """A request body, counting what the application leaves unread."""

    def __init__(self, raw: IO[bytes], length: int) -> None:
        self._raw = raw
        self.left = length

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        data = self._raw.read(size) if size else b""
        self.left -= len(data)
        return data


def _closing_marked(app: WsgiApp) -> WsgiApp:
    """The application's own `Connection: close` (a hop-by-hop header, which WSGI
    servers set themselves) becomes a mark in the environ for the handler."""

    def marked(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            kept = [(k, v) for k, v in headers if k.lower() != "connection"]
            if len(kept) != len(headers):
                environ[_CLOSE] = True
            return start_response(status, kept, exc_info)

        return app(environ, start)

    return marked


class _AnswerHandler(ServerHandler):
    """One answer, in HTTP/1.1, saying `Connection: close` when the connection will close."""

    http_version = "1.1"

    def __init__(self, body: IO[bytes] | _CountedBody, wfile: Any, environ: dict[str, Any]) -> None:
        super().__init__(body, wfile, sys.stderr, environ, multithread=True)  # type: ignore[arg-type]
        # wsgiref's CGI heritage would copy the process's environment into every request's.
        self.os_environ = {}
        self.body = body
        self.closes = bool(environ.get(_CLOSE))

    def handle_error(self) -> None:
        self.closes = True  # an answer cut short must not be read as the next one's start
        super().handle_error()

    def cleanup_headers(self) -> None:
        super().cleanup_headers()
        if isinstance(self.body, _CountedBody) and self.body.left:
            self.closes = True
        if self.closes:
            self.headers["Connection"] = "close"  # type: ignore[attr-defined]  # start_response's


class _ConnectionHandler(WSGIRequestHandler):
    """Answers the requests of one connection until either side closes it."""

    protocol_version = "HTTP/1.1"
    timeout = IDLE_SECONDS
    # An answer leaves in one write (status line, headers and body flushed together), and
    # without Nagle's wait for the ACK the client delays: 40 ms a call on a kept connection.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def handle(self) -> None:
        # http.server's loop over the connection's requests; it ends when the client leaves
        # or the connection stays idle too long.
        with contextlib.suppress(ConnectionError, TimeoutError):
            super(WSGIRequestHandler, self).handle()

    def handle_one_request(self) -> None:
        self.raw_requestline = self.rfile.readline(65537)
        if not self.raw_requestline:
            self.close_connection = True
            return
        if len(self.raw_requestline) > 65536:
            self.requestline = self.request_version = self.command = ""
            self.send_error(414)
            return
        if not self.parse_request():  # answered with an error; parse_request closes
            return
        environ: dict[str, Any] = self.get_environ()
        length = environ.get("CONTENT_LENGTH", "")
        rfile: IO[bytes] = self.rfile  # type: ignore[assignment]  # a BufferedReader
        body: IO[bytes] | _CountedBody = rfile
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower() or (
            length and not length.isdigit()
        ):
            environ[_CLOSE] = True  # where such a body ends is not tracked here
        elif length and int(length) > 0:
            body = _CountedBody(rfile, int(length))
        handler = _AnswerHandler(body, self.wfile, environ)
        handler.request_handler = self  # type: ignore[attr-defined]
        handler.run(self.server.get_app())  # type: ignore[attr-defined]
        if handler.closes:
            self.close_connection = True
        self.wfile.flush()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # one line per request on stderr would drown the emulator's own output


class _ThreadedServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _ThreadedServer6(_ThreadedServer):
    address_family = socket.AF_INET6


class EmulatorServer:
    """An emulator bound to host:port; `start()` serves from a background thread."""

    def __init__(self, emulator: Emulator, host: str = "127.0.0.1", port: int = 8000) -> None:
        self.emulator = emulator
        server_class = _ThreadedServer6 if ":" in host else _ThreadedServer
        self._server = server_class((host, port), _ConnectionHandler)
        self._server.set_app(_closing_marked(emulator))
        self.host = host
        self.port: int = self._server.server_port
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> EmulatorServer:
        self.emulator.start()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="gtmon-emulator-http",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted."""
        self.emulator.start()
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self.close()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
        self.emulator.stop()
