"""Property tests: random interleavings of puts, updates and deletes across three regions,
with random link delays, sequential and concurrent.

After quiet, every region must hold the newest version of every key (greatest (ts, origin)
by the ground truth), and each region's stream must be exactly the sequence of changes
applied there: old -> new image, in order, no record for a no-op or a discarded write.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

from emu_helpers import REGIONS, create_table, read_stream, settle
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from monitor.emulator import DelaySpec, EmulatorServer
from monitor.emulator.globaltables import key_id

LINKS = [(a, b) for a in REGIONS for b in REGIONS if a != b]
KEYS = ["k0", "k1", "k2"]

delays = st.builds(
    DelaySpec,
    ms=st.integers(0, 120).map(float),
    jitter_ms=st.integers(0, 80).map(float),
    kind=st.sampled_from(["fixed", "uniform", "lognormal"]),
)
operations = st.tuples(
    st.sampled_from(REGIONS),
    st.sampled_from(["put", "update", "add", "delete"]),
    st.sampled_from(KEYS),
    st.integers(0, 2),  # few values, so identical images (no-op writes) happen
    st.sampled_from([0, 0, 0, 5, 30, 80]),  # ms to wait after the operation
)
scenario = {
    "link_delays": st.lists(delays, min_size=len(LINKS), max_size=len(LINKS)),
    "ops": st.lists(operations, min_size=1, max_size=20),
}
# No shrinking: every example is real HTTP traffic with real delays (~0.4 s), and shrinking a
# failure would take minutes; the failing example is printed as generated.
PROPERTY_SETTINGS = settings(
    max_examples=18,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _start(emu: EmulatorServer, client: Any, link_delays: list[DelaySpec]) -> dict[str, Any]:
    emu.emulator.reset()
    ddb = {region: client(region) for region in REGIONS}
    create_table(ddb["us-east-1"], "Items", range_key=False)
    ddb["us-east-1"].update_table(
        TableName="Items", ReplicaUpdates=[{"Create": {"RegionName": r}} for r in REGIONS[1:]]
    )
    with emu.emulator.lock:
        for (source, target), spec in zip(LINKS, link_delays, strict=True):
            emu.emulator.tables.set_delay(source, target, spec)
    return ddb


def _apply(ddb: Any, op: tuple[str, str, str, int, int]) -> None:
    region, kind, key, value, pause_ms = op
    table = ddb[region]
    item_key = {"OrderID": {"S": key}}
    if kind == "put":
        table.put_item(TableName="Items", Item={**item_key, "v": {"N": str(value)}})
    elif kind == "update":
        table.update_item(
            TableName="Items",
            Key=item_key,
            UpdateExpression="SET v = :v",
            ExpressionAttributeValues={":v": {"N": str(value)}},
        )
    elif kind == "add":  # not idempotent, and creates the item when absent
        table.update_item(
            TableName="Items",
            Key=item_key,
            UpdateExpression="ADD n :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
        )
    else:
        table.delete_item(TableName="Items", Key=item_key)
    if pause_ms:
        time.sleep(pause_ms / 1000)


def _check(emu: EmulatorServer, client: Any, ddb: dict[str, Any]) -> None:
    settle(emu)
    writes = emu.emulator.truth.writes("Items")
    for write in writes:  # every region either applied or discarded every write, once
        assert set(write.applied) | set(write.discarded) == set(REGIONS), write
        assert not set(write.applied) & set(write.discarded), write

    by_key: dict[str, list[Any]] = defaultdict(list)
    for write in writes:
        by_key[write.key_id].append(write)

    # Convergence: the newest version (greatest (ts, origin)) of every key, everywhere.
    for key in KEYS:
        kid = key_id({"OrderID": {"S": key}})
        newest = max(by_key[kid], key=lambda w: w.order) if by_key[kid] else None
        expected = newest.image if newest is not None else None
        for region, table in ddb.items():
            got = table.get_item(
                TableName="Items", Key={"OrderID": {"S": key}}, ConsistentRead=True
            ).get("Item")
            assert got == expected, f"{region} holds {got} for {key}, newest is {expected}"

    # Streams: per region, exactly the applied changes, in order.
    for region in REGIONS:
        expected_edges: dict[str, list[tuple[Any, Any, Any]]] = {}
        for kid, key_writes in by_key.items():
            applied = sorted((w for w in key_writes if region in w.applied), key=lambda w: w.order)
            edges, image = [], None
            for write in applied:
                if write.image != image:  # a write that changes nothing leaves no record
                    edges.append((image, write.image, write))
                    image = write.image
            expected_edges[kid] = edges
        records = read_stream(client, region, "Items")
        assert {r["awsRegion"] for r in records} <= {region}
        seen: dict[str, int] = defaultdict(int)
        apply_times = []
        for record in records:
            data = record["dynamodb"]
            kid = key_id(data["Keys"])
            index = seen[kid]
            seen[kid] += 1
            assert index < len(expected_edges[kid]), f"{region}: an extra record {record}"
            old, new, write = expected_edges[kid][index]
            assert (data.get("OldImage"), data.get("NewImage")) == (old, new), region
            assert record["eventName"] == (
                "INSERT" if old is None else "REMOVE" if new is None else "MODIFY"
            )
            apply_times.append(write.applied[region])
        assert all(seen[kid] == len(e) for kid, e in expected_edges.items()), (
            f"{region}: records missing from the stream"
        )
        assert apply_times == sorted(apply_times), f"{region}: stream out of apply order"


@PROPERTY_SETTINGS
@given(**scenario)
def test_sequential_writes_converge_to_newest_and_streams_match_applied_changes(
    emu: EmulatorServer, client: Any, link_delays: list[DelaySpec], ops: list[Any]
) -> None:
    ddb = _start(emu, client, link_delays)
    for op in ops:
        _apply(ddb, op)
    _check(emu, client, ddb)


@PROPERTY_SETTINGS
@given(**scenario, threads=st.integers(2, 4))
def test_concurrent_writes_converge_to_newest_and_streams_match_applied_changes(
    emu: EmulatorServer, client: Any, link_delays: list[DelaySpec], ops: list[Any], threads: int
) -> None:
    ddb = _start(emu, client, link_delays)
    lanes = [ops[i::threads] for i in range(threads)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    # A client per thread, built here: creating boto3 clients is not thread-safe.
    clients = [{region: client(region) for region in REGIONS} for _ in lanes]

    def run(lane: list[Any], own: dict[str, Any]) -> None:
        barrier.wait()
        try:
            for op in lane:
                _apply(own, op)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    workers = [
        threading.Thread(target=run, args=(lane, own))
        for lane, own in zip(lanes, clients, strict=True)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not errors, errors
    _check(emu, client, ddb)
