"""How many canaries each pair needs after a fault ends to get back its pre-fault precision.

Issue 15, item 4: after a pause or an outage ends, every affected pair's stated error
bound must be back at its pre-fault level within 10 canaries. Tried in the sandbox, a
20 s pause of us-east-1 -> eu-west-1 left that link's bound at +-0.3-0.7 s for more than
60 s: the canaries released together when the pause ended had entered the read
planner's history with the pause's lags.

The emulator runs in a child process with the sandbox's distances (lognormal links
0.6-1.5 s, client round trips 4/75/220 ms from us-east-1); the daemon runs here with
the sandbox's AWS settings (read timeout 3 s, 2 attempts), the default
canary.timeout_seconds (120 s) and 1 canary/s. After a warm-up long enough to fill the
planner's history (64 canaries), each fault in turn, through the emulator's control API
(what `gtmon fault` sends):

- pause us-east-1 -> eu-west-1 (the issue's case);
- outage of ap-southeast-1 answering errors (its four pairs);
- outage of ap-southeast-1 as a black hole (requests hang until the read timeout);
- throttling: 60 % of the calls to ap-southeast-1 answer ThrottlingException;
- a latency spike: every call to ap-southeast-1 takes 1.8 +- 0.36 s, then its usual round
  trip again.

For every affected pair: the median stated bound of the canaries written in the
baseline before the fault, the bounds of the canaries written after the fault ended,
and `recovery_canaries`: the 1-based position of the first of them that starts a run of
five whose median bound is within 1.5x the pre-fault median (tests/canary/
test_fault_recovery.py asserts the same). `stays_back` is the share of the later runs of
five that are within it too. With PYTHONPATH pointing at an older checkout this
measures that code (the "before" figures in the notes).

    python bench/fault_recovery.py [--quick] [--fault-seconds S] [--nice N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import EmulatorProcess, emit, log, sandbox_emulator_spec, stop_service

import monitor
from monitor.canary.table import ensure_canary_table
from monitor.config import parse_config
from monitor.emulator.control import ControlClient
from monitor.logs import configure_logging
from monitor.sandbox import REGIONS, SANDBOX_CLIENT_LATENCY
from monitor.service import Service

TARGET_CANARIES = 10
FACTOR = 1.5
RUN = 5
DOWN = "ap-southeast-1"
PAUSED = ("us-east-1", "eu-west-1")
FAULTS: dict[str, dict[str, Any]] = {
    "pause": {
        "start": ("pause", {"from": PAUSED[0], "to": PAUSED[1]}),
        "end": ("resume", {"from": PAUSED[0], "to": PAUSED[1]}),
        "pairs": [PAUSED],
    },
    "outage_error": {
        "start": ("outage", {"region": DOWN, "mode": "error"}),
        "end": ("restore", {"region": DOWN}),
        "pairs": [(a, b) for a in REGIONS for b in REGIONS if a != b and DOWN in (a, b)],
    },
    "outage_blackhole": {
        "start": ("outage", {"region": DOWN, "mode": "blackhole"}),
        "end": ("restore", {"region": DOWN}),
        "pairs": [(a, b) for a in REGIONS for b in REGIONS if a != b and DOWN in (a, b)],
    },
    # Most calls to the region are throttled (the soak's throttling faults).
    "throttle": {
        "start": ("throttle", {"region": DOWN, "fraction": 0.6}),
        "end": ("throttle", {"region": DOWN, "fraction": 0.0}),
        "pairs": [(a, b) for a in REGIONS for b in REGIONS if a != b and DOWN in (a, b)],
    },
    # Every call to the region takes about 1.8 s (the soak's latency spikes), then its
    # usual round trip again.
    "latency": {
        "start": ("latency", {"region": DOWN, "ms": 1800.0, "jitter_ms": 360.0, "kind": "uniform"}),
        "end": ("latency", {"region": DOWN, "ms": SANDBOX_CLIENT_LATENCY[DOWN].ms,
                            "jitter_ms": SANDBOX_CLIENT_LATENCY[DOWN].jitter_ms,
                            "kind": SANDBOX_CLIENT_LATENCY[DOWN].kind}),
        "pairs": [(a, b) for a in REGIONS for b in REGIONS if a != b and DOWN in (a, b)],
    },
}


def recovery_canaries(errors: list[float], before_median: float) -> int | None:
    """1-based position of the first canary that starts a run of RUN whose median bound is
    within FACTOR of the pre-fault median."""
    return next(
        (i + 1 for i in range(len(errors) - RUN + 1)
         if statistics.median(errors[i:i + RUN]) <= FACTOR * before_median),
        None,
    )


def stays_back(errors: list[float], before_median: float, start: int | None) -> float | None:
    """Share of the runs of RUN from `start` on whose median is within FACTOR."""
    if start is None:
        return None
    runs = [statistics.median(errors[i:i + RUN]) <= FACTOR * before_median
            for i in range(start - 1, len(errors) - RUN + 1)]
    return round(sum(runs) / len(runs), 3) if runs else None


async def one_fault(name: str, control: ControlClient, seen: dict[tuple[str, str], list[Any]],
                    args: argparse.Namespace) -> dict[str, Any]:
    fault = FAULTS[name]
    loop = asyncio.get_running_loop()
    baseline_from = time.monotonic()
    await asyncio.sleep(args.baseline)
    started = time.monotonic()
    action, params = fault["start"]
    await asyncio.to_thread(control.fault, action, **params)
    await asyncio.sleep(args.fault_seconds)
    action, params = fault["end"]
    await asyncio.to_thread(control.fault, action, **params)
    ended = time.monotonic()
    deadline = loop.time() + args.after * args.interval + 30.0
    pairs = fault["pairs"]

    def after(pair: tuple[str, str]) -> list[Any]:
        return [m for m in seen[pair] if m.write.sent >= ended]

    while loop.time() < deadline and not all(len(after(p)) >= args.after for p in pairs):
        await asyncio.sleep(0.2)
    result: dict[str, Any] = {"fault_seconds": round(ended - started, 2), "pairs": {}}
    for pair in pairs:
        before = [m.estimate.error for m in seen[pair] if baseline_from <= m.write.sent < started]
        errors = [m.estimate.error for m in after(pair)][:args.after]
        median = statistics.median(before) if before else None
        back = recovery_canaries(errors, median) if median is not None else None
        during = [m for m in seen[pair] if started <= m.write.sent < ended]
        result["pairs"][f"{pair[0]}->{pair[1]}"] = {
            "before_n": len(before),
            "before_error_median_ms": None if median is None else round(median * 1000, 1),
            "after_error_ms": [round(e * 1000, 1) for e in errors],
            "recovery_canaries": back,
            "stays_back": None if median is None else stays_back(errors, median, back),
            "during_measured": len(during),
            "during_crowded": sum(bool(getattr(m, "crowded", False)) for m in during),
        }
    return result


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with EmulatorProcess(sandbox_emulator_spec()) as emulator:
        log(f"emulator {emulator.url} (pid {emulator.pid})")
        config = parse_config({
            "instance_id": "bench-fault-recovery",
            "regions": REGIONS,
            "aws": {"endpoint_url": emulator.url, "connect_timeout_seconds": 1,
                    "read_timeout_seconds": 3, "max_attempts": 2},
            "canary": {"interval_seconds": args.interval, "stall_seconds": 10},
            "streams": {"enabled": False},
            "metrics": {"host": "127.0.0.1", "port": 0},
            "log": {"format": "json", "level": "warning"},
        }, "fault_recovery bench")
        service = Service(config)
        await service.clients.start(REGIONS)
        await ensure_canary_table(service.clients, config.canary.table, REGIONS, "gtmon_expires_at", 60)
        await service.start()
        seen: dict[tuple[str, str], list[Any]] = {
            (a, b): [] for a in REGIONS for b in REGIONS if a != b
        }
        service.runners[0].observers.append(lambda m: seen[(m.source, m.target)].append(m))
        control = ControlClient(emulator.url)
        results: dict[str, Any] = {}
        try:
            await asyncio.sleep(args.warmup)
            for name in args.faults:
                results[name] = await one_fault(name, control, seen, args)
                log(f"{name}: {results[name]}")
        finally:
            await stop_service(service, "fault_recovery")
        lost = {
            f"{a}->{b}": service.registry.get_sample_value(
                "gtmon_canary_lost_total",
                {"table": config.canary.table, "source_region": a, "target_region": b}) or 0.0
            for (a, b) in seen
        }
    return {"faults": results, "canaries_lost": lost}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one short pause (< 45 s)")
    parser.add_argument("--fault-seconds", type=float)
    parser.add_argument("--interval", type=float, help="canary interval (s)")
    parser.add_argument("--faults", nargs="+", choices=sorted(FAULTS))
    parser.add_argument("--nice", type=int, default=0,
                        help="run this process and the emulator at this niceness (negative: "
                             "shield the timing from other work on a shared machine; needs root)")
    args = parser.parse_args()
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # the emulator child inherits it
    args.interval = args.interval or (0.5 if args.quick else 1.0)
    args.fault_seconds = args.fault_seconds or (8.0 if args.quick else 20.0)
    args.faults = args.faults or (["pause"] if args.quick else list(FAULTS))
    # Long enough for the planner's history (64 canaries) to be full before the first fault.
    args.warmup = 12.0 if args.quick else 70.0
    args.baseline = 6.0 if args.quick else 30.0
    args.after = 12 if args.quick else 25
    configure_logging("json", "warning", stream=sys.stderr)
    logging.getLogger("apscheduler").setLevel(logging.CRITICAL)
    started = time.monotonic()
    results = asyncio.run(main_async(args))
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    met: dict[str, bool] = {}
    for name, fault in results["faults"].items():
        backs = [p["recovery_canaries"] for p in fault["pairs"].values()]
        fault["worst_recovery_canaries"] = None if None in backs else max(backs)
        met[f"{name}_every_pair_back_within_{TARGET_CANARIES}_canaries"] = (
            None not in backs and max(backs) <= TARGET_CANARIES)
    params = {
        "quick": args.quick, "canary_interval_s": args.interval, "fault_seconds": args.fault_seconds,
        "faults": args.faults, "warmup_s": args.warmup, "baseline_s": args.baseline,
        "canaries_after": args.after, "distances": "gtmon sandbox defaults",
        "aws": "read timeout 3 s, 2 attempts (the sandbox's)", "timeout_seconds": 120,
        "recovery": f"first canary starting a run of {RUN} with median bound <= {FACTOR}x "
                    "the pre-fault median",
        "nice": args.nice, "monitor": os.path.dirname(os.path.abspath(monitor.__file__)),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    targets = {"recovery_canaries": TARGET_CANARIES, "factor_of_pre_fault_median": FACTOR}
    emit("fault_recovery", params, results, targets, met)


if __name__ == "__main__":
    main()
