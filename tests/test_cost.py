"""`gtmon cost`: the pure model, and the command on the example config."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.cli import main
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
    assert main(["cost", "--config", EXAMPLE]) == 0
    out = capsys.readouterr().out
    # example.yaml: 3 regions, one table, floor 0.2 s, ceiling 2 s, bursts of 5 s.
    assert "3 stream shard reader(s) (1 table(s), 1 shard(s) per replica)" in out
    assert "stream reads                     7.89 M requests   $    1.08" in out  # idle
    assert "idle, every shard at the 1 s ceiling: 7.89 M requests, $1.08 per month" in out
    assert "one write burst on Orders: at most 3 regions x 1 shard(s) x 5 s / 0.2 s = 75 " in out
    assert "polls at the 0.2 s floor all the time): 39.45 M requests, $7.39 per month" in out
    assert "$0.02/100k stream reads after 2.5 M free" in out
    idle_total = float(out.split("total")[1].split("$")[1].split()[0])

    assert main(["cost", "--config", EXAMPLE, "--bursts-per-day", "1000",
                 "--shards-per-replica", "2", "--price-stream-100k", "0.04"]) == 0
    out = capsys.readouterr().out
    assert "6 stream shard reader(s) (1 table(s), 2 shard(s) per replica)" in out
    assert "3 regions x 2 shard(s) x 5 s / 0.2 s = 150 requests" in out
    assert "$0.04/100k stream reads" in out
    assert float(out.split("total")[1].split("$")[1].split()[0]) > idle_total


def test_bursts_off_and_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "regions: [us-east-1, eu-west-1]\n"
        "streams: {burst_seconds: 0}\n"
        "tables: [{name: Orders}]\n"
    )
    assert main(["cost", "--config", str(config)]) == 0
    assert "one write burst on Orders: none (streams.burst_seconds is 0)" in capsys.readouterr().out
    assert main(["cost", "--config", str(config), "--shards-per-replica", "0"]) == 2
    assert "--shards-per-replica" in capsys.readouterr().err


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
    assert main(["cost", "--config", EXAMPLE]) == 0
    out = capsys.readouterr().out
    # Orders and the canary table, 3 regions, one probe every 300 s: 2 x 8766 x 2 x 3 units.
    assert "conflict probes every 300 s on 2 table(s)" in out
    assert "probe writes (2 tbl)         0.105 M write units   $    0.07" in out
    # The canary table's readers poll at the ceiling; the free tier went to the others.
    assert "probe stream reads               7.89 M requests   $    1.58" in out
    with_probes = float(out.split("total")[1].split("$")[1].split()[0])
    config = tmp_path / "c.yaml"
    config.write_text(Path(EXAMPLE).read_text() + "\nconflicts: {probes: false}\n")
    assert main(["cost", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "probe" not in out
    assert float(out.split("total")[1].split("$")[1].split()[0]) == pytest.approx(
        with_probes - 0.07 - 1.58, abs=0.02
    )
