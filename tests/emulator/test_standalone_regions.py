"""Regions outside --regions: served as standalone regions (a plain moto server serves every
region), with global tables only between replicas in the listed regions; --strict-regions
refuses them instead."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from emu_helpers import create_table, get, make_global, order_item, read_stream, settle

from monitor.emulator import EmulatorServer

KEY = {"OrderID": {"S": "O-1"}, "CustomerID": {"S": "C1"}}


def test_a_region_outside_the_list_is_a_working_standalone_region(
    emu: EmulatorServer, client: Any
) -> None:
    ddb = client("us-west-2")
    create_table(ddb, stream_view="NEW_AND_OLD_IMAGES")
    ddb.put_item(TableName="Orders", Item=order_item("O-1", Status="new"))
    assert get(ddb, "Orders", KEY) == order_item("O-1", Status="new")
    records = read_stream(client, "us-west-2", "Orders")
    assert [(r["eventName"], r["awsRegion"]) for r in records] == [("INSERT", "us-west-2")]
    assert ":us-west-2:" in ddb.describe_table(TableName="Orders")["Table"]["TableArn"]
    assert client("us-east-1").list_tables()["TableNames"] == []


def test_a_same_named_table_outside_the_replicas_stays_out_of_the_global_table(
    emu: EmulatorServer, client: Any
) -> None:
    ddb = make_global(client, regions=["us-east-1", "eu-west-1"])
    for region in ("us-west-2", "ap-southeast-1"):  # standalone, and listed but no replica
        create_table(client(region))
        client(region).put_item(TableName="Orders", Item=order_item("O-1", Status=region))
        assert "Replicas" not in client(region).describe_table(TableName="Orders")["Table"]
    ddb["us-east-1"].put_item(TableName="Orders", Item=order_item("O-2", Status="global"))
    settle(emu)
    for region in ("us-east-1", "eu-west-1"):
        assert get(ddb[region], "Orders", KEY) is None, region
    for region in ("us-west-2", "ap-southeast-1"):
        assert get(client(region), "Orders", KEY) == order_item("O-1", Status=region)
        assert get(client(region), "Orders", {**KEY, "OrderID": {"S": "O-2"}}) is None


@pytest.mark.parametrize(("home", "replica"), [("us-east-1", "us-west-2"), ("us-west-2", "us-east-1")])
def test_replicas_to_or_from_a_standalone_region_are_refused_naming_the_flag(
    emu: EmulatorServer, client: Any, home: str, replica: str
) -> None:
    create_table(client(home))
    with pytest.raises(ClientError) as refused:
        client(home).update_table(
            TableName="Orders", ReplicaUpdates=[{"Create": {"RegionName": replica}}]
        )
    error = refused.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert "us-west-2 is not available for global tables" in error["Message"]
    assert "--regions" in error["Message"]
    assert client("us-west-2" if home == "us-east-1" else "us-east-1").list_tables()["TableNames"] == []


def test_strict_regions_refuses_a_region_outside_the_list_naming_the_flags(
    strict_regions: EmulatorServer, client: Any
) -> None:
    with pytest.raises(ClientError) as refused:
        client("us-west-2").list_tables()
    error = refused.value.response["Error"]
    assert error["Code"] == "UnrecognizedClientException"
    assert "Region us-west-2 is not served" in error["Message"]
    assert "--regions" in error["Message"] and "--strict-regions" in error["Message"]
    assert client("eu-west-1").list_tables()["TableNames"] == []
