"""Issue 17 in virtual time: a group of M members over N peers (mesh.sim.groups).

    python benchmarks/sim_group.py --peers 300 --members 100 --messages 50 \
        --save benchmarks/results/sim-group-300.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mesh.sim.groups import GroupScenario, simulate_group
from mesh.tools.bench import source_commit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peers", type=int, default=300)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--churn", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--settings", default="production")
    parser.add_argument("--save", type=Path)
    args = parser.parse_args()
    scenario = GroupScenario(
        peers=args.peers,
        members=args.members,
        messages=args.messages,
        churn=args.churn,
        seed=args.seed,
        settings=args.settings,
    )
    report = simulate_group(scenario)
    summary = report.summary()
    summary["missing_pairs"] = report.missing[:50]
    summary["commit"] = source_commit()
    line = json.dumps(summary)
    print(line)
    if args.save is not None:
        args.save.write_text(line + "\n")


if __name__ == "__main__":
    main()
