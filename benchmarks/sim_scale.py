"""Scale target of `mesh sim`: 1,000 peers, 1 simulated hour, 30 % churn, 5 % loss.

    python benchmarks/sim_scale.py                      # the target run (long)
    python benchmarks/sim_scale.py --peers 200 --duration 600
    python benchmarks/sim_scale.py --profile /tmp/sim.prof   # then: python -m pstats ...
    python benchmarks/sim_scale.py --node poll_interval=1800 --dht ksize=10   # what-ifs

Prints the report of the run (one JSON object) and, on stderr, how it compares with the
targets: <= 60 s of wall time on 2 cores, and delivered == acked. A benchmark, not a
test: it prints numbers and never fails on them.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import pstats
import sys
from collections import Counter
from typing import Any

from mesh.dht.protocol import DhtProtocol
from mesh.dht.server import DhtServer
from mesh.node import Node
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


def count_operations() -> Counter[str]:
    """Count high-level operations (each call, not each resumption of the coroutine)."""
    counts: Counter[str] = Counter()
    targets = [(DhtServer, n) for n in ("lookup", "put", "fetch", "subscribe", "republish")]
    targets += [(Node, n) for n in ("_rejoin", "flush_outbox")]
    for cls, name in targets:
        original = getattr(cls, name, None)
        if original is None:
            continue

        def counted(*args: Any, _f: Any = original, _n: str = name, **kw: Any) -> Any:
            counts[_n.lstrip("_")] += 1
            return _f(*args, **kw)

        setattr(cls, name, counted)
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
    parser.add_argument("--node", action="append", default=[], help="NodeOptions NAME=VALUE")
    parser.add_argument("--dht", action="append", default=[], help="DhtConfig NAME=VALUE")
    args = parser.parse_args()
    base = Scenario()
    scenario = Scenario(
        peers=args.peers,
        duration=args.duration,
        churn=args.churn,
        loss=args.loss,
        messages=args.messages,
        seed=args.seed,
        config=dataclasses.replace(base.config, **overrides(args.dht)),
        options=dataclasses.replace(base.options, **overrides(args.node)),
    )
    rpcs = count_rpcs()
    operations = count_operations()
    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    report = simulate(scenario).to_json()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    report["rpcs_by_method"] = dict(rpcs.most_common())
    report["operations"] = dict(operations.most_common())
    report["overrides"] = {"dht": overrides(args.dht), "node": overrides(args.node)}
    print(json.dumps(report))
    summarize(report)


def overrides(pairs: list[str]) -> dict[str, float]:
    """["poll_interval=1800", ...] -> {"poll_interval": 1800.0}; ints stay ints."""
    values: dict[str, float] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        values[name] = int(value) if value.isdigit() else float(value)
    return values


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
