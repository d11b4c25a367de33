"""How the `mesh` command prints things: plain lines for people, one JSON document for
scripts. Nothing here talks to the network or the store.

Every text a peer could have written (bodies, names) goes through mesh.safe_text before it
is printed: `neutralise` for people, `json_text` (escaped, exact) for scripts."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import click

from mesh.safe_text import json_text, neutralise
from mesh.safe_text import one_line as one_line  # re-exported: the commands use render.one_line
from mesh.store import MessageStatus

Doc = dict[str, Any]


def print_json(doc: object) -> None:
    click.echo(json_text(doc))


def hint(text: str) -> None:
    """A note for people, on stderr so stdout stays parseable."""
    click.echo(text, err=True)


def passphrase_prompt() -> Callable[[], str] | None:
    """Asks for a passphrase on the terminal (hidden); None when stdin is not one. The
    one prompt of every command (mesh.home.passphrase_for decides when it is needed)."""
    if not sys.stdin.isatty():
        return None

    def ask() -> str:
        passphrase: str = click.prompt("passphrase", hide_input=True, err=True)
        return passphrase

    return ask


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def who(message: Doc) -> str:
    """Who a message is from (or to): the contact's name, else the start of the ID; for
    a group's message `[group] author` (`[group]` alone for one you sent)."""
    group = message.get("group")
    if isinstance(group, str):
        name = message.get("group_name")
        label = one_line(name) if isinstance(name, str) else neutralise(group[:16]) + "..."
        if message.get("direction") == "out":
            return f"[{label}]"
        author = message.get("author_contact")
        if isinstance(author, str):
            return f"[{label}] {one_line(author)}"
        return f"[{label}] " + neutralise(str(message.get("author") or "")[:16]) + "..."
    contact = message.get("contact")
    if isinstance(contact, str):
        return one_line(contact)
    return neutralise(str(message.get("peer", ""))[:16]) + "..."


def print_identity(doc: Doc) -> None:
    click.echo(doc["id"])
    click.echo(f"fingerprint: {doc['fingerprint']}")
    if doc.get("name"):
        click.echo(f"name: {one_line(doc['name'])}")


def qr_text(code: Any) -> str:
    """A segno QR code as plain text (Unicode half blocks, no escape codes)."""
    out = io.StringIO()
    code.terminal(out=out, compact=True)
    return out.getvalue()


def print_contacts(contacts: Iterable[Doc]) -> None:
    rows = [{**c, "name": one_line(c["name"])} for c in contacts]
    if not rows:
        hint("no contacts yet: add one with `mesh contacts add NAME ID`")
    width = max((len(c["name"]) for c in rows), default=0)
    for contact in rows:
        mark = "verified  " if contact.get("verified") else "unverified"
        notes = []
        if contact["ttl"]:
            notes.append(f"messages disappear after {contact['ttl']} s")
        if contact.get("read_receipts"):
            notes.append("read receipts on")
        if contact.get("agreed") is False:
            notes.append("waiting for them to add you")
        extra = f"  ({'; '.join(notes)})" if notes else ""
        name = neutralise(contact["name"])
        click.echo(f"{name:<{width}}  {mark}  {contact['id']}{extra}")


def print_inbox(messages: Iterable[Doc]) -> None:
    rows = list(messages)
    if not rows:
        hint("no messages")
    for message in rows:
        click.echo(f"{when(message['sent_at'])}  {who(message)}: {one_line(message['text'])}")


# Why a message that expired did not arrive (its text is wiped: the reason is shown instead).
EXPIRY_REASONS = {
    "failed": "(expired before any peer took it; not delivered)",
    "expired": "(expired on the network before they picked it up; not delivered)",
}


def status_label(message: Doc) -> str:
    if message["status"] == MessageStatus.STORED and message.get("replicas"):
        return f"stored ({message['replicas']})"
    return str(message["status"])


def print_outbox(messages: Iterable[Doc]) -> None:
    rows = list(messages)
    if not rows:
        hint("no sent messages")
    for message in rows:
        label = status_label(message)
        text = EXPIRY_REASONS.get(message["status"]) or one_line(message["text"])
        click.echo(f"{when(message['sent_at'])}  {label:<12} {who(message)}: {text}")


def ago(seconds: float) -> str:
    if seconds < 90:
        return f"{max(0, int(seconds))} s ago"
    if seconds < 5400:
        return f"{int(seconds // 60)} min ago"
    if seconds < 172800:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} days ago"


def print_peers(doc: Doc, now: float | None = None) -> None:
    """Contacts first (when each was last heard from), then the routing table."""
    now = time.time() if now is None else now
    contacts = [{**c, "name": one_line(c["name"])} for c in doc.get("contacts", [])]
    if contacts:
        click.echo("contacts (last heard from, by a message or a receipt):")
    width = max((len(c["name"]) for c in contacts), default=0)
    for contact in contacts:
        last = contact.get("last_heard")
        heard = "never heard from" if last is None else f"heard from {ago(now - last)}"
        active = "  active" if contact.get("recent") else ""
        verified = "" if contact.get("verified") else "  (unverified)"
        click.echo(f"  {neutralise(contact['name']):<{width}}  {heard}{active}{verified}")
    peers = doc.get("peers", [])
    if not doc.get("live"):
        hint("no daemon runs for this home (`mesh up`); peers it saw last time:")
    elif not peers:
        hint("no peers yet")
    elif contacts:
        click.echo("peers (network addresses; no names: the network does not say who is who):")
    for peer in peers:
        click.echo(f"{peer['address']:<22} {peer['node_id'][:16]}")


def print_requests(requests: Iterable[Doc]) -> None:
    rows = list(requests)
    if not rows:
        hint("no requests (strangers can ask only while `mesh requests on`)")
    for request in rows:
        click.echo(f"{when(request['sent_at'])}  {request['id']}")
        click.echo(f"    fingerprint {request['fingerprint']}")
        click.echo(f"    says: {one_line(request['text'])}")


def print_daemon_event(event: Doc) -> None:
    """What `mesh up` prints as things happen (never message text: the daemon's output
    may end up in a log)."""
    if event.get("event") == "message":
        message = event["message"]
        click.echo(f"{when(message['received_at'])}  new message from {who(message)}")
    elif event.get("event") == "expired":
        click.echo(f"{when(time.time())}  {len(event['message_ids'])} message(s) expired")


def print_groups(groups: Iterable[Doc]) -> None:
    rows = [{**g, "name": one_line(g["name"])} for g in groups]
    if not rows:
        hint("no groups yet: make one with `mesh group create NAME`")
    width = max((len(g["name"]) for g in rows), default=0)
    for group in rows:
        plural = "" if group["members"] == 1 else "s"
        notes = [f"{group['members']} member{plural}"]
        if group.get("admin") and group.get("active"):
            notes.append("you are an admin")
        if not group.get("active"):
            notes.append("you are no longer in it")
        if group.get("unread"):
            notes.append(f"{group['unread']} unread")
        click.echo(f"{group['name']:<{width}}  {group['id'][:16]}  {'; '.join(notes)}")


def print_members(doc: Doc) -> None:
    """`mesh group members`: the group's name, then one member a line (admins first)."""
    group = doc["group"]
    click.echo(f"{one_line(group['name'])} ({group['id'][:16]}):")
    for member in doc["members"]:
        if member.get("you"):
            name = "you"
        elif isinstance(member.get("contact"), str):
            name = one_line(member["contact"])
        else:
            name = "(not a contact)"
        click.echo(f"  {member['role']:<6}  {name}  {member['id']}")
    if not group.get("active"):
        hint("you are no longer in this group: this is who was in it when you left")
