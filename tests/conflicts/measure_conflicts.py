"""Measure the detector against the simulator's ground truth, by lag regime and mode.

Run: ``python tests/conflicts/measure_conflicts.py [--examples N] [--hot]`` (prints JSON);
the figures in docs/conflicts.md come from this script. ``--hot`` measures hot items
instead: the property tests' generator (two items rewritten every 0.3-1 s for 40-120
writes, 5-30 % of writes conflicting, links 50 ms-1 s), judged piece by piece. Precision counts a
certain verdict as right only when its lost write, loser region, winner write
and winner region all match a true loss; recall is right verdicts over true
(visible) losses; ``count_exact`` is the share of items whose number of certain
verdicts equals the number of true losses.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conflict_sim import (
    compare,
    hot_ops,
    link_floors,
    random_delays,
    random_ops,
    replay,
    run_detector,
    simulate,
)

from monitor.conflicts import DetectorSettings

REGIMES = {"50-200ms": (0.05, 0.2), "0.2-1s": (0.2, 1.0), "1-5s": (1.0, 5.0)}
MODES = {
    "inferred": ({}, None, None),
    "version": ({"version_attribute": "version"}, "version", None),
    "writer": ({"version_attribute": "version", "writer_attribute": "writer"}, "version", "writer"),
}


def measure(
    mode: str,
    regime: str,
    *,
    examples: int,
    p_delete: float,
    seed: int = 1,
    noise: float = 0.05,
    floor_factor: float = 0.0,
    wrong_floor: float = 1.0,
) -> dict[str, Any]:
    sett, ver, wattr = MODES[mode]
    low, high = REGIMES[regime]
    rng = random.Random(seed)
    truth = reported = right = ambiguous = items = count_exact = named_wrong = 0
    for ex in range(examples):
        ops = random_ops(rng, n_ops=12, items=2, span=4 * high, p_delete=p_delete)
        delays = random_delays(rng, 3, low, high)
        res = simulate(
            ops, delays, seed=ex, noise=noise, version_attribute=ver, writer_attribute=wattr
        )
        settings = DetectorSettings(settle_seconds=high * 2 + 2, **sett)
        floors = link_floors(res, delays, floor_factor) if floor_factor > 0 else None
        if floors and wrong_floor != 1.0:
            # One link got faster than the canary had measured: its floor is too high.
            floors[rng.choice(sorted(floors))] *= wrong_floor
        for item, verdicts in run_detector(res, settings, floors).items():
            score = compare(res, item, verdicts)
            items += 1
            truth += score.truth
            reported += score.certain
            right += score.matched
            named_wrong += len(score.named_wrong)
            ambiguous += sum(1 for v in verdicts if v.mode == "ambiguous")
            count_exact += score.certain == score.truth
    return {
        "mode": mode,
        "lag": regime,
        "p_delete": p_delete,
        "floor_factor": floor_factor,
        "wrong_floor": wrong_floor,
        "items": items,
        "true_losses": truth,
        "certain_verdicts": reported,
        "precision": round(right / reported, 4) if reported else 1.0,
        "recall": round(right / truth, 4) if truth else 1.0,
        "ambiguous_share": round(ambiguous / reported, 4) if reported else 0.0,
        "named_wrong": named_wrong,
        "count_exact": round(count_exact / items, 4) if items else 1.0,
    }


def measure_hot(mode: str, *, examples: int, seed: int = 2000) -> dict[str, Any]:
    """Hot items without the writer attribute ("version" or "inferred"): counted, named
    right, wrong names (counted or not) and segments whose search was cut short."""
    version = "version" if mode == "version" else None
    truth = counted = right = named_wrong = truncated = 0
    for example in range(seed, seed + examples):
        rng = random.Random(example)
        ops = hot_ops(rng, items=2, writes=rng.randint(40, 120), interval=rng.uniform(0.3, 1.0),
                      p_conflict=rng.choice([0.05, 0.15, 0.3]), p_other=rng.choice([0.1, 0.3]))
        delays = random_delays(rng, 3, 0.05, 1.0)
        res = simulate(ops, delays, seed=example, writer_attribute=None,
                       version_attribute=version)
        run = replay(res, DetectorSettings(settle_seconds=3.0, version_attribute=version))
        truncated += run.stats["items_truncated"]
        for item, timed in run.verdicts.items():
            score = compare(res, item, [v for _, v in timed])
            truth += score.truth
            counted += score.certain
            right += score.matched
            named_wrong += len(score.named_wrong)
    return {"mode": mode, "hot": True, "true_losses": truth, "certain_verdicts": counted,
            "counted_right": right, "recall": round(right / truth, 4) if truth else 1.0,
            "named_wrong": named_wrong, "items_truncated": truncated}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument(
        "--floor-factor", type=float, default=0.0,
        help="give the detector link floors of this share of each link's least delay "
        "(as the canary does; 0: none)",
    )
    parser.add_argument(
        "--wrong-floor", type=float, default=1.0,
        help="multiply one random link's floor by this in every workload (a link that got "
        "faster than the canary measured)",
    )
    parser.add_argument("--hot", action="store_true", help="hot items (see above)")
    args = parser.parse_args()
    if args.hot:
        hot = [measure_hot(mode, examples=args.examples) for mode in ("version", "inferred")]
        print(json.dumps(hot, indent=1))
        return
    rows = [
        measure(
            mode, regime, examples=args.examples, p_delete=p, noise=args.noise,
            floor_factor=args.floor_factor, wrong_floor=args.wrong_floor,
        )
        for p in (0.0, 0.15)
        for mode in MODES
        for regime in REGIMES
    ]
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
