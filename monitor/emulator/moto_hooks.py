"""Every place the emulator reaches into moto's internals, and nowhere else.

moto serves DynamoDB per region but has no global tables and its streams differ
from AWS. The emulator therefore needs four things from moto that are not part
of its public API: (1) a capture point for every applied write, old and new
image (moto funnels PutItem, UpdateItem, DeleteItem, BatchWriteItem and
TransactWriteItems through ``Table.stream_shard.add``), (2) the per-region
backends, to create replica tables, (3) writing a replicated image into a
table, and (4) turning items into DynamoDB-JSON images. moto is pinned to the
version these hooks were written against (pyproject.toml), and
tests/emulator/test_moto_hooks.py fails loudly when moto changes under them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import moto
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.model_instances import reset_model_data
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models import table as moto_table
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import StreamRecord, StreamShard, Table

__all__ = [
    "ACCOUNT_ID",
    "MOTO_VERSION",
    "CaptureFn",
    "StreamOpenedFn",
    "all_items",
    "apply_image",
    "create_backend_app",
    "create_replica_table",
    "delete_table",
    "enable_streams",
    "find_table",
    "install",
    "item_image",
    "key_of",
    "read_image",
    "reset_moto",
    "table_key_schema",
]

MOTO_VERSION = "5.2.1"
ACCOUNT_ID = DEFAULT_ACCOUNT_ID

# (region, table name, old image, new image); images are DynamoDB-JSON dicts.
CaptureFn = Callable[[str, str, dict[str, Any] | None, dict[str, Any] | None], None]
# (region, table name, stream ARN, stream label, key schema, stream view type)
StreamOpenedFn = Callable[[str, str, str, str, list[dict[str, str]], str], None]

_capture: CaptureFn | None = None
_stream_opened: StreamOpenedFn | None = None


def _copy_json(value: Any) -> Any:
    """Copy DynamoDB JSON (dicts, lists, scalars); several times cheaper than deepcopy."""
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    return value


def item_image(item: Item | None) -> dict[str, Any] | None:
    """A private copy of an item as DynamoDB JSON (moto mutates items in place later)."""
    if item is None:
        return None
    return _copy_json(item.to_json()["Attributes"])


class CaptureShard(StreamShard):
    """Stands in for moto's StreamShard: forwards each applied write to the emulator.

    moto keeps its own stream records here; the emulator keeps AWS-faithful ones
    itself, so this object stores nothing.
    """

    def __init__(self, account_id: str, table: Table) -> None:
        super().__init__(account_id, table)
        self.region = table.region_name
        self.table_name = table.name
        # moto sets latest_stream_label and stream_specification just before creating the shard.
        label = table.latest_stream_label or ""
        view_type = (table.stream_specification or {}).get("StreamViewType") or "NEW_AND_OLD_IMAGES"
        if _stream_opened is not None:
            _stream_opened(
                self.region,
                self.table_name,
                f"{table.table_arn}/stream/{label}",
                label,
                table.schema,
                str(view_type),
            )

    def add(self, old: Item | None, new: Item | None) -> None:
        if _capture is not None:
            _capture(self.region, self.table_name, item_image(old), item_image(new))

    def __deepcopy__(self, memo: dict[int, Any]) -> CaptureShard:
        # TransactWriteItems deep-copies tables to roll back; the capture point
        # holds no state, so the copy can share it.
        return self


class _Untracked(list[Any]):
    """A model class's `instances_tracked` that keeps nothing.

    moto's BaseModel appends every instance it makes to its class's list, for the dashboard
    of /moto-api/data.json, until a reset: every Item ever written (about 1.1 KB each: 3000
    overwrites of one key held 3000 Items, 3.3 MB). An emulator left running for days, as the
    sandbox is, must not grow with every write, so the per-write models keep none; tables
    and indexes are still tracked (and listed by data.json)."""

    def append(self, _instance: Any) -> None:
        pass


_PER_WRITE_MODELS: tuple[type, ...] = (Item, StreamRecord)


def _untrack_per_write_models() -> None:
    for model in _PER_WRITE_MODELS:
        model.instances_tracked = _Untracked()  # type: ignore[attr-defined]


def install(capture: CaptureFn, stream_opened: StreamOpenedFn) -> None:
    """Route every applied write of every stream-enabled table to `capture`."""
    global _capture, _stream_opened
    if moto.__version__ != MOTO_VERSION:
        raise RuntimeError(
            f"gtmon's emulator hooks were written for moto {MOTO_VERSION}, found {moto.__version__}"
        )
    _capture = capture
    _stream_opened = stream_opened
    moto_table.StreamShard = CaptureShard  # type: ignore[misc]
    _untrack_per_write_models()


def reset_moto() -> None:
    """Drop every table in every region (moto's state is process-global), and moto's record of
    every model instance it made (BaseModel tracks each one, every Item written included, for
    its dashboard's /moto-api/data.json until a reset), as moto's own reset does."""
    dynamodb_backends[ACCOUNT_ID].reset()
    reset_model_data()
    _untrack_per_write_models()  # reset_model_data gives every class a fresh, tracking list


def create_backend_app(service: str = "dynamodb") -> Any:
    """moto's WSGI app for one service: the DynamoDB API, or `moto_api` (its management API)."""
    from moto.moto_server.werkzeug_app import create_backend_app as _create

    return _create(service)  # type: ignore[arg-type]


def find_table(region: str, name: str) -> Table | None:
    return dynamodb_backends[ACCOUNT_ID][region].tables.get(name)


def table_key_schema(table: Table) -> tuple[str, str | None]:
    return table.hash_key_attr, table.range_key_attr


def key_of(table: Table, image: dict[str, Any]) -> dict[str, Any]:
    """The key attributes of an image."""
    hash_attr, range_attr = table_key_schema(table)
    key = {hash_attr: image[hash_attr]}
    if range_attr is not None:
        key[range_attr] = image[range_attr]
    return key


def _key_values(table: Table, key: dict[str, Any]) -> tuple[DynamoType, DynamoType | None]:
    hash_attr, range_attr = table_key_schema(table)
    range_value = DynamoType(key[range_attr]) if range_attr is not None else None
    return DynamoType(key[hash_attr]), range_value


def read_image(table: Table, key: dict[str, Any]) -> dict[str, Any] | None:
    hash_value, range_value = _key_values(table, key)
    return item_image(table.get_item(hash_value, range_value))


def apply_image(table: Table, key: dict[str, Any], image: dict[str, Any] | None) -> None:
    """Make `image` (None: absent) the item at `key`; moto then calls the capture point."""
    if image is None:
        hash_value, range_value = _key_values(table, key)
        table.delete_item(hash_value, range_value)
    else:
        table.put_item(_copy_json(image), overwrite=True)


def enable_streams(table: Table) -> None:
    """Switch on NEW_AND_OLD_IMAGES streams, as global tables require."""
    spec = table.stream_specification or {}
    if spec.get("StreamEnabled") and spec.get("StreamViewType") == "NEW_AND_OLD_IMAGES":
        return
    table.set_stream_specification({"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})


def _index_spec(index: dict[str, Any], provisioned: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {k: index[k] for k in ("IndexName", "KeySchema", "Projection") if k in index}
    if provisioned and "ProvisionedThroughput" in index:
        spec["ProvisionedThroughput"] = {
            k: index["ProvisionedThroughput"][k] for k in ("ReadCapacityUnits", "WriteCapacityUnits")
        }
    return spec


def create_replica_table(source: Table, region: str) -> Table:
    """Create `source`'s twin in `region`: same keys, indexes and billing, streams on."""
    description = source.describe()["TableDescription"]
    provisioned = source.billing_mode == "PROVISIONED"
    throughput = (
        {k: source.throughput[k] for k in ("ReadCapacityUnits", "WriteCapacityUnits")}
        if provisioned
        else None
    )
    backend = dynamodb_backends[ACCOUNT_ID][region]
    return backend.create_table(
        source.name,
        schema=description["KeySchema"],
        throughput=throughput,
        attr=description["AttributeDefinitions"],
        global_indexes=[_index_spec(i, provisioned) for i in description.get("GlobalSecondaryIndexes", [])],
        indexes=[_index_spec(i, False) for i in description.get("LocalSecondaryIndexes", [])],
        streams={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        billing_mode=cast(str, source.billing_mode),  # moto keeps whatever the source had
        sse_specification=None,
        tags=[],
        deletion_protection_enabled=False,
        warm_throughput=None,
    )


def delete_table(region: str, name: str) -> None:
    dynamodb_backends[ACCOUNT_ID][region].tables.pop(name, None)


def all_items(table: Table) -> list[dict[str, Any]]:
    """Every item of a table as DynamoDB JSON (to seed a new replica)."""
    images = []
    for item in table.all_items():
        image = item_image(item)
        if image is not None:
            images.append(image)
    return images
