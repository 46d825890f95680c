"""AWS clients per region, with deadlines, retries, metrics and error mapping.

Every AWS call gtmon makes goes through `AwsClients.call`, so each one has a
finite timeout, is timed into `gtmon_aws_request_duration_seconds`, counts its
failures by AWS error code, and keeps `gtmon_region_up` honest. botocore's
`ClientError` is translated into the small hierarchy below so callers catch at
the right level:

    AwsCallError                  any failed call (region, operation, code)
    ├── RegionUnavailable         network failure, timeout or 5xx: the region is down for us
    ├── Throttled                 throttling: back off, the region is up
    ├── AccessDenied              credentials or IAM policy: an operator must act
    ├── NotFound                  missing table or stream
    ├── ExpiredIterator           stream iterator older than 15 minutes
    └── TrimmedData               stream records past retention

    UnexpectedAnswer              a successful answer of the wrong shape (not an AwsCallError)
    AwsSetupError                 clients that cannot be built (an unknown profile)

Only what says the region did not serve us makes it DOWN (`gtmon_region_up` 0):
connection failures, timeouts and 5xx answers. Anything else that escapes a
call (a `ParamValidationError`, a `TypeError`, a body botocore cannot parse)
is a bug or an unexpected answer: it is logged with its traceback, counted in
`gtmon_internal_errors_total{component="aws"}` and raised unchanged (with a
note naming the call), so the component that made the call crashes and its
supervisor restarts it. It never changes `region_up` nor the region's last error.

Canary writes have a lane of their own (`lane="canary_write"`): a second DynamoDB client
per region, with its own connection pool, so a write never queues behind the pipelined
canary reads that can fill the shared pool (five canary targets, 16 reads in flight per
pair). Same settings, retries, metrics and error mapping as every other call.

The canary's hot calls (`lean=True`: its GetItem and PutItem) take the lean path of
`monitor.lean` when `aws.canary_http` is `lean`: same client pool, endpoint, timeouts,
credentials, retries and botocore exceptions, so the translation, metrics and region
state below are the same for both paths; only botocore's per-call machinery is skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlparse

import aioboto3
import structlog
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from monitor.config import AwsSettings
from monitor.lean import LEAN_OPERATIONS, LeanDynamoDB
from monitor.metrics import Metrics

__all__ = [
    "AccessDenied",
    "AwsCallError",
    "AwsClients",
    "AwsSetupError",
    "ExpiredIterator",
    "NotFound",
    "RegionUnavailable",
    "Throttled",
    "TrimmedData",
    "UnexpectedAnswer",
    "translate",
]

_log = structlog.get_logger("gtmon.aws")
LANES = ("shared", "canary_write")
# At most one write per canary target is out at a time (the scheduler's max_instances=1),
# and every target's write is due at the same moment: room for 64 targets at once.
# Connections are opened on demand, so the room costs nothing unused.
WRITE_LANE_POOL = 64


class AwsCallError(Exception):
    """An AWS call that failed; `code` is the AWS error code (or a network failure name)."""

    def __init__(self, region: str, operation: str, code: str, message: str) -> None:
        super().__init__(f"{operation} in {region}: {code}: {message}")
        self.region = region
        self.operation = operation
        self.code = code
        self.message = message


class RegionUnavailable(AwsCallError):
    pass


class Throttled(AwsCallError):
    pass


class AccessDenied(AwsCallError):
    pass


class NotFound(AwsCallError):
    pass


class ExpiredIterator(AwsCallError):
    pass


class TrimmedData(AwsCallError):
    pass


class UnexpectedAnswer(Exception):
    """A call that succeeded with an answer of the wrong shape (a member missing or mistyped).

    Not an `AwsCallError`: the region answered, so it is not down, and retrying the
    same way would not help. Raised by the code that checks the answer; it ends the
    component, whose supervisor counts it, logs it and restarts it.
    """

    def __init__(self, region: str, operation: str, detail: str) -> None:
        super().__init__(f"{operation} in {region} answered with a body of the wrong shape: {detail}")
        self.region = region
        self.operation = operation
        self.detail = detail


class AwsSetupError(Exception):
    """The AWS session cannot be built (an unknown profile, a broken shared config)."""


_BY_CODE: dict[str, type[AwsCallError]] = {
    "ThrottlingException": Throttled,
    "ProvisionedThroughputExceededException": Throttled,
    "RequestLimitExceeded": Throttled,
    "LimitExceededException": Throttled,
    "AccessDeniedException": AccessDenied,
    "UnrecognizedClientException": AccessDenied,
    "InvalidSignatureException": AccessDenied,
    "ExpiredTokenException": AccessDenied,
    "MissingAuthenticationTokenException": AccessDenied,
    "ResourceNotFoundException": NotFound,
    "ExpiredIteratorException": ExpiredIterator,
    "TrimmedDataAccessException": TrimmedData,
    "InternalServerError": RegionUnavailable,
    "ServiceUnavailable": RegionUnavailable,
}


def _is_loopback(url: str | None) -> bool:
    host = urlparse(url).hostname if url else None
    return host in ("127.0.0.1", "localhost", "::1")


def translate(region: str, operation: str, exc: Exception) -> AwsCallError | None:
    """Map a botocore failure onto gtmon's hierarchy; None when it is no AWS failure (a bug)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        message = str(error.get("Message") or "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        kind = _BY_CODE.get(code, RegionUnavailable if int(status or 0) >= 500 else AwsCallError)
        return kind(region, operation, code, message)
    if isinstance(exc, NoCredentialsError):
        return AccessDenied(region, operation, "NoCredentials", "no AWS credentials found")
    if isinstance(exc, ReadTimeoutError):
        return RegionUnavailable(region, operation, "ReadTimeout", str(exc))
    if isinstance(exc, BotoConnectionError):
        return RegionUnavailable(region, operation, "ConnectionError", str(exc))
    if isinstance(exc, HTTPClientError | TimeoutError | ConnectionError):
        # A connection closed mid-answer, a read that timed out below botocore.
        return RegionUnavailable(region, operation, type(exc).__name__, str(exc))
    # ParamValidationError, ChecksumError, a parser that met a body of the wrong shape,
    # a TypeError: the region did answer (or was never asked). Not an outage.
    return None


class AwsClients:
    """DynamoDB and DynamoDB Streams clients for each region, opened once, closed on stop."""

    def __init__(
        self,
        settings: AwsSettings,
        metrics: Metrics | None = None,
        session: Any | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._monotonic = monotonic
        if session is None:
            credentials: dict[str, str] = {}
            if _is_loopback(settings.endpoint_url):
                # The emulator accepts any credentials; don't make people invent some.
                credentials = {"aws_access_key_id": "gtmon", "aws_secret_access_key": "gtmon"}
            try:
                session = aioboto3.Session(profile_name=settings.profile, **credentials)
            except BotoCoreError as exc:  # ProfileNotFound, a broken shared config file
                raise AwsSetupError(f"cannot set up AWS clients: {exc}") from None
        self._session = session
        self._stack = AsyncExitStack()
        self._clients: dict[tuple[str, str], Any] = {}
        self._write_lane: dict[str, Any] = {}  # region -> the canary writes' own client
        self._lean: dict[tuple[str, str], LeanDynamoDB] = {}  # (region, lane) -> lean sender
        # Last error per region and when it happened (epoch seconds), for the status page.
        self.last_errors: dict[str, AwsCallError] = {}
        self.last_error_at: dict[str, float] = {}
        self.region_ok: dict[str, bool] = {}

    def _boto_config(self, max_pool_connections: int = 64) -> BotoConfig:
        return BotoConfig(
            connect_timeout=self.settings.connect_timeout_seconds,
            read_timeout=self.settings.read_timeout_seconds,
            # total_max_attempts counts the first try; botocore's max_attempts counts retries.
            retries={"total_max_attempts": self.settings.max_attempts, "mode": "standard"},
            # Pipelined canary reads fill the shared pool; canary writes have their own lane.
            max_pool_connections=max_pool_connections,
        )

    async def start(self, regions: list[str]) -> None:
        for region in regions:
            for service in ("dynamodb", "dynamodbstreams"):
                if (region, service) not in self._clients:
                    self._clients[(region, service)] = await self._open(region, service)
            if region not in self._write_lane:
                self._write_lane[region] = await self._open(region, "dynamodb", WRITE_LANE_POOL)
        if self.settings.canary_http == "lean":
            # The session's credentials object, the one its clients sign with (cached by the
            # session): refreshable credentials refresh for both paths alike.
            credentials = await self._session.get_credentials()
            for region in regions:
                for lane, client in (("shared", self._clients[(region, "dynamodb")]),
                                     ("canary_write", self._write_lane[region])):
                    if (region, lane) not in self._lean:
                        self._lean[(region, lane)] = LeanDynamoDB(
                            client, credentials, self.settings.max_attempts
                        )

    async def _open(self, region: str, service: str, max_pool_connections: int = 64) -> Any:
        try:
            return await self._stack.enter_async_context(
                self._session.client(
                    service,
                    region_name=region,
                    endpoint_url=self.settings.endpoint_url,
                    config=self._boto_config(max_pool_connections),
                )
            )
        except BotoCoreError as exc:  # ProfileNotFound surfaces here with aioboto3
            raise AwsSetupError(f"cannot set up AWS clients for {region}: {exc}") from None

    async def close(self) -> None:
        await self._stack.aclose()
        self._clients.clear()
        self._write_lane.clear()
        self._lean.clear()

    async def call(
        self,
        region: str,
        service: str,
        operation: str,
        expected: tuple[type[AwsCallError], ...] = (),
        lane: str = "shared",
        lean: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Call `operation` (snake_case) in `region`; raises an AwsCallError subclass.

        Errors of the `expected` kinds (a probe for a table that may not exist yet)
        are raised without being counted or shown as the region's last error.
        `lane="canary_write"` sends a DynamoDB call on the canary writes' own pool.
        `lean=True` marks a canary hot call (DynamoDB get_item or put_item): it takes the
        lean path when `aws.canary_http` is `lean`.
        """
        if lane not in LANES:
            raise ValueError(f"unknown lane {lane!r}; allowed: {', '.join(LANES)}")
        if lean and (service != "dynamodb" or operation not in LEAN_OPERATIONS):
            raise ValueError(f"no lean path for {service} {operation}; "
                             f"allowed: dynamodb {', '.join(LEAN_OPERATIONS)}")
        if lane == "canary_write" and service == "dynamodb":
            client = self._write_lane.get(region)
        else:
            client = self._clients.get((region, service))
        if client is None:
            raise KeyError(f"no {service} client for region {region} (clients started: "
                           f"{sorted({r for r, _ in self._clients})})")
        sender = self._lean.get((region, lane)) if lean else None
        started = self._monotonic()
        try:
            if sender is not None:
                result = await sender.call(operation, kwargs)
            else:
                result = await getattr(client, operation)(**kwargs)
        except Exception as exc:  # every botocore failure is translated below
            error = translate(region, operation, exc)
            if error is None:
                self._internal(region, operation, started, exc)
                raise
            self._observe(
                region, operation, started, None if isinstance(error, expected) else error
            )
            raise error from exc
        self._observe(region, operation, started, None)
        return result

    def _internal(self, region: str, operation: str, started: float, exc: Exception) -> None:
        """A call that ended in something other than an AWS failure: counted and logged once."""
        exc.add_note(f"gtmon: raised by {operation} in {region}")
        if self.metrics is not None:
            self.metrics.aws_request_duration.labels(region, operation).observe(
                self._monotonic() - started
            )
            self.metrics.count_internal_error("aws", exc)
        _log.error(
            "aws_call_internal_error", region=region, operation=operation,
            error=f"{type(exc).__name__}: {exc}", exc_info=exc,
            consequence="not a region outage; the calling component decides",
        )

    def _observe(
        self, region: str, operation: str, started: float, error: AwsCallError | None
    ) -> None:
        elapsed = self._monotonic() - started
        if error is None:
            self.region_ok[region] = True
        else:
            self.last_errors[region] = error
            self.last_error_at[region] = time.time()
            if isinstance(error, RegionUnavailable):
                self.region_ok[region] = False
        if self.metrics is not None:
            self.metrics.aws_request_duration.labels(region, operation).observe(elapsed)
            if error is not None:
                self.metrics.aws_request_errors.labels(region, operation, error.code).inc()
            self.metrics.region_up.labels(region).set(1 if self.region_ok.get(region, True) else 0)
