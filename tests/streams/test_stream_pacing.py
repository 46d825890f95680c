"""The pure pacing rules: DescribeStream budget, backoff, adaptive polling."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.streams.pacing import AdaptiveInterval, Backoff, TokenBucket


def test_bucket_allows_a_burst_then_spaces_calls_at_the_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=3)
    waits = [bucket.reserve(0.0) for _ in range(6)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:] == pytest.approx([0.1, 0.2, 0.3])


def test_bucket_refills_with_time_but_not_beyond_burst() -> None:
    bucket = TokenBucket(rate=10.0, burst=2)
    bucket.reserve(0.0)
    bucket.reserve(0.0)
    assert bucket.reserve(0.05) == pytest.approx(0.05)
    assert bucket.reserve(100.0) == 0.0
    assert bucket.reserve(100.0) == 0.0
    assert bucket.reserve(100.0) > 0.0


@given(st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=200))
def test_bucket_never_lets_more_than_rate_times_span_plus_burst(gaps: list[float]) -> None:
    """Whatever the arrival pattern, calls made at (arrival + wait) respect the rate."""
    rate, burst = 10.0, 4
    bucket = TokenBucket(rate=rate, burst=burst)
    now, starts = 0.0, []
    for gap in gaps:
        now += gap
        starts.append(now + bucket.reserve(now))
    starts.sort()
    for i in range(len(starts)):
        for j in range(i, len(starts)):
            span = starts[j] - starts[i]
            assert j - i + 1 <= rate * span + burst + 1e-6


def test_backoff_grows_exponentially_up_to_the_cap_with_jitter() -> None:
    backoff = Backoff(base=0.1, cap=2.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(20)]
    assert all(0.05 <= d <= 2.0 for d in delays)
    assert max(delays[10:]) > 0.4  # the ceiling has grown
    assert len(set(delays)) > 15  # jittered, not lock-step
    backoff.reset()
    assert backoff.next_delay() <= 0.1


def test_backoff_ceilings() -> None:
    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    backoff = Backoff(base=0.5, cap=3.0, rng=Top())
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_adaptive_interval_floor_on_traffic_ceiling_when_idle() -> None:
    interval = AdaptiveInterval(floor=0.2, ceiling=2.0, growth=2.0)
    assert interval.after_poll(0, False) == pytest.approx(0.4)
    assert interval.after_poll(0, False) == pytest.approx(0.8)
    assert interval.after_poll(0, False) == pytest.approx(1.6)
    assert interval.after_poll(0, False) == pytest.approx(2.0)
    assert interval.after_poll(0, False) == pytest.approx(2.0)
    assert interval.after_poll(3, False) == pytest.approx(0.2)
    assert interval.after_poll(1000, True) == 0.0  # a full page: read on at once


@pytest.mark.parametrize(
    "make",
    [
        lambda: TokenBucket(rate=0, burst=1),
        lambda: Backoff(base=0, cap=1),
        lambda: Backoff(base=2, cap=1),
        lambda: AdaptiveInterval(floor=2, ceiling=1),
    ],
)
def test_invalid_settings_are_refused(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        make()
