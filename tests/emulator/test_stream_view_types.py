"""Stream view types: each replica's stream carries only the images its view type names
(AWS's StreamSpecification reference; moto does the same), and replication does not care."""

from __future__ import annotations

from typing import Any

import pytest
from emu_helpers import add_replicas, create_table, edges, order_item, read_stream, settle

from monitor.emulator import EmulatorServer

KEY = {"OrderID": {"S": "O-1"}, "CustomerID": {"S": "C1"}}
V1 = order_item("O-1", Status="new")
V2 = order_item("O-1", Status="paid")


def _insert_modify_remove(ddb: Any) -> None:
    ddb.put_item(TableName="Orders", Item=V1)
    ddb.put_item(TableName="Orders", Item=V2)
    ddb.delete_item(TableName="Orders", Key=KEY)


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        ("KEYS_ONLY", [("INSERT", None, None), ("MODIFY", None, None), ("REMOVE", None, None)]),
        ("NEW_IMAGE", [("INSERT", None, V1), ("MODIFY", None, V2), ("REMOVE", None, None)]),
        ("OLD_IMAGE", [("INSERT", None, None), ("MODIFY", V1, None), ("REMOVE", V2, None)]),
        ("NEW_AND_OLD_IMAGES", [("INSERT", None, V1), ("MODIFY", V1, V2), ("REMOVE", V2, None)]),
    ],
)
def test_records_carry_only_the_images_the_view_type_names(
    emu: EmulatorServer, client: Any, view: str, expected: list[tuple[str, Any, Any]]
) -> None:
    ddb = client("us-east-1")
    create_table(ddb, stream_view=view)
    _insert_modify_remove(ddb)
    records = read_stream(client, "us-east-1", "Orders")
    assert edges(records) == expected
    assert all(r["dynamodb"]["Keys"] == KEY for r in records)
    assert {r["dynamodb"]["StreamViewType"] for r in records} == {view}
    arn = ddb.describe_table(TableName="Orders")["Table"]["LatestStreamArn"]
    described = client("us-east-1", "dynamodbstreams").describe_stream(StreamArn=arn)
    assert described["StreamDescription"]["StreamViewType"] == view


def test_a_keys_only_record_is_smaller_than_a_full_one(emu: EmulatorServer, client: Any) -> None:
    # SizeBytes counts what the record carries, so GetRecords' 1 MB page fits more of them.
    for name, view in (("Orders", "KEYS_ONLY"), ("Full", "NEW_AND_OLD_IMAGES")):
        create_table(client("us-east-1"), name, stream_view=view)
        client("us-east-1").put_item(TableName=name, Item=order_item("O-1", Note="x" * 500))
    keys_only = read_stream(client, "us-east-1", "Orders")[0]["dynamodb"]["SizeBytes"]
    full = read_stream(client, "us-east-1", "Full")[0]["dynamodb"]["SizeBytes"]
    assert keys_only < 100 < 500 < full


def test_a_stream_enabled_by_update_table_has_the_view_type_it_names(
    emu: EmulatorServer, client: Any
) -> None:
    ddb = client("us-east-1")
    create_table(ddb)
    ddb.update_table(
        TableName="Orders", StreamSpecification={"StreamEnabled": True, "StreamViewType": "OLD_IMAGE"}
    )
    ddb.put_item(TableName="Orders", Item=V1)
    ddb.put_item(TableName="Orders", Item=V2)
    assert edges(read_stream(client, "us-east-1", "Orders")) == [
        ("INSERT", None, None),
        ("MODIFY", V1, None),
    ]


def test_replicas_get_both_images_and_replicate_whatever_the_source_view(
    emu: EmulatorServer, client: Any
) -> None:
    # Replication is fed from the capture point, not the stream: a source created with
    # KEYS_ONLY still ships full items, and every replica's stream is NEW_AND_OLD_IMAGES,
    # as global tables (2019.11.21) require.
    create_table(client("us-east-1"), stream_view="KEYS_ONLY")
    ddb = add_replicas(client, "Orders", ["us-east-1", "eu-west-1"])
    ddb["us-east-1"].put_item(TableName="Orders", Item=V1)
    settle(emu)
    for region in ("us-east-1", "eu-west-1"):
        spec = client(region).describe_table(TableName="Orders")["Table"]["StreamSpecification"]
        assert spec == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}, region
        assert edges(read_stream(client, region, "Orders")) == [("INSERT", None, V1)], region
