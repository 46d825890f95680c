"""Per-region mode: read the other daemons' canaries from the home replica.

pt-heartbeat's road: a checker next to each replica reads locally and compares
the writer's timestamp with its own clock. No round trip across the planet
enters the figure, at the price of trusting synchronized clocks; the clock
error bound from config is added to every estimate. One daemon per region
writes canaries only in its home region and measures only the pairs whose
target is its home, so the daemons' metrics merge in Prometheus without
duplicates. All daemons of one deployment share a fleet name, which takes the
instance id's place in canary keys.

The reader cannot see a canary it was not told about, so it plans reads around
when the source's next canary should arrive: the newest canary's write time
plus the interval plus the recent lag. The oldest-pending gauge counts from
when the next canary was due to be written, so a stall still shows as a rising
number (as does a source daemon that stopped writing; its own metrics tell the
two apart).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from monitor.aws import AwsClients
from monitor.canary.lag import Interval, estimate_lag_from_timestamp
from monitor.canary.polling import plan_reads
from monitor.canary.runner import CanaryRunner, CanaryTarget, Measurement, PairProbe, settled
from monitor.clock import Clock
from monitor.config import CanarySettings
from monitor.metrics import Metrics
from monitor.supervisor import Supervisor

__all__ = ["RemoteCanaryRunner"]


@dataclass
class _Remote:
    seq: int | None = None  # newest canary seen at home
    base: float | None = None  # monotonic time the next canary should be written
    plan: list[float] = field(default_factory=list)
    index: int = 0
    reads: int = 0
    hit: Interval | None = None
    hit_item: dict[str, Any] | None = None
    # Recent answers (read, sequence seen): when lags exceed the interval several canaries
    # are in flight and every read may show a newer one, so the miss that brackets a
    # canary is the latest read that showed an *older* sequence, not one equal to the last.
    recent: deque[tuple[Interval, int | None]] = field(default_factory=lambda: deque(maxlen=64))


class RemoteCanaryRunner(CanaryRunner):
    """Writes canaries in the home region; measures every other region's arrival at home."""

    def __init__(
        self,
        target: CanaryTarget,
        settings: CanarySettings,
        instance_id: str,
        clients: AwsClients,
        metrics: Metrics,
        clock: Clock,
        home_region: str,
        fleet: str,
        clock_error: float,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.home_region = home_region
        super().__init__(target, settings, instance_id, clients, metrics, clock, supervisor)
        self.key_owner = fleet
        self._clock_error = clock_error
        self._remote = {key: _Remote() for key in self.probes}

    def _measures(self, source: str, target: str) -> bool:
        return target == self.home_region

    def _next_due(self, probe: PairProbe) -> float | None:
        remote = self._remote[(probe.source, probe.target)]
        interval = self.settings.interval_seconds
        if remote.base is None:
            # Nothing seen yet: look a few times per interval until the first canary shows up.
            return probe.last_read_sent + max(self.settings.min_poll_interval_seconds, interval / 4)
        last = probe.last_read_sent
        while remote.index < len(remote.plan) and remote.base + remote.plan[remote.index] <= last:
            remote.index += 1
        if remote.index < len(remote.plan):
            return remote.base + remote.plan[remote.index]
        if remote.plan and probe.last_read_sent - remote.base < 3 * interval:
            # The expected canary's window passed without it (a late hit, a slow arrival):
            # plan around the next one the writer will have written, rather than fall back
            # to slow polling that would keep every later hit late too.
            while remote.base + remote.plan[-1] <= probe.last_read_sent:
                remote.base += interval
            probe.expected_next_commit = remote.base
            remote.index = 0
            return self._next_due(probe)
        return probe.last_read_sent + max(1.0, interval)

    def _absorb(self, probe: PairProbe, read: Interval, item: dict[str, Any]) -> None:
        remote = self._remote[(probe.source, probe.target)]
        seen = int(item["gtmon_seq"]["N"]) if "gtmon_seq" in item else None
        remote.reads += 1
        remote.recent.append((read, seen))
        newer = seen is not None and (remote.seq is None or seen > remote.seq)
        if newer and (remote.hit is None or read.midpoint < remote.hit.midpoint):
            remote.hit, remote.hit_item = read, item
        if remote.hit is None or remote.hit_item is None or not settled(probe, remote.hit.midpoint):
            return
        hit, hit_item = remote.hit, remote.hit_item
        offset = self._clock.wall() - self._clock.monotonic()
        written_at = float(hit_item["gtmon_written_at"]["N"])
        seq = int(hit_item["gtmon_seq"]["N"])
        miss = max(
            (r for r, s in remote.recent if (s is None or s < seq) and r.midpoint < hit.midpoint),
            key=lambda r: r.midpoint,
            default=None,
        )
        first_sighting = remote.seq is None
        remote.seq = seq
        remote.base = written_at + self.settings.interval_seconds - offset
        probe.expected_next_commit = remote.base
        remote.plan = plan_reads(
            probe.history.window(self.settings.min_poll_interval_seconds * 3),
            self.settings.max_reads_per_canary,
            self.settings.min_poll_interval_seconds,
            self.settings.timeout_seconds,
            # Offsets count from the expected commit; a local read looks half its round trip on.
            lead=(probe.read_round_trip or 0.0) / 2,
        )
        # Settled late (several canaries in flight, or a slow answer): plan around the next
        # canary whose arrival is still ahead rather than one that has already arrived.
        now = self._clock.monotonic()
        while remote.plan and remote.base + remote.plan[-1] <= now:
            remote.base += self.settings.interval_seconds
        probe.expected_next_commit = remote.base
        remote.index, reads = 0, remote.reads
        remote.hit = remote.hit_item = None
        remote.reads = 0
        if first_sighting:
            return  # written before we were watching: its lag is unknown
        estimate = estimate_lag_from_timestamp(written_at, miss, hit, offset, self._clock_error)
        commit = written_at - offset
        self._publish(
            probe,
            Measurement(
                probe.table,
                probe.source,
                probe.target,
                seq,
                Interval(commit, commit),
                miss,
                hit,
                estimate,
                reads,
            ),
            commit,
        )
