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

import bisect
import math
from array import array
from dataclasses import dataclass, field

__all__ = ["LagTrend", "percentile"]

WINDOW_SECONDS = 900.0
MAX_POINTS = 1800  # 15 minutes at two canaries a second; 16 bytes each


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank `q`-quantile (0 < q <= 1) of sorted values, which are not empty:
    a value that was measured, never an interpolation between two."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass
class LagTrend:
    """(wall time, lag) of each measurement in the window, oldest first, in two flat arrays
    (16 bytes a point: 29 KB a pair at most, whatever the number of pairs)."""

    window_seconds: float = WINDOW_SECONDS
    max_points: int = MAX_POINTS
    _at: array[float] = field(default_factory=lambda: array("d"))
    _lag: array[float] = field(default_factory=lambda: array("d"))

    def __len__(self) -> int:
        return len(self._at)

    def add(self, at: float, lag: float) -> None:
        self._at.append(at)
        self._lag.append(lag)
        self._drop(len(self._at) - self.max_points)
        self._expire(at)

    def _drop(self, count: int) -> None:
        if count > 0:
            del self._at[:count]
            del self._lag[:count]

    def _expire(self, now: float) -> None:
        cutoff = now - self.window_seconds
        old = 0
        while old < len(self._at) and self._at[old] < cutoff:
            old += 1
        self._drop(old)

    def recent(self, now: float) -> list[tuple[float, float]]:
        """(wall time, lag) of the window that ends at `now`, oldest first."""
        self._expire(now)
        return list(zip(self._at, self._lag, strict=True))

    def span(self, now: float) -> float:
        """How far back the window's data reaches (less than the window early on, or when
        `max_points` cut it shorter): what the percentiles are really over."""
        self._expire(now)
        return min(self.window_seconds, now - self._at[0]) if self._at else 0.0

    def percentiles(self, now: float) -> tuple[float, float] | None:
        """(p50, p99) of the window's lags, or None when nothing was measured in it."""
        self._expire(now)
        lags = sorted(self._lag)
        if not lags:
            return None
        return percentile(lags, 0.5), percentile(lags, 0.99)

    def buckets(self, now: float, count: int) -> list[tuple[float, float] | None]:
        """The window cut into `count` equal slices, oldest first: each the (seconds before
        `now`, worst lag) of its slice, or None for a slice with no measurement (the
        canary saw nothing then: a stall draws as a gap, then as the late arrivals).

        The points are in time order (a wall clock stepped back by NTP only misplaces a
        point or two), so each slice is a bisected run of the arrays: this runs on the
        event loop at every status request, in well under a millisecond."""
        self._expire(now)
        width = self.window_seconds / count
        start = now - self.window_seconds
        slices: list[tuple[float, float] | None] = []
        low = bisect.bisect_left(self._at, start)
        for i in range(count):
            high = bisect.bisect_left(self._at, start + (i + 1) * width) if i < count - 1 else len(self._at)
            lags = self._lag[low:high]
            slices.append((self.window_seconds - (i + 0.5) * width, max(lags)) if lags else None)
            low = max(low, high)
        return slices
