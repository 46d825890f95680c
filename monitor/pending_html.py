"""The status page's "writes at risk" section: real writes pending per link, from the streams.

Kept apart from `monitor.statuspage` (which only places it) so the page layout and this
section change independently. Input is `/api/status`'s ``pending_writes``.
"""

from __future__ import annotations

import html
from typing import Any

__all__ = ["pending_section"]


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def pending_section(status: dict[str, Any]) -> list[str]:
    """Per table, a source x target grid: pending writes and the oldest one's age."""
    parts: list[str] = []
    for table, links in sorted((status.get("pending_writes") or {}).items()):
        regions = sorted({r for link in links for r in link.split("->")})
        parts.append(
            f"<h2>Writes at risk: {html.escape(table)}</h2><p class='muted'>real writes the "
            "source's stream showed that the target's has not, and the oldest one's age; "
            "/api/at-risk?region=R lists them</p><table><tr><th>source \\ target</th>"
        )
        parts.extend(f"<th>{html.escape(r)}</th>" for r in regions)
        parts.append("</tr>")
        for source in regions:
            parts.append(f"<tr><th>{html.escape(source)}</th>")
            for target in regions:
                info = links.get(f"{source}->{target}")
                if info is None:
                    parts.append("<td class='muted'>·</td>")
                    continue
                behind = info.get("unconfirmed") or 0
                extra = f"<br><span class='muted'>+{behind} reader behind</span>" if behind else ""
                parts.append(
                    f"<td>{int(info.get('pending') or 0)} "
                    f"<span class='muted'>({_age(info.get('oldest_seconds'))})</span>{extra}</td>"
                )
            parts.append("</tr>")
        parts.append("</table>")
    return parts
