"""HTTP endpoints: what they serve, and TLS with basic auth from an exporter web config."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import bcrypt
import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from monitor.statuspage import KNOWN_BY, render_status_page
from monitor.web import WebServer
from monitor.webconfig import load_web_config

STATUS = {
    "instance_id": "t",
    "version": "0",
    "pairs": [
        {
            "table": "c",
            "source_region": "us-east-1",
            "target_region": "eu-west-1",
            "state": "STALLED",
            "last_lag_seconds": 0.5,
            "p50_seconds": 0.5,
            "p99_seconds": 0.6,
            "oldest_pending_seconds": 12.0,
        },
    ],
    "regions": {
        "us-east-1": {"up": True, "last_error": None},
        "eu-west-1": {"up": False, "last_error": "get_item: InternalServerError: down"},
    },
    "conflicts": {
        "recent": [
            {
                "table": "Orders",
                "key": "order-1",
                "loser_region": "us-east-1",
                "winner_region": "eu-west-1",
                "mode": "inferred",
            }
        ]
    },
}


def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("gtmon_probe", "x", registry=reg).inc()
    return reg


async def test_endpoints_serve_metrics_health_readiness_status_and_page():
    ready = {"value": False}
    server = WebServer("127.0.0.1", 0, registry(), lambda: STATUS, lambda: ready["value"])
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as client:
            assert "gtmon_probe_total 1.0" in (await client.get("/metrics")).text
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 503
            ready["value"] = True
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.get("/api/status")).json()["pairs"][0]["state"] == "STALLED"
            page = (await client.get("/")).text
            assert "STALLED" in page and "no canary for 12 s" in page
            assert "InternalServerError" in page and "order-1" in page
            assert (await client.get("/nope")).status_code == 404
            assert (await client.post("/metrics")).status_code == 405
    finally:
        await server.stop()


@pytest.fixture
def web_config(tmp_path: Path) -> Path:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make a test certificate"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(tmp_path / "key.pem"),
            "-out",
            str(tmp_path / "cert.pem"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    path = tmp_path / "web.yml"
    path.write_text(
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    )
    return path


async def test_tls_and_basic_auth_refuse_strangers_and_serve_the_right_credentials(web_config: Path):
    server = WebServer("127.0.0.1", 0, registry(), lambda: STATUS, lambda: True, load_web_config(web_config))
    await server.start()
    context = ssl.create_default_context(cafile=str(web_config.parent / "cert.pem"))
    url = f"https://127.0.0.1:{server.port}/metrics"
    try:
        async with httpx.AsyncClient(verify=context, timeout=5) as client:
            assert (await client.get(url)).status_code == 401
            assert (await client.get(url, auth=("prometheus", "wrong"))).status_code == 401
            response = await client.get(url, auth=("prometheus", "s3cret"))
            assert response.status_code == 200 and "gtmon_probe_total" in response.text
        async with httpx.AsyncClient(timeout=5) as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("basic_auth_users:\n  u: plain\n", "bcrypt"),
        ("tls_server_config:\n  cert_file: nope.pem\n  key_file: nope.key\n", "no such file"),
        ("tls: {}\n", "unknown field"),
    ],
)
def test_a_bad_web_config_is_refused_with_the_field(tmp_path, text, expected):
    from monitor.config import ConfigError

    path = tmp_path / "web.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_web_config(path)


def test_status_page_says_how_each_side_of_a_conflict_was_known():
    known = {
        **STATUS,
        "conflicts": {
            "recent": [
                {**STATUS["conflicts"]["recent"][0], "loser_known_by": "timing",
                 "winner_known_by": "attribute"},
                {**STATUS["conflicts"]["recent"][0], "key": "order-2", "loser_known_by": "canary",
                 "winner_known_by": "canary"},
            ]
        },
    }
    page = render_status_page(known)

    assert "us-east-1 <span class='muted' title='" in page
    assert ">by timing</span>" in page and ">by attribute</span>" in page and ">by canary</span>" in page
    # A legend for the ways that appear, and only those.
    for how in ("timing", "attribute", "canary"):
        assert f"<b>{how}</b>: {KNOWN_BY[how]}" in page
    assert "<b>structure</b>" not in page and "<b>unknown</b>" not in page
    # Entries from a daemon that does not say: the regions alone, no legend.
    plain = render_status_page(STATUS)
    assert "<td>us-east-1</td>" in plain and "<td>eu-west-1</td>" in plain
    assert "How each region was known" not in plain


async def test_a_bug_in_a_handler_is_one_500_one_logged_traceback_and_a_counted_error():
    from structlog.testing import capture_logs

    from monitor.metrics import Metrics

    reg = CollectorRegistry()
    metrics = Metrics(reg, "test")

    def broken() -> dict:
        raise KeyError("pairs")

    server = WebServer("127.0.0.1", 0, reg, broken, lambda: True, metrics=metrics)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as client:
            with capture_logs() as logs:
                answer = await client.get("/api/status")
            assert answer.status_code == 500 and answer.text == "internal error\n"
            assert [e["event"] for e in logs if e["log_level"] == "error"] == ["http_request_failed"]
            labels = {"component": "web", "type": "KeyError"}
            assert reg.get_sample_value("gtmon_internal_errors_total", labels) == 1
            assert (await client.get("/healthz")).status_code == 200  # the endpoint lives on
    finally:
        await server.stop()


async def test_further_routes_are_served_with_their_query_behind_the_same_auth(web_config: Path):
    from aiohttp import web

    def echo(request: web.Request) -> web.Response:
        return web.json_response({"region": request.query.get("region")})

    server = WebServer("127.0.0.1", 0, registry(), lambda: STATUS, lambda: True,
                       load_web_config(web_config), routes={"/api/extra": echo})
    await server.start()
    context = ssl.create_default_context(cafile=str(web_config.parent / "cert.pem"))
    url = f"https://127.0.0.1:{server.port}/api/extra?region=eu-west-1"
    try:
        async with httpx.AsyncClient(verify=context, timeout=5) as client:
            assert (await client.get(url)).status_code == 401
            answer = await client.get(url, auth=("prometheus", "s3cret"))
            assert answer.status_code == 200 and answer.json() == {"region": "eu-west-1"}
    finally:
        await server.stop()


def test_status_page_shows_pending_writes_per_link_and_readers_behind():
    links = {"us-east-1->eu-west-1": {"pending": 25, "unconfirmed": 2, "oldest_seconds": 12.34},
             "eu-west-1->us-east-1": {"pending": 0, "unconfirmed": 0, "oldest_seconds": None}}
    page = render_status_page({**STATUS, "pending_writes": {"Orders": links}})
    assert "<h2>Writes at risk: Orders</h2>" in page
    assert "<td>25 <span class='muted'>(12.3 s)</span><br><span class='muted'>+2 reader behind" in page
    assert "<td>0 <span class='muted'>(–)</span></td>" in page
    assert "Writes at risk" not in render_status_page(STATUS)
# ---- conflict probes (issue 13) ----------------------------------------------------------


def test_status_page_shows_probes_apart_from_conflicts_with_the_last_reason() -> None:
    probes = {
        "enabled": True,
        "tables": {"Orders": {
            "results": {"detected": 4, "missed": 1, "mislabelled": 0, "skipped": 2},
            "last": {"result": "missed", "reason": "eu-west-1: stream switched off <b>"},
            "waiting": 0,
        }},
    }
    page = render_status_page({**STATUS, "probes": probes})
    assert "<h2>Conflict probes</h2>" in page and "never counted in the conflicts above" in page
    assert ("<tr><td>Orders</td><td>4</td><td>1</td><td>0</td><td>2</td>"
            "<td>missed: eu-west-1: stream switched off &lt;b&gt;</td></tr>") in page
    assert "Conflict probes" not in render_status_page({**STATUS, "probes": {"enabled": False}})
