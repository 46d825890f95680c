"""CPU per canary call: botocore's path against the lean path (monitor/lean.py), both in the daemon.

Issue 14's lever. The same canary read (a strongly consistent GetItem with the canary's
projection) made two ways through the daemon's own `AwsClients.call`, with its error
mapping and gtmon_aws_request_* metrics:

* `botocore`: `lean=False`, the aioboto3 client (what `aws.canary_http: botocore` does);
* `lean`: `lean=True`, monitor/lean.py: the body serialized per call, signed per call with
  botocore's SigV4Auth on frozen credentials of the session's chain, sent on the client's
  own aiohttp session, botocore's standard retries, the answer parsed with `json.loads`.

Both run in this process, in alternating blocks (same load, same moment), each block
`--workers` concurrent loops of sequential calls; CPU is this process's user+sys
(`time.process_time`), servers run in child processes. Servers: the gtmon emulator
(no client latency; like werkzeug's development server it closes the connection after
every answer, so each call opens a TCP connection) and DynamoDB Local (Jetty, keeps
connections alive, as AWS does), when its jar is installed (scripts/ci-dynamodb-local.sh).
`--profile FILE` also writes a CPU-time cProfile of one more lean block on DynamoDB Local.

    python bench/lean_call.py [--quick] [--calls N] [--workers N] [--no-dynamodb-local]
                              [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import boto3
from _common import EmulatorProcess, dynamodb_local, dynamodb_local_jar_dir, emit, log

from monitor.aws import AwsClients
from monitor.config import AwsSettings
from monitor.metrics import Metrics

REGION = "us-east-1"
KEYS = ("gtmon", "gtmon")  # what AwsClients signs with on a loopback endpoint
TABLE = "lean-bench"
KEY = {"pk": {"S": "__gtmon__#bench#us-east-1"}}
READ = {
    "TableName": TABLE,
    "Key": KEY,
    "ConsistentRead": True,
    "ProjectionExpression": "gtmon_seq, gtmon_written_at",
}


def prepare(url: str) -> None:
    # The same keys as AwsClients uses on a loopback endpoint: the table is the same one.
    ddb = boto3.client("dynamodb", region_name=REGION, endpoint_url=url,
                       aws_access_key_id=KEYS[0], aws_secret_access_key=KEYS[1])
    ddb.create_table(
        TableName=TABLE, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.get_waiter("table_exists").wait(TableName=TABLE)
    ddb.put_item(TableName=TABLE, Item={**KEY, "gtmon_seq": {"N": "42"},
                                        "gtmon_written_at": {"N": "1.5"}})


async def block(call: Callable[[], Awaitable[dict[str, Any]]], calls: int, workers: int) -> float:
    """CPU seconds for `calls` calls made by `workers` concurrent loops."""
    async def loop(n: int) -> None:
        for _ in range(n):
            answer = await call()
            assert answer["Item"]["gtmon_seq"] == {"N": "42"}, answer

    cpu = time.process_time()
    await asyncio.gather(*(loop(calls // workers) for _ in range(workers)))
    return time.process_time() - cpu


async def measure(url: str, calls: int, workers: int, rounds: int,
                  profile: str | None = None) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    settings = AwsSettings.model_validate({"endpoint_url": url, "canary_http": "lean"})
    clients = AwsClients(settings, Metrics(CollectorRegistry(), "bench"))
    await clients.start([REGION])
    profiler = cProfile.Profile(time.process_time) if profile else None

    def way(lean: bool) -> Callable[[], Awaitable[dict[str, Any]]]:
        async def call() -> dict[str, Any]:
            answer: dict[str, Any] = await clients.call(REGION, "dynamodb", "get_item", lean=lean, **READ)
            return answer
        return call

    ways = {"botocore": way(False), "lean": way(True)}
    cpu: dict[str, list[float]] = {"botocore": [], "lean": []}
    try:
        for call in ways.values():  # warm: models loaded, pools open
            await block(call, workers * 5, workers)
        for _ in range(rounds):
            for name, call in ways.items():
                cpu[name].append(await block(call, calls, workers))
        if profiler is not None:  # an extra block: the profiler's own cost stays out of the figures
            profiler.enable()
            await block(ways["lean"], calls, workers)
            profiler.disable()
    finally:
        await clients.close()
    if profiler is not None and profile is not None:
        profiler.dump_stats(profile)
    per_call = {k: sorted(v)[len(v) // 2] * 1000 / (calls // workers * workers) for k, v in cpu.items()}
    return {
        "cpu_ms_per_call_median_block": {k: round(v, 3) for k, v in per_call.items()},
        "cpu_ms_per_call_blocks": {
            k: [round(c * 1000 / (calls // workers * workers), 3) for c in v] for k, v in cpu.items()
        },
        "lean_over_botocore": round(per_call["lean"] / per_call["botocore"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer calls and rounds")
    parser.add_argument("--calls", type=int, help="calls per block")
    parser.add_argument("--workers", type=int, default=8, help="concurrent loops per block")
    parser.add_argument("--rounds", type=int, help="blocks of each kind, alternating")
    parser.add_argument("--no-dynamodb-local", action="store_true")
    parser.add_argument("--profile", metavar="FILE",
                        help="write a CPU-time cProfile of one more lean block on DynamoDB Local")
    args = parser.parse_args()
    calls = args.calls or (200 if args.quick else 800)
    rounds = args.rounds or (3 if args.quick else 5)
    started = time.monotonic()
    results: dict[str, Any] = {}
    emulator_spec = {"regions": [REGION], "replica_activation_seconds": 0.2}
    with EmulatorProcess(emulator_spec) as emulator:
        prepare(emulator.url)
        log(f"emulator {emulator.url}: {rounds} x {calls} calls each way")
        results["emulator"] = asyncio.run(measure(emulator.url, calls, args.workers, rounds))
    jar_dir = None if args.no_dynamodb_local else dynamodb_local_jar_dir()
    if jar_dir is None:
        results["dynamodb_local"] = "not run (jar not installed or --no-dynamodb-local)"
    else:
        with tempfile.TemporaryDirectory(prefix="gtmon-lean-") as tmp, \
                dynamodb_local(jar_dir, Path(tmp)) as (url, _):
            prepare(url)
            log(f"DynamoDB Local {url}: {rounds} x {calls} calls each way")
            results["dynamodb_local"] = asyncio.run(
                measure(url, calls, args.workers, rounds, args.profile))
    results["loadavg_1m_at_end"] = float(Path("/proc/loadavg").read_text().split()[0])
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    params = {"quick": args.quick, "calls_per_block": calls, "workers": args.workers,
              "rounds": rounds, "command": "python bench/lean_call.py"}
    emit("lean_call", params, results, {"cpu_ms_per_aws_call": 0.5}, {
        f"{where}_lean_le_target": r["cpu_ms_per_call_median_block"]["lean"] <= 0.5
        for where, r in results.items() if isinstance(r, dict)
    })


if __name__ == "__main__":
    main()
