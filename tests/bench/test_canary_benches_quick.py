"""The canary benchmarks still run: each `--quick` finishes and prints its JSON last.

These check the shape of the output, never the figures: the quick runs are too
short (and CI machines too noisy) for the targets to mean anything.
"""

from __future__ import annotations

import json

import pytest

from tests.bench.quick import QuickBenches


def run_quick(benches: QuickBenches, name: str) -> dict:
    done = benches.result(name)
    assert done.returncode == 0, done.stderr[-4000:]
    output = done.stdout.strip()
    # The JSON object is the last thing printed.
    report = json.loads(output[output.index("\n{") + 1 :] if not output.startswith("{") else output)
    assert set(report) == {"bench", "params", "results", "targets", "met"}
    assert report["bench"] == name
    assert report["params"]["quick"] is True
    assert report["met"] and all(isinstance(v, bool) for v in report["met"].values())
    return report


@pytest.mark.timeout(400)
@pytest.mark.quick_bench("lag_accuracy")
def test_lag_accuracy_quick(quick_benches: QuickBenches) -> None:
    report = run_quick(quick_benches, "lag_accuracy")
    results = report["results"]
    assert results["unmatched_measurements"] == 0
    assert {"rtt0", "rtt80", "rtt220"} <= set(results["pooled"])
    for name, cell in results["cells"].items():
        if "5000" not in name:  # five seconds leave few canaries after warm-up in a quick run
            assert cell["n"] > 0, name
    assert results["pooled"]["all"]["error_p50_ms"] is not None
    assert results["pooled"]["all"]["uncorrected_error_p50_ms"] is not None
    # Central-mode cells only in "cells"; per-region mode has its own section.
    assert not any(name.startswith("per-region") for name in results["cells"])
    check_per_region(report)


def check_per_region(report: dict) -> None:
    """Per-region mode: three daemons (one per home region) on their own three regions."""
    params = report["params"]["per_region"]
    assert params["daemons"] == 3 and len(params["regions"]) == 3
    # A daemon next to its region: every client of these regions sees the local round trip.
    assert params["client_rtt_ms"] <= 10
    assert "gtmon_written_at" in params["ground_truth"]
    per_region = report["results"]["per_region"]
    assert per_region["unmatched_measurements"] == 0
    regions = params["regions"]
    assert {cell["pair"] for cell in per_region["cells"].values()} == {
        f"{s}->{t}" for s in regions for t in regions if s != t
    }
    assert per_region["cells"]["per-region | fixed 50 ms"]["n"] > 0
    pooled = per_region["pooled"]
    assert pooled["n"] > 0
    for key in ("error_p50_ms", "error_p99_ms", "vs_accepted_error_p50_ms",
                "writer_commit_latency_p50_ms", "reads_per_canary_mean"):
        assert pooled[key] is not None, key
    assert 0.0 <= pooled["within_bound"] <= 1.0
    assert 0.0 <= pooled["vs_accepted_within_bound"] <= 1.0
    assert {"per_region_error_p50", "per_region_error_p99",
            "per_region_reads_per_canary_per_pair"} <= set(report["met"])


@pytest.mark.timeout(400)
@pytest.mark.quick_bench("stall")
def test_stall_quick(quick_benches: QuickBenches) -> None:
    report = run_quick(quick_benches, "stall")
    trials = report["results"]["trials"]
    assert trials
    for trial in trials:
        # A paused link shows: the gauge crosses every threshold.
        assert all(v is not None for v in trial["crossed_after_s"].values())
        assert trial["resume_to_normal_s"] is not None


@pytest.mark.timeout(400)
@pytest.mark.quick_bench("footprint")
def test_footprint_quick(quick_benches: QuickBenches) -> None:
    report = run_quick(quick_benches, "footprint")
    results = report["results"]
    for name in ("five_tables", "dedicated"):
        assert results[name]["rss_mb_max"] > 0
        assert results[name]["aws_calls"] > 0
        assert results[name]["exit_code"] == 0
    # Five canary targets should write five times as many canaries as one; they manage about
    # three: writes queue behind pipelined reads for each region client's 20 pooled connections
    # and APScheduler skips a run while the previous write still waits (see bench/footprint.py).
    five = results["five_tables"]["calls_by_kind"]["canary_write_ok"]
    one = results["dedicated"]["calls_by_kind"]["canary_write_ok"]
    assert five > 2 * one


@pytest.mark.timeout(400)
@pytest.mark.quick_bench("stall_memory")
def test_stall_memory_quick(quick_benches: QuickBenches) -> None:
    report = run_quick(quick_benches, "stall_memory")
    cases = report["results"]["cases"]
    assert set(cases) == {"timeout=60s", "timeout=3600s"}
    for case in cases.values():
        # Simulated in virtual time: these do not depend on the machine.
        assert case["misses_per_canary_peak"] <= 16
        assert case["pending_peak"] <= case["timeout_seconds"] + 1
        assert case["oldest_pending_gauge"]["rose_every_sample"]
        assert case["oldest_pending_gauge"]["after_recovery_s"] < 5
        assert case["most_canaries_one_settle_call"] <= 50
        assert case["tracemalloc"]["tracemalloc_held_mb"] <= 10
        assert case["probe_state_mb"]["end_of_pause"] <= 10
        assert case["recovery_canaries"] is not None and case["recovery_canaries"] <= 10
        # Settling after the pause, in CPU time (a busy machine's preemption left out).
        assert case["longest_callback_cpu_ms"]["after"] < 50
    assert cases["timeout=60s"]["lost_canaries"] > 0  # a 2-minute pause in quick mode


@pytest.mark.timeout(400)
@pytest.mark.quick_bench("fault_recovery")
def test_fault_recovery_quick(quick_benches: QuickBenches) -> None:
    report = run_quick(quick_benches, "fault_recovery")
    pause = report["results"]["faults"]["pause"]
    pair = pause["pairs"]["us-east-1->eu-west-1"]
    assert pair["before_n"] > 0 and pair["before_error_median_ms"] is not None
    assert len(pair["after_error_ms"]) >= 5
    assert pair["during_crowded"] > 0  # the pause's canaries arrived together
