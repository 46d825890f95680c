"""ConflictWatcher end to end: the seed conflict through readers, detector and publishing."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry
from streams_helpers import REGIONS, make_global, put, read_through, wait_for

from monitor.aws import AwsClients
from monitor.clock import SystemClock
from monitor.config import AwsSettings, Config, parse_config
from monitor.conflicts import (
    UNKNOWN,
    Detector,
    DetectorSettings,
    Verdict,
    canonical_image,
    canonical_key,
)
from monitor.emulator import EmulatorServer
from monitor.emulator.control import ControlClient
from monitor.metrics import Metrics
from monitor.streams.reader import ReaderSettings, StreamRecord
from monitor.streams.watcher import ConflictWatcher

pytestmark = pytest.mark.timeout(90)

READER = ReaderSettings(
    poll_interval_min=0.05, poll_interval_max=0.2, describe_interval=0.5, retry_slow_seconds=0.3,
    backoff_base=0.05, backoff_cap=0.5, replay_seconds=0.0,
)


def config(tmp_path: Path, url: str, exact: bool = False, **streams: Any) -> Config:
    table: dict[str, Any] = {"name": "Orders"}
    if exact:  # a version counter and the writing region stored in the item
        table["conflicts"] = {"version_attribute": "Version", "writer_attribute": "Region"}
    return parse_config({
        "instance_id": "test",
        "regions": REGIONS,
        "aws": {"endpoint_url": url, "connect_timeout_seconds": 1, "read_timeout_seconds": 1,
                "max_attempts": 1},
        "streams": {"poll_interval_min_seconds": 0.05, "poll_interval_max_seconds": 0.2,
                    "settle_seconds": 1.0, "checkpoint_path": str(tmp_path / "cp.json"),
                    **streams},
        "tables": [table],
    })


class Run:
    """A watcher with its own registry and clients (a daemon process, as far as state goes)."""

    def __init__(self, cfg: Config, reader: ReaderSettings = READER) -> None:
        self.metrics = Metrics(CollectorRegistry(), "test")
        self.clients = AwsClients(cfg.aws, metrics=self.metrics)
        self.watcher = ConflictWatcher(
            cfg, self.clients, self.metrics, SystemClock(), reader_settings=reader,
            detector_interval=0.1, checkpoint_interval=0.5, rng=random.Random(3),
        )

    async def __aenter__(self) -> Run:
        await self.watcher.start()
        await wait_for(
            lambda: all(r.watermark() is not None for r in self.watcher.readers.values()),
            what="every region's reader to catch up",
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.watcher.stop()
        await self.clients.close()

    def conflicts(self, winner: str, loser: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "gtmon_lww_conflicts_total",
            {"table": "Orders", "winner_region": winner, "loser_region": loser},
        )
        return value or 0.0

    def total(self) -> float:
        return sum(
            s.value for m in self.metrics.registry.collect() if m.name == "gtmon_lww_conflicts"
            for s in m.samples if s.name == "gtmon_lww_conflicts_total"
        )

    async def settled(self) -> None:
        """Wait until the detector holds nothing more (everything judged)."""
        await wait_for(lambda: self.watcher.status()["tables"]["Orders"]["tracked_keys"] == 0,
                       what="the detector to judge every item")

    async def quiet(self, emu: EmulatorServer) -> None:
        """Every record written so far read in every region and judged: whatever has not been
        reported by now never will be (instead of sleeping and hoping)."""
        await read_through(self.watcher.readers.values(), emu)
        await self.settled()


async def seed_conflict(
    emu: EmulatorServer, tables: dict[str, Any], key: str, versioned: bool = False
) -> None:
    """OrderStatus Shipped in us-east-1, then Delivered in eu-west-1, while links are paused.

    As in the seed (10:01, then 10:02) the writes are further apart than a polling
    interval: inferred mode tells a conflict from a skip by where a write was seen
    first, which needs the writes to land in different polls.
    """
    ctl = ControlClient(emu.url)

    def write(region: str, status: str, version: int) -> None:
        item = {"OrderID": {"S": key}, "OrderStatus": {"S": status}}
        if versioned:
            item.update({"Version": {"N": str(version)}, "Region": {"S": region}})
        tables[region].put_item(TableName="Orders", Item=item)

    def run() -> None:
        write("us-east-1", "Placed", 1)
        assert emu.emulator.settle(10)
        ctl.fault("pause")
        write("us-east-1", "Shipped", 2)
        time.sleep(0.5)
        write("eu-west-1", "Delivered", 2)  # never saw Shipped: same version, a sibling
        time.sleep(0.5)
        ctl.fault("resume")
        assert emu.emulator.settle(10)

    await asyncio.to_thread(run)


@pytest.mark.parametrize("versioned", [False, True], ids=["inferred", "exact"])
async def test_seed_conflict_is_reported_once_with_winner_and_loser(
    emu: EmulatorServer, client: Any, tmp_path: Path, versioned: bool
) -> None:
    tables = make_global(client)
    cfg = config(tmp_path, emu.url, exact=versioned)
    with structlog.testing.capture_logs() as logs:
        async with Run(cfg) as run:
            await seed_conflict(emu, tables, "o-1001", versioned)
            await wait_for(lambda: run.total() >= 1, what="the conflict to be counted")
            await run.quiet(emu)  # a second report would have arrived by now
            status = run.watcher.status()
            assert run.conflicts("eu-west-1", "us-east-1") == 1
            assert run.total() == 1
            gauge = run.metrics.registry.get_sample_value(
                "gtmon_detector_tracked_keys", {"table": "Orders"})
            assert gauge == 0
    (event,) = [e for e in logs if e["event"] == "lww_conflict"]
    assert event["table"] == "Orders"
    assert event["key"] == {"OrderID": {"S": "o-1001"}}
    assert (event["winner_region"], event["loser_region"]) == ("eu-west-1", "us-east-1")
    assert event["certain"] is True
    assert event["mode"] == ("exact" if versioned else "inferred")
    assert "lost_image" not in event and "evidence" not in event, "images logged without opt-in"
    (recent,) = status["recent_conflicts"]
    assert recent["winner_region"] == "eu-west-1" and recent["loser_region"] == "us-east-1"
    for region in REGIONS:
        reader = status["tables"]["Orders"]["regions"][region]
        assert reader["state"] == "reading" and reader["last_error"] is None
        assert reader["shards"]["open"] == 1 and reader["records"] >= 2


async def test_sequential_writes_through_normal_lag_report_nothing(
    emu: EmulatorServer, client: Any, tmp_path: Path
) -> None:
    tables = make_global(client)
    async with Run(config(tmp_path, emu.url)) as run:
        def writes() -> None:
            for i, region in enumerate(REGIONS * 2):
                put(tables[region], "Orders", "o-2", OrderStatus=f"step-{i}")
                put(tables[region], "Orders", f"o-3-{i}", OrderStatus="New")
                assert emu.emulator.settle(10)  # normal lag: each write seen before the next

        await asyncio.to_thread(writes)
        await run.quiet(emu)
        assert run.total() == 0
        assert run.watcher.status()["recent_conflicts"] == []
        assert run.watcher.status()["tables"]["Orders"]["regions"]["us-east-1"]["records"] == 12


@pytest.mark.parametrize("listed_as_judged", [True, False])
async def test_restart_does_not_report_a_conflict_again(
    emu: EmulatorServer, client: Any, tmp_path: Path, listed_as_judged: bool
) -> None:
    """Re-read after a restart, the conflict's records are skipped when the checkpoint lists
    them as judged; when it does not (a crash after the verdict, before the next save), they
    are judged again and the saved fingerprint recognises the verdict."""
    tables = make_global(client)
    # Exact mode: replayed records carry no observation times (see checkpoints), so only
    # attributes make the re-judged verdict certain again, and it must be recognised.
    cfg = config(tmp_path, emu.url, exact=True)
    # A long replay window: the second run re-reads every record, the conflict's included.
    replaying = ReaderSettings(**{**READER.__dict__, "replay_seconds": 600.0})
    async with Run(cfg, replaying) as first:
        await seed_conflict(emu, tables, "o-1001", versioned=True)
        await wait_for(lambda: first.total() >= 1, what="the conflict in the first run")
        await first.settled()
    assert first.total() == 1
    saved = json.loads((tmp_path / "cp.json").read_text())
    assert saved["judged"]
    if not listed_as_judged:
        (tmp_path / "cp.json").write_text(json.dumps({**saved, "judged": []}))

    async with Run(cfg, replaying) as second:
        if listed_as_judged:
            await wait_for(
                lambda: second.watcher.status()["judged_records_skipped_after_restart"] >= 3,
                what="the conflict's records skipped when re-read",
            )
        else:
            await wait_for(
                lambda: second.watcher.status()["conflicts_suppressed_after_restart"] >= 1,
                what="the replayed conflict to be recognised",
            )
        await second.settled()
        assert second.total() == 0
        assert second.watcher.status()["recent_conflicts"] == []
        replayed = second.watcher.status()["tables"]["Orders"]["regions"]["us-east-1"]["records"]
        assert replayed >= 3, "the second run did re-read the records"
        # A new conflict after the restart is still reported.
        await seed_conflict(emu, tables, "o-1002", versioned=True)
        await wait_for(lambda: second.total() >= 1, what="the new conflict")
        await second.quiet(emu)
        assert second.conflicts("eu-west-1", "us-east-1") == 1


def _verdict(**overrides: Any) -> Verdict:
    fields: dict[str, Any] = {
        "table": "Orders",
        "key": canonical_key({"OrderID": {"S": "o-9"}}),
        "loser_region": "us-east-1",
        "winner_region": "eu-west-1",
        "lost_image": canonical_image({"OrderID": {"S": "o-9"}, "Email": {"S": "a@b.c"}}),
        "winning_image": canonical_image({"OrderID": {"S": "o-9"}, "Email": {"S": "x@y.z"}}),
        "lost_is_delete": False,
        "winner_is_delete": False,
        "lost_created_at": 100.0,
        "winner_created_at": 101.0,
        "mode": "exact",
        "certain": True,
        "evidence": "us-east-1 wrote {Email='a@b.c'} ...",
    }
    fields.update(overrides)
    return Verdict(**fields)


@pytest.mark.parametrize("log_images", [False, True])
def test_publishing_labels_images_and_the_recent_list(tmp_path: Path, log_images: bool) -> None:
    cfg = config(tmp_path, "http://127.0.0.1:9", log_item_images=log_images)
    metrics = Metrics(CollectorRegistry(), "test")
    watcher = ConflictWatcher(
        cfg, AwsClients(AwsSettings(endpoint_url="http://127.0.0.1:9")), metrics, SystemClock(),
        recent_limit=2,
    )
    with structlog.testing.capture_logs() as logs:
        watcher._publish(_verdict(), 1.0)
        watcher._publish(_verdict(loser_region=UNKNOWN, winner_region=UNKNOWN, mode="ambiguous",
                                  lost_created_at=200.0), 2.0)
        watcher._publish(_verdict(certain=False, lost_created_at=300.0), 3.0)

    def counted(winner: str, loser: str) -> float:
        return metrics.registry.get_sample_value(
            "gtmon_lww_conflicts_total",
            {"table": "Orders", "winner_region": winner, "loser_region": loser}) or 0.0

    assert counted("eu-west-1", "us-east-1") == 1  # the uncertain one is logged, not counted
    assert counted(UNKNOWN, UNKNOWN) == 1
    recent = watcher.status()["recent_conflicts"]
    assert [r["reported_at"] for r in recent] == [3.0, 2.0]  # newest first, bounded
    events = [e for e in logs if e["event"] == "lww_conflict"]
    assert len(events) == 3
    for event in events:
        assert ("lost_image" in event) is log_images
        assert ("evidence" in event) is log_images
        assert "a@b.c" in repr(event) if log_images else "a@b.c" not in repr(event)



async def test_a_verdict_is_on_disk_before_it_is_published(tmp_path: Path) -> None:
    """kill -9 right after a verdict is logged: the next start must know it was reported.

    The fingerprint is saved before the verdict is counted and logged (not only by the
    checkpoint loop, seconds later), so a watcher started from the same checkpoint file
    suppresses the replayed verdict instead of counting it a second time.
    """
    cfg = config(tmp_path, "http://127.0.0.1:9")

    def watcher() -> ConflictWatcher:
        return ConflictWatcher(cfg, AwsClients(AwsSettings(endpoint_url="http://127.0.0.1:9")),
                               Metrics(CollectorRegistry(), "test"), SystemClock())

    first = watcher()
    verdict = _verdict()
    first._judge = lambda: [(verdict, time.time())]  # type: ignore[method-assign]
    order: list[tuple[str, set[str]]] = []
    save, announce = first.store.save, first._announce

    async def save_and_note(state: Any) -> None:
        await save(state)
        order.append(("saved", set(state.reported)))

    def announce_and_note(verdict: Verdict, fingerprint: str, now: float) -> None:
        order.append(("published", {fingerprint}))
        announce(verdict, fingerprint, now)

    first.store.save = save_and_note  # type: ignore[method-assign]
    first._announce = announce_and_note  # type: ignore[method-assign]
    await first._tick_durably()
    assert [what for what, _ in order] == ["saved", "published"]
    assert order[1][1] <= order[0][1], "the published fingerprint was in the saved state"

    # The restart: a new watcher loads the file; the replayed verdict is not counted again.
    second = watcher()
    second.reported = type(second.reported)((await second.store.load()).reported)
    second._judge = lambda: [(verdict, time.time())]  # type: ignore[method-assign]
    with structlog.testing.capture_logs() as logs:
        await second._tick_durably()
    assert [e["event"] for e in logs if "lww_conflict" in e["event"]] == [
        "lww_conflict_already_reported"
    ]


def _record(seq: str, region: str, replayed: bool) -> StreamRecord:
    now = time.time()
    return StreamRecord(
        "Orders", region, "shardId-1", seq,
        {"eventName": "INSERT", "awsRegion": region, "dynamodb": {
            "Keys": {"OrderID": {"S": "o-7"}},
            "NewImage": {"OrderID": {"S": "o-7"}, "OrderStatus": {"S": "Paid"}},
            "SequenceNumber": seq, "ApproximateCreationDateTime": int(now)}},
        now, False, None, replayed, now,
    )


def test_records_judged_before_a_restart_are_not_judged_again_when_re_read(tmp_path: Path) -> None:
    """A checkpoint lists the records judged after its positions; re-read after a restart
    they are skipped (alone, one region's records of an item would be judged as a history
    of their own), while the same sequence read fresh, or any other replay, is observed."""
    first = ConflictWatcher(config(tmp_path, "http://127.0.0.1:9"),
                            AwsClients(AwsSettings(endpoint_url="http://127.0.0.1:9")),
                            Metrics(CollectorRegistry(), "test"), SystemClock())
    first.detectors["Orders"] = Detector({"Orders": REGIONS}, DetectorSettings(settle_seconds=0),
                                         track_judged=100_000)
    for region in REGIONS:
        first._on_record(_record("100", region, replayed=False))
    for region in REGIONS:
        first.detectors["Orders"].advance_watermark("Orders", region, time.time() + 10)
    first._judge()
    state = first.checkpoint_state()
    assert state.judged == {("Orders", r): ["100"] for r in REGIONS}

    second = ConflictWatcher(config(tmp_path, "http://127.0.0.1:9"),
                             AwsClients(AwsSettings(endpoint_url="http://127.0.0.1:9")),
                             Metrics(CollectorRegistry(), "test"), SystemClock())
    second.detectors["Orders"] = Detector({"Orders": REGIONS}, DetectorSettings(settle_seconds=0),
                                          track_judged=100_000)
    second._judged_unread = {where: set(seqs) for where, seqs in state.judged.items()}
    second._on_record(_record("100", "us-east-1", replayed=True))  # judged before: skipped
    second._on_record(_record("101", "eu-west-1", replayed=True))  # not judged: observed
    assert second.judged_skipped == 1
    assert second.detectors["Orders"].tracked_keys("Orders") == 1
    # Not yet re-read elsewhere: still listed in the next checkpoint.
    assert second.checkpoint_state().judged == {("Orders", r): ["100"] for r in REGIONS[1:]}


def test_judged_records_over_the_checkpoint_cap_are_counted_in_metrics(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    watcher = ConflictWatcher(config(tmp_path, "http://127.0.0.1:9"),
                              AwsClients(AwsSettings(endpoint_url="http://127.0.0.1:9")),
                              Metrics(registry, "test"), SystemClock())
    watcher.detectors["Orders"] = Detector({"Orders": REGIONS}, DetectorSettings(settle_seconds=0),
                                           track_judged=2)
    dropped = {"table": "Orders"}
    assert registry.get_sample_value("gtmon_checkpoint_judged_dropped_total", dropped) == 0
    for region in REGIONS:
        watcher._on_record(_record("100", region, replayed=False))
    for region in REGIONS:
        watcher.detectors["Orders"].advance_watermark("Orders", region, time.time() + 10)
    watcher._judge()
    # Three records judged, two listed: one let go, counted before any checkpoint is saved.
    assert registry.get_sample_value("gtmon_checkpoint_judged_dropped_total", dropped) == 1
    assert sum(map(len, watcher.checkpoint_state().judged.values())) == 2


async def test_a_failing_checkpoint_save_is_counted_shown_and_cleared_by_the_next_good_one(
    emu: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(tmp_path, emu.url)
    run = Run(cfg)
    store = run.watcher.store
    working_save = store.save

    async def full_disk(state: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "save", full_disk)
    await run.watcher.save_checkpoints()
    await run.watcher.save_checkpoints()
    registry = run.metrics.registry
    assert registry.get_sample_value("gtmon_checkpoint_errors_total", {"operation": "save"}) == 2
    assert registry.get_sample_value("gtmon_checkpoint_errors_total", {"operation": "load"}) == 0
    checkpoint = run.watcher.status()["checkpoint"]
    assert "No space left on device" in checkpoint["last_error"]
    assert checkpoint["last_saved_at"] is None
    monkeypatch.setattr(store, "save", working_save)
    await run.watcher.save_checkpoints()
    checkpoint = run.watcher.status()["checkpoint"]
    assert checkpoint["last_error"] is None and checkpoint["last_saved_at"] is not None
    await run.clients.close()
