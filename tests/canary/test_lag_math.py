"""The pure lag math: midpoints, bounds, and the naive figure it improves on."""

from __future__ import annotations

import pytest

from monitor.canary.lag import (
    Interval,
    estimate_lag,
    estimate_lag_from_timestamp,
    estimate_lag_uncorrected,
)


@pytest.mark.parametrize(
    ("write", "miss", "hit", "lag", "error"),
    [
        # Zero round trips: arrival between the miss at 1.0 and the hit at 1.2.
        (Interval(0.0, 0.0), Interval(1.0, 1.0), Interval(1.2, 1.2), 1.1, 0.1),
        # 200 ms round trips: each request is placed at its midpoint.
        (Interval(0.0, 0.2), Interval(1.0, 1.2), Interval(1.1, 1.3), 1.05, 0.05),
        # No miss: arrival between the commit and the first hit.
        (Interval(0.0, 0.2), None, Interval(0.5, 0.7), 0.25, 0.25),
        # A miss answered before the write committed says nothing more than the commit.
        (Interval(0.0, 0.2), Interval(0.0, 0.1), Interval(0.3, 0.5), 0.15, 0.15),
    ],
)
def test_lag_is_the_middle_of_the_interval_between_last_miss_and_first_hit(write, miss, hit, lag, error):
    estimate = estimate_lag(write, miss, hit)
    assert estimate.lag == pytest.approx(lag)
    assert estimate.error == pytest.approx(error)
    assert estimate.low <= estimate.lag <= estimate.high


def test_round_trip_correction_removes_the_network_from_the_lag():
    # True lag 0.5 s; 220 ms round trips on both sides, commit and reads mid-way.
    write = Interval(10.0, 10.22)  # commits at 10.11
    miss = Interval(10.49, 10.71)  # looks at 10.60 (before arrival at 10.61)
    hit = Interval(10.51, 10.73)  # looks at 10.62
    corrected = estimate_lag(write, miss, hit)
    naive = estimate_lag_uncorrected(write, miss, hit)
    assert abs(corrected.lag - 0.5) < 0.02
    assert abs(naive.lag - 0.5) > 0.1


def test_per_region_mode_adds_the_clock_error_to_the_bound():
    # Offset maps the monotonic clock onto the wall clock.
    estimate = estimate_lag_from_timestamp(
        written_at=1000.0,
        last_miss=Interval(0.40, 0.40),
        first_hit=Interval(0.42, 0.42),
        offset=1000.0,
        clock_error=0.005,
    )
    assert estimate.lag == pytest.approx(0.41)
    assert estimate.error == pytest.approx(0.015)
