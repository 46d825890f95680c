"""`gtmon emulator` as a real process: it starts, serves, and exits cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from monitor.emulator.control import ControlClient, ControlError

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_emulator_command_serves_and_exits_cleanly_on_signal(stop: signal.Signals) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "monitor", "emulator", "--port", str(port), "--delay-ms", "10"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ControlClient(url, timeout=1).state()
                break
            except ControlError:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "the emulator never started answering"
                time.sleep(0.1)
        ddb = boto3.client(
            "dynamodb",
            region_name="eu-west-1",
            endpoint_url=url,
            aws_access_key_id="t",
            aws_secret_access_key="t",
            config=Config(retries={"max_attempts": 0}, read_timeout=5),
        )
        assert ddb.list_tables()["TableNames"] == []

        process.send_signal(stop)
        out, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, f"exit status {process.returncode} after {stop.name}: {err}"
    assert "Traceback" not in err
    assert f"on {url}" in out
    with socket.socket() as sock:  # the port is released
        sock.bind(("127.0.0.1", port))
