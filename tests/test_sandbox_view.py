"""`gtmon sandbox`'s live view fits a standard 80x24 terminal and keeps what an operator needs."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import pytest
from rich.console import Console

from monitor.sandbox import REGIONS, render

ENDPOINT = "http://127.0.0.1:8000"
METRICS_URL = "http://127.0.0.1:9108"
DOWN_REGION = "eu-west-1"
LONG_ERROR = (
    "GetItem: ConnectTimeoutError: Connect timeout on endpoint URL: "
    '"http://127.0.0.1:8000/" while the region was unreachable for a long while'
)


@dataclass
class Traffic:
    writes: int = 12345
    conflicts_staged: int = 17
    errors: int = 42


def _pairs(table: str) -> list[dict[str, Any]]:
    """All six pairs, in every state a sandbox shows (pairs touching the DOWN region are DOWN)."""
    looks = {
        ("us-east-1", "ap-southeast-1"): ("OK", 0.712, 0.009, 0.830, 0.0),
        ("ap-southeast-1", "us-east-1"): ("WARNING", 1.52, 0.021, 2.10, 1.7),
        ("us-east-1", "eu-west-1"): ("DOWN", 0.61, 0.012, 0.75, 34.5),
        ("eu-west-1", "us-east-1"): ("DOWN", None, None, None, 0.0),
        ("eu-west-1", "ap-southeast-1"): ("STALLED", 1.5, 0.25, 12.3, 123.4),
        ("ap-southeast-1", "eu-west-1"): ("CRITICAL", 12.34, 0.5, 15.2, 3.2),
    }
    return [
        {
            "table": table,
            "source_region": source,
            "target_region": target,
            "state": state,
            "last_lag_seconds": last,
            "last_error_bound_seconds": bound,
            "p50_seconds": last,
            "p99_seconds": p99,
            "oldest_pending_seconds": pending,
            "heartbeat_age_seconds": 1.0,
            "pending": 1 if pending else 0,
            "measurements": 40,
            "reads_per_canary": 1.5,
            "last_error": None,
            "measured_at": "2024-05-01T12:00:00Z",
        }
        for (source, target), (state, last, bound, p99, pending) in looks.items()
    ]


def _conflict(i: int) -> dict[str, Any]:
    return {
        "table": "Orders",
        "key": {
            "OrderID": {"S": f"order-{i:04d}-with-a-rather-long-suffix-{'x' * 30}"},
            "CustomerID": {"S": f"customer-{i % 17:02d}"},
        },
        "winner_region": REGIONS[i % 3],
        "loser_region": REGIONS[(i + 1) % 3],
        "mode": "exact",
        "certain": True,
        "reported_at": 1_714_564_800.0 + i,
        "fingerprint": f"fp-{i}",
    }


def _status(tables: list[str]) -> dict[str, Any]:
    return {
        "instance_id": "sandbox",
        "version": "0.0.0",
        "ready": True,
        "home_region": "us-east-1",
        "pairs": [pair for table in tables for pair in _pairs(table)],
        "regions": {
            region: {"up": region != DOWN_REGION, "last_error": LONG_ERROR if region == DOWN_REGION else None}
            for region in REGIONS
        },
        "conflicts": {"enabled": True, "total": 8, "recent": [_conflict(i) for i in range(8)]},
    }


def _screen(status: dict[str, Any]) -> list[str]:
    console = Console(width=80, record=True, file=io.StringIO(), color_system=None)
    console.print(render(status, Traffic(), ENDPOINT, METRICS_URL))
    return console.export_text().rstrip("\n").split("\n")


@pytest.mark.parametrize("tables", [["gtmon-canary"], ["gtmon-canary", "gtmon-canary-2"]])
def test_live_view_fits_80x24_terminal_with_every_pair_region_and_recent_conflicts(tables):
    lines = _screen(_status(tables))
    text = "\n".join(lines)

    assert len(lines) <= 24, text
    assert max(len(line) for line in lines) <= 80, text
    for table in tables:
        assert f"replication lag — {table}" in text
    for region in REGIONS:
        assert region in text
    for state in ("OK", "WARNING", "CRITICAL", "STALLED", "DOWN"):
        assert state in text
    assert "pend 123s" in text  # the stalled pair's pending age
    assert "8 detected" in text
    assert "order-0000" in text  # the most recent conflict's key, truncated to fit
    assert text.count("Orders ") >= 3  # a few recent conflicts
    assert "12345 writes, 17 conflicts staged, 42 errors" in text
    assert "GetItem: ConnectTimeoutError" in text  # the DOWN region's error, truncated


def test_live_view_shows_error_bound_and_pending_age_with_one_canary_table():
    text = "\n".join(_screen(_status(["gtmon-canary"])))

    assert "712±9ms / 830ms" in text  # last ± error bound / p99
    assert "pend 1.70s" in text  # pending age >= 1 s is shown
    assert "pend 0ms" not in text  # ... and none below 1 s
    assert "latest 5" in text  # the most recent conflicts that fit, newest first


def _known(status: dict[str, Any], loser: str, winner: str) -> dict[str, Any]:
    for conflict in status["conflicts"]["recent"]:
        conflict["loser_known_by"], conflict["winner_known_by"] = loser, winner
    return status


@pytest.mark.parametrize("tables", [["gtmon-canary"], ["gtmon-canary", "gtmon-canary-2"]])
def test_live_view_says_how_each_side_was_known_and_still_fits_80x24(tables):
    # The longest a row gets: the two sides known differently, the longer words.
    lines = _screen(_known(_status(tables), "structure", "timing"))
    text = "\n".join(lines)

    assert len(lines) <= 24, text
    assert max(len(line) for line in lines) <= 80, text
    assert "known by: lost/won" in text  # the heading explains the split
    assert text.count("structure/timing") >= 3, text
    assert "order-0000" in text
    assert "8 detected" in text


def test_live_view_names_one_way_when_both_sides_were_known_alike():
    text = "\n".join(_screen(_known(_status(["gtmon-canary"]), "attribute", "attribute")))

    assert "known by" in text
    assert text.count(" attr") >= 3, text  # attribute, shortened
    assert "lost/won" not in text  # nothing split, no legend needed
    assert "exact" not in text  # the mode gives way to how each side was known


def test_live_view_shows_the_mode_for_entries_that_do_not_say_how():
    text = "\n".join(_screen(_status(["gtmon-canary"])))  # entries without *_known_by

    assert text.count("exact") >= 3, text


def _pending(status: dict[str, Any], paused: int) -> dict[str, Any]:
    links = {f"{s}->{t}": {"pending": 0, "unconfirmed": 0, "oldest_seconds": None}
             for s in REGIONS for t in REGIONS if s != t}
    if paused:
        links["us-east-1->eu-west-1"] = {"pending": paused, "unconfirmed": 1, "oldest_seconds": 12.3}
    status["pending_writes"] = {"Orders": links}
    return status


@pytest.mark.parametrize("tables", [["gtmon-canary"], ["gtmon-canary", "gtmon-canary-2"]])
def test_live_view_shows_real_writes_pending_on_a_paused_link_and_still_fits_80x24(tables):
    lines = _screen(_pending(_status(tables), paused=25))
    text = "\n".join(lines)
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 80, text
    assert "pending writes: Orders us-east-1→eu-west-1 25 (12.3s)" in text
    drained = "\n".join(_screen(_pending(_status(tables), paused=0)))
    assert "pending writes: none" in drained


# ---- conflict probes (issue 13) ----------------------------------------------------------


def _probes(last_orders: dict[str, Any]) -> dict[str, Any]:
    return {
        "enabled": True,
        "tables": {
            "Orders": {"results": {"detected": 7, "missed": 2, "mislabelled": 0, "skipped": 1},
                       "last": last_orders, "waiting": 1},
            "gtmon-canary": {"results": {"detected": 9, "missed": 0, "mislabelled": 0,
                                         "skipped": 0},
                             "last": {"result": "detected", "reason": "a lost to b"}, "waiting": 0},
        },
    }


@pytest.mark.parametrize("tables", [["gtmon-canary"], ["gtmon-canary", "gtmon-canary-2"]])
def test_live_view_shows_probe_results_and_a_miss_with_its_reason_within_80x24(tables):
    status = {**_status(tables), "probes": _probes({
        "result": "missed", "reason": "ap-southeast-1: stream not read ([boom])"})}
    screen = _screen(status)
    assert len(screen) <= 24 and all(len(line) <= 80 for line in screen)
    line = next(line for line in screen if line.startswith("conflict probes detected:"))
    assert "gtmon-canary 9/9" in line and "Orders 7/9" in line
    # brackets in a reason are text, not markup
    assert "  Orders missed: ap-southeast-1: stream not read ([boom])" in screen
    # The conflicts line still counts real conflicts only.
    assert any(line.startswith("last-writer-wins conflicts: 8 detected") for line in screen)


def test_live_view_shows_no_probe_line_when_probes_are_off():
    screen = _screen({**_status(["gtmon-canary"]), "probes": {"enabled": False}})
    assert not any("conflict probes" in line for line in screen)
