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
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CollectorRegistry

from monitor import __version__, atrisk_api
from monitor.allocator import current_allocator
from monitor.aws import AwsClients
from monitor.canary.remote import RemoteCanaryRunner
from monitor.canary.runner import CanaryRunner, CanaryTarget, Measurement, canary_targets
from monitor.canary.schedule import WriteSchedule
from monitor.clock import Clock, SystemClock
from monitor.config import Config, ConflictSettings, TableConfig
from monitor.conflicts import DetectorSettings
from monitor.health import Health, ReaderFacts, evaluate
from monitor.metrics import Metrics, PairReading
from monitor.probes import PROBE_MARK, ProbeRunner, ProbeTarget
from monitor.probes.judge import default_timeout
from monitor.streams.watcher import ConflictWatcher
from monitor.supervisor import Supervisor
from monitor.web import WebServer
from monitor.webconfig import WebConfig, load_web_config

__all__ = ["STOP_PHASE_SECONDS", "Service", "StartError", "probed_canary_table"]

_log = structlog.get_logger("gtmon.service")

#: Deadline of each phase of `Service.stop`.
STOP_PHASE_SECONDS = 5.0
# Scheduled runs still waiting for AWS at stop get this long to finish before they are cancelled.
IN_FLIGHT_GRACE_SECONDS = 3.0


class StartError(Exception):
    """The service could not start; the message is meant for a person."""


def probed_canary_table(config: Config) -> TableConfig | None:
    """The dedicated canary table as a table to watch for conflict probes, when it is probed.

    Only gtmon writes it, so its probes need no template and are attributed exactly by the
    probe mark; its readers cost stream reads, so it is probed only when some table is
    watched for conflicts anyway (docs/conflicts.md, "Conflict probes").
    """
    dedicated = [t for t in canary_targets(config) if t.table == config.canary.table]
    if not (config.conflicts.probes and config.canary.enabled and dedicated):
        return None
    return TableConfig(
        name=config.canary.table, conflicts=ConflictSettings(writer_attribute=PROBE_MARK)
    )


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
        canary_probed = probed_canary_table(config)
        self.watcher: ConflictWatcher | None = (
            ConflictWatcher(
                config, self.clients, self.metrics, self.clock, supervisor=self.supervisor,
                extra_tables=[canary_probed] if canary_probed is not None else [],
            )
            if config.streams.enabled and any(t.conflicts.enabled for t in config.tables)
            else None
        )
        self.probes = self._probe_runner()
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
                if table not in config.tables:
                    continue  # watched for probes only: no conflicts of its own
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
            routes={atrisk_api.PATH: self._at_risk_response},
        )
        self._scheduler: AsyncIOScheduler | None = None
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._phase = "starting"  # running, stopping, stopped
        self._allocator = current_allocator()  # fixed at the process's start
        self._stopped = asyncio.Event()

    def _probe_runner(self) -> ProbeRunner | None:
        """Conflict probes for every watched table that has them on (the canary table too)."""
        watcher, config = self.watcher, self.config
        if watcher is None or not config.conflicts.probes:
            return None
        targets = [
            ProbeTarget(
                table.name, tuple(config.table_regions(table)), table.conflicts.probe_key,
                table.conflicts.writer_attribute,
            )
            for table in watcher.tables.values()
            if table.conflicts.probes
        ]
        if not targets:
            return None

        def timeout() -> float:
            if config.conflicts.probe_timeout_seconds is not None:
                return config.conflicts.probe_timeout_seconds
            # The slowest link: the largest upper bound of its recent canaries' lags (a
            # probe's winner must reach every region before the item settles).
            lags = [high for runner in self.runners for pair in runner.probes.values()
                    for _, high in pair.history.samples]
            return default_timeout(
                config.streams.settle_seconds, config.streams.poll_interval_max_seconds,
                max(lags, default=0.0),
            )

        runner = ProbeRunner(
            targets,
            instance_id=config.instance_id,
            clients=self.clients,
            metrics=self.metrics,
            clock=self.clock,
            timeout=timeout,
            settle_seconds=config.streams.settle_seconds,
            ttl_seconds=config.canary.ttl_seconds,
            clock_error=config.clock_error_seconds,
            region_up=lambda: {r: self.clients.region_ok.get(r, True) for r in self.regions},
            reader_facts=watcher.reader_facts,
            holding=watcher.holding,
            max_wait_seconds=DetectorSettings().max_pending_seconds,
        )
        watcher.probe_sink = runner.on_verdict
        return runner

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
        if self.probes is not None:
            started.append(("conflict probes", self._abandon_probes))
            self.supervisor.spawn("conflict_probes", self.probes.run)
        started.append(("supervised components", self.supervisor.stop))
        self._scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
        interval = self.config.canary.interval_seconds
        for runner in self.runners:
            for source in runner.target.regions:
                if self.config.home_region not in (None, source):
                    continue
                # Due now and every interval after: the job's first run is right away.
                schedule = WriteSchedule(self.clock.monotonic(), interval)
                self._scheduler.add_job(
                    self._run_write,
                    IntervalTrigger(seconds=interval),
                    args=[runner, source, schedule],
                    id=f"canary:{runner.target.table}:{source}",
                    coalesce=True,
                    max_instances=1,
                    misfire_grace_time=max(1, int(interval)),
                    next_run_time=datetime.now(UTC),  # the first canary right away
                )
        if self.probes is not None:
            every = self.config.conflicts.probe_interval_seconds
            for table in self.probes.tables:
                # The first probe one interval from now (readers catch up after a restart).
                self._scheduler.add_job(
                    self._run_probe,
                    IntervalTrigger(seconds=every),
                    args=[table],
                    id=f"probe:{table}",
                    coalesce=True,
                    max_instances=1,
                    misfire_grace_time=max(1, int(every)),
                )
        self._scheduler.start()
        self._phase = "running"
        allocator = self._allocator
        _log.info(
            "started",
            instance=self.config.instance_id,
            regions=self.regions,
            canary_tables=[r.target.table for r in self.runners],
            port=self.web.port,
            allocator=allocator.name,
        )
        if allocator.warning is not None:
            _log.warning("allocator", allocator=allocator.name, problem=allocator.warning)

    async def _run_write(self, runner: CanaryRunner, source: str, schedule: WriteSchedule) -> None:
        await self._run_job(
            "canary_writer", runner.write(source, schedule), table=runner.target.table, region=source
        )

    async def _run_job(self, component: str, work: Awaitable[None], **where: str) -> None:
        """Run one scheduled job, tracked for shutdown; AWS failures are handled inside the
        job, so whatever escapes is a bug: counted and logged, and the next run goes on."""
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await work
        except asyncio.CancelledError:
            if self._phase not in ("stopping", "stopped"):
                raise
            # Still waiting for AWS when the stop's grace ran out: abandoned, said once here
            # (the scheduler would log the cancellation as a job's crash, with a traceback).
            _log.info("job_abandoned_at_stop", component=component, **where)
        except Exception as exc:
            self.metrics.count_internal_error(component, exc)
            _log.exception(f"{component}_bug", **where)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _run_probe(self, table: str) -> None:
        assert self.probes is not None
        await self._run_job("conflict_probes", self.probes.probe(table), table=table)

    async def _abandon_probes(self) -> None:
        if self.probes is not None:
            self.probes.abandon()

    async def stop(self) -> None:
        """Stop every part in reverse order; each phase runs, with its own deadline."""
        if self._phase == "stopped":
            return
        self._phase = "stopping"
        # Every phase has a deadline: a hung connection must not keep the process alive.
        phases: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("scheduler", self._stop_scheduler),
            *((f"canary {r.target.table}", r.stop) for r in self.runners),
            *((("conflict probes", self._abandon_probes),) if self.probes is not None else ()),
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
            # No new runs; the ones in flight get a grace (shutdown cancels them at once).
            scheduler.pause()
            if self._in_flight:
                await asyncio.wait(set(self._in_flight), timeout=IN_FLIGHT_GRACE_SECONDS)
            scheduler.shutdown(wait=False)  # cancels what is left: it ends quietly in _run_job

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
            return {"enabled": False, "total": 0, "uncertain": 0, "recent": []}
        watched = self.watcher.status()
        return {
            "enabled": True,
            # What gtmon_lww_conflicts_total counted: certain verdicts only.
            "total": watched["conflicts_counted"],
            "uncertain": watched["conflicts_reported"] - watched["conflicts_counted"],
            "recent": watched["recent_conflicts"],
            "streams": watched["tables"],
            "checkpoint": watched["checkpoint"],
        }

    def _at_risk_response(self, request: web.Request) -> web.Response:
        risk = self.watcher.risk if self.watcher is not None else None
        return atrisk_api.at_risk_response(
            request, None if risk is None else risk.at_risk, self.regions,
            sorted(self.watcher.tables) if self.watcher is not None else [],
        )

    def status(self) -> dict[str, Any]:
        region_up = {r: self.clients.region_ok.get(r, True) for r in self.regions}
        errors = self.clients.last_errors
        health = self.health()
        return {
            # When this was taken: the page's "data as of".
            "as_of": datetime.fromtimestamp(self.clock.wall(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "instance_id": self.config.instance_id,
            "version": __version__,
            "allocator": self._allocator.name,
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
                    "last_error_at": self.clients.last_error_at.get(region),
                }
                for region in self.regions
            },
            "conflicts": self._conflicts_status(),
            # Writes the target's stream has not shown, per table and link (streams/risk.py).
            "pending_writes": self.watcher.risk.status() if self.watcher is not None else {},
            "probes": self.probes.status() if self.probes is not None else {"enabled": False},
        }
