"""The daemon's memory and CPU: 3 regions x 5 monitored tables at 1 canary/s.

The emulator runs in one child process (the sandbox's distances: link delays of
0.6-1.5 s and the client round trips a monitor in us-east-1 sees); each daemon
runs as its own child process, `python -m monitor run --config FILE`, so its RSS
(/proc/PID/status VmRSS) and CPU (/proc/PID/stat utime + stime) are its own.
Two daemons run side by side against the same emulator:

* `five_tables`: tables bench-T1..bench-T5 (global tables in the three regions), each with a
  `canary_key` template, so five canary targets;
* `dedicated`: the single dedicated canary table.

CPU is counted from `--settle` seconds after the daemon is ready (imports and
start-up excluded, reported apart) to the end. The daemon's own /metrics give the
AWS calls it made in that window, hence CPU per AWS call.

    python bench/footprint.py [--quick] [--seconds N] [--nice N] [--canary-http lean|botocore]

A daemon that cannot keep its schedule skips canary writes (APScheduler runs one
write per job at a time) and so uses less CPU than the schedule asks for: check
`canary_writes_per_s` against 3 regions x targets x 1/s. With five targets the
writes wait behind pipelined reads for each region client's 20 pooled
connections (seen in the daemon's log at stop: writes cancelled in aiohttp's
_wait_for_available_connection). On a shared machine, `--nice -10` keeps other
work from starving the daemons as well.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    PYTHON,
    ROOT,
    EmulatorProcess,
    create_global_table,
    emit,
    log,
    proc_cpu_seconds,
    proc_rss_bytes,
    sandbox_emulator_spec,
    stop_process,
)
from prometheus_client.parser import text_string_to_metric_families

from monitor.sandbox import REGIONS

TABLES = [f"bench-T{i}" for i in range(1, 6)]  # DynamoDB names need 3+ characters
CANARY_KEY = {"pk": "__gtmon__#{instance}#{source}"}
TARGET_RSS_MB = 100.0
TARGET_CPU = 0.02  # of one core


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def daemon_config(url: str, name: str, port: int, workdir: Path, interval: float,
                  canary_http: str) -> dict[str, Any]:
    five = name == "five_tables"
    tables = [{"name": t, "canary_key": dict(CANARY_KEY)} for t in TABLES] if five else []
    return {
        "instance_id": f"bench-{name}",
        "regions": REGIONS,
        "aws": {"endpoint_url": url, "canary_http": canary_http},
        "canary": {"interval_seconds": interval},
        "tables": tables,
        "streams": {"checkpoint_path": str(workdir / f"{name}-checkpoints.json")},
        "metrics": {"host": "127.0.0.1", "port": port},
        "log": {"format": "json", "level": "warning"},
    }


class Daemon:
    def __init__(self, name: str, config: dict[str, Any], workdir: Path) -> None:
        self.name = name
        self.port = config["metrics"]["port"]
        path = workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.stderr = open(workdir / f"{name}.log", "wb")  # noqa: SIM115
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [PYTHON, "-m", "monitor", "run", "--config", str(path)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.stderr,
        )
        self.ready_after: float | None = None
        self.rss: list[int] = []
        self.window: tuple[float, float, dict[str, float]] | None = None  # t, cpu, calls

    @property
    def pid(self) -> int:
        return self.process.pid

    def get(self, path: str) -> str | None:
        try:
            url = f"http://127.0.0.1:{self.port}{path}"
            with urllib.request.urlopen(url, timeout=2) as response:
                return str(response.read().decode())
        except OSError:
            return None

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stderr.flush()
                said = Path(self.stderr.name).read_text(errors="replace")[-2000:]
                code = self.process.returncode
                raise RuntimeError(f"daemon {self.name} exited with {code}: {said}")
            if self.get("/readyz") is not None:
                self.ready_after = time.monotonic() - self.started
                return
            time.sleep(0.1)
        raise TimeoutError(f"daemon {self.name} not ready after {timeout:.0f} s")

    def counters(self) -> dict[str, float]:
        """AWS calls by operation and canary operations, from the daemon's /metrics."""
        text = self.get("/metrics") or ""
        found: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "gtmon_aws_request_duration_seconds_count":
                    key = f"aws_{sample.labels['operation']}"
                    found[key] = found.get(key, 0.0) + sample.value
                elif sample.name == "gtmon_aws_request_duration_seconds_sum":
                    key = f"seconds_{sample.labels['operation']}"
                    found[key] = found.get(key, 0.0) + sample.value
                elif sample.name == "gtmon_canary_operations_total":
                    key = f"canary_{sample.labels['operation']}_{sample.labels['result']}"
                    found[key] = found.get(key, 0.0) + sample.value
                elif sample.name == "gtmon_canary_writes_skipped_total":
                    found["canary_writes_skipped"] = found.get("canary_writes_skipped", 0.0) + sample.value
        return found

    def mark(self) -> tuple[float, float, dict[str, float]]:
        return time.monotonic(), proc_cpu_seconds(self.pid), self.counters()

    def stop(self) -> int | None:
        returncode = stop_process(self.process)
        self.stderr.close()
        return returncode


def report(daemon: Daemon, start: tuple[float, float, dict[str, float]],
           end: tuple[float, float, dict[str, float]], startup_cpu: float) -> dict[str, Any]:
    wall = end[0] - start[0]
    cpu = end[1] - start[1]
    calls = {k: end[2].get(k, 0.0) - start[2].get(k, 0.0) for k in end[2]}
    aws_calls = sum(v for k, v in calls.items() if k.startswith("aws_"))
    return {
        "pid": daemon.pid,
        "ready_after_s": round(daemon.ready_after or 0.0, 2),
        "startup_cpu_s": round(startup_cpu, 2),
        "window_s": round(wall, 1),
        "rss_mb_max": round(max(daemon.rss) / 2**20, 1),
        "rss_mb_end": round(daemon.rss[-1] / 2**20, 1),
        # Every 30 s of the window: a steady figure, or growth?
        "rss_mb_every_30s": [round(v / 2**20, 1) for v in daemon.rss[::30]],
        "cpu_fraction_of_one_core": round(cpu / wall, 4),
        "cpu_seconds": round(cpu, 2),
        "aws_calls": int(aws_calls),
        "aws_calls_per_s": round(aws_calls / wall, 1),
        "cpu_ms_per_aws_call": round(cpu * 1000 / aws_calls, 2) if aws_calls else None,
        "calls_by_kind": {k: int(v) for k, v in sorted(calls.items()) if v and not k.startswith("seconds_")},
        # Mean round trip by AWS operation in the window: a write slower than the interval
        # makes the scheduler drop the next one (max_instances=1).
        "aws_mean_ms_by_kind": {
            k.removeprefix("seconds_"): round(v * 1000 / calls[f"aws_{k.removeprefix('seconds_')}"], 1)
            for k, v in sorted(calls.items())
            if k.startswith("seconds_") and calls.get(f"aws_{k.removeprefix('seconds_')}")
        },
        # Each canary is read in the other regions: reads per canary per (source, target) pair.
        "reads_per_canary_per_pair": round(
            calls.get("canary_read_ok", 0.0) / calls["canary_write_ok"] / (len(REGIONS) - 1), 2
        ) if calls.get("canary_write_ok") else None,
        "canary_writes_per_s": round(calls.get("canary_write_ok", 0.0) / wall, 2),
        # Due writes the daemon's scheduler dropped (gtmon_canary_writes_skipped_total).
        "canary_writes_skipped": int(calls.get("canary_writes_skipped", 0.0)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20 s instead of 5 minutes")
    parser.add_argument("--seconds", type=float, help="measuring window")
    parser.add_argument("--settle", type=float, help="seconds after ready before measuring")
    parser.add_argument("--interval", type=float, default=1.0, help="canary interval (s)")
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness for this process, the emulator and the daemons (negative: "
                             "keep other work on a shared machine from starving them; needs root)")
    parser.add_argument("--workdir", help="keep the daemons' configs and logs here")
    parser.add_argument("--canary-http", choices=("lean", "botocore"), default="lean",
                        help="aws.canary_http of both daemons (before/after runs of issue 14)")
    args = parser.parse_args()
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # the children inherit it
    args.seconds = args.seconds or (20.0 if args.quick else 300.0)
    args.settle = args.settle if args.settle is not None else (2.0 if args.quick else 15.0)
    started = time.monotonic()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gtmon-footprint-") as tmp, \
            EmulatorProcess(sandbox_emulator_spec()) as emulator:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        log(f"emulator {emulator.url} (pid {emulator.pid})")
        for table in [*TABLES, "gtmon-canary"]:
            create_global_table(emulator.url, table, REGIONS)
        daemons = [
            Daemon(name, daemon_config(emulator.url, name, free_port(), workdir, args.interval,
                                       args.canary_http), workdir)
            for name in ("five_tables", "dedicated")
        ]
        try:
            for daemon in daemons:
                daemon.wait_ready()
            time.sleep(args.settle)
            startup = {d.name: proc_cpu_seconds(d.pid) for d in daemons}
            starts = {d.name: d.mark() for d in daemons}
            emulator_cpu0 = proc_cpu_seconds(emulator.pid)
            log(f"measuring for {args.seconds:.0f} s")
            deadline = time.monotonic() + args.seconds
            while time.monotonic() < deadline:
                for daemon in daemons:
                    if daemon.process.poll() is not None:
                        raise RuntimeError(f"daemon {daemon.name} exited early")
                    daemon.rss.append(proc_rss_bytes(daemon.pid))
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            ends = {d.name: d.mark() for d in daemons}
            for daemon in daemons:
                results[daemon.name] = report(daemon, starts[daemon.name], ends[daemon.name],
                                              startup[daemon.name])
            results["emulator_cpu_fraction"] = round(
                (proc_cpu_seconds(emulator.pid) - emulator_cpu0) / args.seconds, 3)
        finally:
            for daemon in daemons:
                code = daemon.stop()
                results.setdefault(daemon.name, {})["exit_code"] = code
    results["loadavg_1m_at_end"] = float(Path("/proc/loadavg").read_text().split()[0])
    results["cpus"] = os.cpu_count()
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    five = results["five_tables"]
    dedicated = results["dedicated"]
    targets = {"rss_mb": TARGET_RSS_MB, "cpu_fraction_of_one_core": TARGET_CPU}
    met = {
        "five_tables_rss": five["rss_mb_max"] <= TARGET_RSS_MB,
        "five_tables_cpu": five["cpu_fraction_of_one_core"] <= TARGET_CPU,
        "dedicated_rss": dedicated["rss_mb_max"] <= TARGET_RSS_MB,
        "dedicated_cpu": dedicated["cpu_fraction_of_one_core"] <= TARGET_CPU,
    }
    params = {
        "quick": args.quick, "seconds": args.seconds, "settle_s": args.settle,
        "canary_interval_s": args.interval, "regions": REGIONS, "nice": args.nice,
        "canary_http": args.canary_http,
        "five_tables": {"tables": TABLES, "canary_key": CANARY_KEY},
        "dedicated": {"tables": [], "canary_table": "gtmon-canary"},
        "distances": "gtmon sandbox defaults", "daemons_side_by_side": True,
        "command": "python -m monitor run --config FILE",
    }
    emit("footprint", params, results, targets, met)


if __name__ == "__main__":
    main()
