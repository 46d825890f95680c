"""Emulator tests: real clients over HTTP against the session emulator.

Helpers live in emu_helpers.py (imported by name; this directory is put on
sys.path here so that works whatever pytest's import mode).
"""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from monitor.emulator import EmulatorServer, StreamSettings


@pytest.fixture
def stream_settings(emu: EmulatorServer) -> Iterator[object]:
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
