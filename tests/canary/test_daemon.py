"""The daemon against the emulator over HTTP: lag, stalls, outages, errors, restarts."""

from __future__ import annotations

import asyncio

from monitor.emulator import DelaySpec, EmulatorServer
from monitor.emulator.control import ControlClient

from .conftest import REGIONS, daemon_config, pair, running, wait_for

PAIRS = [(a, b) for a in REGIONS for b in REGIONS if a != b]


def sample(service, name, **labels):
    return service.registry.get_sample_value(name, labels)


def within_strict_bounds(measurement, delay: float, slack: float = 0.01) -> bool:
    """The delay lies between the widest interval the requests allow, whatever their timing."""
    low = (
        measurement.last_miss.sent if measurement.last_miss else measurement.write.sent
    ) - measurement.write.received
    high = measurement.first_hit.received - measurement.write.sent
    return low - slack <= delay <= high + slack


async def test_measured_lag_brackets_the_configured_link_delay_and_centres_on_it(emu: EmulatorServer):
    delays = {("us-east-1", "eu-west-1"): 0.15, ("eu-west-1", "us-east-1"): 0.4}
    for (a, b), seconds in delays.items():
        emu.emulator.tables.set_delay(a, b, DelaySpec(ms=seconds * 1000))
    found: dict[tuple[str, str], list] = {pair: [] for pair in delays}
    async with running(daemon_config(emu.url)) as service:
        service.runners[0].observers.append(
            lambda m: found[(m.source, m.target)].append(m) if (m.source, m.target) in found else None
        )
        await wait_for(lambda: all(len(v) >= 6 for v in found.values()), 30, "6 canaries per pair")
        for (a, b), seconds in delays.items():
            # Whatever the timing of the requests, the delay lies between the widest bounds...
            assert all(within_strict_bounds(m, seconds) for m in found[(a, b)]), found[(a, b)]
            # ...and, once the read plan has learned the lag, the estimates centre on it
            # (a sanity level; bench/lag_accuracy.py measures the accuracy targets).
            errors = sorted(abs(m.estimate.lag - seconds) for m in found[(a, b)][2:])
            assert errors[len(errors) // 2] < 0.06, errors
            labels = {"table": "gtmon-canary", "source_region": a, "target_region": b}
            assert sample(service, "gtmon_replication_lag_seconds_count", **labels) >= 6
            assert (
                sample(service, "gtmon_replication_lag_last_seconds", **labels)
                == pair(service, a, b).last.lag
            )


async def test_a_paused_link_makes_oldest_pending_rise_and_the_pair_stalled(emu: EmulatorServer):
    control = ControlClient(emu.url)
    async with running(daemon_config(emu.url)) as service:
        await wait_for(lambda: pair(service, "us-east-1", "eu-west-1").measurements >= 2, 10, "lag")
        control.fault("pause", **{"from": "us-east-1", "to": "eu-west-1"})
        labels = {"table": "gtmon-canary", "source_region": "us-east-1", "target_region": "eu-west-1"}
        await wait_for(
            lambda: sample(service, "gtmon_replication_oldest_pending_seconds", **labels) > 2.5, 10, "stall"
        )
        status = {(p["source_region"], p["target_region"]): p for p in service.status()["pairs"]}
        assert status[("us-east-1", "eu-west-1")]["state"] == "STALLED"
        assert status[("eu-west-1", "us-east-1")]["state"] == "OK"
        first = sample(service, "gtmon_replication_oldest_pending_seconds", **labels)
        await asyncio.sleep(1.0)
        assert sample(service, "gtmon_replication_oldest_pending_seconds", **labels) > first + 0.8
        control.fault("resume", **{"from": "us-east-1", "to": "eu-west-1"})
        await wait_for(
            lambda: sample(service, "gtmon_replication_oldest_pending_seconds", **labels) == 0, 10, "recovery"
        )


async def _outage_keeps_other_pairs_measured(emu: EmulatorServer, mode: str) -> None:
    control = ControlClient(emu.url)
    async with running(daemon_config(emu.url)) as service:
        await wait_for(lambda: all(pair(service, a, b).measurements >= 1 for a, b in PAIRS), 10, "all pairs")
        control.fault("outage", region="ap-southeast-1", mode=mode)
        await wait_for(
            lambda: sample(service, "gtmon_region_up", region="ap-southeast-1") == 0, 10, "region down"
        )
        healthy = [(a, b) for a, b in PAIRS if "ap-southeast-1" not in (a, b)]
        before = {p: pair(service, *p).measurements for p in healthy}
        await wait_for(
            lambda: all(pair(service, *p).measurements >= before[p] + 3 for p in healthy), 15, "healthy pairs"
        )
        assert sample(service, "gtmon_region_up", region="us-east-1") == 1
        status = service.status()
        assert status["regions"]["ap-southeast-1"]["up"] is False
        assert status["regions"]["ap-southeast-1"]["last_error"]
        states = {(p["source_region"], p["target_region"]): p["state"] for p in status["pairs"]}
        assert states[("us-east-1", "ap-southeast-1")] == "DOWN"
        assert states[("us-east-1", "eu-west-1")] == "OK"
        control.fault("restore", region="ap-southeast-1")
        await wait_for(
            lambda: sample(service, "gtmon_region_up", region="ap-southeast-1") == 1, 15, "region up"
        )


async def test_an_outage_answering_errors_downs_only_that_region(emu: EmulatorServer):
    await _outage_keeps_other_pairs_measured(emu, "error")


async def test_a_black_hole_outage_downs_only_that_region(emu: EmulatorServer):
    await _outage_keeps_other_pairs_measured(emu, "blackhole")


async def test_a_missing_canary_table_fails_readiness_with_its_aws_code_and_nothing_crashes(
    emu: EmulatorServer,
):
    config = daemon_config(emu.url, canary={"table": "no-such-table"})
    async with running(config, create_table=False) as service:
        await wait_for(
            lambda: (
                sample(
                    service,
                    "gtmon_canary_operations_total",
                    table="no-such-table",
                    region="us-east-1",
                    operation="write",
                    result="error",
                )
                or 0
            )
            >= 2,
            10,
            "two write errors",
        )
        assert "ResourceNotFoundException" in service.status()["regions"]["us-east-1"]["last_error"]
        assert (
            sample(
                service,
                "gtmon_aws_request_errors_total",
                region="us-east-1",
                operation="put_item",
                code="ResourceNotFoundException",
            )
            >= 1
        )
        # A missing table is no outage: the region answered.
        assert sample(service, "gtmon_region_up", region="us-east-1") == 1
        # But no lag can be measured anywhere: not ready, and the page says why.
        await wait_for(lambda: not service.ready()[0], 10, "not ready")
        assert "canary table(s) working in no region" in service.ready()[1]
        problems = service.status()["health"]["problems"]
        assert any(p.startswith("table no-such-table: no canary call works in any region")
                   and "put_item: ResourceNotFoundException" in p for p in problems), problems


async def test_rejected_credentials_are_reported_as_access_errors_while_other_regions_work(
    strict_regions: EmulatorServer,
):
    # The emulator with --strict-regions rejects a region it does not serve the way AWS
    # rejects bad credentials.
    emu = strict_regions
    config = daemon_config(emu.url, regions=["us-east-1", "eu-west-1", "us-west-2"])
    async with running(config, create_table=False) as service:
        await service.clients.call(
            "us-east-1",
            "dynamodb",
            "create_table",
            TableName="gtmon-canary",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        await service.clients.call(
            "us-east-1",
            "dynamodb",
            "update_table",
            TableName="gtmon-canary",
            ReplicaUpdates=[{"Create": {"RegionName": "eu-west-1"}}],
        )
        await wait_for(lambda: pair(service, "us-east-1", "eu-west-1").measurements >= 2, 10, "healthy pair")
        error = service.status()["regions"]["us-west-2"]["last_error"]
        assert "UnrecognizedClientException" in error


async def test_two_instances_side_by_side_measure_without_disturbing_each_other(emu: EmulatorServer):
    emu.emulator.tables.set_delay("us-east-1", "eu-west-1", DelaySpec(ms=250))
    seen: dict[str, list] = {"alpha": [], "beta": []}
    async with (
        running(daemon_config(emu.url, instance_id="alpha")) as a,
        running(daemon_config(emu.url, instance_id="beta"), create_table=False) as b,
    ):
        for name, service in (("alpha", a), ("beta", b)):
            service.runners[0].observers.append(
                lambda m, name=name: (
                    seen[name].append(m) if (m.source, m.target) == ("us-east-1", "eu-west-1") else None
                )
            )
        await wait_for(lambda: len(seen["alpha"]) >= 4 and len(seen["beta"]) >= 4, 20, "both measuring")
    for measurements in seen.values():
        assert all(within_strict_bounds(m, 0.25) for m in measurements), measurements
        assert len({m.seq for m in measurements}) == len(measurements)


async def test_a_restarted_daemon_does_not_mistake_old_canaries_for_new_ones(emu: EmulatorServer):
    emu.emulator.tables.set_delay("us-east-1", "eu-west-1", DelaySpec(ms=300))
    config = daemon_config(emu.url)
    async with running(config) as first:
        await wait_for(lambda: pair(first, "us-east-1", "eu-west-1").measurements >= 2, 10, "first run")
    async with running(config, create_table=False) as second:
        measurements: list = []
        second.runners[0].observers.append(
            lambda m: measurements.append(m) if (m.source, m.target) == ("us-east-1", "eu-west-1") else None
        )
        await wait_for(lambda: len(measurements) >= 2, 10, "second run")
        # A canary left by the first run would look like an instant arrival.
        assert all(within_strict_bounds(m, 0.3) for m in measurements), measurements
