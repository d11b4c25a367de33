"""`mesh group ...` and `mesh send GROUP` end to end (issue 17): three `mesh up` daemons
on 127.0.0.51-53 (no mDNS, joined with --peer); every command a real `mesh` subprocess.
Plus the commands without a daemon (a short-lived node, the store) and how untrusted
group names print. Loopback only; every wait is bounded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cli_support import Daemons, befriend, make_home, mesh, new_homes, own_id, wait_until

from cli import render

SHORT_LIVED = ["--no-mdns", "--host", "127.0.0.1"]


class Trio:
    """Ann (contacts: ben, cat), Ben (contact: ann), Cat (contact: ann), each running."""

    def __init__(self, root: Path, daemons: Daemons) -> None:
        self.ann, self.ben, self.cat = new_homes(root, "ann", "ben", "cat")
        ann_up = daemons.up(self.ann, "127.0.0.51")
        daemons.up(self.ben, "127.0.0.52", ann_up.address)
        daemons.up(self.cat, "127.0.0.53", ann_up.address)
        befriend(self.ann, self.ben)
        befriend(self.ann, self.cat)
        self.ids = {home.name: own_id(home) for home in (self.ann, self.ben, self.cat)}


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trio]:
    daemons = Daemons()
    try:
        yield Trio(tmp_path_factory.mktemp("g"), daemons)  # short: socket paths
    finally:
        daemons.cleanup()


def ok(home: Path, *args: str) -> str:
    done = mesh(home, *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def doc(home: Path, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(ok(home, *args, "--json"))
    return result


def refused(home: Path, *args: str, code: int = 1) -> str:
    """Run a command that must fail: its exit code, one `error:` line, no traceback."""
    done = mesh(home, *args)
    assert done.returncode == code, (args, done.stdout, done.stderr)
    if code == 1:
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr


def group_of(home: Path, name: str) -> dict[str, Any] | None:
    for group in doc(home, "group", "list")["groups"]:
        if group["name"] == name:
            return dict(group)
    return None


def joined(home: Path, name: str) -> bool:
    group = group_of(home, name)
    return group is not None and bool(group["active"])


def group_messages(home: Path, name: str) -> list[dict[str, Any]]:
    return [m for m in doc(home, "inbox")["messages"] if m["group_name"] == name]


def test_a_group_from_the_cli_reaches_both_members_with_the_authors_name(trio: Trio) -> None:
    ann, ben, cat = trio.ann, trio.ben, trio.cat
    created = doc(ann, "group", "create", "north gate")["group"]
    assert (created["name"], created["members"], created["admin"]) == ("north gate", 1, True)
    invited = ok(ann, "group", "invite", "north gate", "ben", trio.ids["cat"])  # name, ID
    assert invited.strip() == "invited 2 contacts to north gate"
    wait_until(lambda: joined(ben, "north gate") and joined(cat, "north gate"), "both to join")
    assert group_of(ben, "north gate") == {**created, "members": 3, "admin": False, "unread": 0}

    sent = mesh(ann, "send", "north gate", "meet at 6")  # no contact of that name: the group
    assert sent.returncode == 0, sent.stderr
    lines = sent.stdout.splitlines()
    assert lines[0].startswith("queued ") and lines[1].startswith("stored on ")
    for member in (ben, cat):
        wait_until(lambda m=member: group_messages(m, "north gate"), f"{member.name}'s inbox")
        [message] = group_messages(member, "north gate")
        assert message["text"] == "meet at 6" and message["group"] == created["id"]
        assert (message["author"], message["author_contact"]) == (trio.ids["ann"], "ann")
        assert message["peer"] == created["peer"] and message["contact"] is None
        assert "[north gate] ann: meet at 6" in ok(member, "inbox")

    reply = mesh(cat, "group", "send", "north gate", "on my way")
    assert reply.returncode == 0, reply.stderr
    wait_until(lambda: len(group_messages(ben, "north gate")) == 2, "cat's reply at ben")
    latest = group_messages(ben, "north gate")[-1]
    assert (latest["text"], latest["author"], latest["author_contact"]) == (
        "on my way",
        trio.ids["cat"],
        None,  # cat is not ben's contact: shown by ID
    )
    assert f"[north gate] {trio.ids['cat'][:16]}...: on my way" in ok(ben, "inbox")
    assert group_of(ben, "north gate")["unread"] == 2  # type: ignore[index]
    wait_until(lambda: len(group_messages(ann, "north gate")) == 1, "cat's reply at ann")

    members = doc(ben, "group", "members", "north gate")["members"]
    assert {(m["id"], m["role"], m["contact"], m["you"]) for m in members} == {
        (trio.ids["ann"], "admin", "ann", False),
        (trio.ids["ben"], "member", None, True),
        (trio.ids["cat"], "member", None, False),
    }
    assert members[0]["role"] == "admin"  # admins first
    plain = ok(ben, "group", "members", "north gate")
    assert "admin   ann" in plain and "you" in plain and "(not a contact)" in plain

    # `mesh inbox GROUP` lists that conversation only; `mesh read GROUP` marks it read.
    only = doc(ben, "inbox", "north gate")["messages"]
    assert [m["text"] for m in only] == ["meet at 6", "on my way"]
    read = doc(ben, "read", "north gate")
    assert [m["text"] for m in read["messages"]] == ["meet at 6", "on my way"]
    assert read["read_receipts"] == 0
    assert group_of(ben, "north gate")["unread"] == 0  # type: ignore[index]
    outbox = doc(ann, "outbox")["messages"]
    assert [(m["text"], m["group_name"]) for m in outbox if m["group"]] == [
        ("meet at 6", "north gate")
    ]


def test_refusals_are_one_line_with_exit_codes_and_change_nothing(
    trio: Trio, tmp_path: Path
) -> None:
    ann, ben, cat = trio.ann, trio.ben, trio.cat
    stranger = make_home(tmp_path / "dan", "dan")  # never runs a node, no one's contact
    ok(ann, "group", "create", "crew")
    assert "not a contact yet" in refused(ann, "group", "invite", "crew", stranger)
    assert "no contact named 'nobody'" in refused(ann, "group", "invite", "crew", "nobody")
    refused(ann, "group", "invite", "crew", code=2)  # no CONTACT: a usage error
    assert doc(ann, "group", "members", "crew")["group"]["members"] == 1  # nobody added
    assert "no group called 'nosuch'" in refused(ann, "group", "members", "nosuch")
    assert "no contact named 'nosuch'" in refused(ann, "send", "nosuch", "hi")

    ok(ann, "group", "invite", "crew", "ben", "cat")
    wait_until(lambda: joined(ben, "crew") and joined(cat, "crew"), "both to join crew")
    assert "only an admin" in refused(ben, "group", "remove", "crew", "ann")
    assert "last admin" in refused(ann, "group", "leave", "crew")
    assert "use leave" in refused(ann, "group", "remove", "crew", trio.ids["ann"])

    assert ok(ben, "group", "leave", "crew").strip() == "left crew"
    assert group_of(ben, "crew")["active"] is False  # type: ignore[index]
    assert "no longer in" in refused(ben, "group", "send", "crew", "still here?")
    assert "no longer in" in refused(ben, "send", "crew", "still here?")
    assert not [m for m in doc(ben, "outbox")["messages"] if m["text"] == "still here?"]
    wait_until(lambda: group_of(ann, "crew")["members"] == 2, "ann to see ben leave")  # type: ignore[index]
    refused(ann, "send", "crew", "x", "--ttl", "60", code=2)

    # A contact's name that is also a group's: the message goes to the contact.
    ok(ann, "group", "create", "ben")
    both = mesh(ann, "send", "ben", "just for you")
    assert both.returncode == 0, both.stderr
    assert "ben is a contact and a group: this goes to the contact" in both.stderr
    wait_until(
        lambda: [m for m in doc(ben, "inbox")["messages"] if m["text"] == "just for you"],
        "the direct message at ben",
    )
    [direct] = [m for m in doc(ben, "inbox")["messages"] if m["text"] == "just for you"]
    assert direct["group"] is None and direct["peer"] == trio.ids["ann"]
    sent_group = mesh(ann, "group", "send", "ben", "to the group named ben")
    assert sent_group.returncode == 0, sent_group.stderr


def test_without_a_daemon_a_short_lived_node_and_the_store_answer(tmp_path: Path) -> None:
    home = tmp_path / "solo"
    make_home(home, "solo")
    created = doc(home, "group", "create", "alone")["group"]
    listed = doc(home, "group", "list")["groups"]
    assert listed == [created] and created["active"] and created["admin"]
    by_id = doc(home, "group", "members", created["id"][:8])
    assert [(m["role"], m["you"]) for m in by_id["members"]] == [("admin", True)]
    queued = mesh(home, "group", "send", "alone", "into the void", *SHORT_LIVED)
    assert queued.returncode == 3, queued.stderr  # no peer: it waits in the outbox
    assert queued.stdout.startswith("queued ") and "stays queued" in queued.stderr
    [out] = [m for m in doc(home, "outbox")["messages"] if m["group"]]
    assert (out["text"], out["status"], out["group_name"]) == ("into the void", "queued", "alone")
    assert "[alone]: into the void" in ok(home, "outbox")
    ok(home, "group", "create", "alone")
    assert "2 groups are called 'alone'" in refused(home, "group", "members", "alone")
    assert ok(home, "group", "leave", created["id"], *SHORT_LIVED).strip() == "left alone"


def test_untrusted_group_and_author_names_print_inert(capsys: pytest.CaptureFixture[str]) -> None:
    evil = "gate\x1b[2J\u202e"
    message = {
        "group": "ab" * 16,
        "group_name": evil,
        "direction": "in",
        "author": "mesh" + "x" * 40,
        "author_contact": "eve\x1b]0;owned\x07",
        "sent_at": 0.0,
        "text": "hi\x9b",
    }
    render.print_inbox([message])
    render.print_groups(
        [{"name": evil, "id": "ab" * 16, "members": 2, "admin": False, "active": True}]
    )
    render.print_members(
        {
            "group": {"name": evil, "id": "ab" * 16, "active": True},
            "members": [{"id": "meshx", "role": "admin", "contact": "eve\x1b[31m", "you": False}],
        }
    )
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out and "\x9b" not in out and "\x07" not in out
    assert "[gate\\x1b[2J\\u202e] eve\\x1b]0;owned\\x07: hi\\x9b" in out
    assert "eve\\x1b[31m" in out
