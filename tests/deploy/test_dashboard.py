"""The Grafana dashboard: generated from dashboards/build.py, structurally sound,
every query on contract metrics and valid PromQL (parsed by promtool)."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from deploy_helpers import (
    PROM_DIR,
    REPO,
    assert_ok,
    check_rules_files,
    contract_labels,
    contract_series,
    metric_names,
)

DASHBOARD = REPO / "dashboards" / "gtmon.json"
DS_REF = {"type": "prometheus", "uid": "${datasource}"}

# Values substituted for the dashboard variables before parsing with promtool.
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$datasource": "prometheus",
    "$source_region": ".*",
    "$target_region": ".*",
    "$region": ".*",
    "$table": ".*",
}


def _load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gtmon_dashboard_build", REPO / "dashboards" / "build.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return panels


def _queries(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            yield panel, target


def _substitute(expr: str) -> str:
    # Longest names first, so $source_region is not read as $s + ...
    for var in sorted(SUBSTITUTIONS, key=len, reverse=True):
        expr = expr.replace(var, SUBSTITUTIONS[var])
        expr = expr.replace("${" + var[1:] + "}", SUBSTITUTIONS[var])
    assert "$" not in expr, f"unknown variable left in {expr!r}"
    return expr


def test_committed_json_is_what_build_py_generates() -> None:
    build = _load_build()
    assert DASHBOARD.read_text(encoding="utf-8") == build.render(), (
        "dashboards/gtmon.json is stale: run python dashboards/build.py and commit it"
    )
    assert build.main(["--check"]) == 0


def test_current_schema_and_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] >= 39  # Grafana 10.3+; the SDK writes the current one
    assert dashboard["uid"] and len(dashboard["uid"]) <= 40
    assert dashboard["title"]
    assert "id" not in dashboard or dashboard["id"] is None  # provisioning assigns it


def test_datasource_is_a_variable_and_never_hard_coded(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"

    def walk(node: Any, path: str) -> Iterator[tuple[str, Any]]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield f"{path}.{key}", value
                yield from walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, f"{path}[{i}]")

    for path, value in walk(dashboard, ""):
        if path.endswith(".datasource") and path != ".templating.list[0].datasource":
            assert value == DS_REF, f"{path} = {value!r}, expected the ${{datasource}} variable"
        if path.endswith(".uid") and path != ".uid":
            assert value == "${datasource}", f"hard-coded uid at {path}: {value!r}"


def test_variables_for_table_and_regions(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name in ("table", "source_region", "target_region", "region"):
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"] == DS_REF
        assert var["includeAll"] and var["multi"] and var["allValue"] == ".*"
        query = var["query"] if isinstance(var["query"], str) else var["query"]["query"]
        assert re.fullmatch(r"label_values\(.+, *\w+\)", query), query
    # Every variable is used by some query, and every query variable exists.
    exprs = "\n".join(t["expr"] for _p, t in _queries(dashboard))
    for name in ("table", "source_region", "target_region", "region"):
        assert f"${name}" in exprs, f"variable {name} is not used by any panel"
    for used in re.findall(r"\$(\w+)", exprs):
        assert used in variables or used.startswith("__"), f"query uses undefined ${used}"


def test_panels_structure(dashboard: dict[str, Any]) -> None:
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    assert all(isinstance(i, int) and i > 0 for i in ids)
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(pos), panel["title"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24
        cells = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not cells & occupied, f"panel {panel['title']!r} overlaps another"
        occupied |= cells
        assert panel.get("title"), f"panel {panel['id']} has no title"
        if panel["type"] == "row":
            continue
        assert panel.get("description"), f"panel {panel['title']!r} has no description"
        assert panel["datasource"] == DS_REF, panel["title"]
        targets = panel.get("targets") or []
        assert targets, f"panel {panel['title']!r} has no queries"
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in targets:
            assert target["datasource"] == DS_REF, panel["title"]
            assert target.get("expr", "").strip(), f"empty expr in {panel['title']!r}"


def test_queries_use_only_contract_metrics_and_labels(dashboard: dict[str, Any]) -> None:
    series = contract_series()
    labels = contract_labels()
    for panel, target in _queries(dashboard):
        used = metric_names(target["expr"])
        assert used, f"{panel['title']}: no metric in {target['expr']!r}"
        unknown = used - set(series)
        assert not unknown, f"{panel['title']}: {unknown} not in the metric contract"
        known = {"le", "instance", "job"}
        for name in used:
            known |= set(labels[series[name]])
        expr = target["expr"]
        grouped = re.findall(r"\b(?:by|without|on)\s*\(([^)]*)\)", expr)
        matchers = re.findall(r"([a-z_]+)\s*[!=]~?\s*\"", expr)
        legend = re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", ""))
        for label in [g.strip() for grp in grouped for g in grp.split(",") if g.strip()]:
            assert label in known, f"{panel['title']}: by/on label {label!r} not on {used}"
        for label in matchers + legend:
            assert label in known, f"{panel['title']}: label {label!r} not on {used}"


def test_required_content(dashboard: dict[str, Any]) -> None:
    exprs = [t["expr"] for _p, t in _queries(dashboard)]
    used = set().union(*(metric_names(e) for e in exprs))
    for series in (
        "gtmon_replication_lag_seconds_bucket",
        "gtmon_replication_oldest_pending_seconds",
        "gtmon_replication_heartbeat_age_seconds",
        "gtmon_region_up",
        "gtmon_lww_conflicts_total",
        "gtmon_stream_lag_seconds",
        "gtmon_stream_shards",
        "gtmon_stream_records_total",
        "gtmon_aws_request_errors_total",
        "gtmon_aws_request_duration_seconds_bucket",
        "gtmon_canary_operations_total",
        "gtmon_canary_lost_total",
    ):
        assert series in used, f"no panel shows {series}"
    # Conflicts by winner and loser region, errors by code.
    assert any(
        "gtmon_lww_conflicts_total" in e and "winner_region, loser_region" in e for e in exprs
    )
    assert any("gtmon_aws_request_errors_total" in e and "code" in e for e in exprs)
    # Lag percentiles over time: p50, p95, p99 per pair.
    assert {q for e in exprs for q in re.findall(r"histogram_quantile\((0\.\d+)", e)} >= {
        "0.5",
        "0.95",
        "0.99",
    }


def test_lag_matrix_is_a_coloured_source_by_target_grid(dashboard: dict[str, Any]) -> None:
    matrices = [
        p
        for p in _panels(dashboard)
        if p["type"] == "table"
        and "gtmon_replication_lag_seconds_bucket" in p["targets"][0]["expr"]
    ]
    assert len(matrices) == 1
    panel = matrices[0]
    target = panel["targets"][0]
    assert "histogram_quantile(0.99" in target["expr"] and target["instant"] is True
    (transform,) = [t for t in panel["transformations"] if t["id"] == "groupingToMatrix"]
    assert transform["options"]["rowField"] == "source_region"
    assert transform["options"]["columnField"] == "target_region"
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults["custom"]["cellOptions"]["type"] == "color-background"
    assert defaults["color"]["mode"] == "thresholds"
    steps = [s["value"] for s in defaults["thresholds"]["steps"]]
    # Same thresholds as the GtmonReplicationLagHigh warning and critical alerts.
    alerts = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    lag_alerts = [
        r
        for g in alerts["groups"]
        for r in g["rules"]
        if r.get("alert") == "GtmonReplicationLagHigh"
    ]
    alert_thresholds = sorted(float(r["expr"].rsplit(">", 1)[1]) for r in lag_alerts)
    assert steps[0] is None and steps[1:] == alert_thresholds


def test_every_query_is_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    # promtool parses each expression (variables substituted) as a recording rule.
    rules = []
    for panel, target in _queries(dashboard):
        rules.append(
            {
                "record": f"dashboard:panel_{panel['id']}:{target['refId'].lower()}",
                "expr": _substitute(target["expr"]),
            }
        )
    # The variables' label_values(selector, label) must hold a valid selector.
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"] if isinstance(var["query"], str) else var["query"]["query"]
            selector = re.fullmatch(r"label_values\((.+), *\w+\)", query).group(1)  # type: ignore[union-attr]
            rules.append(
                {"record": f"dashboard:variable:{var['name']}", "expr": _substitute(selector)}
            )
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = check_rules_files([path])
    assert_ok(proc)
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout


def test_promql_check_catches_a_broken_query(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    bad = {
        "record": "dashboard:bad",
        "expr": _substitute('sum by (region (gtmon_region_up{region=~"$region"})'),
    }
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [bad]}]}))
    assert check_rules_files([path]).returncode != 0
