"""The canary's link floors: cautious, quick to drop, gone when the canary goes quiet."""

from __future__ import annotations

import pytest

from monitor.conflicts import LinkFloorTracker

US, EU = "us-east-1", "eu-west-1"


def test_floor_is_a_share_of_the_smallest_recent_lower_bound() -> None:
    t = LinkFloorTracker(factor=0.5, min_samples=3)
    for i, low in enumerate((0.8, 0.6, 0.9)):
        t.add(US, EU, low, at=float(i))
    assert t.floors(3.0) == {(US, EU): pytest.approx(0.3)}
    assert (EU, US) not in t.floors(3.0)  # directed: the other way was never measured


def test_one_faster_canary_lowers_the_floor_at_once() -> None:
    t = LinkFloorTracker(factor=0.5, min_samples=3)
    for i in range(10):
        t.add(US, EU, 1.0, at=float(i))
    t.add(US, EU, 0.1, at=10.0)  # the link suddenly got faster
    assert t.floors(10.0)[(US, EU)] == pytest.approx(0.05)


def test_no_floor_before_enough_canaries_or_after_the_canary_goes_quiet() -> None:
    t = LinkFloorTracker(factor=0.5, min_samples=3, max_age=60.0)
    t.add(US, EU, 1.0, at=0.0)
    t.add(US, EU, 1.0, at=1.0)
    assert t.floors(1.0) == {}
    t.add(US, EU, 1.0, at=2.0)
    assert (US, EU) in t.floors(2.0)
    assert t.floors(62.5) == {}  # nothing says the link is still that slow


def test_factor_zero_switches_floors_off_and_negative_bounds_count_as_zero() -> None:
    off = LinkFloorTracker(factor=0.0, min_samples=1)
    off.add(US, EU, 1.0, at=0.0)
    assert off.floors(0.0) == {}
    on = LinkFloorTracker(factor=0.5, min_samples=1)
    on.add(US, EU, -0.2, at=0.0)
    assert on.floors(0.0) == {(US, EU): 0.0}
    with pytest.raises(ValueError):
        LinkFloorTracker(factor=1.0)
