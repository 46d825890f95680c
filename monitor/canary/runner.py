"""Canary writer and prober: the I/O around the pure lag math.

Per canary target (a table) and source region, one heartbeat item per monitor
instance is rewritten on a schedule with a rising sequence number. For every
other region one prober task polls that item with strongly consistent reads,
following a read plan built from recent lag, until the sequence is visible.
Keys hold the instance id and the source region (never something that
replicates), so two monitors never disturb each other.

State stays bounded through a stall of any length: a canary keeps only the
reads its bracket can use (BRACKET_READS misses and hits), a canary older than
`timeout_seconds` is given up (counted in gtmon_canary_lost_total) and leaves
behind only a run of sequences that still counts in the oldest-pending gauge,
and canaries that settle together when the stall ends do so in batches, so
the event loop is never held for long.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import operator
import re
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from monitor.aws import AccessDenied, AwsCallError, AwsClients, NotFound
from monitor.canary.lag import (
    Interval,
    LagEstimate,
    RoundTripFloor,
    estimate_lag,
    latest_look,
    pick_bracket,
)
from monitor.canary.polling import LagHistory, plan_reads
from monitor.canary.schedule import Slot, WriteSchedule
from monitor.canary.status import PairFacts, PairState, Thresholds, evaluate
from monitor.canary.table import CANARY_KEY_ATTRIBUTE
from monitor.canary.trend import LagTrend
from monitor.clock import Clock
from monitor.config import CanarySettings, Config, key_template_pattern
from monitor.metrics import Metrics, PairReading
from monitor.supervisor import Supervised, Supervisor
from monitor.waiting import wait_event

__all__ = ["CanaryRunner", "CanaryTarget", "Measurement", "PairProbe", "settled"]

# Slices of the 15-minute window in /api/status's lag_history (10 s each).
SPARK_BUCKETS = 90
_log = structlog.get_logger("gtmon.canary")
MAX_PENDING = 1000  # canaries polled per pair whatever timeout_seconds says
# Misses and hits kept per canary: the latest-sent misses and the earliest-answered hits
# (see _Pending.record). More than the reads ever out at once around an arrival.
BRACKET_READS = 16
# Canaries resolved per pass; the rest after other callbacks had their turn. After a long
# stall one answer settles every canary written during it.
SETTLE_BATCH = 50
# Pipelined reads: a dense plan across a 220 ms round trip needs many reads out at once.
MAX_IN_FLIGHT = 16
LATE_POLL_FRACTION = 0.1  # past its plan, a canary is polled every tenth of its age
# A write answered this much slower than the path's floor round trip (times, or plus
# seconds, whichever is more) was retried or stalled on the way: when it committed is
# known only within its whole round trip, so its lag does not shape the read plan.
SLOW_WRITE_FACTOR = 3.0
SLOW_WRITE_SLACK = 0.05


@dataclass(frozen=True)
class CanaryTarget:
    """Where canaries go: a table, its regions, and the key for (instance, source)."""

    table: str
    regions: tuple[str, ...]
    key_template: tuple[tuple[str, str], ...]  # attribute -> template with {instance}, {source}

    def key(self, instance: str, source: str) -> dict[str, Any]:
        return {
            attr: {"S": template.format(instance=instance, source=source)}
            for attr, template in self.key_template
        }

    def owns(self, keys: Mapping[str, Any]) -> bool:
        """Whether a stream record's `Keys` are a canary item of this target, written by any
        monitor instance from any of its regions.

        The conflict watcher leaves canary items out by this, not by their `gtmon_seq`
        attribute: an application item that happens to carry one is still judged.
        """
        if len(keys) != len(self.key_template):
            return False
        for attr, template in self.key_template:
            value = keys.get(attr)
            text = value.get("S") if isinstance(value, Mapping) else None
            sources = "|".join(re.escape(r) for r in self.regions)
            pattern = key_template_pattern(
                template, (("{instance}", ".+?"), ("{source}", f"(?:{sources})")))
            if not isinstance(text, str) or not pattern.fullmatch(text):
                return False
        return True


def canary_targets(config: Config) -> list[CanaryTarget]:
    """The dedicated canary table (unless every table embeds its canary) plus embedded ones."""
    targets = []
    if not config.tables or any(t.canary_key is None for t in config.tables):
        targets.append(
            CanaryTarget(
                config.canary.table,
                tuple(config.regions),
                ((CANARY_KEY_ATTRIBUTE, "{instance}#{source}"),),
            )
        )
    for table in config.tables:
        if table.canary_key is not None:
            targets.append(
                CanaryTarget(table.name, tuple(config.table_regions(table)), tuple(table.canary_key.items()))
            )
    return targets


@dataclass(frozen=True)
class Measurement:
    """One canary's arrival, with the raw intervals behind the estimate (for benchmarks):
    the write, and the miss and hit that bound the arrival (lag.pick_bracket)."""

    table: str
    source: str
    target: str
    seq: int
    write: Interval
    last_miss: Interval | None
    first_hit: Interval
    estimate: LagEstimate
    reads: int
    # First seen by the same read as a newer canary: it arrived in a backlog the link
    # released at once (the end of a pause or an outage), so its lag says when the link
    # came back rather than how long it takes, and it does not shape the read plan.
    crowded: bool = False


_SENT = operator.attrgetter("sent")
_RECEIVED = operator.attrgetter("received")


@dataclass(slots=True)
class _Pending:
    seq: int
    write: Interval
    written_at: float
    plan: array[float]  # flat: one of these per canary waiting, through a whole stall
    next_index: int = 0
    reads: int = 0
    misses: list[Interval] = field(default_factory=list)  # at most BRACKET_READS
    hits: list[Interval] = field(default_factory=list)  # at most BRACKET_READS
    plan_base: float = 0.0  # the expected answer of the write; plan offsets count from it
    acked: bool = False
    crowded: bool = False

    def record(self, read: Interval, hit: bool) -> None:
        """Keep the read if a bracket could pick it, within BRACKET_READS of each kind.

        lag.pick_bracket takes the hit whose look is bounded earliest (its answer minus the
        floor) and the latest-looking miss (its send plus the floor) that does not
        contradict that hit. With one floor for all reads those order like the answers and
        the sends, so the earliest-answered hits and the latest-sent misses hold the
        bracket; an older miss is picked only when more than BRACKET_READS later ones all
        contradict the hit, and at most MAX_IN_FLIGHT reads are ever out around an arrival.
        Without the bound, a stall appended every read to every waiting canary.
        """
        if hit:  # kept sorted by answer, earliest first
            if len(self.hits) < BRACKET_READS or read.received < self.hits[-1].received:
                bisect.insort(self.hits, read, key=_RECEIVED)
                del self.hits[BRACKET_READS:]
        elif len(self.misses) < BRACKET_READS or read.sent > self.misses[0].sent:
            bisect.insort(self.misses, read, key=_SENT)  # sorted by send, latest last
            del self.misses[:-BRACKET_READS]

    def next_read_at(self, timeout: float) -> float | None:
        """Monotonic time of the next planned read; None once the plan or the timeout is spent."""
        if self.next_index >= len(self.plan) or self.plan[self.next_index] > timeout:
            return None
        return self.plan_base + self.plan[self.next_index]

    def advance(self, now: float) -> None:
        while self.next_index < len(self.plan) and self.plan_base + self.plan[self.next_index] <= now:
            self.next_index += 1


@dataclass(frozen=True)
class _Unseen:
    """Canaries given up on and not yet seen at the target, as one run of sequences.

    Only their ends are kept, so a stall of any length costs the same. A read that shows a
    sequence inside the run means every canary up to it arrived (or was overwritten by a
    newer one that did); the oldest still unseen was committed after that one, whose commit
    is interpolated between the ends (sequences follow the wall clock), so the gauge errs
    high by at most one interval while a backlog drains.
    """

    first_seq: int
    first_commit: float
    last_seq: int
    last_commit: float

    def add(self, seq: int, commit: float) -> _Unseen:
        return _Unseen(
            self.first_seq, self.first_commit, max(seq, self.last_seq), max(commit, self.last_commit)
        )

    def seen(self, seq: int) -> _Unseen | None:
        if seq >= self.last_seq:
            return None
        if seq < self.first_seq:
            return self
        fraction = (seq - self.first_seq) / (self.last_seq - self.first_seq)
        commit = self.first_commit + fraction * (self.last_commit - self.first_commit)
        return _Unseen(seq + 1, commit, self.last_seq, self.last_commit)


@dataclass
class PairProbe:
    """Everything known about one (table, source, target) pair."""

    table: str
    source: str
    target: str
    pending: OrderedDict[int, _Pending] = field(default_factory=OrderedDict)
    history: LagHistory = field(default_factory=LagHistory)
    trend: LagTrend = field(default_factory=LagTrend)  # the last 15 minutes, for people
    last: LagEstimate | None = None
    last_measured_wall: float | None = None
    newest_seen_commit: float | None = None  # monotonic commit time of the newest canary seen
    unseen: _Unseen | None = None  # canaries given up on, not yet seen
    lost: int = 0  # canaries given up on (gtmon_canary_lost_total)
    measurements: int = 0
    reads: int = 0
    last_error: str | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: dict[asyncio.Task[None], float] = field(default_factory=dict)  # task -> sent at
    backoff: float = 0.0
    backoff_until: float = 0.0
    read_round_trip: float | None = None  # smoothed, for the read planner's lead
    read_floor: RoundTripFloor = field(default_factory=RoundTripFloor)
    last_read_sent: float = 0.0
    settle_later: asyncio.Handle | None = None  # the next batch of settling, when one waits
    # Per-region mode: the canary the source's daemon should have written next (monotonic).
    expected_next_commit: float | None = None

    def oldest_pending_commit(self) -> float | None:
        if self.unseen is not None:
            return self.unseen.first_commit
        for pending in self.pending.values():
            return pending.write.midpoint
        return self.expected_next_commit

    def reading(self, now: float) -> PairReading:
        oldest = self.oldest_pending_commit()
        return PairReading(
            self.table,
            self.source,
            self.target,
            max(0.0, now - oldest) if oldest is not None else 0.0,
            max(0.0, now - self.newest_seen_commit) if self.newest_seen_commit is not None else None,
        )


def settled(probe: PairProbe, before: float, read_floor: float | None = None) -> bool:
    """No read still out could bound the arrival earlier than `before` (reads complete out
    of order): none was sent early enough to have looked before it."""
    earliest_out = min(probe.in_flight.values(), default=None)
    return earliest_out is None or earliest_out + (read_floor or 0.0) >= before


class CanaryRunner:
    """Writes one target's canaries and probes their arrival in every other region."""

    def __init__(
        self,
        target: CanaryTarget,
        settings: CanarySettings,
        instance_id: str,
        clients: AwsClients,
        metrics: Metrics,
        clock: Clock,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.target = target
        self.settings = settings
        self.instance_id = instance_id
        self.key_owner = instance_id
        self._clients = clients
        self._metrics = metrics
        self._clock = clock
        # Wall-clock based, so a restarted monitor never reuses a sequence the replicas hold.
        self._seq = int(clock.wall() * 1000)
        self.probes = {
            (s, t): PairProbe(target.table, s, t)
            for s in target.regions
            for t in target.regions
            if s != t and self._measures(s, t)
        }
        for region in target.regions:
            for operation in ("write", "read"):
                for result in ("ok", "error"):
                    # Present from the start, so rate() and increase() see the first error.
                    metrics.canary_operations.labels(target.table, region, operation, result)
            metrics.canary_writes_skipped.labels(target.table, region)
        for source, target_region in self.probes:
            # Present at 0 from the start: the dashboard's "Canaries given up" has data, and
            # increase() sees the first loss.
            metrics.canary_lost.labels(target.table, source, target_region)
        # The service's supervisor (one place that knows every component), or our own.
        self.supervisor = supervisor or Supervisor(metrics, clock)
        self._loops: list[Supervised] = []
        self._write_round_trip: dict[str, float] = {}  # smoothed, per source region
        self._write_floor = {region: RoundTripFloor() for region in target.regions}
        # Per region called, the canary operations failing there: since when, last error.
        self._failures: dict[str, dict[str, tuple[float, dict[str, Any]]]] = {}
        # Called with every Measurement; benchmarks compare them to the emulator's ground truth.
        self.observers: list[Callable[[Measurement], None]] = []
        self.thresholds = Thresholds(
            settings.warning_seconds, settings.critical_seconds, settings.stall_seconds
        )

    def _measures(self, source: str, target: str) -> bool:
        """Central mode measures every pair."""
        return True

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """One supervised probe loop per pair, `canary_probe` labelled with the link
        (region="source->target"): a loop that crashes shows as gtmon_component_up 0, is
        restarted with backoff and carries on with the pair's pending canaries."""
        for probe in self.probes.values():
            self._loops.append(self.supervisor.spawn(
                "canary_probe", functools.partial(self._probe_loop, probe),
                table=probe.table, region=f"{probe.source}->{probe.target}",
            ))

    async def stop(self) -> None:
        loops, self._loops = self._loops, []
        await asyncio.gather(*(loop.stop() for loop in loops))
        for probe in self.probes.values():
            if probe.settle_later is not None:
                probe.settle_later.cancel()
                probe.settle_later = None
        reads = [t for probe in self.probes.values() for t in probe.in_flight]
        for task in reads:
            task.cancel()
        await asyncio.gather(*reads, return_exceptions=True)

    # ---- writing --------------------------------------------------------------------------

    async def write(self, source: str, schedule: WriteSchedule | None = None) -> None:
        """Write the next canary in `source` (an APScheduler job, which passes its `schedule`
        so that how late the write goes out is measured)."""
        slot = schedule.take(self._clock.monotonic()) if schedule is not None else None
        self._seq = max(self._seq + 1, int(self._clock.wall() * 1000))
        seq = self._seq
        written_at = self._clock.wall()
        item = {
            **self.target.key(self.key_owner, source),
            "gtmon_seq": {"N": str(seq)},
            "gtmon_written_at": {"N": f"{written_at:.6f}"},
            "gtmon_instance": {"S": self.instance_id},
            "gtmon_source": {"S": source},
            "gtmon_expires_at": {"N": str(int(written_at + self.settings.ttl_seconds))},
        }
        targets = [probe for (s, _), probe in self.probes.items() if s == source]
        expected_rtt = self._write_round_trip.get(source)
        sent = self._clock.monotonic()
        # Pending from the moment the write is sent: across a long round trip to the target,
        # a short lag arrives before the write's answer, so reads must already be out.
        provisional = Interval(sent, sent + (expected_rtt or 0.0))
        for probe in targets:
            # A read sent at offset o looks at the replica about half its round trip later,
            # and lags count from the write's midpoint: tell the planner that lead.
            lead = (
                (expected_rtt or 0.0) / 2 + probe.read_round_trip / 2
                if probe.read_round_trip is not None and expected_rtt is not None
                else None
            )
            plan = plan_reads(
                probe.history.window(self.settings.min_poll_interval_seconds * 3),
                self.settings.max_reads_per_canary,
                self.settings.min_poll_interval_seconds,
                self.settings.timeout_seconds,
                lead,
                earliest=-(expected_rtt or 0.0) + self.settings.min_poll_interval_seconds
                if lead is not None
                else None,
            )
            probe.pending[seq] = _Pending(
                seq, provisional, written_at, array("d", plan), plan_base=provisional.received
            )
            self._expire(probe, sent)
            probe.wake.set()
        if schedule is not None and slot is not None:
            self._kept(source, schedule, slot, sent)
        try:
            await self._clients.call(
                source, "dynamodb", "put_item", lane="canary_write", lean=True,
                TableName=self.target.table, Item=item,
            )
        except AwsCallError as error:
            self._write_failed(source, targets, seq, error.code, error.message, error)
            return
        except Exception as exc:
            # An answer no AWS would give (a garbage body): the AWS layer counted and logged
            # it with its traceback. The write may have landed, but it was never answered:
            # drop the canary as a failed write, or it would wait to be given up as lost.
            self._write_failed(source, targets, seq, type(exc).__name__, str(exc), None)
            return
        received = self._clock.monotonic()
        self._count(source, "write", "ok")
        self._call_worked(source, "put_item")
        self._write_round_trip[source] = (
            received - sent if expected_rtt is None else 0.8 * expected_rtt + 0.2 * (received - sent)
        )
        self._write_floor[source].add(received - sent)
        for probe in targets:
            pending = probe.pending.get(seq)
            if pending is not None:
                pending.write = Interval(sent, received)
                pending.acked = True
                if expected_rtt is not None:
                    # The plan looks at the replica from the commit the expected round trip
                    # implied; the write's own answer places the commit half its error away.
                    # The expectation is smoothed, so right after a latency spike it is
                    # seconds off for a dozen writes: without this the reads still to come
                    # looked that far from the arrival, and the bounds stayed wide.
                    pending.plan_base += (received - sent - expected_rtt) / 2
                    probe.wake.set()
                self._settle(probe)
        _log.debug("canary_written", table=self.target.table, region=source, seq=seq)

    def _kept(self, source: str, schedule: WriteSchedule, slot: Slot, sent: float) -> None:
        """How late the write of `slot` goes out, in metrics, and a warning when it is not kept."""
        late = schedule.went_out(slot, sent)
        self._metrics.canary_schedule_lag.labels(self.target.table, source).observe(late)
        if slot.skipped:
            self._metrics.canary_writes_skipped.labels(self.target.table, source).inc(slot.skipped)
        said = schedule.warning(sent)
        if said is not None:
            _log.warning(
                "canary_schedule_not_kept",
                table=self.target.table,
                region=source,
                interval=schedule.interval,
                **said,
                consequence="canaries written late or not at all; lags are measured for fewer writes",
            )

    def _count(self, region: str, operation: str, result: str) -> None:
        self._metrics.canary_operations.labels(self.target.table, region, operation, result).inc()

    def _write_failed(self, source: str, targets: list[PairProbe], seq: int, code: str,
                      message: str, error: AwsCallError | None) -> None:
        self._count(source, "write", "error")
        self._call_failed(source, "put_item", code, message, error)
        _log.warning("canary_write_failed", table=self.target.table, region=source, code=code,
                     error=message)
        for probe in targets:
            probe.pending.pop(seq, None)
            probe.last_error = f"write in {source}: {code}"

    def _call_failed(self, region: str, operation: str, code: str, message: str,
                     error: AwsCallError | None) -> None:
        """`error` None: not an AWS error (an answer of the wrong shape)."""
        failing = self._failures.setdefault(region, {})
        since = failing[operation][0] if operation in failing else self._clock.wall()
        failing[operation] = (since, {
            "operation": operation, "code": code, "message": message,
            # An operator must act (no such table, no permission): readiness fails at once.
            "persistent": isinstance(error, NotFound | AccessDenied),
        })

    def _call_worked(self, region: str, operation: str) -> None:
        self._failures.setdefault(region, {}).pop(operation, None)

    def call_failures(self) -> list[tuple[str, float | None, dict[str, Any] | None]]:
        """Per region the canary has called: since when a canary operation there has been
        failing (None while all work) and its last error, for the readiness rules."""
        rows: list[tuple[str, float | None, dict[str, Any] | None]] = []
        for region, failing in self._failures.items():
            oldest = min(failing.values(), key=operator.itemgetter(0), default=None)
            rows.append((region, None, None) if oldest is None else (region, *oldest))
        return rows

    # ---- probing --------------------------------------------------------------------------

    def _expire(self, probe: PairProbe, now: float) -> None:
        """Give up on canaries older than timeout_seconds (or beyond MAX_PENDING).

        They leave the plan and the pending set: their lag will never be measured, and they
        are counted in gtmon_canary_lost_total. Until a read shows them they stay in
        `probe.unseen`, so the oldest-pending gauge keeps counting from the oldest of them
        for the whole stall. The newest canary is never given up: it keeps the late polls
        going (one read per interval) that see the stall end even when the source region
        no longer takes writes (and `gtmon check` waits on it).
        """
        lost = 0
        while len(probe.pending) > 1:
            seq, oldest = next(iter(probe.pending.items()))
            commit = oldest.write.midpoint
            if len(probe.pending) <= MAX_PENDING and now - commit <= self.settings.timeout_seconds:
                break
            del probe.pending[seq]
            if probe.unseen is None:
                probe.unseen = _Unseen(seq, commit, seq, commit)
                _log.warning(
                    "canary_given_up",
                    table=probe.table,
                    source=probe.source,
                    target=probe.target,
                    seq=seq,
                    age=round(now - commit, 3),
                    timeout=self.settings.timeout_seconds,
                )
            else:
                probe.unseen = probe.unseen.add(seq, commit)
            lost += 1
        if lost:
            probe.lost += lost
            self._metrics.canary_lost.labels(probe.table, probe.source, probe.target).inc(lost)

    def _next_due(self, probe: PairProbe) -> float | None:
        dues = []
        spent_since: float | None = None  # the write of the oldest canary past its plan
        for pending in probe.pending.values():
            due = pending.next_read_at(self.settings.timeout_seconds)
            if due is not None:
                dues.append(due)
            elif spent_since is None and pending.acked:
                spent_since = pending.write.received
        if spent_since is not None:
            # Past its plan: an arrival later than any recent one, or a stall. Poll on with
            # gaps of a tenth of the time since that write, so a late arrival is still
            # bracketed within about a tenth of its lag, growing to one read per interval
            # (at least 1 s) while a stall lasts.
            last = max(probe.last_read_sent, spent_since)
            gap = min(
                max(1.0, self.settings.interval_seconds),
                max(self.settings.min_poll_interval_seconds, LATE_POLL_FRACTION * (last - spent_since)),
            )
            dues.append(last + gap)
        if probe.unseen is not None:
            # Canaries given up on while none is pending (the newest write failed): one read
            # per interval still sees them arrive and ends the stall on the gauge.
            dues.append(probe.last_read_sent + max(1.0, self.settings.interval_seconds))
        return min(dues, default=None)

    async def _probe_loop(self, probe: PairProbe) -> None:
        """Issue reads at their planned times without waiting for earlier answers.

        Reads are pipelined: with a 200 ms round trip, waiting for each answer
        would space reads 200 ms apart and the error bound could never be
        tighter than 100 ms. Each answer bounds when its read looked (see lag.py).
        """
        while True:
            self._expire(probe, self._clock.monotonic())
            due = self._next_due(probe)
            now = self._clock.monotonic()
            if probe.backoff_until > now:
                due = max(due or now, probe.backoff_until)
            if due is None or due > now or len(probe.in_flight) >= MAX_IN_FLIGHT:
                probe.wake.clear()
                timeout = None if due is None else max(0.0, due - now)
                if len(probe.in_flight) >= MAX_IN_FLIGHT:
                    timeout = None
                await wait_event(probe.wake, timeout)
                continue
            self._read_sent(probe, now)
            task = asyncio.create_task(self._read(probe))
            probe.in_flight[task] = now
            task.add_done_callback(functools.partial(self._read_done, probe))

    def _read_sent(self, probe: PairProbe, now: float) -> None:
        probe.last_read_sent = now
        for pending in probe.pending.values():
            pending.advance(now)

    def _read_done(self, probe: PairProbe, task: asyncio.Task[None]) -> None:
        probe.in_flight.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            _log.error("canary_probe_bug", error=repr(task.exception()))
        probe.wake.set()

    @staticmethod
    def _answered(probe: PairProbe) -> None:
        """The running read is no longer out: it must not hold back its own canary."""
        this = asyncio.current_task()
        if this is not None:
            probe.in_flight.pop(this, None)

    async def _read(self, probe: PairProbe) -> None:
        key = self.target.key(self.key_owner, probe.source)
        sent = self._clock.monotonic()
        try:
            response = await self._clients.call(
                probe.target,
                "dynamodb",
                "get_item",
                lean=True,
                TableName=self.target.table,
                Key=key,
                ConsistentRead=True,
                ProjectionExpression="gtmon_seq, gtmon_written_at",
            )
        except AwsCallError as error:
            self._read_failed(probe, sent, error.code, error.message, error)
            return
        except Exception as exc:
            # An answer no AWS would give (counted and logged with its traceback by the AWS
            # layer): a failed read, so the canaries it held back settle and reads back off.
            self._read_failed(probe, sent, type(exc).__name__, str(exc), None)
            return
        received = self._clock.monotonic()
        self._answered(probe)
        round_trip = received - sent
        probe.read_round_trip = (
            round_trip if probe.read_round_trip is None else 0.8 * probe.read_round_trip + 0.2 * round_trip
        )
        probe.read_floor.add(round_trip)
        probe.backoff = 0.0
        self._count(probe.target, "read", "ok")
        self._call_worked(probe.target, "get_item")
        probe.reads += 1
        self._absorb(probe, Interval(sent, received), response.get("Item") or {})

    def _read_failed(self, probe: PairProbe, sent: float, code: str, message: str,
                     error: AwsCallError | None) -> None:
        self._answered(probe)
        self._count(probe.target, "read", "error")
        self._call_failed(probe.target, "get_item", code, message, error)
        probe.last_error = f"read in {probe.target}: {code}"
        if sent >= probe.backoff_until:
            # Pipelined reads fail together; one burst of failures backs off once. At most
            # one read per interval (and per second): a longer wait would leave the
            # canaries written after the region came back unread, with bounds as wide as
            # the wait.
            probe.backoff = min(max(1.0, self.settings.interval_seconds), max(0.5, probe.backoff * 2))
            probe.backoff_until = self._clock.monotonic() + probe.backoff
        _log.warning(
            "canary_read_failed",
            table=probe.table,
            source=probe.source,
            region=probe.target,
            code=code,
            error=message,
            retry_in=probe.backoff,
        )
        self._settle(probe)  # this read may have been all that held a canary back

    def _absorb(self, probe: PairProbe, read: Interval, item: dict[str, Any]) -> None:
        """Fold one answer into every pending canary, resolving those it settles."""
        seen = int(item["gtmon_seq"]["N"]) if "gtmon_seq" in item else None
        if seen is not None and probe.unseen is not None:
            probe.unseen = probe.unseen.seen(seen)
        first_seen: list[_Pending] = []
        for pending in probe.pending.values():
            if read.sent < pending.write.sent:
                continue  # sent before this canary was written: says nothing about it
            pending.reads += 1
            hit = seen is not None and seen >= pending.seq
            if hit and not pending.hits:
                first_seen.append(pending)
            pending.record(read, hit)
        # One read that is the first to see several canaries saw a backlog released at once
        # (a pause or an outage ended, or reads failed for a while): their lags say when that
        # happened, not how long the link takes. Only the newest may shape the read plan, or
        # the plans after a stall spread over the stall's lags for the next 64 canaries.
        for pending in first_seen[:-1]:
            pending.crowded = True
        self._settle(probe)

    def _settle_batch(self, probe: PairProbe) -> None:
        probe.settle_later = None
        self._settle(probe)

    def _settle(self, probe: PairProbe) -> None:
        """Resolve every acknowledged canary whose arrival the answers so far pin down,
        SETTLE_BATCH at a time (the next batch is queued behind the loop's other work)."""
        read_floor = probe.read_floor.one_way()
        resolved = 0
        for seq in list(probe.pending):
            pending = probe.pending[seq]
            if not pending.hits or not pending.acked:
                continue
            miss, hit = pick_bracket(pending.misses, pending.hits, read_floor)
            if not settled(probe, latest_look(hit, read_floor), read_floor):
                continue
            if resolved >= SETTLE_BATCH:
                if probe.settle_later is None:
                    probe.settle_later = asyncio.get_running_loop().call_soon(self._settle_batch, probe)
                return
            resolved += 1
            del probe.pending[seq]
            estimate = estimate_lag(
                pending.write, miss, hit, self._write_floor[probe.source].one_way(), read_floor
            )
            self._publish(
                probe,
                Measurement(
                    probe.table,
                    probe.source,
                    probe.target,
                    pending.seq,
                    pending.write,
                    miss,
                    hit,
                    estimate,
                    pending.reads,
                    pending.crowded,
                ),
                pending.write.midpoint,
            )

    def _slow_write(self, source: str, write: Interval) -> bool:
        """The write took far longer than its path's floor round trip (a throttled write the
        SDK retried after a backoff, a latency spike).

        Its lag's midpoint is then off by up to half that round trip, in a direction no one
        knows. In the plan's history such canaries spread the core over the backoffs, and a
        70 s throttling fault left a few dozen there: the pairs from the throttled region
        were bracketed twice as widely as before for as long as they stayed (the soak). A
        path that stays slow raises its floor within 64 writes and shapes the plan again.
        """
        floor = self._write_floor[source].one_way()
        if floor is None:
            return False
        fastest = 2.0 * floor
        return write.round_trip > max(SLOW_WRITE_FACTOR * fastest, fastest + SLOW_WRITE_SLACK)

    def _publish(self, probe: PairProbe, measurement: Measurement, commit: float) -> None:
        """Record one arrival: history, metrics, observers, log."""
        estimate = measurement.estimate
        if not measurement.crowded and not self._slow_write(probe.source, measurement.write):
            # The whole interval: a canary bracketed badly (no read missed it after the write,
            # say) makes the next plan reach over everything it may have been.
            probe.history.add(estimate.low, estimate.high)
        probe.last = estimate
        probe.last_measured_wall = self._clock.wall()
        probe.trend.add(probe.last_measured_wall, estimate.lag)
        probe.measurements += 1
        probe.last_error = None
        if probe.newest_seen_commit is None or commit > probe.newest_seen_commit:
            probe.newest_seen_commit = commit
        labels = (probe.table, probe.source, probe.target)
        self._metrics.replication_lag.labels(*labels).observe(estimate.lag)
        self._metrics.replication_lag_last.labels(*labels).set(estimate.lag)
        self._metrics.replication_lag_error.labels(*labels).set(estimate.error)
        for observer in self.observers:
            observer(measurement)
        _log.info(
            "canary_lag",
            table=probe.table,
            source=probe.source,
            target=probe.target,
            lag=round(estimate.lag, 4),
            error=round(estimate.error, 4),
            reads=measurement.reads,
            seq=measurement.seq,
        )

    # ---- reporting ------------------------------------------------------------------------

    def readings(self) -> list[PairReading]:
        now = self._clock.monotonic()
        return [probe.reading(now) for probe in self.probes.values()]

    def pair_state(self, probe: PairProbe, region_up: dict[str, bool]) -> PairState:
        reading = probe.reading(self._clock.monotonic())
        return evaluate(
            PairFacts(
                region_up.get(probe.source, True),
                region_up.get(probe.target, True),
                reading.oldest_pending_seconds,
                probe.last.lag if probe.last else None,
            ),
            self.thresholds,
        )

    def status(self, region_up: dict[str, bool]) -> list[dict[str, Any]]:
        """Rows for /api/status. p50/p99 are over every lag measured in the last 15 minutes
        (`trend_window_seconds`; `trend_span_seconds` says how far back the data really
        reaches), the canaries released at the end of a stall included;
        `lag_history` is that window in SPARK_BUCKETS slices, each its worst lag (null: no
        canary arrived then), for the status page's sparkline."""
        now = self._clock.monotonic()
        wall = self._clock.wall()
        rows = []
        for probe in self.probes.values():
            reading = probe.reading(now)
            spread = probe.trend.percentiles(wall)
            rows.append(
                {
                    "table": probe.table,
                    "source_region": probe.source,
                    "target_region": probe.target,
                    "state": self.pair_state(probe, region_up).name,
                    "last_lag_seconds": probe.last.lag if probe.last else None,
                    "last_error_bound_seconds": probe.last.error if probe.last else None,
                    "p50_seconds": spread[0] if spread else None,
                    "p99_seconds": spread[1] if spread else None,
                    "trend_window_seconds": probe.trend.window_seconds,
                    "trend_span_seconds": round(probe.trend.span(wall), 1),
                    "trend_measurements": len(probe.trend),
                    "lag_history": [
                        None if bucket is None else [round(bucket[0], 1), round(bucket[1], 4)]
                        for bucket in probe.trend.buckets(wall, SPARK_BUCKETS)
                    ],
                    "last_lag_age_seconds": round(wall - probe.last_measured_wall, 1)
                    if probe.last_measured_wall
                    else None,
                    "oldest_pending_seconds": reading.oldest_pending_seconds,
                    "heartbeat_age_seconds": reading.heartbeat_age_seconds,
                    "pending": len(probe.pending),
                    "canaries_lost": probe.lost,
                    "measurements": probe.measurements,
                    "reads_per_canary": round(probe.reads / probe.measurements, 2)
                    if probe.measurements
                    else None,
                    "last_error": probe.last_error,
                    "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(probe.last_measured_wall))
                    if probe.last_measured_wall
                    else None,
                }
            )
        return rows
