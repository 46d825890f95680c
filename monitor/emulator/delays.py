"""Replication delay distributions for the emulator's directed links (pure)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

__all__ = ["DelaySpec"]


@dataclass(frozen=True)
class DelaySpec:
    """How long a write takes to cross one link.

    fixed: always `ms`; uniform: `ms` plus up to `jitter_ms`; lognormal: `ms`
    plus a lognormal jitter with median `jitter_ms` and shape `sigma`, the
    long-tailed shape real replication delays have.
    """

    ms: float = 0.0
    jitter_ms: float = 0.0
    kind: Literal["fixed", "uniform", "lognormal"] = "fixed"
    sigma: float = 0.5

    def __post_init__(self) -> None:
        if self.ms < 0 or self.jitter_ms < 0 or not math.isfinite(self.ms + self.jitter_ms):
            raise ValueError("delays must be finite and not negative")
        if self.kind not in ("fixed", "uniform", "lognormal"):
            raise ValueError(f"unknown delay kind {self.kind!r}: use fixed, uniform or lognormal")

    @classmethod
    def of(cls, ms: float, jitter_ms: float = 0.0, kind: str | None = None) -> DelaySpec:
        """fixed without jitter, uniform with it, unless `kind` says otherwise."""
        chosen = kind or ("uniform" if jitter_ms > 0 else "fixed")
        return cls(ms=ms, jitter_ms=jitter_ms, kind=chosen)  # type: ignore[arg-type]

    def sample(self, rng: random.Random) -> float:
        """One delay in seconds."""
        if self.kind == "fixed" or self.jitter_ms == 0:
            extra = 0.0
        elif self.kind == "uniform":
            extra = rng.uniform(0.0, self.jitter_ms)
        else:
            extra = self.jitter_ms * math.exp(rng.gauss(0.0, self.sigma))
        return (self.ms + extra) / 1000.0

    def to_json(self) -> dict[str, object]:
        return {"ms": self.ms, "jitter_ms": self.jitter_ms, "kind": self.kind, "sigma": self.sigma}
