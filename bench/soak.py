"""The soak: the daemon through an hour of faults and two kill -9s, checked against ground truth.

Issue 15, Deliver item 7. On loopback only:

- the sandbox's emulator (monitor.sandbox.sandbox_settings: its link delays of 0.6-1.5 s
  and client round trips of 4/75/220 ms) in a child process, with shard rollover every
  60 s and stream iterators that expire after 20 s (10 s in --quick), so every reader
  meets closed shards and expired iterators, above all after an outage;
- traffic from this process: the sandbox's demo traffic on `Orders` (writer attribute on
  most writes, no version: conflicts there are inferred, reported but not checked), and
  on `SoakExact` writers that keep a version counter (optimistic locking: read in their
  own region, write Version + 1 on condition) and store their region in `Region`, on
  every write, so conflicts are counted in exact mode: one background writer per region
  on items only it writes, and every few seconds two regions writing the same item
  50-300 ms apart, before either write replicates (a real last-writer-wins loss);
- the daemon as deployed, `python -m monitor run --config FILE` in a child process, on
  jemalloc as deploy/Dockerfile and deploy/systemd/gtmon.service run it (`--allocator
  pymalloc`: CPython's allocator, what a plain pip install runs), at
  1 canary/s, with the sandbox's AWS settings (read timeout 3 s, 2 attempts), checkpoints
  in a JSON file and `log_item_images` on (so each verdict names its lost write). It is
  killed with SIGKILL twice (before minute 10 in the full run, so RSS from minute 10 on
  is one process's) and restarted from its checkpoints; its JSON log is appended across
  all three runs;
- a random fault schedule (seeded; each kind once before any repeats) through the
  emulator's control API, one fault at a time with gaps of at least 16 s (enough
  canaries to see each recovery): link pauses (the first fault, as long as the run
  allows: 5 min in the full run), region outages answering errors and as a black hole,
  throttling, garbage answers and latency spikes. No fault ends while the daemon is down
  or starting. The 3-minute --quick run has room for four or five of the six kinds.

Checks (`met`; the process exits 3 when one fails, and the JSON says which):

- `lost_writes_counted_exactly_once`: every write of SoakExact the emulator's truth
  (`/gtmon/truth`) says was lost is matched by exactly one counted (certain) `lww_conflict`
  in the daemon's log across the three runs, with the right loser and winner regions, and
  no counted verdict is left over (scored by bench/conflicts.py's `score`: the lost
  image identifies the write);
- `no_component_down_at_end`: every `gtmon_component_up` of the last run is 1;
- `every_pair_measured_again_after_each_fault`: for each fault, every pair it touches has
  a canary measurement logged within one canary interval + that link's delay bound
  (base + median jitter x e^(3 sigma)) + `READ_SLACK_S` of the fault's end;
- `rss_growth_le_5pct_minute10_to_end` (runs of 20 minutes or more): the daemon's RSS at
  the end against minute 10 (and, reported beside it, over the run's second half: growth
  once the process has met every fault kind, which is what a leak would show);
- `every_pair_back_within_10_canaries` (Deliver item 4): per fault end and affected pair,
  the canaries written after the end until the error bound is back at its pre-fault level
  (bench/fault_recovery.py's rule: the first canary starting a run of 5 whose median is
  within 1.5x the median of the pair's canaries written in the minute before the fault,
  outside any fault). Pairs with fewer than 5 pre-fault canaries are reported, not scored
  (a --quick run may score none: then the check is left out and `recovery_check` says so).

The 30-minute pause of one link at 1 canary/s is not a phase of this run (it would take
half of it): it is bench/stall_memory.py (the canary runner unchanged, in virtual time);
its last result, bench/results/stall_memory.json, is quoted under `pause_30min_memory`.

    python bench/soak.py [--quick] [--minutes M] [--seed N] [--out FILE] [--workdir DIR]
                         [--allocator pymalloc|jemalloc]

--quick is 3 minutes (faults scaled down: pauses up to 15 s). The JSON goes to stdout
(last) and, with --out, to FILE; progress and the load average go to stderr.
"""

from __future__ import annotations

import argparse
import ctypes.util
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    PYTHON,
    ROOT,
    EmulatorProcess,
    boto_client,
    create_global_table,
    emit,
    log,
    proc_rss_bytes,
    sandbox_emulator_spec,
    stop_process,
)
from conflicts import score
from fault_recovery import RUN, recovery_canaries
from footprint import free_port
from prometheus_client.parser import text_string_to_metric_families

import monitor
from monitor.emulator.control import ControlClient
from monitor.emulator.delays import DelaySpec
from monitor.emulator.traffic import ORDERS_TABLE, DemoTraffic, create_orders_table
from monitor.probes.judge import DEFAULT_PROBE_TEMPLATE
from monitor.sandbox import REGIONS, SANDBOX_CLIENT_LATENCY, SANDBOX_LINK_DELAYS

EXACT_TABLE = "SoakExact"
CANARY_TABLE = "gtmon-canary"
INTERVAL_S = 1.0
READ_SLACK_S = 1.0  # reading a canary that has arrived: round trips and the read plan
RECOVERY_TARGET = 10
RECOVERY_FACTOR = 1.5
RSS_GROWTH_TARGET = 0.05
PAUSE_MAX_S = 300.0
GAP_MIN_S = 16.0
CHECK_FAILED = 3  # exit code when a check fails (1 is a crash, 2 a usage error)
KINDS = ("pause", "outage_error", "outage_blackhole", "throttle", "garbage", "latency")
PAIRS = [(a, b) for a in REGIONS for b in REGIONS if a != b]


# ---- the plan (pure) ----------------------------------------------------------------------

@dataclass
class Fault:
    kind: str
    start_s: float
    end_s: float
    params: dict[str, Any]
    pairs: list[tuple[str, str]]
    started_at: float | None = None  # wall clock, when applied
    ended_at: float | None = None

    def actions(self) -> tuple[tuple[str, dict[str, Any]], tuple[str, dict[str, Any]]]:
        """The control API calls that start and end it (what `gtmon fault` sends)."""
        p = self.params
        if self.kind == "pause":
            link = {"from": p["from"], "to": p["to"]}
            return ("pause", link), ("resume", link)
        region = {"region": p["region"]}
        if self.kind.startswith("outage"):
            return ("outage", region | {"mode": p["mode"]}), ("restore", region)
        if self.kind in ("throttle", "garbage"):
            return (self.kind, region | {"fraction": p["fraction"]}), (self.kind, region | {"fraction": 0.0})
        normal = SANDBOX_CLIENT_LATENCY[p["region"]]
        spike = region | {"ms": p["ms"], "jitter_ms": p["jitter_ms"], "kind": "uniform"}
        back = region | {"ms": normal.ms, "jitter_ms": normal.jitter_ms, "kind": normal.kind}
        return ("latency", spike), ("latency", back)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "start_s": round(self.start_s, 1), "end_s": round(self.end_s, 1),
                "seconds": round(self.end_s - self.start_s, 1), "params": self.params,
                "pairs": [f"{a}->{b}" for a, b in self.pairs]}


@dataclass(frozen=True)
class Plan:
    run_s: float
    faults_from_s: float
    faults_until_s: float
    traffic_until_s: float
    kills_s: tuple[float, ...]
    down_s: float
    startup_s: float
    iterator_ttl_s: float
    conflict_every_s: float
    rss_every_s: float
    faults: list[Fault] = field(default_factory=list)


PROBE_PREFIX = DEFAULT_PROBE_TEMPLATE.split("{", 1)[0]


def plan_run(minutes: float, seed: int) -> Plan:
    """Timeline of a run of `minutes`: kills, faults, when traffic stops. Full runs (60 min)
    get 5-minute pauses and 20-90 s faults; shorter runs scale them down."""
    run_s = minutes * 60.0
    scale = min(1.0, run_s / 3600.0)
    short = max(0.15, min(1.0, run_s / 900.0))  # other faults and gaps: full size from 15 min
    startup_s = 20.0 if run_s >= 600 else 8.0
    plan = Plan(
        run_s=run_s,
        faults_from_s=min(90.0, 0.1 * run_s),
        faults_until_s=run_s - min(240.0, 0.2 * run_s),
        traffic_until_s=run_s - min(90.0, 0.15 * run_s),
        # Both kills before minute 10, so the RSS check sees one process from minute 10 on.
        kills_s=(min(240.0, 0.3 * run_s), min(420.0, 0.5 * run_s)),
        down_s=10.0 if run_s >= 600 else 2.0,
        startup_s=startup_s,
        iterator_ttl_s=20.0 if run_s >= 600 else 10.0,
        conflict_every_s=8.0 if run_s >= 600 else 3.0,
        rss_every_s=10.0 if run_s >= 600 else 2.0,
    )
    rng = random.Random(seed)
    busy = [(k - 2.0, k + plan.down_s + startup_s) for k in plan.kills_s]
    kinds: list[str] = []
    first_pause = True
    t = plan.faults_from_s
    while True:
        if not kinds:
            kinds = [k for k in KINDS if k != "pause"]
            rng.shuffle(kinds)
            # The long pause first (then shuffled with the rest), so short runs have one too.
            kinds.insert(0 if first_pause else rng.randrange(len(kinds) + 1), "pause")
        kind = kinds[0]
        if kind == "pause":
            seconds = PAUSE_MAX_S * max(scale, 0.05) if first_pause else \
                rng.uniform(30.0, PAUSE_MAX_S) * max(scale, 0.05)
        else:
            seconds = rng.uniform(20.0, 90.0) * short
        start = t
        while any(low <= start + seconds <= high for low, high in busy):
            start += 5.0 * short  # never end a fault while the daemon is down or starting
        if start + seconds > plan.faults_until_s:
            if kind == "pause" and first_pause and seconds > 30.0 * short:
                # The long pause does not fit (short runs): try the others first.
                kinds.append(kinds.pop(0))
                first_pause = False
                continue
            break
        kinds.pop(0)
        if kind == "pause":
            first_pause = False
        plan.faults.append(_fault(kind, start, start + seconds, rng))
        # At least RECOVERY_TARGET + RUN canaries between faults, to see each one's recovery.
        t = start + seconds + GAP_MIN_S + rng.uniform(0.0, 30.0) * short
    return plan


def _fault(kind: str, start: float, end: float, rng: random.Random) -> Fault:
    if kind == "pause":
        source, target = rng.choice(PAIRS)
        return Fault(kind, start, end, {"from": source, "to": target}, [(source, target)])
    region = rng.choice(REGIONS)
    touched = [(a, b) for a, b in PAIRS if region in (a, b)]
    params: dict[str, Any] = {"region": region}
    if kind.startswith("outage"):
        params["mode"] = kind.split("_")[1]
    elif kind == "throttle":
        params["fraction"] = round(rng.uniform(0.3, 0.9), 2)
    elif kind == "garbage":
        params["fraction"] = round(rng.uniform(0.05, 0.3), 2)
    else:
        params["ms"] = round(rng.uniform(500.0, 2000.0))
        params["jitter_ms"] = round(params["ms"] * 0.2)
    return Fault(kind, start, end, params, touched)


def delay_bound_s(spec: DelaySpec) -> float:
    """A link's delay that almost no write exceeds: base + jitter at three sigma."""
    if spec.kind == "lognormal":
        return (spec.ms + spec.jitter_ms * math.exp(3 * spec.sigma)) / 1000.0
    return (spec.ms + spec.jitter_ms) / 1000.0


# ---- reading the daemon's log (pure) ------------------------------------------------------

def read_log(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON events of the daemon's log (all runs) and how many lines were not JSON
    (tracebacks of libraries logging through the standard library)."""
    events, other = [], 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                event = json.loads(line)
            except ValueError:
                other += bool(line.strip())
                continue
            if isinstance(event, dict):
                events.append(event)
    return events, other


def wall(event: dict[str, Any]) -> float:
    """An event's time (structlog's ISO timestamp, UTC) as a Unix time."""
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def measurements(events: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, float]]]:
    """Canary measurements per pair (`canary_lag` events): when logged, when the canary
    was written (logged minus lag: the settling read adds a round trip at most), error."""
    found: dict[tuple[str, str], list[dict[str, float]]] = {pair: [] for pair in PAIRS}
    for event in events:
        if event.get("event") == "canary_lag" and event.get("table") == CANARY_TABLE:
            at = wall(event)
            found.setdefault((event["source"], event["target"]), []).append(
                {"at": at, "written": at - float(event["lag"]), "error": float(event["error"])})
    return found


def after_fault(faults: list[Fault], seen: dict[tuple[str, str], list[dict[str, float]]],
                starts: list[float]) -> list[dict[str, Any]]:
    """Per fault and affected pair: how soon after the end the pair was measured again, and
    how many canaries it took to get the pre-fault error bound back. Recovery counts the
    canaries written before the next fault began; a daemon (re)start (`starts`) from a
    minute before the fault to the end of that span empties the read planner's history,
    so such pairs are reported, not scored."""
    windows = [(f.started_at, f.ended_at) for f in faults if f.started_at and f.ended_at]

    def quiet(t: float) -> bool:
        return not any(a <= t < b for a, b in windows)

    rows = []
    for fault in faults:
        if fault.started_at is None or fault.ended_at is None:
            continue
        until = min((a for a, _ in windows if a >= fault.ended_at), default=math.inf)
        restarted = any(fault.started_at - 60.0 <= s < until for s in starts)
        row: dict[str, Any] = {**fault.to_json(), "pairs": {}, "daemon_restarted": restarted,
                               "applied_seconds": round(fault.ended_at - fault.started_at, 1),
                               "next_fault_after_s": None if until == math.inf
                               else round(until - fault.ended_at, 1)}
        for pair in fault.pairs:
            link = SANDBOX_LINK_DELAYS[pair]
            limit = INTERVAL_S + delay_bound_s(link) + READ_SLACK_S
            pair_seen = seen.get(pair, [])
            first = next((m["at"] for m in pair_seen if m["at"] > fault.ended_at), None)
            before = [m["error"] for m in pair_seen
                      if fault.started_at - 60.0 <= m["written"] < fault.started_at
                      and quiet(m["written"])]
            errors = [m["error"] for m in pair_seen if fault.ended_at <= m["written"] < until][:30]
            median = statistics.median(before) if len(before) >= RUN else None
            back = recovery_canaries(errors, median) if median is not None else None
            scored = median is not None and not restarted and (
                back is not None or len(errors) >= RECOVERY_TARGET + RUN - 1)
            row["pairs"][f"{pair[0]}->{pair[1]}"] = {
                "measured_again_after_s": None if first is None else round(first - fault.ended_at, 2),
                "limit_s": round(limit, 2),
                "measured_again_in_time": first is not None and first - fault.ended_at <= limit,
                "before_n": len(before),
                "before_error_median_ms": None if median is None else round(median * 1000, 1),
                "after_error_ms": [round(e * 1000, 1) for e in errors[:15]],
                "recovery_canaries": back,
                "recovery_scored": scored,
            }
        rows.append(row)
    return rows


def counted_verdicts(events: list[dict[str, Any]], table: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("event") == "lww_conflict" and e.get("table") == table]


def without_probes(truth: dict[str, Any]) -> dict[str, Any]:
    """The truth without gtmon's own conflict probes: each is a real two-region race, so
    the emulator counts its lost write, but gtmon reports probes to the probe runner
    (`conflict_probe` events), never to gtmon_lww_conflicts_total."""
    probe_ids = {w["write_id"] for w in truth["writes"]
                 if any(str(v.get("S", "")).startswith(PROBE_PREFIX) for v in w["key"].values())}
    return {**truth,
            "writes": [w for w in truth["writes"] if w["write_id"] not in probe_ids],
            "lost": [p for p in truth["lost"] if p["write_id"] not in probe_ids]}


# ---- traffic on the exact table ----------------------------------------------------------

class ExactTraffic:
    """Writers with a version counter and their region on every write (exact mode)."""

    def __init__(self, url: str, rng: random.Random, conflict_every_s: float) -> None:
        self.url = url
        self.rng = rng
        self.conflict_every_s = conflict_every_s
        self.stats: Counter[str] = Counter()
        self._seq = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for region in REGIONS:
            self._threads.append(threading.Thread(target=self._background, args=(region,), daemon=True))
        self._threads.append(threading.Thread(target=self._conflicts, daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _count(self, name: str) -> None:
        with self._lock:
            self.stats[name] += 1

    def _next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def _read(self, client: Any, pk: str) -> dict[str, Any] | None:
        item: dict[str, Any] | None = client.get_item(
            TableName=EXACT_TABLE, Key={"pk": {"S": pk}}, ConsistentRead=True).get("Item")
        return item

    def _write(self, client: Any, region: str, pk: str, current: dict[str, Any] | None) -> None:
        """Version read in this region + 1, on condition that it is still there."""
        version = int(current["Version"]["N"]) if current else 0
        seq = self._next_seq()  # every image unique: the lost image names the lost write
        request: dict[str, Any] = {
            "TableName": EXACT_TABLE,
            "Item": {"pk": {"S": pk}, "Version": {"N": str(version + 1)},
                     "Region": {"S": region}, "Seq": {"N": str(seq)}},
        }
        if current is None:
            request["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            request["ConditionExpression"] = "Version = :v"
            request["ExpressionAttributeValues"] = {":v": {"N": str(version)}}
        try:
            client.put_item(**request)
            self._count("puts")
        except client.exceptions.ConditionalCheckFailedException:
            self._count("conditional_check_failed")

    def _guarded(self, name: str, work: Any) -> None:
        try:
            work()
        except Exception as exc:  # injected faults: counted, the traffic goes on
            self._count(f"{name}_errors")
            self._count(f"error_{type(exc).__name__}")

    def _background(self, region: str) -> None:
        client = boto_client(self.url, region)
        rng = random.Random(self.rng.random())
        while not self._stop.wait(rng.expovariate(0.3)):
            pk = f"bg-{region}-{rng.randrange(20)}"
            self._guarded("background", lambda pk=pk: self._write(client, region, pk, self._read(client, pk)))

    def _conflicts(self) -> None:
        clients = {region: boto_client(self.url, region) for region in REGIONS}
        rng = random.Random(self.rng.random())
        n = 0
        while not self._stop.wait(self.conflict_every_s * rng.uniform(0.5, 1.5)):
            first, second = rng.sample(REGIONS, 2)
            pk = f"c-{n % 40}"  # each item rests ~40 intervals between conflicts
            n += 1
            offset = rng.uniform(0.05, 0.3)

            def race(first: str = first, second: str = second, pk: str = pk,
                     offset: float = offset) -> None:
                seen = {r: self._read(clients[r], pk) for r in (first, second)}
                self._write(clients[first], first, pk, seen[first])
                time.sleep(offset)
                self._write(clients[second], second, pk, seen[second])
                self._count("conflicts_staged")

            self._guarded("conflict", race)


# ---- the daemon ---------------------------------------------------------------------------

def daemon_config(url: str, port: int, workdir: Path) -> dict[str, Any]:
    return {
        "instance_id": "soak",
        "regions": REGIONS,
        "aws": {"endpoint_url": url, "connect_timeout_seconds": 1, "read_timeout_seconds": 3,
                "max_attempts": 2},
        "canary": {"interval_seconds": INTERVAL_S, "stall_seconds": 10},
        "tables": [
            {"name": ORDERS_TABLE, "conflicts": {"writer_attribute": "UpdatedIn"}},
            {"name": EXACT_TABLE,
             "conflicts": {"version_attribute": "Version", "writer_attribute": "Region"}},
        ],
        "streams": {"poll_interval_min_seconds": 0.2, "poll_interval_max_seconds": 1.0,
                    "checkpoint_path": str(workdir / "checkpoints.json"), "settle_seconds": 5,
                    "log_item_images": True},
        "metrics": {"host": "127.0.0.1", "port": port},
        "log": {"format": "json", "level": "info"},
    }


class Daemon:
    """`python -m monitor run` in a child process, log appended to one file across runs."""

    def __init__(self, config_path: Path, log_path: Path, port: int,
                 env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.port = port
        self.env = env  # None: this process's environment
        self.process: subprocess.Popen[bytes] | None = None
        self.runs: list[dict[str, Any]] = []

    def start(self, timeout: float = 60.0) -> None:
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [PYTHON, "-m", "monitor", "run", "--config", str(self.config_path)],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log_file, env=self.env,
            )
        started = time.monotonic()
        run: dict[str, Any] = {"pid": self.process.pid, "started_at": time.time()}
        self.runs.append(run)
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the daemon exited with {self.process.returncode}; see {self.log_path}")
            if self.get("/healthz") is not None:
                run["serving_after_s"] = round(time.monotonic() - started, 2)
                status = self.get("/api/status")  # the allocator it runs with, in its own words
                run["allocator"] = None if status is None else json.loads(status).get("allocator")
                return
            time.sleep(0.1)
        raise TimeoutError(f"the daemon did not serve /healthz within {timeout:.0f} s")

    def kill9(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.runs[-1]["killed_at"] = time.time()

    def get(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as answer:
                return str(answer.read().decode())
        except OSError:
            return None

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        text = self.get("/metrics") or ""
        return [(s.labels, s.value) for family in text_string_to_metric_families(text)
                for s in family.samples if s.name == name]

    def rss(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None
        try:
            return proc_rss_bytes(self.process.pid)
        except (OSError, RuntimeError):
            return None


def soak_daemon(url: str, workdir: Path, allocator: str) -> Daemon:
    """The soak's tables in the emulator at `url`, and its daemon (not started yet): config,
    checkpoints and log in `workdir`."""
    create_global_table(url, CANARY_TABLE, REGIONS)
    create_global_table(url, EXACT_TABLE, REGIONS)
    create_orders_table(url, REGIONS)
    port = free_port()
    config_path = workdir / "soak.yaml"
    config_path.write_text(yaml.safe_dump(daemon_config(url, port, workdir)), encoding="utf-8")
    return Daemon(config_path, workdir / "daemon.log", port, allocator_env(allocator))


# ---- the run ------------------------------------------------------------------------------

def soak_emulator_spec(seed: int, iterator_ttl_s: float) -> dict[str, Any]:
    """The sandbox's emulator with the soak's streams: a shard rollover every minute and
    iterators that expire within seconds put the readers' shard handling under load, and
    the ground truth holds every write of the run."""
    return sandbox_emulator_spec() | {
        "streams": {"shard_rollover_seconds": 60.0, "retention_seconds": 900.0,
                    "iterator_ttl_seconds": iterator_ttl_s},
        "truth_max_writes": 200_000,
        "seed": seed,
    }


def run(args: argparse.Namespace, plan: Plan, workdir: Path) -> dict[str, Any]:
    spec = soak_emulator_spec(args.seed, plan.iterator_ttl_s)
    load: list[dict[str, Any]] = []
    rss: list[tuple[float, int | None]] = []
    with EmulatorProcess(spec) as emulator:
        log(f"emulator {emulator.url} (pid {emulator.pid}); workdir {workdir}")
        control = ControlClient(emulator.url)
        daemon = soak_daemon(emulator.url, workdir, args.allocator)
        demo = DemoTraffic(emulator.url, REGIONS, seed=args.seed)
        exact = ExactTraffic(emulator.url, random.Random(args.seed + 1), plan.conflict_every_s)
        daemon.start()
        demo.start()
        exact.start()
        t0 = time.time()
        actions: list[tuple[float, str, Any]] = []
        for fault in plan.faults:
            actions += [(fault.start_s, "fault_start", fault), (fault.end_s, "fault_end", fault)]
        for kill in plan.kills_s:
            actions += [(kill, "kill", None), (kill + plan.down_s, "restart", None)]
        actions += [(plan.traffic_until_s, "traffic_stop", None)]
        actions.sort(key=lambda a: a[0])
        next_rss = 0.0
        next_load = 0.0
        components_end: list[tuple[dict[str, str], float]] = []
        try:
            while True:
                now = time.time() - t0
                while actions and actions[0][0] <= now:
                    _, what, fault = actions.pop(0)
                    if what in ("fault_start", "fault_end"):
                        action, params = fault.actions()[0 if what == "fault_start" else 1]
                        control.fault(action, **params)
                        if what == "fault_start":
                            fault.started_at = time.time()
                            # A slow restart may have delayed the start: the fault still
                            # lasts as planned (its end moves with it).
                            late = fault.started_at - t0 - fault.start_s
                            actions = sorted(
                                [(at + late if a is fault and w == "fault_end" else at, w, a)
                                 for at, w, a in actions], key=lambda x: x[0])
                        else:
                            fault.ended_at = time.time()
                        log(f"{what} {fault.kind} {fault.params}")
                    elif what == "kill":
                        daemon.kill9()
                        log(f"kill -9 daemon (pid {daemon.runs[-1]['pid']})")
                    elif what == "restart":
                        daemon.start()
                        log(f"daemon restarted (pid {daemon.runs[-1]['pid']}, serving after "
                            f"{daemon.runs[-1]['serving_after_s']} s)")
                    else:
                        demo.stop()
                        exact.stop()
                        log(f"traffic stopped: exact {dict(exact.stats)}")
                if now >= next_rss:
                    rss.append((round(now, 1), daemon.rss()))
                    next_rss += plan.rss_every_s
                if now >= next_load:
                    load.append({"t_s": round(now), "load_average": [round(x, 2) for x in os.getloadavg()]})
                    next_load += 60.0
                if now >= plan.run_s:
                    break
                time.sleep(0.1)
            components_end = daemon.samples("gtmon_component_up")
            restarts = daemon.samples("gtmon_component_restarts_total")
            canary_lost = daemon.samples("gtmon_canary_lost_total")
            ready = daemon.get("/readyz") is not None
            truth = control.truth(EXACT_TABLE)
            truth_orders = control.truth(ORDERS_TABLE)
        finally:
            demo.stop()
            exact.stop()
            assert daemon.process is not None
            daemon.runs[-1]["exit_code_on_sigterm"] = stop_process(daemon.process)
    return {
        "t0": t0, "daemon": daemon, "rss": rss, "load": load, "components_end": components_end,
        "restarts": restarts, "canary_lost": canary_lost, "ready_at_end": ready, "truth": truth,
        "truth_orders": truth_orders, "exact_stats": dict(exact.stats),
        "demo": {"writes": demo.writes, "conflicts_staged": demo.conflicts_staged,
                 "errors": demo.errors},
    }


def allocator_env(allocator: str) -> dict[str, str]:
    """The daemon's environment for `--allocator`: this one's, with the allocator's variables
    as deploy/Dockerfile sets them for jemalloc and none of them for CPython's own.

    jemalloc (LD_PRELOAD, every allocation through it: PYTHONMALLOC=malloc) hands the pages
    of freed memory back to the system within minutes of a fault; pymalloc keeps an arena while
    any object in it lives, so a fault's peak stays in the RSS (docs/conflicts.md, "Throughput
    and memory"; bench/fault_memory.py compares the two).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PYTHONMALLOC")}
    if allocator == "pymalloc":
        return env
    library = ctypes.util.find_library("jemalloc")
    if library is None:
        raise SystemExit("--allocator jemalloc: libjemalloc not found (Debian: apt-get install "
                         "libjemalloc2), or run with --allocator pymalloc")
    return env | {"LD_PRELOAD": library, "PYTHONMALLOC": "malloc"}


def rss_growth(rss: list[tuple[float, int | None]], from_s: float) -> dict[str, Any]:
    """RSS from `from_s` to the end (the check), and over the run's second half: by then the
    process has met every fault kind once, so growth there is what a leak would add, while
    the first long outage or pause sets a high-water mark the allocator may keep."""
    at_from = next((v for t, v in rss if t >= from_s and v is not None), None)
    end = next((v for _, v in reversed(rss) if v is not None), None)
    half = next((v for t, v in rss if t >= rss[-1][0] / 2 and v is not None), None)
    return {
        "from_s": from_s,
        "mb_at_from": None if at_from is None else round(at_from / 2**20, 2),
        "mb_at_end": None if end is None else round(end / 2**20, 2),
        "growth": None if not at_from or end is None else round(end / at_from - 1.0, 4),
        "growth_second_half": None if not half or end is None else round(end / half - 1.0, 4),
        "mb_every_minute": [
            None if v is None else round(v / 2**20, 1)
            for v in (next((v for t, v in rss if t >= minute * 60.0), None)
                      for minute in range(int(rss[-1][0] // 60.0) + 1))],
    }


def _public(score_result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in score_result.items() if not k.startswith("_")}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 minutes, faults scaled down")
    parser.add_argument("--minutes", type=float, help="run length (default 60, --quick 3)")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--workdir", help="keep the daemon's config, checkpoints and log here")
    parser.add_argument("--allocator", choices=("pymalloc", "jemalloc"), default="jemalloc",
                        help="the daemon's memory allocator: jemalloc preloaded, as the image and "
                             "the systemd unit run it (default), or CPython's own, as a plain "
                             "pip install runs it")
    args = parser.parse_args()
    minutes = args.minutes or (3.0 if args.quick else 60.0)
    plan = plan_run(minutes, args.seed)
    load_start = [round(x, 2) for x in os.getloadavg()]
    log(f"soak: {minutes:g} min, {len(plan.faults)} faults, kills at {plan.kills_s} s; "
        f"load average {load_start}")
    keep = args.workdir is not None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="gtmon-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        out = run(args, plan, workdir)
        events, not_json = read_log(workdir / "daemon.log")
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    seen = measurements(events)
    faults = after_fault(plan.faults, seen, [r["started_at"] for r in out["daemon"].runs])
    lost = score(without_probes(out["truth"]), counted_verdicts(events, EXACT_TABLE))
    orders = score(without_probes(out["truth_orders"]), counted_verdicts(events, ORDERS_TABLE))
    pair_rows = [p for f in faults for p in f["pairs"].values()]
    scored = [p["recovery_canaries"] for p in pair_rows if p["recovery_scored"]]
    down = [f"{labels['component']} {labels['table']} {labels['region']}".strip()
            for labels, value in out["components_end"] if value != 1.0]
    daemon: Daemon = out["daemon"]
    levels = Counter(f"{e.get('level')}:{e.get('event')}" for e in events
                     if e.get("level") in ("error", "critical"))
    results: dict[str, Any] = {
        "wall_seconds": round(time.monotonic() - started, 1),
        "faults": faults,
        "daemon_runs": [{k: (round(v - out["t0"], 1) if k.endswith("_at") else v) for k, v in r.items()}
                        for r in daemon.runs],
        "lost_writes_exact_table": _public(lost),
        "orders_inferred_not_checked": _public(orders),
        "traffic": {"exact": out["exact_stats"], "demo_orders": out["demo"]},
        "components_at_end": len(out["components_end"]),
        "components_down_at_end": down,
        "ready_at_end": out["ready_at_end"],
        "component_restarts_last_run": {
            f"{labels['component']} {labels['table']} {labels['region']}".strip(): value
            for labels, value in out["restarts"] if value},
        "canaries_lost_last_run": sum(value for _, value in out["canary_lost"]),
        "rss": rss_growth(out["rss"], min(600.0, plan.run_s / 6)),
        "canary_measurements": {f"{a}->{b}": len(v) for (a, b), v in seen.items()},
        "log_errors": dict(levels),
        "log_lines_not_json": not_json,
        "recovery_canaries_worst": max((s for s in scored if s is not None), default=None),
        "recovery_pairs_scored": len(scored),
        "recovery_pairs_not_scored": len(pair_rows) - len(scored),
        "recovery_pairs_not_back_within_30": sum(s is None for s in scored),
    }
    results["load_average_every_minute"] = out["load"]
    met = {
        "lost_writes_counted_exactly_once": (
            lost["lost_writes"] > 0 and lost["tp"] == lost["lost_writes"] and lost["fp"] == 0
            and lost["certain_verdicts"] == lost["lost_writes"]),
        "no_component_down_at_end": bool(out["components_end"]) and not down,
        "every_pair_measured_again_after_each_fault": bool(pair_rows) and all(
            p["measured_again_in_time"] for p in pair_rows),
    }
    if scored or not args.quick:
        met[f"every_pair_back_within_{RECOVERY_TARGET}_canaries"] = bool(scored) and all(
            s is not None and s <= RECOVERY_TARGET for s in scored)
    else:  # 3 minutes leave no pair 5 canaries before a fault outside another: not a failure
        results["recovery_check"] = "not scored: no pair had 5 canaries before a fault outside another"
    if plan.run_s >= 1200:
        growth = results["rss"]["growth"]
        met["rss_growth_le_5pct_minute10_to_end"] = growth is not None and growth <= RSS_GROWTH_TARGET
    stall = ROOT / "bench" / "results" / "stall_memory.json"
    pause_30min: dict[str, Any] = {"source": "bench/stall_memory.py (virtual time), not this run"}
    if stall.exists():
        data = json.loads(stall.read_text())
        pause_30min |= {
            "file": "bench/results/stall_memory.json",
            "stall_minutes": data["params"].get("stall_minutes"),
            "cases": {name: {"rss_growth_mb": case.get("rss_growth_mb"),
                             "tracemalloc_held_mb": case.get("tracemalloc", {}).get("tracemalloc_held_mb")}
                      for name, case in data["results"]["cases"].items()},
            "memory_le_10MB": {k: v for k, v in data["met"].items() if "memory" in k},
        }
    results["pause_30min_memory"] = pause_30min
    params = {
        "quick": args.quick, "minutes": minutes, "seed": args.seed, "allocator": args.allocator,
        "canary_interval_s": INTERVAL_S, "regions": REGIONS, "distances": "gtmon sandbox defaults",
        "shard_rollover_s": 60.0, "iterator_ttl_s": plan.iterator_ttl_s,
        "kills_at_s": list(plan.kills_s), "down_s": plan.down_s,
        "faults_between_s": [plan.faults_from_s, plan.faults_until_s],
        "traffic_until_s": plan.traffic_until_s, "conflict_every_s": plan.conflict_every_s,
        "fault_kinds": Counter(f.kind for f in plan.faults),
        "measured_again_limit": f"interval {INTERVAL_S:g} s + link delay bound + {READ_SLACK_S:g} s",
        "recovery": f"first canary starting a run of {RUN} with median bound <= "
                    f"{RECOVERY_FACTOR}x the median of the minute before the fault",
        "monitor": os.path.dirname(os.path.abspath(monitor.__file__)),
        "commit": _commit(),
        "load_average_start": load_start,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
    }
    targets = {"recovery_canaries": RECOVERY_TARGET, "rss_growth": RSS_GROWTH_TARGET,
               "pause_30min_mb": 10.0}
    emit("soak", params, results, targets, met)
    if args.out:
        Path(args.out).write_text(json.dumps({"bench": "soak", "params": params, "results": results,
                                              "targets": targets, "met": met}, indent=2) + "\n")
    sys.exit(0 if all(met.values()) else CHECK_FAILED)


def _commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10)
    except OSError:
        return None
    return done.stdout.strip() or None


if __name__ == "__main__":
    main()
