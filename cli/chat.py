"""`mesh chat [NAME]`: the full-screen chat (mesh.chat). Thin: options in, one line out."""

from __future__ import annotations

import asyncio
import ipaddress
import sys
from pathlib import Path
from typing import Any

import click

from cli import security
from cli.params import host_option
from mesh import vault
from mesh.chat import ChatOptions, run_chat
from mesh.errors import LocalError, MeshError
from mesh.group_views import conversation
from mesh.home import open_home
from mesh.netaddr import parse_host_port


def _check_peers(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> Any:
    try:
        for value in values:
            parse_host_port(value)
    except MeshError as exc:
        raise click.BadParameter(str(exc)) from None
    return values


def _check_interfaces(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> Any:
    for value in values:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not an IP address") from None
    return values


@click.command(name="chat")
@click.argument("name", required=False)
@click.option(
    "--host", callback=host_option, help="Address to listen on, if the chat starts your node."
)
@click.option(
    "--port", type=click.IntRange(0, 65535), help="UDP port, if the chat starts your node."
)
@click.option(
    "--peer",
    "peers",
    multiple=True,
    metavar="HOST:PORT",
    callback=_check_peers,
    help="A peer to join through (repeatable).",
)
@click.option("--no-mdns", is_flag=True, help="Do not look for peers with mDNS.")
@click.option(
    "--interface",
    "interfaces",
    multiple=True,
    metavar="ADDR",
    callback=_check_interfaces,
    help="Run mDNS on this local address only (repeatable).",
)
@click.option(
    "--keep-running",
    is_flag=True,
    help="If the chat starts your node, leave it running after you quit.",
)
@click.pass_obj
def command(
    home: Path,
    name: str | None,
    host: str | None,
    port: int | None,
    peers: tuple[str, ...],
    no_mdns: bool,
    interfaces: tuple[str, ...],
    keep_running: bool,
) -> None:
    """Open the chat (on NAME's conversation: a contact name or an ID, else a group).

    Uses the `mesh up` running for this home; otherwise starts one with the same
    options as `mesh up`, and stops it when you quit (unless --keep-running). A node
    that was already running keeps running.
    """
    with open_home(home) as store:
        open_with = conversation(store, name)[0] if name else None  # contacts win
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise LocalError("mesh chat needs a terminal; in a script use send, inbox and read")
    up_args = _up_args(host, port, peers, no_mdns, interfaces)
    node_only = {
        "--host": host is not None,
        "--port": port is not None,
        "--no-mdns": no_mdns,
        "--interface": bool(interfaces),
    }
    given = [option for option, used in node_only.items() if used]
    options = ChatOptions(up_args, peers, open_with, keep_running, given)
    outcome = asyncio.run(run_chat(home, options, lambda: _passphrase(home)))
    if outcome.stopped:
        click.echo("chat closed; the node it started is stopped")
    elif outcome.started_here:
        click.echo(f"chat closed; your node keeps running (pid {outcome.pid})")
    else:
        click.echo("chat closed; your node keeps running")


def _up_args(
    host: str | None,
    port: int | None,
    peers: tuple[str, ...],
    no_mdns: bool,
    interfaces: tuple[str, ...],
) -> list[str]:
    args = ["--host", host] if host else []
    if port is not None:
        args += ["--port", str(port)]
    for peer in peers:
        args += ["--peer", peer]
    if no_mdns:
        args.append("--no-mdns")
    for interface in interfaces:
        args += ["--interface", interface]
    return args


def _passphrase(home: Path) -> str | None:
    """The passphrase the node being started needs: MESH_PASSPHRASE, else asked."""
    if not vault.is_locked(home):
        return None
    return security.read_passphrase(home, 1)
