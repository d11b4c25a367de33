"""Stamp mint and verify times (mesh.stamps, issue #15): mint median and p95 over N
records at a cost, attempts per second, and the verify median.

    python benchmarks/stamps.py --runs 60 --save benchmarks/results/issue15/stamps.json

Each run mints for a fresh random record id (random nonces, as in use), so mint times
spread geometrically around ln 2 * 2**cost attempts. No network. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from mesh import stamps


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(runs: int, cost: int, verifies: int) -> dict[str, Any]:
    now = time.time()
    mint_s: list[float] = []
    minted: list[tuple[bytes, bytes]] = []
    attempts = itertools.count()
    for _ in range(runs):
        record_id = os.urandom(32)
        started = time.perf_counter()
        stamp = stamps.mint(record_id, cost, now, on_attempt=lambda: next(attempts))
        mint_s.append(time.perf_counter() - started)
        minted.append((record_id, stamp))
    total_attempts = next(attempts)
    verify_s = []
    for i in range(verifies):
        record_id, stamp = minted[i % len(minted)]
        started = time.perf_counter()
        stamps.verify(record_id, stamp, cost, now)
        verify_s.append(time.perf_counter() - started)
    return {
        "cost": cost,
        "runs": runs,
        "work_bytes": stamps.WORK_BYTES,
        "mint_median_s": round(statistics.median(mint_s), 4),
        "mint_p95_s": round(quantile(mint_s, 0.95), 4),
        "mint_mean_s": round(statistics.fmean(mint_s), 4),
        "attempts_per_s": round(total_attempts / sum(mint_s)),
        "verify_median_ms": round(statistics.median(verify_s) * 1000, 4),
        "verify_p95_ms": round(quantile(verify_s, 0.95) * 1000, 4),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--cost", type=int, default=stamps.DEFAULT_COST)
    parser.add_argument("--verifies", type=int, default=2000)
    parser.add_argument("--save", type=Path)
    args = parser.parse_args()
    result = run(args.runs, args.cost, args.verifies)
    text = json.dumps(result, indent=2)
    print(text)
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(text + "\n")


if __name__ == "__main__":
    main()
