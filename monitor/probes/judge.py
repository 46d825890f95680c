"""Conflict probes, the pure core: probe keys, the region rotation, the expected winner,
and the judgement of what the detector reported. No I/O and no clock: times come in.

A probe is a deliberate last-writer-wins race. gtmon writes one fresh item in two
regions with both requests in flight at once, long before either write can
replicate, so exactly one of the two versions must be lost. Every probe version
carries ``PROBE_MARK`` holding the region that wrote it: the truth the detector's
verdict is checked against (its lost image names the loser, its winning image the
winner, whatever the detector inferred). Which of the two must win is known from
the round trips only when one write was certainly accepted after the other
(LWW keeps the later one); otherwise the images alone decide the labelling.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from monitor.config import key_template_pattern
from monitor.conflicts import Image, Verdict

__all__ = [
    "DEFAULT_PROBE_TEMPLATE",
    "PROBE_MARK",
    "RESULTS",
    "Outcome",
    "ProbeKeyShape",
    "ProbeWrite",
    "ReaderFacts",
    "default_timeout",
    "diagnose_miss",
    "expected_winner",
    "is_probe_key",
    "is_probe_verdict",
    "judge_probe",
    "next_pair",
    "probe_key_shape",
]

#: The attribute every probe version carries: the region that wrote it. It also marks
#: probe items, so their verdicts never reach gtmon_lww_conflicts_total.
PROBE_MARK = "gtmon_probe"
#: A probe key's placeholders: any monitor instance, any probe number.
_PROBE_WILDCARDS = (("{instance}", ".+?"), ("{probe}", ".+?"))
#: The key value of every key attribute unless `conflicts.probe_key` says otherwise.
DEFAULT_PROBE_TEMPLATE = "gtmon-probe#{instance}#{probe}"

Result = Literal["detected", "missed", "mislabelled", "skipped"]
RESULTS: tuple[Result, ...] = ("detected", "missed", "mislabelled", "skipped")


@dataclass(frozen=True)
class ProbeKeyShape:
    """The key attributes of a table's probe items and their templates (partition key first)."""

    template: tuple[tuple[str, str], ...]

    def key(self, instance: str, probe: str) -> dict[str, Any]:
        """The DynamoDB-JSON key of probe `probe` written by monitor `instance`."""
        return {
            name: {"S": value.format(instance=instance, probe=probe)}
            for name, value in self.template
        }


def probe_key_shape(
    key_schema: Sequence[Mapping[str, Any]],
    attribute_types: Mapping[str, str],
    template: Mapping[str, str] | None,
) -> ProbeKeyShape | str:
    """The probe key of a table with this key schema, or why the table cannot hold one.

    Probe keys are strings (they hold the instance id and a probe number, so they never
    meet an application's or another monitor's keys): a number or binary key attribute
    cannot hold one, and a template must name exactly the table's key attributes.
    """
    names = [
        str(k["AttributeName"])
        for k in sorted(key_schema, key=lambda k: 0 if k.get("KeyType") == "HASH" else 1)
    ]
    for name in names:
        kind = attribute_types.get(name)
        if kind != "S":
            return (
                f"key attribute {name!r} is of type {kind or 'unknown'}; a probe key needs "
                "string key attributes (set conflicts.probes: false on this table)"
            )
    if template is None:
        return ProbeKeyShape(tuple((name, DEFAULT_PROBE_TEMPLATE) for name in names))
    if sorted(template) != sorted(names):
        return (
            f"conflicts.probe_key names {sorted(template)}, but the table's key is {names}"
        )
    return ProbeKeyShape(tuple((name, template[name]) for name in names))


def next_pair(
    regions: Sequence[str], up: Mapping[str, bool], turn: int
) -> tuple[str, str] | None:
    """The `turn`-th pair of the rotation over every two regions that are not DOWN."""
    pairs = [
        (a, b)
        for a, b in itertools.combinations(regions, 2)
        if up.get(a, True) and up.get(b, True)
    ]
    return pairs[turn % len(pairs)] if pairs else None


@dataclass(frozen=True)
class ProbeWrite:
    """One of a probe's two writes, on the daemon's monotonic clock.

    ``floor`` is the least one-way time of this region's writes seen so far (half the
    least round trip): the write was accepted no sooner than ``floor`` after it was sent
    and no later than ``floor`` before its answer came back. ``replaced`` is the probe
    region found in the item the write overwrote (ReturnValues ALL_OLD): set when the
    other write had already replicated here, so the two writes did not race.
    """

    region: str
    sent: float
    received: float
    floor: float = 0.0
    replaced: str | None = None

    def accepted(self) -> tuple[float, float]:
        """When the region accepted the write, at the earliest and at the latest."""
        low = self.sent + self.floor
        return low, max(low, self.received - self.floor)


def expected_winner(a: ProbeWrite, b: ProbeWrite, clock_error: float) -> str | None:
    """The region whose write LWW must keep, or None when the order cannot be told.

    LWW keeps the write with the later timestamp, taken on the accepting region's
    clock; each clock may be off by `clock_error`, so one write is known to be later
    only when it was accepted more than twice that after the other at the latest.
    """
    a_low, a_high = a.accepted()
    b_low, b_high = b.accepted()
    if b_low - a_high > 2 * clock_error:
        return b.region
    if a_low - b_high > 2 * clock_error:
        return a.region
    return None


def default_timeout(settle: float, poll_max: float, slowest_lag: float) -> float:
    """How long a probe may wait for its verdict: the settle window, three idle polls
    (every region's reader must read past it) and the slowest link's lag (the winner
    must reach every region before the item converges)."""
    return settle + 3 * poll_max + slowest_lag


def _writer(image: Image | None) -> str | None:
    """The region a probe version names in PROBE_MARK; None for other items and deletes."""
    for name, (kind, value) in image or ():
        if name == PROBE_MARK and kind == "S":
            return str(value)
    return None


def is_probe_verdict(verdict: Verdict, template: Mapping[str, str] | None = None) -> bool:
    """A verdict about a probe item (any monitor's): its key has the shape of the table's
    probe keys (`template`, the `conflicts.probe_key`; None: the default on every key
    attribute) and its versions carry PROBE_MARK.

    The key, not the mark alone: an application item that carries the mark attribute is
    judged and counted like any other, never routed away from the counter.
    """
    if not any(
        _writer(image) is not None
        for image in (verdict.lost_image, verdict.winning_image, *verdict.candidates)
    ):
        return False
    return is_probe_key(verdict.key, template)


def is_probe_key(item_key: Image, template: Mapping[str, str] | None = None) -> bool:
    """An item key of the shape of the table's probe keys (`template`, the
    `conflicts.probe_key`; None: the default on every key attribute)."""
    key = dict(item_key)
    for name, (kind, value) in key.items():
        wanted = DEFAULT_PROBE_TEMPLATE if template is None else template.get(name)
        if wanted is None or kind != "S" or not key_template_pattern(
            wanted, _PROBE_WILDCARDS
        ).fullmatch(str(value)):
            return False
    return template is None or set(template) == set(key)


@dataclass(frozen=True)
class Outcome:
    """What became of one probe; `reason` is one line for logs and the status page."""

    result: Result
    reason: str
    detection_seconds: float | None = None


def judge_probe(
    a: ProbeWrite,
    b: ProbeWrite,
    verdicts: Sequence[Verdict],
    clock_error: float,
    waited: float,
    timeout: float,
) -> Outcome:
    """Judge the verdicts reported for a probe whose writes `a` and `b` raced.

    Detected: exactly one loss, counted (certain), between the probe's two versions,
    with the loser and winner the images prove (their PROBE_MARK) and, when the round
    trips order the writes, the later one surviving. Anything else reported is
    mislabelled, with the first rule it broke. `waited` is write to verdict, seconds:
    past `timeout` the probe was missed, whatever came.
    """
    if waited > timeout:
        return Outcome("missed", f"the verdict came {waited - timeout:.1f} s after the "
                                 f"{timeout:g} s timeout")
    if len(verdicts) != 1:
        return Outcome("mislabelled", f"{len(verdicts)} losses reported, 1 expected")
    verdict = verdicts[0]
    if not verdict.certain:
        return Outcome(
            "mislabelled", f"reported as uncertain ({verdict.mode}), so it would not be counted"
        )
    lost_by = _writer(verdict.lost_image)
    kept_by = _writer(verdict.winning_image)
    if {lost_by, kept_by} != {a.region, b.region}:
        return Outcome(
            "mislabelled",
            f"the reported loss is not between the probe's writes in {a.region} and {b.region}",
        )
    must_win = expected_winner(a, b, clock_error)
    if must_win is not None and kept_by != must_win:
        return Outcome(
            "mislabelled",
            f"the write in {kept_by} survived, but the one in {must_win} was accepted later",
        )
    if (verdict.loser_region, verdict.winner_region) != (lost_by, kept_by):
        return Outcome(
            "mislabelled",
            f"reported {verdict.loser_region} lost to {verdict.winner_region}; "
            f"{lost_by} lost to {kept_by}",
        )
    return Outcome("detected", f"{lost_by} lost to {kept_by}", detection_seconds=waited)


@dataclass(frozen=True)
class ReaderFacts:
    """What the stream reader of one region knows (daemon wall clock)."""

    region: str
    watermark: float | None
    error: str | None


def diagnose_miss(
    readers: Sequence[ReaderFacts],
    written_at: float,
    settle: float,
    streams_off: Sequence[str] = (),
) -> str:
    """Why a probe's verdict did not come: the regions whose streams held it back.

    The detector judges an item only after every region's reader has read past its
    writes plus the settle window, and every region's stream shows the surviving
    version; a region whose reader fails or lags, or whose stream was switched off
    (`streams_off`, from DescribeTable: its reader may still read the old stream,
    which gets no more records), stops that.
    """
    needed = written_at + settle
    causes = [f"{region}: stream switched off" for region in streams_off]
    for reader in readers:
        if reader.region in streams_off:
            continue
        if reader.error is not None:
            causes.append(f"{reader.region}: stream not read ({reader.error})")
        elif reader.watermark is None or reader.watermark < needed:
            behind = "never read to its end" if reader.watermark is None else (
                f"read only to {needed - reader.watermark:.1f} s before the settle horizon"
            )
            causes.append(f"{reader.region}: stream {behind}")
    if causes:
        return "; ".join(causes)
    return "every region's stream was read past the probe; the detector reported no loss"
