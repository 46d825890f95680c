"""Errors by cause: only connection failures, timeouts and 5xx make a region DOWN.

Anything else a call raises (a bug, a body of the wrong shape) is an internal
error: counted, logged with its traceback, raised unchanged, and region_up and
the region's last error are left alone.
"""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from botocore.exceptions import (
    ChecksumError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ParamValidationError,
    ReadTimeoutError,
)
from botocore.parsers import ResponseParserError
from prometheus_client import CollectorRegistry

from monitor.aws import (
    AccessDenied,
    AwsCallError,
    AwsClients,
    AwsSetupError,
    NotFound,
    RegionUnavailable,
    Throttled,
    translate,
)
from monitor.config import AwsSettings
from monitor.emulator import EmulatorServer
from monitor.emulator.control import ControlClient
from monitor.metrics import Metrics

pytestmark = pytest.mark.timeout(60)


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetRecords",
    )


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (client_error("InternalServerError", 500), RegionUnavailable),
        (client_error("SomethingNew", 503), RegionUnavailable),
        (client_error("ThrottlingException", 400), Throttled),
        (client_error("AccessDeniedException", 400), AccessDenied),
        (client_error("ResourceNotFoundException", 400), NotFound),
        (client_error("ValidationException", 400), AwsCallError),
        (ReadTimeoutError(endpoint_url="http://x"), RegionUnavailable),
        (ConnectTimeoutError(endpoint_url="http://x"), RegionUnavailable),
        (EndpointConnectionError(endpoint_url="http://x"), RegionUnavailable),
        (ConnectionClosedError(endpoint_url="http://x"), RegionUnavailable),
        (TimeoutError(), RegionUnavailable),
        (ParamValidationError(report="TableName too short"), None),
        (ChecksumError(checksum_type="crc32", expected_checksum=1, actual_checksum=2), None),
        (ResponseParserError("not JSON"), None),
        (AttributeError("'list' object has no attribute 'get'"), None),
        (TypeError("bug"), None),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else getattr(v, "__name__", "none"),
)
def test_translate_maps_by_cause(error: Exception, kind: type | None) -> None:
    translated = translate("eu-west-1", "get_records", error)
    if kind is None:
        assert translated is None
    else:
        assert type(translated) is kind


def _clients(url: str, metrics: Metrics) -> AwsClients:
    return AwsClients(
        AwsSettings(endpoint_url=url, connect_timeout_seconds=1, read_timeout_seconds=1,
                    max_attempts=1),
        metrics,
    )


async def test_a_garbage_answer_is_an_internal_error_and_leaves_the_region_up(
    emu: EmulatorServer, client: Any
) -> None:
    client("eu-west-1").create_table(
        TableName="Orders", KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    metrics = Metrics(CollectorRegistry(), "test")
    clients = _clients(emu.url, metrics)
    await clients.start(["eu-west-1"])
    control = ControlClient(emu.url)
    try:
        await clients.call("eu-west-1", "dynamodb", "describe_table", TableName="Orders")
        # Every answer garbage; the second shape (an array) is one botocore cannot parse.
        control.fault("garbage", region="eu-west-1", fraction=1.0)
        answer = await clients.call("eu-west-1", "dynamodb", "describe_table", TableName="Orders")
        assert "Table" not in answer  # an HTML page: parsed as an empty answer
        with structlog.testing.capture_logs() as logs, pytest.raises(AttributeError) as raised:
            await clients.call("eu-west-1", "dynamodb", "describe_table", TableName="Orders")
        assert any("describe_table in eu-west-1" in note for note in raised.value.__notes__)
        (event,) = [e for e in logs if e["event"] == "aws_call_internal_error"]
        assert event["exc_info"] is raised.value and event["region"] == "eu-west-1"
        assert metrics.registry.get_sample_value(
            "gtmon_internal_errors_total", {"component": "aws", "type": "AttributeError"}) == 1
        assert clients.region_ok.get("eu-west-1", True)
        assert metrics.registry.get_sample_value("gtmon_region_up", {"region": "eu-west-1"}) == 1
        assert "eu-west-1" not in clients.last_errors
        # A 5xx outage, by contrast, is the region being down.
        control.fault("clear")
        control.fault("outage", region="eu-west-1", mode="error")
        with pytest.raises(RegionUnavailable):
            await clients.call("eu-west-1", "dynamodb", "describe_table", TableName="Orders")
        assert metrics.registry.get_sample_value("gtmon_region_up", {"region": "eu-west-1"}) == 0
    finally:
        control.fault("clear")
        control.fault("restore", region="eu-west-1")
        await clients.close()


async def test_a_bug_in_the_call_is_not_an_outage(emu: EmulatorServer) -> None:
    metrics = Metrics(CollectorRegistry(), "test")
    clients = _clients(emu.url, metrics)
    await clients.start(["us-east-1"])
    try:
        with pytest.raises(ParamValidationError):  # TableName missing: gtmon's own mistake
            await clients.call("us-east-1", "dynamodb", "describe_table")
        assert metrics.registry.get_sample_value("gtmon_region_up", {"region": "us-east-1"}) != 0
        assert metrics.registry.get_sample_value(
            "gtmon_internal_errors_total",
            {"component": "aws", "type": "ParamValidationError"}) == 1
        with pytest.raises(KeyError, match="no dynamodb client for region eu-west-1"):
            await clients.call("eu-west-1", "dynamodb", "describe_table", TableName="Orders")
    finally:
        await clients.close()


def test_an_unknown_profile_is_one_setup_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    with pytest.raises(AwsSetupError, match="could not be found"):
        AwsClients(AwsSettings(profile="no-such-profile"))
