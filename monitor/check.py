"""`gtmon check`: one canary round with nagios-style exit codes, like pt-heartbeat --check.

It writes one canary per region under its own instance id (`<instance>-check`,
so a running daemon's canaries are never disturbed), waits for every other
region to see it or for the timeout, prints the lag matrix and exits 0 OK,
1 WARNING, 2 CRITICAL or 3 UNKNOWN.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog
from prometheus_client import CollectorRegistry

from monitor import __version__
from monitor.aws import AwsClients
from monitor.canary.runner import CanaryRunner, CanaryTarget
from monitor.canary.status import PairState
from monitor.clock import SystemClock
from monitor.config import Config
from monitor.metrics import Metrics

__all__ = ["CheckResult", "run_check"]

_log = structlog.get_logger("gtmon.check")

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
_STOP_SECONDS = 1.0
_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
# Worst first wins, as in nagios: a CRITICAL pair outranks an UNKNOWN one.
_RANK = {OK: 0, UNKNOWN: 1, WARNING: 2, CRITICAL: 3}


@dataclass(frozen=True)
class CheckResult:
    code: int
    summary: str
    lines: list[str]

    def render(self) -> str:
        return "\n".join([f"GTMON {_NAMES[self.code]} - {self.summary}", *self.lines])


def _verdict(state: PairState, lag: float | None, warning: float, critical: float) -> int:
    if state in (PairState.DOWN, PairState.UNKNOWN) and lag is None:
        return UNKNOWN
    if lag is None or state in (PairState.STALLED, PairState.DOWN) or lag >= critical:
        return CRITICAL
    return WARNING if lag >= warning else OK


async def run_check(
    config: Config, target: CanaryTarget, warning: float, critical: float, timeout: float
) -> CheckResult:
    settings = config.canary.model_copy(
        update={
            "warning_seconds": warning,
            "critical_seconds": critical,
            "stall_seconds": timeout,
            "timeout_seconds": timeout,
        }
    )
    metrics = Metrics(CollectorRegistry(), __version__)
    clients = AwsClients(config.aws, metrics)
    runner = CanaryRunner(
        target, settings, f"{config.instance_id}-check", clients, metrics, SystemClock()
    )
    loop = asyncio.get_running_loop()
    unanswered: set[str] = set()
    # The deadline covers the writes too: a region that never answers a write must not
    # keep the check past --timeout (the AWS client's own timeouts and retries could).
    deadline = loop.time() + timeout
    await clients.start(list(target.regions))
    try:
        runner.start()
        writes = {region: asyncio.create_task(runner.write(region)) for region in target.regions}
        _, late = await asyncio.wait(writes.values(), timeout=max(0.0, deadline - loop.time()))
        for write in late:
            write.cancel()
        await asyncio.gather(*writes.values(), return_exceptions=True)
        unanswered = {region for region, write in writes.items() if write in late}
        while loop.time() < deadline:
            if all(not p.pending for p in runner.probes.values()):
                break
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))
    finally:
        # Bounded too: reads still out are cancelled, and closing never waits long.
        for name, stop in (("canary", runner.stop), ("clients", clients.close)):
            try:
                async with asyncio.timeout(_STOP_SECONDS):
                    await stop()
            except TimeoutError:
                _log.warning("check_stop_timed_out", phase=name)
    region_up = {r: clients.region_ok.get(r, True) for r in target.regions}
    worst = OK
    codes: dict[str, int] = {}
    lines = []
    perfdata = []
    written = {p.source for p in runner.probes.values() if p.pending or p.last is not None}
    for probe in runner.probes.values():
        lag = probe.last.lag if probe.last else None
        if probe.source in unanswered:
            code = UNKNOWN
            detail = f"canary write in {probe.source} not answered within {timeout:g} s"
        elif probe.source not in written:
            code = UNKNOWN
            detail = f"canary not written: {probe.last_error or 'error'}"
        else:
            state = runner.pair_state(probe, region_up)
            if probe.pending and probe.last is None and state != PairState.DOWN:
                # Written at the start and still unseen at the deadline: not seen within
                # --timeout, which is CRITICAL whatever its age is by the stall rule.
                state = PairState.STALLED
            code = _verdict(state, lag, warning, critical)
            detail = (
                f"{lag:.3f} s ± {probe.last.error:.3f}"
                if probe.last
                else f"not seen after {timeout:.0f} s{': ' + probe.last_error if probe.last_error else ''}"
            )
        worst = max(worst, code, key=_RANK.__getitem__)
        codes[f"{probe.source}->{probe.target}"] = code
        lines.append(f"  {probe.source:>16} -> {probe.target:<16} {_NAMES[code]:<8} {detail}")
        if lag is not None:
            perfdata.append(f"'{probe.source}->{probe.target}'={lag:.3f}s;{warning};{critical}")
    lags = [(p.last.lag, p) for p in runner.probes.values() if p.last]
    if lags:
        lag, probe = max(lags, key=lambda item: item[0])
        summary = f"max lag {lag:.3f} s ({probe.source} -> {probe.target}) on {target.table}"
    else:
        summary = f"no canary arrived on {target.table}"
    if worst != OK:
        bad = [pair for pair, code in codes.items() if code == worst]
        summary = f"{len(bad)} of {len(codes)} pairs {_NAMES[worst]} ({', '.join(bad)}); {summary}"
    if perfdata:
        summary += " | " + " ".join(perfdata)
    return CheckResult(worst, summary, lines)
