"""``GET /api/at-risk?region=R[&table=T]``: the writes a region accepted that others lack.

One handler, registered by `monitor.web` under its path; the answer comes from
the conflict watcher's `WritesAtRisk.at_risk` (see `monitor.streams.risk`):
``now`` (per table, what the region's stream showed as its own and another
region's stream has not, as of the last successful read) and ``incidents``
(each time the region went down: those writes and how each ended). A wrong or
missing parameter gets a 400 with one line naming it and the allowed values.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

__all__ = ["PATH", "AtRiskSource", "at_risk_response"]

PATH = "/api/at-risk"

#: (region, table or None) -> the JSON answer.
AtRiskSource = Callable[[str, "str | None"], dict[str, Any]]


def at_risk_response(
    request: web.Request,
    source: AtRiskSource | None,
    regions: Sequence[str],
    tables: Sequence[str],
) -> web.Response:
    """Answer one request; ``source`` None when no table's streams are watched."""
    if source is None:
        return web.Response(status=404, text="no table is watched through its streams "
                                             "(streams.enabled, conflicts.enabled): nothing is tracked\n")
    region = request.query.get("region", "")
    table: str | None = request.query.get("table") or None
    if region not in regions:
        return _bad(f"region={region!r}: give one of {', '.join(regions)}")
    if table is not None and table not in tables:
        return _bad(f"table={table!r}: give one of {', '.join(tables)}, or leave it out")
    return web.Response(text=json.dumps(source(region, table), indent=2), content_type="application/json")


def _bad(message: str) -> web.Response:
    return web.Response(status=400, text=f"{PATH}: {message}\n")
