"""How often the stream readers call AWS: pure pacing rules, time passed in.

Four small rules, kept free of I/O and of the clock so they are unit-tested
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
- `Burst`: until when every reader of a table polls at the floor. A record in
  any region's stream means a write is crossing the table right now, and a
  concurrent write (a conflict) can only happen in that window; during it the
  other regions' readers, idle at the ceiling until then, poll at the floor
  too, so each region's arrival interval for that write is short exactly when
  the detector needs it. Each further record extends the burst; then every
  reader goes back to its adaptive interval.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

__all__ = ["AdaptiveInterval", "Backoff", "Burst", "TokenBucket"]


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
    after a few polls and costs ceiling-rate GetRecords only. While a `Burst`
    runs (`bursting`) the delay is the floor whatever the shard returned; the
    interval underneath keeps evolving as usual, so when the burst ends an idle
    shard is back at the ceiling at once, not growing there again from the floor.
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

    def after_poll(self, records: int, full_page: bool, bursting: bool = False) -> float:
        """The delay before the next poll, given what this poll returned."""
        if full_page:
            self.current = self.floor
            return 0.0
        if records > 0:
            self.current = self.floor
        else:
            self.current = min(self.ceiling, self.current * self.growth)
        return self.floor if bursting else self.current


@dataclass
class Burst:
    """Until when (monotonic seconds) the readers of one table poll at the floor.

    `extend(until, now)` moves the end later, never earlier, and says whether
    that *started* a burst (none was running at `now`): only then do sleeping
    readers need waking, so a stream of records costs one wake-up, not one per
    record.
    """

    until: float = -math.inf

    def active(self, now: float) -> bool:
        return now < self.until

    def extend(self, until: float, now: float) -> bool:
        """Let the burst last at least until `until`; True when this starts one."""
        started = not self.active(now) and now < until
        self.until = max(self.until, until)
        return started
