"""Conflict probes in `gtmon sandbox`: detected every interval, missed in an outage, back after.

Runs `gtmon sandbox --no-ui` (emulator, demo traffic with real conflicts, the daemon with
probes every 20 s) in a child process and watches /api/status. Three phases: healthy
(every probe judged should be `detected`), the third region ap-southeast-1 in outage
(probes between the other two should turn `missed` within one probe interval plus one
probe timeout of the outage: the next probe is written, then times out), restored (the
next probes are `detected` again). Only loopback; bounded in time.

    python bench/probes.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import emit, free_port, log, stop_process, summary_ms

from monitor.emulator.control import ControlClient

DOWN = "ap-southeast-1"
TABLES = ("Orders", "gtmon-canary")


def status(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as answer:  # loopback only
        return dict(json.load(answer))


class Watch:
    """Every change of a table's probe counts, with the time it was seen."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: dict[str, dict[str, int]] = {t: {} for t in TABLES}
        self.events: list[dict[str, Any]] = []
        self.timeout: dict[str, float] = {}

    def poll(self) -> None:
        tables = status(self.url)["probes"]["tables"]
        now = time.monotonic()
        for table in TABLES:
            state = tables[table]
            self.timeout[table] = state["timeout_seconds"]
            for result, count in state["results"].items():
                before = self.seen[table].get(result, 0)
                for _ in range(count - before):
                    self.events.append({"t": now, "table": table, "result": result,
                                        "last": state["last"]})
                self.seen[table][result] = count

    def run_until(self, deadline: float, done: Any = None) -> None:
        while time.monotonic() < deadline:
            self.poll()
            if done is not None and done():
                return
            time.sleep(0.25)


def results_between(events: list[dict[str, Any]], start: float, end: float) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {t: {} for t in TABLES}
    for e in events:
        if start <= e["t"] < end:
            out[e["table"]][e["result"]] = out[e["table"]].get(e["result"], 0) + 1
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two probes per phase, not five")
    args = parser.parse_args()
    # Stopped from outside, still stop the sandbox (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    probes_per_phase = 2 if args.quick else 5
    interval = 20.0  # monitor.sandbox.SANDBOX_PROBE_INTERVAL
    port, metrics_port = free_port(), free_port()
    workdir = Path(tempfile.mkdtemp(prefix="gtmon-bench-probes-"))
    command = [sys.executable, "-m", "monitor", "sandbox", "--no-ui", "--port", str(port),
               "--metrics-port", str(metrics_port)]
    log(f"starting {' '.join(command)} in {workdir}")
    process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ})
    url = f"http://127.0.0.1:{metrics_port}/api/status"
    watch = Watch(url)
    control = ControlClient(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                watch.poll()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("the sandbox did not start") from None
                time.sleep(0.5)
        started = time.monotonic()
        log(f"healthy phase: {probes_per_phase} probe intervals")
        watch.run_until(started + interval * (probes_per_phase + 0.5) + 15)
        outage_at = time.monotonic()
        control.fault("outage", region=DOWN, mode="error")
        log(f"{DOWN} in outage")

        watch.run_until(outage_at + interval * probes_per_phase + max(watch.timeout.values()) + 5)
        restored_at = time.monotonic()
        control.fault("restore", region=DOWN)
        log(f"{DOWN} restored")
        watch.run_until(restored_at + interval * probes_per_phase + 15)
        ended = time.monotonic()
    finally:
        stop_process(process)
    healthy = results_between(watch.events, started, outage_at)
    outage = results_between(watch.events, outage_at, restored_at)
    after = results_between(watch.events, restored_at, ended)
    first_missed = {
        t: round(min((e["t"] for e in watch.events if e["table"] == t and e["result"] == "missed"
                      and e["t"] >= outage_at), default=float("nan")) - outage_at, 1)
        for t in TABLES
    }
    first_detected_after = {
        t: round(min((e["t"] for e in watch.events if e["table"] == t and e["result"] == "detected"
                      and e["t"] >= restored_at), default=float("nan")) - restored_at, 1)
        for t in TABLES
    }
    detection = {
        t: summary_ms([e["last"]["detection_seconds"] for e in watch.events
                       if e["table"] == t and e["result"] == "detected"])
        for t in TABLES
    }
    bound = {t: round(interval + watch.timeout.get(t, 0.0), 1) for t in TABLES}
    met = {
        "healthy: every probe detected": all(
            set(healthy[t]) == {"detected"} and healthy[t]["detected"] >= probes_per_phase
            for t in TABLES),
        "outage: missed within interval + timeout": all(
            first_missed[t] <= bound[t] for t in TABLES),
        "outage: none detected between the other two": all(
            "detected" not in outage[t] or all(
                e["last"]["regions"] and DOWN in e["last"]["regions"] for e in watch.events
                if e["table"] == t and e["result"] == "detected"
                and outage_at <= e["t"] < restored_at)
            for t in TABLES),
        "restored: detected again": all(after[t].get("detected", 0) >= 1 for t in TABLES),
        "never mislabelled": all("mislabelled" not in p[t] for p in (healthy, outage, after)
                                 for t in TABLES),
    }
    emit("probes", {"quick": args.quick, "probe_interval_seconds": interval,
                    "probes_per_phase": probes_per_phase, "down_region": DOWN},
         {"healthy": healthy, "outage": outage, "restored": after,
          "probe_timeout_seconds": watch.timeout,
          "detection_ms": detection,
          "missed_reasons": sorted({f"{e['table']}: {e['last']['reason']}" for e in watch.events
                                    if e["result"] == "missed"}),
          "first_missed_after_outage_seconds": first_missed,
          "first_detected_after_restore_seconds": first_detected_after},
         {"first_missed_after_outage_seconds": f"<= interval + timeout: {bound}"}, met)
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
