"""Shard lineage: parents before children, whatever order DescribeStream lists them in."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from monitor.streams.lineage import order_shards


def shard(shard_id: str, parent: str | None = None, start: int = 0) -> dict[str, Any]:
    info: dict[str, Any] = {
        "ShardId": shard_id, "SequenceNumberRange": {"StartingSequenceNumber": str(start)},
    }
    if parent is not None:
        info["ParentShardId"] = parent
    return info


def ids(shards: list[Any]) -> list[str]:
    return [s["ShardId"] for s in shards]


def test_chain_listed_backwards_is_read_forwards() -> None:
    listing = [shard("c", "b", 30), shard("b", "a", 20), shard("a", None, 10)]
    assert ids(order_shards(listing)) == ["a", "b", "c"]


def test_parent_trimmed_away_makes_the_child_a_root() -> None:
    listing = [shard("c", "b", 30), shard("b", "gone", 20)]
    assert ids(order_shards(listing)) == ["b", "c"]


def test_split_children_follow_their_parent_in_start_order() -> None:
    listing = [shard("y", "p", 50), shard("x", "p", 40), shard("p", None, 1), shard("q", None, 5)]
    order = ids(order_shards(listing))
    assert order.index("p") < order.index("x") < order.index("y")
    assert sorted(order) == ["p", "q", "x", "y"]


def test_duplicates_and_cycles_still_return_each_shard_once() -> None:
    listing = [shard("a", "b"), shard("b", "a"), shard("a", "b"), shard("c", "c")]
    assert sorted(ids(order_shards(listing))) == ["a", "b", "c"]


@st.composite
def forests(draw: Any) -> list[dict[str, Any]]:
    """Random shard trees (splits and chains), some parents trimmed, listed in random order."""
    count = draw(st.integers(min_value=1, max_value=30))
    shards: list[dict[str, Any]] = []
    for i in range(count):
        parent: str | None = None
        if i and draw(st.booleans()):
            parent = f"s{draw(st.integers(min_value=0, max_value=i - 1)):02d}"
        elif draw(st.booleans()):
            parent = "trimmed-away"
        shards.append(shard(f"s{i:02d}", parent, i * 100))
    return draw(st.permutations(shards))


@given(forests())
def test_every_listed_parent_precedes_its_children(listing: list[dict[str, Any]]) -> None:
    ordered = order_shards(listing)
    assert sorted(ids(ordered)) == sorted(ids(listing))
    position = {s["ShardId"]: i for i, s in enumerate(ordered)}
    for s in ordered:
        parent = s.get("ParentShardId")
        if parent in position:
            assert position[parent] < position[s["ShardId"]]
