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
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlparse

import aioboto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from monitor.config import AwsSettings
from monitor.metrics import Metrics

__all__ = [
    "AccessDenied",
    "AwsCallError",
    "AwsClients",
    "ExpiredIterator",
    "NotFound",
    "RegionUnavailable",
    "Throttled",
    "TrimmedData",
]


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


def translate(region: str, operation: str, exc: Exception) -> AwsCallError:
    """Map a botocore failure onto gtmon's hierarchy."""
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
    if isinstance(exc, BotoCoreError):
        return RegionUnavailable(region, operation, type(exc).__name__, str(exc))
    return RegionUnavailable(region, operation, type(exc).__name__, str(exc))


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
            session = aioboto3.Session(profile_name=settings.profile, **credentials)
        self._session = session
        self._stack = AsyncExitStack()
        self._clients: dict[tuple[str, str], Any] = {}
        # Last error per region, for the status page.
        self.last_errors: dict[str, AwsCallError] = {}
        self.region_ok: dict[str, bool] = {}

    def _boto_config(self) -> BotoConfig:
        return BotoConfig(
            connect_timeout=self.settings.connect_timeout_seconds,
            read_timeout=self.settings.read_timeout_seconds,
            # total_max_attempts counts the first try; botocore's max_attempts counts retries.
            retries={"total_max_attempts": self.settings.max_attempts, "mode": "standard"},
            # Pipelined canary reads share a region's pool with its writes: room for both.
            max_pool_connections=64,
        )

    async def start(self, regions: list[str]) -> None:
        for region in regions:
            for service in ("dynamodb", "dynamodbstreams"):
                if (region, service) in self._clients:
                    continue
                client = await self._stack.enter_async_context(
                    self._session.client(
                        service,
                        region_name=region,
                        endpoint_url=self.settings.endpoint_url,
                        config=self._boto_config(),
                    )
                )
                self._clients[(region, service)] = client

    async def close(self) -> None:
        await self._stack.aclose()
        self._clients.clear()

    async def call(
        self,
        region: str,
        service: str,
        operation: str,
        expected: tuple[type[AwsCallError], ...] = (),
        **kwargs: Any,
    ) -> Any:
        """Call `operation` (snake_case) in `region`; raises an AwsCallError subclass.

        Errors of the `expected` kinds (a probe for a table that may not exist yet)
        are raised without being counted or shown as the region's last error.
        """
        client = self._clients[(region, service)]
        method = getattr(client, operation)
        started = self._monotonic()
        try:
            result = await method(**kwargs)
        except Exception as exc:  # every botocore failure is translated below
            error = translate(region, operation, exc)
            self._observe(
                region, operation, started, None if isinstance(error, expected) else error
            )
            raise error from exc
        self._observe(region, operation, started, None)
        return result

    def _observe(
        self, region: str, operation: str, started: float, error: AwsCallError | None
    ) -> None:
        elapsed = self._monotonic() - started
        if error is None:
            self.region_ok[region] = True
        else:
            self.last_errors[region] = error
            if isinstance(error, RegionUnavailable):
                self.region_ok[region] = False
        if self.metrics is not None:
            self.metrics.aws_request_duration.labels(region, operation).observe(elapsed)
            if error is not None:
                self.metrics.aws_request_errors.labels(region, operation, error.code).inc()
            self.metrics.region_up.labels(region).set(1 if self.region_ok.get(region, True) else 0)
