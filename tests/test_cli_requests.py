"""Issue 15 in the CLI: `mesh requests` (a separate area, off by default) and terminal
safety: text from a peer never reaches the terminal as escape codes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_cli_support import make_home, mesh

from mesh import vault
from mesh.identity import Identity
from mesh.mailboxes import Mailboxes
from mesh.safe_text import neutralise as visible
from mesh.store import Request, Store

BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
HOSTILE = "\x1b[2J\x1b]0;pwned\x07 \u202eevil\u202c \x9b31m fake \u2066verified\u2069 end"


def forbidden(text: str) -> list[str]:
    """Characters a terminal could obey: C0 (but newline, tab), DEL, C1, bidi controls."""
    return [
        c
        for c in text
        if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F or c in BIDI_CONTROLS
    ]


@given(st.text())
def test_visible_leaves_nothing_a_terminal_obeys(text: str) -> None:
    shown = visible(text)
    assert forbidden(shown) == []
    if not forbidden(text) and not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        assert shown == text  # ordinary text is untouched


def stranger_request(home: Path, text: str) -> str:
    stranger = Identity.generate()
    bundle = Mailboxes(stranger, Store(None)).bundle(time.time(), reply=False)
    with vault.open_store(home) as store:
        now = time.time()
        store.strangers.request_put(
            Request(stranger.id, b"m" * 16, text.encode("utf-8"), bundle, now, now)
        )
    return stranger.id


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "a"
    make_home(path, "alice")
    return path


def test_requests_are_listed_safely_and_json_stays_exact(home: Path) -> None:
    off = mesh(home, "requests")
    assert off.returncode == 0 and "requests are off" in off.stderr
    assert mesh(home, "requests", "on").returncode == 0
    stranger = stranger_request(home, HOSTILE)
    shown = mesh(home, "requests")
    assert shown.returncode == 0, shown.stderr
    assert stranger in shown.stdout
    assert forbidden(shown.stdout) == [] and forbidden(shown.stderr) == []
    assert "\\x1b[2J" in shown.stdout and "\\u202e" in shown.stdout
    doc = json.loads(mesh(home, "requests", "--json").stdout)
    assert doc["on"] is True
    assert [r["text"] for r in doc["requests"]] == [HOSTILE]  # exact, escaped by JSON


def test_accept_makes_a_contact_and_read_shows_the_text_safely(home: Path) -> None:
    stranger = stranger_request(home, HOSTILE)
    accepted = mesh(home, "requests", "accept", stranger, "--name", "eve\x1b[31m")
    assert accepted.returncode == 0, accepted.stderr
    listed = mesh(home, "contacts", "list")
    assert forbidden(listed.stdout) == [] and "eve\\x1b[31m" in listed.stdout
    read = mesh(home, "read", "eve\x1b[31m")
    assert read.returncode == 0, read.stderr
    assert forbidden(read.stdout) == [] and "\\x1b]0;pwned\\x07" in read.stdout
    with vault.open_store(home) as store:
        assert store.strangers.requests() == []
        agreement = store.keys.agreement(stranger)
        assert agreement is not None and agreement.ready
        assert [i.kind for i in store.outbox_pending()] == ["keys"]  # our bundle, queued


def test_block_delete_and_bad_ids(home: Path) -> None:
    first = stranger_request(home, "hello")
    assert mesh(home, "requests", "block", first).returncode == 0
    with vault.open_store(home) as store:
        assert store.strangers.requests() == [] and store.strangers.is_blocked(first)
    assert mesh(home, "requests", "unblock", first).returncode == 0
    again = mesh(home, "requests", "unblock", first)
    assert again.returncode == 1 and "not blocked" in again.stderr
    second = stranger_request(home, "hi")
    assert mesh(home, "requests", "delete", second).returncode == 0
    missing = mesh(home, "requests", "accept", second)
    assert missing.returncode == 1 and "no request from this ID" in missing.stderr
    typo = mesh(home, "requests", "block", "meshnotanid")
    assert typo.returncode == 1 and len(typo.stderr.strip().splitlines()) == 1


def test_the_chat_shows_a_hostile_message_and_name_as_text() -> None:
    import io

    from rich.console import Console

    from mesh.chat.view import Entry, entry_text, message_text
    from mesh.store import MessageRow, MessageStatus

    row = MessageRow(
        b"m" * 16,
        "in",
        "x",
        "text",
        HOSTILE.encode(),
        0.0,
        1.0,  # type: ignore[arg-type]
        MessageStatus.RECEIVED,
        0.0,
        False,
        None,
    )
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, color_system=None, width=200)
    console.print(message_text(row, "eve\x1b]0;x\x07[bold]", 0.0))
    console.print(entry_text(Entry("mallory\u202e", "x", 1, False)))
    shown = out.getvalue()
    assert forbidden(shown) == []
    assert "\\x1b[2J" in shown and "[bold]" in shown  # markup in a name stays literal


async def test_the_chat_requests_view_shows_accepts_and_blocks(home: Path) -> None:
    """Textual pilot: the requests dialog shows each request inert; Accept makes a
    contact (agreement ready, text in the inbox), Block drops the next one."""
    from textual.app import App
    from textual.widgets import Static

    from mesh.chat.screens import RequestsScreen
    from mesh.home import unlock_identity

    first = stranger_request(home, HOSTILE)
    second = stranger_request(home, "spam")
    store = vault.open_store(home)
    identity = unlock_identity(store, None)
    results: list[list[str]] = []

    class Host(App[None]):
        def on_mount(self) -> None:
            self.push_screen(RequestsScreen(store, identity), results.append)

    try:
        app = Host()
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            shown = str(app.screen.query_one("#requests-list", Static).render())
            assert forbidden(shown) == [] and "\\x1b[2J" in shown
            assert {first, second} <= set(shown.replace("> ", "").split())
            order = [r.peer_id for r in store.strangers.requests()]
            await pilot.click("#accept")
            await pilot.click("#block")
            await pilot.click("#close")
            await pilot.pause()
        assert results == [[order[0]]]
        assert store.strangers.requests() == []
        agreement = store.keys.agreement(order[0])
        assert agreement is not None and agreement.ready
        assert store.strangers.is_blocked(order[1])
        assert [m.peer_id for m in store.list_messages(direction="in")] == [order[0]]
    finally:
        store.close()
