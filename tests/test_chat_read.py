"""The chat (Textual pilot) against two real `mesh up`: the verified mark of a contact,
read state (opening a conversation marks it read) and opt-in read receipts both ways."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_chat import SIZE, no_passphrase, plain, unread, until, with_mark
from test_cli_support import (
    Daemons,
    add_contact,
    befriend,
    make_home,
    mesh,
    status_of,
    texts,
    wait_until,
)
from textual.widgets import Label, Static

from mesh import vault
from mesh.chat import ChatApp, find_or_start
from mesh.chat.app import ContactItem


class Pair:
    """Ann (who verified Ben and sends him read receipts) and Ben, each running."""

    def __init__(self, root: Path, daemons: Daemons) -> None:
        self.ann, self.ben = root / "ann", root / "ben"
        self.ann_id, self.ben_id = make_home(self.ann, "Ann"), make_home(self.ben, "Ben")
        add_contact(self.ann, "cleo", make_home(root / "cleo", "Cleo"))  # never runs a node
        self.ben_up = daemons.up(self.ben, "127.0.0.83")
        self.ann_up = daemons.up(self.ann, "127.0.0.84", self.ben_up.address)
        befriend(self.ann, self.ben)
        with vault.open_store(self.ann) as store:
            store.set_contact_flags("ben", verified_at=1.0, read_receipts=True)
        with vault.open_store(self.ben) as store:
            store.set_contact_flags("ann", read_receipts=True)


@pytest.fixture
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    daemons = Daemons()
    try:
        yield Pair(tmp_path_factory.mktemp("read"), daemons)
    finally:
        daemons.cleanup()


async def test_verified_mark_read_state_and_read_receipts(pair: Pair) -> None:
    assert mesh(pair.ben, "send", "ann", "are you safe?").returncode == 0
    wait_until(lambda: "are you safe?" in texts(pair.ann), "ann to receive")
    assert unread(pair.ann) == {pair.ben_id: 1}
    link = await find_or_start(pair.ann, [], no_passphrase)
    app = ChatApp(pair.ann, link)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.ready, "the chat to load")
        labels = {item.entry.label: plain(item.query_one(Label)) for item in app.query(ContactItem)}
        assert labels["ben"].startswith("ben ✓")
        assert "✓" not in labels["cleo"]

        await app.open_conversation(pair.ben_id)
        title = plain(app.query_one("#chat-title", Static))
        assert "✓ verified" in title
        await until(pilot, lambda: unread(pair.ann) == {}, "the conversation to be read")
        wait_until(lambda: status_of(pair.ben, "are you safe?") == "read", "ann's read receipt")

        await app.open_conversation(None)
        await app.open_conversation(pair.ann_id)  # a stranger: no contact, not verified
        assert "not verified" in plain(app.query_one("#chat-title", Static))

        await app.open_conversation(pair.ben_id)
        assert mesh(pair.ann, "send", "ben", "yes, at home").returncode == 0
        wait_until(lambda: "yes, at home" in texts(pair.ben), "ben to receive")
        assert "yes, at home" in mesh(pair.ben, "read", "ann").stdout  # through ben's daemon
        line = await with_mark(pilot, app, "yes, at home", "read")
        assert "✔ read" in plain(line)
