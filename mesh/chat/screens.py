"""The chat's dialogs: adding a contact by pasting an ID, showing your own ID (as a QR
code and text) with your fingerprint, strangers' requests, the panic wipe, a group's
members."""

from __future__ import annotations

import time
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from mesh.chat.view import fingerprint_lines, members_text, qr_text
from mesh.errors import InvalidIdError, LocalError
from mesh.identity import Identity, PublicIdentity
from mesh.requests import accept_in_store
from mesh.safe_text import one_line
from mesh.store import Store

# Not scoped: the rules style the screens themselves, not only their children.
DIALOG_CSS = """
AddContactScreen, MyIdScreen, GroupMembersScreen { align: center middle; }
.dialog {
    width: 76; max-width: 100%; height: auto; max-height: 100%;
    border: thick $accent; background: $surface; padding: 0 2;
}
MyIdScreen .dialog { width: 100; }
.dialog-title { text-style: bold; width: 100%; content-align: center middle; padding: 1 0; }
.field-label { margin-top: 1; text-style: bold; }
.check { height: auto; min-height: 1; margin: 0 1; }
.buttons { height: auto; margin: 1 0; align-horizontal: center; }
.buttons Button { margin: 0 2; }
.qr-row { height: auto; }
.qr { width: auto; height: auto; margin-right: 2; }
.qr-side { width: 1fr; height: auto; }
.big { text-style: bold; }
.explain { color: $text-muted; margin: 1 0 0 0; }
"""


def _sentence(message: str) -> str:
    message = message.strip()
    if message and message[-1] not in ".!?":
        message += "."
    return message[:1].upper() + message[1:]


def id_feedback(text: str, own_id: str) -> tuple[PublicIdentity | None, Text]:
    """The person the pasted text names, or None; and what to tell the user about it."""
    if not text.strip():
        return None, Text("Paste the ID they gave you. It starts with “mesh”.", style="dim")
    try:
        public = PublicIdentity.from_id(text)
    except InvalidIdError as exc:
        return None, Text("✗ " + _sentence(str(exc)), style="bold red")
    if public.id == own_id:
        return None, Text(
            "✗ This is your own ID. Paste the ID of the person you want to write to.",
            style="bold red",
        )
    return public, Text.assemble(
        ("✓ This ID is correct. Its fingerprint:\n", "bold green"),
        (fingerprint_lines(public.fingerprint, per_line=6), "bold"),
        ("\nAsk them to open “My ID” (Ctrl+O) and read theirs aloud: it must be the same.", ""),
    )


def name_problem(name: str, store: Store) -> str | None:
    """Why `name` cannot be used for a new contact, in plain words; None if it can."""
    if not name.strip():
        return "Give them a name you will recognise, for example “Sam”."
    if store.get_contact(name) is not None:
        return f"You already have a contact named {name.strip()}. Pick another name."
    return None


class AddContactScreen(ModalScreen[str | None]):
    """Name + pasted ID, checked as you type; dismisses with the new contact's ID, or
    None if cancelled. Nothing is saved while anything is wrong."""

    DEFAULT_CSS = DIALOG_CSS
    SCOPED_CSS = False
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, store: Store, own_id: str, prefill_id: str = "") -> None:
        super().__init__()
        self.store = store
        self.own_id = own_id
        self.prefill_id = prefill_id

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Add a contact", classes="dialog-title")
            yield Label("Their name", classes="field-label")
            yield Input(placeholder="for example: Sam", id="name")
            yield Static("", id="name-check", classes="check")
            yield Label("Their ID", classes="field-label")
            yield Input(self.prefill_id, placeholder="paste the ID here (mesh…)", id="peer-id")
            yield Static(id="id-check", classes="check")
            with Horizontal(classes="buttons"):
                yield Button("Add contact", variant="primary", id="add")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self._check_id()
        self.query_one("#name", Input).focus()

    @on(Input.Changed, "#peer-id")
    def _check_id(self) -> PublicIdentity | None:
        field = self.query_one("#peer-id", Input)
        public, feedback = id_feedback(field.value, self.own_id)
        self.query_one("#id-check", Static).update(feedback)
        field.set_class(public is None and bool(field.value.strip()), "-invalid")
        return public

    @on(Input.Changed, "#name")
    def _check_name(self) -> str | None:
        field = self.query_one("#name", Input)
        problem = name_problem(field.value, self.store) if field.value else None
        self.query_one("#name-check", Static).update(Text(problem or "", style="bold red"))
        field.set_class(problem is not None, "-invalid")
        return problem

    @on(Input.Submitted, "#name")
    def _next_field(self) -> None:
        self.query_one("#peer-id", Input).focus()

    @on(Input.Submitted, "#peer-id")
    @on(Button.Pressed, "#add")
    def add(self) -> None:
        """Save the contact if both fields are right; otherwise show what is wrong."""
        name = self.query_one("#name", Input).value
        problem = name_problem(name, self.store)
        self.query_one("#name-check", Static).update(Text(problem or "", style="bold red"))
        public = self._check_id()
        if problem is not None or public is None:
            self.app.bell()
            return
        try:
            self.store.add_contact(name, public.id)
            # As `mesh contacts add`: the agreement is durable even if no node starts it now.
            self.store.keys.agreement_add(public.id, time.time())
        except LocalError as exc:
            self.query_one("#name-check", Static).update(Text(_sentence(str(exc)), "bold red"))
            return
        self.dismiss(public.id)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class MyIdScreen(ModalScreen[None]):
    """Your ID as a QR code and as text, and your fingerprint, for meeting in person."""

    DEFAULT_CSS = DIALOG_CSS
    SCOPED_CSS = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("enter", "close", "Close"),
    ]

    def __init__(self, own_id: str, fingerprint: str, name: str | None) -> None:
        super().__init__()
        self.own_id = own_id
        self.fingerprint = fingerprint
        self.own_name = name

    def compose(self) -> ComposeResult:
        title = f"My ID ({one_line(self.own_name)})" if self.own_name else "My ID"
        with VerticalScroll(classes="dialog"):
            yield Label(Text(title), classes="dialog-title")  # a name is never markup
            with Horizontal(classes="qr-row"):
                yield Static(qr_text(self.own_id), classes="qr", id="qr")
                with Vertical(classes="qr-side"):
                    yield Static(
                        "To be added by someone next to you: let them scan this code, or "
                        "give them your ID (written below)."
                    )
                    yield Label("My fingerprint", classes="field-label")
                    yield Static(
                        fingerprint_lines(self.fingerprint), id="fingerprint", classes="big"
                    )
                    yield Static(
                        "Read these numbers aloud together. On their screen they appear "
                        "under your name. If one digit differs, do not trust that contact: "
                        "ask for the ID again.",
                        classes="explain",
                    )
            yield Label("My ID", classes="field-label")
            yield Static(self.own_id, id="own-id", classes="big")
            with Horizontal(classes="buttons"):
                yield Button("Close", variant="primary", id="close")

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)


class WipeScreen(ModalScreen[bool]):
    """Panic wipe, with one confirmation: Enter or the red button wipes, Escape cancels."""

    DEFAULT_CSS = DIALOG_CSS
    SCOPED_CSS = False
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog"):
            yield Label("Wipe this device?", classes="dialog-title")
            yield Static(
                "Destroys your identity, contacts and messages here at once, and stops "
                "your node. This cannot be undone (a backup restores the identity)."
            )
            with Horizontal(classes="buttons"):
                yield Button("Wipe everything now", variant="error", id="wipe")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()  # Enter alone does not wipe

    @on(Button.Pressed, "#wipe")
    def wipe(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(False)


class RequestsScreen(ModalScreen[list[str]]):
    """Strangers' requests (issue 15): each one's ID, fingerprint and text, shown inert;
    Accept makes them a contact, Block drops them and anything they send, Delete forgets
    the request. Dismissed with the IDs accepted (the app starts their agreement)."""

    DEFAULT_CSS = DIALOG_CSS + "RequestsScreen { align: center middle; }"
    SCOPED_CSS = False
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]

    def __init__(self, store: Store, identity: Identity) -> None:
        super().__init__()
        self.store = store
        self.identity = identity
        self.accepted: list[str] = []

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog"):
            yield Label("Requests from people you have not added", classes="dialog-title")
            yield Static(id="requests-list")
            with Horizontal(classes="buttons"):
                yield Button("Accept", variant="success", id="accept")
                yield Button("Block", variant="error", id="block")
                yield Button("Delete", id="delete")
                yield Button("Close", variant="primary", id="close")

    def on_mount(self) -> None:
        self.show()

    def current(self) -> str | None:
        requests = self.store.strangers.requests()
        return requests[0].peer_id if requests else None

    def show(self) -> None:
        requests = self.store.strangers.requests()
        if not requests:
            text = Text(
                "No requests. Strangers can ask only while requests are on (`mesh requests on`).",
                style="dim",
            )
        else:
            text = Text()
            for i, r in enumerate(requests):
                style = "bold" if i == 0 else ""
                text.append(f"{'> ' if i == 0 else '  '}{r.peer_id}\n", style=style)
                fingerprint = PublicIdentity.from_id(r.peer_id).fingerprint
                text.append(f"    fingerprint {fingerprint}\n", style="dim")
                text.append(f"    {one_line(r.text.decode('utf-8', 'replace'))}\n")
            text.append("\nThe first one (>) is the one the buttons act on.", style="dim")
        self.query_one("#requests-list", Static).update(text)

    @on(Button.Pressed, "#accept")
    def accept(self) -> None:
        peer_id = self.current()
        if peer_id is not None:
            accept_in_store(self.store, self.identity, peer_id, time.time())
            self.accepted.append(peer_id)
        self.show()

    @on(Button.Pressed, "#block")
    def block(self) -> None:
        peer_id = self.current()
        if peer_id is not None:
            self.store.strangers.block(peer_id, time.time())
        self.show()

    @on(Button.Pressed, "#delete")
    def delete(self) -> None:
        peer_id = self.current()
        if peer_id is not None:
            self.store.strangers.request_remove(peer_id)
        self.show()

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(self.accepted)


class GroupMembersScreen(ModalScreen[None]):
    """Who is in a group (the daemon's `group_members` answer): names from your
    contacts, else the start of the ID, and roles. Escape or Enter closes."""

    DEFAULT_CSS = DIALOG_CSS
    SCOPED_CSS = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("enter", "close", "Close"),
    ]

    def __init__(self, name: str, members: list[dict[str, object]]) -> None:
        super().__init__()
        self.group_name = name
        self.members = members

    def compose(self) -> ComposeResult:
        plural = "" if len(self.members) == 1 else "s"
        title = f"{one_line(self.group_name)}: {len(self.members)} member{plural}"
        with VerticalScroll(classes="dialog"):
            yield Label(Text(title), classes="dialog-title")  # a name is never markup
            yield Static(members_text(self.members), id="members")
            yield Static(
                "Only an admin adds or removes members (mesh group invite / remove).",
                classes="explain",
            )
            with Horizontal(classes="buttons"):
                yield Button("Close", variant="primary", id="close")

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)
