"""Fault injection at run time, one test per mode, through the `gtmon fault` CLI or the
control client, observed with real boto3 clients."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from emu_helpers import get, make_global, order_item, settle, wait_for

from monitor.emulator import EmulatorServer
from monitor.emulator.control import ControlClient, ControlError

REPO = Path(__file__).resolve().parents[2]


def gtmon_fault(emu: EmulatorServer, *args: str, ok: bool = True) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "fault", *args, "--endpoint", emu.url],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if not ok:
        return done
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_delay_sets_one_link_and_leaves_the_others(emu: EmulatorServer, client: Any) -> None:
    ddb = make_global(client)
    result = gtmon_fault(emu, "delay", "--from", "us-east-1", "--to", "eu-west-1", "--ms", "400")
    assert result["links"] == ["us-east-1->eu-west-1"]
    ddb["us-east-1"].put_item(TableName="Orders", Item=order_item("O-1"))
    settle(emu)
    write = emu.emulator.truth.writes("Orders")[0]
    assert 0.39 <= write.applied["eu-west-1"] - write.accepted_at < 0.6
    assert write.applied["ap-southeast-1"] - write.accepted_at < 0.3  # default 50 ms


def test_pause_queues_writes_in_order_and_resume_delivers_them(
    emu: EmulatorServer, client: Any
) -> None:
    ddb = make_global(client)
    gtmon_fault(emu, "pause", "--from", "us-east-1", "--to", "eu-west-1")
    for i in range(3):
        ddb["us-east-1"].put_item(TableName="Orders", Item=order_item("O-1", Status=str(i)))
    wait_for(
        lambda: (
            get(ddb["ap-southeast-1"], "Orders", order_item("O-1")) == order_item("O-1", Status="2")
        ),
        what="the unpaused link to deliver",
    )
    time.sleep(0.2)
    assert get(ddb["eu-west-1"], "Orders", order_item("O-1")) is None
    link = ControlClient(emu.url).state()["global_tables"]["links"]["us-east-1->eu-west-1"]
    assert link["paused"] is True and link["queued"] == 3

    gtmon_fault(emu, "resume", "--from", "us-east-1", "--to", "eu-west-1")
    settle(emu)
    assert get(ddb["eu-west-1"], "Orders", order_item("O-1")) == order_item("O-1", Status="2")
    applied = [w.applied["eu-west-1"] for w in emu.emulator.truth.writes("Orders")]
    assert applied == sorted(applied)


def test_outage_error_answers_a_retryable_json_500(emu: EmulatorServer, client: Any) -> None:
    ddb = make_global(client)
    gtmon_fault(emu, "outage", "--region", "eu-west-1", "--mode", "error")
    retrying = client("eu-west-1", max_attempts=1)  # botocore: retries after the first try
    with pytest.raises(ClientError) as raised:
        retrying.get_item(TableName="Orders", Key=order_item("O-1"))
    response = raised.value.response
    assert response["Error"]["Code"] == "InternalServerError"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert response["ResponseMetadata"]["RetryAttempts"] == 1, "botocore should retry a 5xx"
    assert response["ResponseMetadata"]["HTTPHeaders"]["content-type"].startswith(
        "application/x-amz-json"
    )
    # Other regions answer, and replication into the region continues (only clients are cut off).
    ddb["us-east-1"].put_item(TableName="Orders", Item=order_item("O-1"))
    settle(emu)
    gtmon_fault(emu, "restore", "--region", "eu-west-1")
    assert get(ddb["eu-west-1"], "Orders", order_item("O-1")) == order_item("O-1")


def test_outage_blackhole_times_the_client_out_and_drops_the_request(
    emu: EmulatorServer, client: Any
) -> None:
    ddb = make_global(client)
    control = ControlClient(emu.url)
    control.fault("outage", region="ap-southeast-1", mode="blackhole")
    impatient = client("ap-southeast-1", read_timeout=0.5, connect_timeout=1, max_attempts=0)
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        impatient.put_item(TableName="Orders", Item=order_item("O-lost"))
    assert time.monotonic() - started >= 0.5
    ddb["us-east-1"].get_item(TableName="Orders", Key=order_item("O-x"))  # others unaffected

    control.fault("restore", region="ap-southeast-1")
    time.sleep(0.3)  # the held request notices the restore
    settle(emu)
    assert get(ddb["ap-southeast-1"], "Orders", order_item("O-x")) is None
    # The timed-out write never reached the region: nothing applied, nothing replicated.
    assert emu.emulator.truth.writes("Orders") == []
    for table in ddb.values():
        assert get(table, "Orders", order_item("O-lost")) is None


def test_throttle_rejects_exactly_the_fraction(emu: EmulatorServer, client: Any) -> None:
    ddb = make_global(client)
    result = gtmon_fault(emu, "throttle", "--region", "eu-west-1", "--fraction", "0.25")
    assert result["throttle_fraction"] == 0.25
    no_retries = client("eu-west-1", max_attempts=0)
    outcomes = []
    for i in range(20):
        try:
            no_retries.put_item(TableName="Orders", Item=order_item(f"O-{i}"))
            outcomes.append("ok")
        except ClientError as error:
            assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
            outcomes.append(error.response["Error"]["Code"])
    assert outcomes.count("ThrottlingException") == 5
    assert outcomes.count("ok") == 15
    settle(emu)
    assert len(emu.emulator.truth.writes("Orders")) == 15  # throttled writes did nothing
    for i in range(20):  # other regions are not throttled
        ddb["us-east-1"].get_item(TableName="Orders", Key=order_item(f"O-{i}"))


def test_latency_delays_each_call_to_the_region(emu: EmulatorServer, client: Any) -> None:
    ddb = make_global(client)
    control = ControlClient(emu.url)
    control.fault("latency", region="eu-west-1", ms=300)

    def timed(region: str) -> float:
        started = time.monotonic()
        ddb[region].get_item(TableName="Orders", Key=order_item("O-1"))
        return time.monotonic() - started

    assert timed("eu-west-1") >= 0.3
    assert timed("us-east-1") < 0.2
    control.fault("latency", region="eu-west-1", ms=0)
    assert timed("eu-west-1") < 0.2


def test_clear_removes_outages_throttles_pauses_and_delay_changes(
    emu: EmulatorServer, client: Any
) -> None:
    ddb = make_global(client)
    control = ControlClient(emu.url)
    control.fault("delay", ms=5000)
    control.fault("pause", **{"from": "eu-west-1"})
    control.fault("outage", region="ap-southeast-1", mode="error")
    control.fault("throttle", region="us-east-1", fraction=1.0)
    ddb["eu-west-1"].put_item(TableName="Orders", Item=order_item("O-queued"))

    gtmon_fault(emu, "clear")
    state = control.state()
    assert all(not f["outage"] and f["throttle_fraction"] == 0 for f in state["faults"].values())
    assert all(
        not link["paused"] and link["ms"] == 50.0
        for link in state["global_tables"]["links"].values()
    )
    settle(emu, timeout=10)  # the queued write no longer waits 5 s
    for table in ddb.values():
        assert get(table, "Orders", order_item("O-queued")) == order_item("O-queued")


def test_fault_cli_reports_bad_input_without_a_traceback(emu: EmulatorServer) -> None:
    done = gtmon_fault(emu, "outage", "--region", "mars-1", ok=False)
    assert done.returncode == 2
    assert "mars-1" in done.stderr and "Traceback" not in done.stderr
    with pytest.raises(ControlError, match="throttle fraction"):
        ControlClient(emu.url).fault("throttle", region="us-east-1", fraction=2)
