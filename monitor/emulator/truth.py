"""Ground truth: what really happened to every write, for tests and benchmarks.

The monitor has to infer origins, lag and lost writes from the outside; the
emulator knows them. For every accepted write it keeps the origin region, the
hidden LWW timestamp, the version the origin held when it wrote (its parent),
and per region when it was applied or that it was discarded. A write is *lost*
when it is not an ancestor of the version that finally survives.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GroundTruth", "WriteTruth"]


@dataclass
class WriteTruth:
    write_id: int
    table: str
    key: dict[str, Any]
    key_id: str
    origin: str
    ts: int
    accepted_at: float
    parent_id: int | None
    image: dict[str, Any] | None
    applied: dict[str, float] = field(default_factory=dict)
    discarded: dict[str, float] = field(default_factory=dict)

    @property
    def order(self) -> tuple[int, str]:
        """LWW order: timestamp, ties broken by origin region name."""
        return (self.ts, self.origin)

    def to_json(self) -> dict[str, Any]:
        return {
            "write_id": self.write_id,
            "table": self.table,
            "key": self.key,
            "origin": self.origin,
            "ts": self.ts,
            "accepted_at": self.accepted_at,
            "parent_id": self.parent_id,
            "image": self.image,
            "applied": self.applied,
            "discarded": self.discarded,
        }


@dataclass(frozen=True)
class KeyOutcome:
    survivor: WriteTruth
    lost: list[tuple[WriteTruth, WriteTruth]]  # (lost write, surviving write it lost to)


class GroundTruth:
    """Bounded record of writes (oldest forgotten first). Callers lock."""

    def __init__(self, max_writes: int = 200_000) -> None:
        self.max_writes = max_writes
        self._writes: OrderedDict[int, WriteTruth] = OrderedDict()
        self._next_id = 1

    def record(
        self,
        table: str,
        key: dict[str, Any],
        key_id: str,
        origin: str,
        ts: int,
        accepted_at: float,
        parent_id: int | None,
        image: dict[str, Any] | None,
    ) -> WriteTruth:
        write = WriteTruth(
            self._next_id,
            table,
            key,
            key_id,
            origin,
            ts,
            accepted_at,
            parent_id,
            image,
            applied={origin: accepted_at},
        )
        self._next_id += 1
        self._writes[write.write_id] = write
        while len(self._writes) > self.max_writes:
            self._writes.popitem(last=False)
        return write

    def get(self, write_id: int | None) -> WriteTruth | None:
        return None if write_id is None else self._writes.get(write_id)

    def applied(self, write_id: int, region: str, at: float) -> None:
        write = self._writes.get(write_id)
        if write is not None:
            write.applied[region] = at

    def discarded(self, write_id: int, region: str, at: float) -> None:
        write = self._writes.get(write_id)
        if write is not None:
            write.discarded[region] = at

    def writes(self, table: str | None = None, key_id: str | None = None) -> list[WriteTruth]:
        return [
            w
            for w in self._writes.values()
            if (table is None or w.table == table) and (key_id is None or w.key_id == key_id)
        ]

    def clear(self) -> None:
        self._writes.clear()

    def _ancestors(self, write: WriteTruth) -> list[WriteTruth]:
        chain = [write]
        while (parent := self.get(chain[-1].parent_id)) is not None:
            chain.append(parent)
        return chain

    def outcome(self, table: str, key_id: str) -> KeyOutcome | None:
        """Which write survives for one item, and which writes were lost to whom."""
        writes = self.writes(table, key_id)
        if not writes:
            return None
        survivor = max(writes, key=lambda w: w.order)
        chain = self._ancestors(survivor)
        chain_ids = {w.write_id for w in chain}
        lost = []
        for write in writes:
            if write.write_id in chain_ids:
                continue
            seen = {w.write_id for w in self._ancestors(write)}
            # The surviving write that branched off from what the lost write descends from.
            winner = chain[-1]
            for index, element in enumerate(chain):
                if element.write_id in seen:
                    winner = chain[index - 1] if index > 0 else element
                    break
            lost.append((write, winner))
        return KeyOutcome(survivor, lost)

    def lost_writes(self, table: str | None = None) -> list[tuple[WriteTruth, WriteTruth]]:
        """Every lost write with the surviving write it lost to."""
        keys = {(w.table, w.key_id) for w in self._writes.values() if table in (None, w.table)}
        result = []
        for table_name, key_id in sorted(keys):
            outcome = self.outcome(table_name, key_id)
            if outcome is not None:
                result.extend(outcome.lost)
        return result
