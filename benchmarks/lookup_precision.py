"""What a lookup costs and whether it finds the true replica set, per (alpha, confirm).

    python benchmarks/lookup_precision.py                     # 300 peers, 200 keys each
    python benchmarks/lookup_precision.py --peers 100 --keys 50 --settings 3,3 2,2

Builds the `mesh bench` network (loopback, one address per peer), then for each setting
looks up random keys from the 20 senders in turn and prints, per setting: finds per
lookup, how many of the true 20 closest peers the lookup returned (min, mean), in how
many lookups it returned all 20, and the mean wall time per lookup. The truth is
computed from every peer's id. Numbers, not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time

from mesh.tools.bench import BenchOptions, MeshNet, run_loop


async def measure(
    peers: int, keys: int, settings: list[tuple[int, int]]
) -> list[dict[str, object]]:
    net = MeshNet(BenchOptions(peers=peers), random.Random(1))
    await net.build()
    rng = random.Random(2)
    ids = [s.node_id for s in net.servers]
    rows = []
    try:
        for alpha, confirm in settings:
            for server in net.servers:
                server.config = dataclasses.replace(server.config, alpha=alpha)
            finds, overlaps, wall = 0, [], 0.0
            for i in range(keys):
                client = net.senders[i % len(net.senders)].dht
                key = rng.randbytes(20)
                k = int.from_bytes(key, "big")
                others = (x for x in ids if x != client.node_id)
                truth = set(sorted(others, key=lambda x: int.from_bytes(x, "big") ^ k)[:20])
                assert client.protocol is not None
                before = client.protocol.stats["requests_out"]
                started = time.perf_counter()
                found = await client.lookup(key, confirm=confirm)
                wall += time.perf_counter() - started
                finds += client.protocol.stats["requests_out"] - before
                overlaps.append(len(truth & {c.id for c in found}))
            rows.append(
                {
                    "alpha": alpha,
                    "confirm": confirm,
                    "finds_per_lookup": round(finds / keys, 2),
                    "replicas_found_min": min(overlaps),
                    "replicas_found_mean": round(sum(overlaps) / keys, 2),
                    "exact_sets": f"{sum(o == 20 for o in overlaps)}/{keys}",
                    "lookup_us": round(wall / keys * 1e6),
                }
            )
            await net.wait_quiet()
    finally:
        await net.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, default=300)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument(
        "--settings", nargs="+", default=["3,3", "3,2", "2,3", "2,2", "1,2"], metavar="A,C"
    )
    args = parser.parse_args()
    settings = [tuple(int(x) for x in s.split(",")) for s in args.settings]
    rows = run_loop(measure(args.peers, args.keys, settings), True)  # type: ignore[arg-type]
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
