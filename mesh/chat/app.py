"""ChatApp: the full-screen chat on the node of a home.

Left, your contacts, then your groups (`# name`), with unread counts; right, the
conversation with a delivery mark on each message you sent (in a group, each message
under its author's name; Ctrl+G lists the members), and the line you type in; below,
the status bar (connected or not, devices found, messages waiting) and the keyboard
shortcuts.

Everything shown comes from the home's store (read beside the daemon, WAL makes that
safe) and is kept current by the daemon's watch stream: new messages, status changes,
peer counts, expired messages. Sending and marking as read go through the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.timer import Timer
from textual.widgets import Footer, Header, Input, Label, ListItem, ListView, Static

from mesh import vault
from mesh.chat.link import DaemonLink
from mesh.chat.screens import (
    AddContactScreen,
    GroupMembersScreen,
    MyIdScreen,
    RequestsScreen,
    WipeScreen,
)
from mesh.chat.view import (
    VERIFIED_MARK,
    Entry,
    NodeState,
    contact_entries,
    entry_text,
    group_entries,
    group_title,
    legend,
    message_text,
    short_id,
    status_line,
    waiting_text,
    waiting_title,
)
from mesh.control import Event
from mesh.envelope import MessageKind
from mesh.errors import LocalError, MeshError
from mesh.group_service import GroupInfo
from mesh.group_views import stored_groups
from mesh.home import check_text, open_home, unlock_identity
from mesh.identity import PublicIdentity
from mesh.safe_text import one_line
from mesh.store import Contact, MessageRow, Store

log = logging.getLogger(__name__)

SHOWN_MESSAGES = 500  # newest messages of a conversation put on screen
SENDERS_SCANNED = 1000  # newest received messages scanned for senders not in contacts
AGREEMENT_POLL = 1.0  # seconds between looks at the store while a contact has not added us

WELCOME = (
    "Welcome to mesh chat.\n\n"
    "You have no contacts yet.\n\n"
    "• Press Ctrl+N to add someone: paste the ID they gave you.\n"
    "• Press Ctrl+O to show your own ID and QR code, so others can add you.\n\n"
    "Messages go straight from device to device on this network: no internet needed."
)

CSS = """
#contacts-pane { width: 26; border-right: solid $primary; }
#contacts-title, #chat-title { text-style: bold; background: $boost; padding: 0 1; }
#contacts { height: 1fr; }
#contacts > ListItem { padding: 0 1; }
#contacts .waiting { color: $warning; width: 100%; }
#contacts-hint { color: $text-muted; padding: 0 1; height: auto; }
#chat-pane { width: 1fr; }
#chat-title { height: auto; }
#messages { height: 1fr; padding: 0 1; }
#messages > .message { margin: 1 0 0 0; }
#messages > .message.mine { padding-left: 4; }
#welcome { padding: 2 4; }
#legend { padding: 0 1; height: auto; }
#compose { margin: 0 1; }
#status { height: auto; padding: 0 1; }
#status.online { background: $success-darken-2; color: $text; }
#status.offline { background: $warning-darken-2; color: $text; }
#status.stopped { background: $error-darken-1; color: $text; }
"""


class MessageLine(Static):
    """One message of the open conversation."""

    def __init__(self, row: MessageRow, their_name: str) -> None:
        classes = "message mine" if row.direction == "out" else "message"
        super().__init__(message_text(row, their_name, time.time()), classes=classes)
        self.row = row
        self.their_name = their_name

    def set_row(self, row: MessageRow) -> None:
        self.row = row
        self.update(message_text(row, self.their_name, time.time()))


class ContactItem(ListItem):
    def __init__(self, entry: Entry) -> None:
        labels = [Label(entry_text(entry))]
        if entry.waiting:
            labels.append(Label(waiting_text(entry.label), classes="waiting"))
        super().__init__(*labels)
        self.entry = entry


def widget_key(row: MessageRow) -> str:
    # One message id can exist both ways (a note to yourself): the direction tells apart.
    return f"{row.direction}-{row.msg_id.hex()}"


class ChatApp(App[None]):
    """The chat. `link` reaches the daemon; `open_with` is an ID to open at start."""

    TITLE = "mesh chat"
    CSS = CSS
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+n", "add_contact", "Add contact", priority=True),
        Binding("ctrl+o", "my_id", "My ID and QR code", priority=True),
        Binding("ctrl+r", "requests", "Requests", priority=True),
        Binding("ctrl+g", "members", "Group members", priority=True),
        Binding("ctrl+x", "wipe", "Wipe", priority=True),
        Binding("pageup", "scroll_messages(-1)", "Older", show=False),
        Binding("pagedown", "scroll_messages(1)", "Newer", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        home: Path,
        link: DaemonLink,
        open_with: str | None = None,
        notices: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.home = home
        self.wiped = False
        self.link = link
        self.open_with = open_with
        self.notices = list(notices)
        self.store: Store = open_home(home)
        self.current: str | None = None  # the ID whose conversation is open
        self.entries: list[Entry] = []
        self.shown: dict[str, MessageLine] = {}
        self.state = NodeState()
        self.own: dict[str, Any] = {}
        self.ready = False  # set once the first state is on screen (tests wait for it)
        # The watch stream and the user both change the conversation and the contact list:
        # one change at a time, or a message could be shown twice.
        self._conversation_lock = asyncio.Lock()
        self._contacts_lock = asyncio.Lock()
        self._agreement_timer: Timer | None = None
        self.groups: dict[str, GroupInfo] = {}  # peer -> the groups in the list
        self._groups_seen: tuple[tuple[bytes, float | None, int], ...] = ()

    # -- layout ---------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="contacts-pane"):
                yield Label("Contacts", id="contacts-title")
                yield ListView(id="contacts")
                yield Static("↑ ↓ choose, Enter opens\nTab: switch to typing", id="contacts-hint")
            with Vertical(id="chat-pane"):
                yield Static("", id="chat-title")
                # Not in the Tab order: Tab goes straight between contacts and typing.
                yield VerticalScroll(id="messages", can_focus=False)
                yield Static(legend(), id="legend")
                yield Input(placeholder="Type a message and press Enter to send", id="compose")
        yield Static(id="status")
        yield Footer()

    async def on_mount(self) -> None:
        try:
            events = await self.link.watch()  # first: nothing that happens next is missed
            self.own = await self.link.request("status")
        except MeshError:
            self.show_state(NodeState(running=False))
            self.ready = True
            return
        own = self.own.get("name") or short_id(str(self.own["id"]))
        self.sub_title = f"you are {one_line(str(own))}"
        self.show_state(NodeState(True, int(self.own.get("peers", 0)), self.queued_count()))
        await self.refresh_contacts()
        first = self.open_with or (self.entries[0].peer_id if self.entries else None)
        await self.open_conversation(first)
        for notice in self.notices:
            self.notify(notice, timeout=10)
        self.run_worker(self.follow(events), name="watch", group="watch")
        self._agreement_timer = self.set_interval(AGREEMENT_POLL, self.check_agreements)
        self.ready = True

    async def on_unmount(self) -> None:
        if self._agreement_timer is not None:
            self._agreement_timer.stop()
        await self.link.close()
        self.store.close()

    # -- the daemon's events ----------------------------------------------------------

    async def follow(self, events: AsyncIterator[Event]) -> None:
        """Apply the daemon's events until it closes the stream (it stopped)."""
        try:
            async for event in events:
                try:
                    await self.apply(event)
                except MeshError as exc:  # e.g. the store busy for too long: skip one event
                    log.warning("chat: could not show an event: %s", exc)
        except OSError:
            pass  # the connection broke: the daemon is gone
        self.show_state(NodeState(running=False))

    async def apply(self, event: Event) -> None:
        kind = event.get("event")
        if kind == "message":
            await self.message_arrived(event.get("message") or {})
        elif kind == "status":
            await self.status_changed(str(event.get("message_id", "")))
        elif kind == "peers":
            self.show_state(NodeState(True, int(event.get("count", 0)), self.queued_count()))
        elif kind == "expired":
            await self.messages_expired([str(m) for m in event.get("message_ids", [])])

    async def message_arrived(self, message: Event) -> None:
        row = self._row(message.get("id"), "in")
        if row is None:
            return
        if message.get("group") and row.peer_id not in self.groups:
            await self.refresh_contacts()  # a group just joined: its name and entry
        if row.peer_id == self.current:
            await self.show_row(row)
            await self.mark_read(row.peer_id)
        else:
            self.notify(f"New message from {self.sender_words(row)}", markup=False)
        await self.refresh_contacts()

    async def status_changed(self, message_id: str) -> None:
        row = self._row(message_id, "out")
        if row is not None:
            await self.show_row(row)
        self.show_state(NodeState(self.state.running, self.state.peers, self.queued_count()))

    async def messages_expired(self, message_ids: list[str]) -> None:
        async with self._conversation_lock:
            for key in [k for k in self.shown if k.split("-", 1)[1] in message_ids]:
                await self.shown.pop(key).remove()
        self.show_state(NodeState(self.state.running, self.state.peers, self.queued_count()))
        await self.refresh_contacts()

    def _row(self, message_id: object, direction: str) -> MessageRow | None:
        try:
            msg_id = bytes.fromhex(str(message_id))
        except ValueError:
            return None
        return self.store.get_message(msg_id, "in" if direction == "in" else "out")

    # -- what is on screen --------------------------------------------------------------

    def show_state(self, state: NodeState) -> None:
        self.state = state
        text, kind = status_line(state)
        bar = self.query_one("#status", Static)
        bar.update(text)
        bar.set_classes(kind)

    def queued_count(self) -> int:
        return len(self.store.outbox_pending())

    async def refresh_contacts(self) -> None:
        async with self._contacts_lock:
            await self._refresh_contacts()

    async def _refresh_contacts(self) -> None:
        senders = [
            r.peer_id for r in self.store.list_messages(direction="in", limit=SENDERS_SCANNED)
        ]
        unread = self.store.unread_counts()
        if self.current is not None:
            unread.pop(self.current, None)  # being read right now
        contacts = self.store.list_contacts()
        waiting = self.waiting_ids(contacts)
        entries = contact_entries(contacts, unread, reversed(senders), waiting)
        self.groups = {g.info.peer: g.info for g in stored_groups(self.store)}
        self.entries = entries + group_entries(self.groups.values(), unread)
        shown = self.query_one("#contacts", ListView)
        await shown.clear()
        await shown.extend(ContactItem(entry) for entry in self.entries)
        chosen = [i for i, e in enumerate(self.entries) if e.peer_id == self.current]
        shown.index = chosen[0] if chosen else None

    def waiting_ids(self, contacts: Iterable[Contact] | None = None) -> set[str]:
        """Contacts who have not added us yet: no key agreement, nothing reaches them."""
        saved = self.store.list_contacts() if contacts is None else contacts
        ready = {a.peer_id for a in self.store.keys.agreements() if a.ready}
        return {c.peer_id for c in saved} - ready - {self.own.get("id")}

    def is_waiting(self, peer_id: str) -> bool:
        return any(e.waiting for e in self.entries if e.peer_id == peer_id and e.known)

    async def check_agreements(self) -> None:
        """While a contact has not added us, look whether they did (their keys came)."""
        try:
            if self._groups_changed():
                await self.refresh_contacts()
                if self.current in self.groups:
                    self.show_title(self.current)
        except MeshError:
            return  # the store busy: next time
        before = {e.peer_id for e in self.entries if e.waiting}
        if not before:
            return
        try:
            now_ready = before - self.waiting_ids()
        except MeshError:
            return  # the store busy: next time
        if not now_ready:
            return
        await self.refresh_contacts()
        if self.current in now_ready:
            self.show_title(self.current)
        for peer_id in now_ready:
            name = one_line(self.name_of(peer_id))
            self.notify(f"{name} has added you: you can message each other.", markup=False)

    def _groups_changed(self) -> bool:
        """A group joined (an invitation came), left, or its changes grew (members):
        looked at without verifying anything, the list is rebuilt only then."""
        rows = self.store.groups.all()
        seen = tuple(
            (r.group_id, r.left_at, len(self.store.groups.changes(r.group_id))) for r in rows
        )
        changed = seen != self._groups_seen
        self._groups_seen = seen
        return changed

    def sender_words(self, row: MessageRow) -> str:
        """Who wrote a received message: `ann`, or `ann in north gate` for a group's."""
        group = self.groups.get(row.peer_id)
        if group is None:
            return one_line(self.name_of(row.peer_id))
        return f"{one_line(self.author_name(row))} in {one_line(group.name)}"

    def author_name(self, row: MessageRow) -> str:
        """The name over a message: the contact's (the author's, in a group)."""
        if row.peer_id not in self.groups:
            return self.name_of(row.peer_id)
        if row.direction == "out" or row.author is None:
            return "You"
        return self.name_of(row.author)

    def contact_name(self, peer_id: str) -> str | None:
        for entry in self.entries:
            if entry.peer_id == peer_id and entry.known:
                return entry.label
        return None

    def name_of(self, peer_id: str) -> str:
        return self.contact_name(peer_id) or short_id(peer_id)

    async def open_conversation(self, peer_id: str | None) -> None:
        async with self._conversation_lock:
            await self._open_conversation(peer_id)
        if peer_id is None:
            self.query_one("#contacts", ListView).focus()
            return
        await self.mark_read(peer_id)
        await self.refresh_contacts()
        self.query_one("#compose", Input).focus()

    async def _open_conversation(self, peer_id: str | None) -> None:
        self.current = peer_id
        box = self.query_one("#messages", VerticalScroll)
        await box.remove_children()
        self.shown.clear()
        if peer_id is None:
            self.query_one("#chat-title", Static).update(Text("No conversation open", "bold"))
            await box.mount(Static(WELCOME, id="welcome"))
            return
        self.show_title(peer_id)
        rows = self.store.list_messages(peer_id=peer_id, limit=SHOWN_MESSAGES)
        lines = [self._line(row) for row in rows if row.kind == MessageKind.TEXT]
        await box.mount_all(lines)
        box.scroll_end(animate=False)

    def show_title(self, peer_id: str) -> None:
        self.query_one("#chat-title", Static).update(self.title_text(peer_id))

    def title_text(self, peer_id: str) -> Text:
        """The name, and the fingerprint to compare with their "My ID" screen; whether
        they have added us yet. A group's: its name and members."""
        if peer_id in self.groups:
            return group_title(self.groups[peer_id])
        fingerprint = PublicIdentity.from_id(peer_id).fingerprint
        text = Text(f"Chat with {self.name_of(peer_id)}", style="bold")
        if self.is_verified(peer_id):
            text.append(f"  {VERIFIED_MARK} verified\n", style="bold green")
        else:
            text.append("  not verified: compare fingerprints in person\n", style="yellow")
        text.append(f"Their fingerprint: {fingerprint}", "not bold")  # wraps between groups
        if self.is_waiting(peer_id):
            text.append("\n")
            text.append_text(waiting_title(self.name_of(peer_id)))
        return text

    def is_verified(self, peer_id: str) -> bool:
        return any(e.verified for e in self.entries if e.peer_id == peer_id and e.known)

    def _line(self, row: MessageRow) -> MessageLine:
        line = MessageLine(row, self.author_name(row))
        self.shown[widget_key(row)] = line
        return line

    async def show_row(self, row: MessageRow) -> None:
        """Add a message of the open conversation in time order, or update its mark."""
        async with self._conversation_lock:
            await self._show_row(row)

    async def _show_row(self, row: MessageRow) -> None:
        if row.peer_id != self.current or row.kind != MessageKind.TEXT:
            return
        existing = self.shown.get(widget_key(row))
        if existing is not None:
            existing.set_row(row)
            return
        later = [w for w in self.shown.values() if w.row.sent_at > row.sent_at]
        line = self._line(row)
        box = self.query_one("#messages", VerticalScroll)
        if later:
            await box.mount(line, before=min(later, key=lambda w: w.row.sent_at))
        else:
            await box.mount(line)
            box.scroll_end(animate=False)

    async def mark_read(self, peer_id: str) -> None:
        with contextlib.suppress(MeshError):  # failing: shown as unread next time, harmless
            await self.link.request("read", peer=peer_id)

    # -- what the user does ---------------------------------------------------------------

    @on(ListView.Selected, "#contacts")
    async def _contact_chosen(self, event: ListView.Selected) -> None:
        if isinstance(event.item, ContactItem):
            await self.open_conversation(event.item.entry.peer_id)

    @on(Input.Submitted, "#compose")
    def _compose_submitted(self, event: Input.Submitted) -> None:
        text = event.value
        if not text.strip():
            return
        if self.current is None:
            self.notify("Choose who to write to first (Ctrl+N adds a contact).", severity="warning")
            return
        try:
            check_text(text)
        except LocalError as exc:
            self.notify(one_line(str(exc)), severity="error", timeout=10, markup=False)
            return
        event.input.value = ""
        self.run_worker(self.send(self.current, text), group="send")

    async def send(self, peer_id: str, text: str) -> None:
        """Hand a message to the node; it shows up with its mark through the watch
        stream, and at once here when the node answers."""
        try:
            if peer_id in self.groups:
                group = self.groups[peer_id].group_id.hex()
                result = await self.link.request("group_send", group=group, text=text)
            else:
                result = await self.link.request("send", to=peer_id, text=text, ttl=None)
        except MeshError as exc:
            self.notify(one_line(f"Not sent: {exc}"), severity="error", timeout=15, markup=False)
            compose = self.query_one("#compose", Input)
            if not compose.value:
                compose.value = text  # give the text back, so nothing typed is lost
            return
        row = self._row(result.get("message_id"), "out")
        if row is not None:
            await self.show_row(row)
        if result.get("waiting") is True:
            name = one_line(self.name_of(peer_id))
            self.notify(
                f"Queued: {name} has not added you yet. It goes as soon as they add you too.",
                severity="warning",
                timeout=10,
                markup=False,
            )
        self.show_state(NodeState(self.state.running, self.state.peers, self.queued_count()))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The dialogs' shortcuts work from the chat itself, not over an open dialog."""
        if action == "wipe":
            return len(self.screen_stack) == 1
        if action in ("add_contact", "my_id", "requests"):
            return len(self.screen_stack) == 1 and bool(self.own)
        if action == "members":
            return len(self.screen_stack) == 1 and self.current in self.groups
        return True

    def action_add_contact(self) -> None:
        # In a conversation with someone not in your contacts: offer to save their ID.
        unknown = self.current is not None and self.contact_name(self.current) is None
        prefill = self.current if unknown and self.current else ""
        screen = AddContactScreen(self.store, str(self.own["id"]), prefill_id=prefill)
        self.push_screen(screen, self._contact_added)

    async def _contact_added(self, peer_id: str | None) -> None:
        if peer_id is None:
            return
        await self.refresh_contacts()
        await self.open_conversation(peer_id)
        self.run_worker(self.start_agreement(peer_id), group="agree")

    async def start_agreement(self, peer_id: str) -> None:
        """Have the node start the key agreement with a contact just added (as `mesh
        contacts add` does), and say whether they had added us already."""
        name = one_line(self.name_of(peer_id))
        try:
            answer = await self.link.request("add_contact", peer=peer_id)
        except MeshError as exc:
            # The agreement row is saved: the next node for this home starts it.
            self.notify(
                one_line(f"{name} is saved; {exc}"), severity="warning", timeout=10, markup=False
            )
            return
        await self.refresh_contacts()
        if self.current == peer_id:
            self.show_title(peer_id)
        if answer.get("ready") is True:
            self.notify(f"{name} has added you too: you can message each other.", markup=False)
        else:
            self.notify(
                f"Waiting for {name} to add you too. Give them your ID (Ctrl+O); "
                "your messages wait until then.",
                timeout=10,
                markup=False,
            )

    def action_scroll_messages(self, direction: int) -> None:
        box = self.query_one("#messages", VerticalScroll)
        if direction < 0:
            box.scroll_page_up()
        else:
            box.scroll_page_down()

    def action_wipe(self) -> None:
        self.push_screen(WipeScreen(), self._wipe_confirmed)

    def _wipe_confirmed(self, confirmed: bool | None) -> None:
        if confirmed:
            vault.wipe(self.home)  # the key first; kills the daemon; then the files
            self.wiped = True
            self.exit()

    def action_requests(self) -> None:
        identity = unlock_identity(self.store, None)  # inside the unlocked store
        self.push_screen(RequestsScreen(self.store, identity), self._requests_done)

    async def _requests_done(self, accepted: list[str] | None) -> None:
        for peer_id in accepted or []:
            with contextlib.suppress(MeshError):
                await self.link.request("add_contact", peer=peer_id)  # their keys go now
        await self.refresh_contacts()

    async def action_members(self) -> None:
        """Ctrl+G in a group's conversation: who is in it (asked of the node)."""
        group = self.groups.get(self.current or "")
        if group is None:
            return
        try:
            answer = await self.link.request("group_members", group=group.group_id.hex())
        except MeshError as exc:
            self.notify(one_line(str(exc)), severity="error", timeout=10, markup=False)
            return
        members = [m for m in answer.get("members", []) if isinstance(m, dict)]
        self.push_screen(GroupMembersScreen(group.name, members))

    def action_my_id(self) -> None:
        own_id, fingerprint = str(self.own["id"]), str(self.own["fingerprint"])
        self.push_screen(MyIdScreen(own_id, fingerprint, self.own.get("name")))
