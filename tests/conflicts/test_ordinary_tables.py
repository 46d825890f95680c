"""Conflicts on ordinary tables (issue 11): the real daemon against the emulator, real clients.

No paused links: the links deliver in 0.5-1.5 s, as they do between real regions, and two
regions write the same item 50-300 ms apart, so the earlier write is lost to the later
one. Tables have no version counter; the writer attribute is either not configured or
carried by only half the writes. What must hold, against the emulator's ground truth
(``/gtmon/truth``):

- every lost write is counted once, per item, and no counted region contradicts the
  truth; at least 7 items in 10 have both regions named (``unknown`` is honest when a
  loaded machine delays the polls; on a quiet one every item is named);
- nothing is counted that is not a loss: sequential writes through normal lag add none.

The emulator runs in a child process (as the sandbox and the benchmarks run it), so the
daemon's observation times are not disturbed by the emulator's threads. The daemon runs
as deployed: default stream polling (0.2 s floor, 1 s idle ceiling; the table is idle
long enough before the conflicts for the readers to be at the ceiling) and the canary on
(every second, so a detector that bounds origins by canary lags has them); only
``settle_seconds`` is short (2 s, still above the slowest link) to keep each test well
under a minute.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig

from bench._common import create_global_table as create_bench_table
from monitor.config import Config, parse_config
from monitor.emulator.control import ControlClient
from monitor.emulator.delays import DelaySpec
from monitor.emulator.emulator import EmulatorSettings
from monitor.emulator.process import EmulatorProcess
from monitor.service import Service

pytestmark = pytest.mark.timeout(60)

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-1"]
LINK = DelaySpec.of(500.0, 1000.0)  # every directed link: uniform 0.5-1.5 s, in order
LINK_MAX_S = 1.5
WRITER = "UpdatedIn"
CANARY_TABLE = "gtmon-canary"
SETTLE_S = 2.0
ITEMS = 10  # items written in turn by every region (the sequential test)
# Items that each lose one write (the concurrent tests): twenty, so the share named with
# both regions, which a loaded machine lowers, is not decided by two or three items.
CONFLICT_ITEMS = 20
# Idle readers back off from the 0.2 s floor by 1.5x per empty poll: at the 1 s ceiling
# after about 3 s (and the burst after the set-up writes lasts 5 s).
IDLE_S = 7.0
_names = itertools.count(1)
_seq = itertools.count(1)
_seq_lock = threading.Lock()


# ---- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProcess]:
    settings = EmulatorSettings(
        regions=list(REGIONS), default_delay=LINK, replica_activation_seconds=0.2, seed=11
    )
    with EmulatorProcess(settings) as child:
        create_global_table(child.url, CANARY_TABLE)
        yield child


def client(url: str, region: str) -> Any:
    return boto3.client(
        "dynamodb", region_name=region, endpoint_url=url, aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=BotoConfig(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5,
                          read_timeout=10),
    )


def create_global_table(url: str, name: str, timeout: float = 20.0) -> None:
    """`name` keyed by pk (S), streams on, replicas in every region, all ACTIVE."""
    create_bench_table(url, name, REGIONS, timeout=timeout)


def daemon_config(url: str, table: str, tmp_path: Path, writer_attribute: bool) -> Config:
    conflicts = {"writer_attribute": WRITER} if writer_attribute else {}
    return parse_config({
        "instance_id": f"ordinary-{table}",
        "regions": REGIONS,
        "aws": {"endpoint_url": url, "connect_timeout_seconds": 2, "read_timeout_seconds": 5,
                "max_attempts": 2},
        "canary": {"table": CANARY_TABLE, "interval_seconds": 1.0, "timeout_seconds": 20},
        "streams": {"settle_seconds": SETTLE_S, "checkpoint_path": str(tmp_path / "cp.json")},
        "tables": [{"name": table, "conflicts": conflicts}],
        "metrics": {"host": "127.0.0.1", "port": 0},
        "log": {"format": "json", "level": "error"},
    }, "test_ordinary_tables")


# ---- one test's world: a fresh table, the daemon watching it -------------------------------------

class World:
    def __init__(self, url: str, table: str, service: Service) -> None:
        self.url = url
        self.table = table
        self.service = service
        self.control = ControlClient(url, timeout=20)
        self.clients = {r: client(url, r) for r in REGIONS}

    def put(self, region: str, pk: str, carry: bool) -> None:
        """A blind PutItem of a unique image; with the writer attribute when `carry`."""
        with _seq_lock:
            number = next(_seq)
        item: dict[str, Any] = {"pk": {"S": pk}, "Seq": {"N": str(number)},
                                "Status": {"S": f"status-{number}"}}
        if carry:
            item[WRITER] = {"S": region}
        self.clients[region].put_item(TableName=self.table, Item=item)

    def undelivered(self) -> int:
        """Writes of this table not yet applied or discarded in every region (the
        emulator's own in_flight count also holds the canary's, which never stop)."""
        return sum(1 for w in self.control.truth(self.table)["writes"]
                   if len(set(w["applied"]) | set(w["discarded"])) < len(REGIONS))

    async def delivered(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while await asyncio.to_thread(self.undelivered):
            assert time.monotonic() < deadline, f"replication not done after {timeout:.0f} s"
            await asyncio.sleep(0.1)

    def truth(self) -> tuple[list[dict[str, Any]], Counter[tuple[str, str, str]]]:
        """Every write, and Counter of (item, winner origin, loser origin) of the lost ones."""
        truth = self.control.truth(self.table)
        writes = {w["write_id"]: w for w in truth["writes"]}
        lost: Counter[tuple[str, str, str]] = Counter()
        for entry in truth["lost"]:
            loser, winner = writes[entry["write_id"]], writes[entry["lost_to"]]
            lost[(loser["key"]["pk"]["S"], winner["origin"], loser["origin"])] += 1
        return list(writes.values()), lost

    def counter(self) -> Counter[tuple[str, str]]:
        """gtmon_lww_conflicts_total of this table by (winner_region, loser_region)."""
        found: Counter[tuple[str, str]] = Counter()
        for metric in self.service.registry.collect():
            if metric.name != "gtmon_lww_conflicts":
                continue
            for sample in metric.samples:
                if sample.name == "gtmon_lww_conflicts_total" and sample.labels["table"] == self.table:
                    found[(sample.labels["winner_region"], sample.labels["loser_region"])] += int(
                        sample.value)
        return +found

    def verdicts(self) -> list[dict[str, Any]]:
        assert self.service.watcher is not None
        return [v for v in self.service.watcher.recent if v["table"] == self.table]

    def counted_per_item(self) -> Counter[tuple[str, str, str]]:
        return Counter(
            (v["key"]["pk"]["S"], v["winner_region"], v["loser_region"])
            for v in self.verdicts() if v["certain"]
        )

    def tracked_keys(self) -> int:
        assert self.service.watcher is not None
        return int(self.service.watcher.status()["tables"][self.table]["tracked_keys"])

    async def judged(self, timeout: float) -> None:
        """Everything delivered and every item judged (bounded), then one more moment for
        a late or duplicate verdict to show."""
        await self.delivered(timeout)
        deadline = time.monotonic() + timeout
        while self.tracked_keys() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.5)  # detector tick + a poll at the idle ceiling

    def explain(self) -> str:
        rows = [
            f"  {v['key']['pk']['S']}: winner={v['winner_region']} loser={v['loser_region']} "
            f"mode={v['mode']} certain={v['certain']} "
            f"known_by={v.get('winner_known_by')}/{v.get('loser_known_by')}"
            for v in sorted(self.verdicts(), key=lambda v: v["key"]["pk"]["S"])
        ]
        return "verdicts:\n" + ("\n".join(rows) or "  (none)")


@pytest.fixture
async def world(emulator: EmulatorProcess, tmp_path: Path,
                request: pytest.FixtureRequest) -> Any:
    """`await world(writer_attribute)`: a fresh global table and the daemon watching it."""
    started: list[Service] = []

    async def make(writer_attribute: bool) -> World:
        table = f"Ordinary{next(_names)}"
        await asyncio.to_thread(create_global_table, emulator.url, table)
        service = Service(daemon_config(emulator.url, table, tmp_path, writer_attribute))
        assert service.watcher is not None
        service.watcher.recent = deque(maxlen=10_000)  # every verdict, not the last 100
        await service.start()
        started.append(service)
        run = World(emulator.url, table, service)
        watcher = service.watcher
        deadline = time.monotonic() + 15
        while not all(r.watermark() is not None for r in watcher.readers.values()):
            assert time.monotonic() < deadline, "stream readers did not catch up in 15 s"
            await asyncio.sleep(0.1)
        # A few canary lags on every link first (as a daemon that has been running has);
        # bounded, and not asserted: this file tests conflicts, not the canary.
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and not canaries_measured(service, 2):
            await asyncio.sleep(0.2)
        return run

    yield make
    for service in started:
        await asyncio.wait_for(service.stop(), timeout=15)


def canaries_measured(service: Service, at_least: int) -> bool:
    counts: Counter[tuple[str, str]] = Counter()
    for metric in service.registry.collect():
        if metric.name == "gtmon_replication_lag_seconds":
            for sample in metric.samples:
                if sample.name == "gtmon_replication_lag_seconds_count":
                    counts[(sample.labels["source_region"], sample.labels["target_region"])] += int(
                        sample.value)
    return all(counts[(a, b)] >= at_least for a in REGIONS for b in REGIONS if a != b)


# ---- workloads ---------------------------------------------------------------------------------

async def create_items(run: World, rng: random.Random, carry: Callable[[int], bool]) -> None:
    """Every item written once, in a random region, and delivered everywhere; then the
    table stays idle until the readers have backed off to their idle ceiling, as they
    have on an ordinary table when a conflict comes."""
    for i in range(CONFLICT_ITEMS):
        await asyncio.to_thread(run.put, rng.choice(REGIONS), f"item-{i}", carry(i))
    await run.delivered()
    await asyncio.sleep(IDLE_S)


async def concurrent_pairs(
    run: World, rng: random.Random, carry: Callable[[int], tuple[bool, bool]]
) -> dict[str, tuple[str, str]]:
    """Per item, region A writes, then region B 50-300 ms later, while the links take
    0.5-1.5 s: B has not seen A's write, B's is later, so A's is lost to B's. Items start
    staggered over half a second. Returns item -> (winner B, loser A)."""
    plan = {}
    for i in range(CONFLICT_ITEMS):
        first, second = rng.sample(REGIONS, 2)
        plan[f"item-{i}"] = (first, second, rng.uniform(0.05, 0.3), rng.uniform(0.0, 0.5), carry(i))

    def pair(pk: str, first: str, second: str, gap: float, start: float,
             flags: tuple[bool, bool]) -> None:
        time.sleep(start)
        run.put(first, pk, flags[0])
        time.sleep(gap)
        run.put(second, pk, flags[1])

    await asyncio.gather(*(asyncio.to_thread(pair, pk, *spec) for pk, spec in plan.items()))
    return {pk: (second, first) for pk, (first, second, *_rest) in plan.items()}


async def assert_every_loss_counted_right(run: World, expected: dict[str, tuple[str, str]]) -> None:
    """Every lost write counted once on its item, no region label that contradicts the
    ground truth, and at least 70 % of the items with both regions named.

    ``unknown`` is an honest label (the arrival bounds did not rule a region out); it is
    tolerated on a few items because a loaded 2-core machine delays the daemon's polls and
    widens those bounds. Measured with 10 items: 10 of 10 named in each of 3 runs per test
    on a quiet machine; 9 and 6 of 10 in CI runs, 8 of 10 at a load average of about 2.
    With 20 items: 20 of 20 in each of 4 runs per test at a load average of 3-4.5."""
    await run.judged(timeout=25)
    _writes, lost = run.truth()
    # The set-up did what it meant to: one write lost per item, A's to B's.
    assert lost == Counter({(pk, w, lo): 1 for pk, (w, lo) in expected.items()}), (
        f"the emulator's ground truth is not the intended conflicts: {sorted(lost)}")
    truth = {pk: (w, lo) for pk, w, lo in lost}
    per_item = run.counted_per_item()
    counts = Counter(pk for pk, _w, _lo in per_item.elements())
    not_once = {pk: counts[pk] for pk in truth if counts[pk] != 1}
    stray = sorted(pk for pk in counts if pk not in truth)

    def contradicts(label: str, true: str) -> bool:
        return label not in (true, "unknown")

    wrong = sorted(
        (pk, w, lo) for pk, w, lo in per_item
        if pk in truth and (contradicts(w, truth[pk][0]) or contradicts(lo, truth[pk][1])))
    named = sum(1 for (pk, w, lo) in per_item if (w, lo) == truth.get(pk))
    by_labels = Counter((w, lo) for _pk, w, lo in per_item.elements())
    assert run.counter() == by_labels, (
        f"gtmon_lww_conflicts_total {dict(run.counter())} != the counted verdicts "
        f"{dict(by_labels)}")
    assert not not_once and not stray and not wrong and named >= 0.7 * len(truth), (
        f"lost writes not counted exactly once (item: times): {not_once}\n"
        f"counted on items that lost nothing: {stray}\n"
        f"counted with a region the ground truth contradicts: {wrong}\n"
        f"items with both regions named: {named} of {len(truth)} (need 70 %)\n"
        f"ground truth (item, winner, loser): {sorted(lost)}\n"
        + run.explain())


# ---- tests -------------------------------------------------------------------------------------

async def test_concurrent_writes_without_paused_links_attribute_less(world: Any) -> None:
    """(a) No attributes configured or written: every loss counted, right regions."""
    run = await world(writer_attribute=False)
    rng = random.Random(101)
    await create_items(run, rng, lambda i: False)
    expected = await concurrent_pairs(run, rng, lambda i: (False, False))
    await assert_every_loss_counted_right(run, expected)


async def test_concurrent_writes_with_mixed_attributes(world: Any) -> None:
    """(b) writer_attribute configured, half the writes carry it (every combination of
    the two writers, and creations alternately with and without): the same."""
    run = await world(writer_attribute=True)
    rng = random.Random(202)
    combos = [(True, True), (True, False), (False, True), (False, False)]
    await create_items(run, rng, lambda i: i % 2 == 0)
    expected = await concurrent_pairs(run, rng, lambda i: combos[i % len(combos)])
    await assert_every_loss_counted_right(run, expected)


@pytest.mark.parametrize("writer_attribute", [False, True], ids=["attribute-less", "mixed"])
async def test_sequential_writes_through_normal_lag_add_nothing(
    world: Any, writer_attribute: bool
) -> None:
    """(c) Each item written in turn by every region, each write well after the previous
    one has reached every region (links up to 1.5 s): nothing is lost, nothing counted."""
    run = await world(writer_attribute=writer_attribute)
    rng = random.Random(303)
    spacing = LINK_MAX_S + 1.0

    plans = [(rng.uniform(0.0, 0.5), rng.sample(REGIONS, 3)) for _ in range(ITEMS)]

    def item(i: int) -> None:
        start, regions = plans[i]
        time.sleep(start)
        for step, region in enumerate(regions):
            if step:
                time.sleep(spacing)
            run.put(region, f"item-{i}", writer_attribute and (i + step) % 2 == 0)

    await asyncio.gather(*(asyncio.to_thread(item, i) for i in range(ITEMS)))
    await run.judged(timeout=20)
    writes, lost = run.truth()
    assert len(writes) == 3 * ITEMS
    assert not lost, f"the set-up lost writes (links slower than {LINK_MAX_S} s?): {lost}"
    certain = [v for v in run.verdicts() if v["certain"]]
    assert not run.counter() and not certain, (
        f"counted without a loss: {dict(run.counter())}\n" + run.explain())
