"""Wrong passwords and half-open TLS connections against a running daemon (issue 16).

`gtmon run` (a child process) serves its endpoints with TLS and basic auth (a bcrypt hash
of cost 12, as `htpasswd -nBC 12` makes) and measures three regions behind an emulator
child process whose links take a fixed 100 ms. In the same run:

* `quiet`: `--seconds` with only an authorized scraper (GET /metrics with the right
  password every 0.2 s, a new TLS connection each time);
* `flood`: the same, while `--clients` (20) threads in another process send wrong
  passwords from another address (127.0.0.2) as fast as the daemon answers, each on
  its own connection;

in `--blocks` alternating blocks (3 of 10 s each), so that a busy shared machine
disturbs both alike;

and compares the canary's stated error bound (p50/p99 of
`gtmon_replication_lag_error_seconds` of every new measurement, seen as a pair's lag
histogram count going up between two scrapes) and the authorized scrape's latency. Before
the hardening, 20 such clients made every request take 5.7 s and the reported lag
2.8 s for a real 0.1 s.

Then `half_open`: the daemon's RSS (/proc/PID/status VmRSS) at rest, with 500 TLS
connections that never finish the handshake, and after they are dropped. Two kinds,
each from 50 loopback addresses (127.0.0.x) so that the per-client cap does not decide
alone: `silent` (TCP connected, nothing sent) and `client_hello` (a ClientHello sent,
then nothing: the server has built its TLS state and waits). The daemon's own
`gtmon_web_connections_refused_total` says how many it closed at once.

    python bench/auth_flood.py [--quick] [--seconds N] [--clients N]
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import yaml
from _common import (
    PYTHON,
    ROOT,
    EmulatorProcess,
    create_global_table,
    delay_json,
    emit,
    free_port,
    log,
    percentile,
    proc_cpu_seconds,
    proc_rss_bytes,
    stop_process,
)
from prometheus_client.parser import text_string_to_metric_families

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-1"]
USER, PASSWORD = "prometheus", "right-password-for-the-bench"
# The flooding clients' address: another host than the scraper's 127.0.0.1.
ATTACKER = "127.0.0.2"
TARGET_BOUND_RATIO = 1.5
TARGET_SCRAPE_P99_MS = 100.0
TARGET_HALF_OPEN_MB = 30.0


# ---- certificates (cryptography, installed with moto) ------------------------------------

def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("bench CA")).issuer_name(name("bench CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "server.crt", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    return paths


# ---- the daemon ---------------------------------------------------------------------------

class Daemon:
    def __init__(self, url: str, workdir: Path, interval: float, cost: int) -> None:
        import bcrypt

        self.port = free_port()
        ca, cert, key = make_certificates(workdir)
        self.ca = ca
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=cost)).decode()
        web = workdir / "web-config.yml"
        web.write_text(yaml.safe_dump({
            "tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
            "basic_auth_users": {USER: hashed},
        }))
        config = workdir / "config.yaml"
        config.write_text(yaml.safe_dump({
            "instance_id": "bench-auth-flood",
            "regions": REGIONS,
            "aws": {"endpoint_url": url},
            "canary": {"interval_seconds": interval},
            "streams": {"enabled": False},
            "metrics": {"host": "0.0.0.0", "port": self.port, "web_config_file": str(web)},
            "log": {"format": "json", "level": "error"},
        }))
        self.stderr = open(workdir / "daemon.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [PYTHON, "-m", "monitor", "run", "--config", str(config)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.stderr,
        )
        self.base = f"https://127.0.0.1:{self.port}"
        self.context = ssl.create_default_context(cafile=str(ca))
        self.auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    @property
    def pid(self) -> int:
        return self.process.pid

    def get(self, path: str, timeout: float = 10.0) -> bytes:
        request = urllib.request.Request(self.base + path, headers={"Authorization": self.auth})
        with urllib.request.urlopen(request, timeout=timeout, context=self.context) as answer:
            return bytes(answer.read())

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}")
            try:
                pairs = json.loads(self.get("/api/status"))["pairs"]
                if pairs and all(p["measurements"] for p in pairs):
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError("daemon not measuring")

    def refused(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for family in text_string_to_metric_families(self.get("/metrics").decode()):
            for sample in family.samples:
                if sample.name in ("gtmon_web_connections_refused_total", "gtmon_web_auth_failures_total"):
                    kind = sample.name.removeprefix("gtmon_web_").removesuffix("_total")
                    found[f"{kind}:{sample.labels['reason']}"] = sample.value
        return found

    def stop(self) -> int | None:
        returncode = stop_process(self.process)
        self.stderr.close()
        return returncode


# ---- measuring ----------------------------------------------------------------------------

def canary_readings(text: str) -> dict[tuple[str, str], tuple[float, float, float]]:
    """Per (source, target): measurements so far, last lag and last error bound, from /metrics."""
    count: dict[tuple[str, str], float] = {}
    last: dict[tuple[str, str], float] = {}
    bound: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "source_region" not in sample.labels:
                continue
            key = (sample.labels["source_region"], sample.labels["target_region"])
            if sample.name == "gtmon_replication_lag_seconds_count":
                count[key] = sample.value
            elif sample.name == "gtmon_replication_lag_last_seconds":
                last[key] = sample.value
            elif sample.name == "gtmon_replication_lag_error_seconds":
                bound[key] = sample.value
    return {k: (count[k], last.get(k, 0.0), bound.get(k, 0.0)) for k in count}


def observe(daemon: Daemon, seconds: float, into: dict[str, Any], every: float = 0.2) -> None:
    """The authorized scraper for `seconds`: GET /metrics every `every` s, its latency, and
    every new canary measurement (a pair's lag histogram count went up: its last lag and
    error bound are the new measurement's), added to the samples in `into`."""
    cpu0 = proc_cpu_seconds(daemon.pid)
    seen: dict[tuple[str, str], float] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            text = daemon.get("/metrics").decode()
            into["scrapes"].append(time.monotonic() - started)
        except OSError:
            into["failures"] += 1
            time.sleep(every)
            continue
        for key, (count, lag, bound) in canary_readings(text).items():
            if key in seen and count > seen[key]:
                into["bounds"].append(bound)
                into["lags"].append(lag)
            seen[key] = count
        time.sleep(max(0.0, every - (time.monotonic() - started)))
    into["seconds"] += seconds
    into["cpu"] += proc_cpu_seconds(daemon.pid) - cpu0


def new_samples() -> dict[str, Any]:
    return {"scrapes": [], "bounds": [], "lags": [], "failures": 0, "seconds": 0.0, "cpu": 0.0}


def summary(samples: dict[str, Any]) -> dict[str, Any]:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 1)

    bounds, lags, scrapes = samples["bounds"], samples["lags"], samples["scrapes"]
    return {
        "seconds": round(samples["seconds"], 1),
        "daemon_cpu_fraction": round(samples["cpu"] / samples["seconds"], 3),
        "measurements": len(bounds),
        "error_bound_p50_ms": ms(percentile(bounds, 50)),
        "error_bound_p99_ms": ms(percentile(bounds, 99)),
        "lag_p50_ms": ms(percentile(lags, 50)),
        "lag_p99_ms": ms(percentile(lags, 99)),
        "scrapes": len(scrapes),
        "scrape_failures": samples["failures"],
        "scrape_p50_ms": ms(percentile(scrapes, 50)),
        "scrape_p90_ms": ms(percentile(scrapes, 90)),
        "scrape_p99_ms": ms(percentile(scrapes, 99)),
        "scrape_max_ms": ms(max(scrapes) if scrapes else None),
    }


def flood_worker(base: str, ca: str, seconds: float, clients: int) -> None:
    """Runs in its own process: `clients` threads sending wrong passwords from ATTACKER (another
    host than the scraper, as on a real network); prints the outcome."""
    import requests
    from requests.adapters import HTTPAdapter

    class FromAttacker(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["source_address"] = (ATTACKER, 0)
            super().init_poolmanager(*args, **kwargs)

    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        with requests.Session() as session:
            session.mount("https://", FromAttacker())
            while time.monotonic() < stop:
                try:
                    answer = session.get(f"{base}/metrics", auth=(USER, f"wrong-{i}-{time.monotonic()}"),
                                         verify=ca, timeout=15)
                    outcome = str(answer.status_code)
                except requests.RequestException as exc:
                    outcome = type(exc).__name__
                with lock:
                    outcomes[outcome] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 30)
    print(json.dumps(dict(outcomes)))


def half_open(daemon: Daemon, kind: str, count: int, sources: int, hold: float) -> dict[str, Any]:
    """`count` TLS connections that never finish the handshake, from `sources` addresses."""
    before = daemon.refused()
    idle = proc_rss_bytes(daemon.pid)
    hello = b""
    if kind == "client_hello":
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = daemon.context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            hello = outgoing.read()
    sockets: list[socket.socket] = []
    try:
        for i in range(count):
            source = f"127.0.0.{10 + i % sources}"
            sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=5,
                                            source_address=(source, 0))
            if hello:
                sock.sendall(hello)
            sockets.append(sock)
        time.sleep(hold)
        held = proc_rss_bytes(daemon.pid)
    finally:
        for sock in sockets:
            sock.close()
    time.sleep(1.0)
    after = proc_rss_bytes(daemon.pid)
    refused = {k: v - before.get(k, 0.0) for k, v in daemon.refused().items() if v - before.get(k, 0.0)}
    return {
        "connections": count,
        "source_addresses": sources,
        "rss_idle_mb": round(idle / 2**20, 1),
        "rss_held_mb": round(held / 2**20, 1),
        "rss_above_idle_mb": round((held - idle) / 2**20, 1),
        "rss_after_close_mb": round(after / 2**20, 1),
        "refused": refused,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="6 s phases instead of 30 s")
    parser.add_argument("--seconds", type=float, help="length of the quiet and of the flood phase")
    parser.add_argument("--blocks", type=int, help="quiet and flood alternate in this many blocks each "
                                                    "(so that a busy machine hits both alike)")
    parser.add_argument("--clients", type=int, default=20, help="flooding clients (default 20)")
    parser.add_argument("--half-open", type=int, default=500, help="half-open connections (default 500)")
    parser.add_argument("--interval", type=float, default=0.5, help="canary interval (s)")
    parser.add_argument("--bcrypt-cost", type=int, default=12,
                        help="cost of the password hash (default 12, ~0.25 s a check)")
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness for this process, the emulator and the daemon (negative: keep "
                             "other work on a shared machine from starving them; needs root)")
    parser.add_argument("--flood-worker", nargs=4, metavar=("BASE", "CA", "SECONDS", "CLIENTS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood_worker:
        # The attacker is another host on a real network: here it shares the CPUs, so it
        # yields them to the daemon, the emulator and the scraper (nice 19).
        os.setpriority(os.PRIO_PROCESS, 0, 19)
        base, ca, seconds, clients = args.flood_worker
        flood_worker(base, ca, float(seconds), int(clients))
        return
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # the children inherit it
    seconds = args.seconds or (6.0 if args.quick else 30.0)
    args.blocks = args.blocks or (1 if args.quick else 3)
    half_open_count = min(args.half_open, 100) if args.quick else args.half_open
    started = time.monotonic()
    results: dict[str, Any] = {}
    spec = {"regions": REGIONS, "default_delay": delay_json(100.0), "replica_activation_seconds": 0.2}
    with tempfile.TemporaryDirectory(prefix="gtmon-auth-flood-") as tmp, EmulatorProcess(spec) as emulator:
        workdir = Path(tmp)
        log(f"emulator {emulator.url} (pid {emulator.pid})")
        create_global_table(emulator.url, "gtmon-canary", REGIONS)
        daemon = Daemon(emulator.url, workdir, args.interval, args.bcrypt_cost)
        try:
            daemon.wait_ready()
            log(f"daemon pid {daemon.pid} on {daemon.base}; quiet for {seconds:.0f} s")
            quiet, flood = new_samples(), new_samples()
            outcomes: Counter[str] = Counter()
            before = daemon.refused()
            block = seconds / args.blocks
            for number in range(args.blocks):
                log(f"block {number + 1}/{args.blocks}: quiet {block:.0f} s, then {args.clients} "
                    f"clients with wrong passwords {block:.0f} s")
                observe(daemon, block, quiet)
                worker = subprocess.Popen(
                    [PYTHON, __file__, "--flood-worker", daemon.base, str(daemon.ca), str(block),
                     str(args.clients)],
                    stdout=subprocess.PIPE, text=True,
                )
                time.sleep(0.5)  # the clients are connecting
                observe(daemon, block - 0.5, flood)
                out, _ = worker.communicate(timeout=block + 60)
                outcomes.update(json.loads(out.strip().splitlines()[-1]))
                time.sleep(1.0)  # the flood's last connections are closed
            results["quiet"] = summary(quiet)
            results["flood"] = summary(flood)
            results["flood"]["attacker_requests"] = dict(outcomes)
            results["flood"]["attacker_requests_per_s"] = round(sum(outcomes.values()) / seconds, 1)
            results["flood"]["refused_by_daemon"] = {
                k: v - before.get(k, 0.0) for k, v in daemon.refused().items() if v - before.get(k, 0.0)
            }
            time.sleep(2.0)
            log(f"half-open: {half_open_count} silent, then {half_open_count} ClientHello-then-nothing")
            results["half_open_silent"] = half_open(daemon, "silent", half_open_count, 50, 3.0)
            results["half_open_client_hello"] = half_open(daemon, "client_hello", half_open_count, 50, 3.0)
            results["rss_mb_at_end"] = round(proc_rss_bytes(daemon.pid) / 2**20, 1)
        finally:
            results["daemon_exit_code"] = daemon.stop()
    quiet, flood = results["quiet"], results["flood"]

    def ratio(key: str) -> float | None:
        if not quiet[key] or flood[key] is None:
            return None
        return round(flood[key] / quiet[key], 2)

    results["error_bound_p50_ratio"] = ratio("error_bound_p50_ms")
    results["error_bound_p99_ratio"] = ratio("error_bound_p99_ms")
    results["loadavg_1m_at_end"] = float(Path("/proc/loadavg").read_text().split()[0])
    results["cpus"] = os.cpu_count()
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    worst_half_open = max(results["half_open_silent"]["rss_above_idle_mb"],
                          results["half_open_client_hello"]["rss_above_idle_mb"])
    targets = {
        "error_bound_ratio_p50_p99": TARGET_BOUND_RATIO,
        "authorized_scrape_p99_ms": TARGET_SCRAPE_P99_MS,
        "half_open_rss_above_idle_mb": TARGET_HALF_OPEN_MB,
    }
    met = {
        "error_bound_p50": (results["error_bound_p50_ratio"] or 99) <= TARGET_BOUND_RATIO,
        "error_bound_p99": (results["error_bound_p99_ratio"] or 99) <= TARGET_BOUND_RATIO,
        "authorized_scrape_p99": (flood["scrape_p99_ms"] or 1e9) <= TARGET_SCRAPE_P99_MS,
        "half_open_rss": worst_half_open <= TARGET_HALF_OPEN_MB,
    }
    params = {
        "quick": args.quick, "phase_seconds": seconds, "blocks": args.blocks, "clients": args.clients,
        "nice": args.nice,
        "attacker": f"{ATTACKER}, nice 19 (another host on a real network)",
        "half_open_connections": half_open_count, "half_open_source_addresses": 50,
        "canary_interval_s": args.interval, "regions": REGIONS, "link_delay": "fixed 100 ms",
        "bcrypt_cost": args.bcrypt_cost, "tls": "P-256 certificate, TLS 1.2-1.3",
        "scraper": "GET /metrics with the right password every 0.2 s, a new TLS connection each",
        "daemon": "python -m monitor run --config FILE (default caps: 64 connections, 16 per client)",
    }
    emit("auth_flood", params, results, targets, met)


if __name__ == "__main__":
    main()
