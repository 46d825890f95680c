"""When to read a canary at the target: a pure plan from recent lag.

Reads are expensive (they cost money and they load the region) and the error
bound is half the gap between the last miss and the first hit, so reads are
spent densely around the expected arrival and sparsely elsewhere: one read
right after the write (catches a lag far shorter than expected), evenly spaced
reads across the window where recent lags fell, then gently growing gaps until
the budget is spent.

Offsets count from the write's answer, while lags count from the commit (the
write's midpoint) and a read looks at the replica half its round trip after it
is sent. A read planned at offset `o` therefore looks at lag `o + lead`, with
`lead` = half the write's round trip + half the read's. When the caller knows
`lead` it passes it and the window moves by exactly that much; when it does not,
the dense reads also cover `ROUND_TRIP_ALLOWANCE` below the window, so a pair
measured across an ocean still gets its arrival bracketed by dense reads
(bench/lag_accuracy.py measures both regimes).
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field

__all__ = ["ROUND_TRIP_ALLOWANCE", "LagHistory", "plan_reads"]

# Unknown lead (see above): client round trips up to ~250 ms (a monitor in us-east-1
# reading ap-southeast-1) put the arrival up to this much earlier in offset terms.
ROUND_TRIP_ALLOWANCE = 0.25
RELATIVE_SPREAD = 0.02
TAIL_GROWTH = 1.5


@dataclass
class LagHistory:
    """Recent lags of one pair; the planner's idea of where the next arrival falls."""

    size: int = 32
    samples: deque[float] = field(default_factory=deque)

    def add(self, lag: float) -> None:
        self.samples.append(lag)
        while len(self.samples) > self.size:
            self.samples.popleft()

    def window(self, min_spread: float) -> tuple[float, float] | None:
        """(earliest, latest) expected arrival after the write, or None before any data."""
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        if len(ordered) >= 5:
            quantiles = statistics.quantiles(ordered, n=10, method="inclusive")
            low, high = quantiles[0], quantiles[-1]
        else:
            low, high = ordered[0], ordered[-1]
        centre = statistics.median(ordered)
        # The floor in proportion to the lag (2%) keeps a steady link from narrowing the
        # window to nothing; 5% spent a third of the reads on empty time at 5 s.
        spread = max(min_spread, (high - low) * 0.75, centre * RELATIVE_SPREAD)
        return max(0.0, min(low, centre - spread)), max(high, centre + spread)


def plan_reads(
    window: tuple[float, float] | None,
    max_reads: int,
    min_interval: float,
    timeout: float,
    lead: float | None = None,
    earliest: float | None = None,
) -> list[float]:
    """Read times (seconds after the write's answer) for one canary, at most `max_reads`.

    `window` is where recent lags fell (from the commit); `lead`, when known, is how
    much later than its offset a read looks at the replica (see the module docstring).
    """
    if max_reads < 2:
        raise ValueError("max_reads must be at least 2")
    offsets = [0.0]
    if window is None:
        # Nothing known yet: doubling gaps find the order of magnitude quickly.
        gap = min_interval * 2
        while len(offsets) < max_reads and offsets[-1] < timeout:
            offsets.append(offsets[-1] + gap)
            gap *= 2
        return [o for o in offsets if o <= timeout]
    start, end = window
    if lead is None:
        start -= ROUND_TRIP_ALLOWANCE
    else:
        start, end = start - lead, end - lead
    # Reads may start before the write's answer when the caller allows it (`earliest` < 0):
    # across a long round trip a short lag arrives before the write is even acknowledged.
    start = max(start, min_interval if earliest is None else earliest)
    end = max(end, start)
    # A few tail reads catch the outliers past the window; the rest bracket the arrival.
    tail = max(2, max_reads // 6)
    dense = max(1, max_reads - 1 - tail)
    step = max(min_interval, (end - start) / max(1, dense - 1))  # first read at start, last at end
    t = start
    for _ in range(dense):
        if t > timeout:
            break
        offsets.append(t)
        t += step
    # Growing gently (x1.5, not doubling) keeps a late outlier's bound within a few steps.
    gap = step * TAIL_GROWTH
    while len(offsets) < max_reads:
        t = offsets[-1] + gap
        if t > timeout:
            break
        offsets.append(t)
        gap *= TAIL_GROWTH
    # Reads planned before the write's answer (earliest < 0) come before the read at 0.
    return sorted(offsets)
