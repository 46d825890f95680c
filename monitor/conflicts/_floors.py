"""Least delays of the replication links, from the canary: what the detector may assume.

The canary measures every directed link's propagation delay with an error bound.
A write cannot reach another region sooner than its link ever delivers, so the
detector can rule out an origin that could not have delivered a write in time
(``_history``). The assumption, stated in docs/conflicts.md: the canary table and
the monitored tables travel the same links between the same regions.

The floor is deliberately cautious: the *smallest* lower bound of the recent
canaries, times a safety factor below 1. One canary that arrives faster than
the floor lowers it at once (a link that suddenly got faster), and a link with
no recent canary has no floor at all, since nothing says it is still as slow.
If a floor is wrong anyway, no history fits the streams with it and the
detector falls back to arrival times alone (counted in its stats).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

Link = tuple[str, str]


@dataclass
class LinkFloorTracker:
    """Per directed link, recent canary lower bounds; ``floors(now)`` for the detector.

    ``factor`` scales the smallest recent lower bound (0 switches floors off);
    ``window`` is how many canaries per link are remembered; ``max_age`` drops a
    link's floor when its newest canary is older than that (seconds, wall clock);
    ``min_samples`` canaries are needed before a link gets a floor.
    """

    factor: float = 0.5
    window: int = 32
    max_age: float = 60.0
    min_samples: int = 3
    _samples: dict[Link, deque[tuple[float, float]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.factor < 1.0:
            raise ValueError("factor must be in [0, 1)")

    def add(self, source: str, target: str, low: float, at: float) -> None:
        """One canary of ``source -> target``, written at ``at``, took at least ``low`` seconds."""
        if source == target:
            return
        samples = self._samples.setdefault((source, target), deque(maxlen=self.window))
        samples.append((at, max(0.0, low)))

    def floors(self, now: float) -> dict[Link, float]:
        """The floor of every link with enough recent canaries."""
        if self.factor <= 0:
            return {}
        out: dict[Link, float] = {}
        for link, samples in self._samples.items():
            if len(samples) < self.min_samples or now - samples[-1][0] > self.max_age:
                continue
            out[link] = self.factor * min(low for _, low in samples)
        return out

    def written_at(self) -> dict[Link, float]:
        """When the newest canary of each link was written (for ``Detector.set_link_floors``)."""
        return {link: samples[-1][0] for link, samples in self._samples.items() if samples}
