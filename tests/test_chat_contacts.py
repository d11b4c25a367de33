"""The chat's add-contact form starts the key agreement (issue 14): against two real
`mesh up` daemons on 127.0.0.91-92, Ann adds Ben in the chat and sees that Ben has not
added her yet; what she writes waits; Ben adds Ann with `mesh contacts add`; Ann's chat
then shows them as contacts of each other, and what she wrote, and writes, reaches Ben."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_chat import SIZE, line_with, no_passphrase, plain, type_text, until, with_mark
from test_cli_support import Daemons, make_home, mesh, status_of, texts
from textual import events
from textual.widgets import Input, Label, Static

from mesh.chat import ChatApp, find_or_start
from mesh.chat.app import ContactItem
from mesh.chat.screens import AddContactScreen


@pytest.fixture
def homes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("add")  # short: socket paths
    ann, ben = root / "ann", root / "ben"
    make_home(ann, "Ann")
    make_home(ben, "Ben")
    daemons = Daemons()
    try:
        ben_up = daemons.up(ben, "127.0.0.91")
        daemons.up(ann, "127.0.0.92", ben_up.address)
        yield ann, ben
    finally:
        daemons.cleanup()


def shown_for(app: ChatApp, name: str) -> list[str]:
    """The lines of `name` in the contact list."""
    for item in app.query(ContactItem):
        if item.entry.label == name:
            return [str(label.render()) for label in item.query(Label)]
    return []


def own_id(home: Path) -> str:
    done = mesh(home, "id")
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[0]


async def test_adding_in_the_chat_waits_for_them_then_messages_flow(
    homes: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ann, ben = homes
    ann_id, ben_id = own_id(ann), own_id(ben)
    link = await find_or_start(ann, [], no_passphrase)
    app = ChatApp(ann, link)
    notices: list[str] = []
    shown = app.notify

    def notify(message: str, **options: Any) -> None:
        notices.append(message)
        shown(message, **options)

    monkeypatch.setattr(app, "notify", notify)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.ready, "the chat to load")
        await until(pilot, lambda: app.state.peers >= 1, "ann's node to know ben's")
        await pilot.press("ctrl+n")
        dialog = await until(
            pilot, lambda: isinstance(app.screen, AddContactScreen) and app.screen, "the dialog"
        )
        await type_text(pilot, "ben")
        await pilot.press("enter")
        dialog.query_one("#peer-id", Input).post_message(events.Paste(ben_id))
        check = dialog.query_one("#id-check", Static)
        await until(pilot, lambda: "correct" in plain(check), "the ID to be accepted")
        await pilot.press("enter")
        await until(pilot, lambda: app.current == ben_id, "ben's conversation to open")

        # One way only: the list and the header say so, and a message waits.
        await until(
            pilot,
            lambda: shown_for(app, "ben") == ["ben", "waiting for ben to add you"],
            "the waiting note in the contact list",
        )
        title = app.query_one("#chat-title", Static)
        assert "Waiting for ben to add you too" in plain(title)
        await until(
            pilot,
            lambda: any(n.startswith("Waiting for ben to add you too") for n in notices),
            "the daemon's answer: not ready yet",
        )
        await type_text(pilot, "written before you added me")
        await pilot.press("enter")
        line = await until(
            pilot, lambda: line_with(app, "written before you added me"), "the message"
        )
        assert line.row.status == "queued"
        assert texts(ben) == []

        # Ben adds Ann: her bundle, posted by her node when the chat added Ben, was there.
        added = mesh(ben, "contacts", "add", "ann", ann_id)
        assert added.returncode == 0, added.stderr
        assert "ann has added you too" in added.stdout
        await until(pilot, lambda: shown_for(app, "ben") == ["ben"], "the waiting note to go")
        await until(pilot, lambda: "Waiting for" not in plain(title), "the header to change")
        assert "ben has added you: you can message each other." in notices
        await until(
            pilot,
            lambda: "written before you added me" in texts(ben),
            "what waited to reach ben",
        )

        await type_text(pilot, "now we are contacts")
        await pilot.press("enter")
        await until(pilot, lambda: "now we are contacts" in texts(ben), "delivery")
        line = await with_mark(pilot, app, "now we are contacts", "delivered")
        assert "● delivered" in plain(line)
    assert status_of(ann, "written before you added me") in ("stored", "delivered")
