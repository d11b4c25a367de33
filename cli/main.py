"""The `mesh` command: parses, calls mesh, prints.

Exit codes: 0 ok, 1 error, 2 usage, 3 queued (no peer reachable; the message waits in
the outbox). A mistake gets one line on stderr, never a traceback. The home directory
(`--home`, else MESH_HOME, else the per-user data directory) is `ctx.obj`, a Path, for
every subcommand (bench, sim and chat included).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
import platformdirs
import segno

from cli import bench, chat, people, render, security, sim
from cli import groups as groups_cli
from cli import network as network_cli
from cli import requests as requests_cli
from cli import share as share_cli
from cli.params import host_option, net_config, network_options
from mesh import __version__, control
from mesh.control import list_messages, list_peers, read_inbox, send_text
from mesh.daemon import run_daemon
from mesh.envelope import MAX_TEXT_BYTES, MAX_TTL
from mesh.errors import MeshError, UnknownContactError
from mesh.group_views import conversation
from mesh.home import (
    ensure_new_home,
    init_home,
    open_home,
    passphrase_for,
    public_identity,
)
from mesh.identity import PublicIdentity
from mesh.netaddr import lan_ipv4_addresses
from mesh.store import MessageStatus, Store
from mesh.wire import Address

EXIT_ERROR = 1
EXIT_QUEUED = 3


class CliError(click.ClickException):
    """One line on stderr and an exit code: the adapter from the MeshError tree
    (mesh/errors.py) to click's error handling, which only knows ClickException.

    Not a MeshError on purpose: the core never raises it; `MeshGroup.invoke` maps every
    MeshError (and OSError) to it at the edge.
    """

    exit_code = EXIT_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(render.one_line(message))

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class MeshGroup(click.Group):
    """Turns every MeshError (and OS error) raised by a subcommand into one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MeshError as exc:
            raise CliError(str(exc)) from None
        except BrokenPipeError:
            raise
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise CliError(f"{exc.strerror or exc}{where}") from None


def default_home() -> Path:
    return Path(platformdirs.user_data_dir("mesh-messenger", appauthor=False))


@click.group(cls=MeshGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, "-V", "--version", prog_name="mesh", message="%(prog)s %(version)s"
)
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="MESH_HOME",
    help="Directory of the identity and messages (default: MESH_HOME, else the per-user "
    "data directory).",
)
@click.pass_context
def cli(ctx: click.Context, home: Path | None) -> None:
    """mesh-messenger: a serverless peer-to-peer messenger."""
    ctx.obj = (home or default_home()).expanduser().absolute()


# -- the passphrase (network options: cli/params.py) ---------------------------------------


def ask_passphrase(store: Store) -> str | None:
    """The passphrase of a locked identity: MESH_PASSPHRASE, else asked in a terminal."""
    return passphrase_for(store, render.passphrase_prompt())


# -- identity and contacts -----------------------------------------------------------------


@cli.command()
@click.option("--name", help="Your name, as you would like contacts to see it.")
@click.option(
    "--passphrase/--no-passphrase",
    default=None,
    help="Protect this home with a passphrase (default on a terminal).",
)
@click.pass_obj
def init(home: Path, name: str | None, passphrase: bool | None) -> None:
    """Create the identity of this home (refuses if it has one)."""
    ensure_new_home(home)
    secret = security.init_passphrase(passphrase)
    identity = init_home(home, name, secret)
    if secret is None and passphrase is None:
        render.hint("no terminal, so no passphrase: `mesh passphrase` adds one")
    render.print_identity({"id": identity.id, "fingerprint": identity.public.fingerprint})
    click.echo(f"home: {home}")


@cli.command(name="id")
@click.option("--qr", is_flag=True, help="Also draw the ID as a QR code.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def show_id(home: Path, qr: bool, as_json: bool) -> None:
    """Print your ID (first line, alone) and its fingerprint."""
    with open_home(home) as store:
        secret = None if store.get_setting("public_id") else ask_passphrase(store)
        public = public_identity(store, secret)
        name = store.get_setting("name")
    doc: dict[str, Any] = {"id": public.id, "fingerprint": public.fingerprint, "name": name}
    # IDs are case-insensitive: upper case fits QR's compact alphanumeric mode.
    code = segno.make(public.id.upper(), error="m")
    if as_json:
        if qr:
            doc["qr"] = render.qr_text(code)
        render.print_json(doc)
        return
    render.print_identity(doc)
    if qr:
        code.terminal(compact=True)


@cli.group()
def contacts() -> None:
    """Your address book: names for IDs."""


@contacts.command(name="add")
@click.argument("name")
@click.argument("peer_id", metavar="ID")
@click.option(
    "--ttl",
    type=click.IntRange(1, MAX_TTL),
    metavar="SECONDS",
    help="Messages to this contact disappear after SECONDS.",
)
@click.pass_obj
def contacts_add(home: Path, name: str, peer_id: str, ttl: int | None) -> None:
    """Save ID under NAME and start the key agreement (both of you add each other)."""
    public = PublicIdentity.from_id(peer_id)
    with open_home(home) as store:
        others = [c.name for c in store.list_contacts() if c.peer_id == public.id]
        yours = store.get_setting("public_id") == public.id
        contact = store.add_contact(name, public.id, ttl)
        if not yours:
            store.keys.agreement_add(public.id, time.time())
    shown = render.one_line(contact.name)
    click.echo(f"added {shown}: {public.id}")
    if not yours:
        ready = asyncio.run(control.tell_contact_added(home, public.id))
        if ready:
            click.echo(f"{shown} has added you too: you can message each other")
        else:
            render.hint(
                f"waiting for {shown} to add you too: until then your messages to "
                f"{shown} are queued (nobody else can reach your mailbox)"
            )
    click.echo(f"fingerprint: {public.fingerprint}")
    if yours:
        render.hint("warning: this is your own ID; messages to it come back to you")
    if others:
        render.hint(f"warning: this ID is already saved as {render.one_line(', '.join(others))}")
    render.hint(f"compare the fingerprint in person, then: mesh contacts verify {shown}")


@contacts.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def contacts_list(home: Path, as_json: bool) -> None:
    """List your contacts."""
    with open_home(home) as store:
        own = store.get_setting("public_id")
        rows = [
            {
                "name": c.name,
                "id": c.peer_id,
                "ttl": c.ttl,
                "added_at": c.added_at,
                "verified": c.verified,
                "verified_at": c.verified_at,
                "read_receipts": c.read_receipts,
                # A note to self needs no agreement: it goes to our own mailbox.
                "agreed": c.peer_id == own
                or ((a := store.keys.agreement(c.peer_id)) is not None and a.ready),
            }
            for c in store.list_contacts()
        ]
    if as_json:
        render.print_json({"contacts": rows})
    else:
        render.print_contacts(rows)


@contacts.command(name="remove")
@click.argument("name")
@click.pass_obj
def contacts_remove(home: Path, name: str) -> None:
    """Forget the contact NAME (messages stay)."""
    with open_home(home) as store:
        if not store.remove_contact(name):
            raise UnknownContactError(f"no contact named {name.strip()!r}")
    click.echo(f"removed {render.one_line(name)}")


# -- the node -------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--host",
    callback=host_option,
    help="Address to listen on (default: 0.0.0.0, or the first --interface).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help="UDP port (default: the one this home used last, else any free port).",
)
@network_options
@click.pass_obj
def up(
    home: Path,
    host: str | None,
    port: int | None,
    peers: list[Address],
    no_mdns: bool,
    interfaces: list[str],
) -> None:
    """Run your node until Ctrl-C or SIGTERM.

    Prints `listening on HOST:PORT` first, then serves the control socket
    HOME/control.sock that `send`, `inbox`, `peers` and `chat` use while it runs.
    """
    with open_home(home) as store:
        passphrase = ask_passphrase(store)
    net = net_config(host, port, peers, no_mdns, interfaces)
    if net.mdns and not interfaces and not lan_ipv4_addresses():
        render.hint(
            "warning: no network interface but loopback, so mDNS finds no one: connect to "
            "a network, or join a peer with --peer HOST:PORT"
        )
    echo = _flushed_echo
    asyncio.run(run_daemon(home, net, passphrase, echo, render.print_daemon_event))
    echo("stopped")


def _flushed_echo(text: str) -> None:
    click.echo(text)
    sys.stdout.flush()


@cli.command()
@click.argument("to")
@click.argument("text", required=False)
@click.option(
    "--file",
    "text_file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Send the contents of this UTF-8 file (- for stdin) instead of TEXT.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option(
    "--ttl",
    type=click.IntRange(1, MAX_TTL),
    metavar="SECONDS",
    help="The message disappears after SECONDS (default: the contact's, else 7 days).",
)
@click.option(
    "--host",
    callback=host_option,
    help="Address of the short-lived node (default: 0.0.0.0, or the first --interface).",
)
@network_options
@click.pass_obj
def send(
    home: Path,
    to: str,
    text: str | None,
    text_file: Path | None,
    as_json: bool,
    ttl: int | None,
    host: str | None,
    peers: list[Address],
    no_mdns: bool,
    interfaces: list[str],
) -> None:
    """Send TEXT to TO (a contact name or an ID, else a group's name); TEXT `-` (or
    --file -) reads stdin. A name that is both a contact's and a group's means the
    contact: `mesh group send` writes to the group.

    Reading stdin or a file keeps the text out of `ps` and the shell history. Goes
    through `mesh up` when it runs for this home, else starts a short-lived node.
    Exit 0 once stored on the recipient's mailbox replicas; exit 3 if no peer is
    reachable (the message stays queued and `mesh up` delivers it later).
    """

    body = message_text(text, text_file)
    net = net_config(host, None, peers, no_mdns, interfaces)
    group = groups_cli.group_target(home, to)  # no contact of that name, but a group's
    if group is not None:
        if ttl is not None:
            raise click.UsageError("--ttl is for contacts; a group message keeps 7 days")
        groups_cli.send_to_group(home, group.info.group_id.hex(), body, as_json, net)
        return
    on_queued = (lambda mid: None) if as_json else _queued
    result = asyncio.run(send_text(home, to, body, ttl, net, ask_passphrase, on_queued))
    if as_json:
        render.print_json(result.to_json())
        if result.status == MessageStatus.QUEUED:
            raise click.exceptions.Exit(EXIT_QUEUED)
        return
    if result.status == MessageStatus.QUEUED and result.waiting:
        render.hint(
            f"queued: {to} has not added you yet. Messages to them wait until they add "
            "you too (`mesh contacts add`), then go at once"
        )
        raise click.exceptions.Exit(EXIT_QUEUED)
    if result.status == MessageStatus.QUEUED:
        render.hint(
            "no peer is reachable: the message stays queued, and `mesh up` delivers it "
            "as soon as a peer appears"
        )
        raise click.exceptions.Exit(EXIT_QUEUED)
    if result.replicas is None:  # the receipt overtook the replicas' acknowledgements
        click.echo("delivered")
        return
    plural = "" if result.replicas == 1 else "s"
    suffix = " (already delivered)" if result.status == MessageStatus.DELIVERED else ""
    click.echo(f"stored on {result.replicas} replica{plural}{suffix}")


STDIN_LIMIT = 1 << 20  # read no more than this from stdin or --file (the limit is ~4 KB)


def message_text(text: str | None, text_file: Path | None) -> str:
    """TEXT, or the UTF-8 text of stdin (`-`) or of --file; one trailing newline dropped."""
    if text is not None and text_file is not None:
        raise click.UsageError("give TEXT or --file, not both")
    if text_file is None and text is None:
        raise click.UsageError("missing TEXT (or - to read it from stdin, or --file PATH)")
    if text_file is None and text != "-":
        return utf8_text(str(text))
    if text_file is None or str(text_file) == "-":
        if sys.stdin.isatty():
            render.hint("type the message, then Ctrl-D")
        data = sys.stdin.buffer.read(STDIN_LIMIT + 1)
    else:
        with text_file.open("rb") as handle:
            data = handle.read(STDIN_LIMIT + 1)
    if len(data) > STDIN_LIMIT:
        raise CliError(f"the message is far over the limit of {MAX_TEXT_BYTES} bytes")
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError("the message is not UTF-8 text") from None
    return decoded[:-1] if decoded.endswith("\n") else decoded


def utf8_text(text: str) -> str:
    """`text` if it encodes as UTF-8; a CliError for a lone surrogate (an argument that
    was not UTF-8, surrogate-escaped by Python, or one built so by a caller of `cli`)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CliError(
            f"the message is not valid UTF-8 text (a lone surrogate at character "
            f"{exc.start + 1}): retype it, or send a UTF-8 file with --file"
        ) from None
    return text


def _queued(message_id: bytes) -> None:
    _flushed_echo(f"queued {message_id.hex()}")


@cli.command()
@click.argument("name", required=False)
@click.option("--unread", is_flag=True, help="Only the messages not marked read yet.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option(
    "--host",
    callback=host_option,
    help="Address of the short-lived node (default: 0.0.0.0, or the first --interface).",
)
@network_options
@click.pass_obj
def inbox(
    home: Path,
    name: str | None,
    unread: bool,
    as_json: bool,
    host: str | None,
    peers: list[Address],
    no_mdns: bool,
    interfaces: list[str],
) -> None:
    """Fetch your mailbox and list the messages you received (from NAME only, if given:
    a contact, else a group's name).

    Listing marks nothing read: `mesh read NAME` does."""
    peer = None
    if name is not None:
        with open_home(home) as store:
            peer = conversation(store, name)[0]  # a contact's ID, or a group's peer
    net = net_config(host, None, peers, no_mdns, interfaces)
    messages, fetched = asyncio.run(read_inbox(home, net, ask_passphrase))
    messages = [
        m for m in messages if (peer is None or m["peer"] == peer) and not (unread and m["read"])
    ]
    if not fetched:
        render.hint("no peer is reachable: showing the messages received so far")
    if as_json:
        render.print_json({"messages": messages, "fetched": fetched})
    else:
        render.print_inbox(messages)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def outbox(home: Path, as_json: bool) -> None:
    """List sent messages and their status.

    Status: queued (waiting for a peer), stored (on N replicas), delivered (receipt
    received), read (a read receipt came), failed (expired before any peer took it),
    expired (stored, but not picked up before it expired). A failed or expired message
    is listed, its text wiped, for 7 days after its expiry.
    """
    with open_home(home) as store:
        messages = list_messages(store, "out", time.time())
    if as_json:
        render.print_json({"messages": messages})
    else:
        render.print_outbox(messages)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def peers(home: Path, as_json: bool) -> None:
    """List the peers your node knows.

    Asks the running `mesh up`; without one, lists the peers this home saw last.
    """
    doc = asyncio.run(list_peers(home))
    if as_json:
        render.print_json(doc)
    else:
        render.print_peers(doc)


@cli.command()
def demo() -> None:
    """Four peers on loopback: a tour in a few seconds.

    Discovery by mDNS, a message arriving by push, a message to a peer that is offline
    delivered when it returns, and delivery receipts. Nothing leaves this machine.
    """
    from mesh.tools.demo import run_demo

    asyncio.run(run_demo())


cli.add_command(bench.command)
cli.add_command(sim.command)
cli.add_command(chat.command)
cli.add_command(share_cli.command)
cli.add_command(network_cli.network)
cli.add_command(requests_cli.requests)
cli.add_command(groups_cli.group)
security.register(cli)
cli.add_command(people.read)
contacts.add_command(people.verify)
contacts.add_command(people.receipts)


def check_arguments(args: list[str]) -> None:
    """Arguments that are not UTF-8 (surrogate-escaped by Python): one line, exit 2."""
    for number, arg in enumerate(args, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            click.echo(f"error: argument {number} is not valid UTF-8 text", err=True)
            sys.exit(2)


def main() -> None:
    check_arguments(sys.argv[1:])
    try:
        cli(prog_name="mesh")
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()
