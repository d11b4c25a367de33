"""Contacts and reading: `mesh contacts verify`, `mesh contacts receipts`, `mesh read`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import click

from cli import render
from mesh.control import read_messages
from mesh.errors import UnknownContactError
from mesh.home import open_home
from mesh.identity import PublicIdentity


@click.command(name="verify")
@click.argument("name")
@click.pass_obj
def verify(home: Path, name: str) -> None:
    """Mark NAME verified, after comparing fingerprints in person.

    Do this only once every group of their fingerprint matched what they read out
    from their own screen (`mesh id`). The mark shows in `contacts list` and the chat.
    """
    with open_home(home) as store:
        contact = store.get_contact(name)
        if contact is None:
            raise UnknownContactError(f"no contact named {name.strip()!r}")
        store.set_contact_flags(contact.name, verified_at=time.time())
    fingerprint = PublicIdentity.from_id(contact.peer_id).fingerprint
    click.echo(f"verified {render.one_line(contact.name)} (fingerprint {fingerprint})")


@click.command(name="receipts")
@click.argument("name")
@click.argument("setting", type=click.Choice(["on", "off"]))
@click.option(
    "--delivery",
    is_flag=True,
    help="Switch delivery receipts (on by default) instead of read receipts.",
)
@click.pass_obj
def receipts(home: Path, name: str, setting: str, delivery: bool) -> None:
    """Send NAME read receipts (on) or not (off, the default); with --delivery, switch
    the delivery receipts instead (on by default).

    A read receipt tells NAME when you read their messages (`mesh read`, or opening
    the conversation in the chat). A delivery receipt tells them their message reached
    your device (and so when you were online). Receipts only ever go to contacts.
    """
    with open_home(home) as store:
        contact = store.get_contact(name)
        if contact is None:
            raise UnknownContactError(f"no contact named {name.strip()!r}")
        if delivery:
            store.set_receipts(contact.name, setting == "on")
        else:
            store.set_contact_flags(contact.name, read_receipts=setting == "on")
    what = "delivery" if delivery else "read"
    click.echo(f"{what} receipts to {render.one_line(contact.name)}: {setting}")


@click.command(name="read")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def read(home: Path, name: str, as_json: bool) -> None:
    """Show the unread messages from NAME (a contact, else a group) and mark them read.

    Sends NAME a read receipt only if you turned them on (`mesh contacts receipts NAME
    on`): at once through a running `mesh up`, else with the next node on this home.
    """
    from cli.main import ask_passphrase  # the one passphrase prompt lives there

    messages, queued = asyncio.run(read_messages(home, name, ask_passphrase, time.time()))
    if as_json:
        render.print_json({"messages": messages, "read_receipts": queued})
        return
    if not messages:
        render.hint(f"no unread messages from {render.one_line(name)}")
        return
    render.print_inbox(messages)
    if queued:
        render.hint("read receipt queued")
