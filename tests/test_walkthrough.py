"""The seed's lost write, typed by hand with the real AWS CLI, as a new user would.

1. The README walkthrough ("Walkthrough: a lost write, by hand, with the AWS CLI"): its
   shell blocks are taken from README.md and run with bash, one bash per terminal the
   text names, against a real `gtmon emulator` on a free loopback port and a `gtmon run`
   started before the conflict on an attribute-less config. The only changes to the text
   are the emulator's port in `E=` (the README says to put the port there) and the
   metrics port in the `curl` line, both asserted below.
2. The same conflict typed into a running `gtmon sandbox --no-ui`, whose config names
   `writer_attribute: UpdatedIn`, with writes that do not carry it.

Both: exactly one lost write counted in gtmon_lww_conflicts_total, won by eu-west-1 and
lost by us-east-1, within 10 s of the resume; writes one after the other through normal
replication lag afterwards add none.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.probes import PROBE_MARK
from tests.test_cli import free_port, get_json, gtmon, interrupt, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # gtmon and aws, as a user's PATH has them
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")
SECTION = "### Walkthrough: a lost write, by hand, with the AWS CLI"
README_EMULATOR = "http://127.0.0.1:8000"
README_METRICS = "http://127.0.0.1:9108"
WITHIN = 10.0  # seconds from the resume to the counted conflict


# ---- the README's walkthrough --------------------------------------------------------------------


def walkthrough() -> tuple[list[str], list[str]]:
    """The walkthrough's shell blocks (```sh) and its other fenced blocks (shown output)."""
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start)
    shell: list[str] = []
    shown: list[str] = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```$", text[start:end], re.S | re.M):
        (shell if lang == "sh" else shown).append(body)
    return shell, shown


def lww_series(metrics_url: str, table: str = "Orders") -> dict[tuple[str, str], float]:
    """(winner, loser) -> value of gtmon_lww_conflicts_total for `table`."""
    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return parse_lww(text, table)


def parse_lww(text: str, table: str = "Orders") -> dict[tuple[str, str], float]:
    series: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith("gtmon_lww_conflicts_total{"):
            continue
        labels_text, value = line[len("gtmon_lww_conflicts_total{") :].rsplit("} ", 1)
        labels = dict(re.findall(r'(\w+)="([^"]*)"', labels_text))
        if labels["table"] == table:
            series[(labels["winner_region"], labels["loser_region"])] = float(value)
    return series


def counted(series: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    return {pair: value for pair, value in series.items() if value}


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """A new user's shell: gtmon and aws on PATH, no AWS config, no proxies, loopback only."""
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "GTMON_")) and "proxy" not in k.lower()
    }
    return {
        **keep,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "AWS_CONFIG_FILE": str(home / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
        "AWS_PAGER": "",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        **extra,
    }


class Terminal:
    """One bash session fed block by block, like a terminal a user pastes into.

    Variables set by one block stay for the next; `set -e` stops at the first failing
    command (the test then fails with the session's output); xtrace lines carry the
    wall-clock time each command started.
    """

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._blocks = 0
        for stream, sink in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr)):
            threading.Thread(target=self._drain, args=(stream, sink), daemon=True).start()
        self._send("set -e\nPS4='+${EPOCHREALTIME} '\nset -x\n")

    @staticmethod
    def _drain(stream: Any, sink: list[str]) -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))

    def _send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text)
        self.process.stdin.flush()

    def run(self, block: str, timeout: float = 90.0) -> list[str]:
        """Run `block` in this session; its stdout lines. Fails if a command fails."""
        self._blocks += 1
        marker = f"__block_{self._blocks}_done__"
        first = len(self.stdout)
        # stdin from /dev/null: no command may swallow the rest of the session's input.
        self._send(f"{{\n{block}\n}} </dev/null\necho {marker}\n")
        deadline = time.monotonic() + timeout
        # A last line without a newline (curl's) shares its line with the marker.
        while not any(line.endswith(marker) for line in self.stdout[first:]):
            if self.process.poll() is not None:
                time.sleep(0.2)  # let the drain threads finish
                raise AssertionError(
                    f"a command failed in block {self._blocks}:\n{block}\n--- stdout:\n"
                    + "\n".join(self.stdout[first:])
                    + "\n--- stderr (last 40 lines):\n"
                    + "\n".join(self.stderr[-40:])
                )
            assert time.monotonic() < deadline, f"block {self._blocks} still running after {timeout} s"
            time.sleep(0.05)
        end = next(i for i in range(first, len(self.stdout)) if self.stdout[i].endswith(marker))
        last = self.stdout[end][: -len(marker)]
        return self.stdout[first:end] + ([last] if last else [])

    def started_at(self, command: str) -> float:
        """Wall-clock time the last traced `command` started."""
        for line in reversed(self.stderr):
            stamp, _, traced = line.partition(" ")
            if stamp.startswith("+") and traced.strip() == command:
                return float(stamp.lstrip("+"))
        raise AssertionError(f"{command!r} was never run:\n" + "\n".join(self.stderr[-40:]))

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self._send("exit\n")
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


class Logged:
    """A process whose stderr is JSON log lines; keeps the lww_conflict events."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self.conflicts: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            with contextlib.suppress(json.JSONDecodeError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event", "").startswith("lww_conflict"):
                    self.conflicts.append(event)

    def summary(self) -> str:
        """What the daemon logged about conflicts: mode, certain, regions (and how known)."""
        fields = ("event", "key", "mode", "certain", "winner_region", "loser_region",
                  "winner_known_by", "loser_known_by")
        shown = [{k: e.get(k) for k in fields if k in e} for e in self.conflicts]
        return "lww_conflict events logged: " + (json.dumps(shown, indent=1) if shown else "none")


def wait_counted(metrics_url: str, since: float) -> dict[tuple[str, str], float]:
    """Poll /metrics until a conflict is counted for Orders or WITHIN s after `since` pass."""
    while True:
        series = lww_series(metrics_url)
        if counted(series) or time.time() > since + WITHIN:
            print(f"counted {counted(series) or 'nothing'} {time.time() - since:.1f} s after the resume")
            return series
        time.sleep(0.1)


def assert_one_lost_write_eu_over_us(series: dict[tuple[str, str], float], daemon: Logged) -> None:
    assert counted(series) == {("eu-west-1", "us-east-1"): 1.0}, (
        f"counted {counted(series) or 'nothing'} for Orders; expected one lost write, "
        f"winner eu-west-1, loser us-east-1. {daemon.summary()}"
    )


def wait_settled(metrics_url: str, not_before: float, timeout: float = 20.0) -> None:
    """Until the detector holds no Orders item and `not_before` has passed (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=5) as response:
            text = response.read().decode()
        tracked = re.search(r'^gtmon_detector_tracked_keys\{table="Orders"\} (\S+)$', text, re.M)
        if time.time() >= not_before and tracked is not None and float(tracked.group(1)) == 0:
            return
        time.sleep(0.25)


def lost_in_truth(endpoint: str) -> list[dict[str, Any]]:
    """The lost writes on Orders but gtmon's own conflict probes (config/sandbox.yaml races
    one every 20 s; their losses are reported apart, never in gtmon_lww_conflicts_total)."""
    truth = get_json(f"{endpoint}/gtmon/truth?table=Orders")
    probes = {w["write_id"] for w in truth["writes"] if PROBE_MARK in (w.get("image") or {})}
    return [lost for lost in truth["lost"] if lost["write_id"] not in probes]


def _attribute_less_config(path: Path, metrics_port: int) -> None:
    """config/sandbox.yaml as the walkthrough names it, without its writer attribute; its
    endpoint is a closed port, so a command that forgets `--endpoint $E` fails loudly."""
    config = yaml.safe_load((ROOT / "config" / "sandbox.yaml").read_text())
    for table in config["tables"]:
        table["conflicts"].pop("writer_attribute", None)
        table["conflicts"].pop("version_attribute", None)
        assert not any("attribute" in field for field in table["conflicts"]), table
    config["aws"]["endpoint_url"] = f"http://127.0.0.1:{closed_port()}"
    config["metrics"]["port"] = metrics_port
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(config))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_readme_walkthrough_blocks_use_e_and_gtmon_endpoint_not_a_fixed_port():
    shell, shown = walkthrough()
    assert len(shell) == 5, shell  # emulator, tables, monitor, conflict, metrics
    emulator, tables, monitor, conflict, metrics = shell
    assert emulator.split("#")[0].strip() == "gtmon emulator"
    assert f"E={README_EMULATOR}" in tables.splitlines()
    assert "export GTMON_ENDPOINT=$E" in [line.split("#")[0].strip() for line in tables.splitlines()]
    assert f"E={README_EMULATOR}" in [line.split("#")[0].strip() for line in monitor.splitlines()]
    for block in (tables, monitor, conflict, metrics):
        commands = "\n".join(
            line.split("#")[0] for line in block.splitlines() if not line.startswith("E=")
        )
        assert "8000" not in commands, block  # everything else goes through $E / GTMON_ENDPOINT
    assert metrics.strip() == f"curl -s {README_METRICS}/metrics | grep gtmon_lww_conflicts_total"
    # The monitor starts before the conflict, which uses a key the first part never wrote.
    assert "gtmon run --config config/sandbox.yaml" in monitor
    assert '"OrderID":{"S":"1002"}' in conflict and "1002" not in tables
    assert "gtmon fault resume" in conflict
    assert shown == [
        'gtmon_lww_conflicts_total{loser_region="us-east-1",table="Orders",'
        'winner_region="eu-west-1"} 1.0\n'
    ]


def test_readme_walkthrough_run_as_written_counts_the_shipped_write_lost_once_eu_over_us(tmp_path):
    shell, shown = walkthrough()
    emulator_block, tables, monitor, conflict, metrics = shell
    port, metrics_port = free_port(), free_port()
    endpoint, metrics_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"

    def here(block: str) -> str:
        replaced = re.sub(r"^E=http://127\.0\.0\.1:8000\b", f"E={endpoint}", block, flags=re.M)
        return replaced.replace(README_METRICS, metrics_url)

    repo = tmp_path / "repo"  # the user's checkout: they run `gtmon run` from its root
    _attribute_less_config(repo / "config" / "sandbox.yaml", metrics_port)
    env = clean_env(tmp_path)

    emulator = subprocess.Popen(
        # The first block, on the free port (the README: "if you started it with another --port").
        [*emulator_block.split("#")[0].split(), "--port", str(port)],
        env=env,
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    terminal: Terminal | None = None
    daemon: Logged | None = None
    try:
        wait_until(lambda: get_json(f"{endpoint}/gtmon/health"), 30, "the emulator")
        terminal = Terminal(repo, env)
        terminal.run(here(tables))

        daemon = Logged(
            subprocess.Popen(
                ["bash", "--noprofile", "--norc", "-e", "-c", here(monitor)],
                env=env,
                cwd=repo,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        )

        def monitor_watching() -> bool:
            assert daemon is not None
            assert daemon.process.poll() is None, "\n".join(daemon.lines[-30:])
            status = get_json(f"{metrics_url}/api/status")
            streams = status["conflicts"].get("streams", {}).get("Orders", {}).get("regions", {})
            return (
                len(status["pairs"]) == 6
                and all(p["measurements"] >= 3 for p in status["pairs"])
                and len(streams) == 3
                and all(r["shards"]["reading"] >= 1 for r in streams.values())
            )

        # A user switches terminals; the monitor has read Orders and measured every link.
        wait_until(monitor_watching, 60, "the monitor reading Orders and measuring every link")

        out = terminal.run(here(conflict))
        resumed = terminal.started_at("gtmon fault resume")
        seen = [line for line in out if line in ("Paid", "Shipped", "Delivered")]
        # The README's comments: each region's own write while paused, then Delivered x 3.
        assert seen == ["Shipped", "Delivered", "Paid", "Delivered", "Delivered", "Delivered"], out
        lost = lost_in_truth(endpoint)
        assert len(lost) == 1, lost  # ground truth: exactly the Shipped write was lost

        series = wait_counted(metrics_url, resumed)
        assert_one_lost_write_eu_over_us(series, daemon)

        # The README's last command shows what the text says.
        shown_lines = terminal.run(here(metrics))
        assert shown[0].strip() in shown_lines, shown_lines
        values = [line for line in shown_lines if line.startswith("gtmon_lww_conflicts_total{")]
        assert [v for v in values if not v.endswith(" 0.0")] == [shown[0].strip()], values

        # Ordinary writes, one region after another, each well after the last has replicated
        # (the emulator's links take 100 ms), lose nothing and count nothing.
        for region in ("ap-southeast-1", "us-east-1", "eu-west-1"):
            terminal.run(
                f"aws dynamodb update-item --endpoint-url $E --region {region} --table-name Orders "
                "--key \"$KEY\" --update-expression 'SET #s = :s' "
                "--expression-attribute-names '{\"#s\":\"Status\"}' "
                f"--expression-attribute-values '{{\":s\":{{\"S\":\"Returned-{region}\"}}}}'\n"
                "sleep 1.5"
            )
        assert len(lost_in_truth(endpoint)) == 1
        wait_settled(metrics_url, not_before=time.time() + 6)  # settle_seconds is 5
        assert_one_lost_write_eu_over_us(lww_series(metrics_url), daemon)
    finally:
        if terminal is not None:
            terminal.close()
        if daemon is not None and daemon.process.poll() is None:
            os.killpg(daemon.process.pid, signal.SIGINT)  # Ctrl-C in the monitor's terminal
            try:
                daemon.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.process.pid, signal.SIGKILL)
                daemon.process.wait(timeout=10)
        interrupt(emulator)
        if daemon is not None:
            print(daemon.summary())


# ---- the same conflict in a running sandbox ------------------------------------------------------


def aws(env: dict[str, str], endpoint: str, region: str, *args: str) -> str:
    done = subprocess.run(
        ["aws", "dynamodb", *args, "--endpoint-url", endpoint, "--region", region],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"aws dynamodb {args[0]} in {region}: {done.stderr}"
    return done.stdout


def fault(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(gtmon("fault", *args), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def order(status: str) -> str:
    return json.dumps(
        {"OrderID": {"S": "seed-by-hand"}, "CustomerID": {"S": "C-42"}, "OrderStatus": {"S": status}}
    )


def test_seed_conflict_typed_into_a_running_sandbox_is_counted_once_eu_over_us(tmp_path):
    port, metrics_port = free_port(), free_port()
    endpoint, metrics_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"
    env = clean_env(
        tmp_path,
        AWS_ACCESS_KEY_ID="sandbox",
        AWS_SECRET_ACCESS_KEY="sandbox",
        GTMON_ENDPOINT=endpoint,
    )
    # No demo traffic: its staged conflicts would be counted too; the sandbox's config
    # (writer_attribute: UpdatedIn) is the same with or without it.
    sandbox = Logged(
        subprocess.Popen(
            gtmon(
                "sandbox", "--no-ui", "--no-traffic", "--port", str(port), "--metrics-port", str(metrics_port)
            ),
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    )
    try:

        def sandbox_watching() -> bool:
            assert sandbox.process.poll() is None, "\n".join(sandbox.lines[-30:])
            status = get_json(f"{metrics_url}/api/status")
            streams = status["conflicts"].get("streams", {}).get("Orders", {}).get("regions", {})
            return (
                len(status["pairs"]) == 6
                and all(p["measurements"] >= 3 for p in status["pairs"])
                and len(streams) == 3
                and all(r["shards"]["reading"] >= 1 for r in streams.values())
            )

        wait_until(sandbox_watching, 60, "the sandbox reading Orders and measuring every link")

        fault(env, "pause")  # every link between the three regions
        shipped_at = time.time()
        aws(env, endpoint, "us-east-1", "put-item", "--table-name", "Orders", "--item", order("Shipped"))
        time.sleep(max(0.0, shipped_at + 1.2 - time.time()))
        aws(env, endpoint, "eu-west-1", "put-item", "--table-name", "Orders", "--item", order("Delivered"))
        cleared = time.time()
        fault(env, "clear")
        assert len(lost_in_truth(endpoint)) == 1

        series = wait_counted(metrics_url, cleared)
        assert_one_lost_write_eu_over_us(series, sandbox)

        # Then ordinary updates of the same order, one region after another, each well after
        # the previous one has replicated (the sandbox's links take 0.5-2 s).
        key = json.dumps({"OrderID": {"S": "seed-by-hand"}, "CustomerID": {"S": "C-42"}})
        for region in ("ap-southeast-1", "us-east-1", "eu-west-1"):
            aws(
                env, endpoint, region, "update-item", "--table-name", "Orders", "--key", key,
                "--update-expression", "SET OrderStatus = :s",
                "--expression-attribute-values", json.dumps({":s": {"S": f"Returned-{region}"}}),
            )
            time.sleep(4.0)
        assert len(lost_in_truth(endpoint)) == 1
        wait_settled(metrics_url, not_before=time.time() + 6)  # settle_seconds is 5
        assert_one_lost_write_eu_over_us(lww_series(metrics_url), sandbox)
    finally:
        interrupt(sandbox.process)
        print(sandbox.summary())
