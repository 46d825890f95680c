"""The sandbox's demo traffic: most writes say where they were written (UpdatedIn), some
do not, so the sandbox shows gtmon attributing both kinds."""

from __future__ import annotations

from emu_helpers import settle

from monitor.emulator import EmulatorServer
from monitor.emulator.control import ControlClient
from monitor.emulator.traffic import ORDERS_TABLE, DemoTraffic, create_orders_table
from tests.helpers import REGIONS, wait_sync


def test_demo_traffic_leaves_updatedin_out_of_some_writes_and_every_third_staged_conflict(
    emu: EmulatorServer,
) -> None:
    create_orders_table(emu.url, REGIONS)
    traffic = DemoTraffic(emu.url, REGIONS, writes_per_second=20, conflict_every_seconds=0.1, seed=7)
    traffic.start()
    try:
        wait_sync(
            lambda: traffic.conflicts_staged >= 6 and traffic.unattributed_writes >= 4,
            timeout=30,
            what="six staged conflicts and some writes without UpdatedIn",
        )
    finally:
        traffic.stop()
    settle(emu)
    assert traffic.errors == 0
    assert traffic.unattributed_conflicts == traffic.conflicts_staged // 3

    writes = emu.emulator.truth.writes(ORDERS_TABLE)
    assert len(writes) == traffic.writes
    for write in writes:  # whole-item puts: an item never keeps an earlier writer's region
        assert write.image is not None
        assert write.image.get("UpdatedIn", {"S": write.origin}) == {"S": write.origin}
    staged = [w for w in writes if int(w.image["OrderID"]["S"].split("-")[1]) >= traffic.orders]
    ordinary = [w for w in writes if w not in staged]
    assert len(staged) == 2 * traffic.conflicts_staged
    pairs = [staged[i : i + 2] for i in range(0, len(staged), 2)]  # the conflict thread's two puts
    assert [{w.origin for w in pair} != {pair[0].origin} for pair in pairs] == [True] * len(pairs)
    carried = [["UpdatedIn" in w.image for w in pair] for pair in pairs]
    assert carried == [[k % 3 != 2] * 2 for k in range(len(pairs))]  # the 3rd, 6th, ... without
    without = [w for w in staged if "UpdatedIn" not in w.image]
    assert len(without) == 2 * traffic.unattributed_conflicts  # both sides of a staged conflict
    assert any("UpdatedIn" in w.image for w in ordinary)
    assert any("UpdatedIn" not in w.image for w in ordinary)
    assert traffic.unattributed_writes == len(without) + sum("UpdatedIn" not in w.image for w in ordinary)


def test_demo_writers_live_through_garbage_answers(emu: EmulatorServer) -> None:
    """`gtmon fault garbage` in the sandbox: botocore trips over the bodies (an
    AttributeError, not a ClientError), which used to end that region's writer thread."""
    create_orders_table(emu.url, REGIONS)
    control = ControlClient(emu.url)
    control.fault("garbage", region="eu-west-1", fraction=1.0)
    traffic = DemoTraffic(emu.url, ["eu-west-1"], writes_per_second=50, conflict_every_seconds=0,
                          seed=3)
    traffic.start()
    try:
        wait_sync(lambda: traffic.errors >= 6, timeout=20, what="six garbled answers")
        control.fault("garbage", region="eu-west-1", fraction=0)
        before = traffic.writes
        wait_sync(lambda: traffic.writes >= before + 5, timeout=20,
                  what="the writer writing again after the garbage")
    finally:
        traffic.stop()
