"""The seed scenario: the walkthrough with the real AWS CLI, and the Shipped/Delivered conflict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from emu_helpers import edges, get, make_global, order_item, read_stream, settle

from monitor.emulator import EmulatorServer
from monitor.emulator.control import ControlClient

AWS = Path(sys.executable).parent / "aws"


def _aws(emu: EmulatorServer, tmp_path: Path, *args: str) -> Any:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_PAGER": "",
    }
    done = subprocess.run(
        [str(AWS), "dynamodb", *args, "--endpoint-url", emu.url, "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"aws dynamodb {args[0]} failed: {done.stderr}"
    return json.loads(done.stdout) if done.stdout.strip() else None


@pytest.mark.e2e
def test_seed_walkthrough_with_the_real_aws_cli(emu: EmulatorServer, tmp_path: Path) -> None:
    assert AWS.exists(), f"the AWS CLI is not installed next to {sys.executable}"
    created = _aws(
        emu,
        tmp_path,
        "create-table",
        "--table-name",
        "Orders",
        "--attribute-definitions",
        "AttributeName=OrderID,AttributeType=S",
        "AttributeName=CustomerID,AttributeType=S",
        "--key-schema",
        "AttributeName=OrderID,KeyType=HASH",
        "AttributeName=CustomerID,KeyType=RANGE",
        "--billing-mode",
        "PAY_PER_REQUEST",
    )
    assert created["TableDescription"]["TableName"] == "Orders"

    updated = _aws(
        emu,
        tmp_path,
        "update-table",
        "--table-name",
        "Orders",
        "--replica-updates",
        '[{"Create":{"RegionName":"eu-west-1"}},{"Create":{"RegionName":"ap-southeast-1"}}]',
    )
    regions = {r["RegionName"] for r in updated["TableDescription"]["Replicas"]}
    assert regions == {"eu-west-1", "ap-southeast-1"}

    deadline = time.monotonic() + 20
    while True:
        table = _aws(emu, tmp_path, "describe-table", "--table-name", "Orders")["Table"]
        statuses = {r["RegionName"]: r["ReplicaStatus"] for r in table.get("Replicas", [])}
        if statuses == {"eu-west-1": "ACTIVE", "ap-southeast-1": "ACTIVE"}:
            break
        assert time.monotonic() < deadline, f"replicas never became ACTIVE: {statuses}"
        time.sleep(0.2)
    assert table["GlobalTableVersion"] == "2019.11.21"

    item = order_item("O-1001", "C-42", OrderStatus="Placed")
    _aws(
        emu,
        tmp_path,
        "put-item",
        "--region",
        "eu-west-1",
        "--table-name",
        "Orders",
        "--item",
        json.dumps(item),
    )
    key = json.dumps({"OrderID": {"S": "O-1001"}, "CustomerID": {"S": "C-42"}})
    deadline = time.monotonic() + 20
    while True:
        got = _aws(emu, tmp_path, "get-item", "--table-name", "Orders", "--key", key)
        if got and "Item" in got:
            break
        assert time.monotonic() < deadline, "the item never replicated to us-east-1"
        time.sleep(0.2)
    assert got["Item"] == item


def test_seed_conflict_delivered_wins_and_shipped_is_lost(emu: EmulatorServer, client: Any) -> None:
    ddb = make_global(client)
    key = {"OrderID": {"S": "O-7"}, "CustomerID": {"S": "C-1"}}
    ddb["us-east-1"].put_item(
        TableName="Orders", Item=order_item("O-7", "C-1", OrderStatus="Placed")
    )
    settle(emu)

    control = ControlClient(emu.url)
    control.fault("pause")  # every link
    ddb["us-east-1"].put_item(
        TableName="Orders", Item=order_item("O-7", "C-1", OrderStatus="Shipped")
    )
    ddb["eu-west-1"].put_item(
        TableName="Orders", Item=order_item("O-7", "C-1", OrderStatus="Delivered")
    )
    # Resume us-east-1's links first so ap-southeast-1 applies Shipped before Delivered arrives.
    control.fault("resume", **{"from": "us-east-1"})
    settle(emu)
    control.fault("resume")
    settle(emu)

    for region, table in ddb.items():
        assert get(table, "Orders", key) == order_item("O-7", "C-1", OrderStatus="Delivered"), (
            region
        )

    writes = {w.image["OrderStatus"]["S"]: w for w in emu.emulator.truth.writes("Orders")}
    shipped, delivered = writes["Shipped"], writes["Delivered"]
    assert (shipped.origin, delivered.origin) == ("us-east-1", "eu-west-1")
    assert delivered.order > shipped.order
    assert set(shipped.discarded) == {"eu-west-1"}
    assert set(shipped.applied) == {"us-east-1", "ap-southeast-1"}
    assert set(delivered.applied) == {"us-east-1", "eu-west-1", "ap-southeast-1"}
    for region in ("us-east-1", "ap-southeast-1"):  # applied, then overwritten by Delivered
        assert shipped.applied[region] <= delivered.applied[region]
    assert [
        (lost.write_id, winner.write_id) for lost, winner in emu.emulator.truth.lost_writes()
    ] == [(shipped.write_id, delivered.write_id)]
    over_http = control.truth("Orders")["lost"]
    assert over_http == [{"write_id": shipped.write_id, "lost_to": delivered.write_id}]

    # eu-west-1's stream never saw Shipped; the others saw it overwritten.
    status = lambda image: image and image["OrderStatus"]["S"]  # noqa: E731
    eu = [
        (e, status(o), status(n)) for e, o, n in edges(read_stream(client, "eu-west-1", "Orders"))
    ]
    assert eu[-1] == ("MODIFY", "Placed", "Delivered")
    assert all("Shipped" not in (o, n) for _, o, n in eu)
    for region in ("us-east-1", "ap-southeast-1"):
        seen = [
            (e, status(o), status(n)) for e, o, n in edges(read_stream(client, region, "Orders"))
        ]
        assert seen[-2:] == [("MODIFY", "Placed", "Shipped"), ("MODIFY", "Shipped", "Delivered")], (
            region
        )
