"""The read planner spends its budget around the expected arrival."""

from __future__ import annotations

import itertools

import pytest

from monitor.canary.polling import LagHistory, plan_reads


def test_without_history_reads_double_their_gaps_within_budget_and_timeout():
    plan = plan_reads(None, max_reads=20, min_interval=0.02, timeout=5.0)
    assert plan[0] == 0.0
    assert len(plan) <= 20
    assert all(b > a for a, b in itertools.pairwise(plan))
    assert plan[-1] <= 5.0


@pytest.mark.parametrize("lag", [0.05, 0.5, 2.0, 5.0])
def test_with_history_most_reads_fall_inside_the_expected_window(lag):
    history = LagHistory()
    for i in range(20):
        history.add(lag + (i % 5) * 0.01)
    window = history.window(min_spread=0.06)
    assert window is not None
    start, end = window
    assert start <= lag <= end
    plan = plan_reads(window, max_reads=20, min_interval=0.02, timeout=120)
    assert len(plan) <= 20
    # Every instant of the window has a read within one dense step of it.
    step = max(0.02, (end - start) / 10)
    for i in range(101):
        instant = start + (end - start) * i / 100
        assert min(abs(t - instant) for t in plan) <= step + 1e-9


def test_history_keeps_only_recent_samples():
    history = LagHistory(size=4)
    for value in [9.0, 9.0, 9.0, 9.0, 1.0, 1.0, 1.0, 1.0]:
        history.add(value)
    window = history.window(0.01)
    assert window is not None and window[1] < 2.0


def test_a_budget_below_two_reads_is_refused():
    with pytest.raises(ValueError):
        plan_reads(None, max_reads=1, min_interval=0.02, timeout=1)


def test_reads_may_be_planned_before_the_writes_answer_and_come_out_in_order():
    # 220 ms round trips, 50 ms lag: the arrival comes before the write is acknowledged.
    plan = plan_reads((0.03, 0.07), max_reads=20, min_interval=0.02, timeout=10, lead=0.22, earliest=-0.2)
    assert plan == sorted(plan)
    assert plan[0] < -0.1
    assert sum(1 for t in plan if t < 0) >= 5
