"""What a production install carries, against the sandbox install: size, start time, contents.

Installs the checkout into fresh virtual environments, as an operator and the image would
(`pip install -c constraints.txt .`, no extra) and as a new user trying the sandbox would
(`pip install -c constraints.txt '.[sandbox]'`), and measures for each:

* the time pip took (with this machine's pip cache, so mostly unpacking and compiling);
* the installed size, the bytes of every file under the venv's site-packages (pip itself
  and setuptools included; they come with every venv);
* the start time of `gtmon --help`, the median wall and CPU time of several runs;
* which of moto, flask, werkzeug and rich are installed.

And checks, on the daemon install, that it holds none of them, that `gtmon run --help`
works, and that `gtmon sandbox`, `gtmon emulator` and `gtmon fault` exit 2 with one line
naming what to install; on the sandbox install (where they are installed), that importing
what the daemon's commands import loads no moto, flask or werkzeug (rich: see
NEVER_IMPORTED_BY_DAEMON).

    python bench/install.py [--quick]

`--quick` installs the daemon only (about a minute here) and times 3 starts instead of 7;
.ci/run runs it after the test suite, since it is too slow for the suite itself. Uses only
the standard library, so it runs with any Python 3.11. Talks to no network but pip's
configured indexes and cache.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SANDBOX_ONLY = ("moto", "flask", "werkzeug", "rich")
# structlog.dev imports rich whenever it is installed (for its optional tracebacks), so the
# sandbox install's daemon imports load it without gtmon asking; the daemon install works
# without it. The emulator's own dependencies must never load.
NEVER_IMPORTED_BY_DAEMON = ("moto", "flask", "werkzeug")
HINT = "pip install 'gtmon[sandbox]'"
# What the daemon's commands import: the CLI, the daemon and what `init`, `check`, `cost`
# and `config validate` load, then `run --help` parsed for real.
DAEMON_IMPORTS = """
import contextlib, io, sys
import monitor.cli, monitor.service, monitor.check, monitor.cost, monitor.canary.table
with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):
    monitor.cli.main(["run", "--help"])
print(",".join(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1].split(",")))))
"""


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _site_packages_bytes(venv: Path) -> int:
    (site,) = (venv / "lib").glob("python3*/site-packages")
    total = 0
    for folder, _, files in os.walk(site):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                total += os.path.getsize(path)
    return total


def _installed(venv: Path) -> set[str]:
    listing = _run([str(venv / "bin" / "pip"), "list", "--format=json"], 120)
    listing.check_returncode()
    return {p["name"].lower() for p in json.loads(listing.stdout)}


def _help_start_seconds(venv: Path, runs: int) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system) of `gtmon --help`. The CPU time
    hardly depends on what else the machine runs; the wall time does."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = _run([str(venv / "bin" / "gtmon"), "--help"], 60)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        done.check_returncode()
    return statistics.median(walls), statistics.median(cpus)


def _refusal(venv: Path, command: list[str]) -> dict[str, Any]:
    """How a sandbox command ends without the extra: its exit code and stderr lines."""
    done = _run([str(venv / "bin" / "gtmon"), *command], 60)
    lines = done.stderr.strip().splitlines()
    return {
        "exit": done.returncode,
        "stderr": lines,
        "ok": done.returncode == 2 and len(lines) == 1 and HINT in lines[0],
    }


def measure(extra: str | None, start_runs: int, workdir: Path) -> dict[str, Any]:
    venv = workdir / (extra or "daemon")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    spec = f".[{extra}]" if extra else "."
    started = time.perf_counter()
    pip = _run(
        [str(venv / "bin" / "pip"), "install", "-q", "-c", "constraints.txt", spec], 900
    )
    install_seconds = time.perf_counter() - started
    if pip.returncode != 0:
        raise SystemExit(f"pip install {spec} failed:\n{pip.stderr[-3000:]}")
    installed = _installed(venv)
    wall, cpu = _help_start_seconds(venv, start_runs)
    result: dict[str, Any] = {
        "pip_install": f"pip install -c constraints.txt {spec!r}",
        "install_seconds": round(install_seconds, 1),
        "site_packages_mb": round(_site_packages_bytes(venv) / 1e6, 1),
        "distributions": len(installed),
        "help_start_seconds": round(wall, 3),
        "help_start_cpu_seconds": round(cpu, 3),
        "sandbox_only_installed": sorted(set(SANDBOX_ONLY) & installed),
    }
    run_help = _run([str(venv / "bin" / "gtmon"), "run", "--help"], 60)
    result["run_help_ok"] = run_help.returncode == 0 and "--config" in run_help.stdout
    imports = _run([str(venv / "bin" / "python"), "-c", DAEMON_IMPORTS, ",".join(SANDBOX_ONLY)], 60)
    if imports.returncode != 0:
        raise SystemExit(f"importing the daemon's modules failed:\n{imports.stderr[-3000:]}")
    loaded = imports.stdout.strip().splitlines()[-1] if imports.stdout.strip() else ""
    result["daemon_imports_loaded"] = [m for m in loaded.split(",") if m]
    if extra is None:
        result["without_extra"] = {
            "sandbox": _refusal(venv, ["sandbox"]),
            "emulator": _refusal(venv, ["emulator"]),
            "fault": _refusal(venv, ["fault", "clear"]),
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the daemon install only, 3 starts")
    args = parser.parse_args()
    start_runs = 3 if args.quick else 7
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="gtmon-install-") as tmp:
        # What every venv holds before gtmon (pip, setuptools): part of both sizes below.
        subprocess.run([sys.executable, "-m", "venv", f"{tmp}/empty"], check=True, timeout=120)
        empty_mb = round(_site_packages_bytes(Path(tmp) / "empty") / 1e6, 1)
        daemon = measure(None, start_runs, Path(tmp))
        sandbox = None if args.quick else measure("sandbox", start_runs, Path(tmp))
    refusals = daemon["without_extra"]
    met = {
        "daemon_without_sandbox_dependencies": daemon["sandbox_only_installed"] == [],
        "daemon_run_help": daemon["run_help_ok"],
        "sandbox_commands_name_the_extra": all(r["ok"] for r in refusals.values()),
    }
    if sandbox is not None:
        met["sandbox_has_moto_and_rich"] = {"moto", "rich"} <= set(sandbox["sandbox_only_installed"])
        met["daemon_imports_load_no_emulator_module"] = not (
            set(NEVER_IMPORTED_BY_DAEMON) & set(sandbox["daemon_imports_loaded"])
        )
    print(
        json.dumps(
            {
                "bench": "install",
                "params": {
                    "quick": args.quick,
                    "help_start_runs": start_runs,
                    "python": sys.version.split()[0],
                    # Start times and pip times grow with other work on the machine.
                    "load_average_1m_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
                },
                "results": {"empty_venv_site_packages_mb": empty_mb, "daemon": daemon, "sandbox": sandbox},
                "targets": {
                    "daemon_without_sandbox_dependencies": f"none of {', '.join(SANDBOX_ONLY)}",
                    "sandbox_commands_name_the_extra": f"exit 2, one stderr line with {HINT}",
                },
                "met": met,
            },
            indent=2,
        )
    )
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
