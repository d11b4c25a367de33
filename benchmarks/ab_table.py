"""Print the A/B table of interleaved `mesh bench --json` runs saved as <side>-<round>.json.

    python benchmarks/ab_table.py benchmarks/results/issue12 old new12

Medians over the rounds of each side's p50s; the ratio is new / old.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

FIGURES = [
    ("send p50 ms", lambda d: d["send_ms"]["p50"]),
    ("fetch20 p50 ms", lambda d: d["fetch20_ms"]["p50"]),
    ("push p50 ms", lambda d: d["push_ms"]["p50"]),
    ("RSS KiB per peer", lambda d: d["rss_kb_per_peer"]),
    ("dht set p50 ms", lambda d: d["dht"]["set_ms"]["p50"]),
    ("dht get p50 ms", lambda d: d["dht"]["get_ms"]["p50"]),
    ("dht mailbox p50 ms", lambda d: d["dht"]["mailbox_ms"]["p50"]),
]


def load(folder: Path, side: str) -> list[dict[str, Any]]:
    runs = []
    for path in sorted(folder.glob(f"{side}-*.json")):
        text = path.read_text().strip()
        if text:
            runs.append(json.loads(text))
    return runs


def main() -> None:
    folder, old_side, new_side = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    old, new = load(folder, old_side), load(folder, new_side)
    runs = f"{len(old)} vs {len(new)} interleaved runs"
    print(f"| figure ({runs}) | {old_side} | {new_side} | ratio |")
    print("|---|---|---|---|")
    for name, get in FIGURES:
        try:
            a = statistics.median(get(d) for d in old)
            b = statistics.median(get(d) for d in new)
        except (KeyError, TypeError):
            continue
        print(f"| {name} | {a:.3g} | {b:.3g} | {b / a:.3f} |")


if __name__ == "__main__":
    main()
