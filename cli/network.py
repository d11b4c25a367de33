"""`mesh network`: a private mesh (docs/protocol.md "Private mesh").

    mesh network create NAME     make a network key; show its invite as text and QR
    mesh network join INVITE     keep an invite someone showed you
    mesh network show [--qr]     the current network and its invite (to invite others)
    mesh network leave           back to the open mesh

The key is kept in the home (the store's settings; covered by the encrypted store).
A running daemon keeps the network it started with: change it only while mesh is not
running (the home's lock says so).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import segno

from cli import render
from mesh import crypto
from mesh import home as homes
from mesh.errors import LocalError
from mesh.netkey import NetworkKey


def _change(home: Path, key: NetworkKey | None, force: bool = False) -> NetworkKey | None:
    """Set the home's network (None: the open mesh) and return the one it had; refused
    while a node runs for this home, and if it is in another network unless `force`."""
    with homes.HomeLock.acquire(home), homes.open_home(home) as store:
        before = homes.network_key(store)
        if key is None and before is None:
            raise LocalError("this home is not in a private network (nothing to leave)")
        same = before is not None and key is not None and crypto.equal(before.secret, key.secret)
        if key is not None and before is not None and not force and not same:
            raise LocalError(
                f"this home is already in network {before.name!r}: "
                "leave it first, or add --force to replace it"
            )
        homes.set_network_key(store, key)
    return before


def _show(key: NetworkKey, qr: bool, as_json: bool) -> None:
    invite = key.invite()
    code = segno.make(invite.upper(), error="m")  # upper case: QR's compact mode
    if as_json:
        doc: dict[str, Any] = {"network": key.name, "invite": invite}
        if qr:
            doc["qr"] = render.qr_text(code)
        render.print_json(doc)
        return
    click.echo(invite)
    click.echo(f"network: {render.one_line(key.name)} (private: only people with this invite)")
    if qr:
        code.terminal(compact=True)


@click.group(name="network")
def network() -> None:
    """A private mesh: only people with its invite can see or join the traffic."""


@network.command(name="create")
@click.argument("name")
@click.option("--qr", is_flag=True, help="Also draw the invite as a QR code.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--force", is_flag=True, help="Replace the network this home is in.")
@click.pass_obj
def create(home: Path, name: str, qr: bool, as_json: bool, force: bool) -> None:
    """Make a new network key called NAME and show its invite."""
    key = NetworkKey.generate(name)
    _change(home, key, force)
    _show(key, qr, as_json)


@network.command(name="join")
@click.argument("invite")
@click.option("--force", is_flag=True, help="Replace the network this home is in.")
@click.pass_obj
def join(home: Path, invite: str, force: bool) -> None:
    """Join the private mesh of INVITE (from `mesh network show` on a member's device)."""
    key = NetworkKey.from_invite(invite)
    _change(home, key, force)
    click.echo(f"joined network {render.one_line(key.name)}: restart `mesh up` to use it")


@network.command(name="show")
@click.option("--qr", is_flag=True, help="Also draw the invite as a QR code.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def show(home: Path, qr: bool, as_json: bool) -> None:
    """Show the current network's invite (anyone who sees it can join)."""
    with homes.open_home(home) as store:
        key = homes.network_key(store)
    if key is None:
        if as_json:
            render.print_json({"network": None})
            return
        click.echo("open mesh: no network key (mesh network create NAME makes one)")
        return
    _show(key, qr, as_json)


@network.command(name="leave")
@click.pass_obj
def leave(home: Path) -> None:
    """Leave the private mesh: back to the open mesh."""
    before = _change(home, None)
    name = before.name if before is not None else "?"
    click.echo(f"left network {render.one_line(name)}: restart `mesh up` to use the open mesh")
