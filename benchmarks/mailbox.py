"""Run `mesh bench` one or more times, keep the JSON, print the tables of docs/benchmarks.md.

    python benchmarks/mailbox.py --peers 300 --trials 20 --repeat 3 \\
        --save benchmarks/results/mailbox-300.json
    python benchmarks/regen_docs.py      # then the docs' tables, from the saved file

The machine is shared and noisy: with --repeat R the tables show, for every figure, the
median over the R runs of its p50, and each ratio is the median of the runs' own ratios
(ours and the baselines measured minutes apart in one run, never on different days).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from regen_docs import bench_kv, bench_mailbox, bench_setup, bench_targets

from mesh.tools.bench import BenchOptions, run_bench
from mesh.tools.bench_kv import PREPARATIONS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peers", type=int, default=300)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--full-nodes", action="store_true")
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--prepare", choices=PREPARATIONS, default="settle")
    parser.add_argument("--save", type=Path, required=True, help="write every run's JSON here")
    args = parser.parse_args()
    options = BenchOptions(
        peers=args.peers,
        trials=args.trials,
        seed=args.seed,
        use_uvloop=not args.no_uvloop,
        full_nodes=args.full_nodes,
        prepare=args.prepare,
    )
    runs = []
    for i in range(args.repeat):
        print(f"run {i + 1}/{args.repeat} ...", file=sys.stderr, flush=True)
        runs.append(run_bench(options))
    args.save.parent.mkdir(parents=True, exist_ok=True)
    args.save.write_text(json.dumps({"argv": sys.argv, "runs": runs}, indent=1) + "\n")
    if args.save.resolve() == (Path(__file__).parent / "results" / "mailbox-300.json").resolve():
        for block in (bench_setup, bench_kv, bench_mailbox, bench_targets):
            print(block(), end="\n\n")


if __name__ == "__main__":
    main()
