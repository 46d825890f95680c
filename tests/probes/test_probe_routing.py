"""The watcher hands probe verdicts to the probe runner and never counts them as conflicts."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from monitor.aws import AwsClients
from monitor.clock import SystemClock
from monitor.config import parse_config
from monitor.conflicts import Verdict, canonical_image
from monitor.metrics import Metrics
from monitor.probes import PROBE_MARK
from monitor.streams.watcher import ConflictWatcher


def verdict(key: str, extra: dict) -> Verdict:
    def image(value: str) -> tuple:
        return canonical_image({"OrderID": {"S": key}, "v": {"S": value}, **extra})

    return Verdict(
        table="Orders", key=canonical_image({"OrderID": {"S": key}}),
        loser_region="us-east-1", winner_region="eu-west-1",
        lost_image=image("a"), winning_image=image("b"), lost_is_delete=False,
        winner_is_delete=False, lost_created_at=1.0, winner_created_at=1.0, mode="exact",
        certain=True, evidence="",
    )


def test_probe_verdicts_go_to_the_sink_and_ordinary_ones_to_the_counter(tmp_path: Path) -> None:
    config = parse_config({
        "regions": ["us-east-1", "eu-west-1"], "tables": [{"name": "Orders"}],
        "streams": {"checkpoint_path": str(tmp_path / "cp.json")},
    })
    metrics = Metrics(CollectorRegistry(), "test")
    watcher = ConflictWatcher(config, AwsClients(config.aws, metrics), metrics, SystemClock())
    sunk: list[Verdict] = []
    watcher.probe_sink = lambda v, now: sunk.append(v)
    labels = {"table": "Orders", "winner_region": "eu-west-1", "loser_region": "us-east-1"}

    probe = verdict("gtmon-probe#m#1", {PROBE_MARK: {"S": "us-east-1"}})
    watcher._publish(probe, 100.0)
    assert sunk == [probe]
    assert metrics.registry.get_sample_value("gtmon_lww_conflicts_total", labels) is None
    assert watcher.status()["conflicts_reported"] == 0 and not watcher.recent

    watcher._publish(verdict("order-1", {}), 100.0)
    assert sunk == [probe]
    assert metrics.registry.get_sample_value("gtmon_lww_conflicts_total", labels) == 1.0
    assert watcher.status()["conflicts_reported"] == 1


def test_the_canary_table_is_watched_for_probes_unless_probes_are_off(tmp_path: Path) -> None:
    from monitor.service import probed_canary_table

    config = parse_config({
        "regions": ["us-east-1", "eu-west-1"], "tables": [{"name": "Orders"}],
        "streams": {"checkpoint_path": str(tmp_path / "cp.json")},
    })
    canary = probed_canary_table(config)
    assert canary is not None and canary.conflicts.writer_attribute == PROBE_MARK
    metrics = Metrics(CollectorRegistry(), "test")
    watcher = ConflictWatcher(config, AwsClients(config.aws, metrics), metrics, SystemClock(),
                              extra_tables=[canary])
    assert sorted(watcher.tables) == ["Orders", "gtmon-canary"]
    assert probed_canary_table(parse_config({
        "regions": ["us-east-1"], "tables": [{"name": "Orders"}], "conflicts": {"probes": False},
    })) is None


def test_the_probe_mark_names_the_writer_of_probe_items_only(tmp_path: Path) -> None:
    """A table without a writer attribute of its own attributes its probe versions by
    PROBE_MARK; an application item carrying the mark (by chance or on purpose) is not
    attributed by it, so it cannot make the detector count a loss its timing rules out.
    A table with its own writer attribute trusts that attribute on every item."""
    from monitor.streams.watcher import detector_settings_for

    config = parse_config({
        "regions": ["us-east-1", "eu-west-1"],
        "tables": [{"name": "Orders"},
                   {"name": "Carts", "conflicts": {"writer_attribute": "Region"}}],
        "streams": {"checkpoint_path": str(tmp_path / "cp.json")},
    })
    orders, carts = (detector_settings_for(config, t) for t in config.tables)
    marked = canonical_image({"OrderID": {"S": "x"}, PROBE_MARK: {"S": "eu-west-1"},
                              "Region": {"S": "eu-west-1"}})
    probe_key = canonical_image({"OrderID": {"S": "gtmon-probe#m#1"}})
    app_key = canonical_image({"OrderID": {"S": "order-1"}})
    assert orders.writer_region(marked, probe_key) == "eu-west-1"
    assert orders.writer_region(marked, app_key) is None
    assert carts.writer_region(marked, app_key) == "eu-west-1"
