"""bench/soak.py still runs: a 36-second form kills the daemon twice, applies a fault and
prints its JSON last.

The shape of the output is checked, and that the run did what it says (three daemon
runs, two of them killed, the fault applied and ended, ground truth read); the figures
and the checks' outcomes are not: a run this short on a shared CI machine proves the
script works, the full run (bench/results/soak.json) is what the figures come from.
"""

from __future__ import annotations

import json

import pytest

from tests.bench.quick import QuickBenches

CHECK_FAILED = 3  # bench/soak.py's exit code when a check fails; 1 would be a crash


@pytest.mark.timeout(400)
@pytest.mark.quick_bench("soak")
def test_soak_short_form_runs_kills_restarts_and_reports(quick_benches: QuickBenches) -> None:
    done = quick_benches.result("soak")
    out = quick_benches.out("soak")
    assert done.returncode in (0, CHECK_FAILED), done.stderr[-4000:]
    printed = done.stdout.strip()
    report = json.loads(printed[printed.index("\n{") + 1:] if not printed.startswith("{") else printed)
    assert report == json.loads(out.read_text())
    assert set(report) == {"bench", "params", "results", "targets", "met"}
    assert report["bench"] == "soak" and report["params"]["quick"] is True
    assert report["met"] and all(isinstance(v, bool) for v in report["met"].values())
    assert (done.returncode == 0) is all(report["met"].values())
    results = report["results"]
    runs = results["daemon_runs"]
    assert len(runs) == 3 and all("killed_at" in r for r in runs[:2]) and "killed_at" not in runs[2]
    (fault,) = results["faults"]
    assert fault["kind"] == "pause" and fault["pairs"]
    assert results["lost_writes_exact_table"]["writes"] > 0
    assert results["components_at_end"] > 0
    assert sum(results["canary_measurements"].values()) > 0
    assert report["params"]["load_average_start"] and report["params"]["load_average_end"]
