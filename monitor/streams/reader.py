"""The stream reader: every record of one replica's stream, in order, exactly once.

One `StreamReader` per (table, region). It finds the replica's stream
(DescribeTable's LatestStreamArn, else ListStreams), lists the shards
(DescribeStream, paged, within AWS's 10 calls/s through a token bucket shared
by the region's readers) and runs one task per shard, as AWS advises for
global tables (at most 2 readers per shard; 1 recommended). A child shard is
started only once its parent has been read to its end (`lineage`), so an
item's writes are delivered in apply order across shard rollovers.

AWS failures never end the reader; each one is handled where it happens:

    ExpiredIteratorException    new iterator AFTER_SEQUENCE_NUMBER the last record read
    TrimmedDataAccessException  records were lost: logged (stream_records_lost), counted,
                                reading restarts at TRIM_HORIZON
    Throttled, RegionUnavailable exponential backoff with cap and jitter, same iterator;
                                 after an outage the reader catches up from where it was
    NotFound, AccessDenied,     reported in `status()` and the log, retried slowly
    stream not enabled
    ValidationException         (invalid iterator or sequence number) new iterator

A bug, or an answer of the wrong shape (`UnexpectedAnswer`: a GetRecords
without ``Records``, a GetShardIterator without ``ShardIterator``, which taken
at face value would end a shard that is still open), ends `run()` with that
exception, whichever shard task met it: the reader runs under a supervisor
(`monitor.supervisor`) that logs and counts it and calls `run()` again. The
reader keeps its shards' positions in memory across such restarts, so it
resumes after the last record it delivered: nothing is lost or delivered twice.
Records the sink cannot take are counted as internal errors
(``component="stream_sink"``) and skipped; records lost to trimming are counted
in ``gtmon_stream_gaps_total``.

Records go to a synchronous sink as `StreamRecord`s with the bounds the
conflict detector needs: when, on the daemon's wall clock, the record became
visible in this region's stream. The detector uses them as hard constraints
(a write's origin had it no later than any other region), so they are true
bounds, not estimates:

- the reader keeps the shortest GetRecords round trip of its last 64 calls
  (all its shards; measured on the monotonic clock) and takes half of it as a
  one-way floor ``f``: no request reaches AWS, and no answer comes back, faster
  than that. This is the assumption the canary makes (`monitor.canary.lag`):
  the fastest path is symmetric, and AWS's own time is small against it. Until
  8 round trips are known, ``f`` is 0, which assumes nothing;
- a poll sent at ``s`` and received at ``r`` was served somewhere in
  ``[s + f, r - f]``. A record it returned was visible by then:
  ``arrived_by = r - f`` (always set);
- if the shard's previous poll, sent at ``s0``, read everything (a partial page:
  whatever was visible when it was served came back), a record it did not return
  became visible after that poll was served: ``arrived_after = s0 + f``. It is
  None whenever that is not known: the shard's first read (from a checkpoint,
  TRIM_HORIZON or LATEST), a previous poll that returned a full page (a
  backlog), a previous poll that failed (throttling, outage, expired iterator,
  any error), and records replayed after a restart. ``fresh`` is True exactly
  when ``arrived_after`` is set;
- ``observed_at`` is the midpoint (s + r) / 2, an estimate for logs only.

Event-loop delays only widen the bounds: ``s`` is read before the request leaves
and ``r`` after the answer is handled. What they rest on: the symmetric fastest
path (where the client's or AWS's own processing is lopsided around the instant
the shard is read, a bound can be off by up to half that difference: tens of
microseconds against the emulator, see tests/streams/test_stream_arrival.py);
and a partial page meaning "nothing more was visible", as the watermark does.
The emulator guarantees the latter; AWS's GetRecords reference only says an
empty answer may come from a part of the shard without records ("it might take
multiple calls to get to a portion of the shard that contains stream records"),
which a reader at the tip of an open shard is not expected to meet.

While a write crosses a table, its readers **burst**: `burst(until)` makes
every shard poll at the floor until then and wakes a shard that sleeps at the
idle ceiling at once (never sooner than the floor after its last poll; a
backoff after an error is not cut short). The watcher calls it for every
reader of a table when any of them delivers a record (`pacing.Burst`).

The reader also keeps a per-region **watermark**: the wall time up to which
everything in this region's stream has been read. It is the minimum, over the
shards still being read, of the send time of the last poll that returned a
partial page; it does not move while a shard has not yet been polled, nor
after a shard closed until a DescribeStream issued later has listed its
children (records may already sit in a child the reader does not know yet).
The watermark never goes back.

The reader also says when its stream cannot serve conflict detection: the detector
rebuilds each item's history from every record's OldImage and NewImage, which
only a `NEW_AND_OLD_IMAGES` stream carries. Any other view type (`KEYS_ONLY`,
`NEW_IMAGE`, `OLD_IMAGE`; a table gtmon watches but that is no global table
yet, say) is logged once as a warning when DescribeStream first shows it
(`stream_lacks_images`), reported in `status()` and exported as
``gtmon_stream_images_missing``; the records are still read and counted.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import structlog

from monitor.aws import (
    AccessDenied,
    AwsCallError,
    AwsClients,
    ExpiredIterator,
    NotFound,
    RegionUnavailable,
    Throttled,
    TrimmedData,
    UnexpectedAnswer,
)
from monitor.clock import Clock
from monitor.config import StreamSettings
from monitor.metrics import Metrics
from monitor.streams.checkpoints import ShardPosition
from monitor.streams.lineage import order_shards, parent_of
from monitor.streams.pacing import AdaptiveInterval, Backoff, Burst, TokenBucket
from monitor.waiting import wait_event

__all__ = [
    "DESCRIBE_STREAM_RATE",
    "ReaderSettings",
    "RecordSink",
    "RoundTripFloor",
    "StreamNotEnabled",
    "StreamReader",
    "StreamRecord",
    "arrival_bounds",
    "describe_stream_bucket",
]

_log = structlog.get_logger("gtmon.streams")

#: AWS's DescribeStream limit, per account and region.
DESCRIBE_STREAM_RATE = 10.0
#: The only view type that carries both images, which conflict detection needs.
BOTH_IMAGES = "NEW_AND_OLD_IMAGES"


def describe_stream_bucket() -> TokenBucket:
    """A bucket for one region's DescribeStream calls, shared by all its readers.

    Kept below the AWS limit (8/s, burst 4) so that another tool of the same
    account calling DescribeStream now and then does not push gtmon into
    throttling.
    """
    return TokenBucket(rate=DESCRIBE_STREAM_RATE * 0.8, burst=4)


@dataclass(frozen=True)
class ReaderSettings:
    """How a reader paces itself. `from_config` maps the operator's settings."""

    poll_interval_min: float = 0.2
    poll_interval_max: float = 1.0
    describe_interval: float = 10.0
    retry_slow_seconds: float = 30.0
    backoff_base: float = 0.2
    backoff_cap: float = 30.0
    initial_position: Literal["TRIM_HORIZON", "LATEST"] = "TRIM_HORIZON"
    get_records_limit: int = 1000
    replay_seconds: float = 0.0
    describe_page_limit: int = 100

    @classmethod
    def from_config(cls, streams: StreamSettings, **overrides: Any) -> ReaderSettings:
        """Reader settings from the config.

        No replay window (`replay_seconds` 0): the watcher keeps every checkpoint before the
        records the detector still holds (`Detector.oldest_held`), which is what a restart
        must read again. A time window on top split judged items: one region's records of
        an item fell after it and were replayed alone, and the detector judged that part
        of a history as a conflict (bench/soak.py: writes counted lost that were not).
        """
        values: dict[str, Any] = {
            "poll_interval_min": streams.poll_interval_min_seconds,
            "poll_interval_max": streams.poll_interval_max_seconds,
        }
        values.update(overrides)
        return cls(**values)


@dataclass
class RoundTripFloor:
    """The shortest recent round trip of one reader, halved: the least a one-way trip takes.

    A window of the last `size` GetRecords calls rather than an all-time minimum,
    so a route that gets slower moves the floor up instead of leaving it too low
    (too low only widens the bounds; too high would break them). `one_way()` is 0
    until `min_samples` round trips are known: assuming nothing is always true.
    """

    size: int = 64
    min_samples: int = 8
    # Processing around the read is not perfectly symmetric (seen: a record visible 24 µs
    # after its latest bound on the emulator); the service's own time inside the call is
    # part of the round trip too. A margin keeps the bounds true.
    margin: float = 0.002
    samples: deque[float] = field(default_factory=deque)

    def add(self, round_trip: float) -> None:
        self.samples.append(max(0.0, round_trip))
        while len(self.samples) > self.size:
            self.samples.popleft()

    def one_way(self) -> float:
        if len(self.samples) < self.min_samples:
            return 0.0
        return max(0.0, min(self.samples) / 2.0 - self.margin)


def arrival_bounds(
    sent: float, received: float, previous_sent: float | None, one_way: float
) -> tuple[float | None, float]:
    """(earliest, latest) time a record returned by the poll (sent, received) became visible.

    `previous_sent` is the send time of the shard's previous poll when that poll
    read everything, else None (no lower bound). `one_way` is the floor of a
    one-way trip; it is capped at half this poll's own round trip, so the bounds
    never cross.
    """
    floor = min(max(0.0, one_way), max(0.0, received - sent) / 2.0)
    latest = received - floor
    earliest = None if previous_sent is None else min(previous_sent + floor, latest)
    return earliest, latest


@dataclass(frozen=True)
class StreamRecord:
    """One stream record as delivered to the sink.

    ``record`` is the low-level boto3 record dict (``eventName``, ``awsRegion``,
    ``dynamodb`` with Keys/OldImage/NewImage/SequenceNumber/
    ApproximateCreationDateTime). ``replayed`` marks records read again after a
    restart (already delivered before it; see `checkpoints`).

    ``arrived_after`` and ``arrived_by`` bound, on the daemon's wall clock, when
    the record became visible in this region's stream (see the module docstring);
    ``arrived_after`` is None when unknown, and ``fresh`` says it is known.
    ``arrived_by`` is set on every record the reader delivers (None only on
    records built by hand). ``observed_at`` is the midpoint of the GetRecords
    call, an estimate for logs, not a bound.
    """

    table: str
    region: str
    shard_id: str
    sequence_number: str
    record: Mapping[str, Any]
    observed_at: float
    fresh: bool
    arrived_after: float | None
    replayed: bool = False
    arrived_by: float | None = None


RecordSink = Callable[[StreamRecord], None]


class StreamNotEnabled(AwsCallError):
    """The table exists but has no stream (global tables need NEW_AND_OLD_IMAGES)."""


@dataclass
class _Shard:
    shard_id: str
    parent_id: str | None
    closed: bool = False
    last_seq: str | None = None  # newest record delivered (or checkpointed) in this shard
    replay_through: int | None = None  # records up to this were delivered before a restart
    finished: bool = False
    caught_up: bool = False  # the last poll read everything (and nothing failed since)
    caught_up_at: float | None = None  # send time of the last poll that read everything
    newest_created: float | None = None
    lag: float = 0.0
    records: int = 0
    task: asyncio.Task[None] | None = None
    # (last sequence of a poll, wall time it was delivered): for settled checkpoints.
    delivered: deque[tuple[str, float]] = field(default_factory=deque)
    settled_seq: str | None = None
    trimmed: int = 0
    start_latest: bool = False  # first read of a shard open at start, initial_position LATEST
    floor: str | None = None  # never deliver at or below this again (restart at TRIM_HORIZON)
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # set when a burst starts


def _member(answer: Any, name: str, kind: type, region: str, operation: str) -> Any:
    """`answer[name]`, checked to be a `kind`; UnexpectedAnswer when it is not."""
    value = answer.get(name) if isinstance(answer, Mapping) else None
    if not isinstance(value, kind):
        got = "missing" if value is None else f"a {type(value).__name__}"
        raise UnexpectedAnswer(region, operation, f"{name} is {got}, not a {kind.__name__}")
    return value


def _created_seconds(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    return None


class StreamReader:
    """Reads one replica's stream into `sink`; `run()` until cancelled.

    `positions` are checkpoints from an earlier run, keyed by shard id. The
    reader never raises out of `run()` for AWS or sink failures: it reports
    them in `status()` and the log and keeps trying.
    """

    def __init__(
        self,
        table: str,
        region: str,
        clients: AwsClients,
        sink: RecordSink,
        *,
        clock: Clock,
        settings: ReaderSettings | None = None,
        metrics: Metrics | None = None,
        describe_bucket: TokenBucket | None = None,
        positions: Mapping[str, ShardPosition] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.table = table
        self.region = region
        self.clients = clients
        self.sink = sink
        self.clock = clock
        self.settings = settings or ReaderSettings()
        self.metrics = metrics
        self._bucket = describe_bucket or describe_stream_bucket()
        self._rng = rng or random.Random()
        self._positions = dict(positions or {})
        self._log = _log.bind(table=table, region=region)
        self.stream_arn: str | None = None
        self._shards: dict[str, _Shard] = {}
        self._listed: set[str] = set()
        self._discover = asyncio.Event()
        self._describe_done_at: float | None = None  # send time of the last full listing
        self._closed_at: float | None = None  # a shard finished; children not listed since
        self._watermark: float | None = None
        self._first_listing = True
        self._round_trips = RoundTripFloor()
        self._burst = Burst()
        self.state = "starting"
        self.last_error: dict[str, Any] | None = None
        # Wall time the current run of failed calls began; None once a call succeeds.
        self.failing_since: float | None = None
        self.started_at = clock.wall()
        self._crash: BaseException | None = None  # a shard task's bug, re-raised by run()
        self.records_total = 0
        self.records_lost_events = 0
        self.sink_errors = 0
        self.view_type: str | None = None  # the stream's StreamViewType, once described
        if metrics is not None:
            # Present from the start at 0, so increase() sees the first gap.
            metrics.stream_gaps.labels(table, region)

    # ---- public ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Find the stream, follow its shards, and read them until cancelled.

        Raises only for a bug or an answer of the wrong shape (here or in a shard
        task); called again after that, it carries on from where it was.
        """
        backoff = self._backoff()
        self._crash = None
        try:
            while True:
                wait = self.settings.describe_interval
                try:
                    if self.stream_arn is None:
                        self.stream_arn = await self._find_stream()
                        self._log.info("stream_found", stream_arn=self.stream_arn)
                    await self._refresh_shards()
                    backoff.reset()
                    self._start_ready_shards()
                    self._succeeded()
                except (Throttled, RegionUnavailable) as exc:
                    self._report(exc, "backing off")
                    wait = backoff.next_delay()
                except (NotFound, AccessDenied, StreamNotEnabled) as exc:
                    self._report(exc, "retrying slowly")
                    if isinstance(exc, NotFound):
                        self.stream_arn = None
                    wait = self.settings.retry_slow_seconds
                except AwsCallError as exc:
                    self._report(exc, "retrying slowly")
                    wait = self.settings.retry_slow_seconds
                await wait_event(self._discover, wait)
                self._discover.clear()
                if self._crash is not None:
                    crash, self._crash = self._crash, None
                    raise crash
        finally:
            await self._stop_shards()

    def burst(self, until: float) -> bool:
        """Poll every shard at the floor until `until` (monotonic seconds); extends a running burst.

        Wakes shards sleeping between polls only when this starts a burst (True);
        a burst already running is just extended (False), which costs nothing.
        """
        if not self._burst.extend(until, self.clock.monotonic()):
            return False
        for shard in self._shards.values():
            shard.wake.set()
        return True

    def bursting(self) -> bool:
        """True while a burst runs."""
        return self._burst.active(self.clock.monotonic())

    def one_way_floor(self) -> float:
        """The current one-way floor ``f`` of the arrival bounds, in seconds."""
        return self._round_trips.one_way()

    def watermark_age(self, now: float) -> float:
        """`now` minus the watermark, or minus the reader's start while it has none."""
        mark = self.watermark()
        return max(0.0, now - (mark if mark is not None else self.started_at))

    def watermark(self) -> float | None:
        """Wall time up to which every record of this region's stream has been read."""
        if self._describe_done_at is None or self._closed_at is not None:
            return self._watermark
        active = [s for s in self._shards.values() if s.shard_id in self._listed and not s.finished]
        if any(s.caught_up_at is None for s in active):
            return self._watermark
        candidate = min((s.caught_up_at for s in active if s.caught_up_at is not None),
                        default=self._describe_done_at)
        if self._watermark is None or candidate > self._watermark:
            self._watermark = candidate
        return self._watermark

    def checkpoint(self, now: float, judged_before: float | None = None) -> dict[str, ShardPosition]:
        """Positions to persist, keyed by shard id: settled up to `now - replay_seconds` and,
        when given, `judged_before` (every record delivered before it has been judged)."""
        cutoff = now - self.settings.replay_seconds
        if judged_before is not None:
            cutoff = min(cutoff, judged_before)
        out: dict[str, ShardPosition] = {}
        for shard in self._shards.values():
            while shard.delivered and shard.delivered[0][1] <= cutoff:
                shard.settled_seq = shard.delivered.popleft()[0]
            finished = shard.finished and not shard.delivered
            out[shard.shard_id] = ShardPosition(shard.settled_seq, shard.last_seq, finished)
        # Shards finished in an earlier run and still listed stay finished.
        for shard_id, pos in self._positions.items():
            if shard_id not in out and (shard_id in self._listed or not self._listed):
                out[shard_id] = pos
        return out

    def status(self) -> dict[str, Any]:
        """For /api/status: shards, lag, records, last error (with AWS code), watermark."""
        listed = [s for s in self._shards.values() if s.shard_id in self._listed]
        return {
            "table": self.table,
            "region": self.region,
            "state": self.state,
            "stream_arn": self.stream_arn,
            "shards": {
                "open": sum(1 for s in listed if not s.closed and not s.finished),
                "closed": sum(1 for s in listed if s.closed and not s.finished),
                "finished": sum(1 for s in listed if s.finished),
                "reading": sum(1 for s in self._shards.values() if s.task and not s.task.done()),
            },
            "lag_seconds": self.lag(),
            "records": self.records_total,
            "records_lost_events": self.records_lost_events,
            "sink_errors": self.sink_errors,
            "watermark": self.watermark(),
            "view_type": self.view_type,
            "images_missing": self.images_missing(),
            "failing_since": self.failing_since,
            "last_error": self.last_error,
        }

    def images_missing(self) -> bool:
        """True when the stream is known not to carry both images (see the module docstring)."""
        return self.view_type is not None and self.view_type != BOTH_IMAGES

    def lag(self) -> float:
        """Seconds behind the newest record read (0 when every shard has caught up)."""
        active = [s for s in self._shards.values() if not s.finished]
        return max((s.lag for s in active), default=0.0)

    # ---- stream and shards ------------------------------------------------------------------

    def _backoff(self) -> Backoff:
        return Backoff(self.settings.backoff_base, self.settings.backoff_cap, self._rng)

    async def _find_stream(self) -> str:
        table = await self.clients.call(
            self.region, "dynamodb", "describe_table", TableName=self.table
        )
        description = _member(table, "Table", dict, self.region, "describe_table")
        arn = description.get("LatestStreamArn")
        spec = description.get("StreamSpecification") or {}
        if arn and spec.get("StreamEnabled", True):
            return str(arn)
        listing = await self.clients.call(
            self.region, "dynamodbstreams", "list_streams", TableName=self.table
        )
        streams = _member({"Streams": [], **listing}, "Streams", list, self.region, "list_streams")
        if streams:
            return str(streams[-1]["StreamArn"])
        raise StreamNotEnabled(
            self.region, "describe_table", "StreamNotEnabled",
            f"table {self.table} has no stream; enable NEW_AND_OLD_IMAGES (global tables do)",
        )

    async def _describe_page(self, start: str | None) -> dict[str, Any]:
        wait = self._bucket.reserve(self.clock.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)
        kwargs: dict[str, Any] = {
            "StreamArn": self.stream_arn, "Limit": self.settings.describe_page_limit,
        }
        if start is not None:
            kwargs["ExclusiveStartShardId"] = start
        result = await self.clients.call(
            self.region, "dynamodbstreams", "describe_stream", **kwargs
        )
        description = _member(result, "StreamDescription", dict, self.region, "describe_stream")
        _member({"Shards": [], **description}, "Shards", list, self.region, "describe_stream")
        return dict(description)

    async def _refresh_shards(self) -> None:
        sent = self.clock.wall()
        listing: list[Mapping[str, Any]] = []
        start: str | None = None
        while True:
            page = await self._describe_page(start)
            listing.extend(page.get("Shards") or [])
            start = page.get("LastEvaluatedShardId")
            if not start:
                break
        self._note_view_type(page.get("StreamViewType"))
        known = {str(s["ShardId"]): s for s in listing}
        for info in order_shards(listing):
            shard_id = str(info["ShardId"])
            shard = self._shards.get(shard_id)
            if shard is None:
                shard = self._new_shard(shard_id, parent_of(info, known))
            shard.closed = "EndingSequenceNumber" in (info.get("SequenceNumberRange") or {})
        self._listed = set(known)
        # Forget shards that left the listing (trimmed) once nothing reads them.
        for shard_id in [s for s in self._shards if s not in known]:
            shard = self._shards[shard_id]
            if shard.task is None or shard.task.done():
                del self._shards[shard_id]
        self._first_listing = False
        self._describe_done_at = sent
        if self._closed_at is not None and sent > self._closed_at:
            self._closed_at = None
        self._set_shard_metrics()

    def _note_view_type(self, view_type: Any) -> None:
        """Warn once per change when the stream lacks an image the detector needs."""
        if not isinstance(view_type, str) or view_type == self.view_type:
            return
        self.view_type = view_type
        if self.images_missing():
            self._log.warning(
                "stream_lacks_images",
                view_type=view_type,
                needed=BOTH_IMAGES,
                consequence="conflict detection needs both images: lost writes in this table "
                "go unseen until the stream is re-enabled with NEW_AND_OLD_IMAGES "
                "(global tables' replicas are)",
            )
        if self.metrics is not None:
            self.metrics.stream_images_missing.labels(self.table, self.region).set(
                1 if self.images_missing() else 0
            )

    def _new_shard(self, shard_id: str, parent_id: str | None) -> _Shard:
        shard = _Shard(shard_id, parent_id)
        position = self._positions.get(shard_id)
        if position is not None:
            shard.last_seq = position.sequence
            shard.settled_seq = position.sequence
            if position.read is not None and position.read != position.sequence:
                shard.replay_through = int(position.read)
            shard.finished = position.finished
        elif self._first_listing and self.settings.initial_position == "LATEST":
            shard.start_latest = True
        self._shards[shard_id] = shard
        return shard

    def _start_ready_shards(self) -> None:
        for shard in self._shards.values():
            if shard.finished or shard.task is not None or shard.shard_id not in self._listed:
                continue
            parent = self._shards.get(shard.parent_id) if shard.parent_id else None
            if parent is not None and parent.shard_id in self._listed and not parent.finished:
                continue  # parent first
            shard.task = asyncio.create_task(
                self._read_shard(shard),
                name=f"gtmon-stream-{self.table}-{self.region}-{shard.shard_id}",
            )
            shard.task.add_done_callback(self._shard_done)

    def _shard_done(self, task: asyncio.Task[None]) -> None:
        """A shard task that raised: `run()` re-raises it, so the supervisor sees it."""
        if task.cancelled() or task.exception() is None:
            return
        if self._crash is None:
            self._crash = task.exception()
        self._discover.set()

    async def _stop_shards(self) -> None:
        tasks = [s.task for s in self._shards.values() if s.task is not None and not s.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        # Ready to be run again: unfinished shards restart from their last record, and
        # whatever arrived meanwhile has no known earliest arrival.
        for shard in self._shards.values():
            if shard.task is not None and not shard.finished:
                shard.task = None
            shard.caught_up = False

    def _set_shard_metrics(self) -> None:
        if self.metrics is None:
            return
        status = self.status()["shards"]
        self.metrics.stream_shards.labels(self.table, self.region, "open").set(status["open"])
        self.metrics.stream_shards.labels(self.table, self.region, "closed").set(status["closed"])

    def _succeeded(self) -> None:
        """A call of this reader was answered: it is reading, whatever failed before."""
        self.state = "reading"
        self.failing_since = None

    def _report(self, exc: AwsCallError, action: str) -> None:
        self.state = "error"
        now = self.clock.wall()
        if self.failing_since is None:
            self.failing_since = now
        self.last_error = {
            "code": exc.code,
            "operation": exc.operation,
            "message": exc.message,
            "at": now,
            # Waiting does not cure it: an operator must create, enable or grant something.
            "persistent": isinstance(exc, NotFound | AccessDenied | StreamNotEnabled),
        }
        self._log.warning(
            "stream_error", code=exc.code, operation=exc.operation, error=exc.message, action=action
        )

    # ---- one shard ----------------------------------------------------------------------------

    async def _iterator(self, shard: _Shard) -> str | None:
        """A fresh iterator for `shard`, or None when the shard is gone."""
        backoff = self._backoff()
        while True:
            kwargs: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": shard.shard_id}
            if shard.last_seq is not None:
                kwargs["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
                kwargs["SequenceNumber"] = shard.last_seq
            elif shard.start_latest:
                kwargs["ShardIteratorType"] = "LATEST"
            else:
                kwargs["ShardIteratorType"] = "TRIM_HORIZON"
            try:
                result = await self.clients.call(
                    self.region, "dynamodbstreams", "get_shard_iterator", **kwargs
                )
                # Never "no iterator, so the shard is done": a shard is gone only when AWS
                # says so (ResourceNotFoundException, below).
                return _member(result, "ShardIterator", str, self.region, "get_shard_iterator")
            except TrimmedData as exc:
                # The checkpointed position is past retention: what lay between is lost.
                self._lost(shard, exc)
                self._restart_at_trim_horizon(shard)
                await asyncio.sleep(backoff.next_delay())
            except NotFound as exc:
                self._report(exc, "shard is gone; its unread records are lost")
                self._lost(shard, exc)
                return None
            except (Throttled, RegionUnavailable) as exc:
                self._report(exc, "backing off")
                await asyncio.sleep(backoff.next_delay())
            except AccessDenied as exc:
                self._report(exc, "retrying slowly")
                await asyncio.sleep(self.settings.retry_slow_seconds)
            except AwsCallError as exc:
                # ValidationException: a checkpointed sequence number this shard does not hold.
                if kwargs["ShardIteratorType"] == "AFTER_SEQUENCE_NUMBER":
                    self._report(exc, "restarting the shard at TRIM_HORIZON")
                    self._restart_at_trim_horizon(shard)
                else:
                    self._report(exc, "retrying slowly")
                    await asyncio.sleep(self.settings.retry_slow_seconds)

    def _restart_at_trim_horizon(self, shard: _Shard) -> None:
        """Read the shard again from its oldest record, skipping what was already delivered."""
        if shard.last_seq is not None:
            shard.floor = shard.last_seq
        shard.last_seq = None
        shard.start_latest = False
        shard.caught_up = False

    def _lost(self, shard: _Shard, exc: AwsCallError) -> None:
        shard.trimmed += 1
        self.records_lost_events += 1
        if self.metrics is not None:
            self.metrics.stream_gaps.labels(self.table, self.region).inc()
        self._log.error(
            "stream_records_lost", shard_id=shard.shard_id, after_sequence=shard.last_seq,
            code=exc.code, error=exc.message,
            reason="records passed the 24 h retention (or the shard was trimmed) before being read",
        )

    async def _read_shard(self, shard: _Shard) -> None:
        """Poll one shard until it is closed and read to its end; never raises but Cancelled."""
        settings = self.settings
        interval = AdaptiveInterval(settings.poll_interval_min, settings.poll_interval_max)
        backoff = self._backoff()
        iterator: str | None = None
        while not shard.finished:
            polled = False
            try:
                if iterator is None:
                    iterator = await self._iterator(shard)
                    if iterator is None:
                        self._finish(shard)
                        break
                delay, iterator = await self._poll(shard, iterator, interval)
                polled = True
                backoff.reset()
            except ExpiredIterator as exc:
                self._log.info(
                    "iterator_expired", shard_id=shard.shard_id, resume_after=shard.last_seq
                )
                self._note(exc)
                iterator, delay = None, 0.0
            except TrimmedData as exc:
                self._lost(shard, exc)
                self._restart_at_trim_horizon(shard)  # the oldest record still kept
                iterator, delay = None, 0.0
            except (Throttled, RegionUnavailable) as exc:
                self._report(exc, "backing off")
                delay = backoff.next_delay()
            except AccessDenied as exc:
                self._report(exc, "retrying slowly")
                delay = self.settings.retry_slow_seconds
            except NotFound as exc:
                self._report(exc, "getting a new iterator")
                iterator, delay = None, backoff.next_delay()
            except AwsCallError as exc:  # ValidationException: a bad iterator
                self._report(exc, "getting a new iterator")
                iterator, delay = None, backoff.next_delay()
            # Anything else (a bug, an answer of the wrong shape) ends this task and, through
            # `_shard_done`, the reader: its supervisor logs, counts and restarts it.
            if not polled:
                # Whatever failed, the next records' earliest arrival is unknown.
                shard.caught_up = False
            if delay > 0:
                if polled:
                    await self._pause(shard, delay)
                else:
                    await asyncio.sleep(delay)
        # Only a finished shard gets here (cancellation propagates). Children already
        # listed start now; a fresh listing (for children not yet listed, and before the
        # watermark may move on) follows at once.
        self._closed_at = self._closed_at or self.clock.wall()
        self._start_ready_shards()
        self._discover.set()

    async def _pause(self, shard: _Shard, delay: float) -> None:
        """Sleep `delay` between polls; a burst that starts meanwhile cuts it short.

        Woken, the shard still waits until the floor has passed since this pause
        began (its last poll's answer), so it never polls faster than the floor.
        """
        started = self.clock.monotonic()
        shard.wake.clear()
        if await wait_event(shard.wake, delay):
            shard.wake.clear()
            rest = min(delay, self.settings.poll_interval_min) - (
                self.clock.monotonic() - started
            )
            if rest > 0:
                await asyncio.sleep(rest)

    def _note(self, exc: AwsCallError) -> None:
        self.last_error = {
            "code": exc.code, "operation": exc.operation, "message": exc.message,
            "at": self.clock.wall(),
        }

    async def _poll(
        self, shard: _Shard, iterator: str, interval: AdaptiveInterval
    ) -> tuple[float, str | None]:
        limit = self.settings.get_records_limit
        sent, sent_mono = self.clock.wall(), self.clock.monotonic()
        result = await self.clients.call(
            self.region, "dynamodbstreams", "get_records", ShardIterator=iterator, Limit=limit
        )
        received, received_mono = self.clock.wall(), self.clock.monotonic()
        records = _member(result, "Records", list, self.region, "get_records")
        for record in records:  # checked before any is delivered: a bad page delivers nothing
            data = record.get("dynamodb") if isinstance(record, dict) else None
            seq = data.get("SequenceNumber") if isinstance(data, dict) else None
            if not isinstance(seq, str) or not seq:
                raise UnexpectedAnswer(self.region, "get_records",
                                       "a record without dynamodb.SequenceNumber")
        next_iterator = result.get("NextShardIterator")
        if next_iterator is not None and not isinstance(next_iterator, str):
            raise UnexpectedAnswer(self.region, "get_records",
                                   f"NextShardIterator is a {type(next_iterator).__name__}")
        self._round_trips.add(received_mono - sent_mono)
        observed = (sent + received) / 2
        self._succeeded()
        fresh = shard.caught_up and shard.caught_up_at is not None
        arrived_after, arrived_by = arrival_bounds(
            sent, received, shard.caught_up_at if fresh else None, self._round_trips.one_way()
        )
        self._deliver(shard, records, observed, arrived_after, arrived_by)
        full_page = len(records) >= limit
        if next_iterator is None:
            self._finish(shard)
            return 0.0, None
        if full_page:
            shard.caught_up = False
            if shard.newest_created is not None:
                shard.lag = max(0.0, received - shard.newest_created)
        else:
            shard.caught_up = True
            shard.caught_up_at = sent
            shard.lag = 0.0
        self._set_lag()
        bursting = self._burst.active(self.clock.monotonic())
        return interval.after_poll(len(records), full_page, bursting), str(next_iterator)

    def _deliver(
        self, shard: _Shard, records: list[dict[str, Any]], observed: float,
        arrived_after: float | None, arrived_by: float,
    ) -> None:
        floors = [int(t) for t in (shard.floor, shard.last_seq) if t and t.isdigit()]
        floor = max(floors) if floors else None
        last_in_poll: str | None = None
        for record in records:
            data = record["dynamodb"]
            seq = str(data["SequenceNumber"])
            number = int(seq) if seq.isdigit() else None
            if floor is not None and number is not None and number <= floor:
                continue  # already delivered (a restart at TRIM_HORIZON): never twice
            replayed = (
                shard.replay_through is not None and number is not None
                and number <= shard.replay_through
            )
            after = None if replayed else arrived_after
            item = StreamRecord(
                self.table, self.region, shard.shard_id, seq, record, observed,
                after is not None, after, replayed, arrived_by,
            )
            try:
                self.sink(item)
            except Exception as exc:  # the detector's problem must not stop reading
                self.sink_errors += 1
                if self.metrics is not None:
                    self.metrics.count_internal_error("stream_sink", exc)
                self._log.exception("stream_sink_failed", shard_id=shard.shard_id, sequence=seq)
                self.last_error = {"code": type(exc).__name__, "operation": "sink",
                                   "message": str(exc), "at": self.clock.wall()}
            shard.last_seq = seq
            last_in_poll = seq
            shard.records += 1
            self.records_total += 1
            created = _created_seconds(data.get("ApproximateCreationDateTime"))
            if created is not None:
                shard.newest_created = created
            if self.metrics is not None:
                self.metrics.stream_records.labels(
                    self.table, self.region, str(record.get("eventName", "UNKNOWN"))
                ).inc()
        if last_in_poll is not None:
            shard.start_latest = False
            shard.delivered.append((last_in_poll, self.clock.wall()))

    def _finish(self, shard: _Shard) -> None:
        shard.finished = True
        shard.lag = 0.0
        self._log.info("shard_finished", shard_id=shard.shard_id, records=shard.records)
        self._set_lag()
        self._set_shard_metrics()

    def _set_lag(self) -> None:
        if self.metrics is not None:
            self.metrics.stream_lag.labels(self.table, self.region).set(self.lag())
