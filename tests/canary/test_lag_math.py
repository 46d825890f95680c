"""The pure lag math: midpoints, bounds, and the naive figure it improves on."""

from __future__ import annotations

import pytest

from monitor.canary.lag import (
    Interval,
    RoundTripFloor,
    estimate_lag,
    estimate_lag_from_timestamp,
    estimate_lag_uncorrected,
    pick_bracket,
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


def test_a_read_stalled_before_the_server_does_not_pull_the_arrival_early():
    # 220 ms round trips (one way >= 110 ms); the arrival is at 10.60.
    write = Interval(9.89, 10.11)  # commits at 10.00
    miss = Interval(10.37, 10.59)  # looks at 10.48
    stalled = Interval(10.39, 10.73)  # waited 120 ms before the server: looked at 10.62
    prompt = Interval(10.51, 10.73)  # sent later, answered sooner: looked at 10.62
    # By midpoints the stalled read "looked" at 10.56, before the arrival: 40 ms early.
    miss_m, hit_m = pick_bracket([miss], [stalled, prompt])
    by_midpoints = estimate_lag(write, miss_m, hit_m)
    assert hit_m is stalled and abs(by_midpoints.lag - 0.6) > 0.05
    # With the one-way floor, the stalled read can only bound the look by 10.62, and the
    # prompt read bounds it by 10.62 too: the estimate stays on the truth.
    miss_f, hit_f = pick_bracket([miss], [stalled, prompt], read_floor=0.11)
    floored = estimate_lag(write, miss_f, hit_f, write_floor=0.11, read_floor=0.11)
    assert abs(floored.lag - 0.6) < 0.1
    assert floored.low <= 0.6 <= floored.high


def test_floors_bound_the_commit_and_the_looks_so_the_truth_is_inside():
    # Round trips 220-242 ms (10% jitter), floor from the fastest: 110 ms one way. Each
    # request spends its jitter on either side; the truth (lag 0.5) must lie in the bound.
    write = Interval(0.0, 0.242)  # commit anywhere in [0.110, 0.132]
    miss = Interval(0.50, 0.742)  # looked in [0.610, 0.632]
    hit = Interval(0.52, 0.742)  # looked in [0.630, 0.632]
    estimate = estimate_lag(write, miss, hit, write_floor=0.110, read_floor=0.110)
    for commit in (0.110, 0.121, 0.132):
        for arrival in (0.610, 0.62, 0.630):
            assert estimate.low - 1e-9 <= arrival - commit <= estimate.high + 1e-9
    assert estimate.error < 0.025


def test_a_miss_that_may_only_have_looked_after_the_hit_is_passed_over():
    early_hit = Interval(1.00, 1.22)
    late_miss = Interval(1.20, 1.42)  # earliest look 1.31 > the hit's latest look 1.11
    older_miss = Interval(0.80, 1.02)
    miss, hit = pick_bracket([older_miss, late_miss], [early_hit], read_floor=0.11)
    assert hit is early_hit and miss is older_miss


def test_the_round_trip_floor_is_half_the_fastest_recent_round_trip():
    floor = RoundTripFloor(size=10, min_samples=3)
    floor.add(0.25)
    floor.add(0.23)
    assert floor.one_way() is None  # too few to trust
    floor.add(0.24)
    assert floor.one_way() == pytest.approx(0.115)
    for _ in range(10):
        floor.add(0.30)  # the route got slower: the old minimum ages out
    assert floor.one_way() == pytest.approx(0.15)
