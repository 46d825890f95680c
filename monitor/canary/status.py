"""The state of one replication pair, as small ordered rules that take `now`.

Burrow's lesson: operators need a verdict (OK, WARN, STALLED...) evaluated
from a window of facts, not one raw number. Rules run worst first; the first
that matches wins. Time is passed in, never read here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

__all__ = ["PairFacts", "PairState", "Thresholds", "evaluate"]


class PairState(IntEnum):
    """Ordered from best to worst, so max() of several states is the worst."""

    OK = 0
    UNKNOWN = 1
    WARNING = 2
    CRITICAL = 3
    STALLED = 4
    DOWN = 5


@dataclass(frozen=True)
class Thresholds:
    warning_seconds: float
    critical_seconds: float
    stall_seconds: float


@dataclass(frozen=True)
class PairFacts:
    source_up: bool
    target_up: bool
    oldest_pending_seconds: float
    last_lag_seconds: float | None


def evaluate(facts: PairFacts, thresholds: Thresholds) -> PairState:
    if not (facts.source_up and facts.target_up):
        return PairState.DOWN
    if facts.oldest_pending_seconds >= thresholds.stall_seconds:
        return PairState.STALLED
    if facts.last_lag_seconds is None:
        return PairState.UNKNOWN
    if facts.last_lag_seconds >= thresholds.critical_seconds:
        return PairState.CRITICAL
    if facts.last_lag_seconds >= thresholds.warning_seconds:
        return PairState.WARNING
    return PairState.OK
