"""Stream fidelity: one test per way AWS's DynamoDB Streams behave that a reader relies on."""

from __future__ import annotations

import itertools
import json
import math
import time
import tracemalloc
import urllib.request
from typing import Any

import pytest
from botocore.exceptions import ClientError
from emu_helpers import (
    REGIONS,
    all_shards,
    edges,
    get,
    make_global,
    order_item,
    read_shard,
    read_stream,
    settle,
    shards_in_lineage_order,
    stream_arn,
)

from monitor.emulator import EmulatorServer

KEY = {"OrderID": {"S": "O-1"}, "CustomerID": {"S": "C1"}}


def _code(error: ClientError) -> str:
    return str(error.response["Error"]["Code"])


def _first_shard(client: Any, region: str = "us-east-1") -> tuple[Any, str, str]:
    streams = client(region, "dynamodbstreams")
    arn = stream_arn(client(region), "Orders")
    return streams, arn, all_shards(streams, arn)[0]["ShardId"]


def test_aws_region_is_the_replica_region_for_local_and_replicated_records(
    emu: EmulatorServer, client: Any
) -> None:
    ddb = make_global(client)
    ddb["us-east-1"].put_item(TableName="Orders", Item=order_item("O-1", Status="a"))
    ddb["eu-west-1"].put_item(TableName="Orders", Item=order_item("O-2", Status="b"))
    settle(emu)
    for region in REGIONS:
        records = read_stream(client, region, "Orders")
        assert len(records) == 2, region
        assert {r["awsRegion"] for r in records} == {region}
        assert all(r["eventSource"] == "aws:dynamodb" for r in records)
        assert all(not k.startswith("aws:rep:") for r in records for k in r["dynamodb"]["NewImage"])


def test_no_op_writes_leave_no_record_and_do_not_replicate(
    emu: EmulatorServer, client: Any
) -> None:
    ddb = make_global(client)
    east = ddb["us-east-1"]
    east.put_item(TableName="Orders", Item=order_item("O-1", Status="a"))
    east.put_item(TableName="Orders", Item=order_item("O-1", Status="a"))  # same image
    east.update_item(
        TableName="Orders",
        Key=KEY,
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "Status"},
        ExpressionAttributeValues={":s": {"S": "a"}},
    )
    east.delete_item(TableName="Orders", Key={"OrderID": {"S": "absent"}, "CustomerID": {"S": "x"}})
    settle(emu)
    assert len(emu.emulator.truth.writes("Orders")) == 1
    for region in REGIONS:
        assert [e for e, _, _ in edges(read_stream(client, region, "Orders"))] == ["INSERT"], region


def test_approximate_creation_time_is_whole_seconds_rounded_down(
    emu: EmulatorServer, client: Any
) -> None:
    ddb = make_global(client)
    for i in range(3):
        ddb["us-east-1"].put_item(TableName="Orders", Item=order_item(f"O-{i}"))
        time.sleep(0.15)
    settle(emu)
    accepted = {w.key["OrderID"]["S"]: w for w in emu.emulator.truth.writes("Orders")}
    for region in REGIONS:
        for record in read_stream(client, region, "Orders"):
            created = record["dynamodb"]["ApproximateCreationDateTime"].timestamp()
            assert created == int(created), "creation time carries a fraction of a second"
            write = accepted[record["dynamodb"]["Keys"]["OrderID"]["S"]]
            assert created == math.floor(write.applied[region])


def test_shards_roll_over_into_children_and_reading_parent_first_yields_every_record(
    emu: EmulatorServer, client: Any, stream_settings: Any
) -> None:
    ddb = make_global(client)
    stream_settings(shard_rollover_seconds=0.4)
    written = []
    for batch in range(3):
        for i in range(4):
            item = order_item(f"O-{batch}-{i}")
            ddb["us-east-1"].put_item(TableName="Orders", Item=item)
            written.append(item)
        time.sleep(0.5)
    ddb["us-east-1"].put_item(TableName="Orders", Item=order_item("O-last"))
    written.append(order_item("O-last"))

    streams, arn, _ = _first_shard(client)
    shards = all_shards(streams, arn)
    assert len(shards) >= 3
    ordered = shards_in_lineage_order(shards)
    for parent, child in itertools.pairwise(ordered):
        assert child["ParentShardId"] == parent["ShardId"]
        numbers = parent["SequenceNumberRange"]
        assert "EndingSequenceNumber" in numbers, "a parent shard must be closed"
        assert int(numbers["EndingSequenceNumber"]) < int(
            child["SequenceNumberRange"]["StartingSequenceNumber"]
        )
    assert "EndingSequenceNumber" not in ordered[-1]["SequenceNumberRange"]
    assert "ParentShardId" not in ordered[0]

    # A closed shard, read to its end, returns no NextShardIterator.
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=ordered[0]["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    assert "NextShardIterator" not in streams.get_records(ShardIterator=iterator)

    records = [r for s in ordered for r in read_shard(streams, arn, s["ShardId"])]
    assert [r["dynamodb"]["NewImage"] for r in records] == written
    numbers = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert numbers == sorted(numbers)


def test_records_past_retention_are_trimmed(
    emu: EmulatorServer, client: Any, stream_settings: Any
) -> None:
    ddb = make_global(client)
    stream_settings(retention_seconds=0.5)
    ddb["us-east-1"].put_item(TableName="Orders", Item=order_item("O-old"))
    streams, arn, shard = _first_shard(client)
    old_seq = streams.get_records(
        ShardIterator=streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
    )["Records"][0]["dynamodb"]["SequenceNumber"]
    stale = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard, ShardIteratorType="AT_SEQUENCE_NUMBER", SequenceNumber=old_seq
    )["ShardIterator"]
    time.sleep(0.7)
    ddb["us-east-1"].put_item(TableName="Orders", Item=order_item("O-new"))

    with pytest.raises(ClientError) as raised:
        streams.get_shard_iterator(
            StreamArn=arn,
            ShardId=shard,
            ShardIteratorType="AT_SEQUENCE_NUMBER",
            SequenceNumber=old_seq,
        )
    assert _code(raised.value) == "TrimmedDataAccessException"
    with pytest.raises(ClientError) as raised:
        streams.get_records(ShardIterator=stale)
    assert _code(raised.value) == "TrimmedDataAccessException"
    remaining = read_shard(streams, arn, shard)
    assert [r["dynamodb"]["Keys"]["OrderID"]["S"] for r in remaining] == ["O-new"]


def test_iterators_expire_with_expired_iterator_exception(
    emu: EmulatorServer, client: Any, stream_settings: Any
) -> None:
    make_global(client)
    stream_settings(iterator_ttl_seconds=0.3)
    streams, arn, shard = _first_shard(client)
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="LATEST")[
        "ShardIterator"
    ]
    assert "NextShardIterator" in streams.get_records(ShardIterator=iterator)  # fresh: fine
    time.sleep(0.45)
    with pytest.raises(ClientError) as raised:
        streams.get_records(ShardIterator=iterator)
    assert _code(raised.value) == "ExpiredIteratorException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.parametrize(
    "iterator",
    [
        "not-an-iterator",
        "eyJub3QiOiAianNvbiJ9",  # base64 of a JSON object of the wrong shape
        "WzEsIDIsIDNd",  # base64 of [1, 2, 3]
        "WyJhcm46YXdzOmR5bmFtb2RiOnVzLWVhc3QtMToxOnRhYmxlL05vcGUvc3RyZWFtL3giLCAicyIsIDEsIDFd",
    ],
    ids=["garbage", "wrong-object", "short-list", "unknown-stream"],
)
def test_invalid_iterator_gets_a_json_validation_exception_not_an_html_500(
    emu: EmulatorServer, client: Any, iterator: str
) -> None:
    make_global(client)
    streams = client("us-east-1", "dynamodbstreams")
    with pytest.raises(ClientError) as raised:
        streams.get_records(ShardIterator=iterator)
    assert _code(raised.value) == "ValidationException"
    meta = raised.value.response["ResponseMetadata"]
    assert meta["HTTPStatusCode"] == 400
    assert meta["HTTPHeaders"]["content-type"].startswith("application/x-amz-json")


def test_invalid_iterator_body_is_json_on_the_wire(emu: EmulatorServer, client: Any) -> None:
    make_global(client)
    streams = client("us-east-1", "dynamodbstreams")
    raw: dict[str, Any] = {}
    streams.meta.events.register(
        "after-call.dynamodbstreams.GetRecords",
        lambda http_response, **_: raw.setdefault("body", http_response.content),
    )
    with pytest.raises(ClientError):
        streams.get_records(ShardIterator="bogus")
    body = json.loads(raw["body"])
    assert body["__type"].endswith("#ValidationException") and body["message"]


def test_iterator_registry_stays_bounded_over_thousands_of_get_records(
    emu: EmulatorServer, client: Any
) -> None:
    ddb = make_global(client)
    ddb["us-east-1"].put_item(TableName="Orders", Item=order_item("O-1"))
    settle(emu)
    streams, arn, shard = _first_shard(client)
    store = emu.emulator.streams
    fields_before = set(vars(store))
    stats_before = store.stats()

    # 5,000 GetRecords over HTTP, chaining iterators and taking fresh ones as a restarting
    # reader would: nothing in the store grows.
    iterator = ""
    for i in range(5000):
        if i % 100 == 0:
            iterator = streams.get_shard_iterator(
                StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
        iterator = streams.get_records(ShardIterator=iterator)["NextShardIterator"]
    assert store.stats() == stats_before
    assert set(vars(store)) == fields_before

    # The same calls in-process under tracemalloc (tracing the HTTP stack too would be slow):
    # the emulator's own allocations do not grow with the number of iterators handed out.
    def poll(calls: int) -> None:
        token = ""
        for i in range(calls):
            if i % 100 == 0:
                token = store.dispatch(
                    "GetShardIterator",
                    "us-east-1",
                    {"StreamArn": arn, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"},
                )["ShardIterator"]
            token = store.dispatch("GetRecords", "us-east-1", {"ShardIterator": token})[
                "NextShardIterator"
            ]

    emulator_files = [tracemalloc.Filter(True, "*/monitor/emulator/*")]
    with emu.emulator.lock:
        poll(500)
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot().filter_traces(emulator_files)
            poll(5000)
            after = tracemalloc.take_snapshot().filter_traces(emulator_files)
        finally:
            tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert growth < 16 * 1024, f"the emulator's memory grew by {growth} bytes over 5,000 GetRecords"
    assert store.stats() == stats_before


def test_update_item_on_a_new_item_emits_one_insert_everywhere(
    emu: EmulatorServer, client: Any
) -> None:
    ddb = make_global(client)
    ddb["eu-west-1"].update_item(
        TableName="Orders",
        Key=KEY,
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "Status"},
        ExpressionAttributeValues={":s": {"S": "new"}},
    )
    settle(emu)
    for region in REGIONS:
        assert edges(read_stream(client, region, "Orders")) == [
            ("INSERT", None, order_item("O-1", Status="new"))
        ], region


def test_transact_write_items_replicate_and_stream(emu: EmulatorServer, client: Any) -> None:
    ddb = make_global(client)
    east = ddb["us-east-1"]
    east.put_item(TableName="Orders", Item=order_item("O-del"))
    east.put_item(TableName="Orders", Item=order_item("O-upd", Status="old"))
    east.put_item(TableName="Orders", Item=order_item("O-cond"))
    east.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": "Orders", "Item": order_item("O-put", Status="p")}},
            {"Delete": {"TableName": "Orders", "Key": order_item("O-del")}},
            {
                "Update": {
                    "TableName": "Orders",
                    "Key": order_item("O-upd"),
                    "UpdateExpression": "SET #s = :s",
                    "ExpressionAttributeNames": {"#s": "Status"},
                    "ExpressionAttributeValues": {":s": {"S": "new"}},
                }
            },
            {
                "ConditionCheck": {
                    "TableName": "Orders",
                    "Key": order_item("O-cond"),
                    "ConditionExpression": "attribute_exists(OrderID)",
                }
            },
        ]
    )
    settle(emu)
    for region, table in ddb.items():
        assert get(table, "Orders", order_item("O-put")) == order_item("O-put", Status="p")
        assert get(table, "Orders", order_item("O-del")) is None
        assert get(table, "Orders", order_item("O-upd")) == order_item("O-upd", Status="new")
        tail = edges(read_stream(client, region, "Orders"))[3:]
        assert sorted(e for e, _, _ in tail) == ["INSERT", "MODIFY", "REMOVE"], region


def test_batch_write_item_replicates_and_streams(emu: EmulatorServer, client: Any) -> None:
    ddb = make_global(client)
    ap = ddb["ap-southeast-1"]
    ap.put_item(TableName="Orders", Item=order_item("O-gone"))
    ap.batch_write_item(
        RequestItems={
            "Orders": [{"PutRequest": {"Item": order_item(f"O-{i}", Status="b")}} for i in range(5)]
            + [{"DeleteRequest": {"Key": order_item("O-gone")}}]
        }
    )
    settle(emu)
    for region, table in ddb.items():
        scanned = table.scan(TableName="Orders", ConsistentRead=True)["Items"]
        assert sorted(i["OrderID"]["S"] for i in scanned) == [f"O-{i}" for i in range(5)], region
        events = [e for e, _, _ in edges(read_stream(client, region, "Orders"))]
        assert sorted(events) == ["INSERT"] * 6 + ["REMOVE"], region


def test_failed_transaction_emits_nothing_and_replicates_nothing(
    emu: EmulatorServer, client: Any
) -> None:
    ddb = make_global(client)
    east = ddb["us-east-1"]
    east.put_item(TableName="Orders", Item=order_item("O-1", Status="keep"))
    settle(emu)
    writes_before = len(emu.emulator.truth.writes())
    with pytest.raises(ClientError) as raised:
        east.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": "Orders", "Item": order_item("O-2", Status="no")}},
                {
                    "Update": {
                        "TableName": "Orders",
                        "Key": order_item("O-1"),
                        "UpdateExpression": "SET #s = :s",
                        "ConditionExpression": "#s = :expected",
                        "ExpressionAttributeNames": {"#s": "Status"},
                        "ExpressionAttributeValues": {
                            ":s": {"S": "changed"},
                            ":expected": {"S": "something else"},
                        },
                    }
                },
            ]
        )
    assert _code(raised.value) == "TransactionCanceledException"
    time.sleep(0.2)
    settle(emu)
    assert len(emu.emulator.truth.writes()) == writes_before
    for region, table in ddb.items():
        assert get(table, "Orders", order_item("O-2")) is None, region
        assert get(table, "Orders", order_item("O-1")) == order_item("O-1", Status="keep")
        assert len(read_stream(client, region, "Orders")) == 1, region

    # moto rolled the table back to a copy: writes after that still stream and replicate.
    east.put_item(TableName="Orders", Item=order_item("O-3"))
    settle(emu)
    for region, table in ddb.items():
        assert get(table, "Orders", order_item("O-3")) == order_item("O-3"), region
        assert len(read_stream(client, region, "Orders")) == 2, region


def test_streams_api_is_served_by_the_emulator_not_moto(emu: EmulatorServer, client: Any) -> None:
    """moto's own streams backend keeps every iterator forever; it must never be reached."""
    from moto.dynamodbstreams.models import dynamodbstreams_backends

    ddb = make_global(client)
    ddb["us-east-1"].put_item(TableName="Orders", Item=order_item("O-1"))
    read_stream(client, "us-east-1", "Orders")
    for region in REGIONS:
        backend = dynamodbstreams_backends["123456789012"][region]
        assert not backend.shard_iterators
    url = f"{emu.url}/gtmon/state"
    with urllib.request.urlopen(url, timeout=5) as response:
        state = json.loads(response.read())
    assert state["streams"]["records"] >= 1


def test_a_stream_switched_off_in_one_replica_takes_no_more_records_and_stays_readable(
    emu: EmulatorServer, client: Any
) -> None:
    ddb = make_global(client)
    ddb["us-east-1"].put_item(TableName="Orders", Item=order_item("O-1", Status="a"))
    settle(emu)
    ddb["eu-west-1"].update_table(TableName="Orders", StreamSpecification={"StreamEnabled": False})
    ddb["us-east-1"].put_item(TableName="Orders", Item=order_item("O-2", Status="b"))
    settle(emu)
    assert len(read_stream(client, "eu-west-1", "Orders")) == 1  # O-1 only, still readable
    assert len(read_stream(client, "us-east-1", "Orders")) == 2
    assert get(ddb["eu-west-1"], "Orders", {"OrderID": {"S": "O-2"}, "CustomerID": {"S": "C1"}})  # replicated
