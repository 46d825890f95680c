"""Benchmark: last-writer-wins conflict detection end to end, against the emulator's ground truth.

    python bench/conflicts.py [--quick] [--grid ordinary|legacy] [--cells GLOB,...]
                              [--delays MS,...] [--activity idle,busy]
                              [--attributes none,partial,full] [--items N] [--rounds N]
                              [--nice N] [--budget-minutes M]

Two grids; each *run* (one emulator child process, one daemon) serves several tables, one
per attribute mode, which get the same workload and are scored apart (a result *cell* is
run x mode, named ``RUN/MODE``, e.g. ``d500ms_p0.2-2s_busy/none``):

``ordinary`` (default; issue 11: conflicts on ordinary tables, no paused links)
    link delay D in 200 ms, 500 ms, 1 s, 2 s, 5 s (every directed link uniform in
    [0.95 D, 1.05 D], in order per link) x stream poll floor 0.2 s with the default 1 s idle
    ceiling (``poll_interval_min_seconds`` 0.2, ``poll_interval_max_seconds`` 1, so idle
    readers really back off; ``--poll-ceiling`` to change it) x table activity x attributes:

    - activity ``idle``: only the conflict workload writes the tables; ``busy``: a
      background writer also writes other items of every table (3 writes/s per table, each
      item from one region only, so they never conflict), so readers stay at the floor;
    - attributes ``full`` (``version_attribute: Version``, ``writer_attribute: Region``,
      both on every write), ``partial`` (the same config, both attributes on about half
      the writes, chosen at random per write; the rest are written without them, as an
      old batch job or the AWS CLI would) and ``none`` (no attributes configured or
      written). A write that carries the attributes writes Version = (Version read in its
      own region, or 0) + 1 with a conditional put (optimistic locking); the others write
      blindly.

    Conflicts: 2 (sometimes 3) regions each read the item in their own region, wait for
    each other, then write 50-300 ms apart (each writer 50-300 ms after the previous one),
    with the links up all along; when a link delivers faster than the writers' spacing,
    the later write saw the earlier one and nothing is lost (the ground truth says so).
    The other items get one sequential update per round. The daemon runs as deployed:
    canary on (every 2 s, same links), so a detector that uses canary lags has them.

``legacy`` (the grid of the first detector work; ``--grid legacy``)
    D in 50 ms, 500 ms, 5 s (fixed) x poll interval P in 0.2 s, 2 s (floor = ceiling = P),
    one extra hot-item cell, canary off, tables ``exact`` (Version + Region),
    ``version_only`` (Version) and ``inferred`` (none); conflicts written within D/2.

Per run, on loopback only: the emulator in a child process (its ground truth comes back
over the control API, ``/gtmon/truth``: every write's origin, accept time and image, and
which writes were lost to which winner); the gtmon daemon (`monitor.service.Service`) in
this process, ``settle_seconds`` 2; and the boto3 workload in a second child process
(``--workload SPEC``, its own GIL). Items are created, then updated in rounds spaced
max(1.5 D + 0.5 s, D + settle + 2 x poll ceiling + 2 s) apart (so a sequential update sees
the previous round everywhere, idle readers have backed off to their ceiling, and the
previous round has been judged; see `round_gap`). Every image is distinct (a per-write
Seq), so no loss is byte-identical; there are no deletes.

Scoring, per table, against ``lost_writes`` (lost write, winner write) of the truth.
The service logs item images for the bench (``log_item_images``), and every image is
unique, so a verdict from ``watcher.recent`` names its lost write exactly: it matches the
truth write on the same item with the same image (one to one; numbers compared by value,
as DynamoDB stores them, since the truth keeps the client's spelling and the daemon logs
the canonical image), and its regions must be that write's origin (loser) and its
winner's origin (winner).

- *counted* verdicts are the certain ones (they move ``gtmon_lww_conflicts_total``);
- TP: a counted verdict with both regions named, whose lost write was lost, to a write
  from the named winner region;
- FP: a counted verdict with named regions that is not a TP: wrong regions, a write that
  was not lost, no loss on the item at all (the busy items never lose), more verdicts
  than losses;
- ambiguous: a counted verdict with an ``unknown`` region, reported separately (matched
  or not to a lost write, with ``unknown`` as a wildcard); one that matches no lost write
  is wrong (``ambiguous_unmatched``);
- uncertain: verdicts with certain=False (logged, not counted by the metric; they name
  the lost write's candidates); ``uncertain_matched`` says how many name a real loss;
- FN: lost writes no TP matched. precision = TP / (TP + FP) (named verdicts);
  ``precision_counted`` = counted verdicts that are not wrong / all counted verdicts
  (wrong = FP + ambiguous_unmatched); recall = TP / lost writes.
- ``known_by``: when verdict entries carry ``loser_known_by`` / ``winner_known_by`` (how
  each region was known: attribute, timing, canary bound, ...), how many counted verdicts
  named each side by which means, and how many of those were TPs. Absent keys are fine:
  the bench runs against detectors that do not report them.
- ``loose_match``: the same with the looser rule, a verdict matching any lost write of
  the item with the same (loser, winner) regions, whatever its image.
- latency: reported_at (the tick that incremented the counter, wall clock) minus the lost
  write's accepted_at in the emulator (wall clock, same host), for every matched counted
  verdict. Its floor is about D (the winner must reach every region) + settle_seconds +
  one poll + the detector's 0.5 s tick.
- ``get_records_per_reader_s``: GetRecords calls per reader and second while the workload
  ran (what the polling costs; busy vs idle, burst polling).

Targets (ordinary grid): precision 1.0 in every cell (no counted verdict wrong); recall
>= 0.95 wherever D >= 2 x the poll floor. The run records the daemon's stream settings in
effect (``streams.burst_seconds`` when the daemon has it; a field the daemon does not
know is never set), which code it ran (``monitor_file``, git commit) and the load average.

Bounded: a fixed number of items and rounds per run, a deadline on every wait, and the
full run skips (and lists) runs that would overrun its budget (``--budget-minutes``).
Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import itertools
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Appended, not prepended: PYTHONPATH must win, so the bench can measure another checkout's
# monitor (e.g. PYTHONPATH=/work/before for the figures before a change).
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    EmulatorProcess,
    create_global_table,
    emit,
    log,
    percentile,
    stop_service,
)

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-1"]
BOTH = {"version_attribute": "Version", "writer_attribute": "Region"}


@dataclass(frozen=True)
class Mode:
    """One monitored table: its conflicts config and how the workload writes it."""

    table: str
    conflicts: dict[str, str]
    share: float  # fraction of writes that carry Version and Region (chosen per write)
    grid: str

    def spec(self) -> dict[str, Any]:
        return {"table": self.table, "share": self.share}


MODES: dict[str, Mode] = {
    "exact": Mode("BenchExact", BOTH, 1.0, "legacy"),
    "version_only": Mode("BenchVersion", {"version_attribute": "Version"}, 1.0, "legacy"),
    "inferred": Mode("BenchInferred", {}, 0.0, "legacy"),
    "full": Mode("BenchFull", BOTH, 1.0, "ordinary"),
    "partial": Mode("BenchPartial", BOTH, 0.5, "ordinary"),
    "none": Mode("BenchNone", {}, 0.0, "ordinary"),
}
GRID_MODES = {g: [m for m, spec in MODES.items() if spec.grid == g] for g in ("legacy", "ordinary")}
STATUSES = ("Pending", "Paid", "Packed", "Shipped", "Delivered", "Returned")
SETTLE_SECONDS = 2.0
DETECTOR_INTERVAL = 0.5  # ConflictWatcher's default tick
P_CONFLICT, P_THREE_WAY = 0.45, 0.3

# ordinary grid (issue 11)
ORDINARY_DELAYS_MS = [200, 500, 1000, 2000, 5000]
ORDINARY_JITTER = 0.1  # each link uniform in [0.95 D, 1.05 D]
POLL_FLOOR_S, POLL_CEILING_S = 0.2, 1.0
ACTIVITIES = ["idle", "busy"]
SPREAD_S = (0.05, 0.3)  # conflicting writers each 50-300 ms after the previous one
BUSY_WRITES_PER_S = 3.0  # per table, spread over the regions
BUSY_KEYS_PER_REGION = 6
CANARY_INTERVAL_S = 2.0
ORDINARY_ITEMS, ORDINARY_ROUNDS = 40, 6
ORDINARY_BUDGET_S = 28 * 60.0
ORDINARY_QUICK: tuple[int, str] = (1000, "busy")
ORDINARY_QUICK_ITEMS, ORDINARY_QUICK_ROUNDS = 20, 1

# legacy grid (the first detector work)
LEGACY_DELAYS_MS = [50, 500, 5000]
LEGACY_POLLS_S = [0.2, 2.0]
LEGACY_ITEMS, LEGACY_ROUNDS = 50, 6
LEGACY_QUICK = [(500, 0.2)]
LEGACY_QUICK_ITEMS, LEGACY_QUICK_ROUNDS = 16, 2
LEGACY_BUDGET_S = 14 * 60.0
# One more cell in the full legacy run: rounds only 1.5 D + 0.5 s apart, so items are
# written again before they are judged (hot items): what that does to the latency.
HOT_CELL: tuple[int, float, float] = (500, 0.2, 1.25)


@dataclass
class RunSpec:
    """One emulator + daemon run: the link delay, polling, activity and tables."""

    name: str
    delay_ms: int
    jitter_ms: float
    poll_min_s: float
    poll_max_s: float
    activity: str  # idle | busy
    modes: list[str]
    items: int
    rounds: int
    spread: tuple[float, float] | None  # None: within D/2 (legacy)
    canary: bool
    gap_s: float | None = None  # None: round_gap()
    default_gap: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def gap(self) -> float:
        return round_gap(self.delay_ms, self.poll_max_s) if self.gap_s is None else self.gap_s

    def expected_seconds(self) -> float:
        """Rough length: start-up, rounds (writes + gap), draining."""
        canary = 3 * CANARY_INTERVAL_S + 2 * self.delay_ms / 1000 if self.canary else 0.0
        return 30 + canary + self.rounds * (self.gap + 4) + 3 * self.delay_ms / 1000


# ---- the workload (runs in a child process: python bench/conflicts.py --workload SPEC) -----

def plan_workload(items: int, rounds: int, delay_s: float, seed: int,
                  spread: tuple[float, float] | None = None) -> list[list[dict[str, Any]]]:
    """Round 0 creates every item; each later round gives each item one group of writes.

    spread None: the writers of a conflict write within D/2 of the first (legacy);
    (lo, hi): each writer lo..hi seconds after the previous one. Every write also draws
    ``draws`` in [0, 1): a table whose attribute share exceeds it writes the attributes
    (so the same writes carry them whatever the table, from a separate generator so the
    legacy plans stay what they were).
    """
    rng = random.Random(seed)
    draws = random.Random(seed + 7919)
    plan: list[list[dict[str, Any]]] = [[
        {"item": i, "regions": [rng.choice(REGIONS)], "offsets": [0.0], "kind": "create",
         "draws": [draws.random()]}
        for i in range(items)
    ]]
    for _ in range(rounds):
        groups = []
        for i in range(items):
            if rng.random() < P_CONFLICT:
                k = 3 if rng.random() < P_THREE_WAY else 2
                regions = rng.sample(REGIONS, k)
                if spread is None:
                    # First writer at once, the others within D/2: inside the link delay.
                    offsets = [0.0] + [rng.uniform(0.0, delay_s * 0.5) for _ in range(k - 1)]
                else:
                    offsets = [0.0]
                    for _ in range(k - 1):
                        offsets.append(round(offsets[-1] + rng.uniform(*spread), 4))
                groups.append({"item": i, "regions": regions, "offsets": offsets,
                               "kind": f"conflict{k}", "draws": [draws.random() for _ in regions]})
            else:
                groups.append({"item": i, "regions": [rng.choice(REGIONS)], "offsets": [0.0],
                               "kind": "sequential", "draws": [draws.random()]})
        plan.append(groups)
    return plan


def workload_client(url: str, region: str) -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "dynamodb", region_name=region, endpoint_url=url, aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=BotoConfig(retries={"max_attempts": 3, "mode": "standard"}, read_timeout=30,
                          max_pool_connections=64),
    )


def run_workload(spec: dict[str, Any]) -> dict[str, Any]:
    url, delay_s = spec["url"], spec["delay_ms"] / 1000.0
    spread = tuple(spec["spread"]) if spec.get("spread") else None
    plan = plan_workload(spec["items"], spec["rounds"], delay_s, spec["seed"], spread)  # type: ignore[arg-type]
    modes: dict[str, dict[str, Any]] = spec["modes"]
    gap = spec["gap_s"]
    clients = {r: workload_client(url, r) for r in REGIONS}
    seq = itertools.count(1)
    seq_lock = threading.Lock()
    rng = random.Random(spec["seed"] + 1)
    stats: Counter[str] = Counter()
    stats_lock = threading.Lock()

    def count(name: str, n: int = 1) -> None:
        with stats_lock:
            stats[name] += n

    def next_seq() -> int:
        with seq_lock:
            return next(seq)

    def write_one(mode: str, pk: str, region: str, offset: float, draw: float,
                  barrier: threading.Barrier | None) -> None:
        table, client = modes[mode]["table"], clients[region]
        carries = draw < modes[mode]["share"]
        current = client.get_item(TableName=table, Key={"pk": {"S": pk}},
                                  ConsistentRead=True).get("Item")
        if barrier is not None:
            try:
                barrier.wait(timeout=30)
            except threading.BrokenBarrierError:
                count("barrier_broken")
        if offset:
            time.sleep(offset)
        number = next_seq()  # unique per write: no two images are byte-identical
        item: dict[str, Any] = {
            "pk": {"S": pk},
            "Status": {"S": STATUSES[number % len(STATUSES)]},
            "Seq": {"N": str(number)},
        }
        request: dict[str, Any] = {"TableName": table, "Item": item}
        if carries:
            # Optimistic locking, as a service that keeps a version counter writes: the
            # version read in its own region + 1, on condition that it is still there.
            # An item last written without the attribute (an old job, the CLI) starts at 1.
            held = current.get("Version") if current else None
            version = int(held["N"]) if held else 0
            item["Version"] = {"N": str(version + 1)}
            item["Region"] = {"S": region}
            if current is None:
                request["ConditionExpression"] = "attribute_not_exists(pk)"
            elif held is None:
                request["ConditionExpression"] = "attribute_not_exists(Version)"
            else:
                request["ConditionExpression"] = "Version = :v"
                request["ExpressionAttributeValues"] = {":v": {"N": str(version)}}
        try:
            client.put_item(**request)
            count(f"{mode}.puts")
            count(f"{mode}.puts_with_attributes" if carries else f"{mode}.puts_without_attributes")
        except client.exceptions.ConditionalCheckFailedException:
            # Another region's write arrived between our read and our write: optimistic
            # locking refused it, exactly what it is for. Not retried (not a conflict).
            count(f"{mode}.conditional_check_failed")

    def run_group(mode: str, group: dict[str, Any]) -> None:
        pk = f"item-{group['item']:03d}"
        regions, offsets, draws = group["regions"], group["offsets"], group["draws"]
        count(f"{mode}.{group['kind']}")
        if len(regions) == 1:
            write_one(mode, pk, regions[0], 0.0, draws[0], None)
            return
        barrier = threading.Barrier(len(regions))
        with ThreadPoolExecutor(len(regions)) as pool:
            futures = [pool.submit(write_one, mode, pk, r, o, d, barrier)
                       for r, o, d in zip(regions, offsets, draws, strict=True)]
            for future in futures:
                future.result()

    busy = spec.get("busy")
    stop_busy = threading.Event()

    def busy_writer() -> None:
        """Other items of every table, a few writes a second, each item from one region
        only (they never conflict): the readers of a busy table stay at their floor."""
        assert busy is not None
        busy_clients = {r: workload_client(url, r) for r in REGIONS}
        draws = random.Random(spec["seed"] + 31)
        versions: dict[tuple[str, str], int | None] = {}
        interval = 1.0 / busy["writes_per_s"]
        next_at = time.monotonic()
        for n in itertools.count():
            if stop_busy.wait(max(0.0, next_at - time.monotonic())):
                return
            next_at += interval
            region = REGIONS[n % len(REGIONS)]
            pk = f"busy-{region}-{(n // len(REGIONS)) % busy['keys_per_region']}"
            for mode, mode_spec in modes.items():
                number = next_seq()
                item: dict[str, Any] = {"pk": {"S": pk}, "Seq": {"N": str(number)},
                                        "Status": {"S": STATUSES[number % len(STATUSES)]}}
                if draws.random() < mode_spec["share"]:
                    version = (versions.get((mode, pk)) or 0) + 1
                    item["Version"] = {"N": str(version)}
                    item["Region"] = {"S": region}
                    versions[(mode, pk)] = version
                else:
                    versions[(mode, pk)] = None
                try:
                    busy_clients[region].put_item(TableName=mode_spec["table"], Item=item)
                    count("busy.puts")
                except Exception as exc:  # reported, the run goes on
                    count("busy.errors")
                    print(f"busy writer: {type(exc).__name__}: {exc}", file=sys.stderr)

    started = time.monotonic()
    busy_thread = None
    if busy:
        busy_thread = threading.Thread(target=busy_writer, name="busy-writer", daemon=True)
        busy_thread.start()
        time.sleep(busy.get("lead_s", 0.0))  # the readers are at their floor before round 0
    round_seconds: list[float] = []
    try:
        with ThreadPoolExecutor(max_workers=12) as pool:
            for index, groups in enumerate(plan):
                round_started = time.monotonic()
                jobs = [(mode, g) for g in groups for mode in modes]
                rng.shuffle(jobs)
                futures = [pool.submit(run_group, mode, g) for mode, g in jobs]
                errors = 0
                for future in futures:
                    try:
                        future.result()
                    except Exception as exc:  # a failed write is reported, the run goes on
                        errors += 1
                        print(f"workload: {type(exc).__name__}: {exc}", file=sys.stderr)
                stats["errors"] += errors
                round_seconds.append(round(time.monotonic() - round_started, 2))
                if index < len(plan) - 1:
                    time.sleep(gap)
        if busy_thread is not None:
            # Until the last round has reached every region: it is judged by busy readers.
            time.sleep(busy.get("tail_s", 0.0))
    finally:
        stop_busy.set()
        if busy_thread is not None:
            busy_thread.join(timeout=30)
    return {"stats": dict(stats), "rounds": len(plan) - 1, "gap_s": gap,
            "round_write_seconds": round_seconds,
            "seconds": round(time.monotonic() - started, 2)}


# ---- the monitor ---------------------------------------------------------------------------

def stream_fields() -> set[str]:
    """The stream settings this daemon knows (fields are being added; never set an unknown one)."""
    from monitor.config import StreamSettings

    return set(StreamSettings.model_fields)


def service_config(url: str, run: RunSpec, checkpoint: str) -> Any:
    from monitor.config import parse_config

    streams: dict[str, Any] = {
        "poll_interval_min_seconds": run.poll_min_s, "poll_interval_max_seconds": run.poll_max_s,
        "settle_seconds": SETTLE_SECONDS, "checkpoint_path": checkpoint,
        "log_item_images": True,  # the bench matches lost images against the truth
    }
    known = stream_fields()
    missing = sorted(set(streams) - known)
    if missing:
        raise RuntimeError(f"this daemon's StreamSettings lacks {missing}")
    canary: dict[str, Any] = {"enabled": run.canary}
    if run.canary:
        canary["interval_seconds"] = CANARY_INTERVAL_S
    return parse_config({
        "instance_id": "bench-conflicts",
        "regions": REGIONS,
        "aws": {"endpoint_url": url, "read_timeout_seconds": 10, "max_attempts": 3},
        "canary": canary,
        "streams": streams,
        "tables": [{"name": MODES[m].table, "conflicts": MODES[m].conflicts} for m in run.modes],
        "metrics": {"host": "127.0.0.1", "port": 0},
        "log": {"format": "json", "level": "error"},
    }, "bench/conflicts")


async def wait_until(predicate: Any, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()


def round_gap(delay_ms: float, poll_max_s: float) -> float:
    """Seconds between update rounds.

    Well beyond the link delay (1.5 D + 0.5 s), so a sequential update sees the previous
    round in every region, and long enough for the previous round to be judged before an
    item is written again (D + settle + 2 polls at the ceiling + 2 s, which also lets an
    idle reader back off to its ceiling): the detector judges an item only once its
    *last* write has settled, so an item written again sooner would be judged later, and
    the latency measured would be the workload's, not the detector's.
    """
    delay_s = delay_ms / 1000.0
    return round(max(1.5 * delay_s + 0.5, delay_s + SETTLE_SECONDS + 2 * poll_max_s + 2.0), 2)


def sample_sum(registry: Any, metric: str, sample: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include `labels`."""
    return sum(
        s.value for m in registry.collect() if m.name == metric for s in m.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


def undelivered(truth: dict[str, Any]) -> int:
    """Writes of a table not yet applied or discarded in every region."""
    return sum(1 for w in truth["writes"]
               if len(set(w["applied"]) | set(w["discarded"])) < len(REGIONS))


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def run_cell(run: RunSpec, seed: int, dump: str | None = None) -> dict[str, Any]:
    from monitor.emulator.control import ControlClient
    from monitor.service import Service

    name = run.name
    started = time.monotonic()
    load_at_start = load_average()
    delay = {"ms": run.delay_ms - run.jitter_ms / 2, "jitter_ms": run.jitter_ms,
             "kind": "uniform" if run.jitter_ms else "fixed"}
    spec = {"regions": REGIONS, "default_delay": delay,
            "replica_activation_seconds": 0.2, "seed": seed}
    tables = {mode: MODES[mode].table for mode in run.modes}
    with EmulatorProcess(spec) as emulator, tempfile.TemporaryDirectory() as tmp:
        url = emulator.url
        config = service_config(url, run, os.path.join(tmp, "cp.json"))
        for table in tables.values():
            await asyncio.to_thread(create_global_table, url, table, REGIONS)
        if run.canary:
            await asyncio.to_thread(create_global_table, url, config.canary.table, REGIONS)
        service = Service(config)
        watcher = service.watcher
        assert watcher is not None
        watcher.recent = deque(maxlen=100_000)  # keep every verdict, not the last 100
        streams_in_effect = config.streams.model_dump()
        await service.start()
        try:
            caught_up = await wait_until(
                lambda: all(r.watermark() is not None for r in watcher.readers.values()), 30)
            if not caught_up:
                log(f"{name}: not every reader had a watermark after 30 s; going on")
            canary_ready = None
            if run.canary:
                # A few canary lags on every link first: a detector that bounds origins by
                # them has something to go on (bounded; the run goes on regardless).
                def canaries_measured() -> bool:
                    return all(
                        sample_sum(service.registry, "gtmon_replication_lag_seconds",
                                   "gtmon_replication_lag_seconds_count",
                                   source_region=a, target_region=b) >= 3
                        for a in REGIONS for b in REGIONS if a != b)

                canary_ready = await wait_until(
                    canaries_measured, 4 * CANARY_INTERVAL_S + 2 * run.delay_ms / 1000 + 10)
                if not canary_ready:
                    log(f"{name}: fewer than 3 canary lags on some link; going on")
            gap = run.gap
            workload_spec: dict[str, Any] = {
                "url": url, "delay_ms": run.delay_ms, "items": run.items, "rounds": run.rounds,
                "seed": seed, "gap_s": gap, "spread": list(run.spread) if run.spread else None,
                "modes": {mode: MODES[mode].spec() for mode in run.modes},
            }
            if run.activity == "busy":
                workload_spec["busy"] = {
                    "writes_per_s": BUSY_WRITES_PER_S, "keys_per_region": BUSY_KEYS_PER_REGION,
                    "lead_s": 2.0, "tail_s": run.delay_ms / 1000 * 1.1 + 1.0,
                }
            log(f"{name}: workload ({run.items} items x {run.rounds} rounds, "
                f"tables {', '.join(run.modes)}, {run.activity})")
            get_records_before = sample_sum(
                service.registry, "gtmon_aws_request_duration_seconds",
                "gtmon_aws_request_duration_seconds_count", operation="get_records")
            workload_started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(Path(__file__).resolve()), "--workload",
                json.dumps(workload_spec), cwd=str(ROOT), stdout=subprocess.PIPE,
            )
            budget = 60 + run.rounds * (gap + 15) + run.delay_ms / 1000 * 2
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), timeout=budget)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise RuntimeError(f"{name}: workload did not finish in {budget:.0f} s") from None
            if proc.returncode != 0:
                raise RuntimeError(f"{name}: workload exited with {proc.returncode}")
            workload = json.loads(out.decode().strip().splitlines()[-1])
            writes_done = time.monotonic()
            get_records = sample_sum(
                service.registry, "gtmon_aws_request_duration_seconds",
                "gtmon_aws_request_duration_seconds_count", operation="get_records"
            ) - get_records_before
            get_records_rate = get_records / max(1e-9, (writes_done - workload_started)
                                                 * len(watcher.readers))
            control = ControlClient(url, timeout=60)
            # Everything delivered, then every item judged (bounded). Delivery is read from
            # the ground truth of the bench's tables: the emulator's in_flight count also
            # holds the canary's writes, which never stop.
            await asyncio.sleep(run.delay_ms / 1000 * 1.05)

            def delivered() -> bool:
                return all(undelivered(control.truth(t)) == 0 for t in tables.values())

            all_delivered = await wait_until(delivered, run.delay_ms / 1000 * 2 + 20, step=1.0)

            def judged() -> bool:
                status = watcher.status()["tables"]
                return all(t["tracked_keys"] == 0 for t in status.values())

            all_judged = await wait_until(
                judged, SETTLE_SECONDS + 4 * run.poll_max_s + run.delay_ms / 1000 + 30, step=0.2)
            # A late duplicate would show.
            await asyncio.sleep(DETECTOR_INTERVAL + run.poll_max_s + 0.5)
            drain_s = time.monotonic() - writes_done
            verdicts = list(watcher.recent)
            counter_total = sample_sum(service.registry, "gtmon_lww_conflicts",
                                       "gtmon_lww_conflicts_total")
            watched = watcher.status()
            observe_errors = watcher.observe_errors
        finally:
            stopped = await stop_service(service, name, timeout=20.0)
        truths = {mode: await asyncio.to_thread(control.truth, table)
                  for mode, table in tables.items()}
        in_flight = control.state()["in_flight"]
    if dump is not None:
        with open(dump, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"cell": name, "verdicts": verdicts, "truths": truths}) + "\n")
    results = {
        mode: score(truths[mode], [v for v in verdicts if v["table"] == table])
        for mode, table in tables.items()
    }
    certain = sum(1 for v in verdicts if v["certain"] and v["table"] in tables.values())
    cell = {
        "link_delay_ms": run.delay_ms, "link_jitter_ms": run.jitter_ms,
        "poll_interval_min_s": run.poll_min_s, "poll_interval_max_s": run.poll_max_s,
        "activity": run.activity, "items": run.items, "rounds": run.rounds,
        "round_gap_s": gap, "canary": run.canary, "canary_lags_before_workload": canary_ready,
        "streams_in_effect": streams_in_effect,
        "modes": results,
        "counter_total": counter_total,
        "counter_equals_certain_verdicts": counter_total == certain,
        "all_items_judged": all_judged,
        "tracked_keys_left": {t: s["tracked_keys"] for t, s in watched["tables"].items()},
        "observe_errors": observe_errors,
        "all_writes_delivered": all_delivered,
        "in_flight_at_end": in_flight,
        "get_records_per_reader_s": round(get_records_rate, 3),
        "service_stopped_cleanly": stopped,
        "workload": workload,
        "drain_seconds": round(drain_s, 1),
        "cell_seconds": round(time.monotonic() - started, 1),
        "load_average": {"start": load_at_start, "end": load_average()},
        **run.extra,
    }
    log(f"{name}: done in {cell['cell_seconds']} s (load {cell['load_average']['end'][0]}): "
        + "; ".join(f"{m} P={r['precision']} R={r['recall']} lost={r['lost_writes']} "
                    f"amb={r['ambiguous']} unc={r['uncertain']}" for m, r in results.items()))
    return cell


# ---- scoring -------------------------------------------------------------------------------

def _number(text: Any) -> str:
    """A DynamoDB number as DynamoDB stores it: leading and trailing zeros trimmed, so
    "1712345678.120" (as a client wrote it) and "1712345678.12" (as a verdict logs it)
    are one value. Written here, not imported from the detector: the scorer must not
    share the code it checks."""
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        return str(text)
    return "0" if value.is_zero() else format(value.normalize(), "f")


def _value(av: Any) -> Any:
    """One DynamoDB-JSON attribute value with its numbers normalised and its sets sorted."""
    if not isinstance(av, dict) or len(av) != 1:
        return av
    ((tag, raw),) = av.items()
    if tag == "N":
        return {tag: _number(raw)}
    if tag == "NS":
        return {tag: sorted({_number(x) for x in raw})}
    if tag in ("SS", "BS"):
        return {tag: sorted(set(raw))}
    if tag == "M" and isinstance(raw, dict):
        return {tag: {k: _value(v) for k, v in raw.items()}}
    if tag == "L" and isinstance(raw, list):
        return {tag: [_value(v) for v in raw]}
    return {tag: raw}


def _canon(value: Any) -> str:
    """A key or an image (DynamoDB-JSON) as one string: equal values, equal strings.

    Numbers are compared by value: the truth keeps each write's image as its client spelt
    it, the daemon logs the canonical image (the demo traffic's UpdatedAt "...120" comes
    back as "...12"); compared as written, one write in ten looked like a verdict naming a
    write that was not lost."""
    if isinstance(value, dict):
        value = {k: _value(v) for k, v in value.items()}
    return json.dumps(value, sort_keys=True)


def _match(lost: list[tuple[dict[str, Any], dict[str, Any]]], verdicts: list[dict[str, Any]],
           strict: bool) -> dict[str, Any]:
    """One-to-one matching of certain verdicts to lost writes.

    strict: the verdict's lost image identifies the truth write (every image is unique in
    this workload), and its named regions must be that write's origin and its winner's.
    loose (the issue's wording): any unmatched lost write on the item whose origin and
    winner origin are the verdict's loser and winner regions.
    """
    by_key: dict[str, list[int]] = defaultdict(list)
    for index, (loser, _winner) in enumerate(lost):
        by_key[_canon(loser["key"])].append(index)
    matched: dict[int, str] = {}
    outcome: Counter[str] = Counter()
    latencies: list[float] = []
    labels: list[tuple[dict[str, Any], str]] = []  # (counted verdict, tp | ambiguous | wrong)

    def regions_ok(verdict: dict[str, Any], index: int, wildcard: bool) -> bool:
        loser, winner = lost[index]
        return all(
            verdict[field] == truth["origin"] or (wildcard and verdict[field] == "unknown")
            for field, truth in (("loser_region", loser), ("winner_region", winner)))

    def identity(verdict: dict[str, Any]) -> set[str]:
        """The lost write's image, or the candidates when the verdict names none."""
        if verdict.get("lost_image") is not None:
            return {_canon(verdict["lost_image"])}
        return {_canon(c) for c in verdict.get("candidates") or []}

    def candidates(verdict: dict[str, Any]) -> list[int]:
        free = [i for i in by_key.get(_canon(verdict["key"]), []) if i not in matched]
        if strict:
            images = identity(verdict)
            return [i for i in free if _canon(lost[i][0]["image"]) in images]
        return free

    certain = [v for v in verdicts if v["certain"]]
    named = [v for v in certain if "unknown" not in (v["winner_region"], v["loser_region"])]
    ambiguous = [v for v in certain if "unknown" in (v["winner_region"], v["loser_region"])]
    for verdict in named:  # named first, so an ambiguous verdict never takes a TP's write
        free = candidates(verdict)
        hit = next((i for i in free if regions_ok(verdict, i, False)), None)
        if hit is not None:
            matched[hit] = "tp"
            outcome["tp"] += 1
            labels.append((verdict, "tp"))
            latencies.append(float(verdict["reported_at"]) - float(lost[hit][0]["accepted_at"]))
            continue
        labels.append((verdict, "wrong"))
        if free:
            outcome["fp_wrong_regions"] += 1  # the right lost write, the wrong winner or loser
        elif not by_key.get(_canon(verdict["key"])):
            outcome["fp_no_loss_on_item"] += 1
        elif strict and not any(
                _canon(lost[i][0]["image"]) in identity(verdict)
                for i in by_key[_canon(verdict["key"])]):
            outcome["fp_write_not_lost"] += 1  # the item lost a write, but not this one
        else:
            outcome["fp_more_verdicts_than_losses"] += 1
    for verdict in ambiguous:
        hit = next((i for i in candidates(verdict) if regions_ok(verdict, i, True)), None)
        if hit is None:
            outcome["ambiguous_unmatched"] += 1
            labels.append((verdict, "wrong"))
            continue
        labels.append((verdict, "ambiguous"))
        matched[hit] = "ambiguous"
        outcome["ambiguous_matched"] += 1
        latencies.append(float(verdict["reported_at"]) - float(lost[hit][0]["accepted_at"]))
    # Verdicts that do not move the counter (certain=False): which of them name a lost
    # write (by image or candidates), regions taken as wildcards. Not in precision/recall.
    for verdict in (v for v in verdicts if not v["certain"]):
        hit = next((i for i in candidates(verdict) if regions_ok(verdict, i, True)), None)
        if hit is None:
            outcome["uncertain_unmatched"] += 1
            continue
        matched[hit] = "uncertain"
        outcome["uncertain_matched"] += 1
    return {"outcome": outcome, "matched": matched, "latencies": latencies,
            "named": len(named), "ambiguous": len(ambiguous), "labels": labels}


def _means(value: Any) -> str:
    """A `*_known_by` value as one label (a list of means joined with '+')."""
    if isinstance(value, list | tuple | set):
        return "+".join(sorted(str(v) for v in value)) or "none"
    return str(value)


def known_by(labels: list[tuple[dict[str, Any], str]]) -> dict[str, Any] | None:
    """Per side (loser, winner) and means: counted verdicts, and how many were TPs.

    None when no verdict entry carries ``loser_known_by`` / ``winner_known_by`` (a
    detector that does not report them yet)."""
    sides: dict[str, dict[str, Counter[str]]] = {"loser": {}, "winner": {}}
    seen = False
    for verdict, label in labels:
        for side in sides:
            value = verdict.get(f"{side}_known_by")
            if value is None:
                continue
            seen = True
            counts = sides[side].setdefault(_means(value), Counter())
            counts["counted"] += 1
            counts[label] += 1
    if not seen:
        return None
    return {side: {means: {k: counts[k] for k in ("counted", "tp", "ambiguous", "wrong")}
                   for means, counts in sorted(by.items())}
            for side, by in sides.items()}


def score(truth: dict[str, Any], verdicts: list[dict[str, Any]]) -> dict[str, Any]:
    writes = {w["write_id"]: w for w in truth["writes"]}
    lost = [(writes[p["write_id"]], writes[p["lost_to"]]) for p in truth["lost"]
            if p["write_id"] in writes and p["lost_to"] in writes]
    strict = _match(lost, verdicts, strict=True)
    loose = _match(lost, verdicts, strict=False)
    outcome, matched = strict["outcome"], strict["matched"]
    certain = [v for v in verdicts if v["certain"]]
    lost_per_key = Counter(_canon(loser["key"]) for loser, _ in lost)
    certain_per_key = Counter(_canon(v["key"]) for v in certain)
    keys = set(lost_per_key) | set(certain_per_key)
    count_exact = sum(1 for k in keys if certain_per_key[k] == lost_per_key[k])
    tp = outcome["tp"]
    fp = sum(n for k, n in outcome.items() if k.startswith("fp_"))
    wrong = fp + outcome["ambiguous_unmatched"]
    loose_tp = loose["outcome"]["tp"]
    loose_fp = sum(n for k, n in loose["outcome"].items() if k.startswith("fp_"))

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    def ms(values: list[float], q: float) -> float | None:
        value = percentile(values, q)
        return None if value is None else round(value * 1000.0)

    lat = strict["latencies"]
    return {
        "writes": len(writes),
        "lost_writes": len(lost),
        "items_with_losses": len(lost_per_key),
        "items_with_2plus_losses": sum(1 for n in lost_per_key.values() if n >= 2),
        "verdicts": len(verdicts),
        "certain_verdicts": len(certain),
        "tp": tp,
        "fp": fp,
        "fp_detail": {k: n for k, n in outcome.items() if k.startswith("fp_")},
        "fn": len(lost) - tp,
        "fn_not_even_ambiguous": sum(1 for i in range(len(lost))
                                     if strict["matched"].get(i) not in ("tp", "ambiguous")),
        "fn_not_reported_at_all": len(lost) - len(matched),
        "ambiguous": strict["ambiguous"],
        "ambiguous_matched": outcome["ambiguous_matched"],
        "ambiguous_unmatched": outcome["ambiguous_unmatched"],
        "uncertain": len(verdicts) - len(certain),
        "uncertain_matched": outcome["uncertain_matched"],
        "uncertain_unmatched": outcome["uncertain_unmatched"],
        "wrong_counted": wrong,
        "precision": ratio(tp, tp + fp),
        "precision_counted": ratio(len(certain) - wrong, len(certain)),
        "recall": ratio(tp, len(lost)),
        "recall_incl_ambiguous": ratio(tp + outcome["ambiguous_matched"], len(lost)),
        "reported_incl_uncertain": ratio(len(matched), len(lost)),
        "count_exact_share": ratio(count_exact, len(keys)),
        "loose_match": {"tp": loose_tp, "fp": loose_fp, "precision": ratio(loose_tp, loose_tp + loose_fp),
                        "recall": ratio(loose_tp, len(lost))},
        "latency_ms": {"n": len(lat), "p50": ms(lat, 50), "p99": ms(lat, 99), "max": ms(lat, 100)},
        "counted_by_verdict_mode": dict(sorted(Counter(str(v.get("mode")) for v in certain).items())),
        "known_by": known_by(strict["labels"]),
        "_sums": (tp, fp, len(lost), tp + outcome["ambiguous_matched"], count_exact, len(keys),
                  strict["ambiguous"], len(verdicts) - len(certain), len(matched), wrong,
                  len(certain)),
        "_latencies": lat,
    }


def pool_modes(cells: list[dict[str, Any]]) -> dict[str, Any]:
    pooled: dict[str, Any] = {}
    modes = [m for m in MODES if any(m in c["modes"] for c in cells)]
    for mode in modes:
        sums = [0] * 11
        lat: list[float] = []
        for cell in cells:
            if mode not in cell["modes"]:
                continue
            r = cell["modes"][mode]
            sums = [a + b for a, b in zip(sums, r["_sums"], strict=True)]
            lat.extend(r["_latencies"])
        tp, fp, lost, matched, exact, keys, amb, unc, reported, wrong, counted = sums
        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        pooled[mode] = {
            "lost_writes": lost, "tp": tp, "fp": fp, "fn": lost - tp, "ambiguous": amb,
            "uncertain": unc, "counted": counted, "wrong_counted": wrong,
            "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "precision_counted": round((counted - wrong) / counted, 4) if counted else None,
            "recall": round(tp / lost, 4) if lost else None,
            "recall_incl_ambiguous": round(matched / lost, 4) if lost else None,
            "reported_incl_uncertain": round(reported / lost, 4) if lost else None,
            "count_exact_share": round(exact / keys, 4) if keys else None,
            "latency_ms": {"n": len(lat), "p50": None if p50 is None else round(p50 * 1000),
                           "p99": None if p99 is None else round(p99 * 1000)},
        }
    return pooled


# ---- main ----------------------------------------------------------------------------------

def _csv(text: str | None, cast: Any = str) -> list[Any] | None:
    return None if text is None else [cast(x.strip()) for x in text.split(",") if x.strip()]


def plan_runs(args: argparse.Namespace) -> list[RunSpec]:
    """The runs of the chosen grid, narrowed by the filters; a run keeps the tables asked for."""
    legacy = args.grid == "legacy"
    quick = args.quick
    runs: list[RunSpec] = []
    if legacy:
        items = args.items or (LEGACY_QUICK_ITEMS if quick else LEGACY_ITEMS)
        rounds = args.rounds or (LEGACY_QUICK_ROUNDS if quick else LEGACY_ROUNDS)
        pairs = LEGACY_QUICK if quick else [(d, p) for d in LEGACY_DELAYS_MS for p in LEGACY_POLLS_S]
        cells: list[tuple[int, float, float | None]] = [(d, p, args.round_gap) for d, p in pairs]
        if not quick and args.round_gap is None:
            cells.append(HOT_CELL)
        for delay_ms, poll_s, gap_s in cells:
            runs.append(RunSpec(
                name=f"d{delay_ms}ms_p{poll_s:g}s" + ("" if gap_s is None else f"_gap{gap_s:g}s"),
                delay_ms=delay_ms, jitter_ms=0.0, poll_min_s=poll_s, poll_max_s=poll_s,
                activity="idle", modes=list(GRID_MODES["legacy"]), items=items, rounds=rounds,
                spread=None, canary=False, gap_s=gap_s, default_gap=gap_s is None))
    else:
        items = args.items or (ORDINARY_QUICK_ITEMS if quick else ORDINARY_ITEMS)
        rounds = args.rounds or (ORDINARY_QUICK_ROUNDS if quick else ORDINARY_ROUNDS)
        combos = [ORDINARY_QUICK] if quick else [
            (d, a) for d in ORDINARY_DELAYS_MS for a in ACTIVITIES]
        for delay_ms, activity in combos:
            ceiling = args.poll_ceiling
            runs.append(RunSpec(
                name=f"d{delay_ms}ms_p{POLL_FLOOR_S:g}-{ceiling:g}s_{activity}",
                delay_ms=delay_ms, jitter_ms=round(delay_ms * ORDINARY_JITTER, 3),
                poll_min_s=POLL_FLOOR_S, poll_max_s=ceiling, activity=activity,
                modes=list(GRID_MODES["ordinary"]), items=items, rounds=rounds, spread=SPREAD_S,
                canary=not args.no_canary, gap_s=args.round_gap,
                default_gap=args.round_gap is None))
    delays = _csv(args.delays, int)
    activities = _csv(args.activity)
    attributes = _csv(args.attributes)
    patterns = _csv(args.cells)
    chosen: list[RunSpec] = []
    for run in runs:
        if delays is not None and run.delay_ms not in delays:
            continue
        if activities is not None and run.activity not in activities:
            continue
        run.modes = [
            m for m in run.modes
            if (attributes is None or m in attributes)
            and (patterns is None or any(fnmatch.fnmatchcase(f"{run.name}/{m}", p)
                                         or fnmatch.fnmatchcase(run.name, p) for p in patterns))
        ]
        if run.modes:
            chosen.append(run)
    return chosen


async def main_async(args: argparse.Namespace, runs: list[RunSpec]) -> dict[str, Any]:
    budget = args.budget_minutes * 60.0 if args.budget_minutes else (
        LEGACY_BUDGET_S if args.grid == "legacy" else ORDINARY_BUDGET_S)
    started = time.monotonic()
    cells: list[dict[str, Any]] = []
    skipped: list[str] = []
    for index, run in enumerate(runs):
        elapsed = time.monotonic() - started
        if not args.quick and elapsed + run.expected_seconds() > budget:
            skipped.append(run.name)
            log(f"skipping {run.name}: would overrun the {budget / 60:.0f}-minute budget")
            continue
        cell = await run_cell(run, args.seed + index, args.dump)
        cell["name"] = run.name
        cell["default_round_gap"] = run.default_gap
        cells.append(cell)
    return {"cells": cells, "skipped": skipped}


def _git_state(directory: Path, pathspec: str) -> tuple[str | None, list[str]]:
    """HEAD of the checkout holding `directory`, and its uncommitted files under `pathspec`."""
    try:
        commit = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(directory), "status", "--porcelain", "--", pathspec],
                               capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, []
    return commit, sorted(line[3:] for line in dirty.splitlines() if line.strip())


def code_identity() -> dict[str, Any]:
    """Which monitor package ran (PYTHONPATH may point at another checkout), and which bench."""
    import monitor

    path = Path(monitor.__file__).resolve().parent
    commit, dirty = _git_state(path, ".")
    bench_commit, bench_dirty = _git_state(Path(__file__).resolve().parent, Path(__file__).name)
    return {"monitor_file": str(path / "__init__.py"), "git_commit": commit,
            "monitor_uncommitted_changes": dirty, "bench_file": str(Path(__file__).resolve()),
            "bench_git_commit": bench_commit, "bench_uncommitted": bool(bench_dirty)}


def legacy_targets(cells: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, bool]]:
    targets = {
        "exact_precision": 1.0,
        "exact_recall": 1.0,
        "version_only_count_exact_share": 1.0,
        "version_only_fp": 0,
        "counter_equals_certain_verdicts": True,
        "inferred": "reported as measured (no target)",
        "why": (
            "exact mode (version + writer attribute, no deletes): every lost write sits at a "
            "version level the surviving line also holds (a sibling), and the writer "
            "attribute names both regions, so the streams determine every verdict: nothing "
            "may be missed or invented. version_only: the count per item is exact by the same "
            "argument, regions may be 'unknown' but a named one is never wrong. inferred: "
            "origins come from observation times, whose error (a poll interval) is of the "
            "order of the link delay for short links, so no target is claimed."
        ),
    }

    def all_cells(mode: str, field_: str, want: Any) -> bool:
        having = [c for c in cells if mode in c["modes"]]
        return bool(having) and all(c["modes"][mode][field_] == want for c in having)

    met = {
        "exact_precision": all_cells("exact", "precision", 1.0),
        "exact_recall": all_cells("exact", "recall", 1.0),
        "version_only_count_exact_share": all_cells("version_only", "count_exact_share", 1.0),
        "version_only_fp": all_cells("version_only", "fp", 0),
        "counter_equals_certain_verdicts": bool(cells) and all(
            c["counter_equals_certain_verdicts"] for c in cells),
    }
    return targets, {k: v for k, v in met.items() if any(
        k.startswith(m) for m in {m for c in cells for m in c["modes"]}) or k.startswith("counter")}


def ordinary_targets(cells: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, bool],
                                                            dict[str, list[str]]]:
    targets = {
        "precision": 1.0,
        "recall_where_link_delay_ge_2x_poll_floor": 0.95,
        "counter_equals_certain_verdicts": True,
        "why": (
            "precision: a counted conflict (one that moves gtmon_lww_conflicts_total) is never "
            "wrong, in every cell: no counted verdict with wrong regions, on a write that was "
            "not lost, or beyond the losses (an 'unknown' region that names a real loss is "
            "not wrong). recall: once a link takes at least twice the poll floor, arrival "
            "times separate the writers' regions, so at least 95 % of lost writes are counted "
            "with both regions right, with or without attributes, idle or busy (issue 11)."
        ),
    }
    failures: dict[str, list[str]] = {"precision": [],
                                      "recall_where_link_delay_ge_2x_poll_floor": [],
                                      "counter_equals_certain_verdicts": []}
    for cell in cells:
        for mode, r in cell["modes"].items():
            where = f"{cell['name']}/{mode}"
            if r["wrong_counted"]:
                failures["precision"].append(where)
            if (cell["link_delay_ms"] / 1000 >= 2 * cell["poll_interval_min_s"]
                    and r["lost_writes"] and (r["recall"] or 0.0) < 0.95):
                failures["recall_where_link_delay_ge_2x_poll_floor"].append(where)
        if not cell["counter_equals_certain_verdicts"]:
            failures["counter_equals_certain_verdicts"].append(cell["name"])
    met = {k: bool(cells) and not v for k, v in failures.items()}
    return targets, met, failures


def grid_rows(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per result cell (run x attributes), for tables in the docs."""
    rows = []
    for cell in cells:
        for mode, r in cell["modes"].items():
            rows.append({
                "cell": f"{cell['name']}/{mode}", "link_delay_ms": cell["link_delay_ms"],
                "poll_floor_s": cell["poll_interval_min_s"], "activity": cell["activity"],
                "attributes": mode, "lost_writes": r["lost_writes"],
                "counted": r["certain_verdicts"], "tp": r["tp"], "fp": r["fp"],
                "wrong_counted": r["wrong_counted"], "ambiguous": r["ambiguous"],
                "uncertain": r["uncertain"], "precision": r["precision"],
                "precision_counted": r["precision_counted"], "recall": r["recall"],
                "recall_incl_ambiguous": r["recall_incl_ambiguous"],
                "latency_p50_ms": r["latency_ms"]["p50"], "known_by": r["known_by"],
                "get_records_per_reader_s": cell["get_records_per_reader_s"],
            })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="one small run of the grid (< 60 s; the test suite's)")
    parser.add_argument("--grid", choices=("ordinary", "legacy"), default="ordinary",
                        help="ordinary: issue 11's grid (default); legacy: the first detector "
                        "work's cells (fixed delays, floor = ceiling, conflicts within D/2)")
    parser.add_argument("--cells", metavar="GLOB,...",
                        help="only result cells whose RUN/MODE or RUN matches, e.g. "
                        "'d500ms*_busy/none' or '*/partial'")
    parser.add_argument("--delays", metavar="MS,...", help="only these link delays")
    parser.add_argument("--activity", metavar="idle,busy", help="only these activities")
    parser.add_argument("--attributes", metavar="MODE,...",
                        help="only these tables (ordinary: none, partial, full; legacy: exact, "
                        "version_only, inferred)")
    parser.add_argument("--items", type=int, help="items per table (default: the grid's)")
    parser.add_argument("--rounds", type=int, help="update rounds per run (default: the grid's)")
    parser.add_argument("--no-canary", action="store_true",
                        help="ordinary grid: run the daemon with the canary off")
    parser.add_argument("--budget-minutes", type=float,
                        help="skip runs that would overrun (default 28, legacy 14)")
    parser.add_argument("--nice", type=int, default=0, metavar="N",
                        help="lower this process's priority (and its children's) by N")
    parser.add_argument("--seed", type=int, default=20240605)
    parser.add_argument("--poll-ceiling", type=float, default=POLL_CEILING_S, metavar="SECONDS",
                        help="ordinary grid: the readers' idle ceiling "
                        "(poll_interval_max_seconds; default %(default)s)")
    parser.add_argument("--round-gap", type=float, metavar="SECONDS",
                        help="seconds between update rounds (default: see round_gap(); "
                        "shorter gaps measure items that are written again before they settle)")
    parser.add_argument("--dump", metavar="FILE",
                        help="append each run's verdicts and ground truth as a JSON line")
    parser.add_argument("--workload", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.workload:
        print(json.dumps(run_workload(json.loads(args.workload))), flush=True)
        return
    if args.nice:
        os.nice(args.nice)
    runs = plan_runs(args)
    if not runs:
        parser.error("the filters leave no cell to run")

    from monitor.logs import configure_logging

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    configure_logging("json", "error", stream=sys.stderr)
    logging.getLogger("apscheduler").setLevel(logging.CRITICAL)
    identity = code_identity()
    log(f"monitor from {identity['monitor_file']} (commit {identity.get('git_commit')})")
    load_start = load_average()
    started = time.monotonic()
    run = asyncio.run(main_async(args, runs))
    cells = run["cells"]
    # Pooled over the cells with the default round gap (the hot-item cell's latency is
    # the workload's, not the detector's); all of them count for the targets.
    pooled = pool_modes([c for c in cells if c["default_round_gap"]] or cells)
    for cell in cells:
        for r in cell["modes"].values():
            r.pop("_sums")
            r.pop("_latencies")
    results: dict[str, Any] = {
        "cells": {c["name"]: c for c in cells},
        "pooled": pooled,
        "skipped_cells": run["skipped"],
        "wall_seconds": round(time.monotonic() - started, 1),
        "load_average": {"start": load_start, "end": load_average(),
                         "cpu_count": os.cpu_count(), "nice": os.nice(0)},
    }
    if args.grid == "legacy":
        targets, met = legacy_targets(cells)
    else:
        targets, met, failures = ordinary_targets(cells)
        results["table"] = grid_rows(cells)
        results["target_failures"] = failures
    for cell in cells:
        cell.pop("name")
    legacy = args.grid == "legacy"
    fields = stream_fields()
    params: dict[str, Any] = {
        "quick": args.quick,
        "grid": args.grid,
        "seed": args.seed,
        "filters": {k: getattr(args, k) for k in ("cells", "delays", "activity", "attributes")
                    if getattr(args, k) is not None},
        "regions": REGIONS,
        "runs": [r.name for r in runs],
        "link_delays_ms": sorted({r.delay_ms for r in runs}),
        "link_delay_kind": ("fixed, every directed link" if legacy else
                            f"uniform in [0.95 D, 1.05 D] ({ORDINARY_JITTER:.0%} jitter), every "
                            "directed link, in order per link"),
        "poll_intervals_s": sorted({(r.poll_min_s, r.poll_max_s) for r in runs}),
        "activities": sorted({r.activity for r in runs}),
        "busy_writes_per_s_per_table": None if legacy else BUSY_WRITES_PER_S,
        "items_per_table": runs[0].items,
        "update_rounds": runs[0].rounds,
        "p_conflict_per_item_round": P_CONFLICT,
        "p_three_way_given_conflict": P_THREE_WAY,
        "round_gap": ("max(1.5 D + 0.5 s, D + settle + 2 x poll ceiling + 2 s)"
                      if args.round_gap is None else args.round_gap),
        "conflict_write_spread": ("within link delay / 2" if legacy else
                                  f"each writer {SPREAD_S[0] * 1000:.0f}-{SPREAD_S[1] * 1000:.0f} "
                                  "ms after the previous one"),
        "settle_seconds": SETTLE_SECONDS,
        "canary": None if legacy else (
            "off" if args.no_canary else f"on, every {CANARY_INTERVAL_S:g} s"),
        "tables": {m: {"name": MODES[m].table, "conflicts": MODES[m].conflicts,
                       "share_of_writes_with_attributes": MODES[m].share}
                   for m in dict.fromkeys(m for r in runs for m in r.modes)},
        "deletes": False,
        "stream_settings_known": sorted(fields),
        "streams_burst_seconds": (
            cells[0]["streams_in_effect"].get("burst_seconds") if cells and "burst_seconds" in fields
            else "not supported by this daemon"),
        **identity,
    }
    emit("conflicts", params, results, targets, met)


if __name__ == "__main__":
    main()
