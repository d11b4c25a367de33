"""Scale target of `mesh sim`: 1,000 peers, 1 simulated hour, 30 % churn, 5 % loss.

    python benchmarks/sim_scale.py                      # the target run (long)
    python benchmarks/sim_scale.py --peers 200 --duration 600
    python benchmarks/sim_scale.py --profile /tmp/sim.prof   # then: python -m pstats ...

Prints the report of the run (one JSON object) and, on stderr, how it compares with the
targets: <= 60 s of wall time on 2 cores, and delivered == acked. A benchmark, not a
test: it prints numbers and never fails on them.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
from collections import Counter
from typing import Any

from mesh.dht.protocol import DhtProtocol
from mesh.sim import Scenario, simulate

WALL_TARGET_S = 60.0


def count_rpcs() -> Counter[str]:
    """Count outgoing requests by method (wraps DhtProtocol.call; numbers only)."""
    counts: Counter[str] = Counter()
    original = DhtProtocol.call

    def call(self: DhtProtocol, addr: Any, method: str, args: list[Any], **kw: Any) -> Any:
        counts[method] += 1
        return original(self, addr, method, args, **kw)

    DhtProtocol.call = call  # type: ignore[method-assign]
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=3600.0)
    parser.add_argument("--churn", type=float, default=0.3)
    parser.add_argument("--loss", type=float, default=0.05)
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", help="write cProfile stats to this file")
    args = parser.parse_args()
    scenario = Scenario(
        peers=args.peers,
        duration=args.duration,
        churn=args.churn,
        loss=args.loss,
        messages=args.messages,
        seed=args.seed,
    )
    rpcs = count_rpcs()
    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    report = simulate(scenario).to_json()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    report["rpcs_by_method"] = dict(rpcs.most_common())
    print(json.dumps(report))
    summarize(report)


def summarize(report: dict[str, Any]) -> None:
    rpcs = sum(report["rpcs_by_method"].values())
    peer_hours = report["peers"] * (report["sim_s"] + report["setup_s"]) / 3600
    lines = [
        f"wall {report['wall_s']:.1f} s (cpu {report['cpu_s']:.1f} s), target <= "
        f"{WALL_TARGET_S:.0f} s: {'met' if report['wall_s'] <= WALL_TARGET_S else 'MISSED'}",
        f"acked {report['acked']}, delivered {report['delivered']}, lost {len(report['lost'])}: "
        f"{'met' if report['delivered'] == report['acked'] else 'MISSED'}",
        f"{rpcs} RPCs ({rpcs / max(peer_hours, 1e-9):.0f} per peer-hour), "
        f"{report['cpu_s'] * 1e6 / max(rpcs, 1):.0f} us CPU per RPC, "
        f"peak RSS {report['rss_mb']} MB",
    ]
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    main()
