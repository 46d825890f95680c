"""Stream-reader tests: real aioboto3 clients over HTTP against the session emulator.

Helpers live in streams_helpers.py (imported by name; this directory is put on
sys.path here so that works whatever pytest's import mode).
"""

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prometheus_client import CollectorRegistry

from monitor.aws import AwsClients
from monitor.config import AwsSettings
from monitor.emulator import EmulatorServer
from monitor.emulator.control import ControlClient
from monitor.metrics import Metrics

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-1"]




@pytest.fixture
def control(emu: EmulatorServer) -> Iterator[ControlClient]:
    """The emulator's fault API; every fault is cleared after the test."""
    ctl = ControlClient(emu.url)
    yield ctl
    ctl.fault("clear")
    for region in REGIONS:
        ctl.fault("restore", region=region)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry(), "test")


@pytest.fixture
async def aws(emu: EmulatorServer, metrics: Metrics) -> AsyncIterator[AwsClients]:
    """gtmon's own clients: short timeouts, no SDK retries (the reader does its own)."""
    clients = AwsClients(
        AwsSettings(
            endpoint_url=emu.url, connect_timeout_seconds=1.0, read_timeout_seconds=1.0,
            max_attempts=1,
        ),
        metrics=metrics,
    )
    await clients.start(REGIONS)
    yield clients
    await clients.close()


@pytest.fixture
def sample(metrics: Metrics) -> Callable[..., Any]:
    """`sample(name, **labels)`: a metric's value in the test registry (0.0 if absent)."""

    def get(name: str, **labels: str) -> float:
        value = metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    return get
