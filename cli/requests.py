"""`mesh requests`: strangers' message requests (issue 15), off by default.

mesh requests                 list the pending ones (--json)
mesh requests on | off        let strangers who know your ID ask (or not)
mesh requests accept ID [--name NAME]
mesh requests block ID | unblock ID | delete ID
mesh requests send ID TEXT    ask someone who has not added you (they must have it on)
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import click

from cli import render
from mesh import control
from mesh.errors import LocalError
from mesh.home import open_home, passphrase_for, unlock_identity
from mesh.identity import PublicIdentity
from mesh.requests import REQUESTS_SETTING, accept_in_store

OFF_NOTE = (
    "with requests on, anyone who knows your ID can find your requests mailbox of the "
    "day and watch who stores to it and when you fetch it: turn it on only while you "
    "expect someone new"
)


@click.group(name="requests", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def requests(ctx: click.Context, as_json: bool) -> None:
    """Strangers' requests: a first message from someone you have not added."""
    if ctx.invoked_subcommand is not None:
        return
    home: Path = ctx.obj
    with open_home(home) as store:
        on = store.get_setting(REQUESTS_SETTING) == "on"
        rows = [
            {
                "id": r.peer_id,
                "fingerprint": PublicIdentity.from_id(r.peer_id).fingerprint,
                "text": r.text.decode("utf-8", "replace"),
                "sent_at": r.sent_at,
                "received_at": r.received_at,
            }
            for r in store.strangers.requests()
        ]
    if as_json:
        render.print_json({"requests": rows, "on": on})
        return
    if not on:
        render.hint("requests are off: strangers cannot reach you (`mesh requests on`)")
    render.print_requests(rows)


@requests.command(name="on")
@click.pass_obj
def turn_on(home: Path) -> None:
    """Let strangers who know your ID send you a request."""
    with open_home(home) as store:
        store.set_setting(REQUESTS_SETTING, "on")
    click.echo("requests: on")
    render.hint(OFF_NOTE)


@requests.command(name="off")
@click.pass_obj
def turn_off(home: Path) -> None:
    """Stop: nothing computable from your ID is published or fetched any more."""
    with open_home(home) as store:
        store.delete_setting(REQUESTS_SETTING)
        store.delete_setting("door_epoch")
    click.echo("requests: off")


@requests.command(name="accept")
@click.argument("peer_id", metavar="ID")
@click.option("--name", help="Save them as a contact under NAME.")
@click.pass_obj
def accept(home: Path, peer_id: str, name: str | None) -> None:
    """Make the requester ID a contact; their text becomes their first message."""
    public = PublicIdentity.from_id(peer_id)
    with open_home(home) as store:
        identity = unlock_identity(store, passphrase_for(store, render.passphrase_prompt()))
        accept_in_store(store, identity, public.id, time.time())
        if name:
            store.add_contact(name, public.id)
    click.echo(f"accepted {name or public.id}: you can message each other")
    asyncio.run(control.tell_contact_added(home, public.id))


@requests.command(name="block")
@click.argument("peer_id", metavar="ID")
@click.pass_obj
def block(home: Path, peer_id: str) -> None:
    """Block ID (a requester or a contact): their messages are dropped, no receipts."""
    public = PublicIdentity.from_id(peer_id)
    with open_home(home) as store:
        store.strangers.block(public.id, time.time())
    click.echo(f"blocked {public.id}")


@requests.command(name="unblock")
@click.argument("peer_id", metavar="ID")
@click.pass_obj
def unblock(home: Path, peer_id: str) -> None:
    """Unblock ID."""
    public = PublicIdentity.from_id(peer_id)
    with open_home(home) as store:
        if not store.strangers.unblock(public.id):
            raise LocalError("this ID is not blocked")
    click.echo(f"unblocked {public.id}")


@requests.command(name="delete")
@click.argument("peer_id", metavar="ID")
@click.pass_obj
def delete(home: Path, peer_id: str) -> None:
    """Delete the request of ID (they may ask again; block them to stop that)."""
    public = PublicIdentity.from_id(peer_id)
    with open_home(home) as store:
        if not store.strangers.request_remove(public.id):
            raise LocalError("no request from this ID: `mesh requests` lists them")
    click.echo("deleted")


@requests.command(name="send")
@click.argument("peer_id", metavar="ID")
@click.argument("text")
@click.pass_obj
def send(home: Path, peer_id: str, text: str) -> None:
    """Ask ID, who has not added you, to become a contact (~1 s of work for the stamp)."""
    public = PublicIdentity.from_id(peer_id)
    replicas = asyncio.run(control.send_request(home, public.id, text))
    click.echo(f"request stored on {replicas} replica{'s' if replicas != 1 else ''}")
    render.hint("they see it only if they accept requests; once they accept, you are contacts")
