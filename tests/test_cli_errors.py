"""CLI error paths: one clear line, no traceback; `gtmon check --timeout` is a deadline."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from monitor.emulator import EmulatorServer
from monitor.emulator.control import ControlClient
from tests.helpers import add_replicas

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(90)


def gtmon(*args: str, env: dict[str, str] | None = None,
          timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})},
    )


def one_clear_line(done: subprocess.CompletedProcess[str], *words: str) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gtmon.yaml"
    path.write_text(
        "regions: [us-east-1, eu-west-1]\n"
        "metrics: {host: 127.0.0.1, port: 0}\n"
        f"streams: {{checkpoint_path: '{tmp_path / 'cp.json'}'}}\n" + text
    )
    return path


def test_an_unknown_aws_profile_is_one_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, "aws: {profile: no-such-profile}\n")
    env = {"AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    one_clear_line(gtmon("run", "--config", str(path), env=env), "gtmon:", "no-such-profile")
    one_clear_line(gtmon("init", "--config", str(path), env=env), "no-such-profile")
    check = gtmon("check", "--config", str(path), "--timeout", "2", env=env)
    assert check.returncode == 3 and "Traceback" not in check.stdout + check.stderr
    assert check.stdout.startswith("GTMON UNKNOWN - ") and "no-such-profile" in check.stdout


@pytest.mark.parametrize(
    ("store", "words"),
    [
        ("dynamodb://gtmon-checkpoints?region=ap-southeast-1", ("ap-southeast-1", "regions")),
        ("dynamodb://gtmon-checkpoints", ("dynamodb://TABLE?region=REGION",)),
    ],
    ids=["region-outside-regions", "no-region"],
)
def test_a_dynamodb_checkpoint_store_the_daemon_cannot_use_is_a_config_error(
    tmp_path: Path, store: str, words: tuple[str, ...]
) -> None:
    path = tmp_path / "gtmon.yaml"
    path.write_text(f"regions: [us-east-1, eu-west-1]\nstreams: {{checkpoint_path: '{store}'}}\n")
    for command in ("run", "validate"):
        args = ("config", "validate", str(path)) if command == "validate" else (
            "run", "--config", str(path))
        done = gtmon(*args)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "checkpoint_path" in done.stderr and all(w in done.stderr for w in words)


def test_a_busy_metrics_port_is_one_line(emu: EmulatorServer, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = tmp_path / "gtmon.yaml"
        path.write_text(
            f"regions: [us-east-1]\naws: {{endpoint_url: '{emu.url}'}}\n"
            f"metrics: {{host: 127.0.0.1, port: {port}}}\nstreams: {{enabled: false}}\n"
        )
        line = one_clear_line(gtmon("run", "--config", str(path)), "cannot serve metrics")
    assert f"127.0.0.1:{port}" in line


def test_check_returns_by_its_timeout_even_when_a_region_never_answers(
    emu: EmulatorServer, client: Any
) -> None:
    client("us-east-1").create_table(
        TableName="gtmon-check", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    add_replicas(client, "gtmon-check", ["us-east-1", "eu-west-1"])
    control = ControlClient(emu.url)
    control.fault("outage", region="eu-west-1", mode="blackhole")
    try:
        started = time.monotonic()
        done = gtmon("check", "--table", "gtmon-check", "--regions", "us-east-1,eu-west-1",
                     "--endpoint", emu.url, "--timeout", "2", timeout=60)
        elapsed = time.monotonic() - started
    finally:
        control.fault("restore", region="eu-west-1")
    # The AWS client alone would wait 5 s x 3 attempts on the write to eu-west-1.
    assert elapsed < 2 + 4, f"check took {elapsed:.1f} s with --timeout 2"  # + interpreter start
    # Unseen at the deadline is CRITICAL; a write that never answered says so.
    assert done.returncode == 2, done.stdout
    lines = done.stdout.splitlines()
    assert lines[0].startswith("GTMON CRITICAL") and "Traceback" not in done.stderr
    assert any("us-east-1 -> eu-west-1" in line and "CRITICAL" in line and "not seen after 2 s"
               in line for line in lines), done.stdout
    assert any("eu-west-1 -> us-east-1" in line and "UNKNOWN" in line
               and "canary write in eu-west-1 not answered within 2 s" in line
               for line in lines), done.stdout
