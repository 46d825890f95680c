"""bench/conflicts.py's `score`, the scorer of the conflict benches and of the soak's
`Orders` figures: pure, on hand-made truth and verdicts.

A verdict names its lost write by image. The emulator's truth keeps each image as the
client spelt it; the daemon logs the canonical image, numbers as DynamoDB stores them
(leading and trailing zeros trimmed). The demo traffic writes `UpdatedAt` with three
decimals, so one write in ten ends in 0: compared as written, the soak scored 13 right
verdicts on `Orders` as naming a write that was not lost.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from tests.bench.bench_module import load_bench


@pytest.fixture(scope="module")
def bench_conflicts() -> ModuleType:
    return load_bench("conflicts")


KEY = {"OrderID": {"S": "order-0073"}, "CustomerID": {"S": "customer-05"}}


def _write(write_id: int, origin: str, status: str, at: str) -> dict[str, Any]:
    return {"write_id": write_id, "table": "Orders", "key": KEY, "origin": origin, "ts": write_id,
            "accepted_at": 100.0 + write_id, "parent_id": None,
            "image": {**KEY, "OrderStatus": {"S": status}, "UpdatedAt": {"N": at}}}


def _verdict(loser: str, winner: str, lost_at: str, status: str = "Shipped") -> dict[str, Any]:
    return {"event": "lww_conflict", "table": "Orders", "key": KEY, "certain": True,
            "loser_region": loser, "winner_region": winner, "reported_at": 120.0,
            "lost_image": {**KEY, "OrderStatus": {"S": status}, "UpdatedAt": {"N": lost_at}}}


def _truth() -> dict[str, Any]:
    """Two staged conflicts on one item, each a Shipped write from eu-west-1 lost to a
    Delivered write from us-east-1; the first Shipped was written at ...803.060."""
    writes = [_write(1, "eu-west-1", "Shipped", "1796075803.060"),
              _write(2, "us-east-1", "Delivered", "1796075803.071"),
              _write(3, "eu-west-1", "Shipped", "1796075831.275"),
              _write(4, "us-east-1", "Delivered", "1796075831.290")]
    return {"writes": writes, "lost": [{"write_id": 1, "lost_to": 2}, {"write_id": 3, "lost_to": 4}]}


def test_a_verdict_naming_its_lost_write_with_trailing_zeros_trimmed_is_a_true_positive(
        bench_conflicts: ModuleType) -> None:
    # The daemon logs 1796075803.06 for the 1796075803.060 the client wrote: one value.
    verdicts = [_verdict("eu-west-1", "us-east-1", "1796075803.06"),
                _verdict("eu-west-1", "us-east-1", "1796075831.275")]
    result = bench_conflicts.score(_truth(), verdicts)
    assert (result["tp"], result["fp"], result["fn"]) == (2, 0, 0)
    assert result["fp_detail"] == {}
    assert result["precision"] == 1.0 and result["recall"] == 1.0


def test_a_verdict_naming_a_write_that_was_not_lost_is_still_wrong(bench_conflicts: ModuleType) -> None:
    # Numbers compared by value, not leniently: 803.061 is no lost write of the item, and a
    # Delivered image (the winner's) is not either, whatever the regions say.
    verdicts = [_verdict("eu-west-1", "us-east-1", "1796075803.061"),
                _verdict("eu-west-1", "us-east-1", "1796075831.29", status="Delivered")]
    result = bench_conflicts.score(_truth(), verdicts)
    assert result["tp"] == 0
    assert result["fp_detail"] == {"fp_write_not_lost": 2}


def test_each_verdict_is_matched_to_the_write_its_image_names_not_another_of_the_item(
        bench_conflicts: ModuleType) -> None:
    # The item lost two writes from the same region to the same region; a verdict naming
    # the second one by image takes the second, so a verdict for the first still finds it.
    verdicts = [_verdict("eu-west-1", "us-east-1", "1796075831.2750"),
                _verdict("eu-west-1", "us-east-1", "1796075803.06")]
    result = bench_conflicts.score(_truth(), verdicts)
    assert (result["tp"], result["fp"]) == (2, 0)
    assert sorted(result["_latencies"]) == [17.0, 19.0]
