"""What the chat shows, as pure functions: delivery marks, times, message lines, the
contact list, the status line and the QR code. No widgets, no I/O, no clock (callers
pass `now`).

What a peer could have written (bodies, names) is shown through mesh.safe_text: its
control characters as visible escapes, never as markup."""

from __future__ import annotations

import time
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass

import segno
from rich.text import Text

from mesh.group_service import GroupInfo
from mesh.safe_text import neutralise, one_line, pieces
from mesh.store import Contact, MessageRow
from mesh.store_groups import group_of_peer

# One mark per delivery status of a message you sent, and the words the legend uses.
MARKS: Mapping[str, str] = {
    "queued": "○",
    "stored": "◐",
    "delivered": "●",
    "read": "✔",
    "failed": "✗",
    "expired": "✗",
}
STATUS_WORDS: Mapping[str, str] = {
    "queued": "waiting to be sent",
    "stored": "sent, waiting for them",
    "delivered": "delivered",
    "read": "read",
    "failed": "not sent (too old)",
    "expired": "not delivered (expired before they came online)",
}
MARK_STYLES: Mapping[str, str] = {
    "queued": "bold yellow",
    "stored": "bold cyan",
    "delivered": "bold green",
    "read": "bold green",
    "failed": "bold red",
    "expired": "bold red",
}
GROUP_STORED_WORDS = "sent to the group"
GROUP_DELIVERED_WORDS = "delivered to members"
# A message that expired undelivered keeps a stub with its text wiped: this stands in.
WIPED_TEXT = "(text deleted at expiry)"
VERIFIED_MARK = "✓"
GROUP_MARK = "# "  # before a group's name in the list
QR_BORDER = 2  # light margin around the code, in modules (phones read 2 fine)
UNKNOWN_PREFIX = "Unknown "
ESCAPE_STYLE = "reverse"  # how a neutralised control character stands out from typed text


def legend() -> Text:
    """The line under the conversation that explains the marks."""
    text = Text()
    for status in ("queued", "stored", "delivered"):
        text.append(MARKS[status], style=MARK_STYLES[status])
        text.append(f" {STATUS_WORDS[status]}   ", style="dim")
    return text


def format_time(timestamp: float, now: float) -> str:
    """`14:05` for today, `3 Jun 14:05` for another day (local time)."""
    moment, today = time.localtime(timestamp), time.localtime(now)
    if moment[:3] == today[:3]:
        return time.strftime("%H:%M", moment)
    return f"{moment.tm_mday} {time.strftime('%b %H:%M', moment)}"


def message_text(row: MessageRow, their_name: str, now: float) -> Text:
    """Two lines: who and when (with the delivery mark for your own), then the text."""
    mine = row.direction == "out"
    text = Text()
    text.append(
        "You" if mine else one_line(their_name), style="bold blue" if mine else "bold green"
    )
    text.append(f"  {format_time(row.sent_at, now)}", style="dim")
    if mine:
        text.append("  ")
        text.append(MARKS.get(row.status, "?"), style=MARK_STYLES.get(row.status, ""))
        words = STATUS_WORDS.get(row.status, row.status)
        if group_of_peer(row.peer_id) is not None and row.status == "stored":
            words = GROUP_STORED_WORDS  # no member's receipt yet (none above 20 members)
        elif group_of_peer(row.peer_id) is not None and row.status == "delivered":
            words = GROUP_DELIVERED_WORDS  # a member's aggregated receipt came
        text.append(f" {words}", style="dim")
    text.append("\n")
    if not row.body and row.status in ("failed", "expired"):
        text.append(WIPED_TEXT, style="dim italic")
        return text
    text.append_text(peer_text(row.body.decode("utf-8", "replace")))
    return text


def peer_text(text: str) -> Text:
    """Text from a peer as plain text (never markup), its control characters as visible
    escapes in ESCAPE_STYLE (mesh.safe_text)."""
    shown = Text()
    for piece, escaped in pieces(text):
        shown.append(piece, style=ESCAPE_STYLE if escaped else "")
    return shown


@dataclass(frozen=True)
class Entry:
    """One line of the contact list."""

    label: str
    peer_id: str
    unread: int
    known: bool  # False: someone who wrote to you but is not in your contacts
    verified: bool = False  # you compared fingerprints (`mesh contacts verify`)
    waiting: bool = False  # you added them, they have not added you yet (no agreement)
    group: bool = False  # a group's conversation: peer_id is its peer ("group:<hex>")
    left: bool = False  # a group you left or were removed from (its messages stay)


def short_id(peer_id: str) -> str:
    return peer_id[:12] + "…"


def contact_entries(
    contacts: Iterable[Contact],
    unread: Mapping[str, int],
    senders: Iterable[str],
    waiting: Container[str] = (),
) -> list[Entry]:
    """Your contacts, then everyone else who wrote to you (so no message is hidden).
    `waiting`: the IDs of contacts who have not added you yet."""
    entries = [
        Entry(
            one_line(c.name),
            c.peer_id,
            unread.get(c.peer_id, 0),
            True,
            c.verified,
            c.peer_id in waiting,
        )
        for c in contacts
    ]
    known = {c.peer_id for c in entries}
    for sender in dict.fromkeys(senders):
        if sender not in known and group_of_peer(sender) is None:
            entries.append(
                Entry(UNKNOWN_PREFIX + short_id(sender), sender, unread.get(sender, 0), False)
            )
            known.add(sender)
    return entries


def group_entries(infos: Iterable[GroupInfo], unread: Mapping[str, int]) -> list[Entry]:
    """Your groups, for the list beside your contacts (their names are whoever invited
    you's choice: shown through one_line, like a contact's)."""
    return [
        Entry(one_line(g.name), g.peer, unread.get(g.peer, 0), True, group=True, left=not g.active)
        for g in infos
    ]


def entry_text(entry: Entry) -> Text:
    text = Text(GROUP_MARK, style="bold magenta") if entry.group else Text()
    text.append(neutralise(entry.label), style="bold" if entry.unread else "")
    if entry.left:
        text.append(" (left)", style="dim")
    if entry.verified:
        text.append(f" {VERIFIED_MARK}", style="bold green")
    if entry.unread:
        text.append(f"  {entry.unread} new", style="bold black on yellow")
    return text


def group_title(info: GroupInfo) -> Text:
    """The conversation header of a group: its name, members, what you can do."""
    plural = "" if info.members == 1 else "s"
    text = Text(f"Group {one_line(info.name)}", style="bold")
    text.append(f"  {info.members} member{plural}", style="not bold")
    if info.admin and info.active:
        text.append(" · you are an admin", style="not bold")
    text.append("\nCtrl+G: who is in it. Everyone in it reads what you write here.", "dim")
    if not info.active:
        text.append("\n")
        text.append(
            "You are no longer in this group: nothing can be sent to it.", style="bold yellow"
        )
    return text


def members_text(members: Iterable[Mapping[str, object]]) -> Text:
    """The member list (the `group_members` answer's rows): names from your contacts,
    else the start of the ID; roles; you."""
    text = Text()
    for member in members:
        peer_id = str(member.get("id", ""))
        contact = member.get("contact")
        if member.get("you") is True:
            name = "You"
        elif isinstance(contact, str):
            name = one_line(contact)
        else:
            name = f"{short_id(peer_id)} (not in your contacts)"
        text.append(f"{name}", style="bold")
        text.append(
            f"  {member.get('role')}\n", style="green" if member.get("role") == "admin" else "dim"
        )
        text.append(f"    {neutralise(peer_id)}\n", style="dim")
    return text


def waiting_text(name: str) -> Text:
    """Under a contact who has not added you yet: nothing reaches them until they do."""
    return Text(f"waiting for {one_line(name)} to add you", style="italic")


def waiting_title(name: str) -> Text:
    """The conversation header's line for a contact who has not added you yet."""
    return Text(
        f"Waiting for {one_line(name)} to add you too. Until they do, your messages wait "
        "here: nobody who only knows your ID can reach you. Give them yours (Ctrl+O).",
        style="bold yellow",
    )


@dataclass(frozen=True)
class NodeState:
    """What the status bar shows."""

    running: bool = True
    peers: int = 0
    queued: int = 0


def status_line(state: NodeState) -> tuple[Text, str]:
    """The status bar's text and its CSS class (online, offline or stopped)."""
    if not state.running:
        text = Text("✗ YOUR NODE HAS STOPPED: nothing can be sent or received. ", style="bold")
        text.append("Quit with Ctrl+Q and start mesh chat again.")
        return text, "stopped"
    waiting = _waiting_words(state.queued)
    if state.peers == 0:
        text = Text("○ NOT CONNECTED: no other device found yet. ", style="bold")
        text.append(f"Messages wait here and go out when one is found. {waiting}")
        return text, "offline"
    plural = "" if state.peers == 1 else "s"
    text = Text(f"● CONNECTED: {state.peers} device{plural} found. ", style="bold")
    text.append(waiting)
    return text, "online"


def _waiting_words(queued: int) -> str:
    if queued == 0:
        return "Nothing waiting to be sent."
    if queued == 1:
        return "1 message waiting to be sent."
    return f"{queued} messages waiting to be sent."


def fingerprint_lines(fingerprint: str, per_line: int = 4) -> str:
    """The groups of a fingerprint, `per_line` to a line: easier to read aloud."""
    groups = fingerprint.split()
    lines = (groups[i : i + per_line] for i in range(0, len(groups), per_line))
    return "\n".join(" ".join(line) for line in lines)


def qr_text(peer_id: str) -> Text:
    """The ID as a QR code drawn with half blocks, dark on light so phones can scan it.

    IDs are case-insensitive: upper case fits QR's compact alphanumeric mode.
    """
    code = segno.make(peer_id.upper(), error="m")
    rows = [[bool(m) for m in row] for row in code.matrix_iter(scale=1, border=QR_BORDER)]
    if len(rows) % 2:
        rows.append([False] * len(rows[0]))
    lines = []
    for top, bottom in zip(rows[0::2], rows[1::2], strict=True):
        lines.append("".join(_HALF_BLOCKS[(t, b)] for t, b in zip(top, bottom, strict=True)))
    return Text("\n".join(lines), style="black on white", no_wrap=True)


# (top module dark, bottom module dark) -> the character, drawn black on white.
_HALF_BLOCKS = {(True, True): "█", (True, False): "▀", (False, True): "▄", (False, False): " "}
