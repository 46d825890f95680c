"""Lag math for canaries: pure, no I/O, time passed in.

One process writes the canary and reads it back from the other region, so lag
is measured on that process's monotonic clock and no clock skew enters. What
is uncertain is *when* inside each round trip the write committed and the read
looked: a write commits somewhere between sending it and its answer, a read
sees the replica somewhere between sending it and its answer. The replica
applied the canary after the last read that missed it and no later than the
first read that saw it. Taking each round trip's midpoint (as NTP does)
cancels symmetric network delay; the error bound is half the width of the
interval the arrival is known to lie in, plus half the write's round trip
when the paths may be asymmetric.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Interval",
    "LagEstimate",
    "estimate_lag",
    "estimate_lag_from_timestamp",
    "estimate_lag_uncorrected",
]


@dataclass(frozen=True)
class Interval:
    """A request's send and receive times on the monotonic clock."""

    sent: float
    received: float

    @property
    def midpoint(self) -> float:
        return (self.sent + self.received) / 2.0

    @property
    def round_trip(self) -> float:
        return self.received - self.sent


@dataclass(frozen=True)
class LagEstimate:
    """Propagation delay and the half-width of its error bound, in seconds."""

    lag: float
    error: float
    low: float
    high: float


def estimate_lag(write: Interval, last_miss: Interval | None, first_hit: Interval) -> LagEstimate:
    """Lag of one canary from its write and the reads around its arrival.

    With round-trip correction the commit is placed at the write's midpoint and
    each read at its own midpoint; the arrival lies between the last miss and
    the first hit. Without a miss, the arrival lies between the commit and the
    first hit.
    """
    commit = write.midpoint
    after = last_miss.midpoint if last_miss is not None else commit
    before = first_hit.midpoint
    after = min(max(after, commit), before)
    low = after - commit
    high = before - commit
    lag = (low + high) / 2.0
    return LagEstimate(
        lag=max(lag, 0.0), error=(high - low) / 2.0, low=max(low, 0.0), high=max(high, 0.0)
    )


def estimate_lag_uncorrected(
    write: Interval, last_miss: Interval | None, first_hit: Interval
) -> LagEstimate:
    """The naive figure (answer of the hit minus send of the write), kept for the benchmark."""
    high = first_hit.received - write.sent
    low = (last_miss.received - write.sent) if last_miss is not None else 0.0
    low = min(max(low, 0.0), high)
    return LagEstimate(lag=(low + high) / 2.0, error=(high - low) / 2.0, low=low, high=high)


def estimate_lag_from_timestamp(
    written_at: float,
    last_miss: Interval | None,
    first_hit: Interval,
    offset: float,
    clock_error: float,
) -> LagEstimate:
    """Per-region mode: the writer's wall timestamp against this daemon's clock.

    `offset` converts this daemon's monotonic clock to its wall clock (wall -
    monotonic); `clock_error` is the assumed bound on the two hosts' clock
    difference, added to the bound.
    """
    before = first_hit.midpoint + offset
    after = (last_miss.midpoint + offset) if last_miss is not None else written_at
    after = min(max(after, written_at), before)
    low, high = after - written_at, before - written_at
    return LagEstimate(
        lag=max((low + high) / 2.0, 0.0),
        error=(high - low) / 2.0 + clock_error,
        low=max(low - clock_error, 0.0),
        high=high + clock_error,
    )
