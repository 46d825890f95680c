"""Faults injected at run time: per-region outage, throttling, garbage answers and client latency.

Link faults (delay, pause) belong to the replication links; these are the
faults a client sees when it calls a region's endpoint.

*Garbage* answers a fraction of a region's requests with a 200 and a body of
the wrong shape, as a broken proxy, a truncating middlebox or a service bug
would. The request itself is applied (a write lands; only its answer is
lost), and the shapes rotate so every kind is met: `GARBAGE_SHAPES`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any, Literal

from monitor.emulator.delays import DelaySpec

__all__ = ["GARBAGE_SHAPES", "OutageMode", "RegionFaults", "garble"]

OutageMode = Literal["error", "blackhole"]

#: What a garbage answer looks like, in turn: not JSON at all (an HTML error page), JSON
#: of the wrong kind (an array where an object belongs), and the real answer with every
#: member's value of the wrong type (objects and lists as strings, scalars as objects).
GARBAGE_SHAPES = ("not_json", "json_array", "wrong_types")


def garble(payload: bytes, shape: str) -> bytes:
    """The answer `payload` (a JSON object) turned into garbage of the given shape."""
    if shape == "not_json":
        return b"<html><body><h1>200 OK</h1><p>gtmon emulator: injected garbage</p></body></html>"
    if shape == "json_array":
        return b'["gtmon emulator: injected garbage"]'
    if shape != "wrong_types":
        raise ValueError(f"garbage shape must be one of {GARBAGE_SHAPES}, not {shape!r}")
    try:
        answer = json.loads(payload or b"{}")
    except ValueError:
        answer = {}
    if not isinstance(answer, dict) or not answer:
        return b'{"gtmon": "injected garbage"}'
    wrong = {
        name: "injected garbage" if isinstance(value, dict | list) else {"garbage": True}
        for name, value in answer.items()
    }
    return json.dumps(wrong).encode()


@dataclass
class _Region:
    outage: OutageMode | None = None
    throttle_fraction: float = 0.0
    throttle_credit: float = 0.0
    latency: DelaySpec | None = None
    garbage_fraction: float = 0.0
    garbage_credit: float = 0.0
    garbage_answers: int = 0


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

    def set_garbage(self, region: str, fraction: float) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("garbage fraction must be between 0 and 1")
        fault = self._get(region)
        fault.garbage_fraction = fraction
        fault.garbage_credit = 0.0
        fault.garbage_answers = 0  # each setting starts the shapes from the first

    def garbage_shape(self, region: str) -> str | None:
        """The shape of garbage to answer this request with, or None for the real answer.

        Deterministic like throttling: exactly `fraction` of answers, evenly spread,
        the shapes in turn.
        """
        fault = self._regions.get(region)
        if fault is None or fault.garbage_fraction <= 0.0:
            return None
        fault.garbage_credit += fault.garbage_fraction
        if fault.garbage_credit < 1.0 - 1e-9:
            return None
        fault.garbage_credit -= 1.0
        shape = GARBAGE_SHAPES[fault.garbage_answers % len(GARBAGE_SHAPES)]
        fault.garbage_answers += 1
        return shape

    def set_latency(self, region: str, spec: DelaySpec | None) -> None:
        self._get(region).latency = spec

    def latency_seconds(self, region: str) -> float:
        """One sampled client round trip to `region`."""
        fault = self._regions.get(region)
        if fault is None or fault.latency is None:
            return 0.0
        return fault.latency.sample(self._rng)

    def clear(self) -> None:
        """Drop outages and throttling (the emulator puts client latency back to its settings)."""
        for fault in self._regions.values():
            fault.outage = None
            fault.throttle_fraction = 0.0
            fault.throttle_credit = 0.0
            fault.garbage_fraction = 0.0
            fault.garbage_credit = 0.0
            fault.garbage_answers = 0

    def to_json(self) -> dict[str, Any]:
        return {
            region: {
                "outage": f.outage,
                "throttle_fraction": f.throttle_fraction,
                "garbage_fraction": f.garbage_fraction,
                "garbage_answers": f.garbage_answers,
                "latency": f.latency.to_json() if f.latency else None,
            }
            for region, f in sorted(self._regions.items())
        }
