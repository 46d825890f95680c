"""The sandbox's demo traffic on `Orders`, the daemon as in bench/soak.py, scored against truth.

A small, bounded stand-in for the soak's `orders_inferred_not_checked` figures: the emulator
of `gtmon sandbox` (bench/_common.py's sandbox_emulator_spec) in a child process, the
canary table and `Orders` (writer attribute `UpdatedIn`, no version), DemoTraffic (staged
conflicts every --conflict-every seconds, default faster than the sandbox's 20 s so a few
minutes give a hundred losses), the daemon `python -m monitor run` in a child process with
soak.py's daemon config minus SoakExact, and optionally one link pause. Scored with
bench/conflicts.py's `score`, as soak.py scores Orders.

    python bench/orders_demo.py [--minutes M] [--seed N] [--conflict-every S]
                                [--pause-at S --pause-for S] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import EmulatorProcess, create_global_table, log, sandbox_emulator_spec, stop_process
from conflicts import score
from footprint import free_port
from soak import CANARY_TABLE, Daemon, counted_verdicts, daemon_config, read_log, without_probes

from monitor.emulator.control import ControlClient
from monitor.emulator.traffic import ORDERS_TABLE, DemoTraffic, create_orders_table
from monitor.sandbox import REGIONS


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    spec = sandbox_emulator_spec() | {"truth_max_writes": 200_000, "seed": args.seed}
    with EmulatorProcess(spec) as emulator:
        control = ControlClient(emulator.url)
        create_global_table(emulator.url, CANARY_TABLE, REGIONS)
        create_orders_table(emulator.url, REGIONS)
        port = free_port()
        config = daemon_config(emulator.url, port, workdir)
        config["tables"] = [t for t in config["tables"] if t["name"] == ORDERS_TABLE]
        config_path = workdir / "orders.yaml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        daemon = Daemon(config_path, workdir / "daemon.log", port)
        demo = DemoTraffic(emulator.url, REGIONS, seed=args.seed,
                           conflict_every_seconds=args.conflict_every)
        daemon.start()
        demo.start()
        t0 = time.time()
        paused = False
        try:
            while time.time() - t0 < args.minutes * 60:
                now = time.time() - t0
                if args.pause_for and not paused and now >= args.pause_at:
                    control.fault("pause", **{"from": REGIONS[0], "to": REGIONS[1]})
                    paused = True
                    log(f"paused {REGIONS[0]} -> {REGIONS[1]}")
                if paused and now >= args.pause_at + args.pause_for:
                    control.fault("resume", **{"from": REGIONS[0], "to": REGIONS[1]})
                    paused = False
                    args.pause_for = 0
                    log("resumed")
                time.sleep(0.2)
            demo.stop()
            time.sleep(args.drain)  # the last conflicts replicate, settle and are judged
            truth = control.truth(ORDERS_TABLE)
        finally:
            demo.stop()
            assert daemon.process is not None
            stop_process(daemon.process)
    events, _ = read_log(workdir / "daemon.log")
    verdicts = counted_verdicts(events, ORDERS_TABLE)
    (workdir / "truth.json").write_text(json.dumps(truth), encoding="utf-8")
    (workdir / "verdicts.json").write_text(json.dumps(verdicts), encoding="utf-8")
    result = {k: v for k, v in score(without_probes(truth), verdicts).items() if not k.startswith("_")}
    return {"params": vars(args), "workdir": str(workdir), "demo": {
        "writes": demo.writes, "conflicts_staged": demo.conflicts_staged}, "orders": result}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--conflict-every", type=float, default=2.0)
    parser.add_argument("--pause-at", type=float, default=60.0)
    parser.add_argument("--pause-for", type=float, default=0.0)
    parser.add_argument("--drain", type=float, default=20.0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gtmon-orders-"))
    workdir.mkdir(parents=True, exist_ok=True)
    out = run(args, workdir)
    text = json.dumps(out, indent=1, default=str)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
