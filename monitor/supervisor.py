"""Supervision: every long-lived task of the daemon runs under one `Supervisor`.

A task that ends on its own is the quietest failure a monitor can have: its
metrics freeze at their last values and every dashboard stays green. So a
component here is a coroutine *factory*; the supervisor runs it, and when the
coroutine raises (or returns, which a component that should run until
cancelled must not do) it

- logs ``component_crashed`` with the traceback (structlog ``exc_info``),
- counts the exception in ``gtmon_internal_errors_total{component, type}``
  (once: a place below that already counted it is not counted again),
- sets ``gtmon_component_up{component, table, region}`` to 0, waits a backoff
  (exponential with full jitter, so readers that crashed together on the same
  bad answer do not retry together), increments
  ``gtmon_component_restarts_total`` and runs the factory again.

The backoff starts over once a component has run for ``healthy_after``
seconds, so a crash a day does not wait like a crash loop. Components keep
their state across restarts in the objects the factory closes over (a stream
reader resumes after the last record it delivered): a restart is cheap.

Cancellation (`Supervised.stop`, `Supervisor.stop`) is the only way a
component ends. The backoff is written here rather than taken from
`monitor.streams.pacing`: the stream package imports this module, and this
module must not import it back.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from monitor.clock import Clock
from monitor.metrics import Metrics

__all__ = ["ComponentFactory", "Supervised", "Supervisor"]

_log = structlog.get_logger("gtmon.supervisor")

ComponentFactory = Callable[[], Coroutine[Any, Any, None]]


class ComponentExited(RuntimeError):
    """A component's coroutine returned although it should run until cancelled."""


@dataclass
class Supervised:
    """One supervised component: its identity, its state, and the task that runs it."""

    component: str
    table: str
    region: str
    factory: ComponentFactory
    up: bool = False
    restarts: int = 0
    last_crash: dict[str, Any] | None = None
    task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        where = "/".join(part for part in (self.table, self.region) if part)
        return f"{self.component} {where}" if where else self.component

    def status(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "table": self.table or None,
            "region": self.region or None,
            "up": self.up,
            "restarts": self.restarts,
            "last_crash": self.last_crash,
        }

    async def stop(self) -> None:
        """Cancel the component and wait for it (and its cleanup) to end."""
        task = self.task
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class Supervisor:
    """Runs components, restarts them after a crash, and reports their state."""

    def __init__(
        self,
        metrics: Metrics,
        clock: Clock,
        *,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        healthy_after: float = 120.0,
        rng: random.Random | None = None,
    ) -> None:
        if backoff_base <= 0 or backoff_cap < backoff_base:
            raise ValueError("need 0 < backoff_base <= backoff_cap")
        self.metrics = metrics
        self.clock = clock
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.healthy_after = healthy_after
        self._rng = rng or random.Random()
        self.components: list[Supervised] = []

    def spawn(
        self, component: str, factory: ComponentFactory, *, table: str = "", region: str = ""
    ) -> Supervised:
        """Start running `factory()` under supervision; returns the handle."""
        supervised = Supervised(component, table, region, factory)
        labels = self.metrics.component_up.labels(component, table, region)
        labels.set(0)
        # Present from the start at 0, so increase() sees the first restart.
        self.metrics.component_restarts.labels(component, table, region)
        self.components.append(supervised)
        supervised.task = asyncio.create_task(
            self._run(supervised), name=f"gtmon-supervised-{supervised.name.replace(' ', '-')}"
        )
        return supervised

    def _delay(self, failures: int) -> float:
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** min(failures, 30))
        return max(self.backoff_base / 2, self._rng.uniform(0.0, ceiling))

    async def _run(self, s: Supervised) -> None:
        up = self.metrics.component_up.labels(s.component, s.table, s.region)
        failures = 0
        try:
            while True:
                started = self.clock.monotonic()
                s.up = True
                up.set(1)
                try:
                    await s.factory()
                    raise ComponentExited(f"{s.name} returned; it should run until cancelled")
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # every crash is logged, counted and restarted
                    if self.clock.monotonic() - started >= self.healthy_after:
                        failures = 0
                    delay = self._delay(failures)
                    failures += 1
                    s.up = False
                    up.set(0)
                    self.metrics.count_internal_error(s.component, exc)
                    s.last_crash = {
                        "type": type(exc).__name__,
                        "message": str(exc),
                        "at": self.clock.wall(),
                    }
                    _log.error(
                        "component_crashed",
                        component=s.component,
                        table=s.table or None,
                        region=s.region or None,
                        error=f"{type(exc).__name__}: {exc}",
                        restart_in=round(delay, 3),
                        exc_info=exc,
                    )
                await asyncio.sleep(delay)
                s.restarts += 1
                self.metrics.component_restarts.labels(s.component, s.table, s.region).inc()
                _log.info("component_restarted", component=s.component, table=s.table or None,
                          region=s.region or None, restarts=s.restarts)
        finally:
            s.up = False

    async def stop(self) -> None:
        """Cancel every component and wait for them."""
        tasks = [s.task for s in self.components if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def down(self) -> list[Supervised]:
        """Components waiting to be restarted after a crash (started ones only)."""
        return [s for s in self.components if s.task is not None and not s.task.done() and not s.up]

    def status(self) -> list[dict[str, Any]]:
        return [s.status() for s in self.components]
