"""Issue 14, upgrade: a home made by the previous release (schema 2, encrypted) opens,
keeps its contacts and messages, and moves to the new scheme: every contact gets a
pending agreement, a queued text waits for it, the old fixed mailbox is drained once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from netutil import befriend, bounded, start_network, stop_all, wait_until

from mesh import Node, envelope, vault
from mesh import home as homes
from mesh import store as store_module
from mesh.identity import Identity
from mesh.mailboxes import LEGACY
from mesh.store import MIGRATIONS, MessageStatus


def previous_release_home(
    path: Path, bob: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[Identity, bytes, bytes]:
    """A home as the previous release left it: schema 2, a contact, a message in each
    direction, a queued text and a queued receipt in its outbox (old fixed mailbox)."""
    with monkeypatch.context() as patch:
        patch.setattr(store_module, "MIGRATIONS", MIGRATIONS[:2])
        identity = homes.init_home(path, "alice", None)
        queued, receipt = b"q" * 16, b"r" * 16
        with vault.open_store(path) as store:
            assert store.schema_version() == 2
            store.add_contact("bob", bob, now=1.0)
            now = time.time()
            store.add_message(
                b"i" * 16, "in", bob, "text", b"hi alice", now, now + 3600, "received"
            )
            store.add_message(b"o" * 16, "out", bob, "text", b"hi bob", now, now + 3600, "stored")
            store.add_message(
                queued, "out", bob, "text", b"still queued", now, now + 3600, "queued"
            )
            for mid in (queued, receipt):
                store._execute(
                    "INSERT INTO outbox (msg_id, mailbox_key, record, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (mid, b"k" * 20, b"old sealed record", now),
                )
    return identity, queued, receipt


def test_a_schema_2_home_migrates_to_agreements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bob = Identity.generate().id
    home = tmp_path / "alice"
    _identity, queued, receipt = previous_release_home(home, bob, monkeypatch)
    with vault.open_store(home) as store:
        assert store.schema_version() == len(MIGRATIONS) == 4
        assert [c.name for c in store.list_contacts()] == ["bob"]
        assert {m.body for m in store.list_messages()} == {b"hi alice", b"hi bob", b"still queued"}
        agreement = store.keys.agreement(bob)
        assert agreement is not None and not agreement.ready
        items = store.outbox_pending()
        assert [i.msg_id for i in items] == [queued]  # the old receipt is dropped
        item = items[0]
        assert item.peer_id == bob and item.kind == "text" and item.body == b"still queued"
        assert item.record == b"" and item.ttl == 3600
        assert store.get_setting(LEGACY) == "1"
        assert receipt not in {i.msg_id for i in items}
    with vault.open_store(home) as store:  # a second open changes nothing
        assert store.schema_version() == 4 and len(store.outbox_pending()) == 1


async def test_an_upgraded_home_drains_the_old_mailbox_once_then_talks_the_new_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes = await start_network(6, seed=9, contacts=False)
    try:
        bob = nodes[3]
        home = tmp_path / "alice"
        identity, _queued, _receipt = previous_release_home(home, bob.id, monkeypatch)
        # Bob's previous release had sent a message to Alice's old fixed mailbox.
        _m, record = envelope.seal_message(
            bob.identity, identity.public, "text", "sent before the upgrade", time.time(), 3600
        )
        assert await bounded(bob.dht.put(identity.mailbox_key, [record])) >= 1
        alice = await Node.start(home=home, bootstrap=[nodes[0].address])
        try:
            assert await wait_until(
                lambda: "sent before the upgrade" in {m.text for m in alice.inbox()}, 10
            )
            assert alice.store.get_setting(LEGACY) is None
            await befriend(alice, bob)
            # The queued text waited for Bob's keys and went once they came.
            assert await wait_until(lambda: "still queued" in {m.text for m in bob.inbox()}, 10)
            row = alice.store.get_message(b"q" * 16, "out")
            assert row is not None and row.status in (
                MessageStatus.STORED,
                MessageStatus.DELIVERED,
            )
            # The drained record was deleted (tombstoned on the replicas the delete
            # reached), and the old mailbox is no longer read or listened at.
            storages = [n.dht.replica.storage for n in [*nodes, alice]]
            assert await wait_until(
                lambda: (
                    sum(s.is_tombstoned(identity.mailbox_key, record.id) for s in storages) >= 4
                ),
                10,
            )
            assert identity.mailbox_key not in alice.dht.own_keys
            assert identity.mailbox_key not in alice.dht.listeners
        finally:
            await alice.stop()
    finally:
        await stop_all(nodes)
