"""Is the daemon doing its job? Small pure rules over facts gathered elsewhere, `now` passed in.

`/readyz` answers 503, and the status page says why, when any of these holds
(worst first):

1. the service is starting or stopping;
2. a supervised component is down (crashed, waiting to be restarted);
3. a watched table has no working stream reader at all: every one of its
   readers is failing, at once when the error needs an operator (the table or
   its stream does not exist, access denied), after `grace` seconds otherwise
   (throttling or an outage of every region may pass by themselves);
4. a canary table works in no region: every region's canary calls (writes in
   the region, reads there) fail, by the same rule (a canary table that does
   not exist, access denied: at once).

A single failing reader of a table whose other readers work, or a canary table
failing in some regions only, does not fail readiness (a region outage is
`gtmon_region_up`'s to report) but is listed as a warning when an operator
must act.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Health", "ReaderFacts", "evaluate"]

#: Seconds every reader of a table may fail with errors that may pass by themselves.
READER_GRACE_SECONDS = 60.0


@dataclass(frozen=True)
class ReaderFacts:
    """What the rules need of one stream reader, or of one region's canary calls."""

    table: str
    region: str
    failing_since: float | None
    error: Mapping[str, Any] | None  # the reader's last_error

    def failing(self, now: float, grace: float) -> bool:
        if self.failing_since is None:
            return False
        persistent = bool(self.error and self.error.get("persistent"))
        return persistent or now - self.failing_since >= grace

    def describe(self) -> str:
        error = self.error or {}
        return (
            f"{self.region}: {error.get('operation', '?')}: {error.get('code', '?')}: "
            f"{error.get('message', '')}"
        ).rstrip(": ")


@dataclass(frozen=True)
class Health:
    ready: bool
    problems: list[str] = field(default_factory=list)  # each one fails readiness
    warnings: list[str] = field(default_factory=list)  # shown, readiness unaffected
    summary: str = "ready"  # for /readyz, which answers without credentials: no names

    def to_json(self) -> dict[str, Any]:
        return {"ready": self.ready, "problems": self.problems, "warnings": self.warnings}


def evaluate(
    phase: str,
    down: Iterable[Mapping[str, Any]],
    readers: Iterable[ReaderFacts],
    now: float,
    grace: float = READER_GRACE_SECONDS,
    canaries: Iterable[ReaderFacts] = (),
) -> Health:
    """`phase` is starting, running or stopping; `down` holds the status of components down;
    `canaries` one entry per canary table and region the canary has called."""
    problems: list[str] = []
    warnings: list[str] = []
    counts: dict[str, int] = {}
    if phase != "running":
        problems.append(phase)
        counts[phase] = 1
    for component in down:
        counts["component(s) down"] = counts.get("component(s) down", 0) + 1
        where = "/".join(str(component[k]) for k in ("table", "region") if component.get(k))
        crash = component.get("last_crash") or {}
        problems.append(
            f"component {component['component']}{' ' + where if where else ''} is down after a "
            f"crash ({crash.get('type', '?')}: {crash.get('message', '')}); restarts so far: "
            f"{component.get('restarts', 0)}"
        )
    for facts, key, broken, one in (
        (readers, "table(s) without a working stream reader",
         "no stream reader works, conflicts are not watched", "stream reader in"),
        (canaries, "canary table(s) working in no region",
         "no canary call works in any region, lag is not measured", "canary calls fail in"),
    ):
        _none_working(facts, now, grace, counts, problems, warnings, key, broken, one)
    if not problems:
        return Health(True, problems, warnings)
    summary = "not ready: " + ", ".join(
        name if name in ("starting", "stopping") else f"{n} {name}" for name, n in counts.items()
    )
    return Health(False, problems, warnings, summary + " (details: /api/status)")


def _none_working(
    facts: Iterable[ReaderFacts],
    now: float,
    grace: float,
    counts: dict[str, int],
    problems: list[str],
    warnings: list[str],
    key: str,
    broken: str,
    one: str,
) -> None:
    """Per table: a problem when every entry fails, a warning per entry failing for good."""
    by_table: dict[str, list[ReaderFacts]] = {}
    for entry in facts:
        by_table.setdefault(entry.table, []).append(entry)
    for table, group in sorted(by_table.items()):
        failing = [r for r in group if r.failing(now, grace)]
        if failing and len(failing) == len(group):
            counts[key] = counts.get(key, 0) + 1
            problems.append(
                f"table {table}: {broken} (" + "; ".join(r.describe() for r in failing) + ")"
            )
            continue
        for entry in failing:
            if entry.error and entry.error.get("persistent"):
                warnings.append(f"table {table}: {one} {entry.describe()}")
