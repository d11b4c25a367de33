"""Regenerate every table of docs/benchmarks.md and docs/simulation.md from saved results.

    python benchmarks/regen_docs.py            # rewrite the generated blocks in the docs
    python benchmarks/regen_docs.py --check    # exit 1 if a doc differs from its results

A generated block sits between `<!-- generated: NAME -->` and `<!-- end generated -->`;
NAME picks its builder in BLOCKS. Every figure comes from a JSON file in
benchmarks/results/ (written by `--save` of mailbox.py, sim_scale.py, sim_partition.py,
or by `mesh sim --json`), and each block names the commit its results were measured at.
Nothing in those blocks is typed by hand: edit the results (rerun), then this script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCS = [ROOT / "docs" / "benchmarks.md", ROOT / "docs" / "simulation.md"]
BEGIN = "<!-- generated: "
END = "<!-- end generated -->"
SYSTEMS = ("ours", "k8", "kademlia", "opendht")
WALL_TARGET_S = 60.0  # issue 19: 1,000 peers x 1 h, production settings
IDLE_TARGET = 300  # RPCs per idle peer-hour, production settings
SYSTEM_NAMES = {"ours": "ours", "k8": "ours, k = 8", "kademlia": "kademlia 2.2.3"}
SYSTEM_NAMES["opendht"] = "OpenDHT"


# -- reading results ---------------------------------------------------------------------


def note(name: str) -> str:
    """The file's own note on how it was measured, if it has one."""
    data = json.loads((RESULTS / name).read_text())
    return f" Note: {data['note']}." if isinstance(data, dict) and data.get("note") else ""


def runs(name: str) -> list[dict[str, Any]]:
    """The runs of a results file: {"runs": [...]} or one report object per file."""
    data = json.loads((RESULTS / name).read_text())
    found: list[dict[str, Any]] = data.get("runs", [data])
    return found


def dig(data: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(data, dict) or data.get(part) is None:
            return None
        data = data[part]
    return data


def median(values: Iterable[Any]) -> float | None:
    """The median, an int if every value is an int and so is the median (k, counts)."""
    present = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if not present:
        return None
    middle = statistics.median(present)
    if all(isinstance(v, int) for v in present) and float(middle).is_integer():
        return int(middle)
    return float(middle)


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 10):
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def commits(found: list[dict[str, Any]]) -> str:
    names = sorted({str(r.get("commit") or "unknown") for r in found})
    return ", ".join(f"`{n}`" for n in names)


def table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# -- mesh bench --------------------------------------------------------------------------


def system(run: dict[str, Any], name: str) -> dict[str, Any] | None:
    if name == "ours":
        return dict(run["dht"]) | {"replication": run.get("replication")}
    if name == "k8":
        equal: dict[str, Any] | None = run.get("equal_work")
        return equal
    base: dict[str, Any] | None = run["baselines"].get(name)
    return base


def over_runs(found: list[dict[str, Any]], name: str, *path: str) -> float | None:
    return median(dig(system(r, name), *path) for r in found)


def bench_setup() -> str:
    found = runs("mailbox-300.json")
    first = found[0]
    loads = [x for r in found for x in r.get("load_avg", [])]
    prep = first["preparation"]
    return (
        f"{len(found)} runs of `mesh bench --peers {first['peers']} --trials "
        f"{first['trials']}` at commit {commits(found)}, {first['loop']}, "
        f"{first['cpus']} cores shared with other work (load average "
        f"{min(loads):.2f}-{max(loads):.2f} during the runs). Preparation of every DHT: "
        f"`{prep['policy']}` ({prep['settle_s']} s idle after joining, gc.freeze "
        f"{'yes' if prep['gc_freeze'] else 'no'}, extra bucket refresh "
        f"{'yes' if prep['bucket_refresh'] else 'no'}). Each figure is the median over the "
        "runs of that run's p50; each ratio is the median of the runs' own ratios (ours "
        "and the baseline measured minutes apart in one run)." + note("mailbox-300.json")
    )


KV_ROWS = [
    ("replication factor k", ("replication", "k")),
    ("put / set p50 (ms)", ("set_ms", "p50")),
    ("get one value p50 (ms)", ("get_ms", "p50")),
    ("mailbox: 20 writers, one key, get p50 (ms)", ("mailbox_ms", "p50")),
    ("mailbox: values returned (of 20), median", ("mailbox_values",)),
    ("mailbox: values returned, worst trial", ("mailbox_values_min",)),
    ("RSS per DHT peer (KiB)", ("rss_kb_per_peer",)),
]
RATIO_KEYS = {"put / set": "set", "get one": "get", "mailbox: 20": "mailbox"}


def ratio_cell(found: list[dict[str, Any]], key: str) -> str:
    return fmt(median(dig(r, "ratios", key) for r in found))


def bench_kv() -> str:
    found = runs("mailbox-300.json")
    head = ["", *(SYSTEM_NAMES[s] for s in SYSTEMS)]
    head += ["ours / kademlia", "ours / OpenDHT", "ours k = 8 / OpenDHT"]
    rows = []
    for label, path in KV_ROWS:
        if path == ("rss_kb_per_peer",):
            cells = [fmt(median(dig(r, "rss_kb", "dht_server") for r in found))]
            cells += [fmt(over_runs(found, s, *path)) for s in SYSTEMS[1:]]
        else:
            cells = [fmt(over_runs(found, s, *path)) for s in SYSTEMS]
        op = next((v for k, v in RATIO_KEYS.items() if label.startswith(k)), None)
        ratios = ["-", "-", "-"]
        if op is not None:
            ratios = [
                ratio_cell(found, f"dht_{op}_vs_kademlia"),
                ratio_cell(found, f"dht_{op}_vs_opendht"),
                ratio_cell(found, f"k8_{op}_vs_opendht"),
            ]
        rows.append([label, *cells, *ratios])
    returns = [dig(system(found[0], s), "replication", "put_returns") or "-" for s in SYSTEMS]
    text = table(head, rows) + "\n\nWhen a put returns:\n\n"
    text += "\n".join(f"- {SYSTEM_NAMES[s]}: {r}" for s, r in zip(SYSTEMS, returns, strict=True))
    return text


MAILBOX_ROWS = [
    ("Node.send p50 (ms)", ("send_ms", "p50")),
    ("fetch20 cold p50 (ms): a peer that never looked the key up", ("fetch20_cold_ms", "p50")),
    ("fetch20 cold complete (fraction of trials)", ("fetch20_cold_complete",)),
    ("fetch20 warm p50 (ms): the recipient, after its own catch-up", ("fetch20_warm_ms", "p50")),
    ("fetch20 warm complete (fraction of trials)", ("fetch20_warm_complete",)),
    ("open 20 records p50 (ms)", ("open20_ms", "p50")),
    ("catch-up after `Node.start` p50 (ms)", ("catchup_ms", "p50")),
    ("push p50 (ms)", ("push_ms", "p50")),
    ("RSS per full Node (KiB)", ("rss_kb", "node")),
    ("RSS per peer, whole network (KiB)", ("rss_kb_per_peer",)),
    ("wall time of one run (s)", ("wall_s",)),
]


def bench_mailbox() -> str:
    found = runs("mailbox-300.json")
    head = ["", "median", *(f"run {i + 1}" for i in range(len(found)))]
    rows = []
    for label, path in MAILBOX_ROWS:
        values = [dig(r, *path) for r in found]
        rows.append([label, fmt(median(values)), *(fmt(v) for v in values)])
    rows.append(
        [
            "fetch20 cold / OpenDHT's mailbox get",
            ratio_cell(found, "fetch20_cold_vs_opendht_mailbox"),
            *(fmt(dig(r, "ratios", "fetch20_cold_vs_opendht_mailbox")) for r in found),
        ]
    )
    return table(head, rows)


def target_row(label: str, goal: str, value: float | None, ok: bool | None) -> list[str]:
    status = "-" if ok is None else ("met" if ok else "missed")
    return [label, goal, fmt(value), status]


def bench_targets() -> str:
    found = runs("mailbox-300.json")
    send = median(dig(r, "send_ms", "p50") for r in found)
    cold = median(dig(r, "fetch20_cold_ms", "p50") for r in found)
    complete = min((dig(r, "fetch20_cold_complete") or 0.0) for r in found)
    push = median(dig(r, "push_ms", "p50") for r in found)
    memory = median(dig(r, "rss_kb_per_peer") for r in found)
    vs_opendht = median(dig(r, "ratios", "fetch20_cold_vs_opendht_mailbox") for r in found)
    rows = [
        target_row("send p50 (ms)", "<= 2", send, send is not None and send <= 2),
        target_row("fetch20 cold p50 (ms)", "<= 4", cold, cold is not None and cold <= 4),
        target_row("fetch20 cold complete (worst run)", "1.0", complete, complete == 1.0),
        target_row("push p50 (ms)", "<= 2", push, push is not None and push <= 2),
        target_row("memory per peer (KiB)", "<= 100", memory, memory is not None and memory <= 100),
        target_row(
            "fetch20 cold / OpenDHT's mailbox get",
            "<= 1",
            vs_opendht,
            vs_opendht is not None and vs_opendht <= 1,
        ),
    ]
    return table(["", "target", "measured (median of runs)", ""], rows)


# -- mesh sim ----------------------------------------------------------------------------


def settings_text(run: dict[str, Any]) -> str:
    settings = run.get("settings") or {}
    diff = settings.get("differs_from_production") or {}
    changed = [f"`{k}` {v}" for part in diff.values() for k, v in part.items()]
    name = settings.get("name", "?")
    return name + (f" ({', '.join(changed)})" if changed else "")


def sim_row(label: str, run: dict[str, Any]) -> list[str]:
    via = run.get("delivered_via") or {}
    return [
        label,
        settings_text(run) + (", CPU charged" if run.get("cpu_charged") else ""),
        fmt(run["wall_s"], 1),
        fmt(run["cpu_s"], 1),
        f"{run['acked']} / {run['delivered']} / {len(run['lost'])}",
        " / ".join(str(via.get(k, "-")) for k in ("push", "fetch", "poll")),
        fmt(run.get("rpcs_per_peer_hour"), 0),
        fmt(run.get("rpcs_per_peer_hour_after_join"), 0),
        fmt(run["rss_mb"], 0),
    ]


SIM_HEAD = [
    "run",
    "settings",
    "wall (s)",
    "CPU (s)",
    "acked / delivered / lost",
    "by push / fetch / poll",
    "RPCs per peer-hour",
    "after the join",
    "peak RSS (MB)",
]


def sim_scale() -> str:
    found = runs("sim-scale-1000.json")
    fast = runs("sim-scale-1000-fast.json")
    rows = [sim_row(f"production {i + 1}", r) for i, r in enumerate(found)]
    rows += [sim_row("fast", r) for r in fast]
    first = found[0]
    walls = median(r["wall_s"] for r in found) or 0.0
    cpus = median(r["cpu_s"] for r in found) or 0.0
    lost = sum(len(r["lost"]) for r in found)
    verdict = "met" if walls <= WALL_TARGET_S else f"missed by {walls - WALL_TARGET_S:.1f} s"
    return (
        f"1,000 peers, {fmt(first['sim_s'], 0)} s simulated (+ the join), 30 % churn, 5 % "
        f"loss, seed {first['seed']}: `python benchmarks/sim_scale.py --repeat "
        f"{len(found)}` and `--settings fast`, at commit {commits(found + fast)}. With "
        f"production settings: median **{fmt(walls, 1)} s wall** ({fmt(cpus, 1)} s CPU), "
        f"target <= {WALL_TARGET_S:.0f} s {verdict}; {lost} lost in all runs (target 0: "
        f"{'met' if lost == 0 else 'missed'}).{note('sim-scale-1000.json')}\n\n"
        + table(SIM_HEAD, rows)
    )


def sim_idle() -> str:
    files = sorted(RESULTS.glob("sim-idle-*.json"), key=lambda p: int(p.stem.split("-")[-1]))
    found = [runs(p.name)[0] for p in files]
    worst = max(r["rpcs_per_peer_hour_after_join"] for r in found)
    verdict = "met" if worst <= IDLE_TARGET else f"missed by {worst - IDLE_TARGET:.0f}"
    sizes = " and ".join(f"{r['peers']:,}" for r in found)
    rows = [sim_row(f"idle, {r['peers']:,} peers", r) for r in found]
    return (
        f"No sends, no churn, no loss, one hour, {sizes} peers, production settings, commit "
        f"{commits(found)}. Once joined, at most **{fmt(worst, 0)} RPCs per peer-hour** "
        f"(target <= {IDLE_TARGET}: {verdict}); the column before it counts the join in "
        "the hour.\n\n" + table(SIM_HEAD, rows)
    )


def sim_rpcs() -> str:
    production, fast = runs("sim-scale-1000.json")[0], runs("sim-scale-1000-fast.json")[0]
    idle = runs("sim-idle-1000.json")[0]  # the same size as the other two
    columns = [("production", production), ("fast", fast), ("idle, production", idle)]
    methods = sorted(
        set().union(*(r["rpcs_by_method"] for _, r in columns)),
        key=lambda m: -production["rpcs_by_method"].get(m, 0),
    )

    def per_hour(run: dict[str, Any], count: int) -> str:
        return fmt(count / (run["peers"] * (run["sim_s"] + run["setup_s"]) / 3600), 0)

    rows = [
        [f"`{m}`", *(per_hour(r, r["rpcs_by_method"].get(m, 0)) for _, r in columns)]
        for m in methods
    ]
    rows.append(["all", *(per_hour(r, sum(r["rpcs_by_method"].values())) for _, r in columns)])
    return table(["RPCs per peer-hour (join included)", *(n for n, _ in columns)], rows)


def partition_row(label: str, run: dict[str, Any]) -> list[str]:
    part = run["partition"]
    return [
        label,
        str(part["sent_during"]),
        str(part["crossing"]),
        str(part["delivered_during_sent"]),
        fmt(dig(part, "after_heal_s", "p50")),
        fmt(part["last_crossing_delivery_after_heal_s"]),
        fmt(run["wall_s"], 1),
    ]


def sim_partition() -> str:
    plain, charged = runs("sim-partition-1000.json"), runs("sim-partition-1000-cpu.json")
    run = plain[0]
    head = ["virtual clock", "sent during the cut", "across it", "delivered"]
    head += ["after heal p50 (s)", "last crossing after heal (s)", "wall (s)"]
    rows = [partition_row("CPU free", run), partition_row("CPU charged", charged[0])]
    return (
        f"{run['peers']:,} peers, cut at {fmt(run['partition']['at'], 0)} s, healed at "
        f"{fmt(run['partition']['heal_at'], 0)} s, production settings, commit "
        f"{commits(plain + charged)} (`python benchmarks/sim_partition.py`, and with "
        "`--charge-cpu`):\n\n" + table(head, rows)
    )


def sim_example(name: str) -> str:
    run = runs(name)[0]
    caption = f"At commit {commits([run])}:\n\n"
    lat = run["latency_ms"]
    head = ["settings", "sent", "skipped", "acked", "delivered", "lost", "by push / fetch / poll"]
    head += ["p50 (ms)", "p95 (ms)", "p99 (ms)", "datagrams", "lost datagrams", "wall (s)"]
    via = run["delivered_via"]
    row = [
        settings_text(run),
        str(run["sent"]),
        str(run["skipped"]),
        str(run["acked"]),
        str(run["delivered"]),
        str(len(run["lost"])),
        f"{via['push']} / {via['fetch']} / {via['poll']}",
        *(fmt(lat[k], 0) for k in ("p50", "p95", "p99")),
        fmt(run["network"].get("sent"), 0),
        fmt(run["network"].get("lost", 0), 0),
        fmt(run["wall_s"], 1),
    ]
    return caption + table(head, [row])


# -- before and after ---------------------------------------------------------------------


def old_and_new() -> str:
    """Headline figures at the commit before this work and now, measured in one sitting."""
    old_bench, new_bench = runs("old-e3dca19/mailbox-300.json"), runs("mailbox-300.json")
    old_sim, new_sim = runs("old-e3dca19/sim-scale-1000.json"), runs("sim-scale-1000.json")
    old_fast = runs("old-e3dca19/sim-scale-1000-fast.json")

    def bench(found: list[dict[str, Any]], *path: str) -> str:
        return fmt(median(dig(r, *path) for r in found))

    def sim(found: list[dict[str, Any]], key: str, digits: int = 1) -> str:
        return fmt(median(r.get(key) for r in found), digits)

    def delivered(found: list[dict[str, Any]]) -> str:
        outcomes = sorted(
            {f"{r['delivered']} of {r['acked']}, {len(r['lost'])} lost" for r in found}
        )
        return " / ".join(outcomes) + (f" (each of {len(found)} runs)" if len(found) > 1 else "")

    old_rate = [dict(r, rate=rate(r)) for r in old_sim]
    new_rate = [dict(r, rate=rate(r)) for r in new_sim]
    rows = [
        ["send p50 (ms)", bench(old_bench, "send_ms", "p50"), bench(new_bench, "send_ms", "p50")],
        ["fetch20 cold p50 (ms)", "not measured", bench(new_bench, "fetch20_cold_ms", "p50")],
        [
            "fetch20 warm p50 (ms) (before: called `fetch20_ms`)",
            bench(old_bench, "fetch20_ms", "p50"),
            bench(new_bench, "fetch20_warm_ms", "p50"),
        ],
        ["push p50 (ms)", bench(old_bench, "push_ms", "p50"), bench(new_bench, "push_ms", "p50")],
        [
            "put / OpenDHT's put",
            bench(old_bench, "ratios", "dht_set_vs_opendht"),
            bench(new_bench, "ratios", "dht_set_vs_opendht"),
        ],
        [
            "get / OpenDHT's get",
            bench(old_bench, "ratios", "dht_get_vs_opendht"),
            bench(new_bench, "ratios", "dht_get_vs_opendht"),
        ],
        [
            "fetch20 / OpenDHT's mailbox get (before: warm; now: cold)",
            bench(old_bench, "ratios", "fetch20_vs_opendht_mailbox"),
            bench(new_bench, "ratios", "fetch20_cold_vs_opendht_mailbox"),
        ],
        [
            "1,000 peers, 1 h, production settings: wall (s)",
            sim(old_sim, "wall_s"),
            sim(new_sim, "wall_s"),
        ],
        ["the same: RPCs per peer-hour", sim(old_rate, "rate", 0), sim(new_rate, "rate", 0)],
        ["the same: delivered / lost", delivered(old_sim), delivered(new_sim)],
        [
            "1,000 peers, 1 h, simulator-only settings (`fast`): wall (s)",
            sim(old_fast, "wall_s"),
            sim(runs("sim-scale-1000-fast.json"), "wall_s"),
        ],
    ]
    return (
        f"Before: commit {commits(old_bench)} (its own bench harness: unequal preparation, "
        f"no cold fetch); now: {commits(new_bench + new_sim)}. Bench: medians of "
        f"{len(old_bench)} and {len(new_bench)} runs; simulator: {len(old_sim)} and "
        f"{len(new_sim)} run(s). 2 cores shared with other agents.\n\n"
        + table(["", "before", "now"], rows)
    )


def rate(run: dict[str, Any]) -> float:
    rpcs = sum(run["rpcs_by_method"].values())
    return rpcs / (run["peers"] * (run["sim_s"] + run["setup_s"]) / 3600)


def stamps_block() -> str:
    """Issue 15: what a stranger's stamp costs to mint and to check."""
    run = runs("stamps.json")[0]
    rows = [
        ["mint, median (s)", fmt(run["mint_median_s"])],
        ["mint, p95 (s)", fmt(run["mint_p95_s"])],
        ["verify, median (ms)", fmt(run["verify_median_ms"], 3)],
        ["verify, p95 (ms)", fmt(run["verify_p95_ms"], 3)],
    ]
    return (
        f"Cost {run['cost_bits']} bits (the default), {run['stamps']} stamps, "
        f"`python benchmarks/stamps.py` (load average {run['load_average']:.1f}).\n\n"
        + table(["stamp", "value"], rows)
    )


AB_FIGURES = [
    ("send p50 ms", ("send_ms", "p50")),
    ("fetch20 cold p50 ms", ("fetch20_cold_ms", "p50")),
    ("fetch20 warm p50 ms", ("fetch20_warm_ms", "p50")),  # before issue 19: fetch20_ms
    ("push p50 ms", ("push_ms", "p50")),
    ("RSS KiB per peer", ("rss_kb_per_peer",)),
]


def ab_block(
    folder: str,
    old: str,
    new: str,
    what: str,
    figures: list[tuple[str, tuple[str, ...]]] | None = None,
) -> Callable[[], str]:
    """An interleaved A/B of `mesh bench --json` runs saved as <side>-<round>.json in
    benchmarks/results/<folder>/: medians over the rounds of each side's p50s."""

    def build() -> str:
        sides = []
        for side in (old, new):
            found = [
                json.loads(p.read_text()) for p in sorted((RESULTS / folder).glob(f"{side}-*.json"))
            ]
            sides.append(found)
        rows = []
        for label, path in AB_FIGURES if figures is None else figures:
            older = ("fetch20_ms", "p50") if path[0] == "fetch20_warm_ms" else path
            a = median(dig(run, *path) or dig(run, *older) for run in sides[0])
            b = median(dig(run, *path) or dig(run, *older) for run in sides[1])
            if a is None or b is None:
                continue
            rows.append([label, fmt(a), fmt(b), f"{b / a:.3f}"])
        loads = [load for run in sides[0] + sides[1] for load in run.get("load_avg", [])]
        return (
            f"{what}; {len(sides[0])} vs {len(sides[1])} interleaved runs in one sitting, "
            f"load average {min(loads):.2f}-{max(loads):.2f}, "
            f"benchmarks/results/{folder}/{{{old},{new}}}-N.json.\n\n"
            + table(["figure", old, new, "ratio"], rows)
        )

    return build


def sim_group() -> str:
    """The issue-17 group simulation (benchmarks/sim_group.py --save)."""
    run = runs("sim-group-300.json")[0]
    rows = [
        ["peers / members / messages", f"{run['peers']} / {run['members']} / {run['messages']}"],
        ["members joined (invitations over the network)", fmt(run["joined"])],
        ["deliveries expected (message x member)", fmt(run["deliveries_expected"])],
        ["missing", fmt(run["missing"])],
        ["duplicates", fmt(run["duplicates"])],
        ["sent after the removal, opened by the removed", fmt(run["leaked_to_removed"])],
        [
            "the member away for a day: got / expected",
            f"{run['away_got']} / {run['away_expected']}",
        ],
        ["send errors", fmt(run["send_errors"])],
        ["replicas of a put, min", fmt(run["replicas_min"])],
        ["virtual s / wall s", f"{fmt(run['virtual_s'])} / {fmt(run['wall_s'])}"],
    ]
    return (
        f"`python benchmarks/sim_group.py --peers {run['peers']} --members {run['members']} "
        f"--messages {run['messages']}`, settings `{run['settings']}`, at "
        f"{commits([run])}: benchmarks/results/sim-group-300.json.\n\n"
        + table(["figure", "value"], rows)
    )


GROUP_FIGURES = [
    ("group send p50 ms", ("group_send_ms", "p50")),
    ("one-to-one send (online recipient) p50 ms", ("send_online_ms", "p50")),
    ("group send / one-to-one send", ("group_send_vs_send",)),
    ("push: first member has it, p50 ms", ("group_push_first_ms", "p50")),
    ("push: every member has it, p50 ms", ("group_push_all_ms", "p50")),
    ("push: every member has it, p95 ms", ("group_push_all_ms", "p95")),
    ("messages every member got", ("group_push_complete",)),
    ("members who joined", ("group_joined",)),
    ("the process's CPU per member and message, p50 ms", ("group_cpu_per_member_ms", "p50")),
]


def bench_group() -> str:
    """`mesh bench --group N` runs saved as benchmarks/results/issue17/ab/new-N.json."""
    found = [
        json.loads(p.read_text()) for p in sorted((RESULTS / "issue17" / "ab").glob("new-*.json"))
    ]
    rows = []
    for label, path in GROUP_FIGURES:
        rows.append([label, fmt(median(dig(run, *path) for run in found))])
    loads = [load for run in found for load in run.get("load_avg", [])]
    first = found[0]
    return (
        f"`mesh bench --peers {first['peers']} --group {first['group_members']} "
        f"--trials 4 --no-baselines --no-equal-work`, median of {len(found)} runs at "
        f"{commits(found)}, load average {min(loads):.2f}-{max(loads):.2f}: "
        f"benchmarks/results/issue17/ab/new-N.json.\n\n" + table(["figure", "value"], rows)
    )


BLOCKS: dict[str, Callable[[], str]] = {
    "stamps": stamps_block,
    "sim-group": sim_group,
    "bench-group": bench_group,
    "ab-issue17-core": ab_block(
        "issue17/core",
        "old",
        "new",
        "the default bench (no group), b95c810 vs the fan-out after the answer (issue 17)",
    ),
    "ab-issue17-group": ab_block(
        "issue17/ab",
        "old",
        "new",
        "`--group 100`, b95c810 vs the fan-out after the answer (issue 17)",
        [(label, path) for label, path in GROUP_FIGURES if path[0] != "group_cpu_per_member_ms"],
    ),
    "ab-issue12": ab_block(
        "issue12", "quiet-old", "quiet-new", "e3dca19 (before the DHT split) vs 039831f"
    ),
    "ab-issue13": ab_block(
        "issue13", "final-plain", "final-key", "the open mesh vs `--network-key`, same code"
    ),
    "ab-issue13-opt": ab_block(
        "issue13",
        "opt-plain",
        "opt-key",
        "after the leaner datagram path (1f1207c): the open mesh vs `--network-key`",
    ),
    "ab-issue13-open": ab_block(
        "issue13",
        "base-plain",
        "opt-plain",
        "the open mesh (no key) at 87397ad vs 1f1207c: must not be slower",
    ),
    "ab-issue16": ab_block(
        "issue16", "plain", "encrypted", "`--full-nodes --store plain` vs `--store encrypted`"
    ),
    "ab-issue16-batch": ab_block(
        "issue16",
        "batch-plain",
        "batch-encrypted",
        "a9b0389 (one commit per STORE request): `--full-nodes --store plain` vs encrypted",
    ),
    "ab-issue16-batch-before": ab_block(
        "issue16",
        "batch-base-plain",
        "batch-base-encrypted",
        "87397ad (one commit per record), the same sitting: plain vs encrypted",
    ),
    "ab-issue16-batch-encrypted": ab_block(
        "issue16",
        "batch-base-encrypted",
        "batch-encrypted",
        "`--full-nodes --store encrypted`, 87397ad vs a9b0389",
    ),
    "ab-issue16-batch-default": ab_block(
        "issue16",
        "batch-default-base",
        "batch-default-new",
        "the default bench, 87397ad vs a9b0389",
    ),
    "bench-setup": bench_setup,
    "bench-kv": bench_kv,
    "bench-mailbox": bench_mailbox,
    "bench-targets": bench_targets,
    "old-and-new": old_and_new,
    "sim-scale": sim_scale,
    "sim-idle": sim_idle,
    "sim-rpcs": sim_rpcs,
    "sim-partition": sim_partition,
    "sim-example-churn": lambda: sim_example("sim-churn-100.json"),
    "sim-example-partition": lambda: sim_example("sim-partition-100.json"),
}


# -- rewriting the docs ------------------------------------------------------------------


def regenerate(text: str) -> str:
    """`text` with every generated block rebuilt from the results."""
    out: list[str] = []
    rest = text
    while BEGIN in rest:
        before, _, after = rest.partition(BEGIN)
        name, _, after = after.partition(" -->")
        if name not in BLOCKS:
            raise SystemExit(f"unknown generated block {name!r}")
        if END not in after:
            raise SystemExit(f"generated block {name!r} has no end marker")
        _, _, rest = after.partition(END)
        out += [before, f"{BEGIN}{name} -->\n", BLOCKS[name](), "\n", END]
    out.append(rest)
    return "".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if stale")
    args = parser.parse_args()
    stale = []
    for doc in DOCS:
        text = doc.read_text()
        fresh = regenerate(text)
        if fresh != text:
            stale.append(doc.name)
            if not args.check:
                doc.write_text(fresh)
    if args.check and stale:
        print(f"stale generated tables in {', '.join(stale)}: run {sys.argv[0]}", file=sys.stderr)
        sys.exit(1)
    print("up to date" if not stale else f"rewrote {', '.join(stale)}")


if __name__ == "__main__":
    main()
