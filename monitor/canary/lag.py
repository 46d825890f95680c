"""Lag math for canaries: pure, no I/O, time passed in.

One process writes the canary and reads it back from the other region, so lag
is measured on that process's monotonic clock and no clock skew enters. What
is uncertain is *when* inside each round trip the write committed and the read
looked: a write commits somewhere between sending it and its answer, a read
sees the replica somewhere between sending it and its answer. The replica
applied the canary after the last read that missed it and no later than the
first read that saw it. Taking each round trip's midpoint (as NTP does)
cancels symmetric network delay; the error bound is half the width of the
interval the arrival is known to lie in.

Midpoints assume each request spent as long going out as coming back. One
request stalled on one side (a busy server, a paused process, a queue on the
path) breaks that by up to half its extra time, and the first hit is then
often exactly such a read. So once a path's recent round trips are known, the
floor of them is used instead, assuming no request travels one way faster than
half the shortest recent round trip (true when the fastest path is symmetric and
the server's own time is small against it; a 5 ms server time inside a 7 ms round
trip could put the commit a few ms outside the bound). That places a write's commit within
[sent + floor, received - floor] and a read's look likewise. The arrival then
lies after the latest look any miss may have had and no later than the
earliest look any hit must have had, taken over *all* reads, so one slow read
is overtaken by its pipelined neighbours instead of defining the estimate, and
the bound covers the commit's own uncertainty as well.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "Interval",
    "LagEstimate",
    "RoundTripFloor",
    "earliest_look",
    "estimate_lag",
    "estimate_lag_from_timestamp",
    "estimate_lag_uncorrected",
    "latest_look",
    "pick_bracket",
]


@dataclass(frozen=True, slots=True)
class Interval:
    """A request's send and receive times on the monotonic clock.

    Slotted: a canary waiting across a stall keeps up to 2 x BRACKET_READS of them.
    """

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


@dataclass
class RoundTripFloor:
    """The shortest recent round trip on one path, halved: the least a one-way trip takes.

    A window rather than an all-time minimum, so a route that gets slower moves the floor
    up within `size` requests instead of leaving every later bound too wide.
    """

    size: int = 64
    min_samples: int = 8
    samples: deque[float] = field(default_factory=deque)

    def add(self, round_trip: float) -> None:
        self.samples.append(round_trip)
        while len(self.samples) > self.size:
            self.samples.popleft()

    def one_way(self) -> float | None:
        """None until enough round trips are known (then midpoints are used)."""
        return min(self.samples) / 2.0 if len(self.samples) >= self.min_samples else None


def earliest_look(request: Interval, floor: float | None) -> float:
    """The earliest the request can have been served (with no floor: its midpoint)."""
    return request.midpoint if floor is None else request.sent + min(floor, request.round_trip / 2)


def latest_look(request: Interval, floor: float | None) -> float:
    """The latest the request can have been served (with no floor: its midpoint)."""
    return request.midpoint if floor is None else request.received - min(floor, request.round_trip / 2)


def pick_bracket(
    misses: Sequence[Interval], hits: Sequence[Interval], read_floor: float | None = None
) -> tuple[Interval | None, Interval]:
    """The hit whose look is bounded earliest and the latest miss consistent with it.

    A miss that may only have looked after that bound contradicts it (its answer was
    old data from a slow path, or the floor is off) and is passed over.
    """
    hit = min(hits, key=lambda h: latest_look(h, read_floor))
    before = latest_look(hit, read_floor)
    miss = max(
        (m for m in misses if earliest_look(m, read_floor) <= before),
        key=lambda m: earliest_look(m, read_floor),
        default=None,
    )
    return miss, hit


def estimate_lag(
    write: Interval,
    last_miss: Interval | None,
    first_hit: Interval,
    write_floor: float | None = None,
    read_floor: float | None = None,
) -> LagEstimate:
    """Lag of one canary from its write and the reads around its arrival.

    Floors (one-way minimums, see the module docstring) of None place each request
    at its midpoint. Without a miss, the arrival lies between the commit and the
    first hit.
    """
    commit_low, commit_high = earliest_look(write, write_floor), latest_look(write, write_floor)
    before = latest_look(first_hit, read_floor)
    after = earliest_look(last_miss, read_floor) if last_miss is not None else commit_low
    after = min(max(after, commit_low), before)
    low, high = after - commit_high, before - commit_low
    lag = (after + before) / 2.0 - write.midpoint
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
