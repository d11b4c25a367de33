"""`mesh chat` (mesh.chat): the Textual app driven by its test pilot against real `mesh up`
daemons on 127.0.0.71-73 (no mDNS, joined with --peer), plus the pure view helpers.
Loopback only; every wait is a bounded poll."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import segno
from click.testing import CliRunner
from rich.text import Text
from test_cli_support import Daemons, add_contact, befriend, make_home, texts
from textual import events
from textual.pilot import Pilot
from textual.widgets import Input, Label, ListView, Static

from cli.main import cli
from mesh import vault
from mesh.chat import ChatApp, ChatOptions, DaemonLink, find_or_start, run_chat
from mesh.chat.app import ContactItem, MessageLine
from mesh.chat.screens import AddContactScreen, MyIdScreen, id_feedback
from mesh.chat.view import (
    QR_BORDER,
    NodeState,
    contact_entries,
    format_time,
    message_text,
    qr_text,
    status_line,
)
from mesh.control import ControlClient
from mesh.home import HomeLock
from mesh.identity import Identity
from mesh.store import Contact, Direction, MessageRow

WAIT = 20.0  # a condition that depends on the network
DISAPPEAR_TTL = 6  # seconds: shown first, then gone well within WAIT
SIZE = (100, 34)


# -- helpers -----------------------------------------------------------------------------


class Pair:
    """Ann and Ben, each with the other as a contact and a running daemon."""

    def __init__(self, root: Path, daemons: Daemons) -> None:
        self.ann, self.ben = root / "ann", root / "ben"
        self.ann_id, self.ben_id = make_home(self.ann, "Ann"), make_home(self.ben, "Ben")
        self.ben_up = daemons.up(self.ben, "127.0.0.71")
        self.ann_up = daemons.up(self.ann, "127.0.0.72", self.ben_up.address)
        befriend(self.ann, self.ben)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    daemons = Daemons()
    try:
        yield Pair(tmp_path_factory.mktemp("chat"), daemons)  # short: socket paths
    finally:
        daemons.cleanup()


def no_passphrase() -> str | None:
    raise AssertionError("the chat asked for a passphrase: it meant to start a daemon")


async def until(pilot: Pilot[Any], check: Callable[[], Any], what: str) -> Any:
    """Poll `check` between frames of the app until it is truthy; fail after WAIT s."""
    deadline = time.monotonic() + WAIT
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT} s waiting for {what}")
        await pilot.pause(0.05)


async def type_text(pilot: Pilot[Any], text: str) -> None:
    await pilot.press(*("space" if char == " " else char for char in text))


def plain(widget: Static) -> str:
    content = widget.content
    return content.plain if isinstance(content, Text) else str(content)


def line_with(app: ChatApp, text: str) -> MessageLine | None:
    for line in app.query(MessageLine):
        if line.row.body.decode() == text:
            return line
    return None


async def with_mark(pilot: Pilot[Any], app: ChatApp, text: str, status: str) -> MessageLine:
    """The line of a message you sent, once it shows `status`."""

    def marked() -> MessageLine | None:
        line = line_with(app, text)
        return line if line is not None and line.row.status == status else None

    found: MessageLine = await until(pilot, marked, f"the {status} mark on {text!r}")
    return found


def unread(home: Path) -> dict[str, int]:
    with vault.open_store(home) as store:
        return store.unread_counts()


async def open_app(pair: Pair, open_with: str | None) -> ChatApp:
    link = await find_or_start(pair.ann, [], no_passphrase)
    assert not link.started_here
    return ChatApp(pair.ann, link, open_with=open_with)


# -- the app against two daemons ---------------------------------------------------------


async def test_typed_message_is_delivered_to_the_other_home(pair: Pair) -> None:
    app = await open_app(pair, pair.ben_id)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.ready, "the chat to load")
        assert app.current == pair.ben_id
        assert "Chat with ben" in plain(app.query_one("#chat-title", Static))
        compose = app.query_one("#compose", Input)
        assert app.focused is compose
        await until(pilot, lambda: app.state.peers >= 1, "ann's node to know ben's")
        assert "CONNECTED: " in plain(app.query_one("#status", Static))

        await type_text(pilot, "hello ben, are you there?")
        await pilot.press("enter")
        assert compose.value == ""
        await until(pilot, lambda: "hello ben, are you there?" in texts(pair.ben), "delivery")
        line = await with_mark(pilot, app, "hello ben, are you there?", "delivered")
        assert "● delivered" in plain(line)
        assert plain(line).startswith("You ")
        assert len(app.query(MessageLine)) == len(texts(pair.ann, "out")) + len(texts(pair.ann))


async def test_message_from_the_other_side_appears_live(pair: Pair) -> None:
    cat_id = Identity.generate().id
    add_contact(pair.ann, "cat", cat_id)
    app = await open_app(pair, pair.ben_id)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.ready, "the chat to load")
        async with await _ben_client(pair) as ben:
            await ben.request("send", to="ann", text="hi ann, from ben", ttl=None)
            line = await until(pilot, lambda: line_with(app, "hi ann, from ben"), "the message")
            assert plain(line).startswith("ben ") and "hi ann, from ben" in plain(line)
            await until(pilot, lambda: pair.ben_id not in unread(pair.ann), "it marked read")

            # Another conversation is open: the message waits with an unread count.
            await app.open_conversation(cat_id)
            await ben.request("send", to="ann", text="did you see this?", ttl=None)
            await until(pilot, lambda: "ben  1 new" in _listed(app), "ben's unread count")
            assert _badge(app, "ben") == 1
            assert line_with(app, "did you see this?") is None

        # The keyboard way: Shift+Tab to the contacts, up to ben, Enter.
        contacts = app.query_one("#contacts", ListView)
        assert isinstance(app.focused, Input)
        await pilot.press("shift+tab")
        await until(pilot, lambda: app.focused is contacts, "the contact list to have focus")
        assert _highlighted(app) == "cat"
        await pilot.press("up")
        await until(pilot, lambda: _highlighted(app) == "ben", "ben to be highlighted")
        await pilot.press("enter")
        await until(pilot, lambda: app.current == pair.ben_id, "ben's conversation")
        assert line_with(app, "did you see this?") is not None
        await until(pilot, lambda: pair.ben_id not in unread(pair.ann), "it marked read")
        assert "ben" in _listed(app)  # no count left


async def _ben_client(pair: Pair) -> ControlClient:
    client = await ControlClient.connect(pair.ben)
    assert client is not None
    return client


def _listed(app: ChatApp) -> list[str]:
    """The lines of the contact list, as shown."""
    items = app.query_one("#contacts", ListView).query(ContactItem)
    return [str(label.render()) for item in items for label in item.query(Label)]


def _highlighted(app: ChatApp) -> str | None:
    item = app.query_one("#contacts", ListView).highlighted_child
    return item.entry.label if isinstance(item, ContactItem) else None


def _badge(app: ChatApp, label: str) -> int:
    return next(e.unread for e in app.entries if e.label == label)


async def test_pasting_an_id_with_a_typo_shows_the_error_and_adds_nothing(pair: Pair) -> None:
    dan_id = Identity.generate().id
    typo = dan_id[:30] + ("a" if dan_id[30] != "a" else "b") + dan_id[31:]
    app = await open_app(pair, None)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.ready, "the chat to load")
        with vault.open_store(pair.ann) as store:
            before = store.list_contacts()
        await pilot.press("ctrl+n")
        dialog = await until(
            pilot, lambda: isinstance(app.screen, AddContactScreen) and app.screen, "the dialog"
        )
        await type_text(pilot, "dan")
        await pilot.press("enter")  # on to the ID field
        id_field = dialog.query_one("#peer-id", Input)
        assert dialog.focused is id_field
        id_field.post_message(events.Paste(typo))
        check = dialog.query_one("#id-check", Static)
        await until(pilot, lambda: "typo" in plain(check), "the typo message")
        assert plain(check).startswith("✗ This ID has a typo")
        assert id_field.has_class("-invalid")
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is dialog  # still open, still saying what is wrong
        assert "typo" in plain(check)
        with vault.open_store(pair.ann) as store:
            assert store.list_contacts() == before

        id_field.value = ""
        id_field.post_message(events.Paste(dan_id))
        await until(pilot, lambda: "correct" in plain(check), "the ID to be accepted")
        await pilot.press("enter")
        await until(pilot, lambda: app.current == dan_id, "dan's conversation to open")
        with vault.open_store(pair.ann) as store:
            added = store.get_contact("dan")
        assert added is not None and added.peer_id == dan_id


async def test_my_id_shows_qr_and_fingerprint(pair: Pair) -> None:
    app = await open_app(pair, pair.ben_id)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.ready, "the chat to load")
        await pilot.press("ctrl+o")
        screen = await until(pilot, lambda: isinstance(app.screen, MyIdScreen) and app.screen, "")
        assert plain(screen.query_one("#own-id", Static)) == pair.ann_id
        with vault.open_store(pair.ann) as store:
            fingerprint = Identity.from_bytes(store.get_identity_blob() or b"").public.fingerprint
        assert plain(screen.query_one("#fingerprint", Static)).split() == fingerprint.split()
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, MyIdScreen), "the dialog to close")


async def test_disappearing_message_leaves_the_screen(pair: Pair) -> None:
    app = await open_app(pair, pair.ben_id)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.ready, "the chat to load")
        client = await ControlClient.connect(pair.ann)  # sent from elsewhere, e.g. `mesh send`
        assert client is not None
        async with client:
            # Long enough to be shown first even on a loaded machine (a 1 s TTL could
            # expire before the screen ever had it); the expiry sweep runs every second.
            await client.request("send", to="ben", text="gone in a moment", ttl=DISAPPEAR_TTL)
        await until(pilot, lambda: line_with(app, "gone in a moment"), "the message to show")
        await until(pilot, lambda: line_with(app, "gone in a moment") is None, "it to expire")
        assert "gone in a moment" not in texts(pair.ann, "out")


async def test_a_daemon_that_is_gone_shows_a_stopped_node(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    home = tmp_path_factory.mktemp("gone") / "home"
    make_home(home, "Gone")
    app = ChatApp(home, DaemonLink(home))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.ready, "the chat to load")
        assert app.state == NodeState(running=False)
        assert "YOUR NODE HAS STOPPED" in plain(app.query_one("#status", Static))
        assert app.query_one("#status", Static).has_class("stopped")
        await pilot.press("ctrl+n")  # nothing to add a contact with: no dialog
        assert not isinstance(app.screen, AddContactScreen)


# -- starting and stopping the daemon ----------------------------------------------------


async def quit_when_ready(pilot: Pilot[Any], seen: dict[str, Any]) -> None:
    app = pilot.app
    try:
        assert isinstance(app, ChatApp)
        await until(pilot, lambda: app.ready, "the chat to load")
        seen["state"] = app.state
        seen["status"] = plain(app.query_one("#status", Static))
    finally:
        await pilot.press("ctrl+q")


async def test_chat_starts_a_node_and_stops_it_on_quit(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    eve = tmp_path_factory.mktemp("eve") / "home"
    make_home(eve, "Eve")
    seen: dict[str, Any] = {}
    options = ChatOptions(up_args=["--host", "127.0.0.73", "--no-mdns"])
    outcome = await run_chat(eve, options, lambda: None, lambda p: quit_when_ready(p, seen))
    assert outcome.started_here and outcome.stopped and outcome.pid is not None
    assert seen["state"] == NodeState(running=True, peers=0, queued=0)
    assert "NOT CONNECTED" in seen["status"]
    assert not (eve / "control.sock").exists()
    HomeLock.acquire(eve).release()  # the daemon is gone: its lock is free


async def test_chat_leaves_a_daemon_it_found_running(pair: Pair) -> None:
    seen: dict[str, Any] = {}
    options = ChatOptions(peers=[pair.ben_up.address])
    outcome = await run_chat(pair.ann, options, no_passphrase, lambda p: quit_when_ready(p, seen))
    assert not outcome.started_here and not outcome.stopped
    assert seen["state"].running
    client = await ControlClient.connect(pair.ann)
    assert client is not None
    async with client:
        assert (await client.request("status"))["id"] == pair.ann_id


def test_cli_refuses_bad_input_before_starting_anything(tmp_path: Path) -> None:
    runner = CliRunner()
    empty = tmp_path / "empty"
    result = runner.invoke(cli, ["--home", str(empty), "chat"])
    assert result.exit_code == 1 and "no identity" in result.output
    assert not empty.exists()
    home = tmp_path / "h"
    make_home(home, "H")
    result = runner.invoke(cli, ["--home", str(home), "chat", "nobody"])
    assert result.exit_code == 1 and "no contact named 'nobody'" in result.output
    result = runner.invoke(cli, ["--home", str(home), "chat", "--peer", "nowhere"])
    assert result.exit_code == 2
    assert not (home / "control.sock").exists()


# -- what is shown (pure) ----------------------------------------------------------------


def _row(direction: Direction, status: str, body: str = "hi") -> MessageRow:
    return MessageRow(
        b"\x01" * 16, direction, "meshx", "text", body.encode(), 1e9, 2e9, status, None, True, None
    )


@pytest.mark.parametrize(
    ("status", "shown"),
    [
        ("queued", "○ waiting to be sent"),
        ("stored", "◐ sent, waiting for them"),
        ("delivered", "● delivered"),
        ("failed", "✗ not sent"),
    ],
)
def test_each_status_has_its_mark(status: str, shown: str) -> None:
    text = message_text(_row("out", status, "[b]not markup[/b]"), "ben", 1e9).plain
    assert text.startswith("You ") and shown in text
    assert text.endswith("\n[b]not markup[/b]")  # text is shown as typed, never as markup
    assert shown not in message_text(_row("in", "received"), "ben", 1e9).plain


def test_status_line_states() -> None:
    offline, kind = status_line(NodeState(True, 0, 2))
    assert kind == "offline" and "NOT CONNECTED" in offline.plain
    assert "2 messages waiting" in offline.plain
    online, kind = status_line(NodeState(True, 1, 0))
    assert kind == "online" and "1 device found" in online.plain
    assert "Nothing waiting" in online.plain
    stopped, kind = status_line(NodeState(running=False))
    assert kind == "stopped" and "STOPPED" in stopped.plain


def test_contact_entries_keep_unknown_senders() -> None:
    contacts = [Contact("ben", "meshben", None, 0.0)]
    entries = contact_entries(contacts, {"meshben": 2, "meshstranger": 1}, ["meshstranger"] * 2)
    assert [(e.label, e.unread, e.known) for e in entries] == [
        ("ben", 2, True),
        ("Unknown meshstranger…", 1, False),
    ]


def test_format_time() -> None:
    now = time.mktime((2024, 6, 3, 15, 0, 0, 0, 0, -1))
    assert format_time(now - 3600, now) == "14:00"
    assert format_time(now - 2 * 86400, now) == "1 Jun 15:00"


def test_qr_text_draws_the_segno_matrix() -> None:
    peer_id = Identity.generate().id
    code = segno.make(peer_id.upper(), error="m")
    matrix = [[bool(m) for m in row] for row in code.matrix_iter(border=QR_BORDER)]
    top = {"█": True, "▀": True, "▄": False, " ": False}
    bottom = {"█": True, "▀": False, "▄": True, " ": False}
    redrawn: list[list[bool]] = []
    for line in qr_text(peer_id).plain.split("\n"):
        redrawn += [[top[c] for c in line], [bottom[c] for c in line]]
    assert redrawn[: len(matrix)] == matrix
    assert all(not dark for row in redrawn[len(matrix) :] for dark in row)  # padding row
    assert code.mode == "alphanumeric"  # upper case: the compact mode


def test_id_feedback_in_plain_words() -> None:
    me, other = Identity.generate().id, Identity.generate().id
    assert id_feedback("  ", me)[0] is None
    assert "starts with" in id_feedback("", me)[1].plain
    short, text = id_feedback(other[:40], me)
    assert short is None and "too short" in text.plain
    assert id_feedback(me, me)[1].plain.startswith("✗ This is your own ID")
    public, text = id_feedback(other.upper() + " ", me)
    assert public is not None and public.id == other and "correct" in text.plain


async def test_wipe_shortcut_asks_then_destroys_the_home(pair: Pair) -> None:
    app = await open_app(pair, None)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.ready, "the chat to load")
        await pilot.press("ctrl+x")
        await pilot.press("enter")  # the focused button is Cancel
        await pilot.pause()
        assert (pair.ann / "mesh.key").exists() and not app.wiped
        await pilot.press("ctrl+x")
        await pilot.click("#wipe")
        await until(pilot, lambda: app.wiped, "the wipe")
    assert list(pair.ann.iterdir()) == []
