"""Where the stream readers stopped, and which conflicts were already reported.

A restart must neither lose a conflict nor report one twice. Two facts make
that harder than saving "the last sequence number read":

1. The detector holds records in memory until every region has read past
   them (its settle window). Records that were read but not yet judged when
   the daemon stopped are gone with the process; if the checkpoint said "read",
   a conflict spanning the restart would never be reported.
2. Re-reading those records after a restart re-judges them, and a conflict
   that *had* already been reported would be reported again.

So gtmon does both things the issue allows, each covering the other's gap:

- **Checkpoint only settled positions.** Each shard's checkpoint holds two
  numbers: ``sequence``, the newest record delivered before the oldest record
  the detector still holds was observed (`Detector.oldest_held`: an item
  waiting for a region that is behind keeps every region's checkpoint before
  its records), from which a restart resumes (AFTER_SEQUENCE_NUMBER); and
  ``read``, the newest record delivered at all. After a restart the reader
  re-reads the span between them and flags those records as replays (their
  observation times are meaningless now and are not passed on).
- **List the judged records in that span.** Items overlap in time: one judged
  while an older one is still held can have records on both sides of the
  cutoff, and re-read alone, one region's records of it would be judged as a
  history of their own (the soak counted writes lost that were not). So the
  state also keeps, per table and region, the sequence numbers of judged
  records observed after the cutoff (less a margin); re-read, they are
  skipped.
- **Persist fingerprints of reported verdicts** (bounded, with expiry) and
  suppress a verdict whose fingerprint was reported before the restart. A
  fingerprint is the table, item key, lost and winning images, delete flags
  and creation times (never observation times or inferred regions, which can
  differ when records are replayed). Fingerprints loaded at start form a
  *budget*: each suppresses exactly as many verdicts as it was reported
  before, so a genuinely repeated identical conflict after the restart is
  still counted once its replayed twin has been absorbed. They expire after
  24 hours, the stream retention: if a checkpoint is lost or unusable and a
  reader falls back to TRIM_HORIZON, every record it can still re-read is
  younger than that, so nothing already reported comes back.

Stores: a local JSON file (default; replaced atomically so a crash mid-write
leaves the old file) and, as an option, a DynamoDB table shared by nothing
but this monitor instance (items keyed by instance id). Select the DynamoDB
store with ``checkpoint_path: dynamodb://TABLE?region=REGION``.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlparse

import structlog

from monitor.aws import AwsClients

__all__ = [
    "CheckpointError",
    "CheckpointState",
    "CheckpointStore",
    "DynamoDBCheckpointStore",
    "JsonFileCheckpointStore",
    "ReportedConflicts",
    "ShardKey",
    "ShardPosition",
    "open_checkpoint_store",
]

_log = structlog.get_logger("gtmon.streams.checkpoints")

#: (table, region, shard id)
ShardKey = tuple[str, str, str]

FINGERPRINT_TTL_SECONDS = 24 * 3600.0
PENDING_ITEM = "pending"
MAX_PENDING_ITEM_BYTES = 350_000
# Judged records a detector keeps per table (a bound on memory and on the file's size in a
# long stall), and what one DynamoDB item holds (sequence numbers of up to ~30 bytes).
MAX_JUDGED_ITEM = 12_000
MAX_FINGERPRINTS = 100_000


class CheckpointError(Exception):
    """A checkpoint store that cannot be read or written; the message names it."""


@dataclass(frozen=True)
class ShardPosition:
    """One shard's checkpoint.

    ``sequence``: resume after this record (None: from the shard's start).
    ``read``: the newest record delivered before the stop; records up to it
    are replays after a restart. ``finished``: the shard is closed and every
    record in it is settled; it is not read again.
    """

    sequence: str | None = None
    read: str | None = None
    finished: bool = False


@dataclass
class CheckpointState:
    """Everything a store keeps: shard positions, reported-verdict fingerprints, and per
    (table, region) the sequence numbers of records after the positions that were
    already judged (not to be judged again when re-read)."""

    positions: dict[ShardKey, ShardPosition] = field(default_factory=dict)
    reported: dict[str, list[float]] = field(default_factory=dict)
    # Writes at risk (monitor.streams.pending and .atrisk snapshots, JSON as they make it):
    # kept with the positions they belong to, so a restart resumes both from one instant.
    pending: dict[str, Any] = field(default_factory=dict)
    judged: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "positions": [
                {
                    "table": t, "region": r, "shard": s,
                    "sequence": p.sequence, "read": p.read, "finished": p.finished,
                }
                for (t, r, s), p in sorted(self.positions.items())
            ],
            "reported": {fp: list(times) for fp, times in sorted(self.reported.items())},
            **({"pending": self.pending} if self.pending else {}),
            "judged": [
                {"table": t, "region": r, "sequences": list(seqs)}
                for (t, r), seqs in sorted(self.judged.items()) if seqs
            ],
        }

    @classmethod
    def from_json(cls, data: Any, source: str) -> CheckpointState:
        if not isinstance(data, dict) or data.get("version") != 1:
            raise CheckpointError(f"{source}: not a gtmon checkpoint file (version 1)")
        state = cls()
        try:
            for entry in data.get("positions", []):
                key = (str(entry["table"]), str(entry["region"]), str(entry["shard"]))
                state.positions[key] = ShardPosition(
                    _opt_str(entry.get("sequence")), _opt_str(entry.get("read")),
                    bool(entry.get("finished", False)),
                )
            for fp, times in dict(data.get("reported", {})).items():
                state.reported[str(fp)] = [float(t) for t in times]
            state.pending = dict(data.get("pending", {}))
            for entry in data.get("judged", []):
                where = (str(entry["table"]), str(entry["region"]))
                state.judged[where] = [str(s) for s in entry["sequences"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: malformed checkpoint entry: {exc}") from None
        return state


def _seq_order(seq: str) -> tuple[int, str]:
    return (int(seq), "") if seq.isdigit() else (0, seq)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


class CheckpointStore(Protocol):
    """Where checkpoints live. `save` replaces the whole state (stores diff as they like)."""

    async def load(self) -> CheckpointState: ...

    async def save(self, state: CheckpointState) -> None: ...

    def describe(self) -> str: ...


class JsonFileCheckpointStore:
    """A local JSON file, written to a temporary file and renamed over the old one.

    `os.replace` is atomic on POSIX, and the data is fsynced before the rename,
    so a crash leaves either the old or the new checkpoint, never half of one.
    File I/O runs in a thread so a slow disk never stalls the readers' loop.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def describe(self) -> str:
        return f"file {self.path}"

    async def load(self) -> CheckpointState:
        return await asyncio.to_thread(self._load)

    def _load(self) -> CheckpointState:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return CheckpointState()
        except OSError as exc:
            raise CheckpointError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise CheckpointError(f"{self.path}: not valid JSON: {exc}") from None
        return CheckpointState.from_json(data, str(self.path))

    async def save(self, state: CheckpointState) -> None:
        # Compact, so the C encoder writes it in one piece: indented, json falls back to its
        # Python encoder, and during a long pause (the judged list grows with every record
        # past the oldest held one) its thousands of pieces every few seconds left the
        # daemon's RSS megabytes above what it holds (tracemalloc: 1.4 MB, 18,000 objects).
        payload = json.dumps(state.to_json(), separators=(",", ":"), sort_keys=True)
        await asyncio.to_thread(self._write, payload)

    def _write(self, payload: str) -> None:
        directory = self.path.parent if str(self.path.parent) else Path(".")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(payload)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise CheckpointError(f"{self.path}: cannot write: {exc.strerror or exc}") from None


class DynamoDBCheckpointStore:
    """Checkpoints as items of a DynamoDB table (partition key ``pk``, sort key ``sk``, strings).

    For daemons without a persistent disk (containers). One partition per
    monitor instance; positions are ``pos#table#region#shard`` items and
    fingerprints ``fp#...`` items with an ``expires_at`` attribute usable as
    the table's TTL. `save` writes only what changed since the last load or
    save, so a quiet daemon costs almost nothing.
    """

    def __init__(self, clients: AwsClients, region: str, table: str, owner: str) -> None:
        self.clients = clients
        self.region = region
        self.table = table
        self.owner = owner
        self._saved: dict[str, dict[str, Any]] = {}

    def describe(self) -> str:
        return f"dynamodb table {self.table} in {self.region}"

    async def load(self) -> CheckpointState:
        items: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        while True:
            kwargs: dict[str, Any] = {
                "TableName": self.table,
                "KeyConditionExpression": "pk = :pk",
                "ExpressionAttributeValues": {":pk": {"S": self.owner}},
                "ConsistentRead": True,
            }
            if start:
                kwargs["ExclusiveStartKey"] = start
            page = await self.clients.call(self.region, "dynamodb", "query", **kwargs)
            items.extend(page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if not start:
                break
        state = CheckpointState()
        self._saved = {}
        for item in items:
            sk = item["sk"]["S"]
            self._saved[sk] = item
            if sk.startswith("pos#"):
                _, table, region, shard = sk.split("#", 3)
                state.positions[(table, region, shard)] = ShardPosition(
                    item.get("sequence", {}).get("S"), item.get("read", {}).get("S"),
                    bool(item.get("finished", {}).get("BOOL", False)),
                )
            elif sk.startswith("fp#"):
                times = [float(v["N"]) for v in item.get("times", {}).get("L", [])]
                state.reported[sk[3:]] = times
            elif sk == PENDING_ITEM:
                state.pending = json.loads(item["data"]["S"])
            elif sk.startswith("jd#"):
                _, table, region = sk.split("#", 2)
                seqs = item.get("sequences", {}).get("SS", [])
                state.judged[(table, region)] = sorted(seqs, key=_seq_order)
        return state

    def _items(self, state: CheckpointState) -> dict[str, dict[str, Any]]:
        items: dict[str, dict[str, Any]] = {}
        pk = {"S": self.owner}
        for (table, region, shard), pos in state.positions.items():
            sk = f"pos#{table}#{region}#{shard}"
            item: dict[str, Any] = {"pk": pk, "sk": {"S": sk}, "finished": {"BOOL": pos.finished}}
            if pos.sequence is not None:
                item["sequence"] = {"S": pos.sequence}
            if pos.read is not None:
                item["read"] = {"S": pos.read}
            items[sk] = item
        for fp, times in state.reported.items():
            sk = f"fp#{fp}"
            items[sk] = {
                "pk": pk, "sk": {"S": sk},
                "times": {"L": [{"N": repr(t)} for t in times]},
                "expires_at": {"N": str(int(max(times, default=0) + FINGERPRINT_TTL_SECONDS))},
            }
        data = json.dumps(state.pending, sort_keys=True) if state.pending else ""
        if len(data) > MAX_PENDING_ITEM_BYTES:
            # One item holds at most 400 KB (a backlog of some thousands of writes): the
            # positions are saved, the pending writes are not, and the log says so.
            _log.error("pending_writes_not_checkpointed", store=self.describe(), bytes=len(data),
                       consequence="after a restart, pending writes are rebuilt from the "
                       "streams only: writes read before it are not listed")
        elif data:
            items[PENDING_ITEM] = {"pk": pk, "sk": {"S": PENDING_ITEM}, "data": {"S": data}}
        for (table, region), seqs in state.judged.items():
            if seqs:  # a string set cannot be empty
                sk = f"jd#{table}#{region}"
                # An item holds 400 KB: the oldest (re-read first) when there are more.
                kept = sorted(seqs, key=_seq_order)[:MAX_JUDGED_ITEM]
                items[sk] = {"pk": pk, "sk": {"S": sk}, "sequences": {"SS": kept}}
        return items

    async def save(self, state: CheckpointState) -> None:
        wanted = self._items(state)
        requests: list[dict[str, Any]] = [
            {"PutRequest": {"Item": item}}
            for sk, item in wanted.items()
            if self._saved.get(sk) != item
        ]
        requests += [
            {"DeleteRequest": {"Key": {"pk": {"S": self.owner}, "sk": {"S": sk}}}}
            for sk in self._saved if sk not in wanted
        ]
        for i in range(0, len(requests), 25):
            batch = requests[i : i + 25]
            for _ in range(5):
                result = await self.clients.call(
                    self.region, "dynamodb", "batch_write_item", RequestItems={self.table: batch}
                )
                batch = result.get("UnprocessedItems", {}).get(self.table, [])
                if not batch:
                    break
                await asyncio.sleep(0.2)
            else:
                raise CheckpointError(f"{self.describe()}: writes left unprocessed after retries")
        self._saved = wanted


def open_checkpoint_store(path: str, clients: AwsClients | None, owner: str) -> CheckpointStore:
    """The store named by ``streams.checkpoint_path``: a file, or ``dynamodb://TABLE?region=R``."""
    if path.startswith("dynamodb://"):
        parsed = urlparse(path)
        region = parse_qs(parsed.query).get("region", [""])[0]
        if not parsed.netloc or not region:
            raise CheckpointError(
                f"checkpoint_path {path!r}: use dynamodb://TABLE?region=REGION"
            )
        if clients is None:
            raise CheckpointError("a DynamoDB checkpoint store needs AWS clients")
        return DynamoDBCheckpointStore(clients, region, parsed.netloc, owner)
    return JsonFileCheckpointStore(path)


class ReportedConflicts:
    """Fingerprints of reported verdicts: a suppression budget loaded from before a restart.

    `should_report(fp, now)` is False while the fingerprint still has budget
    (it was reported before the restart and this is its replayed twin), and
    True otherwise, in which case the report is remembered. Entries expire after
    `ttl` seconds and at most `max_entries` fingerprints are kept (oldest
    dropped first), so the store stays bounded on an endless stream.
    """

    def __init__(
        self,
        loaded: Mapping[str, list[float]] | None = None,
        ttl: float = FINGERPRINT_TTL_SECONDS,
        max_entries: int = MAX_FINGERPRINTS,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._times: dict[str, list[float]] = {fp: sorted(t) for fp, t in (loaded or {}).items()}
        self._budget: dict[str, int] = {fp: len(t) for fp, t in self._times.items() if t}
        self.suppressed = 0

    def should_report(self, fingerprint: str, now: float) -> bool:
        left = self._budget.get(fingerprint, 0)
        if left > 0:
            self._budget[fingerprint] = left - 1
            self.suppressed += 1
            return False
        self._times.setdefault(fingerprint, []).append(now)
        return True

    def snapshot(self, now: float) -> dict[str, list[float]]:
        """The fingerprints to persist: unexpired, newest `max_entries`."""
        horizon = now - self.ttl
        for fp in list(self._times):
            kept = [t for t in self._times[fp] if t >= horizon]
            if kept:
                self._times[fp] = kept
            else:
                del self._times[fp]
                self._budget.pop(fp, None)
        excess = len(self._times) - self.max_entries
        if excess > 0:
            for fp in sorted(self._times, key=lambda f: self._times[f][-1])[:excess]:
                del self._times[fp]
                self._budget.pop(fp, None)
        return {fp: list(t) for fp, t in self._times.items()}

    def __len__(self) -> int:
        return len(self._times)
