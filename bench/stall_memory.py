"""What a long stall costs the daemon: memory held, and how long the event loop is blocked.

A 30-minute pause of one link at 1 canary/s cannot be waited out in a test, so it is
simulated in virtual time: the canary runner (monitor/canary/runner.py) runs unchanged
with its probe loops, pipelined reads and settling; only AWS and the clock are
replaced. The event loop's clock jumps to the next timer whenever nothing is ready
(so a 30-minute pause takes a minute or so of CPU), and an in-process global table
answers PutItem and GetItem after the sandbox's client round trips (4, 75, 220 ms from
us-east-1, ±10%) and replicates each write after the sandbox's link delays (lognormal,
0.6-1.5 s plus a median jitter of 120-250 ms); later writes win, a paused link holds
its writes and releases them in order when resumed, as the emulator does. Three
regions, six pairs, one canary per second per region, the sandbox's read budget.

Cases: the default canary.timeout_seconds (120 s: older canaries are given up and
counted in gtmon_canary_lost_total) and a timeout longer than the pause (3600 s: then
MAX_PENDING = 1000 bounds the canaries still polled; the worst case for memory and
for the settling when the pause ends). --quick: a 2-minute pause, timeouts 60 s and 3600 s.

Each case runs twice with the same seed. The first pass measures:
- memory: RSS growth over the pause, and the size of everything reachable from the
  runner's per-pair state (`probes`) before and at the end of the pause;
- blocking: every callback the loop runs is timed (asyncio.events.Handle._run), in
  wall time and in this thread's CPU time (which leaves out other processes' share of
  a busy machine): the longest during the pause, in the 30 s after the resume (when
  every canary written during the pause settles) and later; the longest single
  CanaryRunner._settle call and the most canaries one call resolved; the longest
  garbage collection per phase (the bench's own gc.collect() calls apart);
- the oldest-pending gauge of the paused pair, read as a scrape would every 10
  virtual seconds: it must rise through the whole pause;
- recovery: the 1-based position of the first canary written after the resume that
  starts a run of five whose median error bound is within 1.5x the pre-fault median
  (as bench/fault_recovery.py and tests/canary/test_fault_recovery.py count).
The second pass runs under tracemalloc (which slows it ~3x, so it times nothing):
every allocation made during the pause and still held at its end (the simulated
table's held writes included, tens of KB), the peak, and the top allocation sites.

Timing figures depend on this machine (virtual time only spaces the events); memory
and counts do not. Running this file with PYTHONPATH
pointing at an older checkout measures that code instead (used for the "before"
figures in the notes).

    python bench/stall_memory.py [--quick] [--stall-minutes M] [--no-tracemalloc] [--nice N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import random
import selectors
import statistics
import sys
import time
import tracemalloc
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import emit, log
from prometheus_client import CollectorRegistry

import monitor
from monitor.canary.runner import MAX_PENDING, CanaryRunner, CanaryTarget
from monitor.config import parse_config
from monitor.logs import configure_logging
from monitor.metrics import Metrics
from monitor.sandbox import REGIONS, SANDBOX_CLIENT_LATENCY, SANDBOX_LINK_DELAYS

SOURCE, TARGET = "us-east-1", "eu-west-1"
GAUGE = "gtmon_replication_oldest_pending_seconds"
MEMORY_TARGET_MB = 10.0
BLOCKING_TARGET_MS = 50.0
RECOVERY_TARGET = 10
RECOVERY_FACTOR = 1.5
RECOVERY_RUN = 5


# ---- virtual time ---------------------------------------------------------------------------

class _VirtualSelector(selectors.BaseSelector):
    """The real selector for real file descriptors (the loop's self-pipe); when nothing is
    ready, the loop's virtual clock jumps by the timeout instead of sleeping."""

    def __init__(self, loop_now: Callable[[float], None]) -> None:
        self._real = selectors.DefaultSelector()
        self._advance = loop_now

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError("the simulation has nothing left to wait for")
        self._advance(timeout)
        return []

    def get_map(self) -> Any:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock only moves when every ready callback has run."""

    def __init__(self) -> None:
        self._virtual_now = 0.0
        super().__init__(_VirtualSelector(self._advance))

    def _advance(self, seconds: float) -> None:
        self._virtual_now += seconds

    def time(self) -> float:
        return self._virtual_now


class LoopClock:
    """The runner's clock (monitor.clock.Clock) read from the virtual loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, wall_origin: float) -> None:
        self._loop = loop
        self._origin = wall_origin

    def monotonic(self) -> float:
        return self._loop.time()

    def wall(self) -> float:
        return self._origin + self._loop.time()


def _describe(handle: asyncio.events.Handle) -> str:
    """Which coroutine a task step belonged to, or the callback's name."""
    callback = handle._callback  # type: ignore[attr-defined]
    task = getattr(callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        return f"task step: {task.get_coro().__qualname__}"  # type: ignore[union-attr]
    return f"callback: {getattr(callback, '__qualname__', repr(callback))}"


class GcTimer:
    """The longest garbage collection per phase (it runs inside whichever callback allocated)."""

    def __init__(self, timer: CallbackTimer) -> None:
        self._timer = timer
        self._started = 0.0
        self.longest: dict[str, float] = {}

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        phase = "bench" if self._timer.collecting else self._timer.phase
        key = f"{phase} gen{info['generation']}"
        self.longest[key] = max(self.longest.get(key, 0.0), took)


class CallbackTimer:
    """Times every callback the loop runs, by phase: wall time (what the loop waits) and
    this thread's CPU time (the same without other processes' share of a busy machine)."""

    def __init__(self) -> None:
        self.phase = "warmup"
        self.collecting = False  # the bench's own gc.collect() calls
        self.longest: dict[str, float] = {}
        self.longest_cpu: dict[str, float] = {}
        self.what: dict[str, str] = {}
        self.bench_task: asyncio.Task[Any] | None = None  # its steps are the bench's own work
        self._original = asyncio.events.Handle._run

    @contextmanager
    def installed(self) -> Iterator[None]:
        timer = self
        original = self._original

        def _run(handle: asyncio.events.Handle) -> None:
            started, started_cpu = time.perf_counter(), time.thread_time()
            original(handle)
            took, cpu = time.perf_counter() - started, time.thread_time() - started_cpu
            callback = handle._callback  # type: ignore[attr-defined]
            ours = timer.bench_task is not None and getattr(callback, "__self__", None) is timer.bench_task
            phase = "bench" if ours else timer.phase
            timer.longest_cpu[phase] = max(cpu, timer.longest_cpu.get(phase, 0.0))
            if took > timer.longest.get(phase, 0.0):
                timer.longest[phase] = took
                timer.what[phase] = _describe(handle)

        asyncio.events.Handle._run = _run  # type: ignore[method-assign]
        try:
            yield
        finally:
            asyncio.events.Handle._run = original  # type: ignore[method-assign]


# ---- a global table in this process -----------------------------------------------------------

class SimulatedTable:
    """PutItem and GetItem on one item key per source, replicated per link (AwsClients.call)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        # region -> key -> (seq, written_at) of the newest write applied there
        self._items: dict[str, dict[str, tuple[int, float]]] = {r: {} for r in REGIONS}
        self._paused: dict[tuple[str, str], list[tuple[str, tuple[int, float]]]] = {}
        self.calls = 0

    def pause(self, source: str, target: str) -> None:
        self._paused[(source, target)] = []

    def resume(self, source: str, target: str) -> None:
        for key, value in self._paused.pop((source, target)):
            self._apply(target, key, value)

    def held(self) -> int:
        return sum(len(q) for q in self._paused.values())

    def _apply(self, region: str, key: str, value: tuple[int, float]) -> None:
        current = self._items[region].get(key)
        if current is None or value[0] > current[0]:  # the later write wins
            self._items[region][key] = value

    def _replicate(self, source: str, target: str, key: str, value: tuple[int, float]) -> None:
        held = self._paused.get((source, target))
        if held is not None:
            held.append((key, value))
        else:
            self._apply(target, key, value)

    async def call(self, region: str, service: str, operation: str, expected: Any = (), **kwargs: Any) -> Any:
        self.calls += 1
        round_trip = SANDBOX_CLIENT_LATENCY[region].sample(self._rng)
        await asyncio.sleep(round_trip / 2)  # the request travels; the server acts; it returns
        answer: dict[str, Any] = {}
        if operation == "put_item":
            item = kwargs["Item"]
            key = item["pk"]["S"]
            value = (int(item["gtmon_seq"]["N"]), float(item["gtmon_written_at"]["N"]))
            self._apply(region, key, value)
            loop = asyncio.get_running_loop()
            for target in REGIONS:
                if target != region:
                    delay = SANDBOX_LINK_DELAYS[(region, target)].sample(self._rng)
                    loop.call_later(delay, self._replicate, region, target, key, value)
        elif operation == "get_item":
            found = self._items[region].get(kwargs["Key"]["pk"]["S"])
            if found is not None:
                answer = {"Item": {"gtmon_seq": {"N": str(found[0])},
                                   "gtmon_written_at": {"N": f"{found[1]:.6f}"}}}
        else:
            raise ValueError(f"not simulated: {operation}")
        await asyncio.sleep(round_trip / 2)
        return answer


# ---- one case ---------------------------------------------------------------------------------

def recovery_canaries(errors_after: list[float], before_median: float) -> int | None:
    """1-based position of the first canary after the resume that starts a run of
    RECOVERY_RUN whose median error bound is within the factor of the pre-fault median."""
    limit = RECOVERY_FACTOR * before_median
    return next((i + 1 for i in range(len(errors_after) - RECOVERY_RUN + 1)
                 if statistics.median(errors_after[i:i + RECOVERY_RUN]) <= limit), None)


_OPAQUE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
           asyncio.Future, asyncio.Event, asyncio.Handle, types.CoroutineType, types.FrameType)


def deep_size(root: object) -> int:
    """Bytes of every object reachable from `root` (each counted once), not following
    into classes, functions, tasks, events or frames (the loop's, not the state's)."""
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _OPAQUE):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def collect(timer: CallbackTimer) -> None:
    timer.collecting = True
    gc.collect()
    timer.collecting = False


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def run_case(timeout: float, args: argparse.Namespace, timer: CallbackTimer,
                   trace_memory: bool) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    clock = LoopClock(loop, wall_origin=1_800_000_000.0)
    config = parse_config({
        "instance_id": "bench-stall-memory",
        "regions": REGIONS,
        "canary": {"interval_seconds": 1.0, "stall_seconds": 10, "timeout_seconds": timeout},
        "streams": {"enabled": False},
    }, "stall_memory bench")
    table = SimulatedTable(random.Random(args.seed))
    metrics = Metrics(CollectorRegistry(), "bench")
    target = CanaryTarget(config.canary.table, tuple(REGIONS), (("pk", "{instance}#{source}"),))
    runner = CanaryRunner(target, config.canary, config.instance_id, table, metrics,  # type: ignore[arg-type]
                          clock)
    metrics.add_replication_state(runner.readings)
    labels = {"table": target.table, "source_region": SOURCE, "target_region": TARGET}
    errors: list[tuple[float, float]] = []  # (write sent, stated error bound) of the paused pair

    def observe(measurement: Any) -> None:
        if (measurement.source, measurement.target) == (SOURCE, TARGET):
            errors.append((measurement.write.sent, measurement.estimate.error))

    runner.observers.append(observe)
    settle_calls: list[tuple[float, int]] = []  # (seconds, canaries resolved) per _settle call
    settle = runner._settle

    def timed_settle(probe: Any) -> None:
        before = len(probe.pending)
        started = time.perf_counter()
        settle(probe)
        took = time.perf_counter() - started
        if timer.phase == "after":
            settle_calls.append((took, before - len(probe.pending)))

    runner._settle = timed_settle  # type: ignore[method-assign]

    async def writer(source: str) -> None:
        writes: set[asyncio.Task[None]] = set()
        while True:
            task = asyncio.create_task(runner.write(source))
            writes.add(task)
            task.add_done_callback(writes.discard)
            await asyncio.sleep(1.0)

    timer.phase = "warmup"
    timer.bench_task = asyncio.current_task()
    runner.start()
    writers = [asyncio.create_task(writer(r)) for r in REGIONS]
    result: dict[str, Any] = {"timeout_seconds": timeout}
    try:
        await asyncio.sleep(args.warmup)
        paused_at = loop.time()
        before_median = statistics.median([e for sent, e in errors if sent < paused_at][10:])
        collect(timer)
        state_before = deep_size(runner.probes)
        rss_before = rss_bytes()
        if trace_memory:
            tracemalloc.start()
        cpu = time.process_time()
        timer.phase = "stall"
        table.pause(SOURCE, TARGET)
        gauge: list[float] = []
        peak_pending = peak_misses = 0
        stall = args.stall_minutes * 60.0
        while loop.time() - paused_at < stall:
            await asyncio.sleep(min(10.0, stall - (loop.time() - paused_at)))
            gauge.append(metrics.registry.get_sample_value(GAUGE, labels) or 0.0)
            probe = runner.probes[(SOURCE, TARGET)]
            peak_pending = max(peak_pending, len(probe.pending))
            peak_misses = max(peak_misses, max((len(p.misses) for p in probe.pending.values()), default=0))
        result["stall_cpu_seconds"] = round(time.process_time() - cpu, 1)
        if trace_memory:
            current, peak = tracemalloc.get_traced_memory()
            snapshot = tracemalloc.take_snapshot()
            tracemalloc.stop()
            result["tracemalloc_held_mb"] = round(current / 1e6, 3)
            result["tracemalloc_peak_mb"] = round(peak / 1e6, 3)
            result["top_allocations"] = [
                f"{s.traceback[0].filename.rsplit('/', 2)[-1]}:{s.traceback[0].lineno} {s.size / 1e6:.3f} MB"
                for s in snapshot.statistics("lineno")[:5]
            ]
            del snapshot
        else:
            collect(timer)
            result["rss_growth_mb"] = round((rss_bytes() - rss_before) / 1e6, 3)
            result["probe_state_mb"] = {"before": round(state_before / 1e6, 3),
                                        "end_of_pause": round(deep_size(runner.probes) / 1e6, 3)}
        result["pending_peak"] = peak_pending
        result["pending_at_resume"] = len(runner.probes[(SOURCE, TARGET)].pending)
        result["misses_per_canary_peak"] = peak_misses
        result["lost_canaries"] = metrics.registry.get_sample_value("gtmon_canary_lost_total", labels) or 0.0
        result["simulated_writes_held"] = table.held()
        resumed_at = loop.time()
        table.resume(SOURCE, TARGET)
        timer.phase = "after"
        await asyncio.sleep(30.0)
        timer.phase = "recovery"
        await asyncio.sleep(args.recovery_canaries + 5.0)
        after = [e for sent, e in errors if sent >= resumed_at][:args.recovery_canaries]
        gauge_after = metrics.registry.get_sample_value(GAUGE, labels) or 0.0
    finally:
        for task in writers:
            task.cancel()
        await asyncio.gather(*writers, return_exceptions=True)
        await runner.stop()
    if trace_memory:
        return result
    longest_settle = max(settle_calls, default=(0.0, 0))
    result |= {
        "oldest_pending_gauge": {
            "first_s": round(gauge[0], 1) if gauge else None,
            "last_s": round(gauge[-1], 1) if gauge else None,
            "samples": len(gauge),
            "rose_every_sample": all(b > a + 9.0 for a, b in itertools.pairwise(gauge)),
            "after_recovery_s": round(gauge_after, 3),
        },
        "longest_callback_ms": {phase: round(seconds * 1000, 2) for phase, seconds in timer.longest.items()},
        "longest_callback_cpu_ms": {p: round(seconds * 1000, 2) for p, seconds in timer.longest_cpu.items()},
        "longest_callback": dict(timer.what),
        "longest_settle_call_ms": round(longest_settle[0] * 1000, 2),
        "settle_calls_after_resume": len(settle_calls),
        "most_canaries_one_settle_call": max((n for _, n in settle_calls), default=0),
        "pre_fault_error_median_ms": round(before_median * 1000, 2),
        "error_after_resume_ms": [round(e * 1000, 1) for e in after],
        "recovery_canaries": recovery_canaries(after, before_median),
    }
    return result


def run(timeout: float, args: argparse.Namespace, trace_memory: bool) -> dict[str, Any]:
    """One pass on a fresh virtual-time loop, every callback timed."""
    timer = CallbackTimer()
    collections = GcTimer(timer)
    loop = VirtualTimeLoop()
    gc.callbacks.append(collections)
    try:
        with timer.installed():
            case = loop.run_until_complete(run_case(timeout, args, timer, trace_memory))
    finally:
        gc.callbacks.remove(collections)
        loop.close()
    if not trace_memory:
        case["longest_gc_ms"] = {k: round(v * 1000, 2) for k, v in sorted(collections.longest.items())}
    return case


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a 2-minute pause (seconds to run)")
    parser.add_argument("--stall-minutes", type=float)
    parser.add_argument("--timeouts", type=float, nargs="+", default=None,
                        help="canary.timeout_seconds, one case each (default 120 and 3600; quick: 60 "
                             "and 3600)")
    parser.add_argument("--no-tracemalloc", dest="tracemalloc", action="store_false",
                        help="skip the second pass of each case (tracemalloc; slow on old code)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--nice", type=int, default=0,
                        help="run at this niceness (negative: shield the wall-time figures from "
                             "other work on a shared machine; needs root)")
    args = parser.parse_args()
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    args.stall_minutes = args.stall_minutes or (2.0 if args.quick else 30.0)
    args.timeouts = args.timeouts or ([60.0, 3600.0] if args.quick else [120.0, 3600.0])
    args.warmup = 40.0 if args.quick else 60.0
    args.recovery_canaries = 15 if args.quick else 20
    # The daemon logs every measurement at info; rendering them is part of settling.
    devnull = open(os.devnull, "w")  # noqa: SIM115
    configure_logging("json", "info", stream=devnull)
    started = time.monotonic()
    cases: dict[str, Any] = {}
    for timeout in args.timeouts:
        name = f"timeout={timeout:g}s"
        case = run(timeout, args, trace_memory=False)
        log(f"{name}, timing pass: {case}")
        if args.tracemalloc:
            memory = run(timeout, args, trace_memory=True)
            log(f"{name}, tracemalloc pass: {memory}")
            case["tracemalloc"] = memory
        cases[name] = case
    met: dict[str, bool] = {}
    for name, case in cases.items():
        held = [case["rss_growth_mb"], case["probe_state_mb"]["end_of_pause"]]
        if "tracemalloc" in case:
            held.append(case["tracemalloc"]["tracemalloc_held_mb"])
        met[f"{name} memory_le_{MEMORY_TARGET_MB:g}MB"] = max(held) <= MEMORY_TARGET_MB
        after = case["longest_callback_ms"].get("after", 0.0)
        met[f"{name} settle_blocks_le_{BLOCKING_TARGET_MS:g}ms"] = after <= BLOCKING_TARGET_MS
        met[f"{name} gauge_rises_through_stall"] = case["oldest_pending_gauge"]["rose_every_sample"]
        met[f"{name} recovery_le_{RECOVERY_TARGET}_canaries"] = (
            case["recovery_canaries"] is not None and case["recovery_canaries"] <= RECOVERY_TARGET)
    params = {
        "quick": args.quick, "stall_minutes": args.stall_minutes, "canary_interval_s": 1.0,
        "timeouts_s": args.timeouts, "paused_link": f"{SOURCE}->{TARGET}", "regions": REGIONS,
        "distances": "gtmon sandbox defaults (simulated)", "time": "virtual (VirtualTimeLoop)",
        "warmup_s": args.warmup, "max_pending": MAX_PENDING, "tracemalloc_pass": args.tracemalloc,
        "memory": "RSS growth and probe state (timing pass), tracemalloc held (second pass)",
        "recovery": f"first canary starting a run of {RECOVERY_RUN} with median bound <= "
                    f"{RECOVERY_FACTOR}x the pre-fault median",
        "monitor": os.path.dirname(os.path.abspath(monitor.__file__)), "seed": args.seed,
        "nice": args.nice, "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    targets = {"memory_mb_30min_pause": MEMORY_TARGET_MB, "settle_blocking_ms": BLOCKING_TARGET_MS,
               "recovery_canaries": RECOVERY_TARGET}
    results = {"cases": cases, "wall_seconds": round(time.monotonic() - started, 1)}
    emit("stall_memory", params, results, targets, met)


if __name__ == "__main__":
    main()
