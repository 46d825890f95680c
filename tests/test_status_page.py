"""The status page as a person reads it: data as of, lag with its bound, age and
percentiles, a sparkline, STALLED cells that say how old their last lag is, the stream
readers, and conflicts counted apart from uncertain verdicts, each with a time.

Pure renders of status documents, then one end-to-end run: the daemon against the
emulator, a link paused, the page fetched over HTTP and photographed by headless
Chromium (set GTMON_SCREENSHOT_DIR=docs to refresh the screenshots the README shows;
that run also lets the history fill for longer, so the sparklines say something).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from monitor.emulator import DelaySpec, EmulatorServer
from monitor.emulator.control import ControlClient
from monitor.emulator.traffic import DemoTraffic, create_orders_table
from monitor.statuspage import SECTIONS, render_status_page, sparkline_svg
from tests.canary.conftest import REGIONS, daemon_config, pair, running, wait_for

NOW = 1_790_000_000.0


def _pair(source: str, target: str, **fields: Any) -> dict[str, Any]:
    row = {
        "table": "gtmon-canary",
        "source_region": source,
        "target_region": target,
        "state": "OK",
        "last_lag_seconds": 0.12,
        "last_error_bound_seconds": 0.015,
        "last_lag_age_seconds": 0.4,
        "p50_seconds": 0.11,
        "p99_seconds": 0.18,
        "oldest_pending_seconds": 0.0,
        "trend_window_seconds": 900.0,
        "lag_history": [None] * 85 + [[45.0, 0.1], [35.0, 0.12], [25.0, 0.11], [15.0, 0.18], [5.0, 0.12]],
    }
    return row | fields


def paused_status() -> dict[str, Any]:
    stalled = _pair(
        "us-east-1",
        "eu-west-1",
        state="STALLED",
        last_lag_age_seconds=47.0,
        oldest_pending_seconds=47.5,
        lag_history=[None] * 80 + [[95.0, 0.1], [85.0, 0.13], [75.0, 0.11], [65.0, 0.12], [55.0, 0.1]]
        + [None] * 5,
    )
    conflict = {
        "table": "Orders",
        "key": {"OrderID": {"S": "1001"}},
        "loser_region": "us-east-1",
        "winner_region": "eu-west-1",
        "mode": "exact",
        "reported_at": NOW - 30,
        "lost_created_at": NOW - 36,
    }
    return {
        "as_of": "2026-11-30T10:00:00Z",
        "instance_id": "t",
        "version": "0",
        "pairs": [stalled, _pair("eu-west-1", "us-east-1")],
        "regions": {region: {"up": True, "last_error": None} for region in ("us-east-1", "eu-west-1")},
        "components": [
            {"component": "stream_reader", "table": "Orders", "region": "us-east-1", "up": True,
             "restarts": 0},
            {"component": "stream_reader", "table": "Orders", "region": "eu-west-1", "up": False,
             "restarts": 2, "last_crash": {"type": "RuntimeError", "message": "boom"}},
        ],
        "conflicts": {
            "total": 1,
            "uncertain": 1,
            "recent": [
                conflict | {"certain": True},
                conflict | {"key": {"OrderID": {"S": "1002"}}, "certain": False, "mode": "inferred"},
            ],
            "streams": {
                "Orders": {
                    "regions": {
                        "us-east-1": {"state": "reading", "records": 1234, "lag_seconds": 0.4,
                                      "shards": {"open": 2, "closed": 1}, "last_error": None},
                        "eu-west-1": {"state": "error", "records": 17, "lag_seconds": 12.0,
                                      "shards": {"open": 1, "closed": 0}, "failing_since": NOW - 60,
                                      "last_error": {"code": "ThrottlingException",
                                                     "operation": "get_records", "at": NOW - 5}},
                    }
                }
            },
        },
    }


def cell(page: str, marker: str) -> str:
    """The <td> of the lag matrix that holds `marker`."""
    cells = re.findall(r"<td class='pair'>.*?</td>", page)
    return next(c for c in cells if marker in c)


def test_a_stalled_cell_says_how_old_its_last_lag_is_and_draws_the_stall() -> None:
    page = render_status_page(paused_status())
    stalled = cell(page, "STALLED")
    assert "no canary for 47 s" in stalled
    assert "last lag 120 ms ± 15 ms, <b>47 s ago</b>" in stalled
    assert "<svg class='spark'" in stalled and "class='stall'" in stalled
    # Four arrivals before the stall, one line; then nothing: no line reaches the present.
    points = re.findall(r"<polyline points='([^']*)'", stalled)
    assert len(points) == 1 and len(points[0].split()) == 5
    band = float(re.findall(r"<rect class='stall' x='([0-9.]+)'", stalled)[0])
    assert max(float(p.split(",")[0]) for p in points[0].split()) < band < 160

    healthy = cell(page, ">OK<")
    assert "<b>120 ms ± 15 ms</b>" in healthy and "ago" not in healthy
    assert "p50 110 ms · p99 180 ms (15 min)" in healthy
    assert "class='stall'" not in healthy


def test_the_page_says_when_its_data_is_from() -> None:
    assert "data as of <b>2026-11-30T10:00:00Z</b>" in render_status_page(paused_status())


def test_uncertain_verdicts_are_listed_apart_and_never_counted_and_each_conflict_has_a_time() -> None:
    page = render_status_page(paused_status())
    counted, uncertain = page.split("Uncertain verdicts")
    assert "Last-writer-wins conflicts: 1 counted" in counted
    assert "OrderID=1001" in counted and "OrderID=1002" not in counted
    assert "OrderID=1002" in uncertain and ": 1 " in uncertain[:40]
    reported = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(NOW - 30))
    assert counted.count(reported) == 1 and uncertain.count(reported) == 1


def test_stream_readers_show_records_lag_shards_errors_and_their_component() -> None:
    page = render_status_page(paused_status())
    readers = page.split("<h2>Stream readers</h2>")[1].split("</table>")[0]
    west, east = readers.split("<tr>")[2:4]  # sorted by region
    assert "<span class='up'>up</span>" in east and "1234" in east and "400 ms" in east
    assert "2 / 1" in east and "none" in east
    assert "DOWN" in west and "ThrottlingException" in west and "12.00 s" in west and "since" in west


def test_sections_are_the_extension_point() -> None:
    def widgets(status: dict[str, Any]) -> list[str]:
        return [f"<h2>Widgets: {len(status.get('widgets', []))}</h2>"]

    page = render_status_page({**paused_status(), "widgets": [1, 2]}, (*SECTIONS, widgets))
    assert page.index("Last-writer-wins") < page.index("<h2>Widgets: 2</h2>")


def test_a_sparkline_of_nothing_is_an_empty_frame() -> None:
    svg = sparkline_svg([None] * 90, 900.0)
    assert svg.startswith("<svg") and "polyline" not in svg and "circle" not in svg


# ---- end to end -------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = os.environ.get("GTMON_SCREENSHOT_DIR")


def screenshot(page: str, path: Path, folder: Path) -> None:
    """Headless Chromium's picture of `page` (the very HTML the test checked; the page
    needs no JavaScript and nothing from the server besides itself)."""
    assert CHROMIUM, "headless Chromium is needed: bash deploy/ci-system-deps.sh installs it"
    source = folder / f"{path.stem}.html"
    source.write_text(page, encoding="utf-8")
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--disable-dev-shm-usage", "--window-size=1280,1180", f"--screenshot={path}",
         source.as_uri()],
        check=True, capture_output=True, timeout=60,
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


async def page_when(url: str, condition: Callable[[str], bool], timeout: float, what: str) -> str:
    """The page over HTTP, fetched until `condition` holds: on a loaded machine a read can
    time out and turn a pair DOWN for a moment."""
    deadline = time.monotonic() + timeout
    while True:
        page = (await asyncio.to_thread(httpx.get, url, timeout=10)).text
        if condition(page):
            return page
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.5)


async def test_the_page_of_a_paused_link_over_http(emu: EmulatorServer, tmp_path: Path) -> None:
    for (a, b), ms in {("us-east-1", "eu-west-1"): 70, ("eu-west-1", "us-east-1"): 70,
                       ("us-east-1", "ap-southeast-1"): 220, ("ap-southeast-1", "us-east-1"): 220,
                       ("eu-west-1", "ap-southeast-1"): 160, ("ap-southeast-1", "eu-west-1"): 160}.items():
        emu.emulator.tables.set_delay(a, b, DelaySpec(ms=ms, jitter_ms=ms / 4, kind="lognormal"))
    await asyncio.to_thread(create_orders_table, emu.url, REGIONS)
    config = daemon_config(
        emu.url,
        canary={"interval_seconds": 1, "stall_seconds": 4},
        tables=[{"name": "Orders", "conflicts": {"enabled": True, "writer_attribute": "UpdatedIn"}}],
        streams={"enabled": True, "checkpoint_path": str(tmp_path / "checkpoints.json"),
                 "poll_interval_min_seconds": 0.2, "poll_interval_max_seconds": 1.0, "settle_seconds": 2},
    )
    traffic = DemoTraffic(emu.url, REGIONS, writes_per_second=2, conflict_every_seconds=6, seed=7)
    shots = Path(SHOTS) if SHOTS else tmp_path
    healthy_for = 240 if SHOTS else 0
    traffic.start()
    try:
        async with running(config) as service:
            url = f"http://127.0.0.1:{service.web.port}/"
            link = pair(service, "us-east-1", "eu-west-1")
            await wait_for(lambda: link.measurements >= 3, 20, "canaries across the link")
            await asyncio.sleep(healthy_for)
            healthy = await page_when(url, lambda p: p.count(">OK<") == 6, 30, "six pairs OK")
            assert healthy.count("<svg class='spark'") == 6
            await asyncio.to_thread(screenshot, healthy, shots / "status-healthy.png", tmp_path)

            ControlClient(emu.url).fault("pause", **{"from": "us-east-1", "to": "eu-west-1"})
            await wait_for(lambda: link.reading(time.monotonic()).oldest_pending_seconds > 6, 20, "stall")
            await asyncio.sleep(30 if SHOTS else 0)
            page = await page_when(
                url, lambda p: p.count(">OK<") == 5 and p.count(">STALLED<") == 1, 30,
                "the paused link STALLED, the five others OK",
            )
            stalled = cell(page, "STALLED")
            assert re.search(r"no canary for \d+ s", stalled), stalled
            assert re.search(r"last lag [\d.]+ m?s ± [\d.]+ m?s, <b>\d+ s ago</b>", stalled), stalled
            assert "<polyline" in stalled or "<circle" in stalled
            assert "class='stall'" in stalled
            assert "<h2>Stream readers</h2>" in page
            await asyncio.to_thread(screenshot, page, shots / "status-paused-link.png", tmp_path)
    finally:
        ControlClient(emu.url).fault("resume", **{"from": "us-east-1", "to": "eu-west-1"})
        await asyncio.to_thread(traffic.stop)


def test_a_regions_last_error_has_its_time_and_is_muted_once_the_region_is_up_again() -> None:
    status = paused_status()
    status["regions"] = {
        "eu-west-1": {"up": True, "last_error": "get_item: ThrottlingException: slow down",
                      "last_error_at": NOW - 600},
        "us-east-1": {"up": False, "last_error": "put_item: EndpointConnectionError: refused",
                      "last_error_at": NOW - 5},
    }
    regions = render_status_page(status).split("<h2>Regions</h2>")[1].split("</table>")[0]
    west, east = regions.split("<tr>")[2:4]
    assert time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(NOW - 600)) in west
    assert "<span class='muted'>get_item: ThrottlingException" in west
    assert "DOWN" in east and time.strftime("%H:%M:%S UTC", time.gmtime(NOW - 5)) in east
    assert "muted" not in east


def test_the_checkpoint_store_shows_its_last_save_and_a_failing_save() -> None:
    status = paused_status()
    status["conflicts"]["checkpoint"] = {"store": "file /var/lib/gtmon/cp.json",
                                         "last_saved_at": NOW - 20, "last_error": None}
    page = render_status_page(status)
    saved = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(NOW - 20))
    assert f"Checkpoints: file /var/lib/gtmon/cp.json, last saved {saved}" in page
    assert "failing" not in page
    status["conflicts"]["checkpoint"]["last_error"] = "[Errno 28] No space left on device"
    assert "failing: [Errno 28] No space left on device" in render_status_page(status)
