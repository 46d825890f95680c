"""Per-region mode: one daemon per region, each reading the others' canaries at home."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from monitor.clock import SystemClock
from monitor.emulator import DelaySpec, EmulatorServer
from monitor.service import Service

from .conftest import REGIONS, daemon_config, running, wait_for

DELAYS = {
    ("us-east-1", "eu-west-1"): 0.12,
    ("eu-west-1", "us-east-1"): 0.18,
    ("us-east-1", "ap-southeast-1"): 0.30,
    ("ap-southeast-1", "us-east-1"): 0.26,
    ("eu-west-1", "ap-southeast-1"): 0.40,
    ("ap-southeast-1", "eu-west-1"): 0.35,
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


async def _run_three(
    emu: EmulatorServer, skew: dict[str, float], per_pair: int = 4, delays: dict | None = None
):
    delays = delays or DELAYS
    for (a, b), seconds in delays.items():
        emu.emulator.tables.set_delay(a, b, DelaySpec(ms=seconds * 1000))
    measurements: dict[tuple[str, str], list] = {pair: [] for pair in delays}
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
        await wait_for(
            lambda: all(len(v) >= per_pair for v in measurements.values()), 40, "every pair measured"
        )
    finally:
        for context in reversed(contexts):
            await context.__aexit__(None, None, None)
    return services, measurements


def truth_lag(emu: EmulatorServer, m) -> float:
    """Arrival at the target minus the writer's timestamp, from the emulator's ground truth.

    Per-region mode measures from the timestamp the writer puts in the canary just
    before its PutItem, so the writer's own commit latency is part of the figure.
    """
    for write in emu.emulator.truth.writes("gtmon-canary"):
        image = write.image or {}
        if write.origin == m.source and image.get("gtmon_seq", {}).get("N") == str(m.seq):
            return write.applied[m.target] - float(image["gtmon_written_at"]["N"])
    raise AssertionError(f"no ground truth for {m}")


async def test_three_daemons_together_report_the_whole_matrix_each_only_its_home_column(emu: EmulatorServer):
    services, measurements = await _run_three(emu, {})
    for service, home in zip(services, REGIONS, strict=True):
        pairs = {(p["source_region"], p["target_region"]) for p in service.status()["pairs"]}
        assert pairs == {(s, home) for s in REGIONS if s != home}
    for pair, found in measurements.items():
        for m in found:
            # Everything runs in this one process, so round trips are long and lopsided under
            # load: check the assumption-free bounds (last miss sent .. first hit answered);
            # the midpoint accuracy is measured in bench/lag_accuracy.py, in separate processes.
            commit = m.write.sent  # the writer's timestamp, on this process's monotonic clock
            low = (m.last_miss.sent - commit) if m.last_miss else 0.0
            high = m.first_hit.received - commit
            truth = truth_lag(emu, m)
            assert low - 0.01 <= truth <= high + 0.01, (pair, low, truth, high)
            assert m.estimate.low - 0.01 <= m.estimate.lag <= m.estimate.high + 0.01


async def test_a_skewed_clock_biases_that_daemons_column_by_the_skew(emu: EmulatorServer):
    _, measurements = await _run_three(emu, {"eu-west-1": 0.25}, per_pair=10)
    # The better-bounded half of each pair's arrivals (the first ones, before the read
    # plan learns, are coarse; a loaded machine makes some more).
    bias = {
        pair: [
            m.estimate.lag - truth_lag(emu, m)
            for m in sorted(found, key=lambda m: m.estimate.error)[: max(1, len(found) // 2)]
        ]
        for pair, found in measurements.items()
    }
    # eu-west-1's clock runs 250 ms ahead, so arrivals there look 250 ms later than the
    # writers' timestamps say. In-process round trips are lopsided under load, which moves
    # every pair alike; compare the column against the pairs that do not involve eu-west-1
    # (its own canaries carry timestamps from the future, which estimates clamp at zero).
    skewed = statistics.median(b for (_, t), found in bias.items() if t == "eu-west-1" for b in found)
    others = statistics.median(
        b for (s, t), found in bias.items() if "eu-west-1" not in (s, t) for b in found
    )
    assert 0.19 < skewed - others < 0.31, bias


async def test_lags_longer_than_the_interval_are_still_bracketed_tightly(emu: EmulatorServer):
    # 1.6 s on one link with a canary every 0.5 s: three canaries in flight at once, so
    # most reads show a newer sequence than the last; the bracketing miss is the latest
    # read that showed an older one.
    delays = {**DELAYS, ("us-east-1", "eu-west-1"): 1.6}
    _, measurements = await _run_three(emu, {}, per_pair=8, delays=delays)
    slow = measurements[("us-east-1", "eu-west-1")][3:]
    for m in slow:
        assert m.last_miss is not None, m
        commit = m.write.sent
        assert m.last_miss.sent - commit - 0.01 <= truth_lag(emu, m) <= m.first_hit.received - commit + 0.01
    assert statistics.median(m.estimate.error for m in slow) < 0.3, [m.estimate for m in slow]
