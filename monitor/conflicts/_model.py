"""Input and output types of the detector: observations in, verdicts out.

These are plain frozen dataclasses so the stream reader, the tests and the
benchmark can build them without any AWS library, and so the detector never
depends on how records were fetched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from monitor.conflicts._images import Image, canonical_image, canonical_key, string_attribute

EventName = Literal["INSERT", "MODIFY", "REMOVE"]
Mode = Literal["exact", "inferred", "ambiguous"]
#: How a verdict's region was established, weakest evidence needed first: the write
#: carries the writer attribute; the streams' structure admits no other region; stream
#: arrival times rule the others out; that needed the canary's minimum link delays.
KnownBy = Literal["attribute", "structure", "timing", "canary", "unknown"]

#: Region label used when the streams do not determine a region.
UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Observation:
    """One stream record of one region, reduced to what the detector needs.

    ``created_at`` is the record's ApproximateCreationDateTime in epoch seconds,
    rounded down to the whole second as AWS does; it is the time the write was
    applied *in this region* (on AWS's clock). ``observed_after`` and
    ``observed_at`` bound, on the daemon's clock, when the record became visible
    in this region's stream: no earlier than ``observed_after`` (the previous
    poll of the shard had read everything and did not return it) and no later
    than ``observed_at`` (the poll that returned it). They must be true bounds,
    not estimates: the detector uses them as hard constraints (a write's origin
    had it no later than any other region, and a link cannot deliver faster than
    its measured floor), and a verdict the constraints decide is counted. None
    means unbounded on that side. The two clocks are never compared.
    """

    table: str
    region: str
    key: Image
    event: EventName
    old_image: Image | None
    new_image: Image | None
    sequence_number: str
    created_at: float
    observed_at: float | None = None
    observed_after: float | None = None
    size_bytes: int = 0  # the record's SizeBytes (key and images, as DynamoDB counts them)


def _epoch_seconds(value: Any) -> float:
    if isinstance(value, datetime):
        return float(math.floor(value.timestamp()))
    if isinstance(value, int | float | Decimal | str):
        return float(math.floor(float(value)))
    raise ValueError(f"ApproximateCreationDateTime of unexpected type: {value!r}")


# The constants, not the strings each answer's JSON decoding made: one object per record less.
_EVENT_NAMES: dict[str, EventName] = {"INSERT": "INSERT", "MODIFY": "MODIFY", "REMOVE": "REMOVE"}


def from_stream_record(
    table: str,
    region: str,
    record: Mapping[str, Any],
    observed_at: float | None,
    observed_after: float | None = None,
) -> Observation:
    """Build an Observation from a low-level boto3 ``get_records`` record dict.

    Accepts ``ApproximateCreationDateTime`` as the datetime boto3 returns or as
    epoch seconds (Lambda event JSON), and rounds it down to the second so both
    sources agree. Images must be present (stream view type NEW_AND_OLD_IMAGES,
    which global tables require); a missing image is taken as "no item".
    """
    ddb = record["dynamodb"]
    event = _EVENT_NAMES.get(record["eventName"])
    if event is None:
        raise ValueError(f"unknown eventName {record['eventName']!r}")
    old = ddb.get("OldImage")
    new = ddb.get("NewImage")
    return Observation(
        table=table,
        region=region,
        key=canonical_key(ddb["Keys"]),
        event=event,
        old_image=canonical_image(old) if old else None,
        new_image=None if event == "REMOVE" or not new else canonical_image(new),
        sequence_number=str(ddb["SequenceNumber"]),
        created_at=_epoch_seconds(ddb["ApproximateCreationDateTime"]),
        observed_at=observed_at,
        observed_after=observed_after,
        size_bytes=size if isinstance(size := ddb.get("SizeBytes"), int) else 0,
    )


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    """How the detector reads items and how long it waits.

    ``version_attribute`` switches on exact mode: writers increment this number
    attribute (optimistic locking; an absent item counts as version 0, so a
    create or a re-create after a delete writes version 1). ``writer_attribute``
    names an attribute holding the region (or a writer id mapped to a region by
    ``writer_regions``) that wrote the version: it makes attribution exact.
    Without either, origins are inferred from observation times.

    ``writer_attribute_on`` limits the attribute to the items it is true for (None: every
    item): a table without a writer attribute of its own still attributes its conflict
    probes by their mark, and only them, so an application item that carries the mark
    (by chance or on purpose) is inferred like any other instead of being believed.

    ``settle_seconds`` must exceed the worst replication lag you want judged
    correctly: an item is judged only when every region's reader has read past
    its last write plus this margin. ``max_pending_seconds`` bounds how long an
    item whose regions disagree is held (a paused link) before it is judged
    anyway. ``max_tracked_keys``, ``max_records_per_key`` and ``max_buffered_bytes``
    (the estimated memory of the records held, whatever the size of the items a client
    writes) bound memory. ``max_worlds`` bounds the search over origin assignments per segment.
    """

    version_attribute: str | None = None
    writer_attribute: str | None = None
    writer_regions: Mapping[str, str] | None = None
    writer_attribute_on: Callable[[Image], bool] | None = None
    settle_seconds: float = 10.0
    max_pending_seconds: float = 3600.0
    max_tracked_keys: int = 100_000
    max_records_per_key: int = 1_000
    max_buffered_bytes: int = 256 * 2**20
    max_worlds: int = 5_000

    def __post_init__(self) -> None:
        if self.settle_seconds < 0:
            raise ValueError("settle_seconds must be >= 0")
        if self.max_pending_seconds < self.settle_seconds:
            raise ValueError("max_pending_seconds must be >= settle_seconds")
        if self.max_tracked_keys < 1 or self.max_records_per_key < 2 or self.max_worlds < 1:
            raise ValueError(
                "max_tracked_keys, max_records_per_key and max_worlds must be >= 1/2/1"
            )
        if self.max_buffered_bytes < 1:
            raise ValueError("max_buffered_bytes must be >= 1")

    def writer_region(self, image: Image | None, key: Image) -> str | None:
        """The region the writer attribute of ``image`` (a version of the item ``key``)
        names, through ``writer_regions``.

        Only a claim: callers accept it where the named region's stream holds the write.
        """
        if self.writer_attribute is None:
            return None
        if self.writer_attribute_on is not None and not self.writer_attribute_on(key):
            return None
        writer = string_attribute(image, self.writer_attribute)
        if writer is None:
            return None
        return (self.writer_regions or {}).get(writer, writer)

    @property
    def exact(self) -> bool:
        """Exact mode: an attribute makes origins or version levels known."""
        return self.version_attribute is not None or self.writer_attribute is not None


@dataclass(frozen=True, slots=True)
class Verdict:
    """One lost write.

    ``mode`` says how much to trust it: ``exact`` when the streams (with the
    configured attributes) admit only this explanation, ``inferred`` when
    observation times chose between explanations, ``ambiguous`` when they did
    not and the regions that cannot be named are ``"unknown"``. ``certain`` is
    False when some explanation of the same streams has no loss here at all (a
    delete, which carries no attributes, seen through a skip): such verdicts are
    for logs, not for the conflict counter. ``candidates`` lists the writes an
    ambiguous verdict is between. Images are None for deletes (see the
    ``*_is_delete`` flags) and for what is unknown. ``loser_known_by`` and
    ``winner_known_by`` say how each named region was established (``KnownBy``):
    ``exact`` verdicts need no timing, ``inferred`` ones rest on arrival times
    (and the canary's link floors), which the reader guarantees as bounds.
    """

    table: str
    key: Image
    loser_region: str
    winner_region: str
    lost_image: Image | None
    winning_image: Image | None
    lost_is_delete: bool
    winner_is_delete: bool
    lost_created_at: float | None
    winner_created_at: float | None
    mode: Mode
    certain: bool
    evidence: str
    candidates: tuple[Image | None, ...] = field(default=())
    loser_known_by: KnownBy = "unknown"
    winner_known_by: KnownBy = "unknown"
