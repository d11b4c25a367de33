"""Memory target of `mesh sim`: 10,000 peers complete (any time) within 4 GiB.

    python benchmarks/sim_memory.py                     # 10,000 peers (very long)
    python benchmarks/sim_memory.py --peers 2000 --duration 120

Prints the report (one JSON object) with the peak RSS of the process and the peak per
peer; on stderr, how that compares with 4 GiB. A benchmark: it never fails on numbers.
"""

from __future__ import annotations

import argparse
import json
import sys

from mesh.sim import Scenario, simulate
from mesh.sim.report import peak_rss_mb

TARGET_MB = 4096.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--churn", type=float, default=0.0)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    before = peak_rss_mb()
    scenario = Scenario(
        peers=args.peers,
        duration=args.duration,
        churn=args.churn,
        loss=args.loss,
        messages=args.messages,
        seed=args.seed,
    )
    data = simulate(scenario).to_json()
    data["rss_before_mb"] = before
    data["kib_per_peer"] = round((data["rss_mb"] - before) * 1024 / args.peers, 1)
    print(json.dumps(data))
    verdict = "met" if data["rss_mb"] <= TARGET_MB else "MISSED"
    print(
        f"{args.peers} peers: peak RSS {data['rss_mb']} MB ({data['kib_per_peer']} KiB per "
        f"peer), target <= {TARGET_MB:.0f} MB: {verdict}; wall {data['wall_s']:.0f} s, "
        f"delivered {data['delivered']}/{data['acked']}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
