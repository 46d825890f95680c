"""Benchmark: the global-tables emulator's write throughput, replication timing and memory.

    python bench/emulator.py [--quick]

Runs `gtmon emulator` and plain moto (`moto_server`, no gtmon hooks) as two local
subprocesses on loopback and drives both from this process, so the two servers are measured
the same way in the same run:

- serial writes/s with replication to two regions (boto3, one PutItem at a time), and the
  same serial figure against plain moto (a plain table, nothing replicated); the phases
  alternate so drift on the machine hits both sides alike. Target: the emulator keeps at
  least 70% of plain moto's serial rate.
- writes/s with 20 concurrent aioboto3 tasks (emulator, and plain moto for reference).
- replication delay error from the emulator's ground truth: apply time in a replica minus
  accept time in the origin minus the configured (fixed) link delay; p50, p99, max.
- the emulator's RSS before and after N more writes (100k in the full run, ~2k with
  --quick), written by 20 concurrent tasks, replicated to two regions, streams kept.

Bounded in time (--budget-seconds caps the memory phase; the writes actually done are
reported). Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aioboto3
import boto3
from aiobotocore.config import AioConfig
from botocore.config import Config

REPO = Path(__file__).resolve().parents[1]
ORIGIN = "us-east-1"
REPLICAS = ["eu-west-1", "ap-southeast-1"]
CREDENTIALS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
TASKS = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # answering, if not with 200
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server {url} did not come up in {timeout}s")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def control(url: str, path: str) -> Any:
    with urllib.request.urlopen(f"{url}/gtmon/{path}", timeout=120) as response:
        return json.loads(response.read())


def boto(url: str, region: str = ORIGIN) -> Any:
    return boto3.client(
        "dynamodb",
        region_name=region,
        endpoint_url=url,
        **CREDENTIALS,
        config=Config(retries={"max_attempts": 0}, connect_timeout=5, read_timeout=30),
    )


def item(prefix: str, i: int) -> dict[str, Any]:
    return {
        "pk": {"S": f"{prefix}-{i:08d}"},
        "status": {"S": "Shipped"},
        "customer": {"S": f"customer-{i % 97:03d}"},
        "amount": {"N": str(i % 1000)},
        "note": {"S": "x" * 64},
    }


def create_table(url: str, name: str, replicated: bool) -> None:
    ddb = boto(url)
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    if not replicated:
        return
    ddb.update_table(
        TableName=name, ReplicaUpdates=[{"Create": {"RegionName": r}} for r in REPLICAS]
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        replicas = ddb.describe_table(TableName=name)["Table"].get("Replicas", [])
        if len(replicas) == len(REPLICAS) and all(r["ReplicaStatus"] == "ACTIVE" for r in replicas):
            return
        time.sleep(0.05)
    raise RuntimeError("replicas never became ACTIVE")


def serial_writes(url: str, table: str, prefix: str, count: int) -> float:
    """Seconds taken for `count` PutItems, one at a time."""
    ddb = boto(url)
    ddb.put_item(TableName=table, Item=item(prefix + "-warm", 0))
    started = time.perf_counter()
    for i in range(count):
        ddb.put_item(TableName=table, Item=item(prefix, i))
    return time.perf_counter() - started


async def concurrent_writes(
    url: str, table: str, prefix: str, count: int, deadline: float | None = None
) -> tuple[int, float]:
    """(writes done, seconds) for `count` PutItems spread over 20 tasks."""
    session = aioboto3.Session()
    config = AioConfig(max_pool_connections=TASKS, retries={"max_attempts": 0}, read_timeout=60)
    async with session.client(
        "dynamodb", region_name=ORIGIN, endpoint_url=url, config=config, **CREDENTIALS
    ) as ddb:
        await ddb.put_item(TableName=table, Item=item(prefix + "-warm", 0))
        done = 0

        async def worker(lane: int) -> None:
            nonlocal done
            for i in range(lane, count, TASKS):
                if deadline is not None and time.monotonic() > deadline:
                    return
                await ddb.put_item(TableName=table, Item=item(prefix, i))
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(lane) for lane in range(TASKS)))
        return done, time.perf_counter() - started


def settle(url: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if control(url, "state")["in_flight"] == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("replication did not settle")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def delay_errors_ms(url: str, table: str, delay_ms: float) -> list[float]:
    errors = []
    for write in control(url, f"truth?table={table}")["writes"]:
        for region, applied in write["applied"].items():
            if region != write["origin"]:
                errors.append((applied - write["accepted_at"]) * 1000 - delay_ms)
    return errors


def start(command: list[str], port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, for the test suite")
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=None,
        help="cap on the memory phase (default 900, --quick 60)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    params: dict[str, Any] = {
        "mode": "quick" if quick else "full",
        "serial_writes_per_side": 200 if quick else 2000,
        "serial_rounds": 2,
        "concurrent_writes": 400 if quick else 4000,
        "concurrent_tasks": TASKS,
        "memory_writes": 2000 if quick else 100_000,
        "link_delay_ms": 50.0,
        "replicas": len(REPLICAS),
        "budget_seconds": args.budget_seconds or (60.0 if quick else 900.0),
        "item_bytes_approx": len(json.dumps(item("bench", 0))),
        "python": sys.version.split()[0],
    }
    emu_port, moto_port = free_port(), free_port()
    emu_url, moto_url = f"http://127.0.0.1:{emu_port}", f"http://127.0.0.1:{moto_port}"
    emulator = start(
        [
            sys.executable,
            "-m",
            "monitor",
            "emulator",
            "--port",
            str(emu_port),
            "--delay-ms",
            str(params["link_delay_ms"]),
            "--activation-seconds",
            "0.1",
        ],
        emu_port,
    )
    moto = start(
        [
            sys.executable,
            "-c",
            "import sys; from moto.server import main; sys.exit(main(sys.argv[1:]))",
            "-H",
            "127.0.0.1",
            "-p",
            str(moto_port),
        ],
        moto_port,
    )
    try:
        wait_until_up(f"{emu_url}/gtmon/health", emulator)
        wait_until_up(f"{moto_url}/moto-api/", moto)
        create_table(emu_url, "Bench", replicated=True)
        create_table(moto_url, "Bench", replicated=False)

        # Serial, alternating sides; each round writes new keys.
        per_round = params["serial_writes_per_side"] // params["serial_rounds"]
        emu_seconds = moto_seconds = 0.0
        for r in range(params["serial_rounds"]):
            moto_seconds += serial_writes(moto_url, "Bench", f"serial{r}", per_round)
            emu_seconds += serial_writes(emu_url, "Bench", f"serial{r}", per_round)
        total = per_round * params["serial_rounds"]
        emu_serial, moto_serial = total / emu_seconds, total / moto_seconds

        done, seconds = asyncio.run(
            concurrent_writes(emu_url, "Bench", "conc", params["concurrent_writes"])
        )
        emu_concurrent = done / seconds
        done, seconds = asyncio.run(
            concurrent_writes(moto_url, "Bench", "conc", params["concurrent_writes"])
        )
        moto_concurrent = done / seconds
        settle(emu_url)
        errors = delay_errors_ms(emu_url, "Bench", params["link_delay_ms"])
        discarded = sum(
            len(w["discarded"]) for w in control(emu_url, "truth?table=Bench")["writes"]
        )

        # Memory: RSS before and after N more replicated writes.
        create_table(emu_url, "Bulk", replicated=True)
        rss_before = rss_mb(emulator.pid)
        deadline = time.monotonic() + params["budget_seconds"]
        memory_done, memory_seconds = asyncio.run(
            concurrent_writes(emu_url, "Bulk", "bulk", params["memory_writes"], deadline)
        )
        settle(emu_url)
        rss_after = rss_mb(emulator.pid)
        state = control(emu_url, "state")
    finally:
        stop(emulator)
        stop(moto)

    ratio = emu_serial / moto_serial
    results = {
        "serial_writes_per_s": round(emu_serial, 1),
        "serial_writes_per_s_plain_moto": round(moto_serial, 1),
        "serial_ratio_vs_plain_moto": round(ratio, 3),
        "concurrent_writes_per_s": round(emu_concurrent, 1),
        "concurrent_writes_per_s_plain_moto": round(moto_concurrent, 1),
        "replication_delay_error_ms": {
            "p50": round(percentile(errors, 50), 2),
            "p99": round(percentile(errors, 99), 2),
            "max": round(max(errors), 2),
            "mean": round(statistics.fmean(errors), 2),
            "samples": len(errors),
        },
        "replicated_writes_discarded": discarded,
        "memory_phase": {
            "writes": memory_done,
            "writes_per_s": round(memory_done / memory_seconds, 1),
            "rss_mb_before": round(rss_before, 1),
            "rss_mb_after": round(rss_after, 1),
            "rss_kb_per_write": round((rss_after - rss_before) * 1024 / max(1, memory_done), 2),
            "stream_records_held": state["streams"]["records"],
            "truth_writes_held": state["writes_recorded"],
        },
    }
    targets = {
        "serial_ratio_vs_plain_moto": ">= 0.70",
        "replication_delay_error_p99_ms": "<= 100",
        "memory_writes_completed": f"== {params['memory_writes']}",
    }
    met = {
        "serial_ratio_vs_plain_moto": ratio >= 0.70,
        "replication_delay_error_p99_ms": results["replication_delay_error_ms"]["p99"] <= 100,
        "memory_writes_completed": memory_done == params["memory_writes"],
    }
    print(
        json.dumps(
            {
                "bench": "emulator",
                "params": params,
                "results": results,
                "targets": targets,
                "met": met,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
