"""TLS as the web config says, and connections held to a budget.

Real certificates made in the test (tests/security/certs.py), real TLS clients (ssl,
httpx) and raw sockets against a WebServer on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time

import httpx
import pytest
from structlog.testing import capture_logs

from monitor.config import ConfigError
from monitor.webconfig import load_web_config
from tests.security.conftest import PASSWORD, Pki, ServeFactory, WebConfigWriter


def tls_get(port: int, context: ssl.SSLContext, path: str = "/healthz") -> tuple[int, str, str]:
    """A GET over TLS with the stdlib: (status, negotiated version, cipher)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        version, cipher = sock.version() or "", (sock.cipher() or ("",))[0]
    if not data.startswith(b"HTTP/1.1 "):
        raise ConnectionError("closed without an answer")  # TLS 1.3: a refused client cert
    return int(data.split(b" ", 2)[1]), version, cipher


async def attempt(port: int, context: ssl.SSLContext, path: str = "/healthz") -> int | str:
    """The status, or the name of the error when the handshake or the request failed."""
    try:
        status, _, _ = await asyncio.to_thread(tls_get, port, context, path)
        return status
    except (ssl.SSLError, ConnectionError, OSError) as exc:
        return type(exc).__name__


async def test_require_and_verify_client_cert_is_enforced(
    serve: ServeFactory, write_web_config: WebConfigWriter, pki: Pki
) -> None:
    # Before: this config validated and ran, and served everyone without a certificate.
    served = await serve(
        write_web_config(
            tls={"client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": str(pki.ca.path)}
        )
    )
    assert await attempt(served.port, pki.client_context()) not in (200, 503)
    assert await attempt(served.port, pki.client_context(pki.stranger)) not in (200, 503)
    assert await attempt(served.port, pki.client_context(pki.client)) == 200
    assert served.refused("tls_handshake_failed") >= 2


async def test_verify_client_cert_if_given_lets_no_cert_in_but_not_a_bad_one(
    serve: ServeFactory, write_web_config: WebConfigWriter, pki: Pki
) -> None:
    served = await serve(
        write_web_config(
            tls={"client_auth_type": "VerifyClientCertIfGiven", "client_ca_file": str(pki.ca.path)}
        )
    )
    assert await attempt(served.port, pki.client_context()) == 200
    assert await attempt(served.port, pki.client_context(pki.client)) == 200
    assert await attempt(served.port, pki.client_context(pki.stranger)) not in (200, 503)


async def test_min_and_max_version_are_enforced(
    serve: ServeFactory, write_web_config: WebConfigWriter, pki: Pki
) -> None:
    tls13 = await serve(write_web_config(tls={"min_version": "TLS13"}))
    only12 = pki.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
    assert await attempt(tls13.port, only12) not in (200, 503)
    status, version, _ = await asyncio.to_thread(tls_get, tls13.port, pki.client_context())
    assert (status, version) == (200, "TLSv1.3")

    tls12 = await serve(write_web_config(tls={"max_version": "TLS12"}))
    status, version, _ = await asyncio.to_thread(tls_get, tls12.port, pki.client_context())
    assert (status, version) == (200, "TLSv1.2")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_tls_1_0_and_1_1_are_refused(
    serve: ServeFactory, write_web_config: WebConfigWriter, pki: Pki
) -> None:
    path = write_web_config(tls={})
    context = load_web_config(path).ssl_context
    assert context is not None and context.minimum_version == ssl.TLSVersion.TLSv1_2
    served = await serve(path)
    old = pki.client_context()
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    assert await attempt(served.port, old) not in (200, 503)


async def test_cipher_suites_are_enforced(
    serve: ServeFactory, write_web_config: WebConfigWriter, pki: Pki
) -> None:
    served = await serve(
        write_web_config(
            tls={
                "max_version": "TLS12",
                "cipher_suites": ["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"],
            }
        )
    )
    status, _, cipher = await asyncio.to_thread(tls_get, served.port, pki.client_context())
    assert (status, cipher) == (200, "ECDHE-ECDSA-AES256-GCM-SHA384")
    other = pki.client_context()
    other.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    assert await attempt(served.port, other) not in (200, 503)


async def test_configured_headers_are_on_every_answer(
    serve: ServeFactory, write_web_config: WebConfigWriter, pki: Pki, hash4: str
) -> None:
    headers = {"Strict-Transport-Security": "max-age=31536000", "X-Frame-Options": "deny"}
    served = await serve(write_web_config(tls={}, headers=headers, users={"prometheus": hash4}))
    async with httpx.AsyncClient(verify=pki.client_context(), timeout=10) as client:
        for path, auth, expected in (
            ("/healthz", None, 200),
            ("/metrics", None, 401),
            ("/metrics", ("prometheus", PASSWORD), 200),
            ("/nope", ("prometheus", PASSWORD), 404),
        ):
            answer = await client.get(f"{served.url}{path}", auth=auth)
            assert answer.status_code == expected
            assert answer.headers["strict-transport-security"] == "max-age=31536000"
            assert answer.headers["x-frame-options"] == "deny"


@pytest.mark.parametrize(
    ("tls", "text", "expected"),
    [
        ({"client_auth_type": "RequireAnyClientCert"}, None, "cannot be enforced"),
        ({"client_auth_type": "Sometimes"}, None, "must be one of"),
        ({"client_auth_type": "RequireAndVerifyClientCert"}, None, "needs client_ca_file"),
        ({"client_ca_file": "CA"}, None, "verifies no client certificate"),
        ({"min_version": "TLS11"}, None, "TLS 1.2 and 1.3 only"),
        ({"cipher_suites": ["TLS_AES_128_GCM_SHA256"]}, None, "TLS 1.3 suite"),
        ({"cipher_suites": ["TLS_RSA_WITH_RC4_128_SHA"]}, None, "unknown cipher suite"),
        ({"curve_preferences": ["X25519"]}, None, "does not implement"),
        ({"client_allowed_sans": ["a"]}, None, "does not implement"),
        (None, "http_server_config:\n  http2: true\n", "HTTP/1.1 only"),
        (None, "http_server_config:\n  headers:\n    X-Powered-By: me\n", "cannot be set"),
        (None, "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n", "nosniff"),
        (None, "rate_limit:\n  burst: 1\n", "does not implement"),
        (None, "basic_auth_user: {}\n", "unknown field; did you mean 'basic_auth_users'?"),
        (None, "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_verson: TLS13\n",
         "did you mean 'min_version'?"),
        (None, "tls_server_config:\n  cert_file: nope.pem\n  key_file: nope.key\n", "no such file"),
        (None, "basic_auth_users: [a]\n", "basic_auth_users"),
        (None, "\x00\x01binary", "binary"),
    ],
)
def test_settings_gtmon_cannot_enforce_are_refused_with_file_and_key(
    write_web_config: WebConfigWriter, pki: Pki, tls: dict | None, text: str | None, expected: str
) -> None:
    if tls is not None and tls.get("client_ca_file") == "CA":
        tls = {"client_ca_file": str(pki.ca.path)}
    path = write_web_config(tls=tls, text=text)
    with pytest.raises(ConfigError) as info:
        load_web_config(path)
    message = str(info.value)
    assert expected in message and str(path) in message
    assert "\n" not in message


def test_broken_certificates_and_keys_are_named(write_web_config: WebConfigWriter, pki: Pki) -> None:
    folder = pki.folder
    (folder / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    (folder / "not-pem.txt").write_text("hello")
    encrypted = pki.ca.issue("encrypted", password=b"pw")
    cases = [
        ({"cert_file": str(folder / "garbage.pem")}, "cannot load"),
        ({"cert_file": str(folder / "not-pem.txt")}, "holds no PEM certificate"),
        ({"key_file": str(pki.client.key)}, "is not the key of cert_file"),
        ({"cert_file": str(encrypted.cert), "key_file": str(encrypted.key)}, "encrypted"),
        ({"client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": str(folder / "garbage.pem")},
         "client_ca_file: cannot load"),
    ]
    for tls, expected in cases:
        with pytest.raises(ConfigError, match=expected):
            load_web_config(write_web_config(tls=tls))


async def test_a_silent_connection_is_dropped_at_the_handshake_deadline(
    serve: ServeFactory, write_web_config: WebConfigWriter, pki: Pki
) -> None:
    # Before: held 60 s at ~300 kB each, no limit.
    served = await serve(write_web_config(tls={}), handshake_timeout=0.5)

    def silent() -> float:
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
            started = time.monotonic()
            assert sock.recv(1) == b""  # the server closed it
            return time.monotonic() - started

    def partial() -> float:
        # A ClientHello, then nothing: the server has answered and waits for our next flight.
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = pki.client_context().wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
            sock.sendall(outgoing.read())
            started = time.monotonic()
            while sock.recv(65536):
                pass
            return time.monotonic() - started

    assert 0.3 < await asyncio.to_thread(silent) < 3
    assert await asyncio.to_thread(partial) < 3
    assert served.refused("tls_handshake_timeout") == 2
    assert served.server.open_connections == 0


async def test_connections_beyond_the_caps_are_refused_and_counted(
    serve: ServeFactory, write_web_config: WebConfigWriter, pki: Pki
) -> None:
    served = await serve(
        write_web_config(tls={}), max_connections=6, max_connections_per_client=4, handshake_timeout=30
    )
    held: list[socket.socket] = []
    try:
        for _ in range(4):
            held.append(socket.create_connection(("127.0.0.1", served.port), timeout=5))
        await asyncio.sleep(0.2)
        assert served.server.open_connections == 4
        # A fifth from the same address is closed unread, a second later (a client that
        # retries at once costs one accept a second) ...
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as fifth:
            started = time.monotonic()
            assert await asyncio.to_thread(fifth.recv, 1) == b""
            assert 0.8 < time.monotonic() - started < 3
        assert served.refused("max_connections_per_client") == 1
        # ... while another address still gets in, up to the server's cap.
        for source in ("127.0.0.2", "127.0.0.3"):
            held.append(socket.create_connection(("127.0.0.1", served.port), 5, (source, 0)))
        await asyncio.sleep(0.2)
        assert served.server.open_connections == 6
        with socket.create_connection(("127.0.0.1", served.port), 5, ("127.0.0.4", 0)) as extra:
            assert await asyncio.to_thread(extra.recv, 1) == b""
        assert served.refused("max_connections") == 1
    finally:
        for sock in held:
            sock.close()
    # Closed slots are free again: a real client is served.
    await asyncio.sleep(0.3)
    assert served.server.open_connections == 0
    assert await attempt(served.port, pki.client_context()) == 200


async def test_plain_http_slow_client_is_cut_off_and_others_are_served(serve: ServeFactory) -> None:
    served = await serve(request_timeout=0.5)

    def slow() -> float:
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")
            started = time.monotonic()
            assert sock.recv(1) == b""
            return time.monotonic() - started

    waiting = asyncio.create_task(asyncio.to_thread(slow))
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(f"{served.url}/metrics")).status_code == 200
    assert 0.3 < await waiting < 3


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /metrics HTTP/9.9\r\nHost: x\r\n\r\n", 400),
        (b"GET metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\n folded: header\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host (RFC 9112)
        # aiohttp answers an oversized head 400 (the hand-written server said 431).
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 40000 + b"\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(100)) + b"\r\n", 400),
        (b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 405),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n", 413),
    ],
)
async def test_malformed_requests_get_an_answer_not_a_traceback(
    serve: ServeFactory, request_bytes: bytes, status: int
) -> None:
    served = await serve()

    def send() -> bytes:
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
            sock.sendall(request_bytes)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            return data

    with capture_logs() as logs:
        data = await asyncio.to_thread(send)
    # aiohttp answers what it cannot parse as HTTP/1.0.
    assert data.startswith((f"HTTP/1.1 {status} ".encode(), f"HTTP/1.0 {status} ".encode())), data[:100]
    assert [entry for entry in logs if entry["log_level"] in ("error", "critical")] == []


async def test_a_client_sending_a_byte_a_second_is_cut_off_without_stalling_the_loop(
    serve: ServeFactory,
) -> None:
    # The canary measures lag on this event loop: a dribbling client must cost it nothing.
    served = await serve(request_timeout=2.0)
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"

    def dribble() -> tuple[float, int]:
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
            started = time.monotonic()
            sent = 0
            try:
                for byte in request:
                    sock.sendall(bytes([byte]))
                    sent += 1
                    time.sleep(1.0)
            except OSError:  # the server cut us off mid-request
                pass
            assert sock.recv(1) == b""  # never answered
            return time.monotonic() - started, sent

    worst, last = 0.0, time.monotonic()
    client = asyncio.create_task(asyncio.to_thread(dribble))
    while not client.done():
        await asyncio.sleep(0.01)
        now = time.monotonic()
        worst, last = max(worst, now - last - 0.01), now
    took, sent = await client
    assert 1.5 < took < 5 and sent < len(request)
    assert served.server.open_connections == 0
    assert worst < 0.25, f"the event loop stalled {worst:.3f} s"


async def test_stop_lets_an_answer_in_flight_finish_and_then_refuses(
    serve: ServeFactory, write_web_config: WebConfigWriter, hash4: str
) -> None:
    served = await serve(write_web_config(users={"prometheus": hash4}))  # refusals held 1 s
    port = served.port

    def wrong_password() -> int:
        url = f"http://127.0.0.1:{port}/metrics"
        return httpx.get(url, auth=("prometheus", "wrong"), timeout=5).status_code

    answer = asyncio.create_task(asyncio.to_thread(wrong_password))
    await asyncio.sleep(0.3)  # the 401 is being held
    await served.server.stop()
    assert await answer == 401
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
