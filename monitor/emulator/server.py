"""Serving the emulator over HTTP on loopback, in a thread or in the foreground."""

from __future__ import annotations

import logging
import socket
import threading

from werkzeug.serving import BaseWSGIServer, make_server

from monitor.emulator.emulator import Emulator

__all__ = ["EmulatorServer"]


class EmulatorServer:
    """An emulator bound to host:port; `start()` serves from a background thread."""

    def __init__(self, emulator: Emulator, host: str = "127.0.0.1", port: int = 8000) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        if port:
            # werkzeug prints its own advice and calls sys.exit on a busy port; fail first,
            # with an OSError the commands turn into one clear line.
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, port))
        self.emulator = emulator
        # threaded=True: a ThreadedWSGIServer, whose request threads are daemon threads.
        self._server: BaseWSGIServer = make_server(host, port, emulator, threaded=True)
        self.host = host
        self.port = self._server.server_port
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
