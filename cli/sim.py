"""`mesh sim`: many peers on one machine under churn, loss and partitions.

Thin: builds a `mesh.sim.Scenario`, runs it with a progress bar on stderr, prints a
summary (or, with --json, one JSON object on the last line of stdout), draws --plot.
"""

from __future__ import annotations

import json
import resource
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mesh.errors import MeshError
from mesh.sim import SETTINGS, Report, Scenario, plot, simulate

FD_MARGIN = 64  # descriptors a --real run needs besides one socket per peer


@click.command(name="sim")
@click.option(
    "--peers",
    type=click.IntRange(min=2),
    default=20,
    show_default=True,
    help="Peers online at the start.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=600.0,
    show_default=True,
    help="Simulated seconds (real seconds with --real).",
)
@click.option(
    "--churn",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Fraction of peers that leave (and come back) during the run.",
)
@click.option(
    "--loss",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.0,
    show_default=True,
    help="Probability that a datagram is dropped.",
)
@click.option(
    "--duplicate",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.0,
    show_default=True,
    help="Probability that a datagram arrives twice.",
)
@click.option("--senders", type=click.IntRange(min=1), help="Peers that send [min(peers, 10)].")
@click.option("--messages", type=click.IntRange(min=0), help="Messages in all [5 per sender].")
@click.option("--partition-at", type=click.FloatRange(min=0), help="Cut the network in half.")
@click.option("--heal-at", type=click.FloatRange(min=0), help="Join the halves again.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (last line).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write a PNG.")
@click.option("--real", is_flag=True, help="Use loopback UDP sockets and real time.")
@click.option(
    "--settings",
    type=click.Choice(sorted(SETTINGS)),
    default="production",
    show_default=True,
    help="Node and DHT settings: production (what ships) or fast (a simulator-only "
    "speed-up: rare polls, renewals and maintenance; docs/simulation.md).",
)
@click.option(
    "--charge-cpu",
    is_flag=True,
    help="Advance the virtual clock by each event's measured CPU time too.",
)
@click.option(
    "--network-key",
    is_flag=True,
    help="Every peer in one private mesh: every datagram sealed (docs/protocol.md).",
)
def command(
    peers: int,
    duration: float,
    churn: float,
    loss: float,
    duplicate: float,
    senders: int | None,
    messages: int | None,
    partition_at: float | None,
    heal_at: float | None,
    seed: int,
    as_json: bool,
    plot_path: str | None,
    real: bool,
    settings: str,
    charge_cpu: bool,
    network_key: bool,
) -> None:
    """Run many real nodes in one process, on an in-memory network with a virtual clock,
    under churn, loss and partitions; report what was delivered (docs/simulation.md)."""
    try:
        scenario = Scenario(
            peers=peers,
            duration=duration,
            churn=churn,
            loss=loss,
            duplicate=duplicate,
            senders=senders,
            messages=messages,
            partition_at=partition_at,
            heal_at=heal_at,
            seed=seed,
            real=real,
            settings=settings,
            charge_cpu=charge_cpu,
            network_key=network_key,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if plot_path:
        _check_matplotlib()
    if real:
        _raise_fd_limit(peers + scenario.peers // 2 + FD_MARGIN)
    report = _run(scenario)
    if plot_path:
        try:
            plot(report, plot_path)
        except MeshError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report.to_json(), sort_keys=False))
    else:
        _print_summary(report, plot_path)


def _run(scenario: Scenario) -> Report:
    console = Console(stderr=True)
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:>7.0f}/{task.total:.0f} s"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("simulating", total=scenario.duration, status="starting peers")

        def update(elapsed: float, snapshot: dict[str, int]) -> None:
            status = " ".join(f"{k} {v}" for k, v in snapshot.items())
            progress.update(task, completed=elapsed, status=status)

        return simulate(scenario, update)


def _check_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise click.ClickException(
            "--plot needs matplotlib: pip install 'mesh-messenger[plot]'"
        ) from None


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise click.ClickException(
            f"--real needs {needed} open files but the limit is {hard}: "
            "use fewer peers or raise `ulimit -n`"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _print_summary(report: Report, plot_path: str | None) -> None:
    data = report.to_json()
    table = Table(show_header=False, box=None)
    rows: list[tuple[str, Any]] = [
        ("peers", data["peers"]),
        ("settings", _settings(data["settings"], data["cpu_charged"])),
        ("simulated", f"{data['sim_s']:.0f} s (+{data['setup_s']:.0f} s joining)"),
        ("wall", f"{data['wall_s']:.1f} s ({data['cpu_s']:.1f} s CPU)"),
        ("sent / acked", f"{data['sent']} / {data['acked']} ({data['skipped']} skipped)"),
        ("delivered", f"{data['delivered']} of the acked ({_vias(data['delivered_via'])})"),
        ("lost", len(data["lost"])),
        ("latency p50/p95/p99", _latency(data["latency_ms"])),
        ("datagrams", _datagrams(data["network"])),
        ("peak RSS", f"{data['rss_mb']} MB"),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    console = Console()
    console.print(table)
    for lost in data["lost_detail"]:
        console.print(f"[red]lost[/red] {lost}")
    if plot_path:
        console.print(f"plot written to {plot_path}")


def _latency(latency: dict[str, float | None]) -> str:
    values = [latency[k] for k in ("p50", "p95", "p99")]
    return " / ".join("-" if v is None else f"{v:.0f}" for v in values) + " ms"


def _datagrams(network: dict[str, int]) -> str:
    keys = ("sent", "lost", "duplicated", "blocked", "unreachable")
    return ", ".join(f"{k} {network[k]}" for k in keys if network.get(k))


def _settings(settings: dict[str, Any], cpu_charged: bool) -> str:
    changed = [
        f"{k}={v}" for part in settings["differs_from_production"].values() for k, v in part.items()
    ]
    text = str(settings["name"]) + (f" ({', '.join(changed)})" if changed else "")
    return text + (", CPU time charged to the clock" if cpu_charged else "")


def _vias(vias: dict[str, int]) -> str:
    return ", ".join(f"{n} by {via}" for via, n in vias.items())
