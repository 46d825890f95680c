"""Checks on what reaches the emulator before anything parses it (pure, no I/O).

The emulator listens on loopback for the user's own tools, but a web page open in
the user's browser can reach loopback too: a cross-site `text/plain` POST needs no
preflight, and DNS rebinding makes a page's own origin resolve to 127.0.0.1. And
whatever the client, a body must not be able to take a request thread (a negative
Content-Length read until the client left) or the interpreter (100k-deep JSON
raised RecursionError, answered 500 on every endpoint). So:

- a request whose `Origin` is not local is refused (browsers always send Origin on
  a cross-site POST; the AWS SDKs and `gtmon fault` never do);
- the control API also wants a local `Host` (an IP address or localhost), which a
  rebound name is not, and `application/json` bodies;
- Content-Length must be digits and within a limit;
- JSON nesting is bounded before any JSON parser runs.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "MAX_AWS_BODY",
    "MAX_CONTROL_BODY",
    "MAX_JSON_DEPTH",
    "RequestRefused",
    "content_length",
    "is_json",
    "json_depth",
    "local_host",
    "local_origin",
    "loopback_name",
    "number",
]

# DynamoDB takes up to 16 MB in one request (BatchWriteItem), the control API a few hundred bytes.
MAX_AWS_BODY = 17 * 1024 * 1024
MAX_CONTROL_BODY = 64 * 1024
# DynamoDB nests attributes up to 32 levels, two JSON levels each ({"M": {...}}), inside
# a request's own few (TransactItems[].Put.Item...): 72 leaves room for every request
# DynamoDB takes and refuses what it refuses with "Nesting Levels have exceeded".
MAX_JSON_DEPTH = 72
_LENGTH_RE = re.compile(r"[0-9]{1,15}")
_STRUCTURE_RE = re.compile(rb'["\\\[\]{}]')


class RequestRefused(Exception):
    """A request refused before it was parsed: HTTP status and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def content_length(environ: Mapping[str, Any], maximum: int) -> int:
    """The request's Content-Length: 0 when absent, RequestRefused (400, 413) when it is not
    a plain number of bytes or more than `maximum`."""
    value = environ.get("CONTENT_LENGTH")
    if value is None or value == "":
        return 0
    if not _LENGTH_RE.fullmatch(str(value)):
        raise RequestRefused(400, f"bad Content-Length {str(value)[:40]!r}: a number of bytes")
    length = int(value)
    if length > maximum:
        raise RequestRefused(413, f"body of {length} bytes is over the limit of {maximum}")
    return length


def json_depth(body: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep `body`'s JSON nests ([ and { outside strings); stops counting past `limit`."""
    depth = deepest = 0
    in_string = False
    skip = -1  # the position after a backslash inside a string
    for match in _STRUCTURE_RE.finditer(body):
        at = match.start()
        if at == skip:
            continue
        char = body[at]
        if in_string:
            if char == 0x5C:  # backslash: the next byte is escaped
                skip = at + 1
            elif char == 0x22:
                in_string = False
            continue
        if char == 0x22:
            in_string = True
        elif char in (0x5B, 0x7B):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif char in (0x5D, 0x7D):
            depth -= 1
    return deepest


def loopback_name(host: str) -> bool:
    """True for localhost names and loopback addresses (bracketed IPv6 too)."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_origin(origin: str) -> bool:
    """True for an Origin on this machine (http(s)://localhost, 127.0.0.0/8, [::1])."""
    parts = urlsplit(origin.strip())
    return parts.scheme in ("http", "https") and bool(parts.hostname) and loopback_name(parts.hostname or "")


def local_host(host: str | None) -> bool:
    """True when the Host header is an IP address or a localhost name: a DNS name that a
    web page rebound to 127.0.0.1 is neither. No Host header (HTTP/1.0) passes."""
    if not host:
        return True
    name = host.strip()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name
    else:
        name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    if loopback_name(name):
        return True
    try:
        ipaddress.ip_address(name)
        return True  # the emulator bound to an address and called by it (e.g. in a container)
    except ValueError:
        return False


def is_json(content_type: str | None) -> bool:
    """True for `application/json`, with or without parameters such as charset."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json"


def number(
    body: Mapping[str, Any],
    key: str,
    default: float | None,
    low: float,
    high: float,
    what: str | None = None,
) -> float:
    """A JSON number from a control request, within [low, high]; ValueError saying which
    field (`what`, default the key), what is allowed and what came."""
    value = body.get(key, default)
    name = what or key
    if value is None:
        raise ValueError(f"{name} is required: a number from {low:g} to {high:g}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number from {low:g} to {high:g}, not {value!r}")
    if (isinstance(value, float) and not math.isfinite(value)) or not low <= value <= high:
        raise ValueError(f"{name} must be from {low:g} to {high:g} (got {value!r})")
    return float(value)
