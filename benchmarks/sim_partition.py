"""Partition target of `mesh sim`: half the network cut off for 10 simulated minutes, then
healed; every message sent during the partition must be delivered after the heal.

    python benchmarks/sim_partition.py                  # 1,000 peers (long)
    python benchmarks/sim_partition.py --peers 200
    python benchmarks/sim_partition.py --charge-cpu      # CPU time moves the virtual clock
    python benchmarks/sim_partition.py --save benchmarks/results/sim-partition-1000.json

Prints one JSON object: the run's report plus, for the messages sent while the network
was cut, how many crossed the cut, how many were delivered, and how long after the heal
the last one arrived. A benchmark: it prints numbers and never fails on them.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from mesh.sim import SETTINGS, Scenario, make_plan, simulate
from mesh.tools.bench import source_commit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--partition-at", type=float, default=600.0)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the cut")
    parser.add_argument("--after", type=float, default=1200.0, help="seconds run after heal")
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--settings", choices=sorted(SETTINGS), default="production")
    parser.add_argument("--charge-cpu", action="store_true", help="CPU time moves the clock")
    parser.add_argument("--save", type=Path, help="write the run's JSON here")
    args = parser.parse_args()
    heal_at = args.partition_at + 60 * args.minutes
    scenario = Scenario(
        peers=args.peers,
        duration=heal_at + args.after,
        messages=args.messages,
        senders=min(args.peers, 50),
        partition_at=args.partition_at,
        heal_at=heal_at,
        seed=args.seed,
        settings=args.settings,
        charge_cpu=args.charge_cpu,
    )
    report = simulate(scenario)
    half = make_plan(scenario, random.Random(args.seed)).sides[0]
    during = [s for s in report.sent if args.partition_at <= s.at < heal_at]
    crossing = [s for s in during if (s.sender in half) != (s.recipient in half)]
    delivered = [s for s in during if s.delivered_at is not None]
    last = max((s.delivered_at or 0.0 for s in crossing), default=heal_at)
    waits = sorted(s.delivered_at - heal_at for s in crossing if s.delivered_at is not None)
    data = report.to_json()
    data["partition"] |= {
        "sent_during": len(during),
        "acked_during": sum(1 for s in during if s.acked),
        "crossing": len(crossing),
        "delivered_during_sent": len(delivered),
        "last_crossing_delivery_after_heal_s": round(last - heal_at, 3),
        "crossing_after_heal_s": [round(w, 1) for w in waits],
    }
    data["commit"] = source_commit()
    print(json.dumps(data))
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps({"argv": sys.argv, "runs": [data]}, indent=1) + "\n")
    ok = len(delivered) == len(during)
    median = waits[len(waits) // 2] if waits else 0.0
    print(
        f"sent during the cut {len(during)} ({len(crossing)} across it), delivered "
        f"{len(delivered)}: {'met' if ok else 'MISSED'}; last crossing message arrived "
        f"{last - heal_at:.1f} s after the heal (median {median:.1f} s); "
        f"wall {data['wall_s']:.1f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
