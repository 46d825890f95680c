"""`gtmon fault garbage`: some answers are a 200 with a body of the wrong shape.

Observed with real boto3 clients over HTTP: what a client meets is an answer
its parser cannot take (an AttributeError from botocore) or an answer with
nothing in it, while the request itself was applied.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from emu_helpers import get, make_global, order_item, settle

from monitor.emulator import EmulatorServer
from monitor.emulator.control import ControlClient, ControlError
from monitor.emulator.faults import GARBAGE_SHAPES, RegionFaults, garble

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(60)


def gtmon_fault(emu: EmulatorServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", "fault", *args, "--endpoint", emu.url],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )


def test_garbage_answers_exactly_the_fraction_in_turn_of_every_shape() -> None:
    faults = RegionFaults()
    faults.set_garbage("eu-west-1", 0.25)
    shapes = [faults.garbage_shape("eu-west-1") for _ in range(24)]
    assert [s for s in shapes if s is not None] == list(GARBAGE_SHAPES) * 2
    assert shapes.count(None) == 18
    assert faults.garbage_shape("us-east-1") is None  # other regions answer normally
    faults.clear()
    assert faults.garbage_shape("eu-west-1") is None
    with pytest.raises(ValueError, match="between 0 and 1"):
        faults.set_garbage("eu-west-1", 1.5)


def test_each_shape_is_no_answer_of_the_right_shape() -> None:
    real = json.dumps({"Item": {"OrderID": {"S": "O-1"}}, "Count": 1}).encode()
    assert not garble(real, "not_json").lstrip().startswith((b"{", b"["))
    assert isinstance(json.loads(garble(real, "json_array")), list)
    wrong = json.loads(garble(real, "wrong_types"))
    assert set(wrong) == {"Item", "Count"}
    assert isinstance(wrong["Item"], str) and isinstance(wrong["Count"], dict)


def test_garbage_reaches_boto3_as_unparseable_or_empty_answers_and_writes_still_land(
    emu: EmulatorServer, client: Any
) -> None:
    ddb = make_global(client)
    done = gtmon_fault(emu, "garbage", "--region", "eu-west-1", "--fraction", "1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"region": "eu-west-1", "garbage_fraction": 1.0}
    eu = client("eu-west-1", max_attempts=0)
    outcomes = []
    for i in range(3):  # one of each shape, in turn
        try:
            answer = eu.put_item(TableName="Orders", Item=order_item(f"O-{i}"),
                                 ReturnValues="ALL_OLD", ReturnConsumedCapacity="TOTAL")
            answer.pop("ResponseMetadata", None)
            outcomes.append(("answered", answer))
        except AttributeError as exc:  # botocore's parser met an array or a mistyped member
            outcomes.append(("unparseable", str(exc)))
    assert [kind for kind, _ in outcomes] == ["answered", "unparseable", "unparseable"], outcomes
    assert outcomes[0][1] == {}, "an HTML page parses to an answer with nothing in it"
    settle(emu)
    for i in range(3):  # applied although the answers were lost, and replicated
        assert get(ddb["us-east-1"], "Orders", order_item(f"O-{i}")) == order_item(f"O-{i}")
    # Only that region: another answers normally.
    assert ddb["us-east-1"].describe_table(TableName="Orders")["Table"]["TableName"] == "Orders"
    state = ControlClient(emu.url).state()["faults"]["eu-west-1"]
    assert state["garbage_fraction"] == 1.0 and state["garbage_answers"] == 3


def test_fraction_zero_and_clear_end_it_and_bad_input_is_one_line(
    emu: EmulatorServer, client: Any
) -> None:
    make_global(client)
    control = ControlClient(emu.url)
    control.fault("garbage", region="us-east-1", fraction=1.0)
    control.fault("garbage", region="us-east-1", fraction=0)
    assert client("us-east-1").describe_table(TableName="Orders")["Table"]["TableName"] == "Orders"
    control.fault("garbage", region="us-east-1", fraction=1.0)
    control.fault("clear")
    assert client("us-east-1").describe_table(TableName="Orders")["Table"]["TableName"] == "Orders"
    with pytest.raises(ControlError, match="garbage fraction"):
        control.fault("garbage", region="us-east-1", fraction=2)
    done = gtmon_fault(emu, "garbage", "--region", "mars-1")
    assert done.returncode == 2
    assert "mars-1" in done.stderr and "Traceback" not in done.stderr
