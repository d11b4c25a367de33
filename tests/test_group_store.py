"""Issue 17, the store: a home of the previous release (schema 3, encrypted) migrates to
schema 4 (groups) on first open, keeping everything; group tables round-trip."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mesh import home as homes
from mesh import store as store_module
from mesh import vault
from mesh.identity import Identity
from mesh.store import MIGRATIONS
from mesh.store_groups import group_of_peer, group_peer


def test_a_schema_3_home_migrates_to_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "alice"
    bob = Identity.generate().id
    now = time.time()
    with monkeypatch.context() as patch:
        patch.setattr(store_module, "MIGRATIONS", MIGRATIONS[:3])
        homes.init_home(home, "alice", None)
        with vault.open_store(home) as store:
            assert store.schema_version() == 3
            store.add_contact("bob", bob, now=1.0)
            store.add_message(b"i" * 16, "in", bob, "text", b"hi alice", now, now + 60, "received")
    with vault.open_store(home) as store:
        assert store.schema_version() == len(MIGRATIONS) == 4
        [row] = store.list_messages()
        assert (row.body, row.peer_id, row.author) == (b"hi alice", bob, None)
        assert store.groups.all() == []
        gid = bytes(range(16))
        assert store.groups.add(gid, "north gate", 86400, now, b"g" * 32)
        assert not store.groups.add(gid, "north gate", 86400, now, b"g" * 32)
        assert store.groups.add_changes(gid, [(b"c" * 32, b"change")]) == 1
        assert store.groups.add_changes(gid, [(b"c" * 32, b"change")]) == 0
        assert store.groups.add_key(gid, b"c" * 32, b"s" * 32)
        assert store.add_group_message(
            b"g" * 16, "in", group_peer(gid), bob, b"meet at 6", now, now + 60, now
        )
        assert not store.add_group_message(
            b"g" * 16, "in", group_peer(gid), bob, b"meet at 6", now, now + 60, now
        )
    with vault.open_store(home) as store:  # a second open: everything is still there
        [group] = store.groups.all()
        assert (group.name, group.left_at) == ("north gate", None)
        assert store.groups.changes(gid) == [b"change"]
        assert store.groups.keys(gid) == [(b"c" * 32, b"s" * 32)]
        [message] = store.list_messages(group_peer(gid))
        assert (message.author, message.body) == (bob, b"meet at 6")
        assert store.unread_counts()[group_peer(gid)] == 1
        store.groups.set_left(gid, now)
        assert store.groups.get(gid).left_at == now  # type: ignore[union-attr]
        assert store.groups.add(gid, "north gate", 86400, now, b"g" * 32)  # a rejoin
        assert store.groups.get(gid).left_at is None  # type: ignore[union-attr]


def test_group_peers_never_look_like_ids() -> None:
    gid = bytes(range(16))
    assert group_of_peer(group_peer(gid)) == gid
    assert group_of_peer(Identity.generate().id) is None
    assert group_of_peer("group:zz") is None
