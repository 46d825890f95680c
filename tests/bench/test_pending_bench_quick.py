"""bench/pending.py still runs: `--quick` finishes in time and prints its JSON object last.

Besides the shape, the figures that hold on any machine are checked: with the writer
attribute every pending write drains once the links resume, and the count stays inside
what the readers could have read on nearly every sample. Errors against the truth of
this instant depend on the machine's load (the readers' polling) and are not checked.
"""

from __future__ import annotations

import json

import pytest

from tests.bench.quick import QuickBenches


@pytest.mark.timeout(400)
@pytest.mark.quick_bench("pending")
def test_pending_bench_quick(quick_benches: QuickBenches) -> None:
    done = quick_benches.result("pending")
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    assert set(report) == {"bench", "params", "results", "targets", "met"}
    assert report["bench"] == "pending" and report["params"]["quick"] is True
    run = report["results"]["attribute"]
    assert run["written"] > 100 and run["errors"] == 0
    assert run["left_pending_after_drain"] == 0
    assert run["share_inside_as_read_bracket"] >= 0.9
    memory = report["results"]["memory"]
    # A listed write keeps the stream record's own key object, no copy of it: about what an
    # unlisted one holds (1,960 bytes against 1,592 when the list kept DynamoDB-JSON copies).
    assert 0 < memory["bytes_per_unlisted_write"] <= 1.05 * memory["bytes_per_listed_write"]
    assert memory["bytes_per_listed_write"] < 1800
