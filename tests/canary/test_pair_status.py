"""Pair status rules, worst first, one row per outcome."""

from __future__ import annotations

import pytest

from monitor.canary.status import PairFacts, PairState, Thresholds, evaluate

T = Thresholds(warning_seconds=5, critical_seconds=30, stall_seconds=20)


@pytest.mark.parametrize(
    ("facts", "state"),
    [
        (PairFacts(False, True, 100.0, 1.0), PairState.DOWN),
        (PairFacts(True, False, 0.0, None), PairState.DOWN),
        (PairFacts(True, True, 25.0, 1.0), PairState.STALLED),
        (PairFacts(True, True, 0.0, None), PairState.UNKNOWN),
        (PairFacts(True, True, 0.0, 31.0), PairState.CRITICAL),
        (PairFacts(True, True, 19.0, 6.0), PairState.WARNING),
        (PairFacts(True, True, 0.0, 0.4), PairState.OK),
    ],
)
def test_pair_state(facts, state):
    assert evaluate(facts, T) is state


def test_states_order_from_best_to_worst():
    assert max(PairState.OK, PairState.STALLED, PairState.WARNING) is PairState.STALLED
