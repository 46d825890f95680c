"""How often the stream readers call AWS: pure pacing rules, time passed in.

Three small rules, kept free of I/O and of the clock so they are unit-tested
with plain numbers (the style of Burrow's evaluator: `now` is an argument):

- `TokenBucket`: DescribeStream is limited by AWS to 10 calls/s, and every
  reader of a region shares that budget; the bucket tells a caller how long to
  wait before its call instead of letting AWS throttle it.
- `Backoff`: exponential backoff with a cap and full jitter, for throttling and
  region outages. Jitter keeps a fleet of shard readers that failed together
  from retrying together (the AWS Architecture Blog's "full jitter").
- `AdaptiveInterval`: the GetRecords polling interval. Each GetRecords costs
  money ($0.02 per 100,000) and every idle shard is polled forever, so an idle
  shard backs off towards the ceiling; a shard that returns records is polled
  at the floor, which keeps observation times (the inferred-mode origin signal)
  and the detector's watermarks tight when it matters.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["AdaptiveInterval", "Backoff", "TokenBucket"]


@dataclass
class TokenBucket:
    """`rate` tokens per second, holding at most `burst`; one token per call.

    `reserve(now)` takes a token and returns how long the caller must wait
    before using it (0 when one is available). Reservations queue fairly: the
    bucket may go into debt, so concurrent callers are spaced 1/rate apart
    rather than all retrying at the same instant.
    """

    rate: float
    burst: float
    tokens: float = field(default=-1.0)
    updated: float | None = None

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        if self.tokens < 0:
            self.tokens = self.burst

    def _refill(self, now: float) -> None:
        if self.updated is not None and now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        if self.updated is None or now > self.updated:
            self.updated = now

    def reserve(self, now: float) -> float:
        """Take one token; return the seconds to wait before the call may be made."""
        self._refill(now)
        self.tokens -= 1.0
        if self.tokens >= 0:
            return 0.0
        return -self.tokens / self.rate


@dataclass
class Backoff:
    """Exponential backoff with full jitter: delay in [0, min(cap, base * 2**n)].

    A floor of `base / 2` keeps a retry storm from spinning at zero delay.
    `reset()` after a success; `failures` counts the current run of errors.
    """

    base: float = 0.2
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base:
            raise ValueError("need 0 < base <= cap")

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2.0 ** min(self.failures, 30)))
        self.failures += 1
        return max(self.base / 2, self.rng.uniform(0.0, ceiling))

    def reset(self) -> None:
        self.failures = 0


@dataclass
class AdaptiveInterval:
    """Polling interval between `floor` and `ceiling`: floor on traffic, growing when idle.

    After a poll that returned records the next poll comes at the floor (or at
    once when the page was full: there is more to read). After an empty poll
    the interval grows by `growth`, so an idle shard settles at the ceiling
    after a few polls and costs ceiling-rate GetRecords only.
    """

    floor: float
    ceiling: float
    growth: float = 1.5
    current: float = field(default=-1.0)

    def __post_init__(self) -> None:
        if not 0 < self.floor <= self.ceiling or self.growth < 1:
            raise ValueError("need 0 < floor <= ceiling and growth >= 1")
        if self.current < 0:
            self.current = self.floor

    def after_poll(self, records: int, full_page: bool) -> float:
        """The delay before the next poll, given what this poll returned."""
        if full_page:
            self.current = self.floor
            return 0.0
        if records > 0:
            self.current = self.floor
        else:
            self.current = min(self.ceiling, self.current * self.growth)
        return self.current
