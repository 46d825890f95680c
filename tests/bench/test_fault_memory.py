"""bench/fault_memory.py's pure parts: the phase figures drawn from RSS samples, and the
split of a live process's RSS by kind of mapping."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import pytest

from tests.bench.bench_module import load_bench


@pytest.fixture(scope="module")
def fault_memory() -> ModuleType:
    return load_bench("fault_memory")


def test_figures_read_each_phase_at_its_last_sample_before_the_boundary(fault_memory: ModuleType) -> None:
    samples = [
        {"t_s": t, "heap": 1.0, "anon": 40.0 + extra, "file": 20.0, "other": 0.1, "rss": 61.1 + extra}
        for t, extra in [(0, 0.0), (140, 0.5), (150, 1.0), (230, 3.0), (260, 2.5), (560, 6.0), (680, 5.0)]
    ]
    figures = fault_memory.figures(samples)
    assert figures["rss_mb_before_outage"] == 62.1  # the sample at 150 s: the outage starts then
    assert figures["rss_mb_after_outage"] == 63.6  # the last before the pause (270 s)
    assert figures["rss_mb_at_pause_end"] == 67.1
    assert figures["rss_mb_end"] == 66.1 and figures["rss_mb_peak"] == 67.1
    assert figures["growth_mb"] == 4.0 and figures["growth_by_part_mb"]["anon"] == 4.0
    assert figures["growth"] == pytest.approx(4.0 / 62.1, abs=1e-4)


def test_smaps_parts_add_up_to_the_resident_set(fault_memory: ModuleType) -> None:
    parts = fault_memory.smaps_parts(os.getpid())
    vm_rss_kb = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                     if line.startswith("VmRSS:"))
    assert parts["rss"] == pytest.approx(sum(parts[k] for k in ("heap", "anon", "file", "other")), abs=0.05)
    assert parts["rss"] == pytest.approx(vm_rss_kb / 1024, rel=0.05)
    assert parts["file"] > 0 and parts["anon"] > 0
