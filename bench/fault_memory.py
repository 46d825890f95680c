"""Where a long fault's memory goes: the daemon's RSS through two fixed faults.

bench/soak.py's RSS check (minute 10 to the end) fails by steps that stay: the daemon's
RSS rose ~3 MB over its first long outage and ~3 MB over its first 5-minute link pause,
and never came down. This bench repeats those two faults in 11.5 minutes, in the soak's
set-up (the sandbox's emulator in a child process, the demo traffic on `Orders`, the
soak's versioned writers on `SoakExact`, `python -m monitor run` at 1 canary/s with
`log_item_images` on), without kills:

    0-150 s warm-up, 150-240 s error outage of us-east-1, 270-570 s pause of
    us-east-1 -> eu-west-1, 570-690 s after.

RSS and its parts are sampled every 10 s from /proc/PID/smaps: `heap` (glibc's brk
heap), `anon` (anonymous maps: CPython's pymalloc arenas, or jemalloc's extents) and
`file` (mapped libraries). `--allocator` picks the daemon's allocator: CPython's own
(pymalloc, what a plain pip install runs), jemalloc preloaded with PYTHONMALLOC=malloc
(as the image and the systemd unit run it; `apt-get install libjemalloc2`), or `both`:
the two side by side, at the same time, so they share the machine's load. Per allocator:
RSS before the outage, after it, at the pause's end, at the end, the peak, and growth
from before the outage to the end. No targets: it measures what bench/soak.py checks.

    python bench/fault_memory.py [--allocator pymalloc|jemalloc|both] [--seed N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    PYTHON,
    EmulatorProcess,
    emit,
    log,
    stop_process,
)
from soak import ExactTraffic, Fault, soak_daemon, soak_emulator_spec

from monitor.emulator.control import ControlClient
from monitor.emulator.traffic import DemoTraffic
from monitor.sandbox import REGIONS

OUTAGE = Fault("outage_error", 150.0, 240.0, {"region": "us-east-1", "mode": "error"}, [])
PAUSE = Fault("pause", 270.0, 570.0, {"from": "us-east-1", "to": "eu-west-1"}, [])
RUN_S = 690.0
SAMPLE_S = 10.0


def smaps_parts(pid: int) -> dict[str, float]:
    """The process's resident memory by kind of mapping, in MB."""
    parts = {"heap": 0, "anon": 0, "file": 0, "other": 0}
    kind = "other"
    with open(f"/proc/{pid}/smaps", encoding="utf-8") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header
                name = fields[5] if len(fields) > 5 else ""
                kind = ("heap" if name == "[heap]" else "anon" if not name
                        else "other" if name.startswith("[") else "file")
            elif fields[0] == "Rss:":
                parts[kind] += int(fields[1])
    return {k: round(v / 1024, 2) for k, v in parts.items()} | {"rss": round(sum(parts.values()) / 1024, 2)}


def run_one(allocator: str, seed: int) -> dict[str, Any]:
    """One daemon through the schedule; its samples and the figures drawn from them."""
    spec = soak_emulator_spec(seed, iterator_ttl_s=20.0)
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gtmon-fault-memory-") as tmp, EmulatorProcess(spec) as emulator:
        workdir = Path(tmp)
        control = ControlClient(emulator.url)
        daemon = soak_daemon(emulator.url, workdir, allocator)
        demo = DemoTraffic(emulator.url, REGIONS, seed=seed)
        exact = ExactTraffic(emulator.url, random.Random(seed + 1), 8.0)
        daemon.start()
        assert daemon.process is not None
        pid = daemon.process.pid
        demo.start()
        exact.start()
        actions = sorted([(f.start_s, f.actions()[0]) for f in (OUTAGE, PAUSE)]
                         + [(f.end_s, f.actions()[1]) for f in (OUTAGE, PAUSE)], key=lambda a: a[0])
        t0 = time.monotonic()
        next_sample = 0.0
        try:
            while (now := time.monotonic() - t0) < RUN_S:
                while actions and actions[0][0] <= now:
                    _, (action, params) = actions.pop(0)
                    control.fault(action, **params)
                    log(f"{allocator}: {action} {params} at {now:.0f} s")
                if now >= next_sample:
                    samples.append({"t_s": round(now)} | smaps_parts(pid))
                    next_sample += SAMPLE_S
                time.sleep(0.2)
        finally:
            demo.stop()
            exact.stop()
            in_effect = daemon.runs[-1].get("allocator")
            stop_process(daemon.process)
    return {"allocator": allocator, "allocator_in_effect": in_effect, "figures": figures(samples),
            "samples": samples}


def figures(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """RSS at the phase boundaries (the last sample before each), the peak and the growth."""

    def at(t: float) -> dict[str, Any]:
        return [s for s in samples if s["t_s"] <= t][-1]

    before, end = at(OUTAGE.start_s), samples[-1]
    return {
        "rss_mb_before_outage": before["rss"],
        "rss_mb_after_outage": at(PAUSE.start_s)["rss"],
        "rss_mb_at_pause_end": at(PAUSE.end_s)["rss"],
        "rss_mb_end": end["rss"],
        "rss_mb_peak": max(s["rss"] for s in samples),
        "growth_mb": round(end["rss"] - before["rss"], 2),
        "growth": round(end["rss"] / before["rss"] - 1.0, 4),
        "growth_by_part_mb": {k: round(end[k] - before[k], 2) for k in ("heap", "anon", "file", "other")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--allocator", choices=("pymalloc", "jemalloc", "both"), default="both")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--one-json", help=argparse.SUPPRESS)  # a child of --allocator both
    args = parser.parse_args()
    load_start = [round(x, 2) for x in os.getloadavg()]
    if args.allocator == "both":
        with tempfile.TemporaryDirectory() as tmp:
            children = {a: (Path(tmp) / f"{a}.json", subprocess.Popen(
                [PYTHON, __file__, "--allocator", a, "--seed", str(args.seed),
                 "--one-json", str(Path(tmp) / f"{a}.json")], stdout=subprocess.DEVNULL))
                for a in ("pymalloc", "jemalloc")}
            for _, child in children.values():
                if child.wait() != 0:
                    raise SystemExit(f"a run failed (exit {child.returncode})")
            runs = [json.loads(path.read_text()) for path, _ in children.values()]
    else:
        runs = [run_one(args.allocator, args.seed)]
        if args.one_json:
            Path(args.one_json).write_text(json.dumps(runs[0]))
            return
    params = {
        "allocator": args.allocator, "seed": args.seed, "regions": REGIONS,
        "schedule": [OUTAGE.to_json(), PAUSE.to_json()], "run_s": RUN_S, "sample_s": SAMPLE_S,
        "daemon": "python -m monitor run, 1 canary/s, log_item_images on (bench/soak.py's config)",
        "load_average_start": load_start, "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }
    results = {run["allocator"]: run for run in runs}
    emit("fault_memory", params, results, {}, {})
    if args.out:
        Path(args.out).write_text(json.dumps({"bench": "fault_memory", "params": params,
                                              "results": results, "targets": {}, "met": {}},
                                             indent=2) + "\n")


if __name__ == "__main__":
    main()
