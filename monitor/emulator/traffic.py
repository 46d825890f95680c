"""Demo traffic for the sandbox: orders moving through their states in every region.

Most writes are ordinary (one region updates an order it has already seen),
and every so often two regions update the same order within a few
milliseconds, before either has replicated: a real last-writer-wins conflict,
the seed's "Shipped" against "Delivered". Rates are bounded so the sandbox
stays light on a laptop.

Most writes store the writing region in ``UpdatedIn`` (the sandbox's
``writer_attribute``), as a well-behaved service would; about a third of the
ordinary writes and every third staged conflict leave it out, as an old batch
job or a hand fix with the AWS CLI would. Each write is a whole-item put, so a
write without the attribute never carries an earlier writer's region.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

__all__ = ["ORDERS_TABLE", "DemoTraffic", "create_orders_table"]

ORDERS_TABLE = "Orders"
STATUSES = ("Pending", "Paid", "Packed", "Shipped", "Delivered")


def _client(endpoint: str, region: str) -> Any:
    return boto3.client(
        "dynamodb",
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id="sandbox",
        aws_secret_access_key="sandbox",
        config=BotoConfig(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=2, read_timeout=5),
    )


def create_orders_table(endpoint: str, regions: list[str], timeout: float = 30.0) -> None:
    """The seed's table: Orders (OrderID, CustomerID) in the first region, replicas in the rest."""
    home = _client(endpoint, regions[0])
    try:
        home.describe_table(TableName=ORDERS_TABLE)
        return
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
    home.create_table(
        TableName=ORDERS_TABLE,
        KeySchema=[
            {"AttributeName": "OrderID", "KeyType": "HASH"},
            {"AttributeName": "CustomerID", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "OrderID", "AttributeType": "S"},
            {"AttributeName": "CustomerID", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    if len(regions) > 1:
        home.update_table(
            TableName=ORDERS_TABLE,
            ReplicaUpdates=[{"Create": {"RegionName": r}} for r in regions[1:]],
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replicas = home.describe_table(TableName=ORDERS_TABLE)["Table"].get("Replicas", [])
        if all(r["ReplicaStatus"] == "ACTIVE" for r in replicas):
            return
        time.sleep(0.2)
    raise TimeoutError("Orders replicas did not become ACTIVE")


class DemoTraffic:
    """Background writers, one per region, plus an occasional deliberate conflict."""

    def __init__(
        self,
        endpoint: str,
        regions: list[str],
        writes_per_second: float = 1.0,
        conflict_every_seconds: float = 20.0,
        orders: int = 50,
        seed: int | None = None,
        unattributed_fraction: float = 1 / 3,
        unattributed_conflict_every: int = 3,
    ) -> None:
        self.endpoint = endpoint
        self.regions = regions
        self.writes_per_second = writes_per_second
        self.conflict_every_seconds = conflict_every_seconds
        self.orders = orders
        # Ordinary writes without UpdatedIn, at this rate; and every n-th staged conflict
        # (the 3rd, 6th, ...: the first ones carry it); 0 turns either off.
        self.unattributed_fraction = unattributed_fraction
        self.unattributed_conflict_every = unattributed_conflict_every
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.writes = 0
        self.conflicts_staged = 0
        self.unattributed_writes = 0
        self.unattributed_conflicts = 0
        self.errors = 0

    def start(self) -> None:
        for region in self.regions:
            thread = threading.Thread(
                target=self._writer, args=(region,), daemon=True, name=f"traffic-{region}"
            )
            thread.start()
            self._threads.append(thread)
        if len(self.regions) > 1 and self.conflict_every_seconds > 0:
            thread = threading.Thread(target=self._conflicts, daemon=True, name="traffic-conflicts")
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()

    def _key(self, order: int) -> dict[str, Any]:
        return {"OrderID": {"S": f"order-{order:04d}"}, "CustomerID": {"S": f"customer-{order % 17:02d}"}}

    def _put(self, client: Any, order: int, status: str, region: str, attributed: bool = True) -> None:
        item = {
            **self._key(order),
            "OrderStatus": {"S": status},
            "UpdatedAt": {"N": f"{time.time():.3f}"},
        }
        if attributed:
            item["UpdatedIn"] = {"S": region}
        try:
            client.put_item(TableName=ORDERS_TABLE, Item=item)
            self.writes += 1
            if not attributed:
                self.unattributed_writes += 1
        except (ClientError, BotoCoreError):
            self.errors += 1  # an injected outage or throttle; the demo carries on
        except (AttributeError, KeyError, TypeError, ValueError):
            # `gtmon fault garbage`: botocore's parser trips over a body of the wrong shape
            # with whatever the shape hits. Counted; the writer thread must not die of it.
            self.errors += 1

    def _writer(self, region: str) -> None:
        client = _client(self.endpoint, region)
        rng = random.Random(self._rng.random())
        # Each region owns a slice of orders, so ordinary traffic does not conflict.
        index = self.regions.index(region)
        while not self._stop.wait(rng.expovariate(self.writes_per_second)):
            order = rng.randrange(index, self.orders, len(self.regions))
            attributed = rng.random() >= self.unattributed_fraction
            self._put(client, order, rng.choice(STATUSES), region, attributed)

    def _conflicts(self) -> None:
        clients = {region: _client(self.endpoint, region) for region in self.regions}
        rng = random.Random(self._rng.random())
        while not self._stop.wait(self.conflict_every_seconds * rng.uniform(0.5, 1.5)):
            first, second = rng.sample(self.regions, 2)
            order = rng.randrange(self.orders, self.orders * 2)  # orders nobody else touches
            every = self.unattributed_conflict_every
            attributed = not (every > 0 and (self.conflicts_staged + 1) % every == 0)
            self._put(clients[first], order, "Shipped", first, attributed)
            self._put(clients[second], order, "Delivered", second, attributed)
            self.conflicts_staged += 1
            if not attributed:
                self.unattributed_conflicts += 1
