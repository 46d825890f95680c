"""Table-driven detector tests: one row per outcome, streams written by hand.

Versions are written as ``"Shipped"``, ``"Shipped:2"`` (with the version
attribute) or ``"Shipped:2:eu-west-1"`` (version and writer attribute); None is
"no item" (a delete's new image, an insert's old one). Each stream entry is
``(old, new, applied_at)``; observation times equal apply times unless given as
a fourth element (None: read from a backlog, no arrival bounds). A reader polling
every ``POLL`` seconds saw each record arrive within ``POLL`` before its
observation time (the bounds the detector trusts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from monitor.conflicts import (
    Detector,
    DetectorSettings,
    Image,
    Observation,
    Verdict,
    canonical_image,
    judge,
)

US, EU, AP = "us-east-1", "eu-west-1", "ap-southeast-1"
REGIONS = (US, EU, AP)
KEY = canonical_image({"OrderID": {"S": "1"}})
INFERRED = DetectorSettings(settle_seconds=5)
VERSION = DetectorSettings(settle_seconds=5, version_attribute="v")
WRITER = DetectorSettings(settle_seconds=5, version_attribute="v", writer_attribute="w")

Entry = tuple[Any, ...]
POLL = 0.1


def img(spec: str | None) -> Image | None:
    if spec is None:
        return None
    status, *rest = spec.split(":")
    doc: dict[str, dict[str, str]] = {"OrderID": {"S": "1"}, "OrderStatus": {"S": status}}
    if rest:
        doc["v"] = {"N": rest[0]}
    if len(rest) > 1:
        doc["w"] = {"S": rest[1]}
    return canonical_image(doc)


def observations(streams: dict[str, Sequence[Entry]], key: Image = KEY) -> list[Observation]:
    out = []
    for region, entries in streams.items():
        for i, entry in enumerate(entries):
            old, new, t = entry[:3]
            seen = entry[3] if len(entry) > 3 else t
            event = "INSERT" if old is None else ("REMOVE" if new is None else "MODIFY")
            out.append(
                Observation(
                    "Orders",
                    region,
                    key,
                    event,
                    img(old),
                    img(new),
                    str(i + 1),
                    float(int(t)),
                    seen,
                    None if seen is None else seen - POLL,
                )
            )
    return out


def untimed(streams: dict[str, Sequence[Entry]]) -> dict[str, list[Entry]]:
    """The same streams read from a backlog: no arrival bounds, creation seconds only."""
    return {r: [(*e[:3], None) for e in es] for r, es in streams.items()}


def by_region(streams: dict[str, Sequence[Entry]]) -> dict[str, list[Observation]]:
    obs = observations(streams)
    return {r: [o for o in obs if o.region == r] for r in streams}


def status(image: Image | None, deleted: bool) -> str | None:
    if deleted:
        return "DELETE"
    if image is None:
        return None
    return str(dict(image)["OrderStatus"][1])


def summary(verdicts: Sequence[Verdict]) -> list[tuple[Any, ...]]:
    return sorted(
        (
            v.loser_region,
            status(v.lost_image, v.lost_is_delete),
            v.winner_region,
            status(v.winning_image, v.winner_is_delete),
            v.mode,
        )
        for v in verdicts
    )


SEED = {  # links paused; Shipped in us-east-1, Delivered (newer) in eu-west-1; links resumed
    US: [("Pending", "Shipped", 100), ("Shipped", "Delivered", 131, 131.3)],
    EU: [("Pending", "Delivered", 130, 130.1)],
    AP: [("Pending", "Shipped", 101, 101.2), ("Shipped", "Delivered", 131, 131.2)],
}


def versioned(streams: dict[str, Sequence[Entry]], specs: dict[str, str]) -> dict[str, list[Entry]]:
    """Replace statuses by full specs (adds version and writer) in every entry."""
    return {
        r: [(specs.get(e[0], e[0]), specs.get(e[1], e[1]), *e[2:]) for e in es]
        for r, es in streams.items()
    }


SEED_W = versioned(
    SEED,
    {
        "Pending": "Pending:1:us-east-1",
        "Shipped": "Shipped:2:us-east-1",
        "Delivered": "Delivered:2:eu-west-1",
    },
)
SEED_V = versioned(
    SEED, {"Pending": "Pending:1", "Shipped": "Shipped:2", "Delivered": "Delivered:2"}
)

# A->C slow, A->B->C fast: eu-west-1 saw Shipped and wrote Delivered over it;
# ap-southeast-1 got Delivered before Shipped (which then lost LWW there: no record).
SKIP = {
    US: [("Pending", "Shipped", 100), ("Shipped", "Delivered", 103, 103.2)],
    EU: [("Pending", "Shipped", 101, 101.1), ("Shipped", "Delivered", 102, 102.05)],
    AP: [("Pending", "Delivered", 103, 103.1)],
}
SKIP_W = versioned(
    SKIP,
    {
        "Pending": "Pending:1:us-east-1",
        "Shipped": "Shipped:2:us-east-1",
        "Delivered": "Delivered:3:eu-west-1",
    },
)
SKIP_V = versioned(
    SKIP, {"Pending": "Pending:1", "Shipped": "Shipped:2", "Delivered": "Delivered:3"}
)

SKIP_VIA_AP = {  # Delivered written in ap after it saw Shipped: first seen in ap, then eu, us
    US: [("Pending", "Shipped", 100), ("Shipped", "Delivered", 102, 102.3)],
    EU: [("Pending", "Delivered", 101, 101.25)],
    AP: [("Pending", "Shipped", 100, 100.2), ("Shipped", "Delivered", 101, 101.05)],
}

SEQUENTIAL = {  # Shipped replicated everywhere, then Delivered written in eu-west-1
    US: [("Pending", "Shipped", 100), ("Shipped", "Delivered", 111)],
    EU: [("Pending", "Shipped", 101), ("Shipped", "Delivered", 110)],
    AP: [("Pending", "Shipped", 101), ("Shipped", "Delivered", 111)],
}

IDENTICAL = {  # two regions write byte-identical images concurrently
    US: [("Pending", "Shipped", 100)],
    EU: [("Pending", "Shipped", 100, 100.3)],
    AP: [("Pending", "Shipped", 101)],
}

DELETE_LOSES = {  # us-east-1 deletes, eu-west-1's newer update wins and resurrects the item
    US: [("Pending", None, 100), (None, "Packed", 102)],
    EU: [("Pending", "Packed", 101)],
    AP: [("Pending", "Packed", 102)],
}

# us-east-1 updates, eu-west-1's newer delete wins -- or us-east-1 deleted its own update
# (its REMOVE record) while eu-west-1's older delete was lost: the same records, no loss.
UPDATE_LOSES = {
    US: [("Pending", "Shipped", 100), ("Shipped", None, 102)],
    EU: [("Pending", None, 101)],
    AP: [("Pending", None, 102)],
}

THREE_WAY = {  # a, b, c written concurrently from Pending in us, eu, ap; c is newest
    US: [
        ("Pending:1:us-east-1", "A:2:us-east-1", 100),
        ("A:2:us-east-1", "B:2:eu-west-1", 102),
        ("B:2:eu-west-1", "C:2:ap-southeast-1", 103),
    ],
    EU: [
        ("Pending:1:us-east-1", "B:2:eu-west-1", 101),
        ("B:2:eu-west-1", "C:2:ap-southeast-1", 103),
    ],
    AP: [("Pending:1:us-east-1", "C:2:ap-southeast-1", 102)],
}

REPEATED = {  # the seed, then a second conflict on the same item: eu's X loses to ap's Y
    US: SEED[US] + [("Delivered", "X", 200, 200.4), ("X", "Y", 203)],
    EU: SEED[EU] + [("Delivered", "X", 200), ("X", "Y", 203, 203.3)],
    AP: SEED[AP] + [("Delivered", "Y", 202)],
}

CASES = [
    # name, settings, streams, expected summary
    ("seed_conflict_inferred", INFERRED, SEED, [(US, "Shipped", EU, "Delivered", "inferred")]),
    ("seed_conflict_writer_attribute", WRITER, SEED_W, [(US, "Shipped", EU, "Delivered", "exact")]),
    # Version alone: the levels prove the loss; arrival times name the regions.
    (
        "seed_conflict_version_only",
        VERSION,
        SEED_V,
        [(US, "Shipped", EU, "Delivered", "inferred")],
    ),
    # Read from a backlog, Shipped may have been written in us or ap (both show it in the
    # same second): the loser region is not named, the winner (a version-2 sibling) is.
    (
        "seed_conflict_version_only_without_arrival_times",
        VERSION,
        untimed(SEED_V),
        [("unknown", "Shipped", EU, "Delivered", "ambiguous")],
    ),
    # The writer attribute on the seed's writes but not on the hand-made winner: its
    # origin comes from the rest of the evidence in the same judgement (here its level).
    (
        "seed_conflict_winner_without_writer_attribute",
        WRITER,
        versioned(
            SEED,
            {
                "Pending": "Pending:1:us-east-1",
                "Shipped": "Shipped:2:us-east-1",
                "Delivered": "Delivered:2",
            },
        ),
        [(US, "Shipped", EU, "Delivered", "exact")],
    ),
    (
        "seed_conflict_writer_attribute_on_no_write",
        WRITER,
        SEED,
        [(US, "Shipped", EU, "Delivered", "inferred")],
    ),
    ("sequential_through_normal_lag", INFERRED, SEQUENTIAL, []),
    (
        "sequential_writer_attribute",
        WRITER,
        versioned(
            SEQUENTIAL,
            {
                "Pending": "Pending:1:us-east-1",
                "Shipped": "Shipped:2:us-east-1",
                "Delivered": "Delivered:3:eu-west-1",
            },
        ),
        [],
    ),
    ("byte_identical_concurrent_images_not_reported", INFERRED, IDENTICAL, []),
    ("skip_a_to_c_slow_is_no_conflict_inferred", INFERRED, SKIP, []),
    ("skip_a_to_c_slow_is_no_conflict_writer", WRITER, SKIP_W, []),
    ("skip_a_to_c_slow_is_no_conflict_version", VERSION, SKIP_V, []),
    ("delete_loses_to_update", INFERRED, DELETE_LOSES, [(US, "DELETE", EU, "Packed", "inferred")]),
    (
        "three_way_writer",
        WRITER,
        THREE_WAY,
        [(EU, "B", AP, "C", "exact"), (US, "A", AP, "C", "exact")],
    ),
    (
        "three_way_version_levels_name_everyone",
        DetectorSettings(settle_seconds=5, version_attribute="v"),
        THREE_WAY,
        [(EU, "B", AP, "C", "exact"), (US, "A", AP, "C", "exact")],
    ),
    (
        "repeated_conflicts_on_one_item",
        INFERRED,
        REPEATED,
        [(EU, "X", AP, "Y", "inferred"), (US, "Shipped", EU, "Delivered", "inferred")],
    ),
]


@pytest.mark.parametrize(
    ("settings", "streams", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_judge(
    settings: DetectorSettings, streams: dict[str, Sequence[Entry]], expected: list[Any]
) -> None:
    verdicts = judge("Orders", KEY, by_region(streams), settings).verdicts
    assert summary(verdicts) == expected
    for v in verdicts:
        assert v.certain and v.evidence and v.table == "Orders" and v.key == KEY


@pytest.mark.parametrize(
    ("settings", "streams"),
    [(INFERRED, UPDATE_LOSES), (VERSION, UPDATE_LOSES), (VERSION, untimed(UPDATE_LOSES))],
    ids=["inferred", "version", "version_without_arrival_times"],
)
def test_update_lost_to_a_delete_that_its_own_region_may_have_written_is_not_counted(
    settings: DetectorSettings, streams: dict[str, Sequence[Entry]]
) -> None:
    """us's Shipped -> None may be eu's delete replicated (Shipped lost) or us's own delete
    of Shipped (eu's older delete then reached us, ap took eu's before Shipped: nothing
    visible lost). Logged with Shipped as the candidate, never counted."""
    (v,) = judge("Orders", KEY, by_region(streams), settings).verdicts
    assert not v.certain and v.mode == "ambiguous"
    assert (v.loser_region, v.winner_region) == ("unknown", "unknown")
    assert v.candidates == (img("Shipped"),)
    assert "one delete or several" in v.evidence


def test_seed_verdict_fields_and_evidence() -> None:
    (v,) = judge("Orders", KEY, by_region(SEED_W), WRITER).verdicts
    assert v.lost_image == img("Shipped:2:us-east-1")
    assert v.winning_image == img("Delivered:2:eu-west-1")
    assert (v.lost_created_at, v.winner_created_at) == (100.0, 130.0)
    assert "us-east-1 wrote" in v.evidence and "eu-west-1 wrote" in v.evidence


def test_skip_and_conflict_have_the_same_streams_only_origin_separates_them() -> None:
    """The conflict (Delivered written in eu) and the skip (written in ap after it saw
    Shipped; eu got it before Shipped) produce the same edges in every region. Without
    attributes only observation order tells them apart; with a version they differ."""
    conflict = {
        US: [("Pending", "Shipped", 100), ("Shipped", "Delivered", 102, 102.3)],
        EU: [("Pending", "Delivered", 101, 101.05)],
        AP: [("Pending", "Shipped", 100, 100.2), ("Shipped", "Delivered", 102, 102.2)],
    }
    skip = SKIP_VIA_AP
    edges = {r: [(e[0], e[1]) for e in es] for r, es in conflict.items()}
    assert edges == {r: [(e[0], e[1]) for e in es] for r, es in skip.items()}
    assert summary(judge("Orders", KEY, by_region(conflict), INFERRED).verdicts) == [
        (US, "Shipped", EU, "Delivered", "inferred")
    ]
    assert judge("Orders", KEY, by_region(skip), INFERRED).verdicts == []
    # Without arrival times, the analysis knows both explanations exist.
    outcomes = judge("Orders", KEY, by_region(untimed(skip)), INFERRED).outcomes
    assert len(outcomes) == 1 and frozenset() in outcomes[0] and len(outcomes[0]) > 1
    levels = {"Pending": "Pending:1", "Shipped": "Shipped:2"}
    assert summary(
        judge(
            "Orders",
            KEY,
            by_region(versioned(conflict, {**levels, "Delivered": "Delivered:2"})),
            VERSION,
        ).verdicts
    ) == [(US, "Shipped", EU, "Delivered", "inferred")]
    assert (
        judge(
            "Orders",
            KEY,
            by_region(versioned(skip, {**levels, "Delivered": "Delivered:3"})),
            VERSION,
        ).verdicts
        == []
    )


def _ob(region: str, old: str | None, new: str | None, seq: int, after: float, at: float) -> Observation:
    event = "INSERT" if old is None else ("REMOVE" if new is None else "MODIFY")
    return Observation(
        "Orders", region, KEY, event, img(old), img(new), str(seq), float(int(at)), at, after
    )


# Everyday concurrency: us writes A, eu writes B 150 ms later; links take ~0.6 s. eu's
# reader was idle, so B's arrival there is known only within (100.1, 100.8].
EVERYDAY = {
    US: [_ob(US, "P", "A", 1, 99.9, 100.0), _ob(US, "A", "B", 2, 100.7, 100.9)],
    EU: [_ob(EU, "P", "B", 1, 100.1, 100.8)],
    AP: [_ob(AP, "P", "A", 1, 100.55, 100.65), _ob(AP, "A", "B", 2, 100.7, 100.8)],
}


@pytest.mark.parametrize(
    ("streams", "settings", "floors", "expected"),
    [
        (by_region(SEED_W), WRITER, None, ("attribute", "attribute", "exact")),
        (by_region(SEED), INFERRED, None, ("timing", "timing", "inferred")),
        (
            by_region(versioned(SEED, {"Shipped": "Shipped:2:us-east-1"})),
            WRITER,
            None,
            ("attribute", "timing", "inferred"),
        ),
        # Arrival times alone allow ap to have written B after seeing A (a skip): B's
        # arrival in eu may be as late as ap's. The canary's floor on ap->eu rules it out.
        (EVERYDAY, INFERRED, None, None),
        (EVERYDAY, INFERRED, {(AP, EU): 0.3}, ("canary", "canary", "inferred")),
    ],
    ids=["attribute", "timing", "mixed", "everyday_no_floors", "everyday_canary_floor"],
)
def test_verdict_says_how_each_region_was_known(
    streams: dict[str, list[Observation]],
    settings: DetectorSettings,
    floors: dict[tuple[str, str], float] | None,
    expected: tuple[str, str, str] | None,
) -> None:
    verdicts = judge("Orders", KEY, streams, settings, floors).verdicts
    if expected is None:  # the loss is not proven: logged with candidates, never counted
        assert [v.certain for v in verdicts] == [False]
        return
    (v,) = verdicts
    assert (v.loser_region, v.winner_region, v.certain) == (US, EU, True)
    assert (v.loser_known_by, v.winner_known_by, v.mode) == expected


def test_a_link_faster_than_its_floor_falls_back_to_arrival_times() -> None:
    """Floors that no history fits (the link got faster than the canary measured) are
    set aside: the item is judged on arrival times alone, and the detector counts it."""
    det = Detector({"Orders": REGIONS}, INFERRED)
    det.set_link_floors({(EU, US): 5.0, (EU, AP): 5.0, (US, AP): 5.0, (US, EU): 5.0})
    feed(det, observations(SEED))
    for r in REGIONS:
        det.advance_watermark("Orders", r, 200.0)
    assert summary(det.poll(200.0)) == [(US, "Shipped", EU, "Delivered", "inferred")]
    assert det.stats["canary_contradicted"] == 1


def test_three_region_cascade_without_levels_is_ambiguous_not_guessed() -> None:
    """Versions of a cascade across three regions read from a backlog: counts exact,
    the regions that neither levels nor arrival times determine are unknown."""
    streams = versioned(
        {
            US: [("P", "A", 100, None), ("A", "B", 102, None)],
            EU: [("P", "A", 100, None), ("A", "B", 102, None)],
            AP: [("P", "B", 101, None)],
        },
        {"P": "P:1", "A": "A:2", "B": "B:2"},
    )
    verdicts = judge("Orders", KEY, by_region(streams), VERSION).verdicts
    assert len(verdicts) == 1
    (v,) = verdicts
    assert v.lost_image == img("A:2") and v.mode == "ambiguous" and v.certain
    assert v.loser_region == "unknown"  # A may have come from us or eu
    assert "not name every region" in v.evidence


# -- buffering, watermarks, memory ---------------------------------------------------


def feed(det: Detector, obs: Sequence[Observation]) -> None:
    for ob in obs:
        det.observe(ob)


def watermark_all(det: Detector, t: float, regions: Sequence[str] = REGIONS) -> None:
    for r in regions:
        det.advance_watermark("Orders", r, t)


def test_region_merely_behind_is_not_a_conflict() -> None:
    """ap's reader is behind: until it has read past the writes, nothing is judged."""
    det = Detector({"Orders": REGIONS}, INFERRED)
    obs = observations(SEQUENTIAL)
    feed(det, [o for o in obs if o.region != AP])
    det.advance_watermark("Orders", US, 1000)
    det.advance_watermark("Orders", EU, 1000)
    det.advance_watermark("Orders", AP, 100)  # behind
    assert det.poll(now=1000) == []
    assert det.tracked_keys("Orders") == 1
    feed(det, [o for o in obs if o.region == AP][:1])  # it has read only Shipped so far
    det.advance_watermark("Orders", AP, 105)
    assert det.poll(now=1000) == []
    feed(det, [o for o in obs if o.region == AP][1:])
    det.advance_watermark("Orders", AP, 1000)
    assert det.poll(now=1000) == []
    assert det.tracked_keys("Orders") == 0


def test_oldest_held_is_the_first_observation_of_an_unjudged_item() -> None:
    """What the readers' checkpoints must stay behind: while ap is behind, the item is
    held and `oldest_held` is when its first record was observed; judged, nothing is held."""
    det = Detector({"Orders": REGIONS}, INFERRED)
    assert det.oldest_held("Orders") is None
    obs = observations(SEQUENTIAL)
    feed(det, [o for o in obs if o.region != AP])
    det.advance_watermark("Orders", US, 1000)
    det.advance_watermark("Orders", EU, 1000)
    det.advance_watermark("Orders", AP, 100)  # behind
    assert det.poll(now=1000) == []
    first = min(o.observed_at for o in obs if o.region != AP and o.observed_at is not None)
    assert det.oldest_held("Orders") == first
    feed(det, [o for o in obs if o.region == AP])
    det.advance_watermark("Orders", AP, 1000)
    assert det.poll(now=1000) == []
    assert det.oldest_held("Orders") is None


def test_waits_for_settle_margin_then_reports_once() -> None:
    det = Detector({"Orders": REGIONS}, INFERRED)
    feed(det, observations(SEED))
    watermark_all(det, 131 + INFERRED.settle_seconds - 1)
    assert det.poll(now=140) == []
    watermark_all(det, 131 + INFERRED.settle_seconds)
    assert summary(det.poll(now=140)) == [(US, "Shipped", EU, "Delivered", "inferred")]
    watermark_all(det, 10_000)
    assert det.poll(now=10_000) == []
    assert det.tracked_keys("Orders") == 0


def test_paused_link_waits_for_convergence() -> None:
    """eu never got Shipped and us never got Delivered yet: judged only once they converge."""
    det = Detector({"Orders": REGIONS}, INFERRED)
    obs = observations(SEED)
    late = [o for o in obs if o.region == US and o.new_image == img("Delivered")]
    feed(det, [o for o in obs if o not in late])
    watermark_all(det, 500)
    assert det.poll(now=500) == []
    assert det.tracked_keys("Orders") == 1
    feed(det, late)
    assert summary(det.poll(now=500)) == [(US, "Shipped", EU, "Delivered", "inferred")]


def test_never_converging_item_is_judged_after_max_pending() -> None:
    settings = DetectorSettings(settle_seconds=5, max_pending_seconds=60)
    det = Detector({"Orders": REGIONS}, settings)
    feed(
        det, observations({US: [("Pending", "Shipped", 100)], EU: [("Pending", "Delivered", 100)]})
    )
    watermark_all(det, 120)
    assert det.poll(now=120) == []
    assert det.poll(now=161) == []  # divergent, nothing overwritten yet: no loss can be named
    assert det.tracked_keys("Orders") == 0
    assert det.stats["items_forced"] == 1


def test_redelivered_records_are_deduplicated() -> None:
    det = Detector({"Orders": REGIONS}, INFERRED)
    obs = observations(SEQUENTIAL)
    feed(det, obs + obs[:2])
    watermark_all(det, 1000)
    assert det.poll(now=1000) == []


def test_state_is_evicted_and_bounded() -> None:
    settings = DetectorSettings(settle_seconds=5, max_tracked_keys=10)
    det = Detector({"Orders": REGIONS}, settings)
    for k in range(100):
        key = canonical_image({"OrderID": {"S": str(k)}})
        for ob in observations(SEQUENTIAL, key=key):
            det.observe(ob)
        assert det.tracked_keys("Orders") <= 10
    watermark_all(det, 1000)
    det.poll(now=1000)
    assert det.tracked_keys("Orders") == 0
    assert det.stats["items_settled"] == 100 and det.stats["items_forced"] == 90


def test_hot_key_is_judged_in_chunks() -> None:
    settings = DetectorSettings(settle_seconds=5, max_records_per_key=10)
    det = Detector({"Orders": REGIONS}, settings)
    for i in range(30):
        for r in REGIONS:
            det.observe(
                Observation(
                    "Orders", r, KEY, "MODIFY", img(f"s{i}"), img(f"s{i + 1}"), str(i), 100.0 + i
                )
            )
    assert det.tracked_keys("Orders") <= 1
    assert det.flush() == []


def test_unknown_table_or_region_is_refused() -> None:
    det = Detector({"Orders": REGIONS}, INFERRED)
    ob = observations(SEED)[0]
    with pytest.raises(ValueError, match="unknown table"):
        det.observe(Observation("Nope", US, KEY, "INSERT", None, img("a"), "1", 1.0))
    with pytest.raises(ValueError, match="not a replica"):
        det.observe(Observation("Orders", "sa-east-1", KEY, "INSERT", None, img("a"), "1", 1.0))
    with pytest.raises(ValueError, match="not a replica"):
        det.advance_watermark("Orders", "sa-east-1", 1.0)
    det.observe(ob)
    assert det.tracked_keys("Orders") == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"settle_seconds": -1},
        {"settle_seconds": 10, "max_pending_seconds": 5},
        {"max_tracked_keys": 0},
    ],
)
def test_settings_are_validated(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        DetectorSettings(**kwargs)


@pytest.mark.parametrize(("written", "counted"), [(100.95, True), (100.5, False)])
def test_a_floor_counts_only_if_its_canary_travelled_after_the_items_records(
    written: float, counted: bool
) -> None:
    """A canary written before the item's records arrived cannot show that the link got
    faster meanwhile: its floor is left out, and the everyday conflict stays uncertain."""
    det = Detector({"Orders": REGIONS}, INFERRED)
    det.set_link_floors({(AP, EU): 0.3}, {(AP, EU): written})
    feed(det, [ob for obs in EVERYDAY.values() for ob in obs])
    for r in REGIONS:
        det.advance_watermark("Orders", r, 200.0)
    verdicts = det.poll(200.0)
    assert [v.certain for v in verdicts] == [counted]


def test_judged_records_are_remembered_until_forgotten() -> None:
    """With track_judged, every judged record's region and sequence number, by observation
    time: what the watcher saves so a restart does not judge them again alone."""
    det = Detector({"Orders": REGIONS}, INFERRED, track_judged=100_000)
    obs = observations(SEED)
    feed(det, obs)
    assert det.judged_since("Orders", 0.0) == {}  # held, not judged
    watermark_all(det, 10_000)
    assert det.poll(now=10_000)
    judged = det.judged_since("Orders", 0.0)
    assert {r: sorted(s) for r, s in judged.items()} == {
        r: sorted(o.sequence_number for o in obs if o.region == r) for r in {o.region for o in obs}
    }
    latest = max(o.observed_at for o in obs if o.observed_at is not None)
    assert sum(map(len, det.judged_since("Orders", latest).values())) >= 1
    det.forget_judged("Orders", latest + 1)
    assert det.judged_since("Orders", 0.0) == {}
    untracked = Detector({"Orders": REGIONS}, INFERRED)
    feed(untracked, obs)
    watermark_all(untracked, 10_000)
    untracked.poll(now=10_000)
    assert untracked.judged_since("Orders", 0.0) == {}


# -- partial histories: one region's earlier records judged in an earlier episode ------

# us-east-1 wrote B then C during a pause of us->ap; us's and eu's records of B were
# judged before (a restart, a forced judgement), so this episode starts with us already
# holding B. ap got both when the link resumed.
LATE_ARRIVAL = {
    US: [("B:4:us-east-1", "C:5:us-east-1", 171)],
    EU: [("B:4:us-east-1", "C:5:us-east-1", 171, 171.1)],
    AP: [("A:3:us-east-1", "B:4:us-east-1", 390), ("B:4:us-east-1", "C:5:us-east-1", 390.1)],
}


@pytest.mark.parametrize(
    ("settings", "streams"),
    [
        (WRITER, LATE_ARRIVAL),
        (INFERRED, {r: [(e[0].split(":")[0], e[1].split(":")[0], *e[2:]) for e in es]
                    for r, es in LATE_ARRIVAL.items()}),
    ],
    ids=["writer_attribute", "no_attributes"],
)
def test_a_version_one_region_held_before_the_episode_is_its_ancestor_not_a_loss(
    settings: DetectorSettings, streams: dict[str, Sequence[Entry]]
) -> None:
    """The version a region's first record overwrites is the one another region's stream
    shows being written: the same version, so what was written over it descends from it
    (the soak counted B lost to C here)."""
    verdicts = judge("Orders", KEY, by_region(streams), settings).verdicts
    assert [v for v in verdicts if v.certain] == []


def test_a_write_whose_named_writer_does_not_show_it_is_never_counted() -> None:
    """The writer attribute names us-east-1, whose stream holds C but not B: B's own
    record lies outside what is judged. Whatever the other streams suggest, a loss of
    B is not proof."""
    streams = {
        US: [("X:4:us-east-1", "C:5:us-east-1", 171)],
        AP: [("A:3:us-east-1", "B:4:us-east-1", 390), ("B:4:us-east-1", "C:5:us-east-1", 390.1)],
    }
    verdicts = judge("Orders", KEY, by_region(streams), WRITER).verdicts
    assert verdicts and not any(v.certain for v in verdicts)


# SKIP_VIA_AP with Delivered's writer attribute naming eu-west-1 (an application item
# carrying the probes' mark; or a stale attribute).
MARKED_SKIP = versioned(SKIP_VIA_AP, {
    "Pending": "Pending:1:us-east-1",
    "Shipped": "Shipped:2:us-east-1",
    "Delivered": "Delivered:3:eu-west-1",
})


def test_a_writer_attribute_is_believed_only_on_the_items_it_is_trusted_on() -> None:
    """Without arrival times nothing contradicts the mark: believed, it turns the skip
    into a loss of Shipped to eu-west-1 that never happened; limited to other items (the
    probe keys), the item is inferred, and nothing is counted."""
    believed = DetectorSettings(settle_seconds=5, writer_attribute="w")
    assert summary(judge("Orders", KEY, by_region(untimed(MARKED_SKIP)), believed).verdicts) == [
        (US, "Shipped", EU, "Delivered", "exact")]
    other_items = DetectorSettings(
        settle_seconds=5, writer_attribute="w", writer_attribute_on=lambda key: key != KEY)
    verdicts = judge("Orders", KEY, by_region(untimed(MARKED_SKIP)), other_items).verdicts
    assert not any(v.certain for v in verdicts)
    assert other_items.writer_region(img("Delivered:3:eu-west-1"), KEY) is None
    assert believed.writer_region(img("Delivered:3:eu-west-1"), KEY) == EU


def test_a_writer_attribute_the_arrival_times_contradict_is_not_believed() -> None:
    """eu-west-1 (the region the attribute names) read Delivered after ap-southeast-1 had
    it: eu did not write it first, so it did not write it. The skip is not a loss."""
    settings = DetectorSettings(settle_seconds=5, writer_attribute="w")
    assert judge("Orders", KEY, by_region(MARKED_SKIP), settings).verdicts == []


def test_a_stale_writer_attribute_never_names_the_wrong_loser_in_a_counted_verdict() -> None:
    """ap-southeast-1 writes Shipped with an update that leaves the attribute as
    us-east-1 set it; eu-west-1's concurrent Delivered wins. Believed, the attribute made
    a counted loss of us-east-1's; its arrival times (ap had Shipped long before us)
    show us did not write it: the loss is reported with ap as the loser, not counted."""
    stale = {
        US: [("Pending:1:us-east-1", "Shipped:2:us-east-1", 101, 101.3),
             ("Shipped:2:us-east-1", "Delivered:2:eu-west-1", 102, 102.3)],
        EU: [("Pending:1:us-east-1", "Delivered:2:eu-west-1", 101, 101.05)],
        AP: [("Pending:1:us-east-1", "Shipped:2:us-east-1", 100, 100.05),
             ("Shipped:2:us-east-1", "Delivered:2:eu-west-1", 102, 102.2)],
    }
    settings = DetectorSettings(settle_seconds=5, writer_attribute="w")
    (verdict,) = judge("Orders", KEY, by_region(stale), settings).verdicts
    assert (verdict.loser_region, verdict.winner_region) == (AP, EU)
    assert not verdict.certain


def test_judged_records_kept_for_checkpoints_are_capped_and_the_excess_counted() -> None:
    """A long stall holds the checkpoints back while records keep being judged: the list
    kept for them stays at its cap (the newest), and what it let go is counted."""
    det = Detector({"Orders": REGIONS}, INFERRED, track_judged=4)
    obs = observations(SEED)  # 5 records
    feed(det, obs)
    watermark_all(det, 10_000)
    det.poll(now=10_000)
    kept = det.judged_since("Orders", 0.0)
    assert sum(map(len, kept.values())) == 4
    assert det.stats["judged_dropped"] == len(obs) - 4


def test_big_items_are_judged_early_to_stay_within_the_memory_budget() -> None:
    """A client writing large items (up to 400 KB in DynamoDB) must not grow the detector
    without bound: past `max_buffered_bytes` the oldest items are judged on what has been
    read, counted apart; a paused link's waiting items go too."""
    settings = DetectorSettings(settle_seconds=5, max_buffered_bytes=200_000)
    det = Detector({"Orders": REGIONS}, settings)
    big = {"OrderID": {"S": "x"}, "blob": {"S": "b" * 10}}
    for i in range(30):
        key = canonical_image({"OrderID": {"S": f"o{i}"}})
        det.observe(Observation("Orders", US, key, "INSERT", None,
                                canonical_image({**big, "OrderID": {"S": f"o{i}"}}), str(i),
                                100.0 + i, size_bytes=40_000))
    assert det.stats["items_buffer_full"] >= 25
    assert det.stats["items_forced"] == 0
    assert det.tracked_keys("Orders") <= 5
    # Waiting for a paused link: not scheduled any more, still evicted when over budget.
    paused = Detector({"Orders": REGIONS}, settings)
    for i in range(4):
        key = canonical_image({"OrderID": {"S": f"p{i}"}})
        paused.observe(Observation("Orders", US, key, "INSERT", None,
                                   canonical_image({"OrderID": {"S": f"p{i}"}}), str(i), 100.0,
                                   size_bytes=40_000))
    watermark_all(paused, 1000)
    assert paused.poll(now=1000) == []  # eu and ap never saw them: waiting, not judged
    assert paused.tracked_keys("Orders") == 4
    for i in range(4, 8):
        key = canonical_image({"OrderID": {"S": f"p{i}"}})
        paused.observe(Observation("Orders", US, key, "INSERT", None,
                                   canonical_image({"OrderID": {"S": f"p{i}"}}), str(i), 2000.0,
                                   size_bytes=40_000))
    assert paused.stats["items_buffer_full"] >= 3
    assert paused.tracked_keys("Orders") <= 5


def test_each_version_image_is_held_once_per_item() -> None:
    """A region's record overwrites the image its previous record wrote, and every region
    shows the same versions: held once, not once per record (half the memory of a paused
    link's backlog: 2617 -> 1240 bytes per record in a tracemalloc run, 10 versions of 100
    items in two regions)."""
    det = Detector({"Orders": REGIONS}, INFERRED)
    feed(det, observations(SEQUENTIAL))
    (item,) = det._tables["Orders"].items.values()
    held = [ob for recs in item.by_region.values() for ob in recs]
    images = {id(image) for ob in held for image in (ob.old_image, ob.new_image)}
    assert len(images) == 3  # Pending, Shipped, Delivered


# Two deletes of one item, in two regions, before the same next version (workload 289 of
# `measure_conflicts.py`, writer mode, 0.2-1 s links, item 1; times rounded). us writes A,
# eu writes B (newer: B replaces A in us); ap deletes A before B reaches it; us deletes B;
# ap's delete reaches us and eu after us's newer one, and the item is already absent
# there: no record. ap then writes C and D. Truth: us's A lost to eu's B (ap's delete lost
# too, to us's delete: a tombstone overtaken by a tombstone, invisible). Read as *one*
# delete, only ap can have written it (ap shows it first, 0.6 s before anyone else), so
# its parent is A and B looks lost to A: the wrong loser and the wrong winner.
TWO_DELETES = {
    US: [(None, "A", 1.4), ("A", "B", 2.1), ("B", None, 2.9), (None, "C", 4.5), ("C", "D", 4.6)],
    EU: [(None, "B", 1.5), ("B", None, 3.3), (None, "C", 4.8), ("C", "D", 4.9)],
    AP: [(None, "A", 1.8), ("A", None, 2.3), (None, "C", 3.9), ("C", "D", 3.95)],
}
TWO_DELETES_LEVELS = {"A": "A:1", "B": "B:1", "C": "C:1", "D": "D:2"}
TWO_DELETES_WRITERS = {
    "A": "A:1:us-east-1", "B": "B:1:eu-west-1", "C": "C:1:ap-southeast-1",
    "D": "D:2:ap-southeast-1",
}


@pytest.mark.parametrize(
    "streams, settings",
    [
        (versioned(TWO_DELETES, TWO_DELETES_WRITERS), WRITER),
        (versioned(TWO_DELETES, TWO_DELETES_LEVELS), VERSION),
        (TWO_DELETES, INFERRED),
    ],
    ids=["writer", "version", "none"],
)
def test_two_deletes_of_one_item_in_two_regions_are_never_counted_as_one(
    streams: dict[str, Sequence[Entry]], settings: DetectorSettings
) -> None:
    """A REMOVE record carries no image and no attribute: the same tombstone in several
    regions may be one delete or several (a delete that reaches a region already holding
    a tombstone leaves no record). Nothing that rests on reading it as one is counted."""
    verdicts = judge("Orders", KEY, by_region(streams), settings).verdicts
    # The only loss a counted verdict may name is the true one: us's A lost to eu's B.
    counted = [v for v in verdicts if v.certain]
    assert all(s == (US, "A", EU, "B") for *s, _ in summary(counted)), summary(counted)
    # Nothing logged names a region against the truth either.
    for v in verdicts:
        assert v.loser_region in ("unknown", US) and v.winner_region in ("unknown", EU), v
