"""The emulator's control API and endpoint, probed as a web page in the user's browser or a
careless client would: real HTTP clients (requests, raw sockets, boto3) against the
session's emulator on 127.0.0.1."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from monitor.emulator import EmulatorServer
from monitor.emulator.control import ControlClient, ControlError
from monitor.emulator.guard import json_depth


def raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def test_a_browser_page_cannot_drive_the_control_api(emu: EmulatorServer) -> None:
    url = f"{emu.url}/gtmon/fault/pause"
    # A cross-site form or fetch: text/plain needs no preflight, and the browser adds Origin.
    simple = requests.post(url, data="{}", headers={"Content-Type": "text/plain"}, timeout=5)
    assert simple.status_code == 415
    evil = requests.post(url, json={}, headers={"Origin": "http://evil.example"}, timeout=5)
    assert evil.status_code == 403
    assert requests.get(f"{emu.url}/gtmon/state", headers={"Origin": "null"}, timeout=5).status_code == 403
    # DNS rebinding: the page's own name, resolved to 127.0.0.1, arrives as the Host.
    rebound = requests.get(f"{emu.url}/gtmon/truth", headers={"Host": "evil.example:8000"}, timeout=5)
    assert rebound.status_code == 403
    state = ControlClient(emu.url).state()
    assert not any(link["paused"] for link in state["global_tables"]["links"].values())
    # Local pages and tools still work.
    local = requests.post(
        f"{emu.url}/gtmon/fault/clear", json={}, headers={"Origin": "http://localhost:3000"}, timeout=5
    )
    assert local.status_code == 200


def test_the_aws_endpoint_refuses_foreign_origins(emu: EmulatorServer) -> None:
    answer = requests.post(
        emu.url,
        data="{}",
        headers={"Origin": "https://evil.example", "X-Amz-Target": "DynamoDB_20120810.ListTables"},
        timeout=5,
    )
    assert answer.status_code == 400
    assert answer.json()["__type"].endswith("#AccessDeniedException")


def test_deep_nesting_is_a_validation_exception_everywhere(
    emu: EmulatorServer, client: Callable[..., Any]
) -> None:
    # Before: 100k-deep JSON raised RecursionError, a 500 on every endpoint and on GetRecords.
    body = nested(100_000).encode()
    for target in ("DynamoDB_20120810.PutItem", "DynamoDBStreams_20120810.GetRecords"):
        answer = requests.post(
            emu.url,
            data=body,
            headers={
                "X-Amz-Target": target,
                "Content-Type": "application/x-amz-json-1.0",
                "Authorization": "AWS4-HMAC-SHA256 Credential=x/20250101/us-east-1/dynamodb/aws4_request",
            },
            timeout=10,
        )
        assert answer.status_code == 400, (target, answer.text[:200])
        assert answer.json()["__type"].endswith("#ValidationException")
        assert "Nesting Levels" in answer.json()["message"]
    headers = {"Content-Type": "application/json"}
    deep = requests.post(f"{emu.url}/gtmon/fault/delay", data=nested(1000), headers=headers, timeout=10)
    assert deep.status_code == 400 and "nests" in deep.json()["error"]
    huge = requests.post(f"{emu.url}/gtmon/fault/delay", data=body, headers=headers, timeout=10)
    assert huge.status_code == 413
    # A legitimately deep item (32 levels, DynamoDB's limit) still works.
    ddb = client("us-east-1")
    ddb.create_table(
        TableName="Deep",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    value: dict[str, Any] = {"S": "leaf"}
    for _ in range(31):
        value = {"M": {"x": value}}
    ddb.put_item(TableName="Deep", Item={"pk": {"S": "k"}, "v": value})
    with pytest.raises(ClientError) as too_deep:
        for _ in range(8):
            value = {"M": {"x": value}}
        ddb.put_item(TableName="Deep", Item={"pk": {"S": "k"}, "v": value})
    assert too_deep.value.response["Error"]["Code"] == "ValidationException"


def test_json_depth_counts_structure_outside_strings() -> None:
    assert json_depth(b'{"a": [1, {"b": "}}}]]]{{{\\"["}]}') == 3
    assert json_depth(b"[]") == 1 and json_depth(b'"[[["') == 0
    assert json_depth(nested(10_000).encode(), limit=50) == 51


@pytest.mark.parametrize(
    "header",
    [b"Content-Length: -1", b"Content-Length: abc", b"Content-Length: 1e3", b"Content-Length: 99999999999"],
)
def test_a_bad_content_length_is_a_400_at_once(emu: EmulatorServer, header: bytes) -> None:
    # Before: -1 read until the client went away, holding a request thread.
    for path in (b"/gtmon/fault/pause", b"/"):
        started = time.monotonic()
        answer = raw(
            emu.port,
            b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + header + b"\r\n\r\n{}",
        )
        assert answer.split(b" ", 2)[1] in (b"400", b"413"), answer[:200]
        assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("action", "params", "expected"),
    [
        ("latency", {"region": "eu-west-1", "ms": 1e300}, "ms must be from 0 to 60000"),
        ("latency", {"region": "eu-west-1", "ms": -5}, "ms must be from 0"),
        ("latency", {"region": "eu-west-1", "ms": "fast"}, "must be a number"),
        ("delay", {"ms": 1e12}, "ms must be from 0 to 3.6e+06"),
        ("delay", {"ms": 10, "jitter_ms": float("inf")}, "jitter_ms"),
        ("delay", {"ms": 10, "kind": "weird"}, "kind must be"),
        ("throttle", {"region": "us-east-1", "fraction": 7}, "throttle fraction"),
        ("throttle", {"region": "us-east-1", "fraction": True}, "throttle fraction"),
        ("delay", {}, "ms is required"),
    ],
)
def test_fault_values_are_bounded(emu: EmulatorServer, action: str, params: dict, expected: str) -> None:
    # Before: --ms 1e300 was accepted and every request to the region answered 500.
    control = ControlClient(emu.url)
    with pytest.raises(ControlError, match=re.escape(expected)):
        control.fault(action, **params)
    assert control.state()["faults"].get("eu-west-1", {}).get("latency") is None


def test_fault_cli_refuses_an_absurd_latency_in_one_line(emu: EmulatorServer) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "monitor", "fault", "latency", "--region", "eu-west-1", "--ms", "1e300",
         "--endpoint", emu.url],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "ms must be from 0 to 60000" in done.stderr


def test_fault_clear_clears_latency_too(emu: EmulatorServer, client: Callable[..., Any]) -> None:
    control = ControlClient(emu.url)
    control.fault("latency", region="eu-west-1", ms=400)
    assert control.state()["faults"]["eu-west-1"]["latency"]["ms"] == 400
    control.fault("clear")
    assert control.state()["faults"]["eu-west-1"]["latency"] is None
    started = time.monotonic()
    client("eu-west-1").list_tables()
    assert time.monotonic() - started < 0.3


def test_wrong_methods_are_405_and_unknown_paths_404(emu: EmulatorServer) -> None:
    cases = [
        ("GET", "/gtmon/fault/pause", 405, "POST"),
        ("PUT", "/gtmon/reset", 405, "POST"),
        ("POST", "/gtmon/state", 405, "GET"),
        ("DELETE", "/gtmon/truth", 405, "GET"),
        ("GET", "/gtmon/nothing", 404, None),
    ]
    for method, path, status, allow in cases:
        answer = requests.request(method, f"{emu.url}{path}", json={}, timeout=5)
        assert answer.status_code == status, (method, path, answer.text)
        assert answer.headers.get("Allow") == allow
        assert "error" in json.loads(answer.text)
