"""Helpers shared by test folders: polling and turning a table into a global table."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

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
