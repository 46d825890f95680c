"""Prometheus rules, alerts, their promtool unit tests, and the example configs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from deploy_helpers import (
    DEPLOY,
    PROM_DIR,
    REPO,
    assert_ok,
    check_rules_files,
    contract_labels,
    contract_series,
    metric_names,
    run_tool,
)

RULE_FILES = [PROM_DIR / "recording-rules.yml", PROM_DIR / "alerts.yml"]
UNIT_TESTS = sorted((PROM_DIR / "tests").glob("*.yml"))
RUNBOOK = REPO / "docs" / "runbook.md"
RUNBOOK_URL = re.compile(
    r"^https://github\.com/gtmon/gtmon/blob/main/docs/runbook\.md#([a-z0-9-]+)$"
)


def _rules(path: Path) -> list[dict]:
    data = yaml.safe_load(path.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def _alerts() -> list[dict]:
    return [r for r in _rules(PROM_DIR / "alerts.yml") if "alert" in r]


def _recorded() -> set[str]:
    return {r["record"] for path in RULE_FILES for r in _rules(path) if "record" in r}


def test_promtool_check_rules() -> None:
    proc = check_rules_files(RULE_FILES)
    assert_ok(proc)
    assert "SUCCESS" in proc.stdout


def test_promtool_check_rules_rejects_a_broken_rule(tmp_path: Path) -> None:
    # The wrapper must be able to fail: a rule with a PromQL syntax error.
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "groups:\n  - name: g\n    rules:\n      - record: x:y\n        expr: sum(rate(\n"
    )
    assert check_rules_files([bad]).returncode != 0


def test_promtool_unit_tests_pass() -> None:
    assert UNIT_TESTS, "no promtool unit tests found"
    proc = run_tool("promtool", "test", "rules", *UNIT_TESTS, cwd=PROM_DIR / "tests")
    assert_ok(proc)
    assert proc.stdout.count("SUCCESS") + proc.stderr.count("SUCCESS") == len(UNIT_TESTS)


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing: dict[tuple[str, str], int] = {}
    quiet: dict[str, int] = {}
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                name = check["alertname"]
                if check.get("exp_alerts"):
                    for alert in check["exp_alerts"]:
                        key = (name, alert["exp_labels"]["severity"])
                        firing[key] = firing.get(key, 0) + 1
                        # The templated annotations are part of what is tested.
                        assert {"summary", "description", "runbook_url"} <= set(
                            alert.get("exp_annotations", {})
                        ), f"{path.name}: {name} expectation lacks annotations"
                else:
                    quiet[name] = quiet.get(name, 0) + 1
    for alert in _alerts():
        key = (alert["alert"], alert["labels"]["severity"])
        assert key in firing, f"no promtool test shows {key} firing"
        assert alert["alert"] in quiet, f"no promtool test shows {alert['alert']} not firing"


def test_unit_tests_catch_double_counting_across_replicas(tmp_path: Path) -> None:
    # Mutation check: if the conflict alert summed over both replicas instead of
    # taking the max, the tests must notice (the alert would say 2 lost writes).
    copy = tmp_path / "prometheus"
    shutil.copytree(PROM_DIR, copy)
    alerts = copy / "alerts.yml"
    text = alerts.read_text()
    mutated = text.replace(
        "max by (table, winner_region, loser_region) (\n              increase(",
        "sum by (table, winner_region, loser_region) (\n              increase(",
    )
    assert mutated != text, "mutation target not found in alerts.yml"
    alerts.write_text(mutated)
    proc = run_tool("promtool", "test", "rules", "conflicts.yml", cwd=copy / "tests")
    assert proc.returncode != 0, "unit tests did not notice conflicts counted twice"


@pytest.mark.parametrize(
    "alert", _alerts(), ids=lambda a: f"{a['alert']}-{a['labels']['severity']}"
)
def test_alert_metadata(alert: dict) -> None:
    assert alert["labels"]["severity"] in {"warning", "critical"}
    annotations = alert["annotations"]
    for key in ("summary", "description", "runbook_url"):
        assert annotations.get(key, "").strip(), f"{alert['alert']}: missing {key}"
    # Templated with the alert's labels, so a page says which table/region/link.
    assert ("{{" in annotations["summary"] and "$labels" in annotations["description"]) or (
        alert["alert"] == "GtmonMonitorAbsent"  # absent() has no labels to show
    )
    match = RUNBOOK_URL.match(annotations["runbook_url"])
    assert match, f"runbook_url not into docs/runbook.md: {annotations['runbook_url']}"
    anchor = match.group(1)
    runbook = RUNBOOK.read_text()
    assert f'<a id="{anchor}"></a>' in runbook, f"docs/runbook.md has no anchor {anchor!r}"
    assert f"`{alert['alert']}`" in runbook, f"docs/runbook.md does not name {alert['alert']}"


def test_rules_use_only_contract_metrics_and_labels() -> None:
    series = contract_series()
    labels = contract_labels()
    recorded = _recorded()
    allowed = set(series) | recorded | {"up"}
    for path in RULE_FILES:
        for rule in _rules(path):
            used = metric_names(rule["expr"])
            assert used, f"no metric found in {rule['expr']!r}"
            unknown = used - allowed
            assert not unknown, (
                f"{path.name}: {rule.get('record') or rule.get('alert')} uses {unknown}"
            )
            # Label names in by(...)/on(...) and {...} must exist on the metrics
            # used (recording rules carry labels of the contract metrics).
            known = {"job", "instance", "le"}
            for name in used:
                if name in series:
                    known |= set(labels[series[name]])
                elif name in recorded:
                    known |= {lbl for lbls in labels.values() for lbl in lbls}
            grouped = re.findall(r"\b(?:by|on|without)\s*\(([^)]*)\)", rule["expr"])
            matchers = re.findall(r"([a-z_]+)\s*[!=]~?\s*\"", rule["expr"])
            used_labels = [g.strip() for grp in grouped for g in grp.split(",") if g.strip()]
            for label in used_labels + matchers:
                name = rule.get("record") or rule.get("alert")
                assert label in known, f"{name}: label {label!r} is not on {sorted(used)}"


def test_canary_result_values_match_contract() -> None:
    # Alerts and dashboards rely on result="ok" | "error" (see monitor/metrics.py help).
    from monitor.metrics import METRIC_DOCS

    assert "ok or error" in METRIC_DOCS["gtmon_canary_operations_total"][2]


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-compose.yml"])
def test_promtool_check_config(config: str) -> None:
    proc = run_tool("promtool", "check", "config", PROM_DIR / config)
    assert_ok(proc)
    data = yaml.safe_load((PROM_DIR / config).read_text())
    jobs = {job["job_name"]: job for job in data["scrape_configs"]}
    assert "gtmon" in jobs, "GtmonMonitorDown relies on job=gtmon"
    targets = [t for sc in jobs["gtmon"]["static_configs"] for t in sc["targets"]]
    assert all(t.endswith(":9108") for t in targets), targets
    assert sorted(data["rule_files"]) == ["alerts.yml", "recording-rules.yml"]


def test_amtool_check_config() -> None:
    proc = run_tool("amtool", "check-config", DEPLOY / "alertmanager" / "alertmanager.yml")
    assert_ok(proc)
    assert "SUCCESS" in proc.stdout


def test_amtool_check_config_rejects_a_broken_config(tmp_path: Path) -> None:
    bad = tmp_path / "alertmanager.yml"
    bad.write_text("route:\n  receiver: nobody\nreceivers: []\n")
    assert run_tool("amtool", "check-config", bad).returncode != 0
