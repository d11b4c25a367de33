"""`mesh network`: create, join, show, leave; one-line errors; daemons of one private mesh
deliver to each other, and a daemon of the open mesh cannot join them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_support import (
    Daemons,
    befriend,
    make_home,
    mesh,
    new_homes,
    status_of,
    texts,
    wait_until,
)

from mesh.home import HomeLock
from mesh.netkey import NetworkKey


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    started = Daemons()
    yield started
    started.cleanup()


def one_line_error(result: object, *needles: str) -> None:
    assert getattr(result, "returncode", None) == 1, result
    err = getattr(result, "stderr", "")
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err


def test_create_show_join_leave(tmp_path: Path) -> None:
    ann, ben = tmp_path / "ann", tmp_path / "ben"
    make_home(ann, "ann")
    make_home(ben, "ben")
    assert "open mesh" in mesh(ann, "network", "show").stdout
    created = mesh(ann, "network", "create", "north square", "--json")
    assert created.returncode == 0, created.stderr
    doc = json.loads(created.stdout)
    assert doc["network"] == "north square"
    assert NetworkKey.from_invite(doc["invite"]).name == "north square"
    shown = json.loads(mesh(ann, "network", "show", "--json", "--qr").stdout)
    assert shown["invite"] == doc["invite"] and shown["qr"]
    joined = mesh(ben, "network", "join", doc["invite"])
    assert joined.returncode == 0 and "north square" in joined.stdout
    assert json.loads(mesh(ben, "network", "show", "--json").stdout)["invite"] == doc["invite"]
    one_line_error(mesh(ben, "network", "create", "other"), "already in network", "--force")
    assert mesh(ben, "network", "create", "other", "--force").returncode == 0
    assert mesh(ben, "network", "leave").returncode == 0
    one_line_error(mesh(ben, "network", "leave"), "not in a private network")
    assert json.loads(mesh(ben, "network", "show", "--json").stdout) == {"network": None}


@pytest.mark.parametrize(
    ("invite", "needle"),
    [
        ("meshabc", "not a network invite"),
        ("meshnetaaaa", "too short"),
        ("meshnet0000", "never use"),
    ],
)
def test_a_malformed_invite_is_one_line_and_changes_nothing(
    tmp_path: Path, invite: str, needle: str
) -> None:
    make_home(tmp_path, "ann")
    one_line_error(mesh(tmp_path, "network", "join", invite), needle)
    assert "open mesh" in mesh(tmp_path, "network", "show").stdout


def test_a_typo_in_an_invite_is_caught(tmp_path: Path) -> None:
    make_home(tmp_path, "ann")
    invite = NetworkKey.generate("x").invite()
    swapped = invite[:20] + ("a" if invite[20] != "a" else "b") + invite[21:]
    one_line_error(mesh(tmp_path, "network", "join", swapped), "typo")


def test_joining_while_mesh_runs_is_refused(tmp_path: Path) -> None:
    make_home(tmp_path, "ann")
    invite = NetworkKey.generate("x").invite()
    with HomeLock.acquire(tmp_path):  # as `mesh up` holds it
        one_line_error(mesh(tmp_path, "network", "join", invite), "already running")
    assert "open mesh" in mesh(tmp_path, "network", "show").stdout


def test_daemons_of_a_private_mesh_deliver_and_an_open_one_stays_out(
    tmp_path: Path, daemons: Daemons
) -> None:
    ann, ben, cat = new_homes(tmp_path, "ann", "ben", "cat")
    # Ben and cat became contacts on the open mesh, before ben joined ann's.
    ben_up = daemons.up(ben, "127.0.0.32")
    cat_up = daemons.up(cat, "127.0.0.33", ben_up.address)
    befriend(ben, cat)
    assert cat_up.stop() == 0 and ben_up.stop() == 0
    invite = json.loads(mesh(ann, "network", "create", "square", "--json").stdout)["invite"]
    assert mesh(ben, "network", "join", invite).returncode == 0
    ben_up = daemons.up(ben, "127.0.0.32")
    daemons.up(ann, "127.0.0.31", ben_up.address)
    befriend(ann, ben)  # inside the private mesh
    cat_up = daemons.up(cat, "127.0.0.33", ben_up.address)  # the open mesh, told ben's address
    sent = mesh(ann, "send", "ben", "bring water")
    assert sent.returncode == 0, sent.stderr
    wait_until(lambda: "bring water" in texts(ben), "ben to receive the message")
    wait_until(lambda: status_of(ann, "bring water") == "delivered", "ann's receipt")
    assert cat_up.peers() == 0  # ben never answered it: it cannot even tell ben is there
    queued = mesh(cat, "send", "ben", "let me in")
    assert queued.returncode == 3, queued.stderr
    assert "no peer is reachable" in queued.stderr  # not for want of an agreement
