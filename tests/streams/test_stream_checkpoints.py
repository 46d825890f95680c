"""Checkpoint stores and the reported-verdict fingerprints that stop double reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from streams_helpers import wait_sync

from monitor.aws import AwsClients
from monitor.streams.checkpoints import (
    CheckpointError,
    CheckpointState,
    DynamoDBCheckpointStore,
    JsonFileCheckpointStore,
    ReportedConflicts,
    ShardPosition,
    open_checkpoint_store,
)


def sample_state() -> CheckpointState:
    return CheckpointState(
        positions={
            ("Orders", "us-east-1", "shardId-1"): ShardPosition("100", "105", False),
            ("Orders", "eu-west-1", "shardId-2"): ShardPosition(None, None, True),
            ("Orders", "eu-west-1", "shardId-3"): ShardPosition(None, "7", False),
        },
        reported={"ab12": [1000.0, 1005.5], "cd34": [999.25]},
        # Writes at risk ride along as the JSON their snapshot makes (streams/risk.py).
        pending={"tables": {"Orders": {"writes": [{"id": 3, "open": ["eu-west-1"]}]}},
                 "incidents": []},
        judged={("Orders", "us-east-1"): ["106", "107"]},
    )


async def test_json_file_round_trip_and_atomic_replace(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "checkpoints.json"
    store = JsonFileCheckpointStore(path)
    assert await store.load() == CheckpointState()  # no file yet: start from scratch
    await store.save(sample_state())
    assert await JsonFileCheckpointStore(path).load() == sample_state()
    await store.save(CheckpointState())
    assert await store.load() == CheckpointState()
    assert [p.name for p in path.parent.iterdir()] == ["checkpoints.json"], "temp file left over"


@pytest.mark.parametrize(
    "content", ["{not json", '{"version": 2}', '{"version": 1, "positions": [{}]}']
)
async def test_unusable_file_is_an_error_naming_the_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "cp.json"
    path.write_text(content)
    with pytest.raises(CheckpointError, match=r"cp\.json"):
        await JsonFileCheckpointStore(path).load()


async def test_dynamodb_store_round_trip(client: Any, aws: AwsClients) -> None:
    ddb = client("us-east-1")
    ddb.create_table(
        TableName="gtmon-checkpoints",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                   {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    wait_sync(lambda: ddb.describe_table(TableName="gtmon-checkpoints")["Table"]["TableStatus"]
              == "ACTIVE")
    store = open_checkpoint_store("dynamodb://gtmon-checkpoints?region=us-east-1", aws, "mon-a")
    assert isinstance(store, DynamoDBCheckpointStore)
    assert await store.load() == CheckpointState()
    await store.save(sample_state())
    assert await DynamoDBCheckpointStore(aws, "us-east-1", "gtmon-checkpoints", "mon-a").load() \
        == sample_state()
    # Another monitor instance has its own partition.
    assert await DynamoDBCheckpointStore(aws, "us-east-1", "gtmon-checkpoints", "mon-b").load() \
        == CheckpointState()
    smaller = sample_state()
    del smaller.positions[("Orders", "eu-west-1", "shardId-2")]
    smaller.reported.pop("cd34")
    smaller.pending = {}  # nothing pending any more: its item goes
    smaller.judged.clear()
    await store.save(smaller)
    assert await store.load() == smaller
    items = ddb.scan(TableName="gtmon-checkpoints")["Items"]
    assert len(items) == 3
    assert all("expires_at" in i for i in items if i["sk"]["S"].startswith("fp#"))


def test_store_selection_from_the_configured_path(tmp_path: Path) -> None:
    assert isinstance(open_checkpoint_store(str(tmp_path / "x.json"), None, "m"),
                      JsonFileCheckpointStore)
    with pytest.raises(CheckpointError, match="dynamodb://TABLE"):
        open_checkpoint_store("dynamodb://table-without-region", None, "m")


def test_fingerprints_suppress_exactly_what_was_reported_before_the_restart() -> None:
    before = ReportedConflicts()
    assert before.should_report("x", 10.0)
    assert before.should_report("x", 11.0)  # a second, identical conflict in one run counts
    assert before.should_report("y", 12.0)
    saved = json.loads(json.dumps(before.snapshot(20.0)))

    after = ReportedConflicts(saved)
    assert not after.should_report("x", 30.0)  # the replayed twins of the two reports
    assert not after.should_report("x", 30.0)
    assert after.should_report("x", 31.0)  # a genuinely new one is reported
    assert not after.should_report("y", 32.0)
    assert after.should_report("z", 33.0)
    assert after.suppressed == 3
    assert sorted(after.snapshot(40.0)) == ["x", "y", "z"]


def test_fingerprints_expire_and_stay_bounded() -> None:
    reported = ReportedConflicts(ttl=100.0, max_entries=3)
    for i in range(5):
        reported.should_report(f"f{i}", float(i))
    assert sorted(reported.snapshot(5.0)) == ["f2", "f3", "f4"]
    assert reported.snapshot(103.5) == {"f4": [4.0]}
    restarted = ReportedConflicts(reported.snapshot(103.5), ttl=100.0)
    assert restarted.should_report("f2", 104.0)  # expired: no longer suppressed
    assert not restarted.should_report("f4", 104.0)
