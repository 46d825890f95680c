"""Counted verdicts judged on part of an item's history, against the simulator's truth.

A restart whose checkpoints had passed some records, a forced judgement or an evicted
item leaves the detector with part of a history: each region's records of the item
with some prefix missing. This cuts an arbitrary prefix (seeded) off every region's
records of simulated workloads (tests/conflicts/conflict_sim.py: 3 regions, 2-12 writes
over 12 s, links 50 ms-5 s) and judges the rest, telling the detector which regions have
no record left. It prints how many counted (certain) verdicts name a write or a region
the truth contradicts; the property test
`test_part_of_a_history_never_yields_a_counted_verdict_that_is_wrong` asserts none.
With PYTHONPATH pointing at an older checkout it measures that code.

    python bench/partial_histories.py [--workloads N]
"""

from __future__ import annotations

import argparse
import collections
import inspect
import math
import os
import random
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests", "conflicts"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import emit
from conflict_sim import REGIONS, Op, compare, simulate

from monitor.conflicts import DetectorSettings, judge

LINKS = [(a, b) for a in range(3) for b in range(3) if a != b]
MODES = {
    "none": {"version_attribute": None, "writer_attribute": None},
    "writer": {"version_attribute": None, "writer_attribute": "writer"},
    "both": {"version_attribute": "version", "writer_attribute": "writer"},
}


def one_mode(mode: str, workloads: int) -> dict[str, Any]:
    attributes = MODES[mode]
    settings = DetectorSettings(settle_seconds=12, **attributes)
    knows_unknown = "unknown" in inspect.signature(judge).parameters
    counted = wrong = items = 0
    for example in range(workloads):
        rng = random.Random(example)
        ops = [Op(rng.uniform(0, 12), rng.randint(0, 2), rng.randint(0, 1))
               for _ in range(rng.randint(2, 12))]
        delays = {link: math.exp(rng.uniform(math.log(0.05), math.log(5.0))) for link in LINKS}
        result = simulate(ops, delays, seed=example, **attributes)
        for item, key in result.keys.items():
            by_region: dict[str, list[Any]] = collections.defaultdict(list)
            for ob in sorted(result.observations, key=lambda o: int(o.sequence_number)):
                if ob.key == key:
                    by_region[ob.region].append(ob)
            cut = {r: obs[rng.randint(0, len(obs)):] for r, obs in by_region.items()}
            cut = {r: obs for r, obs in cut.items() if obs}
            if not cut:
                continue
            items += 1
            extra = ([r for r in REGIONS if r not in cut],) if knows_unknown else ()
            verdicts = [v for v in judge("Orders", key, cut, settings, None, *extra).verdicts
                        if v.certain]
            if verdicts:
                counted += len(verdicts)
                wrong += len(compare(result, item, verdicts).named_wrong)
    return {"items_judged": items, "counted": counted, "counted_wrong": wrong}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", type=int, default=300)
    args = parser.parse_args()
    started = time.monotonic()
    results = {mode: one_mode(mode, args.workloads) for mode in MODES}
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    emit(
        "partial_histories",
        {"workloads": args.workloads, "modes": list(MODES),
         "monitor": os.path.dirname(inspect.getfile(judge))},
        results,
        {"counted_wrong": 0},
        {f"{mode}_no_counted_verdict_wrong": results[mode]["counted_wrong"] == 0 for mode in MODES},
    )


if __name__ == "__main__":
    main()
