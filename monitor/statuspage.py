"""The status page: the monitor's state (/api/status) as one server-rendered HTML page.

No build step and no JavaScript: the page is a function of the status document,
reloads itself every 5 s (a meta refresh) and draws its sparklines as inline SVG.

It is honest about time: the header says when the data was taken ("data as of"),
every lag says how old it is, and a STALLED or DOWN pair shows its last lag as
history ("last seen 47 s ago"), never as the current one. Conflicts the counter
(`gtmon_lww_conflicts_total`) counted are listed apart from uncertain verdicts,
which are shown but never in the count; every conflict has a time.

The page is a sequence of sections (`SECTIONS`), each a pure function from the
status document to HTML fragments, with nothing to show when its part of the
status is absent. Newer parts of the monitor add theirs to the sequence (pending
writes, conflict probes): one function and one entry, nothing else to change.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from monitor.pending_html import pending_section

__all__ = ["KNOWN_BY", "SECTIONS", "Section", "format_key", "render_status_page", "sparkline_svg"]

Section = Callable[[dict[str, Any]], list[str]]

_COLOURS = {
    "OK": "#2e7d32",
    "UNKNOWN": "#757575",
    "WARNING": "#f9a825",
    "CRITICAL": "#e65100",
    "STALLED": "#c62828",
    "DOWN": "#6a1b9a",
}
# A pair in these states is not measuring: its last lag is history.
_NOT_MEASURING = frozenset({"STALLED", "DOWN"})
_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222}"
    "h1{margin:0}h2{margin:1.4em 0 .5em;font-size:1.15em}"
    "table{border-collapse:collapse;margin-bottom:1em}"
    "td,th{border:1px solid #ddd;padding:.35em .6em;vertical-align:top}"
    "th{background:#f5f5f5;text-align:left}"
    ".badge{color:#fff;border-radius:3px;padding:0 .4em;font-weight:bold;font-size:.85em}"
    ".muted{color:#777}.small{font-size:.85em}.num{text-align:right}"
    ".warn{color:#c62828;font-weight:bold}.up{color:#2e7d32}.down{color:#c62828;font-weight:bold}"
    "td.pair{min-width:12em}svg.spark{display:block;margin-top:.3em}"
)


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _age(seconds: float | None) -> str:
    """A duration as people read an age: 12 s, 4 min 10 s, 2 h 5 min."""
    if seconds is None:
        return "–"
    whole = int(seconds)
    if whole < 120:
        return f"{whole} s"
    if whole < 7200:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def _when(epoch: Any) -> str:
    """Epoch seconds as UTC date and time; '–' when absent."""
    if not isinstance(epoch, int | float):
        return "–"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def format_key(key: Any) -> str:
    """An item key as `Attr=value, ...` (DynamoDB JSON types dropped)."""
    if not isinstance(key, dict):
        return str(key)
    parts = []
    for name, value in key.items():
        shown = next(iter(value.values())) if isinstance(value, dict) and len(value) == 1 else value
        parts.append(f"{name}={shown}")
    return ", ".join(parts)


def sparkline_svg(
    history: Sequence[Sequence[float] | None],
    window_seconds: float,
    *,
    stalled_seconds: float = 0.0,
    width: int = 160,
    height: int = 32,
) -> str:
    """An inline SVG of a pair's lag over the window: one polyline per run of slices that
    had arrivals (a slice without any is a gap), and for a stalled pair a red band over the
    last `stalled_seconds`, where no canary arrived (at least 3 px wide, so a fresh stall
    shows). `history` is /api/status's `lag_history`: [seconds before now, worst lag] per
    slice, or null."""
    points = [p for p in history if p is not None]
    top = max([0.05, *(float(p[1]) for p in points)])
    # Drawn from the first arrival (or the stall's start) on, not over empty minutes
    # before the daemon started; the title says how long that is.
    slice_ = window_seconds / max(1, len(history))
    span = min(window_seconds, max([slice_ * 6, stalled_seconds * 1.25,
                                    *(float(p[0]) + slice_ / 2 for p in points)]))
    runs: list[list[str]] = []
    gap = True
    for bucket in history:
        if bucket is None:
            gap = True
            continue
        ago, lag = float(bucket[0]), float(bucket[1])
        x = width * (1 - ago / span)
        y = height - 2 - (height - 4) * lag / top
        if gap:
            runs.append([])
            gap = False
        runs[-1].append(f"{x:.1f},{y:.1f}")
    parts = [
        f"<svg class='spark' role='img' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' xmlns='http://www.w3.org/2000/svg'>",
        f"<title>lag over the last {_e(_age(span))}, peak {_e(_fmt(top))}</title>",
        f"<rect width='{width}' height='{height}' fill='#fafafa' stroke='#e0e0e0'/>",
        f"<text x='3' y='9' font-size='8' fill='#777'>{_e(_fmt(top))}</text>",
    ]
    if stalled_seconds > 0:
        x = min(width - 3.0, width * max(0.0, 1 - stalled_seconds / span))
        parts.append(
            f"<rect class='stall' x='{x:.1f}' y='0' width='{width - x:.1f}' height='{height}' "
            "fill='#c62828' fill-opacity='0.18'/>"
        )
    for run in runs:
        if len(run) == 1:
            cx, cy = run[0].split(",")
            parts.append(f"<circle cx='{cx}' cy='{cy}' r='1.5' fill='#1565c0'/>")
        else:
            parts.append(
                f"<polyline points='{' '.join(run)}' fill='none' stroke='#1565c0' stroke-width='1.5'/>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _header(status: dict[str, Any]) -> list[str]:
    return [
        "<h1>gtmon</h1>",
        f"<p class='muted'>data as of <b>{_e(status.get('as_of') or '–')}</b> · "
        f"instance {_e(status.get('instance_id'))} · version {_e(status.get('version'))} · "
        "reloads every 5 s</p>",
    ]


def _health_section(status: dict[str, Any]) -> list[str]:
    """What keeps the monitor from doing its job (fails /readyz) and what needs an operator;
    components that crashed, with their restarts. Nothing when all is well."""
    health = status.get("health") or {}
    parts = []
    problems, warnings = health.get("problems") or [], health.get("warnings") or []
    if problems or warnings:
        parts.append("<h2>Health: " + ("NOT READY" if problems else "warnings") + "</h2><ul>")
        parts.extend(f"<li style='color:#c62828'>{_e(p)}</li>" for p in problems)
        parts.extend(f"<li style='color:#e65100'>{_e(w)}</li>" for w in warnings)
        parts.append("</ul>")
    troubled = [c for c in status.get("components") or [] if not c.get("up") or c.get("restarts")]
    if troubled:
        parts.append(
            "<h2>Components</h2><table><tr><th>component</th><th>table</th><th>region</th>"
            "<th>up</th><th>restarts</th><th>last crash</th></tr>"
        )
        for c in troubled:
            crash = c.get("last_crash") or {}
            cells = [
                _e(c.get("component")),
                _e(c.get("table") or ""),
                _e(c.get("region") or ""),
                "up" if c.get("up") else "DOWN",
                _e(c.get("restarts", 0)),
                _e(f"{crash.get('type', '')}: {crash.get('message', '')}" if crash else ""),
            ]
            parts.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
        parts.append("</table>")
    return parts


def _pair_cell(pair: dict[str, Any]) -> str:
    """State, last lag with its bound and age, p50/p99 of the window, the sparkline."""
    state = str(pair.get("state"))
    colour = _COLOURS.get(state, "#999")
    lag, error = pair.get("last_lag_seconds"), pair.get("last_error_bound_seconds")
    age = pair.get("last_lag_age_seconds")
    pending = float(pair.get("oldest_pending_seconds") or 0.0)
    shown = _fmt(lag) + (f" ± {_fmt(error)}" if error is not None and lag is not None else "")
    lines = [f"<span class='badge' style='background:{colour}'>{_e(state)}</span>"]
    if state in _NOT_MEASURING:
        # The last lag is from before the trouble: say so, and how old it is.
        lines.append(
            f"<span class='warn'>no canary for {_e(_age(pending))}</span>"
            if pending >= 1
            else ""
        )
        lines.append(
            f"<span class='small'>last lag {_e(shown)}, "
            f"<b>{_e(_age(age))} ago</b></span>"
            if lag is not None
            else "<span class='small'>no lag measured yet</span>"
        )
    else:
        lines.append(f"<b>{_e(shown)}</b>")
        if age is not None and age >= 10:
            lines.append(f"<span class='small muted'>measured {_e(_age(age))} ago</span>")
        if pending >= 1:
            lines.append(f"<span class='small'>pending {_e(_fmt(pending))}</span>")
    window = float(pair.get("trend_window_seconds") or 900.0)
    span = pair.get("trend_span_seconds")
    over = f"last {_age(span)}" if span is not None and span < window - 30 else f"{window / 60:.0f} min"
    lines.append(
        f"<span class='small muted'>p50 {_e(_fmt(pair.get('p50_seconds')))} · "
        f"p99 {_e(_fmt(pair.get('p99_seconds')))} ({_e(over)})</span>"
    )
    history = pair.get("lag_history")
    if history is not None:
        stalled = pending if state in _NOT_MEASURING else 0.0
        lines.append(sparkline_svg(history, window, stalled_seconds=stalled))
    return f"<td class='pair'>{'<br>'.join(line for line in lines if line)}</td>"


def _lag_section(status: dict[str, Any]) -> list[str]:
    """Per table, the source x target matrix of pairs."""
    pairs = status.get("pairs") or []
    parts = []
    for table in sorted({p["table"] for p in pairs}):
        rows = [p for p in pairs if p["table"] == table]
        regions = sorted({p["source_region"] for p in rows} | {p["target_region"] for p in rows})
        by_pair = {(p["source_region"], p["target_region"]): p for p in rows}
        parts.append(
            f"<h2>Replication lag: {_e(table)}</h2><table><tr><th>source \\ target</th>"
        )
        parts.extend(f"<th>{_e(r)}</th>" for r in regions)
        parts.append("</tr>")
        for source in regions:
            parts.append(f"<tr><th>{_e(source)}</th>")
            for target in regions:
                pair = by_pair.get((source, target))
                parts.append("<td class='muted'>·</td>" if pair is None else _pair_cell(pair))
            parts.append("</tr>")
        parts.append("</table>")
    return parts


def _readers_section(status: dict[str, Any]) -> list[str]:
    """The stream readers per table and region: up, records, lag behind the stream, shards,
    errors."""
    streams = (status.get("conflicts") or {}).get("streams") or {}
    if not streams:
        return []
    up = {
        (c.get("table"), c.get("region")): bool(c.get("up"))
        for c in status.get("components") or []
        if c.get("component") == "stream_reader"
    }
    parts = [
        "<h2>Stream readers</h2><table><tr><th>table</th><th>region</th><th>component</th>"
        "<th>state</th><th>records</th><th>behind stream</th><th>shards open / closed</th>"
        "<th>errors</th></tr>"
    ]
    for table, info in sorted(streams.items()):
        for region, reader in sorted((info.get("regions") or {}).items()):
            running = up.get((table, region))
            component = (
                "–" if running is None
                else "<span class='up'>up</span>" if running
                else "<span class='down'>DOWN</span>"
            )
            shards = reader.get("shards") or {}
            error = reader.get("last_error") or {}
            problems = []
            if error and reader.get("failing_since") is not None:
                problems.append(
                    f"<span class='down'>{_e(error.get('code'))}</span> "
                    f"<span class='small'>{_e(error.get('operation'))}, since "
                    f"{_e(_when(reader.get('failing_since')))}</span>"
                )
            elif error:
                problems.append(
                    f"<span class='small muted'>last: {_e(error.get('code'))} at "
                    f"{_e(_when(error.get('at')))}</span>"
                )
            for key, what in (("sink_errors", "sink errors"), ("records_lost_events", "records lost")):
                if reader.get(key):
                    problems.append(f"<span class='warn'>{_e(reader[key])} {what}</span>")
            cells = [
                _e(table),
                _e(region),
                component,
                _e(reader.get("state")),
                f"<span class='num'>{_e(reader.get('records', 0))}</span>",
                _e(_fmt(reader.get("lag_seconds"))),
                f"{_e(shards.get('open', 0))} / {_e(shards.get('closed', 0))}",
                "<br>".join(problems) or "<span class='muted'>none</span>",
            ]
            parts.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    parts.append("</table>")
    parts.append(_checkpoint_line((status.get("conflicts") or {}).get("checkpoint") or {}))
    return parts


def _checkpoint_line(checkpoint: dict[str, Any]) -> str:
    """Where the readers' positions are saved, when last, and the error while saves fail
    (a restart then reads again from the last saved positions)."""
    saved = checkpoint.get("last_saved_at")
    text = (f"Checkpoints: {_e(checkpoint.get('store', '–'))}, last saved "
            f"{_e(_when(saved) if saved is not None else 'never')}")
    error = checkpoint.get("last_error")
    if error:
        text += f" <span class='down'>failing: {_e(error)}</span>"
    return f"<p class='small'>{text}</p>"


def _regions_section(status: dict[str, Any]) -> list[str]:
    """Up or DOWN, and the last failed call with its time: in a region that is up again it
    is history (muted), not the present."""
    parts = ["<h2>Regions</h2><table><tr><th>region</th><th>up</th><th>last error</th>"
             "<th>at</th></tr>"]
    for region, info in sorted((status.get("regions") or {}).items()):
        up = "<span class='up'>up</span>" if info["up"] else "<span class='down'>DOWN</span>"
        error = _e(info.get("last_error") or "")
        if error and info["up"]:
            error = f"<span class='muted'>{error}</span>"
        at = _when(info.get("last_error_at")) if info.get("last_error") else ""
        parts.append(
            f"<tr><td>{_e(region)}</td><td>{up}</td><td>{error}</td><td>{_e(at)}</td></tr>"
        )
    parts.append("</table>")
    return parts


# How a conflict's loser or winner region was established (the entries' `loser_known_by`
# and `winner_known_by`): the word shown, and what it means.
KNOWN_BY = {
    "attribute": "the write carries the writer attribute",
    "structure": "the streams alone admit only this region",
    "timing": "stream arrival times rule the other regions out",
    "canary": "it took the link delays the canary measured to rule the others out",
    "unknown": "the region could not be established",
}


def _region_cell(conflict: dict[str, Any], side: str) -> str:
    """`eu-west-1 by timing` (the how in grey, explained on hover); just the region when the
    entry does not say how (older daemons)."""
    region = html.escape(str(conflict.get(f"{side}_region")))
    how = conflict.get(f"{side}_known_by")
    if how is None:
        return region
    meaning = html.escape(KNOWN_BY.get(str(how), ""), quote=True)
    return f"{region} <span class='muted' title='{meaning}'>by {html.escape(str(how))}</span>"


def _conflict_table(conflicts: list[dict[str, Any]]) -> list[str]:
    parts = [
        "<table><tr><th>reported</th><th>table</th><th>key</th><th>lost in</th><th>won by</th>"
        "<th>lost write created</th><th>mode</th></tr>"
    ]
    for conflict in conflicts:
        cells = [
            _e(_when(conflict.get("reported_at"))),
            _e(conflict.get("table")),
            _e(format_key(conflict.get("key"))),
            _region_cell(conflict, "loser"),
            _region_cell(conflict, "winner"),
            _e(_when(conflict.get("lost_created_at"))),
            _e(conflict.get("mode")),
        ]
        parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
    return parts


def _conflicts_section(status: dict[str, Any]) -> list[str]:
    """Counted conflicts (certain: what gtmon_lww_conflicts_total counts), then uncertain
    verdicts apart, never in the count; each with its time."""
    info = status.get("conflicts") or {}
    recent = list(info.get("recent") or [])[:50]
    counted = [c for c in recent if c.get("certain", True)]
    uncertain = [c for c in recent if not c.get("certain", True)]
    total = info.get("total", len(counted))
    parts = [f"<h2>Last-writer-wins conflicts: {_e(total)} counted</h2>"]
    parts.extend(_conflict_table(counted) if counted else ["<p class='muted'>none seen</p>"])
    if uncertain:
        parts.append(
            f"<h2>Uncertain verdicts: {_e(info.get('uncertain', len(uncertain)))} "
            "<span class='muted small'>(possible lost writes the streams cannot confirm; "
            "not counted)</span></h2>"
        )
        parts.extend(_conflict_table(uncertain))
    shown = {str(c.get(f"{side}_known_by")) for c in recent for side in ("loser", "winner")}
    legend = [f"<b>{_e(how)}</b>: {_e(text)}" for how, text in KNOWN_BY.items() if how in shown]
    if legend:
        parts.append("<p class='muted'>How each region was known: " + "; ".join(legend) + ".</p>")
    return parts


def _probes_section(status: dict[str, Any]) -> list[str]:
    """Conflict probes per table: results and the last one with its reason (issue 13)."""
    probes = status.get("probes") or {}
    if not probes.get("enabled"):
        return []
    parts = [
        "<h2>Conflict probes</h2>",
        "<p class='muted'>Races gtmon stages to prove detection works; "
        "never counted in the conflicts above.</p>",
        "<table><tr><th>table</th><th>detected</th><th>missed</th><th>mislabelled</th>"
        "<th>skipped</th><th>last</th></tr>",
    ]
    for table, state in sorted(probes.get("tables", {}).items()):
        results = state.get("results", {})
        last = state.get("last") or {}
        latest = f"{last.get('result')}: {last.get('reason')}" if last else "none yet"
        cells = [table, *(str(results.get(r, 0)) for r in
                          ("detected", "missed", "mislabelled", "skipped")), latest]
        parts.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
    return parts


# The page, top to bottom. Add a section here (a function of the status document).
SECTIONS: tuple[Section, ...] = (
    _header,
    _health_section,
    _lag_section,
    pending_section,
    _readers_section,
    _regions_section,
    _conflicts_section,
    _probes_section,
)


def render_status_page(status: dict[str, Any], sections: Sequence[Section] = SECTIONS) -> str:
    """A page a person reads at a glance: every section of `sections` over `status`."""
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='refresh' content='5'><title>gtmon</title>"
        f"<style>{_STYLE}</style></head><body>"
    ]
    for section in sections:
        parts.extend(section(status))
    parts.append("</body></html>")
    return "".join(parts)
