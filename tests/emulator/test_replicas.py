"""Replica management through UpdateTable ReplicaUpdates (global tables version 2019.11.21)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from emu_helpers import (
    create_table,
    get,
    make_global,
    order_item,
    read_stream,
    settle,
    unvalidated_client,
    wait_for,
)

from monitor.emulator import EmulatorServer


def _error(call: Any, **kwargs: Any) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as raised:
        call(**kwargs)
    response = raised.value.response
    return (
        response["Error"]["Code"],
        response["Error"]["Message"],
        response["ResponseMetadata"]["HTTPStatusCode"],
    )


def test_create_replica_copies_existing_items_without_stream_records(
    emu: EmulatorServer, client: Any
) -> None:
    east = client("us-east-1")
    create_table(east)
    for i in range(5):
        east.put_item(TableName="Orders", Item=order_item(f"O-{i}", Status="before"))
    east.update_table(TableName="Orders", ReplicaUpdates=[{"Create": {"RegionName": "eu-west-1"}}])
    eu = client("eu-west-1")
    items = eu.scan(TableName="Orders", ConsistentRead=True)["Items"]
    assert sorted(i["OrderID"]["S"] for i in items) == [f"O-{i}" for i in range(5)]
    assert read_stream(client, "eu-west-1", "Orders") == []  # a backfill is not a write


def test_create_replica_enables_new_and_old_images_streams_on_both_sides(
    emu: EmulatorServer, client: Any
) -> None:
    east = client("us-east-1")
    create_table(east)  # no stream at all
    assert "LatestStreamArn" not in east.describe_table(TableName="Orders")["Table"]
    east.update_table(TableName="Orders", ReplicaUpdates=[{"Create": {"RegionName": "eu-west-1"}}])
    for region in ("us-east-1", "eu-west-1"):
        table = client(region).describe_table(TableName="Orders")["Table"]
        assert table["StreamSpecification"] == {
            "StreamEnabled": True,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        }, region
        assert table["LatestStreamArn"].startswith(f"arn:aws:dynamodb:{region}:")


def test_replica_is_creating_then_active_and_reports_global_table_version(
    emu: EmulatorServer, client: Any
) -> None:
    east = client("us-east-1")
    create_table(east)
    response = east.update_table(
        TableName="Orders", ReplicaUpdates=[{"Create": {"RegionName": "ap-southeast-1"}}]
    )["TableDescription"]
    assert response["Replicas"] == [{"RegionName": "ap-southeast-1", "ReplicaStatus": "CREATING"}]
    assert response["GlobalTableVersion"] == "2019.11.21"

    def active() -> bool:
        replicas = east.describe_table(TableName="Orders")["Table"]["Replicas"]
        return replicas == [{"RegionName": "ap-southeast-1", "ReplicaStatus": "ACTIVE"}]

    wait_for(active, timeout=5, what="the replica to become ACTIVE")
    # Every replica lists the others, not itself.
    other = client("ap-southeast-1").describe_table(TableName="Orders")["Table"]
    assert other["Replicas"] == [{"RegionName": "us-east-1", "ReplicaStatus": "ACTIVE"}]
    assert other["GlobalTableVersion"] == "2019.11.21"


def test_delete_replica_removes_the_table_and_stops_replication(
    emu: EmulatorServer, client: Any
) -> None:
    ddb = make_global(client)
    ddb["us-east-1"].update_table(
        TableName="Orders", ReplicaUpdates=[{"Delete": {"RegionName": "ap-southeast-1"}}]
    )
    code, _, status = _error(ddb["ap-southeast-1"].describe_table, TableName="Orders")
    assert (code, status) == ("ResourceNotFoundException", 400)
    replicas = ddb["us-east-1"].describe_table(TableName="Orders")["Table"]["Replicas"]
    assert [r["RegionName"] for r in replicas] == ["eu-west-1"]

    ddb["eu-west-1"].put_item(TableName="Orders", Item=order_item("O-after"))
    settle(emu)
    assert get(ddb["us-east-1"], "Orders", order_item("O-after")) == order_item("O-after")
    assert set(emu.emulator.truth.writes("Orders")[0].applied) == {"eu-west-1", "us-east-1"}


def test_removing_the_last_replica_leaves_a_plain_table(emu: EmulatorServer, client: Any) -> None:
    ddb = make_global(client, regions=["us-east-1", "eu-west-1"])
    ddb["us-east-1"].update_table(
        TableName="Orders", ReplicaUpdates=[{"Delete": {"RegionName": "eu-west-1"}}]
    )
    table = ddb["us-east-1"].describe_table(TableName="Orders")["Table"]
    assert "Replicas" not in table and "GlobalTableVersion" not in table
    ddb["us-east-1"].put_item(TableName="Orders", Item=order_item("O-1"))
    assert emu.emulator.tables.pending() == 0


def test_replica_of_a_missing_table_is_resource_not_found(emu: EmulatorServer, client: Any) -> None:
    code, message, status = _error(
        client("us-east-1").update_table,
        TableName="Nope",
        ReplicaUpdates=[{"Create": {"RegionName": "eu-west-1"}}],
    )
    assert (code, status) == ("ResourceNotFoundException", 400)
    assert "Nope" in message


def test_replica_in_an_unknown_region_is_a_validation_error(
    emu: EmulatorServer, client: Any
) -> None:
    east = client("us-east-1")
    create_table(east)
    code, message, status = _error(
        east.update_table,
        TableName="Orders",
        ReplicaUpdates=[
            {"Create": {"RegionName": "eu-west-1"}},
            {"Create": {"RegionName": "mars-1"}},
        ],
    )
    assert (code, status) == ("ValidationException", 400)
    assert "mars-1" in message
    # Validation is all-or-nothing: the valid Create in the same call did not happen.
    assert "Replicas" not in east.describe_table(TableName="Orders")["Table"]
    assert _error(client("eu-west-1").describe_table, TableName="Orders")[0] == (
        "ResourceNotFoundException"
    )


def test_removing_a_region_that_is_not_a_replica_is_a_validation_error(
    emu: EmulatorServer, client: Any
) -> None:
    ddb = make_global(client, regions=["us-east-1", "eu-west-1"])
    code, message, status = _error(
        ddb["us-east-1"].update_table,
        TableName="Orders",
        ReplicaUpdates=[{"Delete": {"RegionName": "ap-southeast-1"}}],
    )
    assert (code, status) == ("ValidationException", 400)
    assert "ap-southeast-1" in message


def test_creating_a_replica_twice_is_a_validation_error(emu: EmulatorServer, client: Any) -> None:
    ddb = make_global(client, regions=["us-east-1", "eu-west-1"])
    code, _, status = _error(
        ddb["us-east-1"].update_table,
        TableName="Orders",
        ReplicaUpdates=[{"Create": {"RegionName": "eu-west-1"}}],
    )
    assert (code, status) == ("ValidationException", 400)


@pytest.mark.parametrize(
    "updates",
    [
        [],
        [{}],
        [{"Create": {"RegionName": "eu-west-1"}, "Delete": {"RegionName": "ap-southeast-1"}}],
        [{"Create": {}}],
        [{"Create": {"RegionName": ""}}],
        [{"Create": "eu-west-1"}],
        [{"Explode": {"RegionName": "eu-west-1"}}],
        [42],
        "eu-west-1",
    ],
    ids=[
        "empty",
        "no-action",
        "two-actions",
        "no-region",
        "blank-region",
        "spec-not-object",
        "unknown-action",
        "not-an-object",
        "not-a-list",
    ],
)
def test_malformed_replica_updates_are_validation_errors(
    emu: EmulatorServer, client: Any, updates: Any
) -> None:
    east = client("us-east-1")
    create_table(east)
    raw = unvalidated_client(emu, "us-east-1")

    def send_as_is(request: Any, **_: Any) -> None:
        # Put the malformed value on the wire verbatim (botocore cannot serialise some of them).
        request.data = json.dumps({"TableName": "Orders", "ReplicaUpdates": updates}).encode()

    raw.meta.events.register("before-sign.dynamodb.UpdateTable", send_as_is)
    code, _, status = _error(
        raw.update_table, TableName="Orders", ReplicaUpdates=[{"Create": {"RegionName": "x"}}]
    )
    assert (code, status) == ("ValidationException", 400)
    assert "Replicas" not in east.describe_table(TableName="Orders")["Table"]


def test_replicas_get_the_global_secondary_indexes(emu: EmulatorServer, client: Any) -> None:
    ddb = make_global(client, gsi=True)
    source = ddb["us-east-1"].describe_table(TableName="Orders")["Table"]
    for region in ("eu-west-1", "ap-southeast-1"):
        replica = ddb[region].describe_table(TableName="Orders")["Table"]
        assert replica["KeySchema"] == source["KeySchema"]
        assert [
            (g["IndexName"], g["KeySchema"], g["Projection"])
            for g in replica["GlobalSecondaryIndexes"]
        ] == [
            (g["IndexName"], g["KeySchema"], g["Projection"])
            for g in source["GlobalSecondaryIndexes"]
        ]
    ddb["us-east-1"].put_item(TableName="Orders", Item=order_item("O-1", Status="Shipped"))
    settle(emu)
    for region, table in ddb.items():
        found = table.query(
            TableName="Orders",
            IndexName="ByStatus",
            KeyConditionExpression="#s = :s",
            ExpressionAttributeNames={"#s": "Status"},
            ExpressionAttributeValues={":s": {"S": "Shipped"}},
        )["Items"]
        assert [i["OrderID"]["S"] for i in found] == ["O-1"], region
