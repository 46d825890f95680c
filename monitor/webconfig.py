"""TLS and basic auth for the HTTP endpoints, in the Prometheus exporter web config format.

The same file format as node_exporter's `--web.config.file` (exporter-toolkit),
so operators reuse what they already have:

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # optional: mutual TLS
      client_ca_file: clients-ca.crt
      min_version: TLS12
    http_server_config:
      headers:
        Strict-Transport-Security: max-age=31536000
    basic_auth_users:
      prometheus: $2b$12$...   # bcrypt hash

Everything is checked when the file is loaded (by `gtmon config validate` and
before `gtmon run` starts anything): the certificate and key are loaded and must
match, the client CA must load, every hash must be a bcrypt hash bcrypt accepts.
A setting gtmon cannot enforce is refused with the file and the key named, never
silently ignored: exporter-toolkit's `RequireAnyClientCert` (Python's ssl module
cannot require a certificate without verifying it), TLS 1.3 cipher suites (not
configurable, as in Go), `http2: true` (gtmon serves HTTP/1.1), and the keys
gtmon does not implement (`cert`, `key`, `client_ca`, `client_allowed_sans`,
`curve_preferences`, `rate_limit`). Relative paths are taken from the file's
folder, as exporter-toolkit does. Certificates are read once, at start: a
renewed certificate takes a restart.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from monitor.config import ConfigError, read_yaml, validation_problems

__all__ = [
    "CIPHER_SUITES",
    "CLIENT_AUTH_TYPES",
    "HEADERS",
    "WebConfig",
    "bcrypt_cost",
    "load_web_config",
]

# exporter-toolkit's client_auth_type values and the ssl verify mode each becomes.
# RequestClientCert asks for a certificate and accepts any, verified or not; Python's
# ssl cannot accept an unverified one, and gtmon grants nothing on a certificate it
# has not verified, so it asks for none: the same access, without the request.
CLIENT_AUTH_TYPES: dict[str, ssl.VerifyMode | None] = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_NONE,
    "RequireAnyClientCert": None,  # refused: see _REFUSED_CLIENT_AUTH
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_REFUSED_CLIENT_AUTH = (
    "RequireAnyClientCert (a client certificate nobody verifies) cannot be enforced with "
    "Python's ssl module; use RequireAndVerifyClientCert with client_ca_file"
)
_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# Go's names of the secure TLS 1.2 suites (crypto/tls CipherSuites()) and OpenSSL's.
CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
_TLS13_SUITES = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
# The response headers exporter-toolkit lets a web config set, with the values allowed
# where they form an enumeration (None: any value without control characters).
HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
# $2a$, $2b$, $2y$ (htpasswd -B, Python's bcrypt, Go's x/crypto/bcrypt), cost, salt and hash.
_BCRYPT_RE = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")
# Cost 4 is bcrypt's minimum; above 16 one check takes seconds of CPU.
_BCRYPT_COSTS = range(4, 17)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# exporter-toolkit keys gtmon does not implement: refused with their own message.
_NOT_IMPLEMENTED = {
    "rate_limit": "",
    "tls_server_config.cert": "; put the certificate in a file and use cert_file",
    "tls_server_config.key": "; put the key in a file and use key_file",
    "tls_server_config.client_ca": "; put the CA in a file and use client_ca_file",
    "tls_server_config.client_allowed_sans": "",
    "tls_server_config.curve_preferences": "",
}
_EXAMPLE = "docs/deployment.md, 'TLS and basic auth'"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _TlsServerConfig(_Strict):
    cert_file: str = Field(min_length=1)
    key_file: str = Field(min_length=1)
    client_auth_type: str = "NoClientCert"
    client_ca_file: str | None = Field(default=None, min_length=1)
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    cipher_suites: list[str] | None = None
    prefer_server_cipher_suites: bool = True

    @field_validator("client_auth_type")
    @classmethod
    def _client_auth(cls, value: str) -> str:
        if value in ("RequireAnyClientCert", "RequireClientCert"):
            raise ValueError(_REFUSED_CLIENT_AUTH)
        if value not in CLIENT_AUTH_TYPES:
            raise ValueError(f"must be one of {', '.join(CLIENT_AUTH_TYPES)}")
        return value

    @field_validator("min_version", "max_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if value in ("TLS10", "TLS11"):
            raise ValueError("gtmon serves TLS 1.2 and 1.3 only: use TLS12 or TLS13")
        if value not in _TLS_VERSIONS:
            raise ValueError("must be TLS12 or TLS13")
        return value

    @field_validator("cipher_suites")
    @classmethod
    def _ciphers(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if name in _TLS13_SUITES:
                raise ValueError(
                    f"{name} is a TLS 1.3 suite: TLS 1.3 suites cannot be chosen (as in Go); "
                    "list TLS 1.2 suites only"
                )
            if name not in CIPHER_SUITES:
                raise ValueError(f"unknown cipher suite {name!r}; known: {', '.join(CIPHER_SUITES)}")
        return value


class _HttpServerConfig(_Strict):
    http2: bool = False
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("http2")
    @classmethod
    def _no_http2(cls, value: bool) -> bool:
        if value:
            raise ValueError("gtmon serves HTTP/1.1 only: remove http2 or set it to false")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, content in value.items():
            allowed = HEADERS.get(name, ())
            if name not in HEADERS:
                raise ValueError(f"header {name!r} cannot be set; allowed: {', '.join(HEADERS)}")
            if _CONTROL.search(content) or not content.strip():
                raise ValueError(f"{name}: the value is empty or holds control characters")
            if allowed is not None and content not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)} (got {content!r})")
        return value


class _WebConfigFile(_Strict):
    tls_server_config: _TlsServerConfig | None = None
    http_server_config: _HttpServerConfig | None = None
    basic_auth_users: dict[str, str] | None = None


@dataclass(frozen=True)
class WebConfig:
    """A loaded, checked web config: the TLS context to serve with, the users, the headers."""

    source: Path | None = None
    ssl_context: ssl.SSLContext | None = None
    client_auth_type: str = "NoClientCert"
    users: Mapping[str, bytes] = field(default_factory=dict)
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None


def bcrypt_cost(hashed: bytes) -> int:
    """The cost of a hash that passed load_web_config's checks."""
    return int(hashed[4:6])


def _check_hash(path: Path, user: str, hashed: str) -> bytes:
    where = f"{path}: basic_auth_users.{user}"
    match = _BCRYPT_RE.match(hashed)
    if match is None:
        raise ConfigError(
            f"{where}: must be a bcrypt hash ($2y$/$2b$/$2a$, cost, 53 characters of salt and "
            "hash, as `htpasswd -nBC 12 USER` makes)"
        )
    cost = int(match.group(1))
    if cost not in _BCRYPT_COSTS:
        raise ConfigError(f"{where}: bcrypt cost {cost} is outside 4..16")
    # bcrypt's own check of the salt, at cost 4 so that loading stays instant.
    try:
        bcrypt.hashpw(b"gtmon", (hashed[:4] + "04" + hashed[6:29]).encode("ascii"))
    except ValueError as exc:
        raise ConfigError(f"{where}: bcrypt refuses the hash: {exc}") from None
    return hashed.encode("ascii")


def _file(path: Path, key: str, value: str) -> Path:
    resolved = (path.parent / value).resolve()
    if not resolved.is_file():
        raise ConfigError(f"{path}: tls_server_config.{key}: no such file {resolved}")
    return resolved


def _pem(path: Path, key: str, file: Path, marker: bytes, what: str) -> None:
    """A file that is no PEM at all gets its own line, before OpenSSL's terse 'PEM lib'."""
    try:
        with file.open("rb") as handle:
            head = handle.read(1024 * 1024)
    except OSError as exc:
        raise ConfigError(f"{path}: tls_server_config.{key}: cannot read {file}: {exc.strerror}") from None
    if marker not in head:
        raise ConfigError(f"{path}: tls_server_config.{key}: {file} holds no PEM {what}")


def _no_password(*_: Any) -> bytes:
    raise ConfigError("the key is encrypted")


def _ssl_context(path: Path, tls: _TlsServerConfig) -> ssl.SSLContext:
    cert = _file(path, "cert_file", tls.cert_file)
    key = _file(path, "key_file", tls.key_file)
    _pem(path, "cert_file", cert, b"-----BEGIN CERTIFICATE-----", "certificate")
    _pem(path, "key_file", key, b"PRIVATE KEY-----", "private key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = _TLS_VERSIONS[tls.min_version]
    context.maximum_version = _TLS_VERSIONS[tls.max_version]
    if context.minimum_version > context.maximum_version:
        raise ConfigError(f"{path}: tls_server_config.min_version is above max_version")
    try:
        context.load_cert_chain(str(cert), str(key), password=_no_password)
    except ConfigError:
        raise ConfigError(
            f"{path}: tls_server_config.key_file: {key} is encrypted; gtmon needs an unencrypted key"
        ) from None
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise ConfigError(
                f"{path}: tls_server_config.key_file: {key} is not the key of cert_file {cert}"
            ) from None
        raise ConfigError(
            f"{path}: tls_server_config.cert_file/key_file: cannot load {cert} with {key}: {reason}"
        ) from None
    mode = CLIENT_AUTH_TYPES[tls.client_auth_type]
    assert mode is not None  # RequireAnyClientCert was refused by the model
    if tls.client_ca_file is not None:
        if mode == ssl.CERT_NONE:
            raise ConfigError(
                f"{path}: tls_server_config.client_ca_file is set, but client_auth_type "
                f"{tls.client_auth_type} verifies no client certificate; use "
                "RequireAndVerifyClientCert or VerifyClientCertIfGiven"
            )
        ca = _file(path, "client_ca_file", tls.client_ca_file)
        _pem(path, "client_ca_file", ca, b"-----BEGIN CERTIFICATE-----", "certificate")
        try:
            context.load_verify_locations(cafile=str(ca))
        except ssl.SSLError as exc:
            raise ConfigError(
                f"{path}: tls_server_config.client_ca_file: cannot load {ca}: {exc.reason or exc}"
            ) from None
    elif mode != ssl.CERT_NONE:
        raise ConfigError(
            f"{path}: tls_server_config.client_auth_type {tls.client_auth_type} needs "
            "client_ca_file (the CA that signs the client certificates)"
        )
    context.verify_mode = mode
    if tls.cipher_suites:
        if tls.min_version == "TLS13":
            raise ConfigError(
                f"{path}: tls_server_config.cipher_suites apply to TLS 1.2, which min_version "
                "TLS13 turns off"
            )
        try:
            context.set_ciphers(":".join(CIPHER_SUITES[name] for name in tls.cipher_suites))
        except ssl.SSLError as exc:
            raise ConfigError(
                f"{path}: tls_server_config.cipher_suites: OpenSSL refuses them: {exc.reason or exc}"
            ) from None
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    return context


def load_web_config(path: str | Path) -> WebConfig:
    """Read and check a web config file; every problem is a ConfigError naming the file and key."""
    path = Path(path)
    data = read_yaml(path, "the web config")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the web config must hold a mapping, not {type(data).__name__}")
    for key, advice in _NOT_IMPLEMENTED.items():
        section, _, name = key.rpartition(".")
        holder = data.get(section) if section else data
        if isinstance(holder, dict) and name in holder:
            raise ConfigError(f"{path}: {key}: an exporter-toolkit setting gtmon does not implement{advice}")
    try:
        model = _WebConfigFile.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc, _EXAMPLE, _WebConfigFile)
        if len(problems) == 1:
            raise ConfigError(f"{path}: {problems[0]}") from None
        lines = [f"{path}: {len(problems)} problem(s) in the web config:"]
        lines.extend(f"  {problem}" for problem in problems)
        raise ConfigError("\n".join(lines)) from None
    users: dict[str, bytes] = {}
    for user, hashed in (model.basic_auth_users or {}).items():
        if not user or ":" in user or _CONTROL.search(user):
            raise ConfigError(
                f"{path}: basic_auth_users: {user!r} is not a user name (no ':' or control characters)"
            )
        users[user] = _check_hash(path, user, hashed)
    tls = model.tls_server_config
    http = model.http_server_config
    return WebConfig(
        source=path,
        ssl_context=_ssl_context(path, tls) if tls is not None else None,
        client_auth_type=tls.client_auth_type if tls is not None else "NoClientCert",
        users=users,
        headers=tuple(sorted((http.headers if http else {}).items())),
    )
