"""`gtmon fault` finds the emulator the user started: --endpoint, else $GTMON_ENDPOINT, else
port 8000, and says on stderr which one it used."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from monitor.cli import DEFAULT_ENDPOINT, fault_endpoint
from monitor.emulator import EmulatorServer


def _closed_port_url() -> str:
    """A loopback URL nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _fault(*args: str, env_endpoint: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GTMON_ENDPOINT"}
    if env_endpoint is not None:
        env["GTMON_ENDPOINT"] = env_endpoint
    return subprocess.run(
        [sys.executable, "-m", "monitor", "fault", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _paused_links(emu: EmulatorServer) -> set[str]:
    links = emu.emulator.state()["global_tables"]["links"]
    return {name for name, link in links.items() if link["paused"]}


def test_fault_endpoint_prefers_the_flag_then_the_environment_then_port_8000():
    assert fault_endpoint("http://127.0.0.1:1234", {"GTMON_ENDPOINT": "http://127.0.0.1:9"}) == (
        "http://127.0.0.1:1234",
        "--endpoint",
    )
    assert fault_endpoint(None, {"GTMON_ENDPOINT": " http://127.0.0.1:9 "}) == (
        "http://127.0.0.1:9",
        "GTMON_ENDPOINT",
    )
    for environ in ({}, {"GTMON_ENDPOINT": ""}, {"GTMON_ENDPOINT": "  "}):
        endpoint, source = fault_endpoint(None, environ)
        assert endpoint == DEFAULT_ENDPOINT == "http://127.0.0.1:8000"
        assert source.startswith("default") and "GTMON_ENDPOINT" in source


def test_fault_uses_gtmon_endpoint_from_the_environment_and_says_so(emu: EmulatorServer):
    done = _fault("pause", "--from", "us-east-1", "--to", "eu-west-1", env_endpoint=emu.url)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"links": ["us-east-1->eu-west-1"], "paused": True}
    assert _paused_links(emu) == {"us-east-1->eu-west-1"}
    assert done.stderr.splitlines() == [f"gtmon fault pause: emulator {emu.url} (GTMON_ENDPOINT)"]

    cleared = _fault("clear", env_endpoint=emu.url)
    assert cleared.returncode == 0, cleared.stderr
    assert _paused_links(emu) == set()


def test_fault_endpoint_flag_wins_over_the_environment(emu: EmulatorServer):
    done = _fault("pause", "--endpoint", emu.url, env_endpoint=_closed_port_url())

    assert done.returncode == 0, done.stderr
    assert len(_paused_links(emu)) == 6  # every link of the three regions
    assert done.stderr.splitlines() == [f"gtmon fault pause: emulator {emu.url} (--endpoint)"]


def test_fault_against_an_unreachable_gtmon_endpoint_names_it_and_never_tries_port_8000():
    dead = _closed_port_url()
    done = _fault("resume", env_endpoint=dead)

    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines[0] == f"gtmon fault resume: emulator {dead} (GTMON_ENDPOINT)"
    assert f"cannot reach the emulator at {dead}" in lines[1]
    assert DEFAULT_ENDPOINT not in done.stderr
    assert "Traceback" not in done.stderr
