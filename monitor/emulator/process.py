"""The emulator in a child process, off the monitor's GIL.

The emulator is CPU work in Python threads (moto, werkzeug's thread per request,
the replication thread). Sharing one interpreter with the monitor, a request
thread holding the GIL delays the monitor's event loop between stamping a read's
send time and sending it, so round trips turn lopsided and the midpoints that
lag is computed from move: `gtmon sandbox` with the emulator in-process measured
|lag - truth| p99 of 300-460 ms (bench/sandbox_accuracy.py). The sandbox and the
benchmarks therefore serve it from a child process.

The child gets its settings as one JSON line on stdin, answers `URL <url>` (or
`ERROR <errno> <message>`) on stdout, and serves until its stdin closes, so it
never outlives its parent; it ignores SIGINT, leaving the order of shutdown to
the parent (a Ctrl-C reaches the whole process group).
"""

from __future__ import annotations

import contextlib
import gc
import json
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any

from monitor.emulator.delays import DelaySpec
from monitor.emulator.emulator import Emulator, EmulatorSettings
from monitor.emulator.server import EmulatorServer
from monitor.emulator.streams import StreamSettings

__all__ = ["EmulatorProcess", "settings_from_json", "settings_to_json", "start_heap_freezer"]

FREEZE_EVERY_SECONDS = 10.0
FULL_COLLECTION_EVERY_SECONDS = 600.0


def settings_to_json(settings: EmulatorSettings) -> dict[str, Any]:
    return {
        "regions": list(settings.regions),
        "default_delay": settings.default_delay.to_json(),
        "link_delays": [[a, b, spec.to_json()] for (a, b), spec in settings.link_delays.items()],
        "client_latency": {region: spec.to_json() for region, spec in settings.client_latency.items()},
        "replica_activation_seconds": settings.replica_activation_seconds,
        "streams": vars(settings.streams),
        "blackhole_max_seconds": settings.blackhole_max_seconds,
        "truth_max_writes": settings.truth_max_writes,
        "seed": settings.seed,
        "strict_regions": settings.strict_regions,
    }


def _delay(data: dict[str, Any]) -> DelaySpec:
    return DelaySpec(
        ms=data["ms"], jitter_ms=data.get("jitter_ms", 0.0), kind=data.get("kind", "fixed"),
        sigma=data.get("sigma", 0.5),
    )


def settings_from_json(data: dict[str, Any]) -> EmulatorSettings:
    """The inverse of settings_to_json; absent keys keep EmulatorSettings' defaults."""
    defaults = EmulatorSettings()
    return EmulatorSettings(
        regions=list(data.get("regions", defaults.regions)),
        default_delay=_delay(data["default_delay"]) if "default_delay" in data else defaults.default_delay,
        link_delays={(a, b): _delay(spec) for a, b, spec in data.get("link_delays", [])},
        client_latency={region: _delay(spec) for region, spec in data.get("client_latency", {}).items()},
        replica_activation_seconds=data.get(
            "replica_activation_seconds", defaults.replica_activation_seconds
        ),
        streams=StreamSettings(**data.get("streams", {})),
        blackhole_max_seconds=data.get("blackhole_max_seconds", defaults.blackhole_max_seconds),
        truth_max_writes=data.get("truth_max_writes", defaults.truth_max_writes),
        seed=data.get("seed"),
        strict_regions=bool(data.get("strict_regions", defaults.strict_regions)),
    )


class EmulatorProcess:
    """An emulator served by a child process on host:port (0: a free port)."""

    def __init__(
        self,
        settings: EmulatorSettings,
        host: str = "127.0.0.1",
        port: int = 0,
        stderr: IO[Any] | None = None,
    ) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "monitor.emulator.process", host, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            self.url = self._handshake(settings)
        except BaseException:  # a dead child, a Ctrl-C while waiting: never leave it behind
            self.close()
            raise

    def _handshake(self, settings: EmulatorSettings) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(json.dumps(settings_to_json(settings)) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # it died at start; its answer (or silence) says why
        answer = self.process.stdout.readline().strip()
        if answer.startswith("URL "):
            return answer[4:]
        if answer.startswith("ERROR "):
            code, _, message = answer[6:].partition(" ")
            raise OSError(int(code), message)
        raise OSError(f"the emulator process did not start (it said {answer!r})")

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        """Close the child's stdin (it stops serving and exits); kill it if it does not."""
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_heap_freezer() -> threading.Thread:
    """Keep Python's cyclic collector off the emulator's heap, in a process the emulator owns.

    Stream records, ground truth and moto's items grow to hundreds of thousands of objects,
    and a full collection walks all of them while every request thread waits: 40-90 ms
    pauses that stretch whichever emulated round trip is in flight on one side only, so
    its midpoint moves (bench/lag_accuracy.py at 220 ms round trips, 120 s: |lag - truth|
    p99 35.6 ms, 17.7 ms with this freezer). Frozen objects are still freed by reference
    counting when trimmed; what freezing keeps is cyclic garbage (flask's per-request
    objects, ~4,000 objects a minute here), so the heap is unfrozen and collected in full
    every ten minutes: one pause of ~200 ms per ten minutes instead of several a minute.
    """

    def run() -> None:
        last_full = time.monotonic()
        while True:
            time.sleep(FREEZE_EVERY_SECONDS)
            if time.monotonic() - last_full >= FULL_COLLECTION_EVERY_SECONDS:
                gc.unfreeze()
                gc.collect()
                last_full = time.monotonic()
            gc.freeze()

    thread = threading.Thread(target=run, name="gtmon-emulator-heap-freezer", daemon=True)
    thread.start()
    return thread


def _serve(host: str, port: int) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings = settings_from_json(json.loads(sys.stdin.readline()))
    try:
        server = EmulatorServer(Emulator(settings), host, port).start()
    except OSError as exc:
        print(f"ERROR {exc.errno or 0} {exc.strerror or exc}", flush=True)
        return 1
    print(f"URL {server.url}", flush=True)
    start_heap_freezer()
    with contextlib.suppress(OSError, ValueError):
        sys.stdin.read()  # until the parent closes our stdin (or dies)
    server.close()
    return 0


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1], int(sys.argv[2])))
