"""bench/emulator.py --quick runs standalone and prints the agreed JSON shape last."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_emulator_benchmark_quick_prints_one_json_object_last() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "emulator.py"), "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["bench"] == "emulator"
    assert set(report) == {"bench", "params", "results", "targets", "met"}
    assert report["params"]["mode"] == "quick"
    results = report["results"]
    for figure in (
        "serial_writes_per_s",
        "serial_writes_per_s_plain_moto",
        "serial_ratio_vs_plain_moto",
        "concurrent_writes_per_s",
    ):
        assert results[figure] > 0, figure
    assert set(results["replication_delay_error_ms"]) >= {"p50", "p99"}
    assert results["replication_delay_error_ms"]["samples"] > 0
    assert results["replicated_writes_discarded"] == 0
    assert results["memory_phase"]["rss_mb_after"] > 0
    assert set(report["met"]) == set(report["targets"])
    assert all(isinstance(v, bool) for v in report["met"].values())
