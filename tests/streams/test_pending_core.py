"""The pending-writes core on hand-built records: no sockets, no clock."""

from __future__ import annotations

import json
from itertools import count

import pytest

from monitor.conflicts import DetectorSettings, Observation, canonical_image
from monitor.streams.pending import LinkState, PendingTracker

A, B, C = "us-east-1", "eu-west-1", "ap-southeast-1"
REGIONS = [A, B, C]
_seq = count(1)


def rec(region: str, key: str, new: str | None, old: str | None = None, t: float = 100.0,
        writer: str | None = None) -> Observation:
    """A record of `region`: item `key` from `old` to `new` (None: absent), seen at `t`."""

    def image(status: str | None) -> object:
        if status is None:
            return None
        item = {"OrderID": {"S": key}, "Status": {"S": status}}
        if writer:
            item["UpdatedIn"] = {"S": writer}
        return canonical_image(item)

    return Observation(
        table="Orders", region=region, key=canonical_image({"OrderID": {"S": key}}),
        event="REMOVE" if new is None else ("INSERT" if old is None else "MODIFY"),
        old_image=image(old), new_image=image(new),  # type: ignore[arg-type]
        sequence_number=str(next(_seq)), created_at=float(int(t)), observed_at=t,
        observed_after=t - 0.1,
    )


def tracker(cap: int = 100, **settings: str) -> PendingTracker:
    t = PendingTracker("Orders", REGIONS, DetectorSettings(**settings), cap_per_link=cap)
    for r in REGIONS:
        t.advance_watermark(r, 1000.0)  # every reader current unless a test says otherwise
    return t


def link(t: PendingTracker, source: str, target: str) -> LinkState:
    return next(s for s in t.links() if (s.source, s.target) == (source, target))


def pending(t: PendingTracker) -> dict[tuple[str, str], int]:
    return {(s.source, s.target): s.pending for s in t.links() if s.pending}


def test_a_write_is_pending_on_every_link_from_its_origin_until_each_target_shows_it() -> None:
    t = tracker()
    t.observe(rec(A, "1", "Paid", t=100.4))
    assert pending(t) == {(A, B): 1, (A, C): 1}
    ended = t.observe(rec(B, "1", "Paid", t=101.4))
    assert [(r.source, r.target, r.outcome) for r in ended] == [(A, B, "delivered")]
    assert ended[0].lag == pytest.approx(1.0)
    assert pending(t) == {(A, C): 1}
    t.observe(rec(C, "1", "Paid", t=102.0))
    assert pending(t) == {} and t.tracked() == 0


def test_oldest_age_comes_from_the_creation_second_narrowed_by_the_arrival_bound() -> None:
    t = tracker()
    t.observe(rec(A, "1", "Paid", t=100.4))  # created in second 100, visible by 100.4
    t.observe(rec(A, "2", "Paid", t=103.9))
    assert link(t, A, B).oldest_written_at == pytest.approx(100.2)


def test_a_target_reader_that_is_behind_makes_writes_unconfirmed_not_pending() -> None:
    t = tracker()
    t.watermarks[B] = 50.0  # eu-west-1's reader has not read past the write yet
    t.observe(rec(A, "1", "Paid", t=100.4))
    state = link(t, A, B)
    assert (state.pending, state.unconfirmed, state.oldest_written_at) == (0, 1, None)
    assert t.at_risk(A)[0].missing_in == (C,) and t.at_risk(A)[0].unconfirmed_in == (B,)
    t.advance_watermark(B, 100.5)
    assert (link(t, A, B).pending, link(t, A, B).unconfirmed) == (1, 0)


def test_a_newer_write_of_the_origin_seen_at_the_target_supersedes_the_older_one() -> None:
    t = tracker()
    t.observe(rec(A, "1", "Paid", t=100.0))
    t.observe(rec(A, "1", "Shipped", "Paid", t=100.2))
    assert link(t, A, B).pending == 2
    # eu-west-1 gets only the newer version (its record's old image is what it held: nothing).
    ended = t.observe(rec(B, "1", "Shipped", t=101.0))
    assert sorted(r.outcome for r in ended) == ["delivered", "superseded"]
    assert link(t, A, B).pending == 0 and link(t, A, C).pending == 2


def test_a_write_lost_under_lww_ends_superseded_whichever_region_shows_the_winner_first() -> None:
    t = tracker()
    t.observe(rec(A, "1", "Shipped", t=100.0))  # us-east-1's write, about to lose
    t.observe(rec(B, "1", "Delivered", t=100.5))  # eu-west-1's newer write
    t.observe(rec(C, "1", "Delivered", t=101.0))  # ap-southeast-1: the winner, Shipped discarded
    assert link(t, A, C).pending == 1, "not known yet: us-east-1 has not applied the winner"
    t.observe(rec(A, "1", "Delivered", "Shipped", t=101.2))  # us-east-1 applies the winner
    assert pending(t) == {} and t.tracked() == 0


def test_the_writer_attribute_names_the_origin_once_that_region_shows_the_write() -> None:
    t = tracker(writer_attribute="UpdatedIn")
    t.watermarks[A] = 50.0  # us-east-1's reader is slower: eu-west-1 shows the write first
    t.observe(rec(B, "1", "Paid", t=100.3, writer=A))
    assert pending(t) == {}, "not pending from eu-west-1: it names us-east-1"
    ended = t.observe(rec(A, "1", "Paid", t=100.5, writer=A))
    assert ended == [], "no delivery to the origin, no lag sample"
    assert pending(t) == {(A, C): 1}
    t.observe(rec(C, "1", "Paid", t=101.0, writer=A))
    assert pending(t) == {} and t.tracked() == 0


def test_an_attribute_the_named_region_never_wrote_falls_back_to_the_first_region() -> None:
    t = tracker(writer_attribute="UpdatedIn")
    t.watermarks[A] = 50.0
    t.observe(rec(B, "1", "Paid", t=100.3, writer=A))  # an update that kept an old UpdatedIn
    assert pending(t) == {}
    t.advance_watermark(A, 100.4)  # us-east-1's reader is past 100.3 and never showed it
    assert pending(t) == {(B, A): 1, (B, C): 1}


def test_a_stale_attribute_on_a_write_everyone_already_replaced_leaves_nothing_behind() -> None:
    t = tracker(writer_attribute="UpdatedIn")
    t.observe(rec(B, "1", "Paid", t=100.0))
    for r in (A, C):
        t.observe(rec(r, "1", "Paid", t=100.5))
    # eu-west-1 writes Shipped keeping UpdatedIn=us-east-1; us-east-1's reader is past it.
    t.observe(rec(B, "1", "Shipped", "Paid", t=101.0, writer=A))
    assert pending(t) == {(B, A): 1, (B, C): 1}
    for r in (A, C):
        t.observe(rec(r, "1", "Shipped", "Paid", t=101.5, writer=A))
    assert pending(t) == {} and t.tracked() == 0


def test_without_attribute_a_region_that_certainly_had_the_write_earlier_becomes_its_origin() -> None:
    t = tracker()
    t.observe(rec(A, "1", "Paid", t=100.9))  # us-east-1's reader saw it in (100.8, 100.9]
    assert pending(t) == {(A, B): 1, (A, C): 1}
    t.observe(rec(B, "1", "Paid", t=100.5))  # eu-west-1's stream had it by 100.5: first
    assert pending(t) == {(B, C): 1}
    t.observe(rec(C, "1", "Paid", t=101.5))
    assert pending(t) == {}


def test_a_delete_is_pending_like_any_write() -> None:
    t = tracker()
    for r in REGIONS:
        t.observe(rec(r, "1", "Paid", t=100.0 + REGIONS.index(r) * 0.1))
    t.observe(rec(A, "1", None, "Paid", t=102.0))
    assert pending(t) == {(A, B): 1, (A, C): 1}
    assert t.at_risk(A)[0].deleted
    t.observe(rec(B, "1", None, "Paid", t=103.0))
    t.observe(rec(C, "1", None, "Paid", t=103.0))
    assert pending(t) == {} and t.tracked() == 0


def test_a_record_delivered_twice_counts_once() -> None:
    t = tracker()
    first = rec(A, "1", "Paid", t=100.0)
    t.observe(first)
    t.observe(first)
    assert link(t, A, B).pending == 1 and t.tracked() == 1


def test_beyond_the_cap_the_count_stays_exact_and_the_key_list_is_truncated() -> None:
    t = tracker(cap=2)
    for i in range(5):
        t.observe(rec(A, str(i), "Paid", t=100.0 + i))
    state = link(t, A, B)
    assert (state.pending, state.listed, t.truncated[(A, B)]) == (5, 2, 3)
    keys = [w.key for w in t.at_risk(A)]
    assert keys[:2] == [{"OrderID": {"S": "0"}}, {"OrderID": {"S": "1"}}]
    assert keys[2:] == [None, None, None]
    for i in range(5):  # unlisted writes still end exactly
        t.observe(rec(B, str(i), "Paid", t=110.0 + i))
    assert link(t, A, B).pending == 0 and link(t, A, C).pending == 5


def test_a_snapshot_through_json_restores_counts_list_and_what_ends_them() -> None:
    t = tracker(cap=3)
    for i in range(4):
        t.observe(rec(A, str(i), "Paid", t=100.0 + i))
    t.observe(rec(B, "0", "Paid", t=105.0))
    restored = tracker(cap=3)
    restored.restore(json.loads(json.dumps(t.snapshot())))
    assert restored.links() == t.links()
    assert restored.at_risk(A) == t.at_risk(A)
    assert restored.truncated == t.truncated
    # The restored writes end as the originals would.
    restored.observe(rec(B, "1", "Paid", t=106.0))
    restored.observe(rec(B, "2", "Shipped", "Paid", t=106.5))  # not from us-east-1: still pending
    assert link(restored, A, B).pending == 2
    restored.observe(rec(A, "9", "Paid", t=107.0))  # a new write gets an id of its own
    assert len({w.wid for w in restored.at_risk(A)}) == len(restored.at_risk(A)) == 5


def test_a_binary_key_and_image_come_back_the_same_through_a_snapshot() -> None:
    """Held canonical (the stream's own objects), written as DynamoDB JSON with binary values
    in base64, and read back to the same values: the at-risk list shows the same JSON."""
    key = {"Blob": {"B": b"\x00\xffkey"}}
    image = {**key, "Tags": {"BS": [b"a", b"\x01"]}, "Nested": {"M": {"x": {"L": [{"B": b"z"}]}}}}
    ob = Observation(
        table="Orders", region=A, key=canonical_image(key), event="INSERT", old_image=None,
        new_image=canonical_image(image), sequence_number=str(next(_seq)), created_at=100.0,
        observed_at=100.0, observed_after=99.9,
    )
    t = PendingTracker("Orders", REGIONS, DetectorSettings(), cap_per_link=10, keep_images=True)
    for r in REGIONS:
        t.advance_watermark(r, 1000.0)
    t.observe(ob)
    (before,) = t.at_risk(A)
    assert before.key == {"Blob": {"B": "AP9rZXk="}}
    restored = PendingTracker("Orders", REGIONS, DetectorSettings(), cap_per_link=10,
                              keep_images=True)
    restored.restore(json.loads(json.dumps(t.snapshot())))
    (after,) = restored.at_risk(A)
    assert (after.key, after.image) == (before.key, before.image)
    assert restored.snapshot() == t.snapshot()
