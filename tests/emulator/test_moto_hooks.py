"""One test per moto internal that monitor/emulator/moto_hooks.py relies on.

Each fails with a message naming the hook, so a moto upgrade that breaks the emulator says
where, instead of surfacing as a wrong replication or stream result somewhere else. The
tests drive moto directly in a separate account, so they do not touch the emulator's tables.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import moto
import pytest
from moto.core.model_instances import reset_model_data
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models import table as moto_table
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import StreamRecord, StreamShard, Table

from monitor.emulator import EmulatorServer, moto_hooks

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "000000000042"  # not the emulator's account: these tests never touch its tables
REGION = "eu-west-1"


class Recorder:
    """Stands in for the capture shard and records every (old, new) moto hands it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Item | None, Item | None]] = []

    def add(self, old: Item | None, new: Item | None) -> None:
        self.calls.append((old, new))

    def images(self) -> list[tuple[Any, Any]]:
        return [(moto_hooks.item_image(o), moto_hooks.item_image(n)) for o, n in self.calls]


@pytest.fixture
def backend(emulator_server: EmulatorServer) -> Iterator[Any]:
    """moto's DynamoDB backend for a private account, with the emulator's hooks installed."""
    backend = dynamodb_backends[ACCOUNT][REGION]
    backend.reset()
    yield backend
    backend.reset()


def _table(backend: Any, name: str = "T", streams: bool = True, gsi: bool = False) -> Table:
    extra: dict[str, Any] = {}
    attrs = [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
    ]
    if gsi:
        attrs.append({"AttributeName": "g", "AttributeType": "S"})
        extra["global_indexes"] = [
            {
                "IndexName": "G",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ]
    return backend.create_table(
        name,
        schema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        throughput=None,
        attr=attrs,
        global_indexes=extra.get("global_indexes", []),
        indexes=[],
        streams={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
        if streams
        else None,
        billing_mode="PAY_PER_REQUEST",
        sse_specification=None,
        tags=[],
        deletion_protection_enabled=False,
        warm_throughput=None,
    )


def _recording(table: Table) -> Recorder:
    recorder = Recorder()
    table.stream_shard = recorder  # type: ignore[assignment]
    return recorder


def _item(pk: str, sk: str = "s", **attrs: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}, **{k: {"S": v} for k, v in attrs.items()}}


def test_moto_version_is_the_pinned_one() -> None:
    pin = re.search(r'"moto\[server\]==([^"]+)"', (REPO / "pyproject.toml").read_text())
    assert pin, "pyproject.toml must pin moto[server]==X (the hooks are written for one version)"
    assert moto.__version__ == moto_hooks.MOTO_VERSION == pin.group(1), (
        f"moto {moto.__version__} is installed; the hooks were written for "
        f"{moto_hooks.MOTO_VERSION} and pyproject pins {pin.group(1)}: re-run these tests "
        "and update moto_hooks.py before moving the pin"
    )


def test_install_replaces_stream_shard_in_the_table_module(backend: Any) -> None:
    assert moto_table.StreamShard is moto_hooks.CaptureShard, (
        "moto.dynamodb.models.table.StreamShard is no longer the emulator's CaptureShard"
    )
    assert issubclass(moto_hooks.CaptureShard, StreamShard)
    parameters = list(inspect.signature(StreamShard.__init__).parameters)
    assert parameters == ["self", "account_id", "table"], (
        f"StreamShard.__init__ now takes {parameters}; CaptureShard passes (account_id, table)"
    )
    table = _table(backend)
    assert isinstance(table.stream_shard, moto_hooks.CaptureShard), (
        "Table.set_stream_specification no longer builds its shard from the module-level "
        "StreamShard name, so the capture point is bypassed"
    )


def test_set_stream_specification_sets_the_label_before_building_the_shard(backend: Any) -> None:
    seen: list[str | None] = []
    original = moto_hooks.CaptureShard.__init__

    def spy(self: Any, account_id: str, table: Table) -> None:
        seen.append(table.latest_stream_label)
        original(self, account_id, table)

    moto_hooks.CaptureShard.__init__ = spy  # type: ignore[method-assign]
    try:
        table = _table(backend)
    finally:
        moto_hooks.CaptureShard.__init__ = original  # type: ignore[method-assign]
    assert seen and seen[0], "moto builds the stream shard before setting latest_stream_label"
    assert seen[-1] == table.latest_stream_label
    assert table.describe()["TableDescription"]["LatestStreamArn"] == (
        f"{table.table_arn}/stream/{table.latest_stream_label}"
    ), "the stream ARN moto reports is not table ARN + /stream/ + label"


def test_table_put_item_calls_stream_shard_add_with_old_and_new(backend: Any) -> None:
    table = _table(backend)
    recorder = _recording(table)
    table.put_item(_item("a", v="1"))
    table.put_item(_item("a", v="2"), overwrite=True)
    assert recorder.images() == [
        (None, _item("a", v="1")),
        (_item("a", v="1"), _item("a", v="2")),
    ], "Table.put_item no longer reports (current, new) to stream_shard.add"


def test_table_delete_item_calls_stream_shard_add_with_old_and_none(backend: Any) -> None:
    table = _table(backend)
    table.put_item(_item("a"))
    recorder = _recording(table)
    assert table.delete_item(DynamoType({"S": "a"}), DynamoType({"S": "s"})) is not None
    assert table.delete_item(DynamoType({"S": "absent"}), DynamoType({"S": "s"})) is None
    assert recorder.images() == [(_item("a"), None)], (
        "Table.delete_item(hash, range) no longer reports (item, None) once, and only for a "
        "present item"
    )


def test_backend_update_item_reports_a_private_copy_of_the_old_item(backend: Any) -> None:
    table = _table(backend)
    table.put_item(_item("a", v="1"))
    recorder = _recording(table)
    backend.update_item(
        "T", {"pk": {"S": "a"}, "sk": {"S": "s"}}, "SET v = :v", {}, {":v": {"S": "2"}}
    )
    assert recorder.images()[-1] == (_item("a", v="1"), _item("a", v="2")), (
        "the backend's update_item no longer reports (copy of the original, updated item)"
    )
    old, new = recorder.calls[-1]
    assert old is not new


def test_update_item_on_a_new_item_goes_through_put_item_then_add(backend: Any) -> None:
    """The emulator nets these two calls into one INSERT (globaltables.commit_request)."""
    table = _table(backend)
    recorder = _recording(table)
    backend.update_item(
        "T", {"pk": {"S": "n"}, "sk": {"S": "s"}}, "SET v = :v", {}, {":v": {"S": "1"}}
    )
    images = recorder.images()
    assert images[0][0] is None and images[-1] == (None, _item("n", v="1")), images


def test_backend_put_and_delete_item_used_by_batch_write_reach_the_table(backend: Any) -> None:
    from moto.dynamodb.responses import DynamoHandler

    source = inspect.getsource(DynamoHandler.batch_write_item)
    assert "dynamodb_backend.put_item(" in source and "dynamodb_backend.delete_item(" in source, (
        "BatchWriteItem no longer goes through the backend's put_item/delete_item"
    )
    table = _table(backend)
    recorder = _recording(table)
    backend.put_item("T", _item("b"))
    backend.delete_item("T", {"pk": {"S": "b"}, "sk": {"S": "s"}})
    assert recorder.images() == [(None, _item("b")), (_item("b"), None)]


def test_transact_write_items_deep_copies_tables_and_keeps_the_capture_shard(backend: Any) -> None:
    table = _table(backend)
    shard = table.stream_shard
    assert copy.deepcopy(shard) is shard, "CaptureShard must survive moto's deepcopy unchanged"
    with pytest.raises(Exception, match=r"ConditionalCheckFailed|Transaction cancelled"):
        backend.transact_write_items(
            [
                {"Put": {"TableName": "T", "Item": _item("t1")}},
                {
                    "Put": {
                        "TableName": "T",
                        "Item": _item("t2"),
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
            ]
        )
    restored = backend.tables["T"]
    assert restored is not table, "moto no longer restores a deep copy of the table on failure"
    assert restored.stream_shard is shard, (
        "after a failed transaction the restored table lost the capture shard"
    )
    assert restored.get_item(DynamoType({"S": "t1"}), DynamoType({"S": "s"})) is None


def test_backends_are_per_account_and_region_with_a_tables_dict(backend: Any) -> None:
    assert moto_hooks.ACCOUNT_ID == "123456789012"
    for region in ("us-east-1", "eu-west-1", "ap-southeast-1"):
        assert isinstance(dynamodb_backends[moto_hooks.ACCOUNT_ID][region].tables, dict)
    table = _table(backend)
    assert backend.tables["T"] is table
    backend.reset()
    assert backend.tables == {}, "the backend's reset() no longer drops the tables"


def test_create_replica_table_arguments_match_create_table(backend: Any) -> None:
    wanted = {
        "schema",
        "throughput",
        "attr",
        "global_indexes",
        "indexes",
        "streams",
        "billing_mode",
        "sse_specification",
        "tags",
        "deletion_protection_enabled",
        "warm_throughput",
    }
    accepted = set(inspect.signature(type(backend).create_table).parameters)
    assert wanted <= accepted, f"create_table no longer accepts {sorted(wanted - accepted)}"
    description = _table(backend, gsi=True).describe()["TableDescription"]
    for field in ("KeySchema", "AttributeDefinitions", "GlobalSecondaryIndexes"):
        assert field in description, f"Table.describe() no longer reports {field}"
    assert {"IndexName", "KeySchema", "Projection"} <= set(description["GlobalSecondaryIndexes"][0])


def test_create_replica_table_builds_a_twin_in_another_region(emu: EmulatorServer) -> None:
    backends = dynamodb_backends[moto_hooks.ACCOUNT_ID]
    source = _table(backends["us-east-1"], "Twin", gsi=True)
    replica = moto_hooks.create_replica_table(source, "ap-southeast-1")
    assert moto_hooks.find_table("ap-southeast-1", "Twin") is replica
    a, b = source.describe()["TableDescription"], replica.describe()["TableDescription"]
    for field in ("KeySchema", "AttributeDefinitions", "BillingModeSummary"):
        assert a.get(field) == b.get(field), f"the replica's {field} differs"
    assert [g["IndexName"] for g in b["GlobalSecondaryIndexes"]] == ["G"]
    assert b["StreamSpecification"] == {
        "StreamEnabled": True,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    moto_hooks.delete_table("ap-southeast-1", "Twin")
    assert moto_hooks.find_table("ap-southeast-1", "Twin") is None


def test_enable_streams_switches_on_new_and_old_images(backend: Any) -> None:
    table = _table(backend, streams=False)
    assert table.stream_shard is None
    moto_hooks.enable_streams(table)
    assert isinstance(table.stream_shard, moto_hooks.CaptureShard)
    assert table.stream_specification == {
        "StreamEnabled": True,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    shard = table.stream_shard
    moto_hooks.enable_streams(table)  # already on: no new stream
    assert table.stream_shard is shard


def test_the_stream_specification_is_set_before_the_shard_is_built(backend: Any) -> None:
    # The capture shard reads the view type from the table when moto builds it.
    seen: list[Any] = []
    original = moto_hooks.CaptureShard.__init__

    def spy(self: Any, account_id: str, table: Table) -> None:
        seen.append(dict(table.stream_specification or {}))
        original(self, account_id, table)

    moto_hooks.CaptureShard.__init__ = spy  # type: ignore[method-assign]
    try:
        table = _table(backend, streams=False)
        table.set_stream_specification({"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"})
    finally:
        moto_hooks.CaptureShard.__init__ = original  # type: ignore[method-assign]
    assert seen == [{"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"}], (
        "Table.set_stream_specification no longer stores the specification before it builds "
        "the stream shard: the emulator's streams would lose their view type"
    )


def test_items_and_stream_records_are_never_tracked_before_or_after_a_reset(
    emulator_server: EmulatorServer,
) -> None:
    # moto's BaseModel keeps every instance for its dashboard until a reset: with the
    # emulator's hooks, the per-write models (Item, StreamRecord) keep none, so a long run
    # does not grow with every write; tables are still tracked, as BaseModel does.
    tables_before = len(Table.instances_tracked)
    table = _table(dynamodb_backends[moto_hooks.ACCOUNT_ID][REGION])
    assert len(Table.instances_tracked) > tables_before, (
        "moto's BaseModel no longer tracks instances: the untracking hook can go")
    for n in range(200):
        table.put_item(_item(f"a{n % 3}"))
    assert len(Item.instances_tracked) == 0 and len(StreamRecord.instances_tracked) == 0
    reset_model_data()  # moto's own: every class gets a fresh list that tracks again
    moto_hooks.reset_moto()
    assert moto_hooks.find_table(REGION, "T") is None
    table = _table(dynamodb_backends[moto_hooks.ACCOUNT_ID][REGION])
    table.put_item(_item("b"))
    assert len(Item.instances_tracked) == 0, "a reset gave Item a tracking list again"


def test_item_images_keys_and_reads(backend: Any) -> None:
    table = _table(backend)
    _recording(table)
    assert moto_hooks.table_key_schema(table) == ("pk", "sk")
    image = _item("a", v="1")
    moto_hooks.apply_image(table, {"pk": image["pk"], "sk": image["sk"]}, image)
    assert moto_hooks.key_of(table, image) == {"pk": {"S": "a"}, "sk": {"S": "s"}}
    assert moto_hooks.read_image(table, {"pk": {"S": "a"}, "sk": {"S": "s"}}) == image
    assert moto_hooks.all_items(table) == [image]
    read = moto_hooks.read_image(table, {"pk": {"S": "a"}, "sk": {"S": "s"}})
    assert read is not None
    read["v"] = {"S": "mutated"}  # images are private copies
    assert moto_hooks.read_image(table, {"pk": {"S": "a"}, "sk": {"S": "s"}}) == image
    moto_hooks.apply_image(table, {"pk": image["pk"], "sk": image["sk"]}, None)
    assert moto_hooks.all_items(table) == []


def test_backend_app_serves_dynamodb_over_wsgi(emu: EmulatorServer) -> None:
    app = moto_hooks.create_backend_app()
    assert callable(app)
    status: list[str] = []
    import io

    body = b'{"TableName": "nope"}'
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "HTTP_HOST": "localhost",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/x-amz-json-1.0",
        "HTTP_X_AMZ_TARGET": "DynamoDB_20120810.DescribeTable",
        "HTTP_AUTHORIZATION": (
            "AWS4-HMAC-SHA256 Credential=x/20240101/us-east-1/dynamodb/aws4_request"
        ),
    }
    payload = b"".join(app(environ, lambda line, headers, exc=None: status.append(line)))
    assert status[0].startswith("400"), f"moto's DynamoDB WSGI app answered {status}"
    assert b"ResourceNotFoundException" in payload
