"""When to read a canary at the target: a pure plan from recent lag.

Reads are expensive (they cost money and they load the region) and the error
bound is half the gap between the last miss and the first hit, so reads are
spent where arrivals fall: one read right after the write (catches a lag far
shorter than expected), evenly spaced reads across the *core* where most recent
lags fell (10th to 90th percentile), two reads in the lower shoulder, and
geometrically growing gaps across a long upper *reach*, because replication
delays are skewed: a lognormal link sends one canary in a hundred three times as
far past the median as the 90th percentile lies. With 20 reads that keeps 99% of
arrivals within 50 ms of the truth on the sandbox's lognormal links (simulated,
and measured in bench/sandbox_accuracy.py); an even spread or a short tail left
the slowest percent with brackets of half a second.

Each measurement enters the history as the interval it is known to lie in, not a
point, so one badly bracketed canary (say its arrival fell before the plan began)
widens the next plan's reach over the whole interval and the pair converges in one
canary rather than chasing its own wrong midpoints.

Where the core lies is judged from the canaries measured about as precisely as the
latest ones. During a fault (throttled or slow reads) brackets widen and their midpoints
scatter over seconds; counted with the rest, they kept the core that wide, and every bound
1.5-2.5 times its pre-fault level, for the 30 canaries or so it took to push them out of
the history (the soak's throttling and latency faults). Left out once a quarter of the
history is bracketed more than twice as widely as the latest canaries, a 70 s throttling
fault is forgotten in 1 canary (`bench/fault_recovery.py --faults throttle latency
--fault-seconds 70`: before, 2 of 4 pairs were not back within 25). A link whose every
bracket is wide still plans from all of them, so a lasting fault does not freeze the plan;
a steady link's widely bracketed tail is about a tenth of its history and leaves the
plan as it was. Canaries whose write was answered far slower than its path allows (the
SDK retrying a throttled write) never enter the history at all (runner._slow_write):
fewer than a quarter of it, they were not taken for a fault and kept the core wide.

Offsets count from the write's answer, while lags count from the commit (the
write's midpoint) and a read looks at the replica half its round trip after it
is sent. A read planned at offset `o` therefore looks at lag `o + lead`, with
`lead` = half the write's round trip + half the read's. When the caller knows
`lead` it passes it and the plan moves by exactly that much; when it does not
(the first canary, before any round trip is known), the core and the reach
start `ROUND_TRIP_ALLOWANCE` earlier, so a pair measured
across an ocean still gets its arrival bracketed (bench/lag_accuracy.py measures
both regimes).
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field

__all__ = ["ROUND_TRIP_ALLOWANCE", "ArrivalWindow", "LagHistory", "plan_reads"]

# Unknown lead (see above): client round trips up to ~250 ms (a monitor in us-east-1
# reading ap-southeast-1) put the arrival up to this much earlier in offset terms.
ROUND_TRIP_ALLOWANCE = 0.25
RELATIVE_SPREAD = 0.02
# How far past the core the plan reaches, in multiples of the core's half-width on that side.
REACH_BELOW = 1.0
REACH_ABOVE = 2.5
SHOULDER_READS = 2  # in the lower shoulder, between the reach's start and the core
UPPER_READS = 7  # across the upper reach, gaps growing by UPPER_GROWTH
UPPER_GROWTH = 1.4
BLIND_GROWTH = 1.25  # before any lag is known
GUARD_FRACTION = 0.8
# When more than FAULT_SHARE of the history is bracketed more than WIDE_FACTOR times as
# widely as the median of the last RECENT_WIDTHS, those samples are left out of the core
# (see the module docstring; a steady link's widely bracketed tail is about a tenth).
RECENT_WIDTHS = 4
WIDE_FACTOR = 2.0
FAULT_SHARE = 0.25


@dataclass(frozen=True)
class ArrivalWindow:
    """Where the next arrival is expected, as lag after the commit (seconds).

    Most arrivals fall in [core_low, core_high]; nearly all in [lowest, highest].
    """

    lowest: float
    core_low: float
    core_high: float
    highest: float


@dataclass
class LagHistory:
    """Recent lags of one pair, each as the (low, high) interval it is known to lie in."""

    size: int = 64
    samples: deque[tuple[float, float]] = field(default_factory=deque)

    def add(self, low: float, high: float) -> None:
        self.samples.append((low, high))
        while len(self.samples) > self.size:
            self.samples.popleft()

    def lags(self) -> list[float]:
        """The midpoints, sorted (the status page's percentiles)."""
        return sorted((low + high) / 2.0 for low, high in self.samples)

    def precise(self) -> list[tuple[float, float]]:
        """The samples to place the core from: after a fault, those bracketed about as
        narrowly as the latest ones; otherwise all (a steady link's tail is bracketed
        widely by the upper reach, and leaving it out would shrink the core under it)."""
        widths = [high - low for low, high in self.samples]
        limit = WIDE_FACTOR * statistics.median(widths[-RECENT_WIDTHS:])
        kept = [s for s, width in zip(self.samples, widths, strict=True) if width <= limit]
        fault = len(self.samples) - len(kept) > len(self.samples) * FAULT_SHARE
        return kept if fault and len(kept) >= 5 else list(self.samples)

    def window(self, min_spread: float) -> ArrivalWindow | None:
        """The planner's idea of the next arrival, or None before any data."""
        if not self.samples:
            return None
        precise = self.precise()
        ordered = sorted((low + high) / 2.0 for low, high in precise)
        if len(ordered) >= 5:
            quantiles = statistics.quantiles(ordered, n=10, method="inclusive")
            low, high = quantiles[0], quantiles[-1]
        else:
            # A few canaries, the first ones bracketed blind and widely: the core spans all
            # of their intervals, not just their midpoints.
            low, high = min(lo for lo, _ in precise), max(hi for _, hi in precise)
        centre = statistics.median(ordered)
        # The floor in proportion to the lag (2%) keeps a steady link from narrowing the
        # window to nothing.
        spread = max(min_spread, centre * RELATIVE_SPREAD)
        core_low, core_high = max(0.0, min(low, centre - spread)), max(high, centre + spread)
        # The latest canary's whole interval stays in reach: after a badly bracketed one, the
        # next plan covers everything it may have been. Older ones do not: one stray interval
        # would thin out the shoulder for the whole history.
        latest_low, latest_high = self.samples[-1]
        lowest = min(latest_low, core_low - max(REACH_BELOW * (centre - core_low), spread))
        highest = max(latest_high, core_high + max(REACH_ABOVE * (core_high - centre), spread))
        return ArrivalWindow(max(0.0, lowest), core_low, core_high, highest)


def plan_reads(
    window: ArrivalWindow | None,
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
        # Nothing known yet: gaps growing by a quarter reach about 11 s with 20 reads and
        # bracket the first arrival within a third of its lag (doubling: the whole lag).
        gap = min_interval * 2
        while len(offsets) < max_reads and offsets[-1] < timeout:
            offsets.append(offsets[-1] + gap)
            gap *= BLIND_GROWTH
        return [o for o in offsets if o <= timeout]
    # Unknown lead: the arrival may be seen anywhere up to the allowance earlier.
    low_shift = ROUND_TRIP_ALLOWANCE if lead is None else lead
    high_shift = 0.0 if lead is None else lead
    # Reads may start before the write's answer when the caller allows it (`earliest` < 0):
    # across a long round trip a short lag arrives before the write is even acknowledged.
    floor = min_interval if earliest is None else earliest
    lowest = max(window.lowest - low_shift, floor)
    core_low = max(window.core_low - low_shift, lowest)
    core_high = max(window.core_high - high_shift, core_low)
    highest = max(window.highest - high_shift, core_high)
    upper = min(UPPER_READS, max(1, (max_reads - 1) // 2))
    shoulder = min(SHOULDER_READS, (max_reads - 1 - upper) // 4)
    # An arrival below the whole plan is bracketed from the read at 0, half its lag off;
    # one guard read at GUARD_FRACTION of the lowest expected lag caps that at a tenth.
    guard_at = GUARD_FRACTION * window.lowest - low_shift
    guard = 1 if shoulder and floor + min_interval < guard_at < lowest - min_interval else 0
    core = max(1, max_reads - 1 - shoulder - upper - guard)
    step = max(min_interval, (core_high - core_low) / max(1, core - 1))
    dense = [core_low + step * i for i in range(core) if step * i <= core_high - core_low + 1e-9]
    below = (
        [lowest + (core_low - lowest) * i / shoulder for i in range(shoulder)]
        if core_low - lowest > step
        else []
    ) + [guard_at] * guard
    # Reads the core and the shoulder did not need go to the upper reach.
    above: list[float] = []
    n_above = max_reads - 1 - len(below) - len(dense)
    if n_above > 0:
        span = max(highest - dense[-1], step * n_above)
        gap = max(step, span * (UPPER_GROWTH - 1) / (UPPER_GROWTH**n_above - 1))
        for _ in range(n_above):
            above.append((above[-1] if above else dense[-1]) + gap)
            gap *= UPPER_GROWTH
    # Reads planned before the write's answer (earliest < 0) come before the read at 0; a
    # read within half the minimum interval of the one before it would look at the same thing.
    plan: list[float] = []
    for offset in sorted(o for o in {*offsets, *below, *dense, *above} if o <= timeout):
        if not plan or offset - plan[-1] >= min_interval / 2:
            plan.append(offset)
    return plan
