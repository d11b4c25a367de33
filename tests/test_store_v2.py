"""Schema version 2: verified contacts, read-receipt opt-in, last heard, and the stubs of
outgoing messages that expired undelivered. A home made by schema 1 opens and migrates."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mesh import store as store_module
from mesh.store import EXPIRED_KEEP, MIGRATIONS, Store

NOW = 1_700_000_000.0
KEY = b"k" * 32


def mid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def test_a_schema_1_home_opens_and_migrates(tmp_path: Path) -> None:
    path = tmp_path / "mesh.db"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0] + "\nPRAGMA user_version = 1;")
    conn.execute("INSERT INTO contacts VALUES ('bob', 'id-bob', 60, ?)", (NOW,))
    conn.execute(
        "INSERT INTO messages (msg_id, direction, peer_id, kind, body, sent_at, expires_at,"
        " status) VALUES (?, 'out', 'id-bob', 'text', x'6869', ?, ?, 'stored')",
        (mid(1), NOW, NOW + 10),
    )
    conn.commit()
    conn.close()
    with Store(path) as store:
        assert int(store._one("PRAGMA user_version")[0]) == len(MIGRATIONS)
        bob = store.get_contact("bob")
        assert bob is not None and bob.ttl == 60
        assert not bob.verified and not bob.read_receipts
        assert store.get_message(mid(1), "out") is not None
        assert store.set_contact_flags("bob", verified_at=NOW + 1, read_receipts=True)
    with Store(path) as store:  # and a second open changes nothing
        bob = store.get_contact("bob")
        assert bob is not None and bob.verified_at == NOW + 1 and bob.read_receipts


def test_undelivered_messages_expire_to_stubs(tmp_path: Path) -> None:
    with Store(tmp_path / "mesh.db") as store:
        store.queue_outgoing(mid(1), "a", "text", b"never out", NOW, NOW + 10, (KEY, b"r1", 1))
        store.queue_outgoing(mid(2), "a", "text", b"stored only", NOW, NOW + 10, (KEY, b"r2", 1))
        store.set_message_status(mid(2), "out", "stored", 3)
        store.outbox_remove(mid(2))
        store.queue_outgoing(mid(3), "a", "text", b"arrived", NOW, NOW + 10, (KEY, b"r3", 1))
        store.set_message_status(mid(3), "out", "delivered")
        assert store.delete_expired_messages(NOW + 10) == [mid(3)]  # delivered: gone
        rows = {m.msg_id: m for m in store.list_messages(direction="out")}
        assert set(rows) == {mid(1), mid(2)}
        assert rows[mid(1)].status == "failed" and rows[mid(2)].status == "expired"
        assert all(r.body == b"" for r in rows.values())  # the text is wiped
        assert store.outbox_pending() == []
        assert store.delete_expired_messages(NOW + 10 + EXPIRED_KEEP - 1) == []
        gone = store.delete_expired_messages(NOW + 10 + EXPIRED_KEEP)
        assert sorted(gone) == [mid(1), mid(2)]


def test_read_statuses_only_move_forward(tmp_path: Path) -> None:
    with Store(tmp_path / "mesh.db") as store:
        store.queue_outgoing(mid(1), "a", "text", b"x", NOW, NOW + 99, (KEY, b"r1", 1))
        assert store.set_message_status(mid(1), "out", "delivered")
        assert store.set_message_status(mid(1), "out", "read")
        assert not store.set_message_status(mid(1), "out", "delivered")
        assert store.get_message(mid(1), "out").status == "read"  # type: ignore[union-attr]


def test_mark_read_ids_and_last_heard(tmp_path: Path) -> None:
    with Store(tmp_path / "mesh.db") as store:
        for n in (1, 2):
            store.add_message(mid(n), "in", "a", "text", b"x", NOW, NOW + 99, "received")
        store.add_message(mid(3), "in", "b", "text", b"x", NOW, NOW + 99, "received")
        assert sorted(store.mark_read_ids("a")) == [mid(1), mid(2)]
        assert store.mark_read_ids("a") == []
        assert store.unread_counts() == {"b": 1}
        store.note_heard("a", NOW)
        store.note_heard("a", NOW - 5)  # an older one does not move it back
        assert store.last_heard() == {"a": NOW}
        assert {"expired", "failed", "read"} <= store_module.STATUSES
