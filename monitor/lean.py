"""The lean path for the canary's hot calls: GetItem and PutItem without botocore's per-call machinery.

A canary read costs 1.2-1.6 ms of CPU through botocore (docs/performance.md): events,
the user agent rebuilt per request, request objects, endpoint rules, validation. The
canary makes the same two small calls all day, so this module makes them directly:
the parameters serialized as the DynamoDB JSON protocol wants them, a fresh request
signed per attempt with botocore's own `SigV4Auth`, sent on the very aiohttp session
of the botocore client it stands beside, the answer parsed with `json.loads`.

Everything that decides *behaviour* is botocore's own, not a copy:

- credentials: `get_frozen_credentials()` per attempt on the credentials object of the
  session the clients were built from (the standard chain), so refreshable and expiring
  session credentials refresh exactly as they do for botocore;
- endpoint, timeouts, pool, TLS and proxies: those of the client (`client.meta.endpoint_url`,
  its `AIOHTTPSession`, which also maps aiohttp's failures onto botocore's exceptions);
- retries: botocore's standard mode classes (`StandardRetryConditions` with the same
  max_attempts, `ExponentialBackoff`, a `RetryQuota` per sender as botocore keeps one per
  client), fed the same `RetryContext` botocore's retry handler builds;
- error answers: parsed by botocore's JSON protocol parser and raised as `ClientError`,
  connection failures raised as the botocore exceptions the HTTP session raised, so
  `monitor.aws.translate` maps both onto gtmon's exceptions as for every other call.

One deliberate difference: an answer that is not a DynamoDB JSON object (an HTML page,
an array, an `Item` that is not a map) raises `ResponseParserError`, a failed call.
botocore reads an HTML page as an empty answer, which for GetItem would be a miss.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import botocore
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSPreparedRequest, AWSRequest
from botocore.exceptions import ClientError, NoCredentialsError
from botocore.parsers import ResponseParserError, create_parser
from botocore.retries.quota import RetryQuota
from botocore.retries.standard import (
    ExponentialBackoff,
    RetryContext,
    RetryQuotaChecker,
    StandardRetryConditions,
)

__all__ = ["LEAN_OPERATIONS", "LeanDynamoDB"]

# snake_case operation (as AwsClients.call names it) -> the wire name.
LEAN_OPERATIONS = {"get_item": "GetItem", "put_item": "PutItem"}
_CONTENT_TYPE = "application/x-amz-json-1.0"
_USER_AGENT = f"Botocore/{botocore.__version__} gtmon-lean"


@dataclass(frozen=True)
class _Answer:
    """An HTTP answer as botocore's retry checkers and quota read it."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes


class LeanDynamoDB:
    """GetItem and PutItem in one region, beside (and sharing the pool of) a botocore client.

    `client` is an open aiobotocore DynamoDB client; `credentials` the (aiobotocore)
    credentials object of its session, None when the chain found none.
    """

    def __init__(
        self,
        client: Any,
        credentials: Any | None,
        max_attempts: int,
    ) -> None:
        meta = client.meta
        self._url = meta.endpoint_url.rstrip("/") + "/"
        self._region = meta.region_name
        self._signing_name = meta.service_model.signing_name
        target_prefix = meta.service_model.metadata["targetPrefix"]
        self._models = {
            name: meta.service_model.operation_model(wire) for name, wire in LEAN_OPERATIONS.items()
        }
        self._targets = {name: f"{target_prefix}.{wire}" for name, wire in LEAN_OPERATIONS.items()}
        # The client's own AIOHTTPSession: its pool, timeouts, TLS, proxies and its mapping of
        # aiohttp's failures onto botocore's exceptions. A private attribute of botocore's
        # Endpoint; tests/test_lean_path.py fails loudly if it moves.
        self._http = client._endpoint.http_session
        self._credentials = credentials
        self._parser = create_parser(meta.service_model.protocol)
        self._retryable = StandardRetryConditions(max_attempts=max_attempts)
        self._backoff = ExponentialBackoff()
        self._quota = RetryQuotaChecker(RetryQuota())

    async def call(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Make `operation` ("get_item" or "put_item") with botocore-style `params`.

        Returns the answer as botocore would (without ResponseMetadata); raises what
        botocore raises: `ClientError` for an error answer after the retries, the HTTP
        session's exception for a connection failure or timeout, `NoCredentialsError`.
        """
        model = self._models[operation]
        target = self._targets[operation]
        # The DynamoDB JSON protocol's body is the parameters themselves (S and N values
        # are strings already; the canary sends no binary values).
        body = json.dumps(params, separators=(",", ":")).encode()
        request_context: dict[str, Any] = {}
        attempt = 1
        while True:
            answer: _Answer | None = None
            parsed: dict[str, Any] | None = None
            caught: Exception | None = None
            try:
                answer = await self._send(body, target)
            except Exception as exc:  # botocore's endpoint, too, hands every one to the retry check
                caught = exc
            else:
                parsed = self._parse(model, answer)
            context = RetryContext(
                attempt_number=attempt, operation_model=model, parsed_response=parsed,
                http_response=answer, caught_exception=caught, request_context=request_context,
            )
            if self._retryable.is_retryable(context) and self._quota.acquire_retry_quota(context):
                await asyncio.sleep(self._backoff.delay_amount(context))
                attempt += 1
                continue
            if caught is not None:
                raise caught
            assert answer is not None and parsed is not None
            if answer.status_code >= 300:
                raise ClientError(parsed, model.name)
            self._quota.release_retry_quota(request_context, answer)
            return parsed

    async def _send(self, body: bytes, target: str) -> _Answer:
        if self._credentials is None:
            raise NoCredentialsError()
        # Per attempt: a refreshable credential refreshes here when it is about to expire.
        frozen = await self._credentials.get_frozen_credentials()
        # Only the headers DynamoDB needs are signed: botocore's headers are email.Message
        # objects, and each one more costs the signer measurably (docs/performance.md).
        request = AWSRequest(
            method="POST", url=self._url, data=body,
            headers={"X-Amz-Target": target, "Content-Type": _CONTENT_TYPE},
        )
        SigV4Auth(frozen, self._signing_name, self._region).add_auth(request)
        headers = dict(request.headers.items())
        headers["User-Agent"] = _USER_AGENT  # never signed, by botocore either
        prepared = AWSPreparedRequest("POST", self._url, headers, body, stream_output=False)
        response = await self._http.send(prepared)
        return _Answer(response.status_code, response.headers, await response.content)

    def _parse(self, model: Any, answer: _Answer) -> dict[str, Any]:
        if answer.status_code >= 300:
            # botocore's own error parsing: the same Code, Message and HTTPStatusCode.
            error: dict[str, Any] = self._parser.parse(
                {"status_code": answer.status_code, "headers": answer.headers,
                 "body": answer.content},
                model.output_shape,
            )
            return error
        try:
            parsed = json.loads(answer.content or b"{}")
        except ValueError:
            parsed = None
        if not _well_formed(parsed):
            raise ResponseParserError(
                f"{model.name} answered HTTP {answer.status_code} with a body that is not a "
                f"DynamoDB JSON answer: {answer.content[:80]!r}"
            )
        return parsed


def _well_formed(answer: Any) -> bool:
    """A JSON object whose `Item`, when there is one, maps names to attribute values (objects).

    What the canary reads of a GetItem or PutItem answer; anything else would be misread
    (an `Item` that is a string reads as a miss).
    """
    if not isinstance(answer, dict):
        return False
    item = answer.get("Item")
    if item is None:
        return True
    return isinstance(item, dict) and all(isinstance(value, dict) for value in item.values())
