"""Stamp mint and verify times (issue 15): medians and p95 at the default cost.

    python benchmarks/stamps.py [--runs 30] [--cost 13] [--out benchmarks/results/stamps.json]

Each run mints a stamp for a fresh random record id on a requests mailbox key, then
verifies it (and verifies 200 times to time verification). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from mesh import stamps


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--cost", type=int, default=stamps.DEFAULT_COST)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    key = os.urandom(20)
    mints, verifies = [], []
    for _ in range(args.runs):
        record_id = os.urandom(16)
        start = time.perf_counter()
        stamp = stamps.mint(key, record_id, args.cost)
        mints.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(20):
            stamps.verify(key, record_id, stamp, args.cost)
        verifies.append((time.perf_counter() - start) / 20)
    doc = {
        "cost_bits": args.cost,
        "stamps": args.runs,
        "mint_median_s": round(statistics.median(mints), 3),
        "mint_p95_s": round(percentile(mints, 0.95), 3),
        "verify_median_ms": round(statistics.median(verifies) * 1000, 3),
        "verify_p95_ms": round(percentile(verifies, 0.95) * 1000, 3),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "load_average": os.getloadavg()[0],
    }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
