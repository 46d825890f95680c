"""bench/conflicts.py still runs: `--quick` finishes in time and prints its JSON object last.

`--quick` runs one small run of the default (ordinary) grid: tables with full, partial and
no attributes. Besides the shape, one figure is checked because it must hold on any
machine: with the version and writer attribute on every write (``full``, no deletes)
every counted verdict names a real lost write with the right regions (precision 1.0).
Latencies and the figures of the other tables are not checked: a quick run on a busy CI
box is too noisy for them.
"""

from __future__ import annotations

import json

import pytest

from tests.bench.quick import QuickBenches

MODES = {"full", "partial", "none"}


@pytest.mark.timeout(400)
@pytest.mark.quick_bench("conflicts")
def test_conflicts_bench_quick(quick_benches: QuickBenches) -> None:
    done = quick_benches.result("conflicts")
    assert done.returncode == 0, done.stderr[-4000:]
    output = done.stdout.strip()
    # The JSON object is the last thing printed (it is indented over several lines).
    report = json.loads(output if output.startswith("{") else output[output.rindex("\n{") + 1:])
    assert set(report) == {"bench", "params", "results", "targets", "met"}
    assert report["bench"] == "conflicts"
    assert report["params"]["quick"] is True
    assert report["met"] and all(isinstance(v, bool) for v in report["met"].values())
    assert set(report["met"]) <= set(report["targets"])

    cells = report["results"]["cells"]
    assert 1 <= len(cells) <= 2
    for name, cell in cells.items():
        assert set(cell["modes"]) == MODES, name
        for mode, figures in cell["modes"].items():
            for field in ("precision", "precision_counted", "recall", "tp", "fp", "fn",
                          "lost_writes", "ambiguous", "wrong_counted", "latency_ms", "known_by"):
                assert field in figures, (name, mode, field)
            assert set(figures["latency_ms"]) >= {"n", "p50", "p99"}
        full = cell["modes"]["full"]
        assert full["lost_writes"] > 0, f"{name}: the workload made no conflict"
        assert full["precision"] == 1.0 and full["wrong_counted"] == 0, (name, full)
        assert cell["counter_equals_certain_verdicts"], name
    assert set(report["results"]["pooled"]) == MODES
    assert len(report["results"]["table"]) == 3 * len(cells)
    assert report["results"]["load_average"]["start"]
