"""Shared helpers for the deployment-file tests (rules, dashboard, manifests).

These tests run real tools as subprocesses: promtool and amtool from Debian's
packages (installed by deploy/ci-system-deps.sh), and hadolint, yamllint,
shellcheck, kubernetes-validate and parliament from the test venv. A missing
tool is a failure with the command that installs it, never a skip: a deploy
file that nobody checked must not pass as checked.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROM_DIR = DEPLOY / "prometheus"

_SYSTEM_TOOLS = {
    "promtool": "bash deploy/ci-system-deps.sh  (Debian package 'prometheus')",
    "prometheus": "bash deploy/ci-system-deps.sh  (Debian package 'prometheus')",
    "amtool": "bash deploy/ci-system-deps.sh  (Debian package 'prometheus-alertmanager')",
    "systemd-analyze": "apt-get install systemd",
}


def find_tool(name: str) -> str:
    """Path of `name`: first next to this Python (the venv's bin), then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    how = _SYSTEM_TOOLS.get(name, "pip install -e '.[test]'  (it is a test dependency)")
    pytest.fail(f"{name} is not installed; install it with: {how}", pytrace=False)


def run_tool(
    name: str,
    *args: str | Path,
    cwd: Path | None = None,
    stdin: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run a tool and return the finished process (never raises on exit code)."""
    return subprocess.run(
        [find_tool(name), *map(str, args)],
        cwd=cwd or REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, (
        f"{' '.join(proc.args)} exited {proc.returncode}\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )


# ---- PromQL helpers -------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME = re.compile(r"(?<![A-Za-z0-9_:$])([A-Za-z_:][A-Za-z0-9_:]*)")
_PROMQL_WORDS = {
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "le",
    "inf",
    "nan",
    "Inf",
    "NaN",
}


def metric_names(expr: str) -> set[str]:
    """Metric names (and recording-rule names) used in a PromQL expression.

    Crude but sufficient for our own expressions: drops string literals, label
    matchers' keys, grouping label lists, range durations and function names.
    """
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)  # label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    names = set()
    for match in _NAME.finditer(text):
        word = match.group(1)
        rest = text[match.end() :].lstrip()
        if rest.startswith("("):  # a function call
            continue
        if word in _PROMQL_WORDS or re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def contract_series() -> dict[str, str]:
    """Every series name gtmon exports, from the metric contract (monitor/metrics.py),
    mapped to the contract metric it belongs to (histograms give _bucket/_sum/_count)."""
    from monitor.metrics import METRIC_DOCS

    series: dict[str, str] = {}
    for name, (kind, _labels, _help) in METRIC_DOCS.items():
        if kind == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                series[name + suffix] = name
        else:
            series[name] = name
    return series


def contract_labels() -> dict[str, tuple[str, ...]]:
    from monitor.metrics import METRIC_DOCS

    return {name: labels for name, (_kind, labels, _help) in METRIC_DOCS.items()}


def check_rules_files(paths: Sequence[Path]) -> subprocess.CompletedProcess[str]:
    return run_tool("promtool", "check", "rules", *paths)
