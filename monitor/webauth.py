"""Basic auth for the HTTP endpoints that a stranger cannot use to blind the monitor.

bcrypt is slow on purpose (~0.25 s at cost 12). Checked on the event loop, every
wrong password stopped the canary's clock for that long: a few bad requests a
second kept the loop busy and the reported lag grew tenfold. So:

- a password is checked on a thread of its own (`AuthLimits.max_checks`) at the
  lowest CPU priority, never on the loop; at most `max_waiting` more checks queue
  behind it, and beyond that a request is answered 429 at once (`busy`) instead
  of piling up;
- each client address (an IPv6 /64) may fail `failures_burst` times, then once per
  `failures_refill_seconds`; further attempts are answered 429 with Retry-After
  and cost no bcrypt at all (`rate_limited`); all clients together may fail
  `total_failures_burst` times, then once per `total_failures_refill_seconds`
  (beyond that: 429 `busy`), so many addresses buy no more CPU than one;
- a successful check is remembered for `cache_seconds` (by a digest of user,
  password and hash, never the password), so Prometheus scraping every few
  seconds costs one bcrypt per cache period, and keeps working while a stranger
  is refused from the same address;
- an unknown user is checked against a dummy hash of the highest configured cost,
  so a wrong user name takes as long as a wrong password (no user enumeration);
- anything malformed (no `Basic` scheme, bad base64, no colon, a user name that is
  not UTF-8, non-ASCII bytes in the header) is a plain 401, never an exception.
  Passwords are bytes as sent; only their first 72 bytes count, as bcrypt (and
  `htpasswd`, which made the hash) define it.

The web server answers refusals no sooner than `failure_delay_seconds` after the
request arrived, so a client that hammers the port gets one answer a second per
connection instead of thousands.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import ipaddress
import math
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import bcrypt

__all__ = ["AuthLimits", "AuthOutcome", "BasicAuth", "FailureLimiter", "client_key", "parse_basic"]

# bcrypt ignores everything after the 72nd byte of a password (and Python's bcrypt 5
# refuses longer ones): truncating keeps long passwords working as htpasswd hashed them.
BCRYPT_MAX_PASSWORD = 72
# Longer than any real header: a 4 KiB token is refused before it is decoded.
MAX_TOKEN = 4096


@dataclass(frozen=True)
class AuthLimits:
    max_checks: int = 1
    max_waiting: int = 4
    # Per client address: 5 failed attempts, then one every 10 s.
    failures_burst: int = 5
    failures_refill_seconds: float = 10.0
    # All clients together: 10 failed checks, then one every 2 s: bcrypt's CPU stays under
    # ~15% of a core (cost 12) however many addresses an attacker has, which matters most in
    # a container limited to half a core.
    total_failures_burst: int = 10
    total_failures_refill_seconds: float = 2.0
    failure_delay_seconds: float = 1.0
    cache_seconds: float = 300.0
    cache_size: int = 256
    tracked_clients: int = 10_000


@dataclass(frozen=True)
class AuthOutcome:
    """The verdict on one request: 200, 401 or 429, why, and whether to log it."""

    status: int
    reason: str  # ok, cached, missing, malformed, invalid, rate_limited, busy
    retry_after: int | None = None
    user: str | None = None
    log: bool = True

    @property
    def ok(self) -> bool:
        return self.status == 200


def client_key(host: str) -> str:
    """The address a failure limit applies to: the IPv4 address, or the IPv6 /64 (one
    host owns a whole /64 and could rotate through it)."""
    if ":" not in host:
        return host  # IPv4 as the socket gave it (the common case, and the refused one: cheap)
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def parse_basic(header: str) -> tuple[str, bytes] | None:
    """(user, password) from an Authorization header value, or None when malformed.

    The scheme is matched case-insensitively (RFC 7617); the user name must be UTF-8
    and the password is kept as the bytes sent.
    """
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "basic" or not token or len(token) > MAX_TOKEN:
        return None
    try:
        raw = base64.b64decode(token.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return None
    user_bytes, colon, password = raw.partition(b":")
    if not colon:
        return None
    try:
        user = user_bytes.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return user, password


@dataclass
class _Bucket:
    tokens: float
    updated: float
    warned: bool = False


class FailureLimiter:
    """Failed attempts per client: a token bucket of `burst`, one back every `refill`
    seconds. Pure: the caller passes `now`. Bounded: the least recently seen clients are
    forgotten beyond `max_clients` (a forgotten client starts with a full bucket)."""

    def __init__(self, burst: int, refill_seconds: float, max_clients: int = 10_000) -> None:
        self.burst = burst
        self.refill_seconds = refill_seconds
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _bucket(self, client: str, now: float) -> _Bucket:
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            self._buckets[client] = bucket
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            gained = (now - bucket.updated) / self.refill_seconds
            bucket.tokens = min(float(self.burst), bucket.tokens + gained)
            bucket.updated = now
            self._buckets.move_to_end(client)
        return bucket

    def retry_after(self, client: str, now: float) -> float:
        """Seconds until `client` may try again (0: now)."""
        bucket = self._bucket(client, now)
        if bucket.tokens >= 1.0:
            return 0.0
        return (1.0 - bucket.tokens) * self.refill_seconds

    def first_refusal(self, client: str) -> bool:
        """True once per stretch of refusals, so a flood is logged once, not per request."""
        bucket = self._buckets.get(client)
        if bucket is None or bucket.warned:
            return False
        bucket.warned = True
        return True

    def take(self, client: str, now: float) -> None:
        bucket = self._bucket(client, now)
        bucket.tokens -= 1.0
        bucket.warned = False

    def refund(self, client: str, now: float) -> None:
        bucket = self._bucket(client, now)
        bucket.tokens = min(float(self.burst), bucket.tokens + 1.0)


def _lower_priority() -> None:
    """The checking thread yields the CPU to everything else, the event loop first (Linux
    gives each thread its own nice value; elsewhere this does nothing)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _verify(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], hashed)
    except ValueError:  # hashes are checked at load; a bad one here is just no match
        return False


class BasicAuth:
    """Checks Authorization headers against bcrypt hashes; see the module docstring."""

    def __init__(
        self,
        users: Mapping[str, bytes],
        limits: AuthLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.users = dict(users)
        self.limits = limits or AuthLimits()
        self._clock = clock
        self._limiter = FailureLimiter(
            self.limits.failures_burst, self.limits.failures_refill_seconds, self.limits.tracked_clients
        )
        self._total = FailureLimiter(
            self.limits.total_failures_burst, self.limits.total_failures_refill_seconds, 1
        )
        self._cache: OrderedDict[bytes, float] = OrderedDict()
        self._executor: ThreadPoolExecutor | None = None
        self._dummy: bytes | None = None
        self._pending = 0
        self._busy_logged = -math.inf

    async def start(self) -> None:
        """Start the checking thread and make the dummy hash (one bcrypt, off the loop)."""
        self._executor = ThreadPoolExecutor(
            self.limits.max_checks, thread_name_prefix="gtmon-bcrypt", initializer=_lower_priority
        )
        cost = max((int(h[4:6]) for h in self.users.values()), default=4)
        salt = bcrypt.gensalt(rounds=cost)
        loop = asyncio.get_running_loop()
        self._dummy = await loop.run_in_executor(
            self._executor, bcrypt.hashpw, secrets.token_hex(16).encode(), salt
        )

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _cache_key(self, user: str, password: bytes, hashed: bytes) -> bytes:
        digest = hashlib.sha256()
        for part in (user.encode("utf-8"), password[:BCRYPT_MAX_PASSWORD], hashed):
            digest.update(len(part).to_bytes(4, "big"))
            digest.update(part)
        return digest.digest()

    def _cached(self, key: bytes, now: float) -> bool:
        expires = self._cache.get(key)
        if expires is None:
            return False
        if expires < now:
            del self._cache[key]
            return False
        # Sliding: a scraper that keeps coming keeps its entry.
        self._cache[key] = now + self.limits.cache_seconds
        self._cache.move_to_end(key)
        return True

    def _remember(self, key: bytes, now: float) -> None:
        self._cache[key] = now + self.limits.cache_seconds
        self._cache.move_to_end(key)
        while len(self._cache) > self.limits.cache_size:
            self._cache.popitem(last=False)

    def _refuse(self, client: str, now: float) -> AuthOutcome | None:
        wait = self._limiter.retry_after(client, now)
        if wait > 0:
            return AuthOutcome(
                429, "rate_limited", math.ceil(wait), log=self._limiter.first_refusal(client)
            )
        return None

    async def check(self, header: str | None, client: str) -> AuthOutcome:
        """The verdict on one request's Authorization header from `client` (client_key)."""
        now = self._clock()
        if header is None:
            return AuthOutcome(401, "missing", log=False)
        parsed = parse_basic(header)
        if parsed is None:
            refused = self._refuse(client, now)
            if refused is not None:
                return refused
            self._limiter.take(client, now)
            return AuthOutcome(401, "malformed")
        user, password = parsed
        hashed = self.users.get(user)
        key = self._cache_key(user, password, hashed or b"")
        if hashed is not None and self._cached(key, now):
            return AuthOutcome(200, "cached", user=user, log=False)
        refused = self._refuse(client, now)
        if refused is not None:
            return AuthOutcome(refused.status, refused.reason, refused.retry_after, user, refused.log)
        total_wait = self._total.retry_after("*", now)
        if total_wait > 0 or self._pending >= self.limits.max_checks + self.limits.max_waiting:
            log = now - self._busy_logged > 10  # one line per 10 s of a flood
            if log:
                self._busy_logged = now
            return AuthOutcome(429, "busy", max(1, math.ceil(total_wait)), user, log=log)
        if self._executor is None or self._dummy is None:
            raise RuntimeError("BasicAuth.start() was not awaited")
        self._limiter.take(client, now)
        self._total.take("*", now)
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            matched = await loop.run_in_executor(
                self._executor, _verify, password, hashed or self._dummy
            )
        finally:
            self._pending -= 1
        now = self._clock()
        if matched and hashed is not None:
            self._limiter.refund(client, now)
            self._total.refund("*", now)
            self._remember(key, now)
            return AuthOutcome(200, "ok", user=user, log=False)
        return AuthOutcome(401, "invalid", user=user)
