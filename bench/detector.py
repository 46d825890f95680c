"""Benchmark: pure conflict-detector throughput and memory on synthetic 3-region streams.

Usage: python bench/detector.py [--quick] [--records N] [--max-seconds S]

A fast generator (not the property tests' simulator, which is too slow for
10 million records) writes items from random regions: most writes replicate
everywhere before the next one (identical chains, the common case), a share
are seed-style conflicts (two regions write the same version concurrently,
the newer wins; the third region sees either order). Keys are reused after
they settle, so the detector faces an endless stream over a bounded key space.
Only time spent inside the detector (observe, advance_watermark, poll) is
counted. Memory is the process RSS at checkpoints; flat means the last
checkpoint is within 10 % of the first one taken after warm-up. Prints one JSON
object last.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor.conflicts import Detector, DetectorSettings, Observation

REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")
TABLE = "Orders"


def rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Generator:
    """Writes in simulated time; yields chunks of observations in reader order."""

    def __init__(self, seed: int, keys: int, writes_per_second: float, p_conflict: float) -> None:
        self.rng = random.Random(seed)
        self.keys = keys
        self.rate = writes_per_second
        self.p_conflict = p_conflict
        self.now = 1_700_000_000.0
        self.seq = [0, 0, 0]
        self.version: dict[int, int] = {}
        self.next_key = 0
        self.conflicts = 0
        self.tags: dict[int, str] = {}

    def _image(self, key: int, n: int, tag: str) -> tuple[Any, ...]:
        return (("OrderID", ("S", str(key))), ("n", ("N", str(n))), ("t", ("S", tag)))

    def _rec(self, r: int, key: Any, old: Any, new: Any, at: float) -> Observation:
        self.seq[r] += 1
        return Observation(
            TABLE, REGIONS[r], key, "MODIFY" if old else "INSERT", old, new,
            str(self.seq[r]), float(int(at)), at,
        )  # fmt: skip

    def chunk(self, writes: int) -> list[Observation]:
        out: list[Observation] = []
        rng = self.rng
        for _ in range(writes):
            self.now += rng.expovariate(self.rate)
            k = self.next_key
            self.next_key = (self.next_key + 1) % self.keys
            key = (("OrderID", ("S", str(k))),)
            n = self.version.get(k, 0)
            old = self._image(k, n, self.tags.pop(k, "x")) if n else None
            t = self.now
            if old is not None and rng.random() < self.p_conflict:
                a, b = rng.sample(range(3), 2)
                c = 3 - a - b
                va, vb = self._image(k, n + 1, "a"), self._image(k, n + 1, "b")
                out.append(self._rec(a, key, old, va, t))
                out.append(self._rec(b, key, old, vb, t + 0.2))
                out.append(self._rec(a, key, va, vb, t + 0.5))
                if rng.random() < 0.5:  # the third region saw both, in timestamp order
                    out.append(self._rec(c, key, old, va, t + 0.3))
                    out.append(self._rec(c, key, va, vb, t + 0.6))
                else:  # or only the winner
                    out.append(self._rec(c, key, old, vb, t + 0.4))
                self.tags[k] = "b"
                self.conflicts += 1
            else:
                new = self._image(k, n + 1, "x")
                src = rng.randrange(3)
                for r in range(3):
                    lag = 0.0 if r == src else rng.uniform(0.05, 0.8)
                    out.append(self._rec(r, key, old, new, t + lag))
            self.version[k] = n + 1
        out.sort(key=lambda o: o.observed_at or 0.0)
        return out


def run(records: int, max_seconds: float, checkpoints: int, seed: int) -> dict[str, Any]:
    settings = DetectorSettings(settle_seconds=3.0, max_tracked_keys=1_000_000)
    det = Detector({TABLE: REGIONS}, settings)
    gen = Generator(seed, keys=50_000, writes_per_second=10_000.0, p_conflict=0.01)
    done = 0
    busy = 0.0
    verdicts = 0
    wall0 = time.monotonic()
    marks: list[dict[str, Any]] = []
    step = max(records // checkpoints, 1)
    next_mark = step
    truncated = False
    while done < records:
        obs = gen.chunk(2_000)
        t0 = time.perf_counter()
        for ob in obs:
            det.observe(ob)
        horizon = gen.now - 1.0
        for r in REGIONS:
            det.advance_watermark(TABLE, r, horizon)
        verdicts += len(det.poll(gen.now))
        busy += time.perf_counter() - t0
        done += len(obs)
        if done >= next_mark:
            marks.append(
                {
                    "records": done,
                    "rss_mb": round(rss_mb(), 1),
                    "tracked_keys": det.tracked_keys(TABLE),
                    "records_per_s": round(done / busy),
                }
            )
            next_mark += step
        if time.monotonic() - wall0 > max_seconds:
            truncated = True
            break
    t0 = time.perf_counter()
    verdicts += len(det.flush())
    busy += time.perf_counter() - t0
    warm = marks[min(1, len(marks) - 1)]["rss_mb"] if marks else 0.0
    last = marks[-1]["rss_mb"] if marks else 0.0
    return {
        "records": done,
        "detector_seconds": round(busy, 2),
        "wall_seconds": round(time.monotonic() - wall0, 2),
        "records_per_s": round(done / busy) if busy else 0,
        "conflicts_injected": gen.conflicts,
        "verdicts": verdicts,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_warmup_mb": warm,
        "rss_last_mb": last,
        "checkpoints": marks,
        "stats": dict(det.stats),
        "truncated_by_time": truncated,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200k records, for the test suite")
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--max-seconds", type=float, default=None)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    records = args.records or (200_000 if args.quick else 10_000_000)
    max_seconds = args.max_seconds or (60.0 if args.quick else 1200.0)
    results = run(records, max_seconds, checkpoints=4 if args.quick else 10, seed=args.seed)
    targets = {"records_per_s_min": 100_000, "rss_growth_after_warmup_max": 0.10}
    growth = (
        (results["rss_last_mb"] - results["rss_after_warmup_mb"]) / results["rss_after_warmup_mb"]
        if results["rss_after_warmup_mb"]
        else 0.0
    )
    results["rss_growth_after_warmup"] = round(growth, 4)
    met = {
        "records_per_s_min": results["records_per_s"] >= targets["records_per_s_min"],
        "rss_growth_after_warmup_max": growth <= targets["rss_growth_after_warmup_max"],
        "all_conflicts_reported": results["verdicts"] == results["conflicts_injected"],
    }
    params = {
        "records": records,
        "max_seconds": max_seconds,
        "quick": args.quick,
        "seed": args.seed,
        "regions": len(REGIONS),
        "keys": 50_000,
        "writes_per_second_simulated": 10_000,
        "p_conflict": 0.01,
        "settle_seconds": 3.0,
    }
    print(json.dumps({"bench": "detector", "params": params, "results": results,
                      "targets": targets, "met": met}))  # fmt: skip


if __name__ == "__main__":
    main()
