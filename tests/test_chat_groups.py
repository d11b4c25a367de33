"""Groups in the chat (issue 17), Textual pilot against three real `mesh up` daemons on
127.0.0.61-63: Ben sees the group beside his contacts with its unread count, each
message under its author's name, the member list (Ctrl+G), and writes to the group from
the chat. Plus the pure view helpers with a hostile group name. Loopback only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_chat import SIZE, line_with, no_passphrase, plain, type_text, unread, until
from test_cli_support import Daemons, befriend, mesh, new_homes, own_id, texts, wait_until
from textual.widgets import Label, Static

from mesh.chat import ChatApp, find_or_start
from mesh.chat.app import ContactItem
from mesh.chat.screens import GroupMembersScreen
from mesh.chat.view import entry_text, group_entries, members_text, message_text
from mesh.envelope import MessageKind
from mesh.group_service import GroupInfo
from mesh.store import Direction, MessageRow, MessageStatus
from mesh.store_groups import group_peer


class Trio:
    """Ann (contacts ben, cat) made "north gate" with Ben and Cat; Cat is no contact of
    Ben's. Ann and Cat have each written to the group."""

    def __init__(self, root: Path, daemons: Daemons) -> None:
        self.ann, self.ben, self.cat = new_homes(root, "ann", "ben", "cat")
        ann_up = daemons.up(self.ann, "127.0.0.61")
        daemons.up(self.ben, "127.0.0.62", ann_up.address)
        daemons.up(self.cat, "127.0.0.63", ann_up.address)
        befriend(self.ann, self.ben)
        befriend(self.ann, self.cat)
        self.ids = {home.name: own_id(home) for home in (self.ann, self.ben, self.cat)}
        created = mesh(self.ann, "group", "create", "north gate", "--json")
        assert created.returncode == 0, created.stderr
        self.group = json.loads(created.stdout)["group"]
        invited = mesh(self.ann, "group", "invite", "north gate", "ben", "cat")
        assert invited.returncode == 0, invited.stderr
        wait_until(lambda: self.joined(self.ben) and self.joined(self.cat), "both to join")
        for home, text in ((self.ann, "meet at 6"), (self.cat, "on my way")):
            sent = mesh(home, "group", "send", "north gate", text)
            assert sent.returncode == 0, sent.stderr
        wait_until(lambda: len(texts(self.ben)) == 2, "both messages at ben")

    def joined(self, home: Path) -> bool:
        done = mesh(home, "group", "list", "--json")
        return any(g["active"] for g in json.loads(done.stdout)["groups"])


@pytest.fixture
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trio]:
    daemons = Daemons()
    try:
        yield Trio(tmp_path_factory.mktemp("cg"), daemons)  # short: socket paths
    finally:
        daemons.cleanup()


def item_for(app: ChatApp, label: str) -> ContactItem | None:
    for item in app.query(ContactItem):
        if item.entry.label == label:
            return item
    return None


async def test_a_group_beside_contacts_with_unread_authors_members_and_sending(
    trio: Trio,
) -> None:
    peer = trio.group["peer"]
    assert unread(trio.ben) == {peer: 2}
    link = await find_or_start(trio.ben, [], no_passphrase)
    app = ChatApp(trio.ben, link, open_with=trio.ids["ann"])
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.ready, "the chat to load")
        group = await until(pilot, lambda: item_for(app, "north gate"), "the group in the list")
        assert group.entry.group and group.entry.unread == 2
        assert plain(group.query_one(Label)) == "# north gate  2 new"
        assert [i.entry.label for i in app.query(ContactItem)] == ["ann", "north gate"]

        await app.open_conversation(peer)
        title = plain(app.query_one("#chat-title", Static))
        assert title.startswith("Group north gate  3 members")
        ann_line = await until(pilot, lambda: line_with(app, "meet at 6"), "ann's message")
        cat_line = await until(pilot, lambda: line_with(app, "on my way"), "cat's message")
        assert plain(ann_line).startswith("ann  ")
        assert plain(cat_line).startswith(trio.ids["cat"][:12] + "…")  # not ben's contact
        await until(pilot, lambda: unread(trio.ben) == {}, "the group to be marked read")
        await until(pilot, lambda: item_for(app, "north gate"), "the list again")
        assert plain(item_for(app, "north gate").query_one(Label)) == "# north gate"  # type: ignore[union-attr]

        await pilot.press("ctrl+g")
        screen = await until(
            pilot,
            lambda: isinstance(app.screen, GroupMembersScreen) and app.screen,
            "the member list",
        )
        shown = plain(screen.query_one("#members", Static))
        assert "ann  admin" in shown and "You  member" in shown
        assert f"{trio.ids['cat'][:12]}… (not in your contacts)  member" in shown
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, GroupMembersScreen), "closing")

        await type_text(pilot, "from the chat")
        await pilot.press("enter")
        mine = await until(pilot, lambda: line_with(app, "from the chat"), "ben's message")
        assert plain(mine).startswith("You  ")
        wait_until(lambda: "from the chat" in texts(trio.ann), "ben's message at ann")
        wait_until(lambda: "from the chat" in texts(trio.cat), "ben's message at cat")
        await until(pilot, lambda: "sent to the group" in plain(mine), "its mark")

        later = mesh(trio.ann, "group", "send", "north gate", "while you look")
        assert later.returncode == 0, later.stderr
        pushed = await until(pilot, lambda: line_with(app, "while you look"), "a pushed one")
        assert plain(pushed).startswith("ann  ")

        # An invitation while the chat is open: the new group joins the list by itself.
        for args in (("create", "south gate"), ("invite", "south gate", "ben")):
            done = mesh(trio.ann, "group", *args)
            assert done.returncode == 0, done.stderr
        await until(pilot, lambda: item_for(app, "south gate"), "the new group in the list")
        assert app.current == peer  # the open conversation stays open


def _row(text: str, peer: str, author: str | None, direction: Direction) -> MessageRow:
    body = text.encode()
    stored = MessageStatus.STORED
    return MessageRow(
        b"\x01" * 16,
        direction,
        peer,
        MessageKind.TEXT,
        body,
        0.0,
        1.0,
        stored,
        0.0,
        False,
        1,
        author,
    )


def test_group_views_keep_a_hostile_name_inert() -> None:
    evil = "gate\x1b[2J\u202e[bold]x"
    info = GroupInfo(b"\xab" * 16, evil, group_peer(b"\xab" * 16), 3, False, False)
    [entry] = group_entries([info], {info.peer: 4})
    shown = entry_text(entry).plain
    assert shown == "# gate\\x1b[2J\\u202e[bold]x (left)  4 new"
    members = members_text(
        [{"id": "meshq", "role": "admin", "contact": "eve\x07", "you": False}]
    ).plain
    assert "eve\\x07  admin" in members and "\x07" not in members
    mine = message_text(_row("hi", info.peer, None, "out"), "You", 0.0).plain
    assert "sent to the group" in mine
