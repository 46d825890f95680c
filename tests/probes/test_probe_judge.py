"""The conflict probes' pure core: keys, rotation, expected winner, judgement, diagnosis."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from monitor.conflicts import Verdict, canonical_image, canonical_key
from monitor.probes.judge import (
    PROBE_MARK,
    Outcome,
    ProbeKeyShape,
    ProbeWrite,
    ReaderFacts,
    diagnose_miss,
    expected_winner,
    is_probe_verdict,
    judge_probe,
    next_pair,
    probe_key_shape,
)

KEY = {"pk": {"S": "gtmon-probe#a#1"}}
A = ProbeWrite("us-east-1", sent=10.0, received=10.02)
B = ProbeWrite("eu-west-1", sent=10.0, received=10.03)


def image(region: str | None) -> Any:
    return None if region is None else canonical_image({**KEY, PROBE_MARK: {"S": region}})


def verdict(lost_by: str | None, kept_by: str | None, *, loser: str | None = None,
            winner: str | None = None, certain: bool = True) -> Verdict:
    return Verdict(
        table="Orders", key=canonical_key(KEY),
        loser_region=loser or lost_by or "unknown", winner_region=winner or kept_by or "unknown",
        lost_image=image(lost_by), winning_image=image(kept_by),
        lost_is_delete=False, winner_is_delete=False, lost_created_at=10.0,
        winner_created_at=10.0, mode="exact", certain=certain, evidence="",
    )


# ---- keys ------------------------------------------------------------------------------------

def test_default_probe_key_fills_every_string_key_attribute_partition_key_first():
    shape = probe_key_shape(
        [{"AttributeName": "sk", "KeyType": "RANGE"}, {"AttributeName": "pk", "KeyType": "HASH"}],
        {"pk": "S", "sk": "S"}, None,
    )
    assert isinstance(shape, ProbeKeyShape)
    assert shape.key("mon-1", "17") == {
        "pk": {"S": "gtmon-probe#mon-1#17"}, "sk": {"S": "gtmon-probe#mon-1#17"},
    }
    assert [name for name, _ in shape.template] == ["pk", "sk"]


@pytest.mark.parametrize("kind", ["N", "B"])
def test_a_number_or_binary_key_attribute_cannot_hold_a_probe_key(kind):
    reason = probe_key_shape([{"AttributeName": "id", "KeyType": "HASH"}], {"id": kind}, None)
    assert isinstance(reason, str)
    assert "'id' is of type " + kind in reason and "conflicts.probes: false" in reason


def test_a_template_must_name_exactly_the_table_key():
    reason = probe_key_shape(
        [{"AttributeName": "OrderID", "KeyType": "HASH"}], {"OrderID": "S"}, {"pk": "x{instance}{probe}"}
    )
    assert reason == "conflicts.probe_key names ['pk'], but the table's key is ['OrderID']"
    shape = probe_key_shape(
        [{"AttributeName": "OrderID", "KeyType": "HASH"}], {"OrderID": "S"},
        {"OrderID": "__ops__/{instance}/{probe}"},
    )
    assert isinstance(shape, ProbeKeyShape)
    assert shape.key("m", "5") == {"OrderID": {"S": "__ops__/m/5"}}


# ---- rotation --------------------------------------------------------------------------------

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-1"]


def test_rotation_visits_every_pair_in_turn():
    pairs = [next_pair(REGIONS, {}, turn) for turn in range(4)]
    assert pairs == [
        ("us-east-1", "eu-west-1"), ("us-east-1", "ap-southeast-1"),
        ("eu-west-1", "ap-southeast-1"), ("us-east-1", "eu-west-1"),
    ]


def test_a_down_region_leaves_the_rotation():
    up = {"ap-southeast-1": False}
    assert {next_pair(REGIONS, up, turn) for turn in range(5)} == {("us-east-1", "eu-west-1")}
    assert next_pair(REGIONS, {"ap-southeast-1": False, "eu-west-1": False}, 0) is None


# ---- which write must win ----------------------------------------------------------------------

def test_overlapping_round_trips_leave_the_winner_open():
    assert expected_winner(A, B, clock_error=0.005) is None


def test_a_write_accepted_surely_later_must_win():
    near = ProbeWrite("us-east-1", sent=10.0, received=10.004, floor=0.002)
    far = ProbeWrite("ap-southeast-1", sent=10.0, received=10.400, floor=0.190)
    # far was accepted in [10.190, 10.210], near in [10.002, 10.002]
    assert expected_winner(near, far, clock_error=0.005) == "ap-southeast-1"
    assert expected_winner(far, near, clock_error=0.005) == "ap-southeast-1"
    # ...unless the regions' clocks may be off by more than the gap
    assert expected_winner(near, far, clock_error=0.1) is None


# ---- judgement ---------------------------------------------------------------------------------

def test_one_certain_loss_with_the_regions_the_images_prove_is_detected():
    outcome = judge_probe(A, B, [verdict("us-east-1", "eu-west-1")], 0.005, waited=12.5,
                          timeout=20.0)
    assert outcome == Outcome("detected", "us-east-1 lost to eu-west-1", detection_seconds=12.5)


def test_either_labelling_is_accepted_when_the_order_is_unknown():
    outcome = judge_probe(A, B, [verdict("eu-west-1", "us-east-1")], 0.005, waited=1.0,
                          timeout=20.0)
    assert outcome.result == "detected"


@pytest.mark.parametrize(
    ("verdicts", "reason"),
    [
        ([], "0 losses reported, 1 expected"),
        ([verdict("us-east-1", "eu-west-1")] * 2, "2 losses reported, 1 expected"),
        ([verdict("us-east-1", "eu-west-1", loser="eu-west-1", winner="us-east-1")],
         "reported eu-west-1 lost to us-east-1; us-east-1 lost to eu-west-1"),
        ([verdict("us-east-1", "eu-west-1", loser="unknown")],
         "reported unknown lost to eu-west-1; us-east-1 lost to eu-west-1"),
        ([verdict("us-east-1", "eu-west-1", certain=False)],
         "reported as uncertain (exact), so it would not be counted"),
        ([verdict("us-east-1", None)],
         "the reported loss is not between the probe's writes in us-east-1 and eu-west-1"),
    ],
)
def test_anything_but_the_one_proven_loss_is_mislabelled(verdicts, reason):
    assert judge_probe(A, B, verdicts, 0.005, waited=3.0, timeout=20.0) == Outcome("mislabelled", reason)


def test_the_earlier_write_surviving_is_mislabelled_when_the_order_is_known():
    near = ProbeWrite("us-east-1", sent=10.0, received=10.004, floor=0.002)
    far = ProbeWrite("ap-southeast-1", sent=10.0, received=10.400, floor=0.190)
    outcome = judge_probe(near, far, [verdict("ap-southeast-1", "us-east-1")], 0.005,
                          waited=3.0, timeout=20.0)
    assert outcome == Outcome(
        "mislabelled",
        "the write in us-east-1 survived, but the one in ap-southeast-1 was accepted later",
    )


def test_a_verdict_after_the_timeout_is_a_miss():
    outcome = judge_probe(A, B, [verdict("us-east-1", "eu-west-1")], 0.005, waited=12.5,
                          timeout=10.0)
    assert outcome == Outcome("missed", "the verdict came 2.5 s after the 10 s timeout")


def test_only_probe_items_are_routed_away_from_the_conflict_counter():
    assert is_probe_verdict(verdict("us-east-1", "eu-west-1"))
    ordinary = verdict(None, None)
    assert not is_probe_verdict(ordinary)
    # An application item that carries the mark attribute is not a probe: its key is not
    # a probe key, and its lost writes are counted.
    marked = replace(verdict("us-east-1", "eu-west-1"), key=canonical_key({"pk": {"S": "order-7"}}))
    assert not is_probe_verdict(marked)
    # A configured template (conflicts.probe_key) decides the shape.
    custom = replace(verdict("us-east-1", "eu-west-1"),
                     key=canonical_key({"pk": {"S": "probes/a/1"}}))
    assert is_probe_verdict(custom, {"pk": "probes/{instance}/{probe}"})
    assert not is_probe_verdict(custom)
    assert not is_probe_verdict(verdict("us-east-1", "eu-west-1"), {"pk": "probes/{instance}/{probe}"})


# ---- why a probe was missed --------------------------------------------------------------------

def test_a_miss_names_the_regions_whose_streams_held_the_verdict_back():
    facts = [
        ReaderFacts("us-east-1", watermark=130.0, error=None),
        ReaderFacts("eu-west-1", watermark=None,
                    error="describe_table: StreamNotEnabled: table Orders has no stream"),
        ReaderFacts("ap-southeast-1", watermark=105.0, error=None),
    ]
    assert diagnose_miss(facts, written_at=100.0, settle=10.0) == (
        "eu-west-1: stream not read (describe_table: StreamNotEnabled: table Orders has no "
        "stream); ap-southeast-1: stream read only to 5.0 s before the settle horizon"
    )


def test_a_miss_with_every_stream_read_blames_the_detector():
    facts = [ReaderFacts(r, watermark=200.0, error=None) for r in REGIONS]
    assert diagnose_miss(facts, 100.0, 10.0) == (
        "every region's stream was read past the probe; the detector reported no loss"
    )
