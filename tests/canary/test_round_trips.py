"""Central mode with the round trips of a monitor far from some regions (issue 7).

The emulator answers each region after its client latency, half before the request is
handled and half after, as a real network does. The lag estimates must stay within
their stated error bound of the emulator's ground truth, and that bound must stay tight.
"""

from __future__ import annotations

import statistics

from monitor.emulator import DelaySpec, EmulatorServer

from .conftest import daemon_config, running, wait_for

LATENCY_MS = {"us-east-1": 0.0, "eu-west-1": 80.0, "ap-southeast-1": 220.0}
DELAYS = {
    ("us-east-1", "ap-southeast-1"): 0.25,
    ("ap-southeast-1", "eu-west-1"): 0.6,
    ("eu-west-1", "us-east-1"): 0.15,
}


def truth(emu: EmulatorServer, m) -> float:
    """Apply time at the target minus commit time at the source (emulator ground truth)."""
    for write in emu.emulator.truth.writes("gtmon-canary"):
        image = write.image or {}
        if write.origin == m.source and image.get("gtmon_seq", {}).get("N") == str(m.seq):
            return write.applied[m.target] - write.accepted_at
    raise AssertionError(f"no ground truth for {m}")


async def test_round_trip_corrected_lag_stays_within_a_tight_bound_of_ground_truth(emu: EmulatorServer):
    for region, ms in LATENCY_MS.items():
        emu.emulator.faults.set_latency(
            region, DelaySpec(ms=ms, jitter_ms=ms * 0.1, kind="uniform") if ms else None
        )
    for (a, b), seconds in DELAYS.items():
        emu.emulator.tables.set_delay(a, b, DelaySpec(ms=seconds * 1000))
    found: dict[tuple[str, str], list] = {pair: [] for pair in DELAYS}
    config = daemon_config(
        emu.url,
        canary={"interval_seconds": 1.0},
        aws={"read_timeout_seconds": 3, "connect_timeout_seconds": 2},
    )
    try:
        async with running(config) as service:
            service.runners[0].observers.append(
                lambda m: found[(m.source, m.target)].append(m) if (m.source, m.target) in found else None
            )
            await wait_for(lambda: all(len(v) >= 14 for v in found.values()), 60, "14 canaries per pair")
    finally:
        for region in LATENCY_MS:
            emu.emulator.faults.set_latency(region, None)
    for pair, measurements in found.items():
        settled = measurements[-6:]  # once the read plan has learned the pair
        errors = sorted(abs(m.estimate.lag - truth(emu, m)) for m in settled)
        bounds = sorted(m.estimate.error for m in settled)
        # The estimates sit close to the truth and the stated bound stays far below the round
        # trips (not inflated to pass). Whether the truth falls inside the bound depends on
        # the round trips being symmetric, which a loaded test process breaks now and then:
        # bench/lag_accuracy.py measures that fraction in separate processes.
        # Sanity levels only, far below the 220 ms round trip: the accuracy targets
        # (p50 10 ms, p99 50 ms) are measured by bench/lag_accuracy.py, not asserted here.
        assert errors[len(errors) // 2] < 0.06, (pair, errors, bounds)
        assert bounds[len(bounds) // 2] < 0.06, (pair, bounds)
        # The naive figure is off by the round trips this correction removes.
        if "ap-southeast-1" in pair:
            naive = statistics.median(m.first_hit.received - m.write.sent - truth(emu, m) for m in settled)
            assert naive > 0.1, (pair, naive)
