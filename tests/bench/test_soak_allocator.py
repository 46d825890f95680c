"""bench/soak.py runs the daemon on the allocator it is asked for, whatever the caller's
environment holds: jemalloc with the deployment files' two variables, CPython's own with
neither."""

from __future__ import annotations

import pytest

from tests.bench.bench_module import load_bench
from tests.test_allocator import deployment_environment


def test_pymalloc_runs_without_the_callers_allocator_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    soak = load_bench("soak")
    monkeypatch.setenv("LD_PRELOAD", "libjemalloc.so.2")
    monkeypatch.setenv("PYTHONMALLOC", "malloc")
    monkeypatch.setenv("GTMON_SOAK_MARK", "kept")
    env = soak.allocator_env("pymalloc")
    assert "LD_PRELOAD" not in env and "PYTHONMALLOC" not in env
    assert env["GTMON_SOAK_MARK"] == "kept"


def test_jemalloc_runs_with_the_deployment_files_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    soak = load_bench("soak")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    env = soak.allocator_env("jemalloc")
    assert {k: env[k] for k in ("LD_PRELOAD", "PYTHONMALLOC")} == deployment_environment()
