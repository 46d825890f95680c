"""The readiness rules (monitor.health), one row per outcome, `now` passed in."""

from __future__ import annotations

from typing import Any

import pytest

from monitor.health import ReaderFacts, evaluate

NOW = 1_000.0
MISSING = {"operation": "describe_table", "code": "ResourceNotFoundException",
           "message": "Requested resource not found", "persistent": True}
THROTTLED = {"operation": "get_records", "code": "ThrottlingException", "message": "slow down",
             "persistent": False}


def reader(region: str, since: float | None = None, error: dict[str, Any] | None = None,
           table: str = "Orders") -> ReaderFacts:
    return ReaderFacts(table, region, since, error)


DOWN = {"component": "stream_reader", "table": "Orders", "region": "eu-west-1", "up": False,
        "restarts": 3, "last_crash": {"type": "UnexpectedAnswer", "message": "Records is missing"}}


@pytest.mark.parametrize(
    ("phase", "down", "readers", "ready", "problem", "warning"),
    [
        ("running", [], [reader("us-east-1"), reader("eu-west-1")], True, None, None),
        ("starting", [], [], False, "starting", None),
        ("stopping", [], [], False, "stopping", None),
        ("running", [DOWN], [reader("us-east-1")], False,
         "component stream_reader Orders/eu-west-1 is down after a crash (UnexpectedAnswer: "
         "Records is missing); restarts so far: 3", None),
        # Every reader of the table fails with an error an operator must fix: at once.
        ("running", [], [reader("us-east-1", NOW, MISSING), reader("eu-west-1", NOW, MISSING)],
         False, "table Orders: no stream reader works, conflicts are not watched (us-east-1: "
         "describe_table: ResourceNotFoundException: Requested resource not found; eu-west-1: "
         "describe_table: ResourceNotFoundException: Requested resource not found)", None),
        # Throttled everywhere: only after the grace.
        ("running", [], [reader("us-east-1", NOW - 10, THROTTLED),
                         reader("eu-west-1", NOW - 10, THROTTLED)], True, None, None),
        ("running", [], [reader("us-east-1", NOW - 61, THROTTLED),
                         reader("eu-west-1", NOW - 61, THROTTLED)], False,
         "table Orders: no stream reader works", None),
        # One region's replica missing, the other reads: a warning, still ready.
        ("running", [], [reader("us-east-1"), reader("eu-west-1", NOW, MISSING)], True, None,
         "table Orders: stream reader in eu-west-1: describe_table: ResourceNotFoundException"),
        # One region throttled or down: region_up's business, not even a warning.
        ("running", [], [reader("us-east-1"), reader("eu-west-1", NOW - 100, THROTTLED)], True,
         None, None),
        # Another table works: only the broken one is named.
        ("running", [], [reader("us-east-1", NOW, MISSING, "Gone"), reader("us-east-1")], False,
         "table Gone: no stream reader works", None),
    ],
    ids=["ok", "starting", "stopping", "component-down", "table-missing", "throttled-in-grace",
         "throttled-past-grace", "one-replica-missing", "one-region-throttled", "other-table"],
)
def test_readiness_rules(
    phase: str, down: list[dict[str, Any]], readers: list[ReaderFacts], ready: bool,
    problem: str | None, warning: str | None,
) -> None:
    health = evaluate(phase, down, readers, NOW, grace=60.0)
    assert health.ready is ready
    if problem is None:
        assert health.problems == []
    else:
        assert len(health.problems) == 1 and health.problems[0].startswith(problem), health
    assert health.summary == "ready" if ready else health.summary.startswith("not ready: ")
    if warning is None:
        assert health.warnings == []
    else:
        assert len(health.warnings) == 1 and health.warnings[0].startswith(warning), health


WRITE_MISSING = {"operation": "put_item", "code": "ResourceNotFoundException",
                 "message": "Requested resource not found", "persistent": True}


@pytest.mark.parametrize(
    ("canaries", "ready", "problem", "warning"),
    [
        ([reader("us-east-1", table="gtmon-canary"), reader("eu-west-1", table="gtmon-canary")],
         True, None, None),
        # The canary table exists nowhere: no lag is measured, not ready at once.
        ([reader("us-east-1", NOW, WRITE_MISSING, "gtmon-canary"),
          reader("eu-west-1", NOW, WRITE_MISSING, "gtmon-canary")], False,
         "table gtmon-canary: no canary call works in any region, lag is not measured "
         "(us-east-1: put_item: ResourceNotFoundException", None),
        # Missing in one region: the other pairs are measured; a warning naming the error.
        ([reader("us-east-1", table="gtmon-canary"),
          reader("eu-west-1", NOW, WRITE_MISSING, "gtmon-canary")], True, None,
         "table gtmon-canary: canary calls fail in eu-west-1: put_item: ResourceNotFoundException"),
        # Throttled everywhere: only after the grace.
        ([reader("us-east-1", NOW - 10, THROTTLED, "gtmon-canary")], True, None, None),
    ],
    ids=["ok", "missing-everywhere", "missing-in-one-region", "throttled-in-grace"],
)
def test_canary_readiness_rules(
    canaries: list[ReaderFacts], ready: bool, problem: str | None, warning: str | None,
) -> None:
    health = evaluate("running", [], [reader("us-east-1")], NOW, grace=60.0, canaries=canaries)
    assert health.ready is ready
    assert [p[:len(problem)] for p in health.problems] == ([] if problem is None else [problem])
    assert [w[:len(warning)] for w in health.warnings] == ([] if warning is None else [warning])


def test_the_readyz_summary_counts_problems_and_names_nothing() -> None:
    health = evaluate("running", [DOWN, DOWN], [reader("us-east-1", NOW, MISSING, "Secret")], NOW)
    assert health.summary == (
        "not ready: 2 component(s) down, 1 table(s) without a working stream reader "
        "(details: /api/status)"
    )
    assert "Secret" not in health.summary and "eu-west-1" not in health.summary
