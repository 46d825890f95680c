"""moto's own DynamoDB and DynamoDB Streams tests against `gtmon emulator` and `moto_server`.

`gtmon emulator` is meant as a drop-in for a moto server. This runs the test suite of the
moto release gtmon pins (from its PyPI sdist, fetched beforehand by
scripts/ci-moto-tests.sh; nothing is downloaded here) in moto's server mode
(TEST_SERVER_MODE=true, TEST_SERVER_MODE_ENDPOINT) twice, once against each server
started on 127.0.0.1, and compares the outcomes test by test.

The selection: tests/test_dynamodb and tests/test_dynamodbstreams, without the files that
need other AWS services (CloudFormation, IAM, STS, S3) and without those that never talk to a
server (moto's parsers and models tested in process, and test_server.py, which drives moto's
Flask app directly). `--quick` runs a fixed subset (whole files, chosen once: the streams
tests and the table lifecycle, transactions and batch writes), which the CI test uses when
the full selection is too slow for it.

    python bench/moto_suite.py [--quick] [--suite DIR]

Prints one JSON object last; `met.same_outcome_every_test` is the verdict.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, ROOT, emit, log, stop_process

from monitor.emulator.moto_hooks import MOTO_VERSION

FETCH_SCRIPT = "scripts/ci-moto-tests.sh"
TESTS = ("tests/test_dynamodb", "tests/test_dynamodbstreams")
# Files left out, and why (paths under the suite's root).
OTHER_SERVICES = {
    "tests/test_dynamodb/test_dynamodb_cloudformation.py": "CloudFormation",
    "tests/test_dynamodb/test_dynamodb_iam_permission.py": "IAM, STS",
    "tests/test_dynamodb/test_dynamodb_import_table.py": "S3",
    "tests/test_dynamodb/test_dynamodb_export_table.py": "S3",
    "tests/test_dynamodb/test_dynamodb_resource_policy.py": "STS",
}
NO_SERVER = (
    "tests/test_dynamodb/models",
    "tests/test_dynamodb/test_server.py",
    "tests/test_dynamodb/test_dynamodb_executor.py",
    "tests/test_dynamodb/test_dynamodb_expression_tokenizer.py",
    "tests/test_dynamodb/test_dynamodb_expressions.py",
    "tests/test_dynamodb/test_dynamodb_utils.py",
    "tests/test_dynamodb/test_dynamodb_validation.py",
)
QUICK = (
    "tests/test_dynamodbstreams",
    "tests/test_dynamodb/test_dynamodb_create_table.py",
    "tests/test_dynamodb/test_dynamodb_update_table.py",
    "tests/test_dynamodb/test_dynamodb_transact.py",
    "tests/test_dynamodb/test_dynamodb_batch_write.py",
)
PER_RUN_TIMEOUT_SECONDS = 1800.0
PER_TEST_TIMEOUT_SECONDS = 120


def default_suite() -> Path:
    """Where scripts/ci-moto-tests.sh puts the suite (the same environment variables)."""
    cache = os.environ.get("GTMON_MOTO_TESTS_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gtmon" / "moto-tests"
    )
    return Path(cache) / f"moto-{MOTO_VERSION}"


def missing_suite(suite: Path) -> str | None:
    """Why `suite` is not a usable copy of moto's tests, or None."""
    if (suite / "tests" / "test_dynamodb" / "test_dynamodb.py").is_file():
        return None
    return f"moto {MOTO_VERSION}'s test suite is not at {suite}: run {FETCH_SCRIPT} first"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(process: subprocess.Popen[Any], port: int, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:g} s")


def server_command(server: str, port: int) -> list[str]:
    if server == "moto_server":
        return [PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    # Defaults, as a user would start it: three global-table regions, every other standalone.
    return [PYTHON, "-m", "monitor", "emulator", "--host", "127.0.0.1", "--port", str(port)]


def outcomes(junit: Path) -> dict[str, tuple[str, str]]:
    """Test id -> (outcome, first line of the failure) from a JUnit XML report; a test reported
    twice (a teardown error after a pass) keeps its worst outcome."""
    rank = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}
    result: dict[str, tuple[str, str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                lines = (child.get("message") or "").strip().splitlines()
                message = lines[0][:300] if lines else ""
                break
        if test not in result or rank[outcome] > rank[result[test][0]]:
            result[test] = (outcome, message)
    return result


def run_suite(server: str, suite: Path, paths: list[str], ignores: list[str]) -> dict[str, Any]:
    """Start `server`, run the selection against it in moto's server mode, stop it."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="gtmon-moto-suite-") as scratch:
        server_log = Path(scratch) / "server.log"
        junit = Path(scratch) / "junit.xml"
        with open(server_log, "wb") as log_file:
            process = subprocess.Popen(
                server_command(server, port), cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT
            )
            try:
                _wait_listening(process, port, server)
                env = {
                    **os.environ,
                    "TEST_SERVER_MODE": "true",
                    "TEST_SERVER_MODE_ENDPOINT": url,
                    "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1",
                }
                for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "PYTHONPATH"):
                    env.pop(name, None)
                command = [
                    PYTHON, "-m", "pytest", *paths, *(f"--ignore={p}" for p in ignores),
                    "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                    f"--timeout={PER_TEST_TIMEOUT_SECONDS}", f"--junitxml={junit}",
                ]
                log(f"{server} on {url}: pytest {' '.join(paths)}")
                started = time.monotonic()
                done = subprocess.run(
                    command, cwd=suite, env=env, capture_output=True, text=True,
                    timeout=PER_RUN_TIMEOUT_SECONDS,
                )
                seconds = time.monotonic() - started
            finally:
                stop_process(process)
        if not junit.is_file():
            raise RuntimeError(
                f"pytest against {server} wrote no report (exit {done.returncode}):\n"
                + (done.stdout + done.stderr)[-3000:]
            )
        tests = outcomes(junit)
    counts = {kind: sum(1 for o, _ in tests.values() if o == kind)
              for kind in ("passed", "failed", "error", "skipped")}
    # The machine's load while it ran: the seconds mean little on a shared machine without it.
    load = round(os.getloadavg()[1], 1)
    log(f"{server}: {counts} in {seconds:.1f} s (load average over 5 min {load})")
    return {"seconds": round(seconds, 1), "load_average_5min": load, "counts": counts, "tests": tests}


def compare(
    reference: dict[str, tuple[str, str]], candidate: dict[str, tuple[str, str]]
) -> list[dict[str, str]]:
    """Every test whose outcome differs (or that ran on one side only)."""
    differences = []
    for test in sorted(set(reference) | set(candidate)):
        ours = reference.get(test, ("absent", ""))
        theirs = candidate.get(test, ("absent", ""))
        if ours[0] != theirs[0]:
            differences.append({
                "test": test, "moto_server": ours[0], "gtmon_emulator": theirs[0],
                "message": theirs[1] or ours[1],
            })
    return differences


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the fixed CI subset of the selection")
    parser.add_argument("--suite", type=Path, default=None, help="moto's sdist root (default: the cache)")
    args = parser.parse_args(argv)
    suite = (args.suite or default_suite()).resolve()
    problem = missing_suite(suite)
    if problem:
        print(f"moto_suite: {problem}", file=sys.stderr)
        return 2
    paths = list(QUICK if args.quick else TESTS)
    ignores = [*OTHER_SERVICES, *NO_SERVER]
    runs = {server: run_suite(server, suite, paths, ignores) for server in ("moto_server", "gtmon_emulator")}
    differences = compare(runs["moto_server"]["tests"], runs["gtmon_emulator"]["tests"])
    selected = len(runs["moto_server"]["tests"])
    emit(
        "moto_suite",
        {
            "quick": args.quick,
            "moto_version": MOTO_VERSION,
            "paths": paths,
            "left_out": {**{p: f"needs {why}" for p, why in OTHER_SERVICES.items()},
                         **{p: "never talks to a server" for p in NO_SERVER}},
        },
        {
            "tests": selected,
            **{
                server: {"seconds": run["seconds"], "load_average_5min": run["load_average_5min"],
                         **run["counts"]}
                for server, run in runs.items()
            },
            "cpu_count": os.cpu_count(),
            "differences": differences,
        },
        {"same_outcome_every_test": True},
        {"same_outcome_every_test": selected > 0 and not differences},
    )
    # Non-zero on any difference: .ci/run runs the full selection and must fail on one.
    return 0 if selected > 0 and not differences else 1


if __name__ == "__main__":
    sys.exit(main())
