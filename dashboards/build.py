"""Build the gtmon Grafana dashboard (dashboards/gtmon.json) in code.

    python dashboards/build.py           # (re)write dashboards/gtmon.json
    python dashboards/build.py --check   # exit 1 if the committed JSON is stale

Written with grafana-foundation-sdk so that panels, queries and layout are
reviewed as code, and the committed JSON (what Grafana provisions as-is) is
always exactly what this script produces: tests/deploy/test_dashboard.py fails
otherwise. The queries follow the metric contract in monitor/metrics.py.

Two gtmon replicas usually run side by side (they differ in `instance`): lag
histograms and AWS calls are summed across them (independent measurements),
conflict and stream-record counters take the max (both read the same streams).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

OUTPUT = Path(__file__).resolve().parent / "gtmon.json"
UID = "gtmon-global-tables"

# Every panel and query goes through the datasource variable: no hard-coded uid.
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")

# Label selectors built from the dashboard variables.
PAIR_SEL = 'table=~"$table", source_region=~"$source_region", target_region=~"$target_region"'
TABLE_REGION_SEL = 'table=~"$table", region=~"$region"'
REGION_SEL = 'region=~"$region"'
TABLE_SEL = 'table=~"$table"'
# Links of canary tables and of monitored tables (pending writes from the streams) alike.
PENDING_BY_TABLE = (
    '{__name__=~"gtmon_replication_oldest_pending_seconds|gtmon_replication_pending_writes", '
    'table=~"$table"}'
)

# GtmonReplicationBacklog (deploy/prometheus/alerts.yml) fires above this RPO exposure.
BACKLOG_S = 60
# Lag thresholds match deploy/prometheus/alerts.yml (warning 5 s, critical 30 s).
LAG_WARNING_S = 5
LAG_CRITICAL_S = 30
STALL_S = 30


def _thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in steps])
    )


LAG_THRESHOLDS = _thresholds((None, "green"), (LAG_WARNING_S, "yellow"), (LAG_CRITICAL_S, "red"))
PENDING_THRESHOLDS = _thresholds((None, "green"), (10, "yellow"), (STALL_S, "red"))


def _query(expr: str, legend: str = "__auto", ref: str = "A") -> prom.Dataquery:
    return prom.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)


def _instant_table(expr: str, ref: str = "A") -> prom.Dataquery:
    return (
        prom.Dataquery()
        .expr(expr)
        .instant()
        .format(prom_format_table())
        .ref_id(ref)
        .legend_format("__auto")
        .datasource(DATASOURCE)
    )


def prom_format_table():  # type: ignore[no-untyped-def]
    from grafana_foundation_sdk.models.prometheus import PromQueryFormat

    return PromQueryFormat.TABLE


def _legend() -> common_b.VizLegendOptions:
    return (
        common_b.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.TABLE)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(["lastNotNull", "max"])
    )


def _timeseries(
    title: str,
    description: str,
    unit: str,
    *queries: prom.Dataquery,
    width: int = 12,
    height: int = 8,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
        .legend(_legend())
        .line_width(1)
        .fill_opacity(10)
    )
    for query in queries:
        panel = panel.with_target(query)
    return panel


def _matrix_transform(rows: str, columns: str) -> model.DataTransformerConfig:
    """Turn one instant value per (row, column) label pair into a grid."""
    return model.DataTransformerConfig(
        id_val="groupingToMatrix",
        options={
            "rowField": rows,
            "columnField": columns,
            "valueField": "Value",
            "emptyValue": "null",
        },
    )


def lag_matrix() -> table.Panel:
    expr = (
        "max by (source_region, target_region) (\n"
        "  histogram_quantile(0.99,\n"
        "    sum by (table, source_region, target_region, le) (\n"
        f"      rate(gtmon_replication_lag_seconds_bucket{{{PAIR_SEL}}}[5m])\n"
        "    )\n"
        "  )\n"
        ")"
    )
    return (
        table.Panel()
        .title("Replication lag p99 (5m): source region (rows) → target region (columns)")
        .description(
            "99th percentile of canary propagation delay over the last 5 minutes, per link, "
            "worst of the selected tables. Green under 5 s, yellow from 5 s (warning), "
            "red from 30 s (critical). An empty cell for a link means no canary arrived in "
            "5 minutes: see 'Oldest pending canary'."
        )
        .datasource(DATASOURCE)
        .with_target(_instant_table(expr))
        .with_transformation(_matrix_transform("source_region", "target_region"))
        .unit("s")
        .decimals(2)
        .thresholds(LAG_THRESHOLDS)
        .color_scheme(dash.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
        .cell_options(
            common.TableColoredBackgroundCellOptions(mode=common.TableCellBackgroundDisplayMode.BASIC)
        )
        .span(12)
        .height(8)
    )


def worst_pending_stat() -> stat.Panel:
    expr = (
        "max(\n"
        "  min by (table, source_region, target_region) (\n"
        f"    gtmon_replication_oldest_pending_seconds{{{PAIR_SEL}}}\n"
        "  )\n"
        ")"
    )
    return (
        stat.Panel()
        .title("Oldest pending canary (worst link)")
        .description(
            "Age of the oldest canary not yet seen at its target, worst link, agreed by all "
            "gtmon replicas (min across replicas). Rises one second per second during a stall; "
            "GtmonReplicationStalled fires above 30 s."
        )
        .datasource(DATASOURCE)
        .with_target(_query(expr, "oldest pending"))
        .unit("s")
        .decimals(1)
        .thresholds(PENDING_THRESHOLDS)
        .color_scheme(dash.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.AREA)
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]))
        .span(6)
        .height(8)
    )


def region_up_stat() -> stat.Panel:
    return (
        stat.Panel()
        .title("Region reachable")
        .description(
            "1 (UP) when the last DynamoDB calls of at least one gtmon replica to the region "
            "succeeded. GtmonRegionDown fires when every replica has failed for 2 minutes."
        )
        .datasource(DATASOURCE)
        .with_target(_query(f"max by (region) (gtmon_region_up{{{REGION_SEL}}})", "{{region}}"))
        .mappings(
            [
                model.ValueMap(
                    options={
                        "0": model.ValueMappingResult(text="DOWN", color="red", index=0),
                        "1": model.ValueMappingResult(text="UP", color="green", index=1),
                    }
                ),
            ]
        )
        .thresholds(_thresholds((None, "red"), (1, "green")))
        .color_scheme(dash.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]))
        .span(6)
        .height(8)
    )


def lag_percentiles() -> timeseries.Panel:
    def q(quantile: str, ref: str) -> prom.Dataquery:
        expr = (
            f"histogram_quantile({quantile},\n"
            "  sum by (table, source_region, target_region, le) (\n"
            f"    rate(gtmon_replication_lag_seconds_bucket{{{PAIR_SEL}}}[5m])\n"
            "  )\n"
            ")"
        )
        label = f"p{round(float(quantile) * 100)}"
        return _query(expr, f"{{{{table}}}} {{{{source_region}}}} → {{{{target_region}}}} {label}", ref)

    return _timeseries(
        "Replication lag percentiles per link (5m)",
        "p50, p95 and p99 of canary propagation delay over a sliding 5 minute window, both "
        "gtmon replicas' canaries merged.",
        "s",
        q("0.5", "A"),
        q("0.95", "B"),
        q("0.99", "C"),
        width=24,
        height=9,
    ).thresholds(LAG_THRESHOLDS)


def pending_and_heartbeat() -> list[timeseries.Panel]:
    pending = _timeseries(
        "Oldest pending canary per link",
        "Age of the oldest canary not yet seen at the target, per gtmon replica; 0 when none "
        "is pending. Computed at scrape time, so it keeps rising during a stall.",
        "s",
        _query(
            f"gtmon_replication_oldest_pending_seconds{{{PAIR_SEL}}}",
            "{{table}} {{source_region}} → {{target_region}} ({{instance}})",
        ),
    ).thresholds(PENDING_THRESHOLDS)
    heartbeat = _timeseries(
        "Heartbeat age per link",
        "Now minus the write time of the newest canary seen at the target, per gtmon replica. "
        "Normally at most the canary interval plus the lag.",
        "s",
        _query(
            f"gtmon_replication_heartbeat_age_seconds{{{PAIR_SEL}}}",
            "{{table}} {{source_region}} → {{target_region}} ({{instance}})",
        ),
    )
    return [pending, heartbeat]


def writes_at_risk_panels() -> list[timeseries.Panel]:
    """Real traffic, from the streams: pending writes, their RPO exposure, and their lag
    next to the canary's."""
    link = "{{table}} {{source_region}} → {{target_region}}"
    pending = _timeseries(
        "Pending writes per link (real traffic)",
        "Writes the source's stream showed as its own that the target's stream has not shown "
        "yet, highest of the gtmon replicas (a replica whose reader is behind counts fewer). "
        "`gtmon at-risk --region R` or /api/at-risk lists them.",
        "short",
        _query(
            "max by (table, source_region, target_region) (\n"
            f"  gtmon_replication_pending_writes{{{PAIR_SEL}}}\n)",
            link,
        ),
    )
    exposure = _timeseries(
        "RPO exposure per link: oldest pending write",
        "Age of the oldest write still pending on the link: what a loss of the source region "
        f"now would lose at most, as far back as this. GtmonReplicationBacklog above {BACKLOG_S} s.",
        "s",
        _query(
            "max by (table, source_region, target_region) (\n"
            f"  gtmon_replication_pending_oldest_seconds{{{PAIR_SEL}}}\n)",
            link,
        ),
    ).thresholds(_thresholds((None, "green"), (BACKLOG_S / 2, "yellow"), (BACKLOG_S, "red")))
    lag = _timeseries(
        "Real-traffic lag next to canary lag, p99 (5m)",
        "p99 of propagation seen in the streams for real writes (each end known within a "
        "polling interval; one replica's buckets, both time the same records) against the "
        "canary's p99 on the same links.",
        "s",
        _query(
            "histogram_quantile(0.99,\n"
            "  max by (table, source_region, target_region, le) (\n"
            f"    rate(gtmon_stream_replication_lag_seconds_bucket{{{PAIR_SEL}}}[5m])\n"
            "  )\n)",
            f"{link} real traffic",
            "A",
        ),
        _query(
            "histogram_quantile(0.99,\n"
            "  sum by (table, source_region, target_region, le) (\n"
            f"    rate(gtmon_replication_lag_seconds_bucket{{{PAIR_SEL}}}[5m])\n"
            "  )\n)",
            f"{link} canary",
            "B",
        ),
        width=24,
    ).thresholds(LAG_THRESHOLDS)
    return [pending, exposure, lag]


def conflict_panels() -> list[dash.Panel]:
    rate = _timeseries(
        "LWW conflicts: lost writes per second, by loser → winner region",
        "Writes discarded by last-writer-wins, per second over 5 minutes, by the region whose "
        "write was lost and the region whose write won. max across gtmon replicas: both read "
        "the same streams, a sum would count every conflict twice. 'unknown' means the streams "
        "could not attribute the write.",
        "wps",
        _query(
            "max by (table, winner_region, loser_region) (\n"
            f"  rate(gtmon_lww_conflicts_total{{{TABLE_SEL}}}[5m])\n"
            ")",
            "{{table}}: {{loser_region}} lost to {{winner_region}}",
        ),
        width=12,
    )
    total = (
        stat.Panel()
        .title("Writes lost in the time range")
        .description("Lost writes counted once across gtmon replicas, selected tables, whole range.")
        .datasource(DATASOURCE)
        .with_target(
            _query(
                "sum(\n"
                "  max by (table, winner_region, loser_region) (\n"
                f"    increase(gtmon_lww_conflicts_total{{{TABLE_SEL}}}[$__range])\n"
                "  )\n"
                ")",
                "lost writes",
            )
        )
        .decimals(0)
        .thresholds(_thresholds((None, "green"), (1, "orange")))
        .color_scheme(dash.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]))
        .span(4)
        .height(8)
    )
    matrix = (
        table.Panel()
        .title("Writes lost in the time range: loser region (rows) → winner region (columns)")
        .description("Lost writes per region pair over the dashboard's time range.")
        .datasource(DATASOURCE)
        .with_target(
            _instant_table(
                "sum by (loser_region, winner_region) (\n"
                "  max by (table, winner_region, loser_region) (\n"
                f"    increase(gtmon_lww_conflicts_total{{{TABLE_SEL}}}[$__range])\n"
                "  )\n"
                ")"
            )
        )
        .with_transformation(_matrix_transform("loser_region", "winner_region"))
        .decimals(0)
        .thresholds(_thresholds((None, "green"), (0.5, "orange")))
        .color_scheme(dash.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
        .cell_options(
            common.TableColoredBackgroundCellOptions(mode=common.TableCellBackgroundDisplayMode.BASIC)
        )
        .span(8)
        .height(8)
    )
    return [rate, total, matrix]


def stream_panels() -> list[timeseries.Panel]:
    lag = _timeseries(
        "Stream reader lag",
        "How far each gtmon replica's stream reader is behind the newest record, per table "
        "and region. GtmonStreamReaderBehind warns above 5 minutes; records expire after 24 h.",
        "s",
        _query(f"gtmon_stream_lag_seconds{{{TABLE_REGION_SEL}}}", "{{table}} {{region}} ({{instance}})"),
        width=12,
    ).thresholds(_thresholds((None, "green"), (300, "yellow"), (21600, "red")))
    records = _timeseries(
        "Stream records processed per second",
        "Stream records read, by table, region and event type (max across replicas).",
        "rps",
        _query(
            "max by (table, region, event) (\n"
            f"  rate(gtmon_stream_records_total{{{TABLE_REGION_SEL}}}[5m])\n"
            ")",
            "{{table}} {{region}} {{event}}",
        ),
        width=12,
    )
    shards = _timeseries(
        "Shards being read",
        "Open and closed shards each replica's readers are working on, per table and region.",
        "short",
        _query(
            f"max by (table, region, state) (gtmon_stream_shards{{{TABLE_REGION_SEL}}})",
            "{{table}} {{region}} {{state}}",
        ),
        width=12,
    )
    keys = _timeseries(
        "Conflict detector: items held",
        "Items the conflict detector holds while their writes settle, per replica. Should stay "
        "flat on a steady stream.",
        "short",
        _query(f"gtmon_detector_tracked_keys{{{TABLE_SEL}}}", "{{table}} ({{instance}})"),
        width=12,
    )
    return [lag, records, shards, keys]


def aws_and_canary_panels() -> list[dash.Panel]:
    errors = _timeseries(
        "AWS request errors per second by code",
        "Errors returned by AWS (or the network) to gtmon's calls, by region, operation and "
        "error code, summed over replicas.",
        "reqps",
        _query(
            "sum by (region, operation, code) (\n"
            f"  rate(gtmon_aws_request_errors_total{{{REGION_SEL}}}[5m])\n"
            ")",
            "{{region}} {{operation}} {{code}}",
        ),
        width=12,
    )
    latency = _timeseries(
        "AWS request latency p99 (5m)",
        "99th percentile latency of gtmon's AWS calls by region and operation.",
        "s",
        _query(
            "histogram_quantile(0.99,\n"
            "  sum by (region, operation, le) (\n"
            f"    rate(gtmon_aws_request_duration_seconds_bucket{{{REGION_SEL}}}[5m])\n"
            "  )\n"
            ")",
            "{{region}} {{operation}}",
        ),
        width=12,
    )
    canary = _timeseries(
        "Canary operations per second by result",
        "Canary writes and reads by region and result (ok or error), summed over replicas. "
        "GtmonCanaryWritesFailing fires when over 25 % of a replica's writes to a region fail.",
        "ops",
        _query(
            "sum by (region, operation, result) (\n"
            f"  rate(gtmon_canary_operations_total{{{TABLE_REGION_SEL}}}[5m])\n"
            ")",
            "{{region}} {{operation}} {{result}}",
        ),
        width=16,
    )
    replicas = (
        stat.Panel()
        .title("gtmon replicas by version")
        .description("Number of gtmon processes reporting, by version.")
        .datasource(DATASOURCE)
        .with_target(_query("count by (version) (gtmon_build_info)", "{{version}}"))
        .decimals(0)
        .thresholds(_thresholds((None, "red"), (1, "green")))
        .color_scheme(dash.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]))
        .span(8)
        .height(8)
    )
    return [errors, latency, canary, replicas, canaries_lost()]


def canaries_lost() -> timeseries.Panel:
    """Canaries given up per link: how much of a stall the lag histogram will never show."""
    return _timeseries(
        "Canaries given up (1h)",
        "Canaries not seen at the target within canary.timeout_seconds (default 120 s), per "
        "link, summed over replicas (each writes its own): their lag is never measured. No "
        "alert of its own: by then GtmonReplicationStalled (or GtmonRegionDown) is firing, "
        "and stays on while the oldest-pending gauge rises from the oldest of them.",
        "short",
        _query(
            "sum by (table, source_region, target_region) (\n"
            f"  increase(gtmon_canary_lost_total{{{PAIR_SEL}}}[1h])\n"
            ")",
            "{{table}} {{source_region}} -> {{target_region}}",
        ),
        width=24,
    ).thresholds(_thresholds((None, "green"), (1, "red")))


def health_panels() -> list[timeseries.Panel]:
    """gtmon's own parts: supervised components, stuck readers, internal errors, lost evidence."""
    up = _timeseries(
        "Components up",
        "1 while a supervised component (stream reader per table and region, conflict detector, "
        "checkpoints, canary probe per link) runs, 0 while it waits to be restarted after a "
        "crash, per replica. "
        "GtmonComponentDown warns after 5 minutes at 0; /readyz fails meanwhile.",
        "short",
        _query(
            "min by (instance, component, table, region) (gtmon_component_up)",
            "{{component}} {{table}} {{region}} ({{instance}})",
        ),
        width=12,
    ).thresholds(_thresholds((None, "red"), (1, "green")))
    restarts = _timeseries(
        "Component restarts (15m)",
        "Restarts after a crash in the last 15 minutes, per replica and component; each crash "
        "is logged with its traceback. GtmonComponentRestarting warns above 3.",
        "short",
        _query(
            "sum by (instance, component, table, region) (\n"
            "  increase(gtmon_component_restarts_total[15m])\n"
            ")",
            "{{component}} {{table}} {{region}} ({{instance}})",
        ),
        width=12,
    ).thresholds(_thresholds((None, "green"), (1, "yellow"), (4, "red")))
    watermark = _timeseries(
        "Stream watermark age",
        "How old each reader's watermark is (everything in the stream up to it has been read), "
        "per replica: below the polling ceiling when healthy, rising while a reader is stuck "
        "(alive or not). GtmonStreamWatermarkStale warns above 5 minutes when the region answers.",
        "s",
        _query(
            f"gtmon_stream_watermark_age_seconds{{{TABLE_REGION_SEL}}}",
            "{{table}} {{region}} ({{instance}})",
        ),
        width=12,
    ).thresholds(_thresholds((None, "green"), (60, "yellow"), (300, "red")))
    internal = _timeseries(
        "Internal errors per second",
        "Bugs and answers of the wrong shape, by replica, where they were seen and exception "
        "type (0 for a replica that has had none). Never a region outage: gtmon_region_up "
        "ignores them.",
        "ops",
        # A series exists only once an error of its kind happened: 0 per replica until then.
        _query(
            "sum by (instance, component, type) (rate(gtmon_internal_errors_total[5m]))\n"
            "or on (instance) (0 * group by (instance) (gtmon_build_info))",
            "{{component}} {{type}} ({{instance}})",
        ),
        width=12,
    )
    evidence = _timeseries(
        "Conflict evidence lost or weakened (1h)",
        "Stream gaps (records trimmed before they were read: conflicts in them are never seen) "
        "and items the detector judged on weaker evidence (forced before every region was read, "
        "search truncated, timing or canary contradicted), per table, max across replicas.",
        "short",
        _query(
            "max by (table, region) (\n"
            f"  increase(gtmon_stream_gaps_total{{{TABLE_REGION_SEL}}}[1h])\n"
            ")",
            "gaps {{table}} {{region}}",
        ),
        _query(
            "max by (table, reason) (\n"
            f"  increase(gtmon_detector_degraded_total{{{TABLE_SEL}}}[1h])\n"
            ")",
            "{{reason}} {{table}}",
            ref="B",
        ),
        width=24,
    )
    return [up, restarts, watermark, internal, evidence]


def probe_panels() -> list[timeseries.Panel]:
    """Conflict probes (issue 13): races gtmon stages to prove detection works."""
    results = _timeseries(
        "Conflict probes per hour by result",
        "Probes (a two-region write race gtmon stages every conflicts.probe_interval_seconds) "
        "per table and result over the last hour; max across replicas, which each race their "
        "own. missed: no verdict within the probe timeout, so a real lost write would not be "
        "reported either (GtmonConflictProbeMissed). Never part of the conflict panels above.",
        "short",
        _query(
            "max by (table, result) (\n"
            f"  increase(gtmon_conflict_probes_total{{{TABLE_SEL}}}[1h])\n"
            ")",
            "{{table}}: {{result}}",
        ),
        width=12,
    )
    detection = _timeseries(
        "Conflict probe detection time p90 (1h)",
        "From a probe's writes to the detector's verdict, 90th percentile over the last hour, "
        "per table: the settle window, reader polls and the slowest link.",
        "s",
        _query(
            "histogram_quantile(0.9, sum by (table, le) (\n"
            f"  rate(gtmon_conflict_probe_detection_seconds_bucket{{{TABLE_SEL}}}[1h])\n"
            "))",
            "{{table}}",
        ),
        width=12,
    )
    return [results, detection]


def _variable(name: str, label: str, query: str) -> dash.QueryVariable:
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(model.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def build() -> dict[str, object]:
    builder = (
        dash.Dashboard("gtmon: DynamoDB global tables")
        .uid(UID)
        .description(
            "Replication lag (canaries), stalls, region health, last-writer-wins conflicts and "
            "stream readers, from gtmon's metrics. Built by dashboards/build.py."
        )
        .tags(["gtmon", "dynamodb", "global-tables"])
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("utc")
        .with_variable(dash.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            _variable(
                "table",
                "Table",
                # Canary tables and monitored tables (conflict and stream series) alike.
                'label_values({__name__=~"gtmon_replication_oldest_pending_seconds'
                '|gtmon_lww_conflicts_total|gtmon_stream_lag_seconds"}, table)',
            )
        )
        .with_variable(
            _variable(
                "source_region",
                "Source region",
                f"label_values({PENDING_BY_TABLE}, source_region)",
            )
        )
        .with_variable(
            _variable(
                "target_region",
                "Target region",
                f"label_values({PENDING_BY_TABLE}, target_region)",
            )
        )
        .with_variable(
            _variable(
                "region",
                "Region",
                # Regions, and the supervised components placed on a link (a canary probe
                # loop's region is "source->target"), so their panels can be picked too.
                'label_values({__name__=~"gtmon_region_up|gtmon_component_up"}, region)',
            )
        )
    )

    layout: list[tuple[str, list[dash.Panel]]] = [
        (
            "Replication lag",
            [
                lag_matrix(),
                worst_pending_stat(),
                region_up_stat(),
                lag_percentiles(),
                *pending_and_heartbeat(),
            ],
        ),
        ("Writes at risk (real traffic, from the streams)", writes_at_risk_panels()),
        ("Last-writer-wins conflicts", conflict_panels()),
        ("Stream readers", stream_panels()),
        ("AWS calls and canaries", aws_and_canary_panels()),
        ("gtmon itself", health_panels()),
        ("Conflict probes", probe_panels()),
    ]
    next_id = 1
    for title, panels in layout:
        builder = builder.with_row(dash.Row(title).id(next_id))
        next_id += 1
        for panel in panels:
            builder = builder.with_panel(panel.id(next_id))
            next_id += 1

    data = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    assert isinstance(data, dict)
    return data


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"exit 1 if {OUTPUT.name} differs from what this script builds",
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is stale: run python dashboards/build.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
