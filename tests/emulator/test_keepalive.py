"""The emulator keeps connections open between answers, as DynamoDB does, and closes them
whenever what follows on the connection could be misread: raw sockets and real clients
against the session's emulator on 127.0.0.1."""

from __future__ import annotations

import socket

import pytest

from monitor.emulator import EmulatorServer
from monitor.emulator.control import ControlClient

LIST_TABLES = (
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-amz-json-1.0\r\n"
    b"X-Amz-Target: DynamoDB_20120810.ListTables\r\n"
    b"Authorization: AWS4-HMAC-SHA256 Credential=k/20261201/us-east-1/dynamodb/aws4_request\r\n"
    b"Content-Length: 2\r\n\r\n{}"
)

# A request hidden in another's body: it must never be read as a request of its own.
HIDDEN_OUTAGE = (
    b"POST /gtmon/fault/outage HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b'Content-Length: 40\r\n\r\n{"region": "us-east-1", "mode": "error"}'
)


class Answers:
    """The answers arriving on one connection, split by their Content-Length."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = b""

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"closed before a whole answer: {self.data!r}"
        self.data += chunk

    def next(self) -> tuple[bytes, bytes]:
        while b"\r\n\r\n" not in self.data:
            self._more()
        head, _, self.data = self.data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        while len(self.data) < length:
            self._more()
        body, self.data = self.data[:length], self.data[length:]
        return head, body


def closed_after(sock: socket.socket) -> bool:
    sock.settimeout(2)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False


def test_many_calls_share_one_connection(emu: EmulatorServer) -> None:
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as sock:
        answers = Answers(sock)
        for _ in range(5):
            sock.sendall(LIST_TABLES)
            head, body = answers.next()
            assert head.startswith(b"HTTP/1.1 200") and b"connection: close" not in head.lower()
            assert b"TableNames" in body
        assert not closed_after(sock)


def test_pipelined_requests_are_answered_in_order(emu: EmulatorServer) -> None:
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as sock:
        sock.sendall(LIST_TABLES + b"GET /gtmon/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answers = Answers(sock)
        assert b"TableNames" in answers.next()[1]
        assert b'"ok": true' in answers.next()[1]


@pytest.mark.parametrize(
    ("name", "request_bytes"),
    [
        # refused before its body is read: the body must not be read as the next request
        (
            "foreign origin",
            LIST_TABLES.replace(b"Host: 127.0.0.1", b"Host: 127.0.0.1\r\nOrigin: http://x.example"),
        ),
        # a body the endpoint has no use for, and a request hidden in it
        (
            "unread body",
            b"GET /gtmon/state HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s"
            % (len(HIDDEN_OUTAGE), HIDDEN_OUTAGE),
        ),
        (
            "chunked body",
            b"POST /gtmon/fault/clear HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            b"\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
            % (len(HIDDEN_OUTAGE), HIDDEN_OUTAGE),
        ),
        ("client asks", b"GET /gtmon/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
        ("HTTP/1.0", b"GET /gtmon/health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"),
    ],
)
def test_a_connection_closes_when_what_follows_could_be_misread(
    emu: EmulatorServer, name: str, request_bytes: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as sock:
        sock.sendall(request_bytes)
        answers = Answers(sock)
        head, _ = answers.next()
        assert not answers.data and closed_after(sock), name
    if name not in ("client asks", "HTTP/1.0"):
        assert b"connection: close" in head.lower(), name
    faults = ControlClient(emu.url).state()["faults"]
    assert faults.get("us-east-1", {}).get("outage") is None  # the hidden request was not run
