"""Creating the dedicated canary table as a global table (`gtmon init`)."""

from __future__ import annotations

import asyncio
from typing import Any

from monitor.aws import AwsCallError, AwsClients, NotFound

__all__ = ["CANARY_KEY_ATTRIBUTE", "ensure_canary_table"]

CANARY_KEY_ATTRIBUTE = "pk"


async def _wait_active(
    clients: AwsClients, region: str, table: str, timeout: float
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        description = (await clients.call(region, "dynamodb", "describe_table", TableName=table))[
            "Table"
        ]
        replicas = description.get("Replicas", [])
        if description["TableStatus"] == "ACTIVE" and all(
            r.get("ReplicaStatus") == "ACTIVE" for r in replicas
        ):
            return description
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{table} in {region} is not ACTIVE after {timeout:.0f} s")
        await asyncio.sleep(0.5)


async def ensure_canary_table(
    clients: AwsClients, table: str, regions: list[str], ttl_attribute: str, timeout: float = 600.0
) -> list[str]:
    """Create `table` in regions[0] and replicas in the others; idempotent. Returns actions taken."""
    home = regions[0]
    actions: list[str] = []
    try:
        description = (
            await clients.call(
                home, "dynamodb", "describe_table", expected=(NotFound,), TableName=table
            )
        )["Table"]
    except NotFound:
        await clients.call(
            home,
            "dynamodb",
            "create_table",
            TableName=table,
            KeySchema=[{"AttributeName": CANARY_KEY_ATTRIBUTE, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": CANARY_KEY_ATTRIBUTE, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        actions.append(f"created {table} in {home}")
        description = await _wait_active(clients, home, table, timeout)
    try:
        await clients.call(
            home,
            "dynamodb",
            "update_time_to_live",
            TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl_attribute},
        )
    except AwsCallError as error:
        # Already enabled answers ValidationException on AWS; anything else is worth a line.
        if error.code != "ValidationException":
            raise
    present = {r["RegionName"] for r in description.get("Replicas", [])} | {home}
    missing = [r for r in regions if r not in present]
    if missing:
        await clients.call(
            home,
            "dynamodb",
            "update_table",
            TableName=table,
            ReplicaUpdates=[{"Create": {"RegionName": r}} for r in missing],
        )
        actions.append(f"added replicas of {table} in {', '.join(missing)}")
    await _wait_active(clients, home, table, timeout)
    # The caller presents them: `gtmon init` prints them (a log line too would say each
    # twice), the sandbox logs them.
    return actions
