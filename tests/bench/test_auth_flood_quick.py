"""bench/auth_flood.py still runs: `--quick` finishes and prints its JSON last.

Checks the shape and that each phase happened (the daemon measured, the flood was refused,
the half-open connections were held to the cap), never the figures: a quick run on a CI
machine is too short and too noisy for the targets to mean anything.
"""

from __future__ import annotations

import json

import pytest

from tests.bench.quick import QuickBenches


@pytest.mark.timeout(400)
@pytest.mark.quick_bench("auth_flood")
def test_auth_flood_quick(quick_benches: QuickBenches) -> None:
    done = quick_benches.result("auth_flood")
    assert done.returncode == 0, done.stderr[-4000:]
    output = done.stdout.strip()
    report = json.loads(output[output.index("\n{") + 1 :] if not output.startswith("{") else output)
    assert set(report) == {"bench", "params", "results", "targets", "met"}
    assert report["bench"] == "auth_flood" and report["params"]["quick"] is True
    assert set(report["met"]) == {"error_bound_p50", "error_bound_p99", "authorized_scrape_p99",
                                  "half_open_rss"}
    assert all(isinstance(v, bool) for v in report["met"].values())
    results = report["results"]
    for phase in ("quiet", "flood"):
        assert results[phase]["measurements"] > 0, phase
        assert results[phase]["scrape_failures"] == 0, phase
    refused = results["flood"]["refused_by_daemon"]
    assert refused.get("auth_failures:rate_limited", 0) > 0
    assert refused.get("auth_failures:invalid", 0) <= 10
    assert "200" not in results["flood"]["attacker_requests"]
    client_hello = results["half_open_client_hello"]
    assert client_hello["refused"].get("connections_refused:max_connections", 0) > 0
    assert results["daemon_exit_code"] == 0
