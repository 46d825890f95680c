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
from urllib.parse import parse_qs, urlsplit

from monitor.httpserver import Request, Response

__all__ = ["PATH", "AtRiskSource", "at_risk_response"]

PATH = "/api/at-risk"

#: (region, table or None) -> the JSON answer.
AtRiskSource = Callable[[str, "str | None"], dict[str, Any]]


def at_risk_response(
    request: Request,
    source: AtRiskSource | None,
    regions: Sequence[str],
    tables: Sequence[str],
) -> Response:
    """Answer one request; ``source`` None when no table's streams are watched."""
    if source is None:
        return Response(404, b"no table is watched through its streams (streams.enabled, "
                             b"conflicts.enabled): nothing is tracked\n")
    params = parse_qs(urlsplit(request.target).query)
    region = (params.get("region") or [""])[0]
    table: str | None = params["table"][0] if params.get("table") else None
    if region not in regions:
        return _bad(f"region={region!r}: give one of {', '.join(regions)}")
    if table is not None and table not in tables:
        return _bad(f"table={table!r}: give one of {', '.join(tables)}, or leave it out")
    body = json.dumps(source(region, table), indent=2).encode()
    return Response(200, body, "application/json")


def _bad(message: str) -> Response:
    return Response(400, f"{PATH}: {message}\n".encode())
