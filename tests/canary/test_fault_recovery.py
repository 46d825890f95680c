"""After a fault ends, every affected pair is back to its pre-fault precision within 10
canaries (issue 15, item 4), and the fault itself stays visible and bounded (item 2).

Before: canaries released together when a pause ended entered the read planner's
history with the pause's lags (20 s down to 1 s), and the next plans spread their 20
reads over that range until 64 newer canaries had pushed them out: after a 20 s pause
the stated bound stayed ten times its pre-fault level (here ±0.1-0.2 s against ±20 ms)
for over a minute. After a region outage, reads had backed off for up to 30 s, so the
canaries written meanwhile were read only when it ended, with bounds as wide as the
wait (±5.6 s down to ±2 s here). This test fails on that code for the paused pair and
for both pairs into the region that was down.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics

import pytest

from monitor.emulator import DelaySpec, EmulatorSettings
from monitor.emulator.control import ControlClient
from monitor.emulator.process import EmulatorProcess

from .conftest import REGIONS, daemon_config, pair, running, wait_for

INTERVAL = 0.5
TIMEOUT = 8.0  # canaries older than this are given up during the 20 s fault
FAULT_SECONDS = 20.0
PAUSED = ("us-east-1", "eu-west-1")
DOWN = "ap-southeast-1"
AFFECTED = [PAUSED] + [(a, b) for a in REGIONS for b in REGIONS if a != b and DOWN in (a, b)]
BACK_WITHIN = 10  # canaries
FACTOR = 1.5
RUN = 5


def recovered_after(errors: list[float], before_median: float) -> int | None:
    """1-based position of the first canary after the fault that starts a run of RUN
    consecutive canaries whose median bound is within FACTOR of the pre-fault median
    (bench/fault_recovery.py counts the same way). A median of several, because single
    bounds vary by 2-3x from canary to canary with where each arrival falls."""
    return next(
        (
            i + 1
            for i in range(len(errors) - RUN + 1)
            if statistics.median(errors[i : i + RUN]) <= FACTOR * before_median
        ),
        None,
    )


def sample(service, name, source, target):
    labels = {"table": "gtmon-canary", "source_region": source, "target_region": target}
    return service.registry.get_sample_value(name, labels)


@pytest.mark.timeout(150)
async def test_after_a_pause_and_an_outage_each_affected_pair_is_back_to_its_precision_within_ten_canaries():
    # Links with a spread (0.3-0.7 s), so the read plan has something to learn and to unlearn;
    # the emulator in a child process, so its threads do not jitter the daemon's reads.
    settings = EmulatorSettings(
        regions=list(REGIONS),
        default_delay=DelaySpec(ms=300, jitter_ms=400, kind="uniform"),
        replica_activation_seconds=0.3,
    )
    found: dict[tuple[str, str], list] = {p: [] for p in AFFECTED}
    with EmulatorProcess(settings) as emulator:
        control = ControlClient(emulator.url)
        canary = {"interval_seconds": INTERVAL, "timeout_seconds": TIMEOUT}
        config = daemon_config(emulator.url, canary=canary)
        async with running(config) as service:
            service.runners[0].observers.append(
                lambda m: found[(m.source, m.target)].append(m) if (m.source, m.target) in found else None
            )
            await wait_for(lambda: all(len(v) >= 24 for v in found.values()), 40, "24 canaries per pair")
            before = {p: statistics.median(m.estimate.error for m in v[8:]) for p, v in found.items()}
            control.fault("pause", **{"from": PAUSED[0], "to": PAUSED[1]})
            control.fault("outage", region=DOWN, mode="error")
            ages = []
            for _ in range(int(FAULT_SECONDS)):
                await asyncio.sleep(1.0)
                ages.append(sample(service, "gtmon_replication_oldest_pending_seconds", *PAUSED))
                assert len(pair(service, *PAUSED).pending) <= TIMEOUT / INTERVAL + 3
            control.fault("resume", **{"from": PAUSED[0], "to": PAUSED[1]})
            control.fault("restore", region=DOWN)
            ended = service.clock.monotonic()
            # The pause showed for its whole length, through the canaries given up on.
            assert all(b > a + 0.7 for a, b in itertools.pairwise(ages)), ages
            lost = sample(service, "gtmon_canary_lost_total", *PAUSED)
            assert lost >= (FAULT_SECONDS - TIMEOUT) / INTERVAL - 4

            def after(p: tuple[str, str]) -> list[float]:
                return [m.estimate.error for m in found[p] if m.write.sent >= ended]

            await wait_for(lambda: all(len(after(p)) >= BACK_WITHIN + RUN for p in AFFECTED), 30, "canaries")
            assert sample(service, "gtmon_replication_oldest_pending_seconds", *PAUSED) < 2.0
    for p in AFFECTED:
        errors = after(p)[: BACK_WITHIN + RUN]
        back = recovered_after(errors, before[p])
        assert back is not None and back <= BACK_WITHIN, (p, back, round(before[p], 4), errors)
