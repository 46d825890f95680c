"""Benchmark: the memory the conflict detector holds per stream record while it must wait.

    python bench/held_records.py [--records N]

While one region's reader is stalled (an outage, a black hole) no item can be judged, so
every record of every watched table is held until it returns; during a paused link the
items written across it are. That memory is the daemon's high-water mark after a long
fault (bench/soak.py's RSS check). Here: N records of 500 items written in turn from two
regions, each one GetRecords answer decoded from JSON as the reader gets it, turned into
an Observation the way the stream watcher does, and fed to a Detector whose third region
has read nothing. Bytes per held record are tracemalloc's growth over the feed. Prints
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor.conflicts import Detector, DetectorSettings, from_stream_record

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-1"]
ITEMS = 500
STATUSES = ("Paid", "Shipped", "Delivered")


def answers(n: int) -> list[tuple[str, str]]:
    """(region, GetRecords answer body) per record: item i % 500 from version i // 500 to
    the next, always from the same region (each record's old image is its previous new)."""
    out = []
    for i in range(n):
        region = REGIONS[i % 2]
        item, version = f"o{i % ITEMS:05d}", i // ITEMS
        old, new = ({"OrderID": {"S": item}, "Status": {"S": STATUSES[v % 3]},
                     "UpdatedIn": {"S": region}, "Version": {"N": str(v)}, "Total": {"N": "12.5"}}
                    for v in (version, version + 1))
        record = {"eventName": "MODIFY", "dynamodb": {
            "Keys": {"OrderID": {"S": item}}, "OldImage": old, "NewImage": new,
            "SequenceNumber": str(10**20 + i), "SizeBytes": 120,
            "ApproximateCreationDateTime": 1_700_000_000 + i // 10}}
        out.append((region, json.dumps({"Records": [record]})))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000)
    args = parser.parse_args()
    feed = answers(args.records)
    detector = Detector({"Orders": REGIONS}, DetectorSettings(
        settle_seconds=5, version_attribute="Version", writer_attribute="UpdatedIn"))
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for k, (region, body) in enumerate(feed):
        record = json.loads(body)["Records"][0]
        detector.observe(from_stream_record("Orders", region, record, 1000.0 + k / 10,
                                            999.9 + k / 10))
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    print(json.dumps({"bench": "held_records", "params": {"records": args.records,
                      "items": ITEMS, "attributes": 5},
                      "results": {"bytes_per_held_record": round(grown / args.records),
                                  "held_keys": detector.tracked_keys("Orders")}}))


if __name__ == "__main__":
    main()
