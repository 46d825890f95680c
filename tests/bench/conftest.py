"""The benchmarks' quick runs, two at a time.

Each test here runs one `bench/*.py --quick` and checks what it printed. Run one after the
other they were about four minutes of the suite, most of it spent waiting on emulated
links and timers rather than computing, so the first of them to ask starts every quick
run the session has selected, on two workers in the order the tests come, and each test
waits for its own. A test keeps its own timeout, long enough to cover the run queued
before it; the figures of a quick run are never checked (the machine is shared anyway),
only the shape and what must hold on any machine.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.bench.quick import QuickBenches


@pytest.fixture(scope="session")
def quick_benches(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[QuickBenches]:
    names = [
        marker.args[0]
        for item in request.session.items
        for marker in item.iter_markers("quick_bench")
    ]
    benches = QuickBenches(list(dict.fromkeys(names)), tmp_path_factory.mktemp("quick-benches"))
    yield benches
    benches.close()
