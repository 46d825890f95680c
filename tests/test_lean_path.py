"""The lean canary path answers what botocore answers: the same items, gtmon exceptions and metrics.

Each case makes the same call both ways through one `AwsClients` (`lean=True` takes
monitor/lean.py, `lean=False` the botocore client) and compares what came back: the
item, or the gtmon exception type and AWS code. Two servers:

- the gtmon emulator (moto): faults give throttling, 5xx outages and timeouts (a black
  hole); bad credentials are a region it refuses (`--strict-regions`: it does not check
  keys or signatures);
- DynamoDB Local (Amazon's jar): keep-alive, as AWS; it refuses an access key id that
  is not alphanumeric (UnrecognizedClientException) but checks no secret or signature,
  and it keeps one database per access key, which shows which keys signed a call. A
  timeout is the jar stopped (SIGSTOP) while a call is out. It cannot throttle.

Credentials come from the standard chain: a provider inserted into the session's chain
hands out refreshable credentials that expire within botocore's refresh window, so every
call refreshes and must sign with whatever keys the source holds now.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aioboto3
import boto3
import pytest
from aiobotocore.credentials import AioRefreshableCredentials
from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.session import AioSession
from botocore.credentials import CredentialProvider
from botocore.parsers import ResponseParserError
from prometheus_client import CollectorRegistry

from monitor.aws import AwsCallError, AwsClients
from monitor.config import AwsSettings
from monitor.emulator import EmulatorServer
from monitor.emulator.control import ControlClient
from monitor.lean import LeanDynamoDB
from monitor.metrics import Metrics
from tests.helpers import dynamodb_local

pytestmark = pytest.mark.timeout(60)

REGION = "us-east-1"
TABLE = "lean-canary"
KEY = {"pk": {"S": "__gtmon__#test#us-east-1"}}
ITEM = {**KEY, "gtmon_seq": {"N": "42"}, "gtmon_written_at": {"N": "1.5"}}
READ = {"TableName": TABLE, "Key": KEY, "ConsistentRead": True,
        "ProjectionExpression": "gtmon_seq, gtmon_written_at"}
Outcome = tuple[str, Any]


def seen(item: dict[str, Any]) -> dict[str, Any]:
    """What the canary's read (its projection) returns of `item`."""
    return {name: item[name] for name in ("gtmon_seq", "gtmon_written_at")}


@asynccontextmanager
async def started(url: str, regions: tuple[str, ...] = (REGION,), session: Any | None = None,
                  **aws: Any) -> AsyncIterator[tuple[AwsClients, Metrics]]:
    settings = {"endpoint_url": url, "connect_timeout_seconds": 1, "read_timeout_seconds": 1,
                "max_attempts": 1, **aws}
    metrics = Metrics(CollectorRegistry(), "test")
    clients = AwsClients(AwsSettings.model_validate(settings), metrics, session=session)
    await clients.start(list(regions))
    try:
        yield clients, metrics
    finally:
        await clients.close()


async def outcome(clients: AwsClients, lean: bool, operation: str = "get_item",
                  region: str = REGION, **params: Any) -> Outcome:
    try:
        answer = await clients.call(region, "dynamodb", operation, lean=lean,
                                    lane="canary_write" if operation == "put_item" else "shared",
                                    **(params or READ))
    except AwsCallError as error:
        return type(error).__name__, error.code
    return "answer", answer.get("Item")


async def both(clients: AwsClients, **kwargs: Any) -> tuple[Outcome, Outcome]:
    return await outcome(clients, True, **kwargs), await outcome(clients, False, **kwargs)


@pytest.fixture
def lean_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The operations that went the lean way (so a case cannot pass by going botocore's twice)."""
    calls: list[str] = []
    original = LeanDynamoDB.call

    async def spy(self: LeanDynamoDB, operation: str, params: Any) -> dict[str, Any]:
        calls.append(operation)
        return await original(self, operation, params)

    monkeypatch.setattr(LeanDynamoDB, "call", spy)
    return calls


def create_table(ddb: Any, item: dict[str, Any] | None = ITEM) -> None:
    ddb.create_table(TableName=TABLE, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     BillingMode="PAY_PER_REQUEST")
    if item is not None:
        ddb.put_item(TableName=TABLE, Item=item)


def errors(metrics: Metrics, code: str, operation: str = "get_item") -> float | None:
    return metrics.registry.get_sample_value(
        "gtmon_aws_request_errors_total", {"region": REGION, "operation": operation, "code": code})


# ---- the gtmon emulator ------------------------------------------------------------------


@pytest.fixture
def table(client: Callable[..., Any]) -> None:
    create_table(client(REGION))


async def test_the_lean_path_sends_on_the_clients_own_aiohttp_session(emu: EmulatorServer) -> None:
    """The one private botocore attribute the lean path reads (the Endpoint's http_session)."""
    async with started(emu.url) as (clients, _):
        client = clients._clients[(REGION, "dynamodb")]
        assert isinstance(client._endpoint.http_session, AIOHTTPSession)


async def test_items_the_same_as_botocore(emu: EmulatorServer, table: None,
                                          lean_calls: list[str]) -> None:
    async with started(emu.url) as (clients, metrics):
        assert await both(clients) == (("answer", seen(ITEM)),) * 2
        missing = {**READ, "Key": {"pk": {"S": "no-such-canary"}}}
        assert await both(clients, **missing) == (("answer", None), ("answer", None))
        # A write each way (on the writes' lane), read back the other way.
        for lean, seq in ((True, "43"), (False, "44")):
            item = {**ITEM, "gtmon_seq": {"N": seq}}
            assert await outcome(clients, lean, "put_item", TableName=TABLE, Item=item) == \
                ("answer", None)
            assert await outcome(clients, not lean) == ("answer", seen(item))
        assert lean_calls == ["get_item", "get_item", "put_item", "get_item"]
        durations = metrics.registry.get_sample_value(
            "gtmon_aws_request_duration_seconds_count", {"region": REGION, "operation": "get_item"})
        assert durations == 6


async def test_missing_table_the_same_as_botocore(emu: EmulatorServer, lean_calls: list[str]) -> None:
    async with started(emu.url) as (clients, metrics):
        assert await both(clients) == (("NotFound", "ResourceNotFoundException"),) * 2
        assert errors(metrics, "ResourceNotFoundException") == 2 and lean_calls == ["get_item"]


async def test_throttling_retried_as_botocore_does(emu: EmulatorServer, table: None,
                                                  lean_calls: list[str]) -> None:
    control = ControlClient(emu.url)
    try:
        control.fault("throttle", region=REGION, fraction=1.0)
        async with started(emu.url, max_attempts=2) as (clients, metrics):
            assert await both(clients) == (("Throttled", "ThrottlingException"),) * 2
            assert errors(metrics, "ThrottlingException") == 2
        # Every second request throttled, from the second on: a call's first attempt is
        # throttled and its retry answers, unless max_attempts allows no retry.
        for attempts, expected in ((2, ("answer", seen(ITEM))), (1, ("Throttled", "ThrottlingException"))):
            async with started(emu.url, max_attempts=attempts) as (clients, _):
                for lean in (True, False):
                    control.fault("throttle", region=REGION, fraction=0.5)
                    assert await outcome(clients, lean) == ("answer", seen(ITEM))
                    assert await outcome(clients, lean) == expected, (attempts, lean)
        assert lean_calls == ["get_item"] * 5
    finally:
        control.fault("clear")


async def test_outage_and_timeout_the_same_as_botocore(emu: EmulatorServer, table: None,
                                                      lean_calls: list[str]) -> None:
    control = ControlClient(emu.url)
    try:
        # A read timeout long enough for a loaded machine's answers; the black hole's is short.
        async with started(emu.url, read_timeout_seconds=3, max_attempts=2) as (clients, metrics):
            control.fault("outage", region=REGION, mode="error")
            assert await both(clients) == (("RegionUnavailable", "InternalServerError"),) * 2
            assert metrics.registry.get_sample_value("gtmon_region_up", {"region": REGION}) == 0
            assert errors(metrics, "InternalServerError") == 2
            control.fault("restore", region=REGION)
            assert await outcome(clients, True) == ("answer", seen(ITEM))
            assert metrics.registry.get_sample_value("gtmon_region_up", {"region": REGION}) == 1
        async with started(emu.url, read_timeout_seconds=0.5, max_attempts=2) as (clients, metrics):
            control.fault("outage", region=REGION, mode="blackhole")
            assert await both(clients) == (("RegionUnavailable", "ReadTimeout"),) * 2
            assert errors(metrics, "ReadTimeout") == 2
        assert lean_calls == ["get_item"] * 3
    finally:
        control.fault("restore", region=REGION)


async def test_refused_credentials_the_same_as_botocore(strict_regions: EmulatorServer,
                                                       lean_calls: list[str]) -> None:
    async with started(strict_regions.url, regions=("us-west-2",)) as (clients, _):
        assert await both(clients, region="us-west-2") == \
            (("AccessDenied", "UnrecognizedClientException"),) * 2
    assert lean_calls == ["get_item"]


async def test_a_garbage_answer_is_a_failed_call_not_a_miss(emu: EmulatorServer, table: None) -> None:
    control = ControlClient(emu.url)
    try:
        async with started(emu.url) as (clients, metrics):
            control.fault("garbage", region=REGION, fraction=1.0)
            for _ in range(3):  # an HTML page, a JSON array, an Item that is no map
                with pytest.raises(ResponseParserError):
                    await clients.call(REGION, "dynamodb", "get_item", lean=True, **READ)
            assert metrics.registry.get_sample_value(
                "gtmon_internal_errors_total", {"component": "aws", "type": "ResponseParserError"}) == 3
            assert clients.region_ok.get(REGION, True)
    finally:
        control.fault("clear")


async def test_canary_http_botocore_switches_the_lean_path_off(emu: EmulatorServer, table: None,
                                                              lean_calls: list[str]) -> None:
    async with started(emu.url, canary_http="botocore") as (clients, _):
        assert await outcome(clients, True) == ("answer", seen(ITEM))
    assert lean_calls == []
    with pytest.raises(ValueError, match="no lean path for dynamodb query"):
        async with started(emu.url) as (clients, _):
            await clients.call(REGION, "dynamodb", "query", lean=True, TableName=TABLE)


# ---- DynamoDB Local ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """DynamoDB Local with the table under two access keys (one database each): (url, pid)."""
    with dynamodb_local(tmp_path_factory.mktemp("ddb-local")) as (url, process):
        for keys, seq in (("keyA", "1"), ("keyB", "2")):
            create_table(boto3.client("dynamodb", region_name=REGION, endpoint_url=url,
                                      aws_access_key_id=keys, aws_secret_access_key="s"),
                         {**ITEM, "gtmon_seq": {"N": seq}})
        yield url, process.pid


class ExpiringKeys(CredentialProvider):
    """A link of the standard chain handing out session credentials that expire in 5 minutes
    (inside botocore's 10-minute mandatory refresh window: every use refreshes)."""

    METHOD = "gtmon-test-expiring"

    def __init__(self, access_key: str) -> None:
        self.access_key = access_key
        self.refreshes = 0

    def _metadata(self) -> dict[str, str]:
        expiry = datetime.now(UTC) + timedelta(minutes=5)
        return {"access_key": self.access_key, "secret_key": "s", "token": "session-token",
                "expiry_time": expiry.isoformat()}

    async def _refresh(self) -> dict[str, str]:
        self.refreshes += 1
        return self._metadata()

    async def load(self) -> AioRefreshableCredentials:
        return AioRefreshableCredentials.create_from_metadata(
            self._metadata(), self._refresh, self.METHOD)


def session_with(provider: CredentialProvider) -> aioboto3.Session:
    botocore_session = AioSession()
    botocore_session.get_component("credential_provider").insert_before("env", provider)
    return aioboto3.Session(botocore_session=botocore_session)


def seq(answer: Outcome) -> str:
    assert answer[0] == "answer" and answer[1] is not None, answer
    return str(answer[1]["gtmon_seq"]["N"])


async def test_dynamodb_local_the_same_as_botocore(local: tuple[str, int],
                                                   lean_calls: list[str]) -> None:
    url, pid = local
    provider = ExpiringKeys("keyA")
    async with started(url, session=session_with(provider), read_timeout_seconds=2) as (clients, metrics):
        assert await both(clients) == (("answer", seen({**ITEM, "gtmon_seq": {"N": "1"}})),) * 2
        missing = {**READ, "Key": {"pk": {"S": "no-such-canary"}}}
        assert await both(clients, **missing) == (("answer", None),) * 2
        assert await both(clients, **{**READ, "TableName": "no-such-table"}) == \
            (("NotFound", "ResourceNotFoundException"),) * 2
        item = {**ITEM, "gtmon_seq": {"N": "7"}}
        assert await outcome(clients, True, "put_item", TableName=TABLE, Item=item) == ("answer", None)
        assert await outcome(clients, False) == ("answer", seen(item))
        # A stopped server: the call is sent and never answered.
        os.kill(pid, signal.SIGSTOP)
        try:
            assert await both(clients) == (("RegionUnavailable", "ReadTimeout"),) * 2
        finally:
            os.kill(pid, signal.SIGCONT)
        assert errors(metrics, "ReadTimeout") == 2
        # The chain's keys change (rotated, say, while they were about to expire): the next
        # call of either path signs with the new ones, which see keyB's own database.
        provider.access_key = "keyB"
        before = provider.refreshes
        assert seq(await outcome(clients, True)) == "2"
        assert seq(await outcome(clients, False)) == "2"
        assert provider.refreshes >= before + 2
        provider.access_key = "keyA"
        assert seq(await outcome(clients, True)) == "7"
        # An access key DynamoDB Local refuses.
        provider.access_key = "not-a-key!"
        assert await both(clients) == (("AccessDenied", "UnrecognizedClientException"),) * 2
    assert lean_calls == ["get_item", "get_item", "get_item", "put_item", "get_item", "get_item",
                          "get_item", "get_item"]
