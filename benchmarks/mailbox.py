"""Run `mesh bench` one or more times, keep the JSON, print the table of docs/benchmarks.md.

    python benchmarks/mailbox.py --peers 300 --trials 20 --repeat 3 \\
        --save benchmarks/results/mailbox-300.json

The machine is shared and noisy: with --repeat R the table shows, for every figure, the
median over the R runs of its p50, and each run's ratios come from one run (ours and the
baselines measured minutes apart, never on different days). --table FILE only prints the
table of a saved result.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from mesh.tools.bench import BASELINES, BenchOptions, run_bench

# (label, path in our result, path in a baseline's result); None: not measured there.
ROWS: list[tuple[str, tuple[str, ...] | None, tuple[str, ...] | None]] = [
    ("put / set p50 (ms)", ("dht", "set_ms", "p50"), ("set_ms", "p50")),
    ("get one value p50 (ms)", ("dht", "get_ms", "p50"), ("get_ms", "p50")),
    (
        "mailbox: 20 writers, one key, get p50 (ms)",
        ("dht", "mailbox_ms", "p50"),
        ("mailbox_ms", "p50"),
    ),
    ("mailbox: values returned (of 20)", ("dht", "mailbox_values"), ("mailbox_values",)),
    ("RSS per DHT peer (KiB)", ("rss_kb", "dht_server"), ("rss_kb_per_peer",)),
    ("Node.send p50 (ms)", ("send_ms", "p50"), None),
    ("fetch20 p50 (ms), fresh recipient", ("fetch20_ms", "p50"), None),
    ("fetch20 complete (fraction of trials)", ("fetch20_complete",), None),
    ("open 20 records p50 (ms)", ("open20_ms", "p50"), None),
    ("push p50 (ms)", ("push_ms", "p50"), None),
    ("RSS per full Node (KiB)", ("rss_kb", "node"), None),
    ("RSS per peer, whole network (KiB)", ("rss_kb_per_peer",), None),
    ("wall time of one run (s)", ("wall_s",), None),
]


def dig(data: Any, path: tuple[str, ...]) -> float | None:
    for part in path:
        if not isinstance(data, dict) or data.get(part) is None:
            return None
        data = data[part]
    return float(data) if isinstance(data, int | float) else None


def median_of(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def cell(value: float | None) -> str:
    if value is None:
        return "-"
    if value == int(value):
        return str(int(value))
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def ratio(ours: float | None, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}" if ours is not None and theirs else "-"


def table(runs: list[dict[str, Any]]) -> str:
    head = "| | ours | kademlia 2.2.3 | OpenDHT | ours / kademlia | ours / OpenDHT |"
    lines = [head, "|---|---|---|---|---|---|"]
    for label, ours_path, base_path in ROWS:
        ours = median_of([dig(r, ours_path) for r in runs]) if ours_path else None
        theirs = []
        for name in BASELINES:
            values = [dig(r["baselines"].get(name), base_path) for r in runs] if base_path else []
            theirs.append(median_of(values))
        ratios = [ratio(ours, t) if "values" not in label else "-" for t in theirs]
        lines.append(
            f"| {label} | {cell(ours)} | "
            + " | ".join(map(cell, theirs))
            + " | "
            + " | ".join(ratios)
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peers", type=int, default=300)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--full-nodes", action="store_true")
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--save", type=Path, help="write every run's JSON here")
    parser.add_argument("--table", type=Path, help="only print the table of a saved file")
    args = parser.parse_args()
    if args.table:
        runs = json.loads(args.table.read_text())["runs"]
    else:
        options = BenchOptions(
            peers=args.peers,
            trials=args.trials,
            seed=args.seed,
            use_uvloop=not args.no_uvloop,
            full_nodes=args.full_nodes,
        )
        runs = []
        for i in range(args.repeat):
            print(f"run {i + 1}/{args.repeat} ...", file=sys.stderr, flush=True)
            runs.append(run_bench(options))
        if args.save:
            args.save.parent.mkdir(parents=True, exist_ok=True)
            args.save.write_text(json.dumps({"argv": sys.argv, "runs": runs}, indent=1) + "\n")
    print(table(runs))


if __name__ == "__main__":
    main()
