"""TLS and basic auth for the HTTP endpoints, in the Prometheus exporter web config format.

The same file format as node_exporter's `--web.config.file` (exporter-toolkit),
so operators reuse what they already have:

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
    basic_auth_users:
      prometheus: $2b$12$...   # bcrypt hash

Relative paths are taken from the file's folder, as exporter-toolkit does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from monitor.config import ConfigError

__all__ = ["WebConfig", "load_web_config"]


@dataclass
class WebConfig:
    cert_file: Path | None = None
    key_file: Path | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    _verified: set[bytes] = field(default_factory=set)

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.cert_file is None or self.key_file is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context

    def authorized(self, header: str | None) -> bool:
        """Check an Authorization header against the bcrypt hashes (cached once verified)."""
        if not self.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if hashed is None:
            return False
        # bcrypt is slow on purpose; remember credentials already verified (by digest only).
        token = hashlib.sha256(hashed + b"\0" + password.encode()).digest()
        if any(hmac.compare_digest(token, known) for known in self._verified):
            return True
        if bcrypt.checkpw(password.encode(), hashed):
            self._verified.add(token)
            return True
        return False


def load_web_config(path: str | Path) -> WebConfig:
    path = Path(path)
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the web config: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must hold a mapping")
    unknown = set(data) - {"tls_server_config", "basic_auth_users", "http_server_config"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown field(s) {sorted(unknown)}; allowed: tls_server_config, basic_auth_users"
        )
    config = WebConfig()
    tls = data.get("tls_server_config") or {}
    if tls:
        if not isinstance(tls, dict) or not tls.get("cert_file") or not tls.get("key_file"):
            raise ConfigError(f"{path}: tls_server_config needs cert_file and key_file")
        config.cert_file = (path.parent / str(tls["cert_file"])).resolve()
        config.key_file = (path.parent / str(tls["key_file"])).resolve()
        for name in ("cert_file", "key_file"):
            file = getattr(config, name)
            if not file.is_file():
                raise ConfigError(f"{path}: tls_server_config.{name}: no such file {file}")
    users = data.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        raise ConfigError(f"{path}: basic_auth_users must map user names to bcrypt hashes")
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith("$2"):
            raise ConfigError(
                f"{path}: basic_auth_users.{user}: must be a bcrypt hash ($2y$/$2b$...)"
            )
        config.users[str(user)] = hashed.encode()
    return config
