"""Quick runs of the benchmarks, started ahead and run two at a time (see conftest.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 2
RUN_TIMEOUT_S = 240.0
# A quick run must stay quick: one minute alone, with some room for sharing the machine
# with the other worker.
QUICK_BUDGET_S = 90.0


@dataclass(frozen=True)
class QuickRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def quick_command(name: str, out: Path) -> list[str]:
    """The command line of one quick run (`--out` for the benches that write a file)."""
    script = str(ROOT / "bench" / f"{name}.py")
    if name == "soak":
        return [sys.executable, script, "--quick", "--minutes", "0.6", "--out", str(out)]
    return [sys.executable, script, "--quick"]


def _run(command: list[str]) -> QuickRun:
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    return QuickRun(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


class QuickBenches:
    """Quick runs started ahead, two at a time; `result(name)` waits for one."""

    def __init__(self, names: list[str], workdir: Path) -> None:
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="quick-bench")
        self._workdir = workdir
        self._runs: dict[str, Future[QuickRun]] = {}
        for name in names:
            self._submit(name)

    def _submit(self, name: str) -> Future[QuickRun]:
        if name not in self._runs:
            self._runs[name] = self._pool.submit(_run, quick_command(name, self.out(name)))
        return self._runs[name]

    def out(self, name: str) -> Path:
        return self._workdir / f"{name}.json"

    def result(self, name: str) -> QuickRun:
        """The finished run; fails the test if it took more than the quick budget."""
        run = self._submit(name).result()
        assert run.seconds < QUICK_BUDGET_S, f"{name} --quick took {run.seconds:.0f} s"
        return run

    def close(self) -> None:
        for run in self._runs.values():
            run.cancel()
        self._pool.shutdown(wait=True)
