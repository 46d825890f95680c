"""Conflict probes: deliberate write races that prove the conflict detector works.

`judge` is the pure core (keys, rotation, expected winner, judgement); `runner`
writes the probes and collects their verdicts from the conflict watcher.
"""

from monitor.probes.judge import (
    PROBE_MARK,
    RESULTS,
    Outcome,
    ProbeKeyShape,
    ProbeWrite,
    ReaderFacts,
    is_probe_verdict,
    judge_probe,
)
from monitor.probes.runner import ProbeRunner, ProbeTarget

__all__ = [
    "PROBE_MARK",
    "RESULTS",
    "Outcome",
    "ProbeKeyShape",
    "ProbeRunner",
    "ProbeTarget",
    "ProbeWrite",
    "ReaderFacts",
    "is_probe_verdict",
    "judge_probe",
]
