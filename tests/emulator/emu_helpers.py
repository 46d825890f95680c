"""Helpers shared by the emulator tests: tables, global tables, polling, stream reading."""

from __future__ import annotations

from typing import Any

from monitor.emulator import EmulatorServer
from tests.helpers import REGIONS, ClientFactory, add_replicas, wait_sync

wait_for = wait_sync


def create_table(
    ddb: Any,
    name: str = "Orders",
    *,
    range_key: bool = True,
    gsi: bool = False,
    stream_view: str | None = None,
) -> None:
    keys = [{"AttributeName": "OrderID", "KeyType": "HASH"}]
    attrs = [{"AttributeName": "OrderID", "AttributeType": "S"}]
    if range_key:
        keys.append({"AttributeName": "CustomerID", "KeyType": "RANGE"})
        attrs.append({"AttributeName": "CustomerID", "AttributeType": "S"})
    extra: dict[str, Any] = {}
    if gsi:
        attrs.append({"AttributeName": "Status", "AttributeType": "S"})
        extra["GlobalSecondaryIndexes"] = [
            {
                "IndexName": "ByStatus",
                "KeySchema": [{"AttributeName": "Status", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ]
    if stream_view:
        extra["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream_view}
    ddb.create_table(
        TableName=name,
        KeySchema=keys,
        AttributeDefinitions=attrs,
        BillingMode="PAY_PER_REQUEST",
        **extra,
    )


def make_global(
    client: ClientFactory, name: str = "Orders", regions: list[str] | None = None, **table: Any
) -> dict[str, Any]:
    """Create `name` in the first region with replicas in the others; wait until ACTIVE."""
    regions = regions or REGIONS
    create_table(client(regions[0]), name, **table)
    return add_replicas(client, name, regions)


def settle(emu: EmulatorServer, timeout: float = 30.0) -> None:
    assert emu.emulator.settle(timeout), "replication did not settle"


def shards_in_lineage_order(shards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Parents before children (what a correct stream reader must do)."""
    by_id = {s["ShardId"]: s for s in shards}
    ordered: list[dict[str, Any]] = []
    seen: set[str] = set()

    def visit(shard: dict[str, Any]) -> None:
        if shard["ShardId"] in seen:
            return
        parent = by_id.get(shard.get("ParentShardId", ""))
        if parent is not None:
            visit(parent)
        seen.add(shard["ShardId"])
        ordered.append(shard)

    for shard in shards:
        visit(shard)
    return ordered


def all_shards(streams: Any, arn: str) -> list[dict[str, Any]]:
    shards: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"StreamArn": arn}
    while True:
        description = streams.describe_stream(**kwargs)["StreamDescription"]
        shards.extend(description["Shards"])
        last = description.get("LastEvaluatedShardId")
        if not last:
            return shards
        kwargs["ExclusiveStartShardId"] = last


def read_shard(streams: Any, arn: str, shard_id: str) -> list[dict[str, Any]]:
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records: list[dict[str, Any]] = []
    while iterator:
        page = streams.get_records(ShardIterator=iterator)
        records.extend(page["Records"])
        iterator = page.get("NextShardIterator")
        if not page["Records"]:
            break  # an open shard with nothing more to read
    return records


def stream_arn(ddb: Any, table: str) -> str:
    return str(ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"])


def read_stream(client: ClientFactory, region: str, table: str) -> list[dict[str, Any]]:
    """Every record of a replica's stream, across all shards, parents first."""
    streams = client(region, "dynamodbstreams")
    arn = stream_arn(client(region), table)
    records: list[dict[str, Any]] = []
    for shard in shards_in_lineage_order(all_shards(streams, arn)):
        records.extend(read_shard(streams, arn, shard["ShardId"]))
    return records


def edges(records: list[dict[str, Any]]) -> list[tuple[str, Any, Any]]:
    """(eventName, OldImage, NewImage) per record."""
    return [
        (r["eventName"], r["dynamodb"].get("OldImage"), r["dynamodb"].get("NewImage"))
        for r in records
    ]


def order_item(order_id: str, customer: str = "C1", **attrs: str) -> dict[str, Any]:
    item = {"OrderID": {"S": order_id}, "CustomerID": {"S": customer}}
    item.update({k: {"S": v} for k, v in attrs.items()})
    return item


def get(ddb: Any, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
    item = ddb.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
    return item if item is None else dict(item)


def unvalidated_client(emu: EmulatorServer, region: str, service: str = "dynamodb") -> Any:
    """A boto3 client that sends whatever it is given (no client-side parameter validation),
    to reach the emulator's own validation."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        region_name=region,
        endpoint_url=emu.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(parameter_validation=False, retries={"max_attempts": 1, "mode": "standard"}),
    )
