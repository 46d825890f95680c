"""When to read a canary at the target: a pure plan from recent lag.

Reads are expensive (they cost money and they load the region) and the error
bound is half the gap between the last miss and the first hit, so reads are
spent densely around the expected arrival and sparsely elsewhere: one read
right after the write (catches a lag far shorter than expected), evenly spaced
reads across the window where recent lags fell, then doubling gaps until the
budget is spent.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field

__all__ = ["LagHistory", "plan_reads"]


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
        spread = max(min_spread, (high - low) * 0.75, centre * 0.05)
        return max(0.0, min(low, centre - spread)), max(high, centre + spread)


def plan_reads(
    window: tuple[float, float] | None,
    max_reads: int,
    min_interval: float,
    timeout: float,
) -> list[float]:
    """Read times (seconds after the write) for one canary, at most `max_reads` of them."""
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
    tail = max(2, max_reads // 4)
    dense = max(1, max_reads - 1 - tail)
    step = max(min_interval, (end - start) / dense)
    t = max(start, min_interval)
    for _ in range(dense):
        offsets.append(t)
        t += step
    gap = step * 2
    while len(offsets) < max_reads:
        t = offsets[-1] + gap
        if t > timeout:
            break
        offsets.append(t)
        gap *= 2
    return offsets
