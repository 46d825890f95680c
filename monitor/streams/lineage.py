"""Shard lineage: the order in which a stream's shards must be read.

DynamoDB Streams closes shards and opens children (`ParentShardId`); records
of one item move from the parent to a child, so a reader that reads a child
before its parent's end delivers an item's writes out of order. The rule is
parent before child. Two facts of the real service make this less trivial
than a sort:

- a child's parent may already be trimmed away (shards older than 24 hours
  disappear from DescribeStream while their children remain): such a child is
  a root;
- DescribeStream pages, and a caller may see a child on one page and its
  parent on the next, so ordering must look at the whole listing.

`order_shards` is pure (DescribeStream `Shards` entries in, the same entries
out, parents first) so the reader's correctness does not depend on the order
AWS happens to list them in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["ShardInfo", "order_shards", "parent_of"]

ShardInfo = Mapping[str, Any]


def parent_of(shard: ShardInfo, known: Mapping[str, ShardInfo]) -> str | None:
    """The shard's parent if it is still listed, else None (a root)."""
    parent = shard.get("ParentShardId")
    if isinstance(parent, str) and parent in known and parent != shard.get("ShardId"):
        return parent
    return None


def _start(shard: ShardInfo) -> int:
    text = (shard.get("SequenceNumberRange") or {}).get("StartingSequenceNumber")
    try:
        return int(str(text))
    except (TypeError, ValueError):
        return 0


def order_shards(shards: Iterable[ShardInfo]) -> list[ShardInfo]:
    """Shards ordered so every listed parent comes before its children.

    Among shards that do not depend on each other the order is by starting
    sequence number, then shard id, so the output is deterministic. Duplicate
    shard ids (a shard seen on two pages) keep the first entry. A parent cycle,
    which AWS never produces, is broken rather than looping: every shard is
    returned exactly once.
    """
    known: dict[str, ShardInfo] = {}
    for shard in shards:
        shard_id = shard.get("ShardId")
        if isinstance(shard_id, str) and shard_id not in known:
            known[shard_id] = shard
    children: dict[str, list[str]] = {}
    roots: list[str] = []
    for shard_id, shard in known.items():
        parent = parent_of(shard, known)
        if parent is None:
            roots.append(shard_id)
        else:
            children.setdefault(parent, []).append(shard_id)

    def key(shard_id: str) -> tuple[int, str]:
        return (_start(known[shard_id]), shard_id)

    ordered: list[ShardInfo] = []
    seen: set[str] = set()
    # Depth-first from each root; a sorted frontier keeps siblings in start order.
    pending = sorted(roots, key=key, reverse=True)
    while True:
        while pending:
            shard_id = pending.pop()
            if shard_id in seen:
                continue
            seen.add(shard_id)
            ordered.append(known[shard_id])
            pending.extend(sorted(children.get(shard_id, []), key=key, reverse=True))
        # Anything left sits on a parent cycle: start from its lowest member.
        rest = [s for s in known if s not in seen]
        if not rest:
            return ordered
        pending = [min(rest, key=key)]
