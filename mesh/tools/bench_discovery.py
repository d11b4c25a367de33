"""Benchmark: two fresh nodes, no bootstrap, mDNS on loopback -> first acknowledged send.

    python -m mesh.tools.bench_discovery [--trials 5] [--network-key]   # prints JSON

Each trial starts two nodes at once on distinct 127.0.77.x addresses (explicit loopback
interfaces, a random network name so concurrent runs never meet) and times from the
start until `send` returns with the peer's acknowledgement (a receipt with at least one
replica; `put` raises when no peer took the record). Target: p50 <= 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import secrets
import time

from mesh.errors import MeshError
from mesh.netkey import NetworkKey
from mesh.node import Node

BASE_ADDRESS = "127.0.77."
PEER_TIMEOUT = 10.0


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty list."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


async def one_trial(trial: int, private: bool = False) -> float:
    """Milliseconds from starting two nodes to the first send the peer acknowledged
    (with `private`, both in a fresh private mesh: keyed mDNS names, sealed datagrams)."""
    network = f"bench-{secrets.token_hex(4)}"
    key = NetworkKey.generate(network) if private else None
    hosts = [f"{BASE_ADDRESS}{2 * (trial % 100) + i}" for i in (1, 2)]
    started = time.perf_counter()
    a, b = await asyncio.gather(
        *(
            Node.start(host=h, mdns=True, interfaces=[h], network_name=network, network_key=key)
            for h in hosts
        )
    )
    try:
        if await a.wait_peers(1, PEER_TIMEOUT) < 1:
            raise MeshError(f"no peer discovered within {PEER_TIMEOUT} s")
        receipt = await a.send(b.id, "bench")
        elapsed = time.perf_counter() - started
        if receipt.replicas < 1:
            raise MeshError("the send was not acknowledged by the peer")
        return elapsed * 1000.0
    finally:
        await asyncio.gather(a.stop(), b.stop())


async def run_discovery_bench(trials: int = 5, private: bool = False) -> dict[str, float]:
    """p50/p95/min/max in ms over `trials` fresh pairs of nodes."""
    times = sorted([await one_trial(t, private) for t in range(max(1, trials))])
    return {
        "trials": float(len(times)),
        "p50_ms": percentile(times, 0.50),
        "p95_ms": percentile(times, 0.95),
        "min_ms": times[0],
        "max_ms": times[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--network-key", action="store_true", help="a private mesh")
    args = parser.parse_args()
    result = asyncio.run(run_discovery_bench(args.trials, args.network_key))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
