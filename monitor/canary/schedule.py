"""Is the canary schedule kept? A pure core: due times in, lateness and skipped writes out.

APScheduler fires each (target, source) write job every `interval` seconds from the
moment the job was added, one run at a time (`max_instances=1`, `coalesce`): a run that
finds the previous one still busy, or comes too late, is dropped rather than run twice.
That keeps the daemon from piling up, but a dropped write is a canary never written, and a
late one shifts every lag it measures to later reads. Nothing said so before; this module
names both: how late each write went out (`gtmon_canary_schedule_lag_seconds`) and how many
due writes never went out (`gtmon_canary_writes_skipped_total`), and decides when the
daemon says it cannot keep its interval (a `canary_schedule_not_kept` warning, at most
once per `WARN_EVERY_SECONDS` per writer, with what happened since the last one).

Times are the daemon's monotonic clock; the job's first run is due at `anchor`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LATE_FRACTION", "WARN_EVERY_SECONDS", "Slot", "WriteSchedule"]

#: A write this far into its interval (or later) did not keep the schedule.
LATE_FRACTION = 0.5
#: One warning per writer at most this often; the counts in between go with the next one.
WARN_EVERY_SECONDS = 60.0
#: The scheduler runs on the wall clock, the anchor is monotonic: a run a hair early
#: still belongs to the slot it was meant for.
EARLY_TOLERANCE_FRACTION = 0.05


@dataclass(frozen=True)
class Slot:
    """One write as the schedule sees it: the time it was due, and the due writes before it
    that never went out."""

    due: float
    skipped: int


@dataclass
class WriteSchedule:
    """Due times `anchor + k * interval` of one writer, and what it kept of them."""

    anchor: float
    interval: float
    _last_index: int = -1
    _last_warning: float | None = None
    _late_since_warning: int = 0
    _skipped_since_warning: int = 0
    _worst_since_warning: float = 0.0

    def take(self, now: float) -> Slot:
        """The slot of a write that starts at `now`: the latest due time not after it."""
        tolerance = EARLY_TOLERANCE_FRACTION * self.interval
        index = max(0, math.floor((now - self.anchor + tolerance) / self.interval))
        skipped = max(0, index - self._last_index - 1)
        self._last_index = max(self._last_index, index)
        return Slot(self.anchor + index * self.interval, skipped)

    def went_out(self, slot: Slot, sent: float) -> float:
        """Record that the write of `slot` was sent at `sent`; its lateness in seconds."""
        late = max(0.0, sent - slot.due)
        if late >= LATE_FRACTION * self.interval:
            self._late_since_warning += 1
        self._skipped_since_warning += slot.skipped
        self._worst_since_warning = max(self._worst_since_warning, late)
        return late

    def warning(self, now: float) -> dict[str, float | int] | None:
        """What to warn about at `now`, if the schedule was not kept and no warning went out
        in the last WARN_EVERY_SECONDS; the counts restart after each warning."""
        if not (self._late_since_warning or self._skipped_since_warning):
            return None
        if self._last_warning is not None and now - self._last_warning < WARN_EVERY_SECONDS:
            return None
        said: dict[str, float | int] = {
            "late_writes": self._late_since_warning,
            "skipped_writes": self._skipped_since_warning,
            "worst_late_seconds": round(self._worst_since_warning, 3),
        }
        self._last_warning = now
        self._late_since_warning = self._skipped_since_warning = 0
        self._worst_since_warning = 0.0
        return said
