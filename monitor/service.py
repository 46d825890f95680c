"""The daemon: wires configuration, clients, canaries, readers and the web endpoints.

Components follow Burrow's configure / start / stop discipline: construction
only validates and builds (no connections), `start` brings parts up in
dependency order, `stop` takes them down in reverse, and the scheduler stops
before the clients its jobs use.

- A failed `start` undoes what it had started, in reverse, and raises
  `StartError` (a message for a person) or the original exception.
- `stop` runs every phase, each with its own deadline, whatever the earlier
  ones raised: a hung connection or a bug in one part never keeps the
  checkpoints from being saved or the clients from being closed.
- Long-lived tasks (stream readers, the detector and checkpoint loops) run
  under one `Supervisor`; `/readyz` and the status page report the
  `monitor.health` rules over its state and the stream readers'.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CollectorRegistry

from monitor import __version__
from monitor.aws import AwsClients
from monitor.canary.remote import RemoteCanaryRunner
from monitor.canary.runner import CanaryRunner, CanaryTarget, Measurement
from monitor.canary.table import CANARY_KEY_ATTRIBUTE
from monitor.clock import Clock, SystemClock
from monitor.config import Config
from monitor.health import Health, ReaderFacts, evaluate
from monitor.metrics import Metrics, PairReading
from monitor.streams.watcher import ConflictWatcher
from monitor.supervisor import Supervisor
from monitor.web import WebServer
from monitor.webconfig import WebConfig, load_web_config

__all__ = ["STOP_PHASE_SECONDS", "Service", "StartError", "canary_targets"]

_log = structlog.get_logger("gtmon.service")

#: Deadline of each phase of `Service.stop`.
STOP_PHASE_SECONDS = 5.0


class StartError(Exception):
    """The service could not start; the message is meant for a person."""


def canary_targets(config: Config) -> list[CanaryTarget]:
    """The dedicated canary table (unless every table embeds its canary) plus embedded ones."""
    targets = []
    if not config.tables or any(t.canary_key is None for t in config.tables):
        targets.append(
            CanaryTarget(
                config.canary.table,
                tuple(config.regions),
                ((CANARY_KEY_ATTRIBUTE, "{instance}#{source}"),),
            )
        )
    for table in config.tables:
        if table.canary_key is not None:
            targets.append(
                CanaryTarget(table.name, tuple(config.table_regions(table)), tuple(table.canary_key.items()))
            )
    return targets


class Service:
    """One monitor instance."""

    def __init__(
        self,
        config: Config,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
        session: Any | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry, __version__)
        self.clients = AwsClients(config.aws, self.metrics, session=session, monotonic=self.clock.monotonic)
        self.supervisor = Supervisor(self.metrics, self.clock)
        self.runners = (
            [self._runner(target) for target in canary_targets(config)] if config.canary.enabled else []
        )
        self.metrics.add_replication_state(self._readings)
        self.watcher: ConflictWatcher | None = (
            ConflictWatcher(
                config, self.clients, self.metrics, self.clock, supervisor=self.supervisor
            )
            if config.streams.enabled and any(t.conflicts.enabled for t in config.tables)
            else None
        )
        if self.watcher is not None:
            watcher = self.watcher

            def floors_from(measurement: Measurement) -> None:
                estimate = measurement.estimate
                watcher.observe_canary(
                    measurement.source, measurement.target, estimate.low, estimate.high
                )

            for runner in self.runners:
                runner.observers.append(floors_from)
            for table in self.watcher.tables.values():
                # Every series exists from the start at 0, so increase() sees the first conflict.
                names = [*config.table_regions(table), "unknown"]
                for winner in names:
                    for loser in names:
                        if winner != loser or winner == "unknown":
                            self.metrics.lww_conflicts.labels(table.name, winner, loser)
        web_config: WebConfig | None = (
            load_web_config(config.metrics.web_config_file) if config.metrics.web_config_file else None
        )
        self.web = WebServer(
            config.metrics.host,
            config.metrics.port,
            self.registry,
            self.status,
            self.ready,
            web_config,
            metrics=self.metrics,
            max_connections=config.metrics.max_connections,
            max_connections_per_client=config.metrics.max_connections_per_client,
        )
        self._scheduler: AsyncIOScheduler | None = None
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._phase = "starting"  # running, stopping, stopped
        self._stopped = asyncio.Event()

    def _runner(self, target: CanaryTarget) -> CanaryRunner:
        config = self.config
        if config.home_region is None:
            return CanaryRunner(
                target, config.canary, config.instance_id, self.clients, self.metrics, self.clock,
                self.supervisor,
            )
        return RemoteCanaryRunner(
            target,
            config.canary,
            config.instance_id,
            self.clients,
            self.metrics,
            self.clock,
            config.home_region,
            config.canary.fleet,
            config.clock_error_seconds,
            self.supervisor,
        )

    def _readings(self) -> list[PairReading]:
        return [reading for runner in self.runners for reading in runner.readings()]

    def health(self) -> Health:
        """The `monitor.health` rules over the supervisor's and the stream readers' state."""
        phase = self._phase if self._phase in ("starting", "running") else "stopping"
        readers = (
            [
                ReaderFacts(table, region, reader.failing_since, reader.last_error)
                for (table, region), reader in self.watcher.readers.items()
            ]
            if self.watcher is not None
            else []
        )
        down = [s.status() for s in self.supervisor.down()]
        canaries = [
            ReaderFacts(runner.target.table, region, since, error)
            for runner in self.runners
            for region, since, error in runner.call_failures()
        ]
        return evaluate(phase, down, readers, self.clock.wall(), canaries=canaries)

    def ready(self) -> tuple[bool, str]:
        """For /readyz: ready or not, and in a few words why not (no names: it answers
        without credentials; /api/status and the page give the details)."""
        health = self.health()
        return health.ready, health.summary

    @property
    def regions(self) -> list[str]:
        return list(self.config.regions)

    async def start(self) -> None:
        """Start every part in dependency order; on failure stop what started, then raise."""
        started: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        try:
            await self._start(started)
        except BaseException:
            # The caller reports the error itself (the CLI in one line): this is the detail.
            _log.debug("start_failed", undoing=[name for name, _ in reversed(started)])
            await self._run_phases(reversed(started))
            self._phase = "stopped"
            raise

    async def _start(self, started: list[tuple[str, Callable[[], Awaitable[None]]]]) -> None:
        try:
            await self.web.start()
        except OSError as exc:
            raise StartError(
                f"cannot serve metrics on {self.config.metrics.host}:{self.config.metrics.port}: "
                f"{exc.strerror or exc}"
            ) from exc
        started.append(("web", self.web.stop))
        started.append(("aws clients", self.clients.close))
        await self.clients.start(self.regions)
        # The clients' service models are ~100k long-lived objects: a full collection walking
        # them paused the event loop ~50 ms, stretching whichever round trip was in flight
        # on one side and moving its midpoint. Frozen, the collector never walks them again.
        gc.freeze()
        for region in self.regions:
            self.metrics.region_up.labels(region).set(1)
        for runner in self.runners:
            started.append((f"canary {runner.target.table}", runner.stop))
            runner.start()
        if self.watcher is not None:
            started.append(("stream readers", self.watcher.stop))
            await self.watcher.start()
        started.append(("supervised components", self.supervisor.stop))
        self._scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
        interval = self.config.canary.interval_seconds
        for runner in self.runners:
            for source in runner.target.regions:
                if self.config.home_region not in (None, source):
                    continue
                self._scheduler.add_job(
                    self._run_write,
                    IntervalTrigger(seconds=interval),
                    args=[runner, source],
                    id=f"canary:{runner.target.table}:{source}",
                    coalesce=True,
                    max_instances=1,
                    misfire_grace_time=max(1, int(interval)),
                    next_run_time=datetime.now(UTC),  # the first canary right away
                )
        self._scheduler.start()
        self._phase = "running"
        _log.info(
            "started",
            instance=self.config.instance_id,
            regions=self.regions,
            canary_tables=[r.target.table for r in self.runners],
            port=self.web.port,
        )

    async def _run_write(self, runner: CanaryRunner, source: str) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await runner.write(source)
        except Exception as exc:  # AWS failures are handled inside; this is a bug
            self.metrics.count_internal_error("canary_writer", exc)
            _log.exception("canary_write_bug", table=runner.target.table, region=source)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def stop(self) -> None:
        """Stop every part in reverse order; each phase runs, with its own deadline."""
        if self._phase == "stopped":
            return
        self._phase = "stopping"
        # Every phase has a deadline: a hung connection must not keep the process alive.
        phases: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("scheduler", self._stop_scheduler),
            *((f"canary {r.target.table}", r.stop) for r in self.runners),
            *((("stream readers", self.watcher.stop),) if self.watcher is not None else ()),
            ("supervised components", self.supervisor.stop),
            ("web", self.web.stop),
            ("aws clients", self.clients.close),
        ]
        await self._run_phases(phases)
        self._phase = "stopped"
        _log.info("stopped", instance=self.config.instance_id)

    async def _stop_scheduler(self) -> None:
        if self._scheduler is not None:
            scheduler, self._scheduler = self._scheduler, None
            scheduler.shutdown(wait=False)
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=3)

    @staticmethod
    async def _run_phases(phases: Iterable[tuple[str, Callable[[], Awaitable[None]]]]) -> None:
        """Run each (name, stop) pair with its own deadline; log what failed and go on."""
        for name, phase in phases:
            try:
                async with asyncio.timeout(STOP_PHASE_SECONDS):
                    await phase()
            except TimeoutError:
                _log.error("stop_timed_out", phase=name, seconds=STOP_PHASE_SECONDS)
            except Exception:  # the next phases run whatever this one raised
                _log.exception("stop_phase_failed", phase=name)

    def request_stop(self) -> None:
        self._stopped.set()

    async def run_until_stopped(self) -> None:
        """Run until SIGTERM or SIGINT, then finish in-flight work and stop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        try:
            await self._stopped.wait()
        finally:
            await self.stop()

    def _conflicts_status(self) -> dict[str, Any]:
        if self.watcher is None:
            return {"enabled": False, "total": 0, "recent": []}
        watched = self.watcher.status()
        return {
            "enabled": True,
            "total": watched["conflicts_reported"],
            "recent": watched["recent_conflicts"],
            "streams": watched["tables"],
            "checkpoint": watched["checkpoint"],
        }

    def status(self) -> dict[str, Any]:
        region_up = {r: self.clients.region_ok.get(r, True) for r in self.regions}
        errors = self.clients.last_errors
        health = self.health()
        return {
            "instance_id": self.config.instance_id,
            "version": __version__,
            "ready": health.ready,
            "health": health.to_json(),
            "components": self.supervisor.status(),
            "home_region": self.config.home_region,
            "pairs": [row for runner in self.runners for row in runner.status(region_up)],
            "regions": {
                region: {
                    "up": region_up[region],
                    "last_error": f"{errors[region].operation}: {errors[region].code}: "
                    f"{errors[region].message}"
                    if region in errors
                    else None,
                }
                for region in self.regions
            },
            "conflicts": self._conflicts_status(),
        }
