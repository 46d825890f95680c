"""Shared fixtures: one emulator per test session, reset before each test that uses it.

moto's state is process-global, so the session holds a single emulator served
on a loopback port; `emu` resets it and restores default link delays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig

from monitor.emulator import DelaySpec, Emulator, EmulatorServer, EmulatorSettings, StreamSettings

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-1"]


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    settings = EmulatorSettings(
        regions=list(REGIONS), default_delay=DelaySpec(ms=50.0), replica_activation_seconds=0.3
    )
    server = EmulatorServer(Emulator(settings), "127.0.0.1", 0).start()
    yield server
    server.close()


@pytest.fixture
def emu(emulator_server: EmulatorServer) -> Iterator[EmulatorServer]:
    emulator_server.emulator.reset()
    yield emulator_server
    emulator_server.emulator.reset()


@pytest.fixture
def strict_regions(emu: EmulatorServer) -> Iterator[EmulatorServer]:
    """The session emulator refusing regions outside its list (`gtmon emulator --strict-regions`)
    for one test, as AWS refuses credentials it does not know."""
    emu.emulator.settings.strict_regions = True
    yield emu
    emu.emulator.settings.strict_regions = False


@pytest.fixture
def client(emu: EmulatorServer) -> Callable[..., Any]:
    """`client(region, service="dynamodb")`: a real boto3 client talking to the emulator."""

    def make(region: str, service: str = "dynamodb", **config: Any) -> Any:
        return boto3.client(
            service,
            region_name=region,
            endpoint_url=emu.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=BotoConfig(
                retries={"max_attempts": config.pop("max_attempts", 1), "mode": "standard"},
                connect_timeout=config.pop("connect_timeout", 5),
                read_timeout=config.pop("read_timeout", 10),
            ),
        )

    return make


@pytest.fixture
def stream_settings(emu: EmulatorServer) -> Iterator[Callable[..., StreamSettings]]:
    """`stream_settings(**fields)` swaps the live stream store's settings; restored after."""
    store = emu.emulator.streams
    original = store.settings

    def swap(**fields: float) -> StreamSettings:
        merged = {
            "shard_rollover_seconds": original.shard_rollover_seconds,
            "retention_seconds": original.retention_seconds,
            "iterator_ttl_seconds": original.iterator_ttl_seconds,
            **fields,
        }
        with emu.emulator.lock:
            store.settings = StreamSettings(**merged)
        return store.settings

    yield swap
    with emu.emulator.lock:
        store.settings = original
