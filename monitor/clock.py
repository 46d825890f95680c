"""The clock, injected everywhere so rules and tests never read time on their own."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    def wall(self) -> float:
        """Seconds since the epoch (UTC); for timestamps that leave the process."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps; for every duration gtmon measures."""
        ...


@dataclass(frozen=True)
class SystemClock:
    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
