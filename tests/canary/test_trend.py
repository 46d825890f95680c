"""A pair's lag trend for the status page: the 15-minute window, bounded, with percentiles
that are measured values and slices that show a stall as a gap."""

from __future__ import annotations

import pytest

from monitor.canary.trend import LagTrend, percentile


def test_points_older_than_the_window_are_dropped_and_memory_is_bounded() -> None:
    trend = LagTrend(window_seconds=60, max_points=100)
    for i in range(1000):
        trend.add(float(i), 0.1)
    assert len(trend) <= 100
    assert [at for at, _ in trend.recent(999.0)] == [float(i) for i in range(939, 1000)]
    assert trend.span(999.0) == 60
    # Nothing new arrives (a stall): the window still moves on.
    assert trend.recent(1100.0) == []
    assert trend.percentiles(1100.0) is None


def test_percentiles_are_nearest_rank_over_the_window() -> None:
    trend = LagTrend(window_seconds=900)
    trend.add(0.0, 50.0)  # older than the window at t=1000: not in the percentiles
    for i in range(100):
        trend.add(200.0 + i, (i + 1) / 100)  # 0.01 .. 1.00
    assert trend.percentiles(1000.0) == (0.5, 0.99)
    assert trend.span(1000.0) == 800  # the data reaches back 800 s of the 900
    assert percentile([1.0], 0.99) == 1.0
    assert percentile([1.0, 2.0], 0.5) == 1.0


@pytest.mark.parametrize("count", [1, 9, 90])
def test_buckets_hold_the_worst_lag_of_each_slice_and_none_where_nothing_arrived(count: int) -> None:
    trend = LagTrend(window_seconds=90)
    now = 1000.0
    trend.add(now - 85, 0.2)
    trend.add(now - 84, 0.4)  # same 10 s slice as the one before when count is 9
    trend.add(now - 5, 0.3)
    buckets = trend.buckets(now, count)
    assert len(buckets) == count
    filled = [b for b in buckets if b is not None]
    assert max(lag for _, lag in filled) == 0.4
    if count == 9:
        assert buckets[0] == (85.0, 0.4) and buckets[-1] == (5.0, 0.3)
        assert buckets[1:-1] == [None] * 7  # the stretch with no arrivals is a gap
