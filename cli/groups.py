"""`mesh group ...` (issue 17), and `mesh send NAME` when NAME is a group's.

mesh group create NAME                 you are its first admin
mesh group invite GROUP CONTACT...     admins; contacts who have added you
mesh group send GROUP [TEXT | -]       one message to every member
mesh group leave GROUP
mesh group remove GROUP MEMBER         admins; the others get a new key
mesh group promote GROUP MEMBER        admins; make MEMBER an admin too
mesh group list                        (--json)
mesh group members GROUP               names from your contacts, roles (--json)

Through `mesh up` when it runs for the home, else a short-lived node (mesh.control_groups);
`list` and `members` without a daemon read the store. A name that is both a contact's and
a group's means the contact in `mesh send` (mesh.group_views: contacts win).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from cli import render
from cli.params import host_option, net_config, network_options
from mesh.control_groups import group_request
from mesh.errors import UnknownContactError
from mesh.group_views import StoredGroup, group_named, stored_groups
from mesh.home import open_home, resolve_recipient
from mesh.runner import NetConfig
from mesh.store import MessageStatus
from mesh.wire import Address

EXIT_QUEUED = 3  # as cli.main: no peer reachable, the message waits in the outbox

Doc = dict[str, Any]


def _ask(store: Any) -> str | None:
    from cli.main import ask_passphrase  # the one passphrase prompt lives there

    return ask_passphrase(store)


def _request(home: Path, op: str, net: NetConfig | None = None, **args: Any) -> Doc:
    return asyncio.run(group_request(home, op, _ask, net, **args))


def _shown(doc: Doc) -> str:
    return render.one_line(str(doc["group"]["name"]))


def _net(host: str | None, peers: list[Address], no_mdns: bool, interfaces: list[str]) -> NetConfig:
    return net_config(host, None, peers, no_mdns, interfaces)


def short_lived_options(func: Any) -> Any:
    """`--host` and the network options, for when no daemon runs."""
    func = network_options(func)
    return click.option(
        "--host",
        callback=host_option,
        help="Address of the short-lived node (default: 0.0.0.0, or the first --interface).",
    )(func)


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


@click.group(name="group")
def group() -> None:
    """Groups: one conversation with several of your contacts."""


@group.command(name="create")
@click.argument("name")
@json_option
@click.pass_obj
def create(home: Path, name: str, as_json: bool) -> None:
    """Make a group called NAME, with you as its admin."""
    doc = _request(home, "group_create", name=name)
    if as_json:
        render.print_json(doc)
        return
    click.echo(f"created {_shown(doc)}: {doc['group']['id']}")
    render.hint(f"invite contacts: mesh group invite {_shown(doc)} NAME...")


@group.command(name="invite")
@click.argument("group_name", metavar="GROUP")
@click.argument("contacts", metavar="CONTACT...", nargs=-1, required=True)
@json_option
@short_lived_options
@click.pass_obj
def invite(
    home: Path,
    group_name: str,
    contacts: tuple[str, ...],
    as_json: bool,
    host: str | None,
    peers: list[Address],
    no_mdns: bool,
    interfaces: list[str],
) -> None:
    """Add contacts (names or IDs) to GROUP; admins only. Each must have added you too."""
    net = _net(host, peers, no_mdns, interfaces)
    doc = _request(home, "group_invite", net, group=group_name, members=list(contacts))
    if as_json:
        render.print_json(doc)
        return
    added = doc["added"]
    click.echo(f"invited {added} contact{'' if added == 1 else 's'} to {_shown(doc)}")


@group.command(name="send")
@click.argument("group_name", metavar="GROUP")
@click.argument("text", required=False)
@click.option(
    "--file",
    "text_file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Send the contents of this UTF-8 file (- for stdin) instead of TEXT.",
)
@json_option
@short_lived_options
@click.pass_obj
def send(
    home: Path,
    group_name: str,
    text: str | None,
    text_file: Path | None,
    as_json: bool,
    host: str | None,
    peers: list[Address],
    no_mdns: bool,
    interfaces: list[str],
) -> None:
    """Send TEXT to every member of GROUP (TEXT `-` or --file - reads stdin).

    Exit 0 once stored on the group mailbox's replicas; exit 3 if no peer is reachable
    (the message stays queued and `mesh up` delivers it later)."""
    from cli.main import message_text

    body = message_text(text, text_file)
    send_to_group(home, group_name, body, as_json, _net(host, peers, no_mdns, interfaces))


def send_to_group(home: Path, group_name: str, body: str, as_json: bool, net: NetConfig) -> None:
    """`mesh group send`, and `mesh send` to a group's name."""
    doc = _request(home, "group_send", net, group=group_name, text=body)
    queued = doc["status"] == MessageStatus.QUEUED
    if as_json:
        render.print_json(doc)
    else:
        click.echo(f"queued {doc['message_id']}")
    if queued:
        if not as_json:
            render.hint(
                "no peer is reachable: the message stays queued, and `mesh up` delivers it "
                "as soon as a peer appears"
            )
        raise click.exceptions.Exit(EXIT_QUEUED)
    if not as_json:
        replicas = doc.get("replicas") or 0
        click.echo(f"stored on {replicas} replica{'' if replicas == 1 else 's'} for {_shown(doc)}")


def group_target(home: Path, to: str) -> StoredGroup | None:
    """The group `mesh send TO` means, or None for a contact (contacts win; a hint
    says so when TO is a group's name too). Unknown to both: UnknownContactError."""
    with open_home(home) as store:
        try:
            resolve_recipient(store, to)
        except UnknownContactError:
            found = group_named(store, to)
            if found is None:
                raise
            return found
        if any(g.info.name == to.strip() for g in stored_groups(store)):
            shown = render.one_line(to)
            render.hint(
                f"{shown} is a contact and a group: this goes to the contact; "
                f"`mesh group send {shown} TEXT` writes to the group"
            )
    return None


@group.command(name="leave")
@click.argument("group_name", metavar="GROUP")
@short_lived_options
@click.pass_obj
def leave(
    home: Path,
    group_name: str,
    host: str | None,
    peers: list[Address],
    no_mdns: bool,
    interfaces: list[str],
) -> None:
    """Leave GROUP (its last admin promotes someone first). Its messages stay here."""
    doc = _request(home, "group_leave", _net(host, peers, no_mdns, interfaces), group=group_name)
    click.echo(f"left {_shown(doc)}")


@group.command(name="remove")
@click.argument("group_name", metavar="GROUP")
@click.argument("member")
@short_lived_options
@click.pass_obj
def remove(
    home: Path,
    group_name: str,
    member: str,
    host: str | None,
    peers: list[Address],
    no_mdns: bool,
    interfaces: list[str],
) -> None:
    """Remove MEMBER (a contact name or an ID) from GROUP; admins only.

    The others get a new key: nothing sent afterwards reaches MEMBER."""
    net = _net(host, peers, no_mdns, interfaces)
    doc = _request(home, "group_remove", net, group=group_name, member=member)
    click.echo(f"removed {render.one_line(member)} ({doc['member']}) from {_shown(doc)}")


@group.command(name="promote")
@click.argument("group_name", metavar="GROUP")
@click.argument("member")
@short_lived_options
@click.pass_obj
def promote(
    home: Path,
    group_name: str,
    member: str,
    host: str | None,
    peers: list[Address],
    no_mdns: bool,
    interfaces: list[str],
) -> None:
    """Make MEMBER (a contact name or an ID) an admin of GROUP too; admins only."""
    net = _net(host, peers, no_mdns, interfaces)
    doc = _request(home, "group_promote", net, group=group_name, member=member)
    click.echo(f"{render.one_line(member)} ({doc['member']}) is an admin of {_shown(doc)}")


@group.command(name="list")
@json_option
@click.pass_obj
def list_groups(home: Path, as_json: bool) -> None:
    """List your groups (also those you left): members, your role, unread messages."""
    doc = _request(home, "group_list")
    if as_json:
        render.print_json(doc)
    else:
        render.print_groups(doc["groups"])


@group.command(name="members")
@click.argument("group_name", metavar="GROUP")
@json_option
@click.pass_obj
def members(home: Path, group_name: str, as_json: bool) -> None:
    """List the members of GROUP (admins first), with your contacts' names."""
    doc = _request(home, "group_members", group=group_name)
    if as_json:
        render.print_json(doc)
    else:
        render.print_members(doc)
