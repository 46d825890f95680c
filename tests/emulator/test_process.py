"""The emulator in a child process: settings cross over intact, errors come back as OSError."""

from __future__ import annotations

import errno
import socket

import pytest

from monitor.emulator import DelaySpec, EmulatorSettings, StreamSettings
from monitor.emulator.control import ControlClient
from monitor.emulator.process import EmulatorProcess, settings_from_json, settings_to_json


def test_settings_survive_the_json_crossing_to_the_child():
    settings = EmulatorSettings(
        regions=["us-east-1", "eu-west-1"],
        default_delay=DelaySpec(ms=250, jitter_ms=40, kind="lognormal", sigma=0.7),
        link_delays={("us-east-1", "eu-west-1"): DelaySpec(ms=600, jitter_ms=120, kind="uniform")},
        client_latency={"eu-west-1": DelaySpec(ms=75, jitter_ms=7.5, kind="uniform")},
        replica_activation_seconds=0.3,
        streams=StreamSettings(retention_seconds=900.0),
        truth_max_writes=20_000,
        seed=7,
    )
    assert settings_from_json(settings_to_json(settings)) == settings


def test_child_serves_the_given_regions_and_stops_when_closed():
    with EmulatorProcess(EmulatorSettings(regions=["us-east-1", "ap-southeast-1"])) as child:
        assert ControlClient(child.url).truth()["writes"] == []
    assert child.process.poll() is not None


def test_a_busy_port_is_an_oserror_naming_the_cause():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as raised:
            EmulatorProcess(EmulatorSettings(), port=port)
    assert raised.value.errno == errno.EADDRINUSE
