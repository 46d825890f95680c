"""The watcher leaves gtmon's own canary items out of conflict detection."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from monitor.aws import AwsClients
from monitor.clock import SystemClock
from monitor.config import parse_config
from monitor.conflicts import Detector, DetectorSettings
from monitor.metrics import Metrics
from monitor.streams.reader import StreamRecord
from monitor.streams.watcher import ConflictWatcher


def record(key: str, image: dict) -> StreamRecord:
    data = {
        "Keys": {"OrderID": {"S": key}},
        "NewImage": {"OrderID": {"S": key}, **image},
        "SequenceNumber": "100000000000000000001",
        "ApproximateCreationDateTime": 1_700_000_000,
    }
    return StreamRecord("Orders", "us-east-1", "shard-1", "100000000000000000001",
                        {"eventName": "INSERT", "dynamodb": data}, 1_700_000_000.5, True, None)


def test_canary_items_embedded_in_a_monitored_table_are_not_tracked(tmp_path):
    config = parse_config({
        "regions": ["us-east-1", "eu-west-1"],
        "tables": [{"name": "Orders", "canary_key": {"OrderID": "__gtmon__#{instance}#{source}"}}],
        "streams": {"checkpoint_path": str(tmp_path / "cp.json")},
    })
    metrics = Metrics(CollectorRegistry(), "test")
    watcher = ConflictWatcher(config, AwsClients(config.aws, metrics), metrics, SystemClock())
    detector = Detector({"Orders": ["us-east-1", "eu-west-1"]}, DetectorSettings())
    watcher.detectors["Orders"] = detector
    watcher._on_record(record("__gtmon__#a#us-east-1", {"gtmon_seq": {"N": "1"}}))
    assert detector.tracked_keys("Orders") == 0
    watcher._on_record(record("order-1", {"Status": {"S": "Paid"}}))
    assert detector.tracked_keys("Orders") == 1
    # An application item carrying the canary's mark attribute is still judged: only the
    # canary's key makes a canary.
    watcher._on_record(record("order-2", {"gtmon_seq": {"N": "7"}}))
    assert detector.tracked_keys("Orders") == 2
    watcher._on_record(record("__gtmon__#a#sa-east-1", {"gtmon_seq": {"N": "8"}}))
    assert detector.tracked_keys("Orders") == 3  # not a region of this table
