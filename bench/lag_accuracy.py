"""How close gtmon's canary lag is to the emulator's ground truth.

Cells: replication link delay (fixed 50 ms .. fixed 5 s, uniform and lognormal
jitter) x client round trip (0, 80, 220 ms, 10% jitter, the same for every region
of a cell), central mode; plus per-region mode (below). One emulator (a child
process) serves four groups of three regions; each central group has one client
round trip and a different link delay on each of its six directed pairs, so one
daemon per group measures six cells at once. Each canary's
measurement (the raw write/read intervals the runner kept) is matched to the
emulator's ground-truth write by (origin region, gtmon_seq); true lag (central
mode) is applied[target] - accepted_at on the emulator's clock. A full run
measures the four groups one after the other (150 s each, about 11 minutes);
--quick runs them at the same time for 14 s (shape only, not figures).

Reported per cell and pooled: |estimate - truth| p50/p99 with round-trip
correction (what gtmon reports) and without it (estimate_lag_uncorrected on the
same intervals, same run), how often the truth lies within the reported error
bound, and reads per canary per pair. Canaries written before a pair's third
measurement came in (planned from fewer than three lags, blind at first) are
reported apart from the steady state, as "warmup".

Per-region mode (results["per_region"]): a fourth group of three regions in the
same emulator, with the same six link delays, watched by three Services in this
process (home_region = each region, one shared canary.fleet), each writing
canaries only at home and measuring the pairs whose target is its home. A daemon
next to its region sees a small round trip to it; the emulator's client latency
is per region for every client, so every region of this group gets the "local"
round trip (--local-rtt-ms, default 2 ms +-10%) and nothing else. Per-region
mode measures from the writer's wall-clock timestamp (gtmon_written_at) to the
arrival seen at home, so its ground truth is applied[target] - gtmon_written_at
(emulator and daemons share this host's wall clock, so no clock error enters);
it is also compared with applied[target] - accepted_at, the replication lag
alone, which leaves out the writer's own commit latency (written_at -> accepted).

The monitor's timestamps are taken by its event loop, so a starved CPU shows up as
error: the results carry the event loop's lateness and the load average, and
`--nice -10` (root) shields the run from other work on a shared machine.

    python bench/lag_accuracy.py [--quick] [--seconds N] [--sequential|--parallel]
                                 [--nice N] [--dump FILE] [--planner-from REV]
                                 [--local-rtt-ms MS] [--no-per-region]
                                 [--canary-http lean|botocore]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import subprocess
import sys
import time
import types
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    ROOT,
    EmulatorProcess,
    delay_json,
    describe_delay,
    emit,
    error_summary,
    log,
    ms,
    percentile,
    proc_cpu_seconds,
    stop_service,
    summary_ms,
    truth_by_seq,
)

from monitor.canary.lag import estimate_lag_uncorrected
from monitor.canary.runner import Measurement
from monitor.canary.table import ensure_canary_table
from monitor.config import parse_config
from monitor.emulator.control import ControlClient
from monitor.logs import configure_logging
from monitor.service import Service

# Client round trip (ms) -> the three regions that see it.
GROUPS: dict[int, list[str]] = {
    0: ["us-east-1", "us-east-2", "us-west-2"],
    80: ["eu-west-1", "eu-west-2", "eu-central-1"],
    220: ["ap-southeast-1", "ap-southeast-2", "ap-northeast-1"],
}
# Link delay per directed pair (indexes into a group's regions): every group gets the same six.
LINKS: list[tuple[int, int, dict[str, Any]]] = [
    (0, 1, delay_json(50)),
    (1, 0, delay_json(500)),
    (0, 2, delay_json(400, 200, "uniform")),  # 500 +- 100 ms
    (2, 0, delay_json(1000, 200, "lognormal")),  # 1 s + lognormal jitter, median 200 ms
    (1, 2, delay_json(5000)),
    (2, 1, delay_json(150, 100, "uniform")),  # 200 +- 50 ms
]
WARMUP = 3  # lags a pair must have measured before its canaries count as steady state
JITTER = 0.10  # client round-trip jitter, as a fraction of the round trip
TARGET_P50_MS = 10.0
TARGET_P99_MS = 50.0
TARGET_READS = 20
# Per-region mode: one daemon per region of this group (home_region), the same six links.
PER_REGION = ["sa-east-1", "ca-central-1", "ap-south-1"]
PER_REGION_TABLE = "gtmon-canary-per-region"
FLEET = "bench-fleet"
CLOCK_ERROR_S = 0.005  # the config default: a time-synchronized host (here: one host, one clock)
LOCAL_RTT_MS = 2.0  # a daemon next to its region


def local_latency(rtt_ms: float) -> dict[str, Any]:
    """rtt_ms +-10%, uniform."""
    return delay_json(rtt_ms * (1 - JITTER), rtt_ms * 2 * JITTER, "uniform")


def emulator_spec(rtts: list[int], local_rtt_ms: float | None = None) -> dict[str, Any]:
    """Central groups (client round trip per group) and, unless None, the per-region group."""
    regions = [r for rtt in rtts for r in GROUPS[rtt]]
    links = []
    latency = {}
    for rtt in rtts:
        group = GROUPS[rtt]
        for a, b, spec in LINKS:
            links.append([group[a], group[b], spec])
        for region in group:
            if rtt:
                latency[region] = delay_json(rtt, rtt * JITTER, "uniform")
    if local_rtt_ms is not None:
        regions += PER_REGION
        for a, b, spec in LINKS:
            links.append([PER_REGION[a], PER_REGION[b], spec])
        for region in PER_REGION:
            # Client latency is per region for every client: all of this group's traffic is
            # the per-region daemons', each of which (after setting up the table) writes
            # and reads only in its home region.
            latency[region] = local_latency(local_rtt_ms)
    return {
        "regions": regions, "default_delay": delay_json(100), "link_delays": links,
        "client_latency": latency, "replica_activation_seconds": 0.2,
    }


def group_config(url: str, rtt: int, interval: float, canary_http: str) -> Any:
    return parse_config({
        "instance_id": "bench",
        "regions": GROUPS[rtt],
        "aws": {"endpoint_url": url, "read_timeout_seconds": 10, "max_attempts": 2,
                "canary_http": canary_http},
        "canary": {
            "table": f"gtmon-canary-rtt{rtt}", "interval_seconds": interval,
            "warning_seconds": 60, "critical_seconds": 120, "stall_seconds": 120,
        },
        "streams": {"enabled": False},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "log": {"format": "json", "level": "warning"},
    }, f"lag_accuracy rtt {rtt}")


def per_region_config(url: str, home: str, interval: float, canary_http: str) -> Any:
    return parse_config({
        "instance_id": f"bench-{home}",
        "regions": PER_REGION,
        "home_region": home,
        "clock_error_seconds": CLOCK_ERROR_S,
        "aws": {"endpoint_url": url, "read_timeout_seconds": 10, "max_attempts": 2,
                "canary_http": canary_http},
        "canary": {
            "table": PER_REGION_TABLE, "fleet": FLEET, "interval_seconds": interval,
            "warning_seconds": 60, "critical_seconds": 120, "stall_seconds": 120,
        },
        "streams": {"enabled": False},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "log": {"format": "json", "level": "warning"},
    }, f"lag_accuracy per-region {home}")


class LoopLag:
    """How late the event loop wakes a 10 ms sleeper: the monitor's own scheduling noise."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(0.01)
            self.samples.append(time.monotonic() - start - 0.01)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def run_group(url: str, rtt: int, seconds: float, interval: float, canary_http: str,
                    start_gate: asyncio.Barrier | None) -> dict[str, Any]:
    config = group_config(url, rtt, interval, canary_http)
    service = Service(config)
    measurements: list[Measurement] = []
    await service.clients.start(list(config.regions))
    await ensure_canary_table(service.clients, config.canary.table, list(config.regions),
                              "gtmon_expires_at", 60)
    for runner in service.runners:
        runner.observers.append(measurements.append)
    if start_gate is not None:
        await start_gate.wait()  # parallel: every group's table exists before any measures
    log(f"rtt {rtt} ms: measuring for {seconds:.0f} s")
    await service.start()
    try:
        await asyncio.sleep(seconds)
    finally:
        probes = {
            key: (probe.reads, probe.measurements, len(probe.pending))
            for runner in service.runners for key, probe in runner.probes.items()
        }
        if not await stop_service(service, f"rtt {rtt}"):
            STOP_HUNG.append(f"rtt {rtt}")
    truth = await asyncio.to_thread(ControlClient(url, timeout=60).truth, config.canary.table)
    return {"rtt": rtt, "measurements": measurements, "probes": probes,
            "truth": truth_by_seq(truth["writes"]), "wall_offset": time.time() - time.monotonic()}


async def run_per_region(url: str, seconds: float, interval: float, canary_http: str,
                         start_gate: asyncio.Barrier | None) -> dict[str, Any]:
    """Three per-region daemons (one per home region, one fleet) on one shared table."""
    services = [Service(per_region_config(url, home, interval, canary_http)) for home in PER_REGION]
    measurements: list[Measurement] = []
    first = services[0]
    await first.clients.start(PER_REGION)
    await ensure_canary_table(first.clients, PER_REGION_TABLE, PER_REGION, "gtmon_expires_at", 60)
    for service in services:
        for runner in service.runners:
            runner.observers.append(measurements.append)
    if start_gate is not None:
        await start_gate.wait()
    log(f"per-region mode ({len(services)} daemons): measuring for {seconds:.0f} s")
    started: list[Service] = []
    try:
        for service in services:
            await service.start()
            started.append(service)
        await asyncio.sleep(seconds)
    finally:
        probes = {
            key: (probe.reads, probe.measurements, len(probe.pending))
            for service in services for runner in service.runners
            for key, probe in runner.probes.items()
        }
        for service in reversed(services):
            if service in started:
                name = f"per-region {service.config.home_region}"
                if not await stop_service(service, name):
                    STOP_HUNG.append(name)
            else:
                await service.clients.close()
    truth = await asyncio.to_thread(ControlClient(url, timeout=60).truth, PER_REGION_TABLE)
    return {"mode": "per-region", "measurements": measurements, "probes": probes,
            "truth": truth_by_seq(truth["writes"])}


STOP_HUNG: list[str] = []


def analyse(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """Central-mode groups (one daemon per client round trip)."""
    cells: dict[str, Any] = {}
    pooled: dict[str, list[dict[str, float]]] = defaultdict(list)  # "all", "rtt220", ...
    warm: list[dict[str, float]] = []
    unmatched = 0
    for group in groups:
        rtt = group["rtt"]
        regions = GROUPS[rtt]
        spec_of = {(regions[a], regions[b]): spec for a, b, spec in LINKS}
        by_pair: dict[tuple[str, str], list[Measurement]] = defaultdict(list)
        for m in group["measurements"]:
            by_pair[(m.source, m.target)].append(m)
        for pair, spec in spec_of.items():
            rows: list[dict[str, Any]] = []
            measured = by_pair.get(pair, [])
            warm_until = warmup_until(measured)
            for m in sorted(measured, key=lambda m: m.seq):
                write = group["truth"].get((m.source, m.seq))
                if write is None or m.target not in write["applied"]:
                    unmatched += 1
                    continue
                true_lag = write["applied"][m.target] - write["accepted_at"]
                naive = estimate_lag_uncorrected(m.write, m.last_miss, m.first_hit)
                row = {
                    "mode": "central", "client_rtt_ms": rtt,
                    "pair": f"{m.source}->{m.target}", "seq": m.seq, "lag": m.estimate.lag,
                    "truth": true_lag,
                    "error": abs(m.estimate.lag - true_lag),
                    "error_uncorrected": abs(naive.lag - true_lag),
                    "bound": m.estimate.error,
                    "within": float(m.estimate.low - 1e-6 <= true_lag <= m.estimate.high + 1e-6),
                    "reads": float(m.reads),
                } | timing_breakdown(m, write, group["wall_offset"])
                (warm if m.write.received < warm_until else rows).append(row)
            reads, measured, pending = group["probes"][pair]
            name = f"rtt {rtt} ms | {describe_delay(spec)}"
            cells[name] = cell_summary(rows) | {
                "reads_issued_per_canary": round(reads / measured, 2) if measured else None,
                "pending_at_stop": pending,
                "pair": f"{pair[0]}->{pair[1]}",
            }
            pooled["all"].extend(rows)
            pooled[f"rtt{rtt}"].extend(rows)
    return {
        "pooled": {name: cell_summary(rows) for name, rows in pooled.items()},
        "cells": cells,
        "warmup": cell_summary(warm),
        "unmatched_measurements": unmatched,
        "rows": pooled["all"],
    }


def timing_breakdown(m: Measurement, write: dict[str, Any], wall_offset: float) -> dict[str, float]:
    """Where an error comes from, on the emulator's (wall) clock: the commit placed at the
    write's midpoint vs accepted_at, the estimated arrival vs applied[target], and the round
    trips of the write and the first hit (a slow answer is a lopsided one)."""
    commit = m.write.midpoint + wall_offset
    arrival = commit + m.estimate.lag
    return {
        "commit_offset": commit - write["accepted_at"],
        "arrival_offset": arrival - write["applied"][m.target],
        "write_rtt": m.write.round_trip,
        "hit_rtt": m.first_hit.round_trip,
        "miss_rtt": m.last_miss.round_trip if m.last_miss is not None else None,
    }


def warmup_until(measured: list[Measurement]) -> float:
    """Canaries written before the pair's WARMUP-th measurement came in were planned from
    fewer than WARMUP lags (at 5 s lag and 1 canary/s, the first seven): warm-up."""
    resolved = sorted(m.first_hit.received for m in measured)
    return resolved[WARMUP - 1] if len(resolved) >= WARMUP else float("inf")


def analyse_per_region(group: dict[str, Any]) -> dict[str, Any]:
    """Per-region measurements against applied[target] - gtmon_written_at (what the mode
    claims to measure) and against applied[target] - accepted_at (replication alone)."""
    spec_of = {(PER_REGION[a], PER_REGION[b]): spec for a, b, spec in LINKS}
    by_pair: dict[tuple[str, str], list[Measurement]] = defaultdict(list)
    for m in group["measurements"]:
        by_pair[(m.source, m.target)].append(m)
    cells: dict[str, Any] = {}
    every: list[dict[str, Any]] = []
    warm: list[dict[str, Any]] = []
    unmatched = 0
    for pair, spec in spec_of.items():
        rows: list[dict[str, Any]] = []
        measured = by_pair.get(pair, [])
        warm_until = warmup_until(measured)
        for m in sorted(measured, key=lambda m: m.seq):
            write = group["truth"].get((m.source, m.seq))
            image = (write or {}).get("image") or {}
            if write is None or m.target not in write["applied"] or "gtmon_written_at" not in image:
                unmatched += 1
                continue
            written_at = float(image["gtmon_written_at"]["N"])
            arrival = write["applied"][m.target]
            truth = arrival - written_at
            replication = arrival - write["accepted_at"]
            # m.write is the writer's timestamp on this daemon's monotonic clock (zero width):
            # "uncorrected" places the reads at their answers instead of their midpoints.
            naive = estimate_lag_uncorrected(m.write, m.last_miss, m.first_hit)
            est = m.estimate
            row = {
                "mode": "per-region", "client_rtt_ms": None,
                "pair": f"{m.source}->{m.target}", "seq": m.seq, "lag": est.lag,
                "truth": truth, "truth_replication": replication,
                "writer_commit": write["accepted_at"] - written_at,
                "error": abs(est.lag - truth), "signed_error": est.lag - truth,
                "error_uncorrected": abs(naive.lag - truth),
                "error_vs_accepted": abs(est.lag - replication),
                "signed_error_vs_accepted": est.lag - replication,
                "bound": est.error,
                "within": float(est.low - 1e-6 <= truth <= est.high + 1e-6),
                "within_vs_accepted": float(est.low - 1e-6 <= replication <= est.high + 1e-6),
                "reads": float(m.reads),
            }
            (warm if m.write.received < warm_until else rows).append(row)
        reads, measured_n, pending = group["probes"].get(pair, (0, 0, 0))
        cells[f"per-region | {describe_delay(spec)}"] = per_region_summary(rows) | {
            "reads_issued_per_canary": round(reads / measured_n, 2) if measured_n else None,
            "pending_at_stop": pending,
            "pair": f"{pair[0]}->{pair[1]}",
        }
        every.extend(rows)
    return {
        "pooled": per_region_summary(every),
        "cells": cells,
        "warmup": per_region_summary(warm),
        "unmatched_measurements": unmatched,
        "rows": every,
    }


def per_region_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    summary = cell_summary(rows)
    if not rows:
        return summary
    return summary | {
        "signed_error_p50_ms": ms(percentile([r["signed_error"] for r in rows], 50)),
        "true_replication_lag_p50_ms": ms(percentile([r["truth_replication"] for r in rows], 50)),
        "vs_accepted_error_p50_ms": ms(percentile([r["error_vs_accepted"] for r in rows], 50)),
        "vs_accepted_error_p99_ms": ms(percentile([r["error_vs_accepted"] for r in rows], 99)),
        "vs_accepted_signed_error_p50_ms": ms(
            percentile([r["signed_error_vs_accepted"] for r in rows], 50)),
        "vs_accepted_within_bound": round(
            sum(r["within_vs_accepted"] for r in rows) / len(rows), 4),
        # gtmon_written_at -> the origin accepted the write: in the first figure, not the second.
        "writer_commit_latency_p50_ms": ms(percentile([r["writer_commit"] for r in rows], 50)),
        "writer_commit_latency_p99_ms": ms(percentile([r["writer_commit"] for r in rows], 99)),
    }


def cell_summary(rows: list[dict[str, float]]) -> dict[str, Any]:
    if not rows:
        return {"n": 0}
    naive = [r["error_uncorrected"] for r in rows]
    return error_summary(rows) | {
        "uncorrected_error_p50_ms": ms(percentile(naive, 50)),
        "uncorrected_error_p99_ms": ms(percentile(naive, 99)),
        # How far outside the bound the truth lies when it does (client-side overhead).
        "outside_bound_by_p50_ms": ms(percentile(
            [r["error"] - r["bound"] for r in rows if not r["within"]], 50)),
        "reads_per_canary_mean": round(sum(r["reads"] for r in rows) / len(rows), 2),
        "reads_per_canary_max": int(max(r["reads"] for r in rows)),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    rtts = sorted(args.rtts or GROUPS)
    local = None if args.no_per_region else args.local_rtt_ms
    with EmulatorProcess(emulator_spec(rtts, local)) as emulator:
        log(f"emulator {emulator.url} (pid {emulator.pid})")
        cpu0 = (os.times(), proc_cpu_seconds(emulator.pid), time.monotonic())
        loop_lag = LoopLag()
        loop_lag.start()
        runs: list[Any] = [
            functools.partial(run_group, emulator.url, rtt, args.seconds, args.interval,
                              args.canary_http)
            for rtt in rtts
        ]
        if local is not None:
            runs.append(functools.partial(run_per_region, emulator.url, args.seconds, args.interval,
                                          args.canary_http))
        if args.parallel:
            gate = asyncio.Barrier(len(runs))
            done = list(await asyncio.gather(*(run(gate) for run in runs)))
        else:
            done = [await run(None) for run in runs]
        groups = [g for g in done if g.get("mode") != "per-region"]
        per_region = next((g for g in done if g.get("mode") == "per-region"), None)
        await loop_lag.stop()
        t0, e0, m0 = cpu0
        t1 = os.times()
        wall = time.monotonic() - m0
        load = {
            "loadavg_1m_at_end": float(Path("/proc/loadavg").read_text().split()[0]),
            "monitor_cpu_fraction": round((t1.user + t1.system - t0.user - t0.system) / wall, 3),
            "emulator_cpu_fraction": round((proc_cpu_seconds(emulator.pid) - e0) / wall, 3),
            "event_loop_lateness": summary_ms(loop_lag.samples),
            "cpus": os.cpu_count(),
        }
    results = analyse(groups)
    if per_region is not None:
        results["per_region"] = analyse_per_region(per_region)
    results["load"] = load
    results["service_stop_hung"] = list(STOP_HUNG)
    return results


def use_planner_from(rev: str) -> None:
    """A/B: run the daemon with the read planner of git revision `rev` (same runner)."""
    source = subprocess.check_output(["git", "show", f"{rev}:monitor/canary/polling.py"], cwd=ROOT)
    module = types.ModuleType(f"bench_polling_{rev}")
    sys.modules[module.__name__] = module
    exec(compile(source, f"{rev}:monitor/canary/polling.py", "exec"), module.__dict__)
    import monitor.canary.polling as polling
    import monitor.canary.runner as runner

    runner.plan_reads = module.plan_reads
    polling.LagHistory.window = module.LagHistory.window  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run (< 60 s)")
    parser.add_argument("--seconds", type=float,
                        help="measuring time per client round trip (and for per-region mode)")
    parser.add_argument("--interval", type=float, default=1.0, help="canary interval (s)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--parallel", dest="parallel", action="store_true", default=None,
                      help="measure the three client round trips at the same time")
    mode.add_argument("--sequential", dest="parallel", action="store_false",
                      help="one client round trip after the other (default for the full run)")
    parser.add_argument("--dump", metavar="FILE",
                        help="write every steady-state canary as JSON lines")
    parser.add_argument("--planner-from", metavar="REV",
                        help="use monitor/canary/polling.py from this git revision (A/B runs)")
    parser.add_argument("--nice", type=int, default=0,
                        help="run this process and the emulator at this niceness (negative: "
                             "shield the timing from other work on a shared machine; needs root)")
    parser.add_argument("--local-rtt-ms", type=float, default=LOCAL_RTT_MS,
                        help="per-region mode: every client's round trip to the per-region "
                             "group's regions (+-10%%, uniform)")
    parser.add_argument("--rtts", type=int, nargs="+", choices=sorted(GROUPS),
                        help="central mode: only these client round trips (ms)")
    parser.add_argument("--no-per-region", action="store_true",
                        help="central mode only")
    parser.add_argument("--canary-http", choices=("lean", "botocore"), default="lean",
                        help="aws.canary_http of the daemons (before/after runs of issue 14)")
    args = parser.parse_args()
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # the emulator child inherits it
    if args.planner_from:
        use_planner_from(args.planner_from)
    if args.seconds is None:
        args.seconds = 14.0 if args.quick else 150.0
    if args.parallel is None:
        args.parallel = args.quick
    configure_logging("json", "warning", stream=sys.stderr)
    # A write cut off by the stop at the end is logged by APScheduler as an error: not news here.
    logging.getLogger("apscheduler").setLevel(logging.CRITICAL)
    started = time.monotonic()
    results = asyncio.run(main_async(args))
    rows = results.pop("rows")
    per_region = results.get("per_region")
    if per_region is not None:
        rows += per_region.pop("rows")
    if args.dump:
        with open(args.dump, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    all_ = results["pooled"].get("all", {"n": 0})
    far = results["pooled"].get("rtt220", {"n": 0})
    cells = [c for c in results["cells"].values() if c.get("n")]
    reads_issued = max((c["reads_issued_per_canary"] or 0) for c in cells) if cells else None
    targets = {
        "issue4_error_p50_ms": TARGET_P50_MS, "issue4_error_p99_ms": TARGET_P99_MS,
        "issue4_reads_per_canary_per_pair": TARGET_READS,
        "issue7_rtt220_error_p50_ms": TARGET_P50_MS, "issue7_rtt220_error_p99_ms": TARGET_P99_MS,
    }

    def le(value: Any, limit: float) -> bool:
        return value is not None and value <= limit

    if per_region is not None:
        targets |= {
            "per_region_error_p50_ms": TARGET_P50_MS, "per_region_error_p99_ms": TARGET_P99_MS,
            "per_region_reads_per_canary_per_pair": TARGET_READS,
        }

    met = {
        "issue4_error_p50": le(all_.get("error_p50_ms"), TARGET_P50_MS),
        "issue4_error_p99": le(all_.get("error_p99_ms"), TARGET_P99_MS),
        "issue4_error_p99_every_cell": bool(cells) and all(
            le(c.get("error_p99_ms"), TARGET_P99_MS) for c in cells),
        "issue4_reads_per_canary_per_pair": le(reads_issued, TARGET_READS),
        "issue7_rtt220_error_p50": le(far.get("error_p50_ms"), TARGET_P50_MS),
        "issue7_rtt220_error_p99": le(far.get("error_p99_ms"), TARGET_P99_MS),
    }
    if per_region is not None:
        pr_cells = [c for c in per_region["cells"].values() if c.get("n")]
        pr_reads = max((c["reads_issued_per_canary"] or 0) for c in pr_cells) if pr_cells else None
        met |= {
            "per_region_error_p50": le(per_region["pooled"].get("error_p50_ms"), TARGET_P50_MS),
            "per_region_error_p99": le(per_region["pooled"].get("error_p99_ms"), TARGET_P99_MS),
            "per_region_reads_per_canary_per_pair": le(pr_reads, TARGET_READS),
        }
    params = {
        "quick": args.quick, "seconds_per_rtt": args.seconds, "canary_interval_s": args.interval,
        "parallel": args.parallel, "nice": args.nice, "steady_state_after_measurements_per_pair": WARMUP,
        "client_rtt_ms": sorted(args.rtts or GROUPS), "client_rtt_jitter": "uniform +10%",
        "link_delays": [describe_delay(s) for _, _, s in LINKS],
        "max_reads_per_canary": 20, "min_poll_interval_s": 0.02,
        "planner": f"git {args.planner_from}" if args.planner_from else "working tree",
        "canary_http": args.canary_http,
        "per_region": None if per_region is None else {
            "regions": PER_REGION, "daemons": len(PER_REGION), "fleet": FLEET,
            "seconds": args.seconds, "link_delays": "the same six, on this group's pairs",
            "client_rtt_ms": args.local_rtt_ms,
            "client_rtt_jitter": "uniform +-10%",
            "client_rtt_note": (
                "the emulator's client latency is per region for every client, so to model a "
                "daemon next to its region every client of the per-region group's regions sees "
                f"the local {args.local_rtt_ms:g} ms round trip; the central-mode cells keep "
                f"{'/'.join(str(r) for r in sorted(GROUPS))} ms"),
            "clock_error_seconds": CLOCK_ERROR_S,
            "ground_truth": "applied[target] - gtmon_written_at (the writer's wall clock; "
                            "emulator and daemons share this host's clock)",
            "also_against": "applied[target] - accepted_at (vs_accepted_*: replication only, "
                            "without the writer's commit latency)",
            "uncorrected": "reads placed at their answers instead of their midpoints",
        },
    }
    emit("lag_accuracy", params, results, targets, met)


if __name__ == "__main__":
    main()
