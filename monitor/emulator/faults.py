"""Faults injected at run time: per-region outage, throttling and client latency.

Link faults (delay, pause) belong to the replication links; these are the
faults a client sees when it calls a region's endpoint.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from monitor.emulator.delays import DelaySpec

__all__ = ["OutageMode", "RegionFaults"]

OutageMode = Literal["error", "blackhole"]


@dataclass
class _Region:
    outage: OutageMode | None = None
    throttle_fraction: float = 0.0
    throttle_credit: float = 0.0
    latency: DelaySpec | None = None


class RegionFaults:
    """Client-facing faults per region. Callers lock."""

    def __init__(self, seed: int | None = None) -> None:
        self._regions: dict[str, _Region] = {}
        self._rng = random.Random(seed)

    def _get(self, region: str) -> _Region:
        return self._regions.setdefault(region, _Region())

    def set_outage(self, region: str, mode: OutageMode) -> None:
        if mode not in ("error", "blackhole"):
            raise ValueError(f"outage mode must be error or blackhole, not {mode!r}")
        self._get(region).outage = mode

    def restore(self, region: str) -> None:
        self._get(region).outage = None

    def outage(self, region: str) -> OutageMode | None:
        fault = self._regions.get(region)
        return fault.outage if fault else None

    def set_throttle(self, region: str, fraction: float) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("throttle fraction must be between 0 and 1")
        fault = self._get(region)
        fault.throttle_fraction = fraction
        fault.throttle_credit = 0.0

    def should_throttle(self, region: str) -> bool:
        """Deterministic: exactly `fraction` of requests are throttled, evenly spread."""
        fault = self._regions.get(region)
        if fault is None or fault.throttle_fraction <= 0.0:
            return False
        fault.throttle_credit += fault.throttle_fraction
        if fault.throttle_credit >= 1.0 - 1e-9:
            fault.throttle_credit -= 1.0
            return True
        return False

    def set_latency(self, region: str, spec: DelaySpec | None) -> None:
        self._get(region).latency = spec

    def latency_seconds(self, region: str) -> float:
        """One sampled client round trip to `region`."""
        fault = self._regions.get(region)
        if fault is None or fault.latency is None:
            return 0.0
        return fault.latency.sample(self._rng)

    def clear(self) -> None:
        """Drop outages and throttling; client latency is a distance, not a fault, and stays."""
        for fault in self._regions.values():
            fault.outage = None
            fault.throttle_fraction = 0.0
            fault.throttle_credit = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            region: {
                "outage": f.outage,
                "throttle_fraction": f.throttle_fraction,
                "latency": f.latency.to_json() if f.latency else None,
            }
            for region, f in sorted(self._regions.items())
        }
