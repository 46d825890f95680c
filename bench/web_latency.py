"""Latency of the web layer alone: authorized scrapes of /metrics, against another checkout.

A WebServer (basic auth, the credentials cached after the first check, as Prometheus
sees it; plain HTTP and TLS) runs in a child process with gtmon's metric contract on
its registry; a client thread in that process sends `--requests` GET /metrics one after
the other, each on a new connection (the server answers once per connection), and the
time from connect to the last byte is recorded. With `--baseline DIR` (a checkout of
another commit, e.g. `git archive` of main), the same child runs with `PYTHONPATH=DIR`,
in alternating blocks in the same run, so that a busy machine disturbs both alike.

This isolates what the HTTP server itself costs per request (parsing, TLS, the answer),
which `bench/auth_flood.py` measures only inside a whole daemon.

    python bench/web_latency.py [--quick] [--requests N] [--blocks N] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import PYTHON, ROOT, emit, summary_ms

PASSWORD = "bench-password"


def _certificate(folder: Path) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )


def _scrapes(port: int, scheme: str, count: int, context: ssl.SSLContext | None) -> list[float]:
    token = base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
    took = []
    for _ in range(count):
        started = time.perf_counter()
        if scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "127.0.0.1", port, timeout=10, context=context
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics", headers={"Authorization": f"Basic {token}"})
        answer = conn.getresponse()
        body = answer.read()
        conn.close()
        took.append(time.perf_counter() - started)
        if answer.status != 200 or b"gtmon_build_info" not in body:
            raise RuntimeError(f"scrape answered {answer.status}")
    return took


async def _serve_and_scrape(scheme: str, count: int) -> list[float]:
    import bcrypt
    from prometheus_client import CollectorRegistry

    from monitor.metrics import Metrics
    from monitor.web import WebServer
    from monitor.webconfig import load_web_config

    folder = Path(tempfile.mkdtemp(prefix="gtmon-web-latency-"))
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    text = f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    context = None
    if scheme == "https":
        _certificate(folder)
        text += "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n"
        context = ssl.create_default_context(cafile=str(folder / "cert.pem"))
    (folder / "web.yml").write_text(text)
    registry = CollectorRegistry()
    metrics = Metrics(registry, "bench")
    server = WebServer(
        "127.0.0.1", 0, registry, dict, lambda: True, load_web_config(folder / "web.yml"), metrics=metrics
    )
    await server.start()
    try:
        await asyncio.to_thread(_scrapes, server.port, scheme, 1, context)  # the one bcrypt
        return await asyncio.to_thread(_scrapes, server.port, scheme, count, context)
    finally:
        await server.stop()


def _block(pythonpath: Path, scheme: str, count: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    done = subprocess.run(
        [PYTHON, __file__, "--worker", scheme, str(count)],
        env=env, cwd=pythonpath, capture_output=True, text=True, timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"worker for {pythonpath} failed: {done.stderr[-2000:]}")
    return [float(x) for x in json.loads(done.stdout.strip().splitlines()[-1])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 requests a block, 1 block")
    parser.add_argument("--requests", type=int, help="scrapes per block and scheme (default 200)")
    parser.add_argument("--blocks", type=int, help="alternating blocks per side (default 3)")
    parser.add_argument("--baseline", type=Path, help="another checkout to compare with")
    parser.add_argument("--worker", nargs=2, metavar=("SCHEME", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        scheme, count = args.worker[0], int(args.worker[1])
        print(json.dumps(asyncio.run(_serve_and_scrape(scheme, count))))
        return
    count = args.requests or (30 if args.quick else 200)
    blocks = args.blocks or (1 if args.quick else 3)
    sides = {"current": ROOT}
    if args.baseline is not None:
        sides["baseline"] = args.baseline.resolve()
    took: dict[str, dict[str, list[float]]] = {s: {"http": [], "https": []} for s in sides}
    started = time.monotonic()
    for _ in range(blocks):
        for side, path in sides.items():
            for scheme in ("http", "https"):
                took[side][scheme].extend(_block(path, scheme, count))
    results: dict[str, Any] = {
        side: {scheme: summary_ms(values) for scheme, values in by_scheme.items()}
        for side, by_scheme in took.items()
    }
    results["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    targets = {"https_p99_ms": 100.0}
    emit(
        "web_latency",
        {"quick": args.quick, "requests_per_block": count, "blocks": blocks,
         "baseline": str(args.baseline) if args.baseline else None, "cpus": os.cpu_count(),
         "client": "http.client, one connection per scrape, GET /metrics with basic auth (cached)"},
        results,
        targets,
        {"https_p99_ms": (results["current"]["https"].get("p99_ms") or 1e9) <= targets["https_p99_ms"]},
    )


if __name__ == "__main__":
    main()
