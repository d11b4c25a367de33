"""`mesh bench`: N peers in one process on loopback, timed next to kademlia and OpenDHT.

Thin: builds `mesh.tools.bench.BenchOptions`, runs `mesh.tools.bench.run_bench`, prints a summary
(or, with --json, one JSON object on the last line of stdout). --profile prints cProfile's
top functions of the send/fetch/push trials to stderr.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from mesh.errors import MeshError
from mesh.tools.bench import BASELINES, STORES, BenchOptions, run_bench, uvloop_available
from mesh.tools.bench_kv import PREPARATIONS


@click.command(name="bench")
@click.option("--peers", type=click.IntRange(min=2), default=300, show_default=True)
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Offline-mailbox trials (20 sends + a fetch each); also sizes the other samples.",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seeds identities and ids.")
@click.option(
    "--uvloop/--no-uvloop",
    "use_uvloop",
    default=uvloop_available(),
    show_default=True,
    help="Run the event loop on uvloop (when installed).",
)
@click.option(
    "--full-nodes",
    is_flag=True,
    help="Every peer a full Node (identity, store, outbox); default: 20 Nodes, the rest "
    "DhtServer only.",
)
@click.option(
    "--store",
    type=click.Choice(STORES),
    default="memory",
    show_default=True,
    help="The full Nodes' SQLite store: in memory, a plain file or an SQLCipher file.",
)
@click.option(
    "--baseline",
    "baselines",
    type=click.Choice(BASELINES),
    multiple=True,
    help="Baselines to run (repeatable). Default: all.",
)
@click.option("--no-baselines", is_flag=True, help="Skip kademlia and OpenDHT.")
@click.option("--discovery", is_flag=True, help="Also time mDNS discovery on loopback.")
@click.option(
    "--prepare",
    type=click.Choice(PREPARATIONS),
    default="settle",
    show_default=True,
    help="The same for every DHT after joining: settle (3 s idle, then gc.freeze) or none.",
)
@click.option(
    "--equal-work/--no-equal-work",
    default=True,
    show_default=True,
    help="Also run our key/value trials at OpenDHT's replication (k = 8, quorum 8).",
)
@click.option(
    "--network-key",
    is_flag=True,
    help="Our peers in one private mesh: every datagram sealed (docs/protocol.md).",
)
@click.option(
    "--group",
    type=click.IntRange(min=0, max=1000),
    default=0,
    show_default=True,
    help="Also time a group of N members (send once, push to all): issue 17.",
)
@click.option("--profile", is_flag=True, help="cProfile the trials; top 25 to stderr.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on the last line.")
@click.option("-v", "--verbose", is_flag=True, help="Progress on stderr.")
def command(
    peers: int,
    trials: int,
    seed: int,
    use_uvloop: bool,
    full_nodes: bool,
    store: str,
    baselines: tuple[str, ...],
    no_baselines: bool,
    discovery: bool,
    prepare: str,
    equal_work: bool,
    network_key: bool,
    group: int,
    profile: bool,
    as_json: bool,
    verbose: bool,
) -> None:
    """Time send, fetch and push on N peers in one process (loopback only)."""
    if verbose:
        logging.basicConfig(level=logging.INFO, format="bench: %(message)s", stream=sys.stderr)
    options = BenchOptions(
        peers=peers,
        trials=trials,
        seed=seed,
        use_uvloop=use_uvloop,
        full_nodes=full_nodes,
        store=store,
        baselines=() if no_baselines else (baselines or BASELINES),
        discovery=discovery,
        prepare=prepare,
        equal_work=equal_work,
        network_key=network_key,
        group=group,
        profile=profile,
        verbose=verbose,
    )
    try:
        result = run_bench(options)
    except MeshError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result))
    else:
        _print_summary(result)


def _p50(value: Any) -> str:
    if not isinstance(value, dict) or value.get("p50") is None:
        return "-"
    return f"{value['p50']:.2f} ms (p95 {value['p95']:.2f})"


def _print_summary(result: dict[str, Any]) -> None:
    kinds = ", ".join(f"{n} {k}" for k, n in result["peer_kind"].items() if n)
    prep = result.get("preparation") or {"policy": "?", "settle_s": "?"}
    rows: list[tuple[str, str]] = [
        ("peers", f"{result['peers']} ({kinds}), {result['loop']}"),
        ("preparation", f"{prep['policy']} ({prep['settle_s']} s idle) for every DHT"),
        ("send", _p50(result["send_ms"])),
        ("fetch20 cold", _fetch(result, "cold")),
        ("fetch20 warm", _fetch(result, "warm")),
        ("push", _p50(result["push_ms"])),
        ("memory", f"{result['rss_kb_per_peer']} KiB per peer"),
    ]
    ours = result.get("dht")
    if ours is not None:
        ours = ours | {"replication": result.get("replication") or {}}
    systems = [("ours (DhtServer)", ours)]
    if result.get("equal_work") is not None:
        systems.append(("ours at k = 8", result["equal_work"]))
    for name, base in [*systems, *result["baselines"].items()]:
        if base is None:
            rows.append((name, "not run"))
            continue
        values = f"{base['mailbox_values']}/20 values"
        k = base.get("replication", {}).get("k", "?")
        rows.append(
            (
                name,
                f"k {k}: set {_p50(base['set_ms'])}, get {_p50(base['get_ms'])}, "
                f"mailbox {_p50(base['mailbox_ms'])}, {values}",
            )
        )
    table = Table(show_header=False, box=None)
    for key, value in rows:
        table.add_row(key, value)
    console = Console()
    console.print(table)
    for note in result["notes"]:
        console.print(f"note: {note}", markup=False, highlight=False)  # "[bench]" is text


def _fetch(result: dict[str, Any], kind: str) -> str:
    timing, complete = result.get(f"fetch20_{kind}_ms"), result.get(f"fetch20_{kind}_complete")
    return f"{_p50(timing)}, complete {'-' if complete is None else complete}"
