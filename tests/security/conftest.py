"""Fixtures for the security tests: real certificates, real bcrypt hashes, web configs on
disk, and a WebServer on a loopback port with a fresh registry."""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml
from prometheus_client import CollectorRegistry

from monitor.metrics import Metrics
from monitor.web import WebServer
from monitor.webauth import AuthLimits
from monitor.webconfig import load_web_config
from tests.security.certs import CertAuthority, Pair

PASSWORD = "s3cret-Passw0rd"
STATUS = {"instance_id": "t", "version": "0", "pairs": [], "regions": {}, "conflicts": {}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Pki:
    """A CA with a server certificate for 127.0.0.1, a client certificate it signed, and a
    client certificate from a CA the server does not trust."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ca = CertAuthority(folder, "gtmon test CA")
        self.server = self.ca.issue("server")
        self.client = self.ca.issue("client", client=True)
        self.stranger = CertAuthority(folder, "stranger CA").issue("stranger", client=True)

    def client_context(self, cert: Pair | None = None, **versions: Any) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca.path))
        if cert is not None:
            context.load_cert_chain(str(cert.cert), str(cert.key))
        for name, value in versions.items():
            setattr(context, name, value)
        return context


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def hash4() -> str:
    """PASSWORD at bcrypt cost 4: fast, for tests about behaviour rather than time."""
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


@pytest.fixture(scope="session")
def hash12() -> str:
    """PASSWORD at cost 12 (~0.25 s a check, as deployed): for tests about time."""
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=12)).decode()


WebConfigWriter = Callable[..., Path]


@pytest.fixture
def write_web_config(tmp_path: Path, pki: Pki) -> WebConfigWriter:
    """`write_web_config(tls=..., users=..., headers=...)` or `(text=...)`: a web config file
    (its certificate paths point into the session's PKI folder)."""

    def write(
        *,
        tls: dict[str, Any] | None = None,
        users: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        text: str | None = None,
    ) -> Path:
        path = tmp_path / "web-config.yml"
        if text is None:
            data: dict[str, Any] = {}
            if tls is not None:
                data["tls_server_config"] = {
                    "cert_file": str(pki.server.cert),
                    "key_file": str(pki.server.key),
                } | tls
            if headers:
                data["http_server_config"] = {"headers": headers}
            if users:
                data["basic_auth_users"] = users
            text = yaml.safe_dump(data)
        path.write_text(text)
        return path

    return write


class Served:
    """A WebServer on a loopback port and what the tests read from it."""

    def __init__(self, server: WebServer, registry: CollectorRegistry, scheme: str) -> None:
        self.server = server
        self.registry = registry
        self.url = f"{scheme}://127.0.0.1:{server.port}"

    @property
    def port(self) -> int:
        return self.server.port

    def refused(self, reason: str) -> float:
        return self.registry.get_sample_value(
            "gtmon_web_connections_refused_total", {"reason": reason}
        ) or 0.0

    def auth_failures(self, reason: str) -> float:
        return self.registry.get_sample_value("gtmon_web_auth_failures_total", {"reason": reason}) or 0.0


ServeFactory = Callable[..., Any]


@pytest.fixture
async def serve() -> AsyncIterator[ServeFactory]:
    """`await serve(web_config_path | None, ready=..., **WebServer kwargs)`; stopped at the end."""
    started: list[WebServer] = []

    async def start(
        web_config: Path | None = None,
        *,
        ready: Callable[[], bool] = lambda: True,
        limits: AuthLimits | None = None,
        **kwargs: Any,
    ) -> Served:
        registry = CollectorRegistry()
        metrics = Metrics(registry, "test")
        config = load_web_config(web_config) if web_config is not None else None
        server = WebServer(
            "127.0.0.1",
            0,
            registry,
            lambda: STATUS,
            ready,
            config,
            metrics=metrics,
            auth_limits=limits,
            **kwargs,
        )
        await server.start()
        started.append(server)
        return Served(server, registry, "https" if config is not None and config.tls else "http")

    yield start
    for server in started:
        await server.stop()
