"""Region-loss reports on hand-made pending writes: outcomes fill in as writes end."""

from __future__ import annotations

import json

from monitor.streams.atrisk import RegionLossReports
from monitor.streams.pending import AtRiskWrite, Resolution

US, EU, AP = "us-east-1", "eu-west-1", "ap-southeast-1"


def write(wid: int, *missing: str, key: bool = True) -> AtRiskWrite:
    return AtRiskWrite(wid, {"OrderID": {"S": f"o-{wid}"}} if key else None, None, False,
                       100.0 + wid, 100.2 + wid, tuple(missing), ())


def test_each_listed_write_ends_delivered_superseded_or_missing() -> None:
    reports = RegionLossReports()
    reports.region_down("Orders", US, 200.0, [write(1, EU, AP), write(2, EU), write(3, EU)])
    assert reports.is_open("Orders", US)
    reports.resolved("Orders", Resolution(1, US, EU, "delivered", 0.5))
    reports.resolved("Orders", Resolution(1, US, AP, "delivered", 0.5))
    reports.resolved("Orders", Resolution(2, US, EU, "superseded", None))
    reports.resolved("Orders", Resolution(9, US, EU, "delivered", 0.5))  # not listed: ignored
    reports.region_up(US, 230.0)
    [incident] = reports.incidents("Orders", US)
    report = incident.to_json()
    assert (report["down_at"], report["returned_at"], report["writes"]) == (200.0, 230.0, 3)
    assert report["outcomes"] == {"delivered": 2, "superseded": 1, "missing": 1}
    assert {w["id"]: w["outcomes"] for w in report["list"]} == {
        1: {EU: "delivered", AP: "delivered"}, 2: {EU: "superseded"}, 3: {EU: "missing"},
    }


def test_writes_beyond_the_key_cap_are_counted_not_listed() -> None:
    reports = RegionLossReports()
    incident = reports.region_down("Orders", US, 200.0, [write(1, EU), write(2, EU, key=False)])
    report = incident.to_json()
    assert (report["writes"], report["unlisted"], len(report["list"])) == (2, 1, 1)


def test_incidents_survive_a_restart_and_keep_collecting_outcomes() -> None:
    reports = RegionLossReports()
    reports.region_down("Orders", US, 200.0, [write(1, EU), write(2, EU)])
    reports.resolved("Orders", Resolution(1, US, EU, "delivered", 0.5))
    again = RegionLossReports()
    again.restore(json.loads(json.dumps(reports.snapshot())))
    assert again.any_open(US)
    again.resolved("Orders", Resolution(2, US, EU, "delivered", 0.5))
    assert again.incidents()[0].to_json()["outcomes"] == {"delivered": 2}


def test_only_the_last_few_incidents_of_a_region_are_kept() -> None:
    reports = RegionLossReports(keep=2)
    for i in range(4):
        reports.region_down("Orders", US, 100.0 * i, [write(i, EU)])
        reports.region_up(US, 100.0 * i + 10)
    assert [i.down_at for i in reports.incidents()] == [200.0, 300.0]
    reports.resolved("Orders", Resolution(0, US, EU, "delivered", 0.5))  # a forgotten one
    assert reports.incidents()[0].to_json()["outcomes"] == {"missing": 1}


def test_the_daemon_glue_counts_unlisted_writes_and_logs_each_listed_one_when_a_region_goes_down(
) -> None:
    from prometheus_client import CollectorRegistry
    from structlog.testing import capture_logs

    from monitor.conflicts import DetectorSettings, Observation, canonical_image
    from monitor.metrics import Metrics
    from monitor.streams.risk import WritesAtRisk

    metrics = Metrics(CollectorRegistry(), "test")
    marks = {("Orders", r): 500.0 for r in (US, EU, AP)}
    risk = WritesAtRisk(metrics, lambda: 130.0, lambda: marks, cap_per_link=2, keep_images=False)
    risk.add_table("Orders", [US, EU, AP], DetectorSettings())
    for i in range(3):
        key = canonical_image({"OrderID": {"S": f"o-{i}"}})
        risk.observe(Observation(
            "Orders", US, key, "INSERT", None, canonical_image({"OrderID": {"S": f"o-{i}"}}),
            str(i + 1), created_at=100.0 + i, observed_at=100.5 + i, observed_after=100.0 + i,
        ), fresh=True)

    def sample(name: str) -> float | None:
        labels = {"table": "Orders", "source_region": US, "target_region": EU}
        return metrics.registry.get_sample_value(name, labels)

    assert sample("gtmon_replication_pending_writes") == 3
    assert sample("gtmon_replication_pending_truncated_total") == 1
    assert sample("gtmon_replication_pending_oldest_seconds") == 130.0 - 100.25
    with capture_logs() as logs:
        risk.tick({US: True, EU: True, AP: True})
        risk.tick({US: False, EU: True, AP: True})
    listed = [e for e in logs if e["event"] == "write_at_risk"]
    assert [e["key"]["OrderID"]["S"] for e in listed] == ["o-0", "o-1"]
    [summary] = [e for e in logs if e["event"] == "writes_at_risk"]
    assert (summary["writes"], summary["unlisted"]) == (3, 1)
    assert risk.at_risk(US)["incidents"][0]["outcomes"] == {"missing": 6}
