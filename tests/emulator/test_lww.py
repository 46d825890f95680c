"""Last-writer-wins details: tombstones, deterministic ties, per-link order under jitter."""

from __future__ import annotations

from typing import Any

import pytest
from emu_helpers import REGIONS, edges, get, make_global, order_item, read_stream, settle

from monitor.emulator import DelaySpec, EmulatorServer
from monitor.emulator.control import ControlClient


def test_delete_tombstone_stops_an_older_put_resurrecting_the_item(
    emu: EmulatorServer, client: Any
) -> None:
    ddb = make_global(client)
    ddb["us-east-1"].put_item(TableName="Orders", Item=order_item("O-1", Status="v0"))
    settle(emu)
    control = ControlClient(emu.url)
    control.fault("pause")
    ddb["eu-west-1"].put_item(TableName="Orders", Item=order_item("O-1", Status="older"))
    ddb["us-east-1"].delete_item(TableName="Orders", Key=order_item("O-1"))  # newer
    control.fault("resume", **{"from": "eu-west-1"})  # the older put reaches us-east-1 first
    settle(emu)
    control.fault("resume")
    settle(emu)

    for region, table in ddb.items():
        assert get(table, "Orders", order_item("O-1")) is None, region
    put, delete = emu.emulator.truth.writes("Orders")[1:]
    assert put.image is not None and delete.image is None
    assert delete.order > put.order
    assert "us-east-1" in put.discarded  # hit the tombstone: no resurrection
    east = edges(read_stream(client, "us-east-1", "Orders"))
    assert [e for e, _, _ in east] == ["INSERT", "REMOVE"]


def test_a_newer_put_after_a_delete_does_bring_the_item_back(
    emu: EmulatorServer, client: Any
) -> None:
    ddb = make_global(client)
    ddb["us-east-1"].put_item(TableName="Orders", Item=order_item("O-1", Status="v0"))
    settle(emu)
    ddb["us-east-1"].delete_item(TableName="Orders", Key=order_item("O-1"))
    settle(emu)
    ddb["eu-west-1"].put_item(TableName="Orders", Item=order_item("O-1", Status="again"))
    settle(emu)
    for region, table in ddb.items():
        assert get(table, "Orders", order_item("O-1")) == order_item("O-1", Status="again"), region


@pytest.mark.parametrize("first", ["us-east-1", "eu-west-1"])
def test_equal_timestamps_are_broken_by_origin_region_whatever_the_arrival_order(
    emu: EmulatorServer, client: Any, monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    ddb = make_global(client)
    tables = emu.emulator.tables
    fixed = tables._next_ts(0) + 10**12  # every write in this test gets the same timestamp
    monkeypatch.setattr(tables, "_next_ts", lambda floor: max(floor + 1, fixed))
    control = ControlClient(emu.url)
    control.fault("pause")
    second = "eu-west-1" if first == "us-east-1" else "us-east-1"
    for region in (first, second):
        ddb[region].put_item(TableName="Orders", Item=order_item("O-1", Status=f"from {region}"))
    control.fault("resume", **{"from": first})
    settle(emu)
    control.fault("resume")
    settle(emu)

    writes = {w.origin: w for w in emu.emulator.truth.writes("Orders")}
    assert writes["us-east-1"].ts == writes["eu-west-1"].ts
    # Ties go to the greater (origin) in (ts, origin): us-east-1 > eu-west-1, in every region.
    for region, table in ddb.items():
        assert get(table, "Orders", order_item("O-1")) == order_item(
            "O-1", Status="from us-east-1"
        ), region
    assert set(writes["eu-west-1"].discarded) == {"us-east-1"} | (
        {"ap-southeast-1"} if first == "us-east-1" else set()
    )
    lost = [(a.origin, b.origin) for a, b in emu.emulator.truth.lost_writes("Orders")]
    assert lost == [("eu-west-1", "us-east-1")]


def test_per_link_order_is_kept_under_jitter(emu: EmulatorServer, client: Any) -> None:
    ddb = make_global(client)
    with emu.emulator.lock:
        emu.emulator.tables.set_delay(
            "us-east-1", "eu-west-1", DelaySpec(ms=1.0, jitter_ms=150.0, kind="uniform")
        )
        emu.emulator.tables.set_delay(
            "us-east-1", "ap-southeast-1", DelaySpec(ms=1.0, jitter_ms=100.0, kind="lognormal")
        )
    east = ddb["us-east-1"]
    for i in range(25):
        east.put_item(TableName="Orders", Item=order_item("O-hot", Status=str(i)))
        east.put_item(TableName="Orders", Item=order_item(f"O-{i}"))
    settle(emu)

    writes = emu.emulator.truth.writes("Orders")
    for region in ("eu-west-1", "ap-southeast-1"):
        applied = [w.applied[region] for w in writes]
        assert applied == sorted(applied), f"{region} applied writes out of origin order"
        assert not any(w.discarded for w in writes), "an in-order link never discards"
        local = [e[1:] for e in edges(read_stream(client, "us-east-1", "Orders"))]
        remote = [e[1:] for e in edges(read_stream(client, region, "Orders"))]
        assert remote == local, region
    assert all(len(w.applied) == len(REGIONS) for w in writes)
