"""Conflict probes, the I/O: race two writes on a probe item, wait for the detector's verdict.

Per probed table, every `conflicts.probe_interval_seconds` (an APScheduler job), the
runner picks the next pair of regions that are not DOWN, writes a fresh probe item in
both with the two requests in flight at once, and remembers what it wrote. The
conflict watcher hands it every verdict about a probe item (`on_verdict`) instead of
counting it in gtmon_lww_conflicts_total; `check` (a supervised loop) judges the probes
that have verdicts with `judge.judge_probe` and gives up on those past their timeout,
naming the regions whose streams held the verdict back. Results go to
gtmon_conflict_probes_total and gtmon_conflict_probe_detection_seconds.

A probe still waiting when the daemon stops is dropped without a result (logged): the
next run does not know it, and its verdict, when the replayed streams bring it, is
routed away from the conflict counter like any probe's. The first probe of a run waits
one interval, so readers catching up after a restart are not mistaken for misses.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from monitor.aws import AwsCallError, AwsClients
from monitor.canary.lag import RoundTripFloor
from monitor.clock import Clock
from monitor.conflicts import Image, Verdict, canonical_key
from monitor.metrics import Metrics
from monitor.probes.judge import (
    PROBE_MARK,
    RESULTS,
    Outcome,
    ProbeKeyShape,
    ProbeWrite,
    ReaderFacts,
    diagnose_miss,
    judge_probe,
    next_pair,
    probe_key_shape,
)

__all__ = ["ProbeRunner", "ProbeTarget"]

_log = structlog.get_logger("gtmon.probes")

#: Attributes every probe version carries besides PROBE_MARK (and the writer attribute).
WRITTEN_AT = "gtmon_probe_written_at"
EXPIRES_AT = "gtmon_expires_at"
TICK_SECONDS = 0.5  # how often waiting probes are looked at (the detector's own pace)


@dataclass(frozen=True)
class ProbeTarget:
    """A probed table: its regions, its probe key template and its writer attribute."""

    table: str
    regions: tuple[str, ...]
    key_template: Mapping[str, str] | None = None
    writer_attribute: str | None = None


@dataclass
class _Pending:
    probe_id: str
    writes: tuple[ProbeWrite, ProbeWrite]
    written_at: float  # wall
    deadline: float  # wall
    verdicts: list[Verdict] = field(default_factory=list)
    first_verdict_at: float | None = None
    waited_for_link: bool = False  # held by the detector until its regions agree (a paused link)


@dataclass
class _TableState:
    target: ProbeTarget
    shape: ProbeKeyShape | None = None
    turn: int = 0
    pending: dict[Image, _Pending] = field(default_factory=dict)
    results: Counter[str] = field(default_factory=Counter)
    last: dict[str, Any] | None = None
    # Regions whose stream is switched off, as DescribeTable said at `streams_off_at`.
    streams_off: list[str] = field(default_factory=list)
    streams_off_at: float = -math.inf


class ProbeRunner:
    """Writes conflict probes and judges what the detector reports about them."""

    def __init__(
        self,
        targets: Sequence[ProbeTarget],
        *,
        instance_id: str,
        clients: AwsClients,
        metrics: Metrics,
        clock: Clock,
        timeout: Callable[[], float],
        settle_seconds: float,
        ttl_seconds: int,
        clock_error: float,
        region_up: Callable[[], Mapping[str, bool]],
        reader_facts: Callable[[str], Sequence[ReaderFacts]],
        holding: Callable[[str, Image], str | None] | None = None,
        max_wait_seconds: float = 3600.0,
    ) -> None:
        self.instance_id = instance_id
        self._clients = clients
        self._metrics = metrics
        self._clock = clock
        self._timeout = timeout
        self._settle = settle_seconds
        self._ttl = ttl_seconds
        self._clock_error = clock_error
        self._region_up = region_up
        self._reader_facts = reader_facts
        self._holding = holding
        self._max_wait = max_wait_seconds
        self._floors: dict[str, RoundTripFloor] = {}
        self.tables = {t.table: _TableState(t) for t in targets}
        for table in self.tables:
            for result in RESULTS:
                # Present from the start at 0, so increase() sees the first miss.
                metrics.conflict_probes.labels(table, result)
            metrics.conflict_probe_detection.labels(table)

    # ---- writing ----------------------------------------------------------------------------

    async def probe(self, table: str) -> None:
        """Race one probe in `table` (an APScheduler job)."""
        state = self.tables[table]
        if state.shape is None and not await self._learn_shape(state):
            return
        assert state.shape is not None
        pair = next_pair(state.target.regions, self._region_up(), state.turn)
        state.turn += 1
        if pair is None:
            self._record(state, None, Outcome("skipped", "fewer than two regions are up"))
            return
        probe_id = str(int(self._clock.wall() * 1000))
        key = state.shape.key(self.instance_id, probe_id)
        written_at = self._clock.wall()
        results = await asyncio.gather(
            *(self._put(state.target, key, region, written_at) for region in pair),
            return_exceptions=True,
        )
        failed = [f"{r}: {e}" for r, e in zip(pair, results, strict=True) if not isinstance(e, ProbeWrite)]
        if failed:
            for error in results:
                if not isinstance(error, ProbeWrite | AwsCallError):
                    raise error  # a bug, for the caller to count
            self._record(state, pair, Outcome("skipped", "write failed: " + "; ".join(failed)))
            return
        a, b = (w for w in results if isinstance(w, ProbeWrite))
        for write, other in ((a, b), (b, a)):
            if write.replaced is not None:
                # The other write had replicated before this one: no race, no loss.
                self._record(state, pair, Outcome(
                    "skipped",
                    f"not concurrent: the write in {write.region} replaced {other.region}'s",
                ))
                return
        pending = _Pending(probe_id, (a, b), written_at, written_at + self._timeout())
        state.pending[canonical_key(key)] = pending
        _log.info("conflict_probe_written", table=table, probe=probe_id, regions=list(pair),
                  timeout=round(pending.deadline - written_at, 1))

    async def _put(
        self, target: ProbeTarget, key: dict[str, Any], region: str, written_at: float
    ) -> ProbeWrite:
        item = {
            **key,
            PROBE_MARK: {"S": region},
            WRITTEN_AT: {"N": f"{written_at:.3f}"},
            EXPIRES_AT: {"N": str(int(written_at + self._ttl))},
        }
        if target.writer_attribute is not None:
            item[target.writer_attribute] = {"S": region}
        floor = self._floors.setdefault(region, RoundTripFloor())
        sent = self._clock.monotonic()
        answer = await self._clients.call(
            region, "dynamodb", "put_item", TableName=target.table, Item=item,
            ReturnValues="ALL_OLD",
        )
        received = self._clock.monotonic()
        floor.add(received - sent)
        old = (answer.get("Attributes") or {}).get(PROBE_MARK) or {}
        return ProbeWrite(region, sent, received, floor.one_way() or 0.0, old.get("S"))

    async def _learn_shape(self, state: _TableState) -> bool:
        """The table's probe key from its key schema; False (and a skipped result) if none."""
        table = state.target.table
        region = state.target.regions[0]
        try:
            answer = await self._clients.call(region, "dynamodb", "describe_table", TableName=table)
        except AwsCallError as error:
            self._record(state, None, Outcome("skipped", f"describe_table in {region}: {error.code}"))
            return False
        description = answer.get("Table") or {}
        types = {
            str(a["AttributeName"]): str(a["AttributeType"])
            for a in description.get("AttributeDefinitions") or []
        }
        shape = probe_key_shape(description.get("KeySchema") or [], types, state.target.key_template)
        if isinstance(shape, str):
            self._record(state, None, Outcome("skipped", shape))
            return False
        state.shape = shape
        return True

    # ---- verdicts in ------------------------------------------------------------------------

    def on_verdict(self, verdict: Verdict, now: float) -> None:
        """A verdict about a probe item (the watcher routes them here, never to the counter)."""
        state = self.tables.get(verdict.table)
        pending = state.pending.get(verdict.key) if state is not None else None
        if pending is None:
            # Another monitor's probe, one from before a restart, or one already judged.
            _log.info("conflict_probe_verdict_unmatched", table=verdict.table,
                      winner=verdict.winner_region, loser=verdict.loser_region)
            return
        pending.verdicts.append(verdict)
        if pending.first_verdict_at is None:
            pending.first_verdict_at = now

    async def check(self, now: float) -> None:
        """Judge the probes that have verdicts (all of an item's come in one detector poll);
        time out the others past their deadline, saying which regions held them back."""
        for state in self.tables.values():
            for key, pending in list(state.pending.items()):
                if pending.first_verdict_at is not None:
                    took = pending.first_verdict_at - pending.written_at
                    # On time: before the look that would have given it up (looks come every
                    # tick), or whenever its link let it come once it waited for the link.
                    allowed = took if pending.waited_for_link else (
                        pending.deadline + TICK_SECONDS - pending.written_at)
                    outcome = judge_probe(
                        *pending.writes, pending.verdicts, self._clock_error, took, allowed
                    )
                elif now >= pending.deadline:
                    # Asked only when a probe is late, and during a long pause (a probe late
                    # every second) at most once a probe timeout.
                    if now - state.streams_off_at >= self._timeout():
                        state.streams_off = await self._streams_off(state.target)
                        state.streams_off_at = now
                    off = state.streams_off
                    if not off and self._waits_for_link(state, key, pending, now):
                        continue
                    outcome = Outcome("missed", diagnose_miss(
                        self._reader_facts(state.target.table), pending.written_at,
                        self._settle, off,
                    ))
                else:
                    self._see_link_wait(state, key, pending)
                    continue
                if state.pending.pop(key, None) is None:
                    continue  # abandoned at shutdown while the regions were described
                regions = (pending.writes[0].region, pending.writes[1].region)
                self._record(state, regions, outcome, pending.probe_id)

    def _waits_for_link(self, state: _TableState, key: Image, pending: _Pending, now: float) -> bool:
        """At the deadline, a probe whose item the detector still holds because its regions
        do not agree yet (every reader has read past it: a paused link) waits with it, as
        long as the detector would (its verdict comes when the link resumes). Counting it
        missed would page for a pause that the stall alert already reports. (A region
        whose stream was switched off keeps its regions apart as well, for good: the
        caller counts those missed and names the stream.)"""
        if self._holding is None or now - pending.written_at >= self._max_wait:
            return False
        held = self._holding(state.target.table, key)
        if held is None:
            return False
        if held != "regions" and not pending.waited_for_link:
            # Held for its readers or its settle window: waiting for the link only if every
            # reader has read past it (otherwise the miss names the reader that has not).
            needed = pending.written_at + self._settle
            if not all(f.error is None and f.watermark is not None and f.watermark >= needed
                       for f in self._reader_facts(state.target.table)):
                return False
        pending.deadline = now + self._timeout()
        self._waits(state, pending)
        return True

    def _see_link_wait(self, state: _TableState, key: Image, pending: _Pending) -> None:
        """Before its deadline: the detector already holds the item because its regions do
        not agree though every reader has read past it. The probe waits with the link from
        now, so a verdict the resuming link lets out between the deadline and the next look
        is on time (it was counted late, 0.2 s after a 2 s timeout, in the test)."""
        if (not pending.waited_for_link and self._holding is not None
                and self._holding(state.target.table, key) == "regions"):
            self._waits(state, pending)

    @staticmethod
    def _waits(state: _TableState, pending: _Pending) -> None:
        if not pending.waited_for_link:
            pending.waited_for_link = True
            _log.info("conflict_probe_waits_for_link", table=state.target.table,
                      probe=pending.probe_id,
                      reason="every stream was read past it; its regions do not agree yet")

    async def _streams_off(self, target: ProbeTarget) -> list[str]:
        """The regions whose table says its stream is off (a miss is rare: one call each,
        all at once, so a region that does not answer delays the others by one timeout)."""

        async def off(region: str) -> bool:
            try:
                answer = await self._clients.call(
                    region, "dynamodb", "describe_table", TableName=target.table
                )
            except AwsCallError:
                return False  # the reader's own error tells of this region
            spec = (answer.get("Table") or {}).get("StreamSpecification") or {}
            return not spec.get("StreamEnabled", False)

        found = await asyncio.gather(*(off(region) for region in target.regions))
        return [region for region, is_off in zip(target.regions, found, strict=True) if is_off]

    async def run(self) -> None:
        """The supervised loop around `check`."""
        while True:
            await self.check(self._clock.wall())
            await asyncio.sleep(TICK_SECONDS)

    def abandon(self) -> None:
        """At shutdown: probes still waiting get no result (see the module docstring)."""
        for state in self.tables.values():
            if state.pending:
                _log.info("conflict_probes_abandoned", table=state.target.table,
                          probes=len(state.pending))
            state.pending.clear()

    def _record(
        self, state: _TableState, pair: tuple[str, str] | None, outcome: Outcome,
        probe_id: str | None = None,
    ) -> None:
        table = state.target.table
        self._metrics.conflict_probes.labels(table, outcome.result).inc()
        if outcome.detection_seconds is not None:
            self._metrics.conflict_probe_detection.labels(table).observe(outcome.detection_seconds)
        state.results[outcome.result] += 1
        state.last = {
            "result": outcome.result,
            "reason": outcome.reason,
            "regions": list(pair) if pair else None,
            "probe": probe_id,
            "detection_seconds": outcome.detection_seconds,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock.wall())),
        }
        level = _log.info if outcome.result == "detected" else _log.warning
        level("conflict_probe", table=table, **{k: v for k, v in state.last.items() if k != "at"})

    # ---- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """For /api/status: per table, results so far, the last one, probes waiting."""
        return {
            "enabled": True,
            "note": "probe verdicts are reported here, never in gtmon_lww_conflicts_total",
            "tables": {
                name: {
                    "results": {result: state.results[result] for result in RESULTS},
                    "last": state.last,
                    "waiting": len(state.pending),
                    "timeout_seconds": round(self._timeout(), 3),
                }
                for name, state in self.tables.items()
            },
        }
