"""A pair's recent lags, for people: percentiles over a window and a history to draw.

The read planner keeps its own short history (`polling.LagHistory`, 64 samples,
the canaries bracketed well); the status page wants something else: every
measured lag of the last `window_seconds` (15 minutes, the frame pt-heartbeat's
operators read), stamped with the wall time it was measured, so that p50/p99 mean
"over the last 15 minutes" and the sparkline shows the stall and its release.

Pure and bounded: the caller passes the times; older points and points beyond
`max_points` are dropped as new ones arrive, so memory is flat on an endless run
(at most `max_points` per pair, whatever the canary interval).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

__all__ = ["LagPoint", "LagTrend", "percentile"]

WINDOW_SECONDS = 900.0
MAX_POINTS = 1800  # 15 minutes at two canaries a second


@dataclass(frozen=True)
class LagPoint:
    at: float  # wall time (epoch seconds) the lag was measured
    lag: float
    error: float  # half-width of the bound the lag is known within


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank `q`-quantile (0 < q <= 1) of sorted values, which are not empty:
    a value that was measured, never an interpolation between two."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass
class LagTrend:
    window_seconds: float = WINDOW_SECONDS
    max_points: int = MAX_POINTS
    points: deque[LagPoint] = field(default_factory=deque)

    def add(self, at: float, lag: float, error: float) -> None:
        self.points.append(LagPoint(at, lag, error))
        while len(self.points) > self.max_points:
            self.points.popleft()
        self._expire(at)

    def _expire(self, now: float) -> None:
        while self.points and self.points[0].at < now - self.window_seconds:
            self.points.popleft()

    def recent(self, now: float) -> list[LagPoint]:
        """The points of the window that ends at `now`, oldest first."""
        self._expire(now)
        return list(self.points)

    def percentiles(self, now: float) -> tuple[float, float] | None:
        """(p50, p99) of the window's lags, or None when nothing was measured in it."""
        lags = sorted(p.lag for p in self.recent(now))
        if not lags:
            return None
        return percentile(lags, 0.5), percentile(lags, 0.99)

    def buckets(self, now: float, count: int) -> list[tuple[float, float] | None]:
        """The window cut into `count` equal slices, oldest first: each the (seconds before
        `now`, worst lag) of its slice, or None for a slice with no measurement (the
        canary saw nothing then: a stall draws as a gap, then as the late arrivals)."""
        width = self.window_seconds / count
        worst: list[float | None] = [None] * count
        for point in self.recent(now):
            index = min(count - 1, max(0, int((point.at - (now - self.window_seconds)) / width)))
            current = worst[index]
            worst[index] = point.lag if current is None else max(current, point.lag)
        return [
            None if lag is None else (self.window_seconds - (i + 0.5) * width, lag)
            for i, lag in enumerate(worst)
        ]
