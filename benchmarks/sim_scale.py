"""Scale target of `mesh sim`: 1,000 peers, 1 simulated hour, 30 % churn, 5 % loss.

    python benchmarks/sim_scale.py                      # the target run, production settings
    python benchmarks/sim_scale.py --repeat 3 --save benchmarks/results/sim-scale-1000.json
    python benchmarks/sim_scale.py --churn 0 --loss 0 --messages 0   # idle traffic
    python benchmarks/sim_scale.py --settings fast      # the simulator-only speed-up
    python benchmarks/sim_scale.py --profile /tmp/sim.prof   # then: python -m pstats ...
    python benchmarks/sim_scale.py --node poll_interval=1800 --dht ksize=10   # what-ifs

Prints the report of each run (one JSON object per line) and, on stderr, how it compares
with the targets: <= 60 s of wall time on 2 cores, delivered == acked, and RPCs per
peer-hour. The report's `settings` says which settings ran (production unless told
otherwise). A benchmark, not a test: it prints numbers and never fails on them.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import pstats
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from mesh.dht.protocol import DhtProtocol
from mesh.dht.server import DhtServer
from mesh.node import Node
from mesh.sim import SETTINGS, Scenario, simulate
from mesh.tools.bench import source_commit

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
    parser.add_argument("--settings", choices=sorted(SETTINGS), default="production")
    parser.add_argument("--charge-cpu", action="store_true", help="CPU time moves the clock")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--save", type=Path, help="write every run's JSON here")
    args = parser.parse_args()
    base = Scenario(settings=args.settings)
    scenario = Scenario(
        settings=args.settings,
        charge_cpu=args.charge_cpu,
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
    runs = []
    for _ in range(args.repeat):
        rpcs.clear()
        operations.clear()
        joined: dict[str, int] = {}

        def progress(
            elapsed: float, snapshot: dict[str, int], joined: dict[str, int] = joined
        ) -> None:
            if "online" in snapshot and not joined:  # the first tick: the join is over
                joined.update(rpcs)

        report = one_run(scenario, args.profile, progress)
        report["rpcs_by_method"] = dict(rpcs.most_common())
        after = sum(rpcs.values()) - sum(joined.values())
        peer_hours = report["peers"] * report["sim_s"] / 3600
        report["rpcs_per_peer_hour_after_join"] = round(after / max(peer_hours, 1e-9), 1)
        report["operations"] = dict(operations.most_common())
        report["rpcs_per_peer_hour"] = rpcs_per_peer_hour(report)
        report["commit"] = source_commit()
        print(json.dumps(report), flush=True)
        summarize(report)
        runs.append(report)
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps({"argv": sys.argv, "runs": runs}, indent=1) + "\n")


def one_run(scenario: Scenario, profile: str | None, progress: Any) -> dict[str, Any]:
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    report = simulate(scenario, progress).to_json()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    return report


def rpcs_per_peer_hour(report: dict[str, Any]) -> float:
    """Outgoing requests over peer-hours, the initial join included."""
    peer_hours = report["peers"] * (report["sim_s"] + report["setup_s"]) / 3600
    return round(sum(report["rpcs_by_method"].values()) / max(peer_hours, 1e-9), 1)


def overrides(pairs: list[str]) -> dict[str, float]:
    """["poll_interval=1800", ...] -> {"poll_interval": 1800.0}; ints stay ints."""
    values: dict[str, float] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        values[name] = int(value) if value.isdigit() else float(value)
    return values


def summarize(report: dict[str, Any]) -> None:
    rpcs = sum(report["rpcs_by_method"].values())
    lines = [
        f"settings {report['settings']['name']} {report['settings']['differs_from_production']}",
        f"wall {report['wall_s']:.1f} s (cpu {report['cpu_s']:.1f} s), target <= "
        f"{WALL_TARGET_S:.0f} s: {'met' if report['wall_s'] <= WALL_TARGET_S else 'MISSED'}",
        f"acked {report['acked']}, delivered {report['delivered']}, lost {len(report['lost'])}: "
        f"{'met' if report['delivered'] == report['acked'] else 'MISSED'}",
        f"delivered via {report['delivered_via']}",
        f"{rpcs} RPCs ({report['rpcs_per_peer_hour']:.0f} per peer-hour, "
        f"{report['rpcs_per_peer_hour_after_join']:.0f} after the join), "
        f"{report['cpu_s'] * 1e6 / max(rpcs, 1):.0f} us CPU per RPC, "
        f"peak RSS {report['rss_mb']} MB",
    ]
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    main()
