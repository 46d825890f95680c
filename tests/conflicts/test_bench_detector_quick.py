"""Keeps bench/detector.py from rotting: run --quick and check the JSON contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "detector.py"


def test_bench_detector_quick_prints_json_last() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    last = proc.stdout.strip().splitlines()[-1]
    doc = json.loads(last)
    assert doc["bench"] == "detector"
    assert set(doc) == {"bench", "params", "results", "targets", "met"}
    assert doc["params"]["quick"] is True
    assert doc["results"]["records"] >= 200_000
    assert doc["results"]["checkpoints"] and doc["results"]["records_per_s"] > 0
    assert set(doc["met"]) >= set(doc["targets"])
    assert all(isinstance(v, bool) for v in doc["met"].values())
    assert doc["met"]["all_conflicts_reported"] is True
