"""`gtmon cost`: the pure model, and the command on the example config."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.config import Config, load_config
from monitor.cost import (
    SECONDS_PER_MONTH,
    Prices,
    burst_fraction,
    burst_requests,
    canary_cost,
    mean_poll_seconds,
    stream_reads_usd,
    stream_requests,
)
from monitor.cost_inputs import (
    MeasuredReads,
    ShardsUnknown,
    average_reads,
    discover_shards,
    fetch_measured_reads,
)
from monitor.emulator import EmulatorServer
from tests.helpers import REGIONS, ClientFactory, add_replicas

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = str(ROOT / "config" / "example.yaml")


def test_idle_readers_cost_the_ceiling_rate_after_the_free_tier() -> None:
    prices = Prices()
    idle = stream_requests(3, 2.0)
    assert idle == pytest.approx(3 * SECONDS_PER_MONTH / 2.0)
    assert stream_reads_usd(idle, prices) == pytest.approx((idle - 2.5e6) / 1e5 * 0.02)
    assert stream_reads_usd(1e6, prices) == 0.0  # inside the free tier
    # A reader polling every 0.5 s, beyond the free tier: 5.26 M requests, $1.05 a month
    # (the design notes say "about $3", which $0.02 per 100k does not give).
    assert stream_reads_usd(stream_requests(1, 0.5), Prices(stream_reads_free_per_month=0)) == (
        pytest.approx(1.05, abs=0.01)
    )


def test_a_burst_costs_regions_times_shards_times_its_length_over_the_floor() -> None:
    assert burst_requests(3 * 2, 5.0, 0.2) == pytest.approx(150)
    assert burst_fraction(5.0, 0) == 0.0
    assert burst_fraction(5.0, 1728) == pytest.approx(0.1)  # 8640 s of 86400
    assert burst_fraction(5.0, 1e9) == 1.0  # written all the time: busy, capped
    # The mean interval is the floor when busy, the ceiling when idle, in between otherwise,
    # and the requests it implies are the idle ones plus each burst's floor polls in place
    # of the idle polls they replace.
    assert mean_poll_seconds(0.2, 2.0, 1.0) == pytest.approx(0.2)
    assert mean_poll_seconds(0.2, 2.0, 0.0) == pytest.approx(2.0)
    bursts_per_day, readers = 1000, 3
    fraction = burst_fraction(5.0, bursts_per_day)
    mixed = stream_requests(readers, mean_poll_seconds(0.2, 2.0, fraction))
    idle = stream_requests(readers, 2.0)
    per_burst = burst_requests(readers, 5.0, 0.2)
    bursts = bursts_per_day * SECONDS_PER_MONTH / 86400
    assert mixed == pytest.approx(idle + bursts * per_burst - fraction * idle)
    assert mixed < idle + bursts * per_burst  # "at most"


def test_canary_cost_uses_the_mean_interval_for_stream_reads() -> None:
    prices = Prices()
    cost = canary_cost(3, 1, 5.0, 3.0, 3, 2.0, prices)
    assert cost.stream_requests_per_month == pytest.approx(stream_requests(3, 2.0))
    assert cost.streams_usd == pytest.approx(stream_reads_usd(stream_requests(3, 2.0), prices))


def test_the_command_prices_idle_bursts_and_busy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", "--config", EXAMPLE, "--shards", "1"]) == 0
    out = capsys.readouterr().out
    # example.yaml: 3 regions, one table, floor 0.2 s, ceiling 1 s, bursts of 5 s.
    assert "3 stream shard reader(s), 1 table(s): 1 open shard(s) per replica, as given by --shards" in out
    assert "stream reads                         7.89 M requests   $    1.08" in out  # idle
    assert "idle, every shard at the 1 s ceiling: 7.89 M requests, $1.08 per month" in out
    assert "one write burst on Orders: at most 3 shard reader(s) x 5 s / 0.2 s = 75 " in out
    assert "polls at the 0.2 s floor all the time): 39.45 M requests, $7.39 per month" in out
    assert "$0.02/100k stream reads after 2.5 M free" in out
    idle_total = float(out.split("total, reads at budget")[1].split("$")[1].split()[0])

    assert main(["cost", "--config", EXAMPLE, "--bursts-per-day", "1000",
                 "--shards-per-replica", "2", "--price-stream-100k", "0.04"]) == 0
    out = capsys.readouterr().out
    assert "6 stream shard reader(s), 1 table(s): 2 open shard(s) per replica" in out
    assert "at most 6 shard reader(s) x 5 s / 0.2 s = 150 requests" in out
    assert "$0.04/100k stream reads" in out
    assert float(out.split("total, reads at budget")[1].split("$")[1].split()[0]) > idle_total


def test_canary_reads_are_priced_at_the_planners_budget_and_as_measured(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["cost", "--config", EXAMPLE, "--shards", "1"]) == 0
    out = capsys.readouterr().out
    # 3 regions, a canary per region every 5 s, 2 targets each, 20 reads (the default budget).
    reads = 3 * SECONDS_PER_MONTH / 5 * 2 * 20
    assert "reads per canary and pair: 20 at most (canary.max_reads_per_canary" in out
    assert "measured: - (none given: --status-url of a running gtmon, or --reads-per-canary N)" in out
    assert f"canary reads, 20/canary           {reads / 1e6:.2f} M read units" in out
    assert "total, reads as measured" not in out

    assert main(["cost", "--config", EXAMPLE, "--shards", "1", "--reads-per-canary", "14"]) == 0
    out = capsys.readouterr().out
    assert "measured: 14.0 (--reads-per-canary)" in out
    assert f"measured, 14.0/canary           {reads * 14 / 20 / 1e6:.2f} M read units" in out
    budget = float(out.split("total, reads at budget")[1].split("$")[1].split()[0])
    measured = float(out.split("total, reads as measured")[1].split("$")[1].split()[0])
    assert budget - measured == pytest.approx(reads * 6 / 20 / 1e6 * 0.125, abs=0.011)


def test_bursts_off_and_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "regions: [us-east-1, eu-west-1]\n"
        "streams: {burst_seconds: 0}\n"
        "tables: [{name: Orders}]\n"
    )
    assert main(["cost", "--config", str(config), "--shards", "1"]) == 0
    assert "one write burst on Orders: none (streams.burst_seconds is 0)" in capsys.readouterr().out
    assert main(["cost", "--config", str(config), "--shards-per-replica", "0"]) == 2
    assert "--shards must be at least 1" in capsys.readouterr().err
    assert main(["cost", "--config", str(config), "--shards", "1", "--reads-per-canary", "9",
                 "--status-url", "http://127.0.0.1:1"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["cost", "--config", str(config), "--shards", "1", "--status-url", "http://127.0.0.1:1"]) == 2
    assert capsys.readouterr().err.startswith("gtmon: --status-url: cannot read http://127.0.0.1:1/api/status")


# ---- inputs: shards from DescribeStream, reads measured by a running daemon ---------------


def test_shards_are_counted_with_describe_stream_when_aws_answers(
    emu: EmulatorServer, client: ClientFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client("us-east-1").create_table(
        TableName="Orders",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    add_replicas(client, "Orders", REGIONS)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"regions: {REGIONS}\naws: {{endpoint_url: '{emu.url}'}}\ntables: [{{name: Orders}}]\n"
    )
    assert main(["cost", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert (
        "3 stream shard reader(s), 1 table(s): open shards from DescribeStream "
        "(Orders ap-southeast-1 1, Orders eu-west-1 1, Orders us-east-1 1)"
    ) in out


def test_shards_are_assumed_and_the_reason_printed_when_describe_stream_fails(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    config = load_config_text(
        tmp_path, f"regions: [us-east-1]\naws: {{endpoint_url: '{emu.url}'}}\ntables: [{{name: Nope}}]\n"
    )
    found = discover_shards(config, {"Nope": ["us-east-1"]}, timeout=10)
    assert isinstance(found, ShardsUnknown)
    assert "describe_table in us-east-1" in found.reason and "Nope" in found.reason


def load_config_text(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(path)


def test_measured_reads_are_weighted_by_the_canaries_each_pair_measured() -> None:
    pairs = [
        {"reads_per_canary": 10.0, "measurements": 30},
        {"reads_per_canary": 20.0, "measurements": 10},
        {"reads_per_canary": None, "measurements": 0},  # nothing measured yet
    ]
    assert average_reads(pairs) == MeasuredReads(12.5, 2, 40)
    assert average_reads([{"reads_per_canary": None, "measurements": 0}]) is None


def test_measured_reads_come_from_a_running_daemons_api_status() -> None:
    body = json.dumps({"pairs": [{"reads_per_canary": 9.5, "measurements": 4}]}).encode()

    class Status(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == "/api/status"
            self.send_response(200 if found else 404)
            self.end_headers()
            self.wfile.write(body if found else b"")

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        assert fetch_measured_reads(url + "/", timeout=5) == MeasuredReads(9.5, 1, 4)
    finally:
        server.shutdown()
        server.server_close()


# ---- conflict probes (issue 13) ----------------------------------------------------------


def test_a_probe_costs_two_writes_billed_per_replica_and_the_canary_readers() -> None:
    from monitor.cost import probe_cost

    probes = probe_cost([3, 2], 300.0, canary_readers=3, canary_poll_seconds=1.0, prices=Prices())
    per_table = SECONDS_PER_MONTH / 300.0
    assert probes.probes_per_month == pytest.approx(2 * per_table)
    assert probes.write_units_per_month == pytest.approx(per_table * (2 * 3 + 2 * 2))
    assert probes.writes_usd == pytest.approx(probes.write_units_per_month / 1e6 * 0.625)
    assert probes.transfer_gb_per_month == pytest.approx(per_table * (2 * 2 + 2 * 1) * 200 / 1e9)
    assert probes.canary_stream_requests_per_month == pytest.approx(stream_requests(3, 1.0))


def test_the_command_lists_the_probes_unless_they_are_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cost", "--config", EXAMPLE, "--shards", "1"]) == 0
    out = capsys.readouterr().out
    # Orders and the canary table, 3 regions, one probe every 300 s: 2 x 8766 x 2 x 3 units.
    assert "conflict probes every 300 s on 2 table(s)" in out
    assert "probe writes (2 tbl)             0.105 M write units   $    0.07" in out
    # The canary table's readers poll at the ceiling; the free tier went to the others.
    assert "probe stream reads                   7.89 M requests   $    1.58" in out
    with_probes = float(out.split("total")[1].split("$")[1].split()[0])
    config = tmp_path / "c.yaml"
    config.write_text(Path(EXAMPLE).read_text() + "\nconflicts: {probes: false}\n")
    assert main(["cost", "--config", str(config), "--shards", "1"]) == 0
    out = capsys.readouterr().out
    assert "probe" not in out
    assert float(out.split("total")[1].split("$")[1].split()[0]) == pytest.approx(
        with_probes - 0.07 - 1.58, abs=0.02
    )
