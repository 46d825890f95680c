"""Where a canary AWS call's CPU goes: the dedicated-canary daemon under cProfile.

The daemon of bench/footprint.py's `dedicated` case (3 regions, 1 canary/s, the
sandbox's distances, streams off) runs in this process against an emulator in a
child process. Two windows of `--seconds` each, one after the other:

1. unprofiled: process CPU (user+sys, `time.process_time`) per AWS call, the figure
   the footprint targets are about;
2. under cProfile: self time grouped by where it is spent (request serialization,
   signing, HTTP, response parsing, the event loop, gtmon's own planning and
   settling, ...). cProfile inflates many small calls, so the shares are the
   result, not the absolute milliseconds.

    python bench/canary_profile.py [--quick] [--seconds N] [--top N] [--pstats FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    EmulatorProcess,
    create_global_table,
    emit,
    log,
    sandbox_emulator_spec,
    stop_service,
)

from monitor.config import parse_config
from monitor.logs import configure_logging
from monitor.sandbox import REGIONS
from monitor.service import Service

TABLE = "gtmon-canary"

# (category, path fragment): the first fragment found in a function's file names its
# category. Order matters: botocore's parts before botocore as a whole.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("serialize request (botocore)", "botocore/serialize.py"),
    ("validate params (botocore)", "botocore/validate.py"),
    ("sign request (botocore auth)", "botocore/auth.py"),
    ("parse response (botocore)", "botocore/parsers.py"),
    ("event hooks and handlers (botocore)", "botocore/hooks.py"),
    ("event hooks and handlers (botocore)", "botocore/handlers.py"),
    ("retries (botocore)", "botocore/retries/"),
    ("endpoint rules (botocore)", "botocore/regions.py"),
    ("endpoint rules (botocore)", "botocore/endpoint_provider.py"),
    ("request objects (botocore)", "botocore/awsrequest.py"),
    ("model shapes (botocore)", "botocore/model.py"),
    ("other botocore", "botocore/"),
    ("aiobotocore", "aiobotocore/"),
    ("HTTP client (aiohttp, yarl, multidict)", "aiohttp/"),
    ("HTTP client (aiohttp, yarl, multidict)", "yarl/"),
    ("HTTP client (aiohttp, yarl, multidict)", "multidict/"),
    ("HTTP client (aiohttp, yarl, multidict)", "urllib3/"),
    ("HTTP client (aiohttp, yarl, multidict)", "http/"),
    ("event loop and sockets (asyncio)", "asyncio/"),
    ("event loop and sockets (asyncio)", "selectors.py"),
    ("event loop and sockets (asyncio)", "socket.py"),
    ("event loop and sockets (asyncio)", "ssl.py"),
    ("scheduler (APScheduler)", "apscheduler/"),
    ("gtmon canary (planning, settling)", "monitor/canary/"),
    ("gtmon aws wrapper", "monitor/aws.py"),
    ("gtmon metrics and web", "monitor/metrics.py"),
    ("gtmon metrics and web", "monitor/web"),
    ("gtmon metrics and web", "prometheus_client/"),
    ("logging (structlog)", "structlog/"),
    ("logging (structlog)", "logging/"),
    ("json, hashing, hmac (stdlib)", "json/"),
    ("json, hashing, hmac (stdlib)", "hmac.py"),
    ("json, hashing, hmac (stdlib)", "hashlib.py"),
    ("other gtmon", "monitor/"),
)


def category(filename: str, function: str) -> str:
    for name, fragment in CATEGORIES:
        if fragment in filename:
            return name
    if filename == "~":  # C functions: name them by what they are
        if "select" in function or "epoll" in function or "socket" in function:
            return "event loop and sockets (asyncio)"
        if any(word in function for word in ("hmac", "sha256", "digest", "json", "hash")):
            return "json, hashing, hmac (stdlib)"
        return "C builtins (str, dict, re, ...)"
    return "other Python"


def breakdown(stats: pstats.Stats) -> dict[str, float]:
    """Self time (tottime) per category, in seconds."""
    found: dict[str, float] = {}
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, function), (_cc, _nc, tottime, _ct, _callers) in raw.items():
        key = category(filename, function)
        found[key] = found.get(key, 0.0) + tottime
    return found


def aws_calls(service: Service) -> float:
    registry = service.registry
    total = 0.0
    for family in registry.collect():
        if family.name == "gtmon_aws_request_duration_seconds":
            total += sum(s.value for s in family.samples if s.name.endswith("_count"))
    return total


def writes(service: Service) -> float:
    return sum(
        s.value
        for family in service.registry.collect() if family.name == "gtmon_canary_operations"
        for s in family.samples
        if s.name.endswith("_total") and s.labels["operation"] == "write" and s.labels["result"] == "ok"
    )


async def run(url: str, seconds: float, settle: float, top: int, pstats_path: str | None) -> dict[str, Any]:
    config = parse_config({
        "instance_id": "profile",
        "regions": REGIONS,
        "aws": {"endpoint_url": url},
        "canary": {"interval_seconds": 1.0},
        "streams": {"enabled": False},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "log": {"format": "json", "level": "warning"},
    }, "canary_profile")
    service = Service(config)
    await service.start()
    try:
        await asyncio.sleep(settle)
        windows: dict[str, Any] = {}
        # CPU time, not wall time: a wall-clock profile books the event loop's idle wait in
        # epoll as if it were work.
        profiler = cProfile.Profile(time.process_time)
        for name in ("unprofiled", "profiled"):
            calls0, writes0 = aws_calls(service), writes(service)
            cpu0, t0 = time.process_time(), time.monotonic()
            if name == "profiled":
                profiler.enable()
            await asyncio.sleep(seconds)
            if name == "profiled":
                profiler.disable()
            cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
            calls = aws_calls(service) - calls0
            windows[name] = {
                "window_s": round(wall, 1),
                "cpu_s": round(cpu, 3),
                "cpu_fraction_of_one_core": round(cpu / wall, 4),
                "aws_calls": int(calls),
                "cpu_ms_per_aws_call": round(cpu * 1000 / calls, 3) if calls else None,
                "canary_writes_per_s": round((writes(service) - writes0) / wall, 2),
            }
    finally:
        await stop_service(service, "profile")
    stats = pstats.Stats(profiler)
    if pstats_path:
        stats.dump_stats(pstats_path)
    found = breakdown(stats)
    total = sum(found.values()) or 1.0
    calls = windows["profiled"]["aws_calls"] or 1
    windows["profiled"]["profiled_ms_per_aws_call"] = round(total * 1000 / calls, 3)
    shares = {
        name: {"share": round(value / total, 3), "ms_per_aws_call": round(value * 1000 / calls, 3)}
        for name, value in sorted(found.items(), key=lambda kv: -kv[1])
    }
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]

    def heaviest(index: int) -> list[dict[str, Any]]:
        ranked = sorted(raw.items(), key=lambda kv: -kv[1][index])[:top]
        return [
            {"function": f"{os.path.basename(f)}:{line}:{fn}",
             "ms_per_aws_call": round(v[index] * 1000 / calls, 3)}
            for (f, line, fn), v in ranked
        ]

    # TCP connections opened per call: keep-alive at work, or a connection per request?
    # Counted at socket.connect: cProfile counts every resumption of a coroutine as a call.
    opened = sum(v[1] for (_f, _l, fn), v in raw.items()
                 if fn == "<method 'connect' of '_socket.socket' objects>")
    windows["profiled"]["tcp_connections_opened_per_aws_call"] = round(opened / calls, 3)
    return {**windows, "self_time_by_category": shares, "heaviest_self": heaviest(2),
            "heaviest_cumulative": heaviest(3)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10 s windows instead of 60 s")
    parser.add_argument("--seconds", type=float, help="length of each window")
    parser.add_argument("--top", type=int, default=25, help="functions listed by cumulative time")
    parser.add_argument("--pstats", help="also write the profile here (for snakeviz, pstats)")
    args = parser.parse_args()
    seconds = args.seconds or (10.0 if args.quick else 60.0)
    settle = 3.0 if args.quick else 10.0
    configure_logging("json", "warning", stream=sys.stderr)
    started = time.monotonic()
    with EmulatorProcess(sandbox_emulator_spec()) as emulator:
        create_global_table(emulator.url, TABLE, REGIONS)
        log(f"emulator {emulator.url}; two windows of {seconds:.0f} s")
        results = asyncio.run(run(emulator.url, seconds, settle, args.top, args.pstats))
    results["loadavg_1m_at_end"] = float(Path("/proc/loadavg").read_text().split()[0])
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    params = {"quick": args.quick, "seconds": seconds, "settle_s": settle, "regions": REGIONS,
              "canary_interval_s": 1.0, "distances": "gtmon sandbox defaults",
              "command": "python bench/canary_profile.py"}
    emit("canary_profile", params, results, {}, {})


if __name__ == "__main__":
    main()
