"""Global tables (version 2019.11.21) on top of per-region moto tables.

A write accepted in one region gets a hidden timestamp, lands in that region's
stream, and travels to every other replica over its directed link, in order,
after a delay drawn from the link's distribution. On arrival it is applied only
if it is newer than what the target holds (last writer wins, ties broken by
region name); a losing write is dropped without a stream record. Deletes leave
a tombstone version so an older put cannot bring the item back.
"""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from monitor.emulator import moto_hooks
from monitor.emulator.delays import DelaySpec
from monitor.emulator.errors import AwsError
from monitor.emulator.streams import StreamStore
from monitor.emulator.truth import GroundTruth

__all__ = ["GlobalTables", "Replica"]

GLOBAL_TABLE_VERSION = "2019.11.21"


def key_id(key: dict[str, Any]) -> str:
    """A canonical string for an item key."""
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


@dataclass
class Replica:
    region: str
    created_at: float
    active_at: float

    def status(self, now: float) -> str:
        return "ACTIVE" if now >= self.active_at else "CREATING"


@dataclass(frozen=True)
class _Version:
    ts: int
    origin: str
    write_id: int | None
    deleted: bool

    @property
    def order(self) -> tuple[int, str]:
        return (self.ts, self.origin)


@dataclass
class _Shipment:
    due: float
    write_id: int
    table: str
    key: dict[str, Any]
    image: dict[str, Any] | None
    version: _Version


@dataclass
class _Link:
    delay: DelaySpec
    paused: bool = False
    queue: deque[_Shipment] = field(default_factory=deque)
    last_due: float = 0.0


class GlobalTables:
    """Replica registry, hidden LWW versions and replication links. Callers lock."""

    def __init__(
        self,
        regions: list[str],
        clock: Callable[[], float],
        streams: StreamStore,
        truth: GroundTruth,
        default_delay: DelaySpec,
        activation_seconds: float = 1.0,
        seed: int | None = None,
    ) -> None:
        self.regions = list(regions)
        self._clock = clock
        self._streams = streams
        self.truth = truth
        self.activation_seconds = activation_seconds
        self._rng = random.Random(seed)
        self._replicas: dict[str, dict[str, Replica]] = {}
        self._versions: dict[tuple[str, str, str], _Version] = {}
        self._links = {(a, b): _Link(default_delay) for a in self.regions for b in self.regions if a != b}
        self._last_ts = 0
        self._captured: list[tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]] = []

    # ---- replicas -------------------------------------------------------------------------

    def replicas(self, table: str) -> dict[str, Replica]:
        return self._replicas.get(table, {})

    def describe_replicas(self, table: str, region: str) -> list[dict[str, Any]]:
        now = self._clock()
        return [
            {"RegionName": r.region, "ReplicaStatus": r.status(now)}
            for r in sorted(self.replicas(table).values(), key=lambda r: r.region)
            if r.region != region
        ]

    def update_replicas(self, region: str, table_name: str, updates: Any) -> None:
        """UpdateTable ReplicaUpdates: validate all, then apply Create and Delete."""
        source = moto_hooks.find_table(region, table_name)
        if source is None:
            raise AwsError(
                "ResourceNotFoundException", f"Requested resource not found: Table: {table_name} not found"
            )
        if not isinstance(updates, list) or not updates:
            raise AwsError("ValidationException", "ReplicaUpdates must be a non-empty list")
        plan: list[tuple[str, str]] = []
        for update in updates:
            if (
                not isinstance(update, dict)
                or len(update) != 1
                or next(iter(update)) not in ("Create", "Delete", "Update")
            ):
                raise AwsError(
                    "ValidationException",
                    "Each ReplicaUpdate must contain exactly one of Create, Update or Delete",
                )
            action, spec = next(iter(update.items()))
            target = spec.get("RegionName") if isinstance(spec, dict) else None
            if not isinstance(target, str) or not target:
                raise AwsError("ValidationException", f"ReplicaUpdates {action} needs a RegionName")
            for end in (region, target):
                if end not in self.regions:
                    raise AwsError(
                        "ValidationException",
                        f"Region {end} is not available for global tables: the emulator replicates "
                        f"between {', '.join(self.regions)} (--regions); other regions are standalone",
                    )
            plan.append((action, target))
        members = set(self.replicas(table_name)) or {region}
        for action, target in plan:
            if action == "Create" and target in members:
                raise AwsError(
                    "ValidationException",
                    f"Failed to create a replica of table {table_name} in {target}: "
                    "a replica already exists in that region",
                )
            if action == "Create" and moto_hooks.find_table(target, table_name) is not None:
                raise AwsError(
                    "ValidationException",
                    f"Failed to create a replica of table {table_name} in {target}: "
                    "a table with that name already exists there",
                )
            if action in ("Delete", "Update") and target not in members:
                raise AwsError(
                    "ValidationException",
                    f"Failed to {action.lower()} the replica of table {table_name} in {target}: "
                    "that region is not a replica of the table",
                )
        for action, target in plan:
            if action == "Create":
                self._create_replica(region, table_name, target)
            elif action == "Delete":
                self._delete_replica(table_name, target)

    def _create_replica(self, region: str, table_name: str, target: str) -> None:
        source = moto_hooks.find_table(region, table_name)
        assert source is not None
        now = self._clock()
        registry = self._replicas.setdefault(table_name, {})
        if region not in registry:
            registry[region] = Replica(region, now, now)
            moto_hooks.enable_streams(source)
        replica = moto_hooks.create_replica_table(source, target)
        registry[target] = Replica(target, now, now + self.activation_seconds)
        # Existing items are copied in with their versions; a backfill emits no records.
        for image in moto_hooks.all_items(source):
            key = moto_hooks.key_of(source, image)
            kid = key_id(key)
            with self._silently():
                moto_hooks.apply_image(replica, key, image)
            version = self._versions.get((region, table_name, kid))
            if version is not None:
                self._versions[(target, table_name, kid)] = version

    def _delete_replica(self, table_name: str, target: str) -> None:
        self.forget_replica(table_name, target)
        moto_hooks.delete_table(target, table_name)
        self._streams.close_table(target, table_name)

    def forget_replica(self, table_name: str, region: str) -> None:
        """The table in `region` is gone (DeleteTable or a replica removal)."""
        registry = self._replicas.get(table_name, {})
        registry.pop(region, None)
        if len(registry) <= 1:
            self._replicas.pop(table_name, None)
        for link_key, link in self._links.items():
            if region in link_key:
                link.queue = deque(s for s in link.queue if s.table != table_name)
        for version_key in [k for k in self._versions if k[0] == region and k[1] == table_name]:
            del self._versions[version_key]

    # ---- links ----------------------------------------------------------------------------

    def link(self, source: str, target: str) -> _Link:
        try:
            return self._links[(source, target)]
        except KeyError:
            raise ValueError(f"no link {source} -> {target} (regions: {self.regions})") from None

    def links(self) -> Iterator[tuple[tuple[str, str], _Link]]:
        return iter(self._links.items())

    def set_delay(self, source: str, target: str, delay: DelaySpec) -> None:
        self.link(source, target).delay = delay

    def set_paused(self, source: str, target: str, paused: bool) -> None:
        link = self.link(source, target)
        link.paused = paused
        if not paused:
            # Whatever waited during the pause is due now, still in order.
            now = self._clock()
            for shipment in link.queue:
                shipment.due = min(shipment.due, now)
            link.last_due = min(link.last_due, now)

    def next_due(self) -> float | None:
        dues = [link.queue[0].due for link in self._links.values() if link.queue and not link.paused]
        return min(dues) if dues else None

    def pending(self) -> int:
        return sum(len(link.queue) for link in self._links.values())

    # ---- writes ---------------------------------------------------------------------------

    def capture(
        self, region: str, table: str, old: dict[str, Any] | None, new: dict[str, Any] | None
    ) -> None:
        """Called by moto (through the hook) for every applied change."""
        self._captured.append((region, table, old, new))

    @contextmanager
    def _silently(self) -> Iterator[None]:
        """Apply changes to moto without treating them as writes (replica backfill)."""
        mark = len(self._captured)
        try:
            yield
        finally:
            del self._captured[mark:]

    def begin_request(self) -> None:
        self._captured.clear()

    def abort_request(self) -> None:
        self._captured.clear()

    def commit_request(self) -> None:
        """Turn the changes one request made into writes: stamp, stream, ship."""
        net: dict[tuple[str, str, str], list[Any]] = {}
        for region, table_name, old, new in self._captured:
            image = new if new is not None else old
            table = moto_hooks.find_table(region, table_name)
            if image is None or table is None:
                continue
            key = moto_hooks.key_of(table, image)
            slot = (region, table_name, key_id(key))
            if slot in net:
                net[slot][2] = new  # keep the first old image, the last new one
            else:
                net[slot] = [key, old, new]
        self._captured.clear()
        for (region, table_name, kid), (key, old, new) in net.items():
            if old == new:
                continue  # changes nothing: no record, no replication, no new timestamp
            self._local_write(region, table_name, key, kid, old, new)

    def _next_ts(self, floor: int) -> int:
        now_ns = int(self._clock() * 1e9)
        self._last_ts = max(now_ns, self._last_ts + 1, floor + 1)
        return self._last_ts

    def _local_write(
        self,
        region: str,
        table_name: str,
        key: dict[str, Any],
        kid: str,
        old: dict[str, Any] | None,
        new: dict[str, Any] | None,
    ) -> None:
        current = self._versions.get((region, table_name, kid))
        ts = self._next_ts(current.ts if current else 0)
        now = self._clock()
        write = self.truth.record(
            table_name, key, kid, region, ts, now, current.write_id if current else None, new
        )
        version = _Version(ts, region, write.write_id, new is None)
        self._versions[(region, table_name, kid)] = version
        self._streams.append(region, table_name, key, old, new)
        replicas = self.replicas(table_name)
        if region not in replicas:
            return  # a table of the same name that is no replica (e.g. in a standalone region)
        for target in replicas:
            if target == region:
                continue
            link = self._links[(region, target)]
            due = max(now + link.delay.sample(self._rng), link.last_due)
            link.last_due = due
            link.queue.append(_Shipment(due, write.write_id, table_name, key, new, version))

    def deliver_due(self) -> int:
        """Apply every shipment whose time has come; returns how many were handled."""
        now = self._clock()
        handled = 0
        for (_, target), link in self._links.items():
            while link.queue and not link.paused and link.queue[0].due <= now:
                self._deliver(target, link.queue.popleft())
                handled += 1
        return handled

    def _deliver(self, target: str, shipment: _Shipment) -> None:
        table = moto_hooks.find_table(target, shipment.table)
        if table is None or target not in self.replicas(shipment.table):
            return
        kid = key_id(shipment.key)
        now = self._clock()
        current = self._versions.get((target, shipment.table, kid))
        if current is not None and current.order >= shipment.version.order:
            if shipment.write_id is not None:
                self.truth.discarded(shipment.write_id, target, now)
            return
        self._captured.clear()
        moto_hooks.apply_image(table, shipment.key, shipment.image)
        changes = [c for c in self._captured if c[1] == shipment.table]
        self._captured.clear()
        self._versions[(target, shipment.table, kid)] = shipment.version
        if changes:
            old, new = changes[0][2], changes[-1][3]
            self._streams.append(target, shipment.table, shipment.key, old, new)
        self.truth.applied(shipment.write_id, target, now)

    def reset(self) -> None:
        self._replicas.clear()
        self._versions.clear()
        self._captured.clear()
        for link in self._links.values():
            link.queue.clear()
            link.paused = False
            link.last_due = 0.0

    def to_json(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "tables": {
                name: {r: rep.status(now) for r, rep in sorted(reps.items())}
                for name, reps in sorted(self._replicas.items())
            },
            "links": {
                f"{a}->{b}": {**link.delay.to_json(), "paused": link.paused, "queued": len(link.queue)}
                for (a, b), link in sorted(self._links.items())
            },
        }
