"""AWS-faithful DynamoDB Streams for the emulator.

moto's streams differ from AWS in ways that matter to a stream reader (one
shard that never closes, iterators that never expire, `awsRegion` always
us-east-1, millisecond creation times, a registry that grows with every call).
This store behaves like the real service instead: one record per applied write,
creation times rounded down to the second, shards that roll over into children
with `ParentShardId`, records trimmed after the retention period, and iterators
that expire. Iterators are self-contained tokens, so nothing is kept per
iterator and memory stays bounded however long the emulator runs.

Each stream keeps the view type it was enabled with, and its records carry only
the images that view type names, as AWS documents: `KEYS_ONLY` none,
`NEW_IMAGE` the item after the write, `OLD_IMAGE` the item before it,
`NEW_AND_OLD_IMAGES` both. Replication does not depend on it: it is fed from the
capture point, not from the stream.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from monitor.emulator.errors import AwsError

__all__ = ["StreamSettings", "StreamStore"]

_SEQ_BASE = 10**20  # AWS sequence numbers are 21+ digit decimal strings
MAX_RECORDS = 1000
MAX_BYTES = 1024 * 1024
# View type -> (carries NewImage, carries OldImage).
_VIEW_TYPES: dict[str, tuple[bool, bool]] = {
    "KEYS_ONLY": (False, False),
    "NEW_IMAGE": (True, False),
    "OLD_IMAGE": (False, True),
    "NEW_AND_OLD_IMAGES": (True, True),
}


@dataclass(frozen=True)
class StreamSettings:
    shard_rollover_seconds: float = 4 * 3600.0
    retention_seconds: float = 24 * 3600.0
    iterator_ttl_seconds: float = 15 * 60.0


@dataclass
class _Record:
    seq: int
    event: str
    keys: dict[str, Any]
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    created_at: float
    event_id: str
    size: int


@dataclass
class _Shard:
    shard_id: str
    parent_id: str | None
    start_seq: int
    opened_at: float
    end_seq: int | None = None  # set when closed: the last sequence number it may hold
    records: deque[_Record] = field(default_factory=deque)
    trimmed_before: int = 0  # sequence numbers below this are gone

    @property
    def closed(self) -> bool:
        return self.end_seq is not None


@dataclass
class _Stream:
    arn: str
    label: str
    region: str
    table_name: str
    key_schema: list[dict[str, str]]
    created_at: float
    view_type: str = "NEW_AND_OLD_IMAGES"
    shards: list[_Shard] = field(default_factory=list)
    next_seq: int = _SEQ_BASE
    enabled: bool = True


def _shard_id(now: float) -> str:
    return f"shardId-{int(now * 1000):020d}-{uuid.uuid4().hex[:8]}"


class StreamStore:
    """Every replica's stream, keyed by stream ARN. Not thread-safe: callers lock."""

    def __init__(self, clock: Callable[[], float], settings: StreamSettings | None = None) -> None:
        self._clock = clock
        self.settings = settings or StreamSettings()
        self._streams: dict[str, _Stream] = {}
        self._latest: dict[tuple[str, str], str] = {}  # (region, table) -> arn

    def reset(self) -> None:
        self._streams.clear()
        self._latest.clear()

    # ---- writes ---------------------------------------------------------------------------

    def open_stream(
        self,
        region: str,
        table_name: str,
        arn: str,
        label: str,
        key_schema: list[dict[str, str]],
        view_type: str = "NEW_AND_OLD_IMAGES",
    ) -> None:
        """A table's stream was switched on (a new label means a new stream).

        moto accepts view types AWS would refuse (`NEW_IMAGES`); such a stream carries keys
        only, as in moto.
        """
        if arn in self._streams:
            self._streams[arn].enabled = True
            return
        previous = self._latest.get((region, table_name))
        if previous is not None:
            self._streams[previous].enabled = False
        now = self._clock()
        stream = _Stream(arn, label, region, table_name, key_schema, now, view_type)
        stream.shards.append(_Shard(_shard_id(now), None, stream.next_seq, now))
        self._streams[arn] = stream
        self._latest[(region, table_name)] = arn

    def close_table(self, region: str, table_name: str) -> None:
        """The table was deleted, or its stream switched off: the stream stops taking
        records but stays readable."""
        arn = self._latest.pop((region, table_name), None)
        if arn is not None:
            self._streams[arn].enabled = False

    def append(
        self,
        region: str,
        table_name: str,
        keys: dict[str, Any],
        old: dict[str, Any] | None,
        new: dict[str, Any] | None,
    ) -> None:
        """Record one applied write with the images the stream's view type names; a write
        that changes nothing leaves no record."""
        if old == new:
            return
        arn = self._latest.get((region, table_name))
        if arn is None:
            return
        stream = self._streams[arn]
        now = self._clock()
        self._maintain(stream, now)
        shard = stream.shards[-1]
        event = "INSERT" if old is None else "REMOVE" if new is None else "MODIFY"
        with_new, with_old = _VIEW_TYPES.get(stream.view_type, (False, False))
        new = new if with_new else None
        old = old if with_old else None
        size = len(json.dumps((keys, old, new), separators=(",", ":"), default=str))
        shard.records.append(_Record(stream.next_seq, event, keys, old, new, now, uuid.uuid4().hex, size))
        stream.next_seq += 1

    # ---- maintenance ----------------------------------------------------------------------

    def _maintain(self, stream: _Stream, now: float) -> None:
        current = stream.shards[-1]
        if stream.enabled and now - current.opened_at >= self.settings.shard_rollover_seconds:
            # An empty shard still owns one sequence number, so that a closed parent's range
            # never overlaps its child's (EndingSequenceNumber < child's StartingSequenceNumber).
            current.end_seq = max(stream.next_seq - 1, current.start_seq)
            stream.next_seq = current.end_seq + 1
            stream.shards.append(_Shard(_shard_id(now), current.shard_id, stream.next_seq, now))
        horizon = now - self.settings.retention_seconds
        for shard in stream.shards:
            while shard.records and shard.records[0].created_at < horizon:
                shard.trimmed_before = shard.records.popleft().seq + 1
        # A closed shard disappears once everything in it is past retention.
        while (
            len(stream.shards) > 1
            and stream.shards[0].closed
            and not stream.shards[0].records
            and stream.shards[1].opened_at < horizon
        ):
            stream.shards.pop(0)

    # ---- the Streams API ------------------------------------------------------------------

    def _stream(self, arn: Any) -> _Stream:
        stream = self._streams.get(arn) if isinstance(arn, str) else None
        if stream is None:
            raise AwsError(
                "ResourceNotFoundException", f"Requested resource not found: Stream: {arn} not found"
            )
        self._maintain(stream, self._clock())
        return stream

    def list_streams(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        table = body.get("TableName")
        limit = int(body.get("Limit", 100))
        start = body.get("ExclusiveStartStreamArn")
        arns = sorted(
            s.arn
            for s in self._streams.values()
            if s.region == region and (table is None or s.table_name == table)
        )
        if start is not None:
            arns = [a for a in arns if a > start]
        page = arns[:limit]
        result: dict[str, Any] = {
            "Streams": [
                {
                    "StreamArn": a,
                    "TableName": self._streams[a].table_name,
                    "StreamLabel": self._streams[a].label,
                }
                for a in page
            ]
        }
        if len(arns) > limit:
            result["LastEvaluatedStreamArn"] = page[-1]
        return result

    def describe_stream(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        stream = self._stream(body.get("StreamArn"))
        limit = int(body.get("Limit", 100))
        start = body.get("ExclusiveStartShardId")
        shards = stream.shards
        if start is not None:
            ids = [s.shard_id for s in shards]
            shards = shards[ids.index(start) + 1 :] if start in ids else []
        page = shards[:limit]
        description: dict[str, Any] = {
            "StreamArn": stream.arn,
            "StreamLabel": stream.label,
            "StreamStatus": "ENABLED" if stream.enabled else "DISABLED",
            "StreamViewType": stream.view_type,
            "CreationRequestDateTime": stream.created_at,
            "TableName": stream.table_name,
            "KeySchema": stream.key_schema,
            "Shards": [self._shard_json(s) for s in page],
        }
        if len(shards) > limit:
            description["LastEvaluatedShardId"] = page[-1].shard_id
        return {"StreamDescription": description}

    @staticmethod
    def _shard_json(shard: _Shard) -> dict[str, Any]:
        numbers = {"StartingSequenceNumber": str(shard.start_seq)}
        if shard.end_seq is not None:
            numbers["EndingSequenceNumber"] = str(max(shard.end_seq, shard.start_seq))
        result: dict[str, Any] = {"ShardId": shard.shard_id, "SequenceNumberRange": numbers}
        if shard.parent_id is not None:
            result["ParentShardId"] = shard.parent_id
        return result

    def _shard(self, stream: _Stream, shard_id: Any) -> _Shard:
        for shard in stream.shards:
            if shard.shard_id == shard_id:
                return shard
        raise AwsError(
            "ResourceNotFoundException", f"Requested resource not found: Shard: {shard_id} not found"
        )

    def get_shard_iterator(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        stream = self._stream(body.get("StreamArn"))
        shard = self._shard(stream, body.get("ShardId"))
        kind = body.get("ShardIteratorType")
        first = max(shard.start_seq, shard.trimmed_before)
        if kind == "TRIM_HORIZON":
            position = first
        elif kind == "LATEST":
            position = shard.end_seq + 1 if shard.end_seq is not None else stream.next_seq
        elif kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            try:
                number = int(body["SequenceNumber"])
            except (KeyError, TypeError, ValueError):
                raise AwsError("ValidationException", f"{kind} requires a valid SequenceNumber") from None
            position = number + (1 if kind == "AFTER_SEQUENCE_NUMBER" else 0)
            if number < shard.start_seq or (shard.end_seq is not None and number > shard.end_seq):
                raise AwsError(
                    "ValidationException",
                    f"Invalid SequenceNumber {number} for shard {shard.shard_id}",
                )
            if position < shard.trimmed_before:
                raise AwsError(
                    "TrimmedDataAccessException",
                    f"Sequence number {number} is beyond the trim horizon of the shard",
                )
        else:
            raise AwsError(
                "ValidationException",
                f"Value '{kind}' at 'shardIteratorType' failed to satisfy constraint: Member must "
                "satisfy enum value set: [AFTER_SEQUENCE_NUMBER, AT_SEQUENCE_NUMBER, LATEST, "
                "TRIM_HORIZON]",
            )
        return {"ShardIterator": self._iterator(stream, shard, position)}

    def _iterator(self, stream: _Stream, shard: _Shard, position: int) -> str:
        token = json.dumps([stream.arn, shard.shard_id, position, round(self._clock(), 3)])
        return base64.urlsafe_b64encode(token.encode()).decode()

    def _parse_iterator(self, token: Any) -> tuple[_Stream, _Shard, int, float]:
        invalid = AwsError("ValidationException", "Invalid ShardIterator")
        if not isinstance(token, str) or not token:
            raise invalid
        try:
            arn, shard_id, position, issued = json.loads(base64.urlsafe_b64decode(token.encode()))
            position, issued = int(position), float(issued)
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
            raise invalid from None
        stream = self._streams.get(arn) if isinstance(arn, str) else None
        if stream is None:
            raise invalid
        self._maintain(stream, self._clock())
        for shard in stream.shards:
            if shard.shard_id == shard_id:
                return stream, shard, position, issued
        raise AwsError("TrimmedDataAccessException", f"Shard {shard_id} is beyond the retention period")

    def get_records(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        stream, shard, position, issued = self._parse_iterator(body.get("ShardIterator"))
        now = self._clock()
        if now - issued > self.settings.iterator_ttl_seconds:
            raise AwsError(
                "ExpiredIteratorException",
                "Iterator expired. The iterator was created at time "
                f"{issued} while right now it is {now} which is further in the future than the "
                f"tolerated delay of {int(self.settings.iterator_ttl_seconds * 1000)} milliseconds.",
            )
        if position < shard.trimmed_before:
            raise AwsError(
                "TrimmedDataAccessException",
                "The operation attempted to read past the oldest stream record in a shard.",
            )
        limit = body.get("Limit", MAX_RECORDS)
        if not isinstance(limit, int) or not 1 <= limit <= MAX_RECORDS:
            raise AwsError(
                "ValidationException",
                f"1 validation error detected: Value '{limit}' at 'limit' failed to satisfy "
                f"constraint: Member must have value between 1 and {MAX_RECORDS}",
            )
        records: list[dict[str, Any]] = []
        size = 0
        next_position = position
        for record in shard.records:
            if record.seq < position:
                continue
            if len(records) >= limit or (records and size + record.size > MAX_BYTES):
                break
            records.append(self._record_json(stream, record))
            size += record.size
            next_position = record.seq + 1
        result: dict[str, Any] = {"Records": records}
        # A closed shard read to its end (nothing left at or after next_position) has no
        # next iterator: the reader moves on to the children.
        exhausted = shard.closed and (not shard.records or shard.records[-1].seq < next_position)
        if not exhausted:
            result["NextShardIterator"] = self._iterator(stream, shard, next_position)
        return result

    @staticmethod
    def _record_json(stream: _Stream, record: _Record) -> dict[str, Any]:
        data: dict[str, Any] = {
            # AWS rounds the creation time down to the second.
            "ApproximateCreationDateTime": math.floor(record.created_at),
            "Keys": record.keys,
            "SequenceNumber": str(record.seq),
            "SizeBytes": record.size,
            "StreamViewType": stream.view_type,
        }
        if record.new is not None:
            data["NewImage"] = record.new
        if record.old is not None:
            data["OldImage"] = record.old
        return {
            "eventID": record.event_id,
            "eventName": record.event,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": stream.region,
            "dynamodb": data,
        }

    def stats(self) -> dict[str, Any]:
        """Sizes, for the control API and the memory-bound tests."""
        return {
            "streams": len(self._streams),
            "shards": sum(len(s.shards) for s in self._streams.values()),
            "records": sum(len(sh.records) for s in self._streams.values() for sh in s.shards),
        }

    def dispatch(self, operation: str, region: str, body: dict[str, Any]) -> dict[str, Any]:
        handlers = {
            "ListStreams": self.list_streams,
            "DescribeStream": self.describe_stream,
            "GetShardIterator": self.get_shard_iterator,
            "GetRecords": self.get_records,
        }
        handler = handlers.get(operation)
        if handler is None:
            raise AwsError("UnknownOperationException", f"Unknown operation {operation}")
        return handler(region, body)
