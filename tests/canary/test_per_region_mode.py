"""Per-region mode: one daemon per region, each reading the others' canaries at home."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from monitor.clock import SystemClock
from monitor.emulator import DelaySpec, EmulatorServer
from monitor.service import Service

from .conftest import REGIONS, daemon_config, running, wait_for

DELAYS = {
    ("us-east-1", "eu-west-1"): 0.12, ("eu-west-1", "us-east-1"): 0.18,
    ("us-east-1", "ap-southeast-1"): 0.30, ("ap-southeast-1", "us-east-1"): 0.26,
    ("eu-west-1", "ap-southeast-1"): 0.40, ("ap-southeast-1", "eu-west-1"): 0.35,
}


@dataclass(frozen=True)
class SkewedClock:
    """A host whose wall clock runs `offset` seconds ahead."""

    offset: float

    def wall(self) -> float:
        return SystemClock().wall() + self.offset

    def monotonic(self) -> float:
        return SystemClock().monotonic()


def config_for(url: str, home: str):
    return daemon_config(url, instance_id=f"d-{home}", home_region=home, clock_error_seconds=0.002)


async def _run_three(emu: EmulatorServer, skew: dict[str, float]):
    for (a, b), seconds in DELAYS.items():
        emu.emulator.tables.set_delay(a, b, DelaySpec(ms=seconds * 1000))
    measurements: dict[tuple[str, str], list] = {pair: [] for pair in DELAYS}
    services: list[Service] = []
    contexts = []
    try:
        for index, home in enumerate(REGIONS):
            context = running(config_for(emu.url, home), create_table=index == 0)
            service = await context.__aenter__()
            if skew.get(home):
                for runner in service.runners:
                    runner._clock = SkewedClock(skew[home])  # the host's clock, as the daemon sees it
            contexts.append(context)
            services.append(service)
            for runner in service.runners:
                runner.observers.append(lambda m: measurements[(m.source, m.target)].append(m))
        await wait_for(lambda: all(len(v) >= 4 for v in measurements.values()), 30, "every pair measured")
    finally:
        for context in reversed(contexts):
            await context.__aexit__(None, None, None)
    return services, measurements


async def test_three_daemons_together_report_the_whole_matrix_each_only_its_home_column(emu: EmulatorServer):
    services, measurements = await _run_three(emu, {})
    for service, home in zip(services, REGIONS, strict=True):
        pairs = {(p["source_region"], p["target_region"]) for p in service.status()["pairs"]}
        assert pairs == {(s, home) for s in REGIONS if s != home}
    for pair, found in measurements.items():
        for m in found:
            # The clock bound is 2 ms; the emulator's own scheduling adds a few more.
            assert abs(m.estimate.lag - DELAYS[pair]) <= m.estimate.error + 0.015, (pair, m.estimate)


async def test_a_skewed_clock_biases_that_daemons_column_by_the_skew(emu: EmulatorServer):
    _, measurements = await _run_three(emu, {"eu-west-1": 0.08})
    for (source, target), found in measurements.items():
        bias = statistics.median(m.estimate.lag for m in found) - DELAYS[(source, target)]
        if target == "eu-west-1":
            assert 0.06 < bias < 0.10, (source, target, bias)
        else:
            assert abs(bias) < 0.02, (source, target, bias)
