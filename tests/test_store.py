"""Tests for mesh.store: every section, persistence, migrations, damage, durability."""

from __future__ import annotations

import random
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh import store as store_module
from mesh import store_db
from mesh.errors import IdentityExistsError, LocalError, StoreError
from mesh.store import Contact, HeldRecord, PeerRow, Store, Tombstone

NOW = 1_700_000_000.0
LATER = NOW + 3600
KEY = b"k" * 20


def mid(n: int) -> bytes:
    return n.to_bytes(16, "big")


@pytest.fixture
def store() -> Iterator[Store]:
    with Store(None) as s:
        yield s


def add_in(
    s: Store, n: int, peer: str = "alice", sent_at: float = NOW, received_at: float | None = None
) -> bool:
    body = b"hi %d" % n
    return s.add_message(mid(n), "in", peer, "text", body, sent_at, LATER, "received", received_at)


def add_out(s: Store, n: int, status: str = "queued", peer: str = "bob") -> bool:
    return s.add_message(mid(n), "out", peer, "text", b"yo", NOW, LATER, status)


# -- identity and settings ------------------------------------------------------------


def test_identity_blob_is_single_and_protected(store: Store) -> None:
    assert store.get_identity_blob() is None
    store.set_identity_blob(b"first")
    assert store.get_identity_blob() == b"first"
    with pytest.raises(IdentityExistsError, match="already has an identity"):
        store.set_identity_blob(b"second")
    assert store.get_identity_blob() == b"first"
    store.set_identity_blob(b"second", replace=True)
    assert store.get_identity_blob() == b"second"


def test_settings(store: Store) -> None:
    assert store.get_setting("node_id") is None
    assert store.get_setting("node_id", "none") == "none"
    store.set_setting("node_id", "ab" * 20)
    store.set_setting("network", "lan")
    store.set_setting("network", "field")
    assert store.get_setting("node_id") == "ab" * 20
    assert store.get_setting("network") == "field"


# -- contacts ----------------------------------------------------------------------------


def test_contacts_add_get_list_remove(store: Store) -> None:
    added = store.add_contact("  Bob ", "id-bob", ttl=60, now=NOW)
    assert added == Contact("Bob", "id-bob", 60, NOW)
    store.add_contact("alice", "id-alice", now=NOW + 1)
    store.add_contact("Alice", "id-alice2", now=NOW + 2)  # names are case-sensitive
    assert store.get_contact("Bob ") == added
    assert store.get_contact("bob") is None
    assert [c.name for c in store.list_contacts()] == ["Alice", "alice", "Bob"]
    assert store.find_contact_by_id("id-alice") == Contact("alice", "id-alice", None, NOW + 1)
    assert store.find_contact_by_id("nobody") is None
    assert store.remove_contact(" Bob") is True
    assert store.remove_contact("Bob") is False
    assert store.get_contact("Bob") is None


def test_contact_added_at_defaults_to_clock(store: Store) -> None:
    assert store.add_contact("carol", "id-carol").added_at > NOW


def test_duplicate_contact_name_is_a_local_error(store: Store) -> None:
    store.add_contact("bob", "id-1", now=NOW)
    with pytest.raises(LocalError, match="a contact named bob already exists"):
        store.add_contact(" bob ", "id-2", now=NOW)
    assert store.get_contact("bob") == Contact("bob", "id-1", None, NOW)


def test_empty_contact_name_is_refused(store: Store) -> None:
    with pytest.raises(LocalError, match="cannot be empty"):
        store.add_contact("   ", "id-1")


def test_one_id_under_two_names_finds_the_earliest(store: Store) -> None:
    store.add_contact("zed", "id-x", now=NOW)
    store.add_contact("amy", "id-x", now=NOW + 5)
    found = store.find_contact_by_id("id-x")
    assert found is not None and found.name == "zed"


# -- messages ----------------------------------------------------------------------------


def test_add_message_deduplicates_per_direction(store: Store) -> None:
    assert add_in(store, 1, received_at=NOW + 1) is True
    assert store.add_message(mid(1), "in", "eve", "text", b"other", NOW, LATER, "received") is False
    row = store.get_message(mid(1), "in")
    assert row is not None
    assert (row.peer_id, row.body, row.received_at, row.read) == ("alice", b"hi 1", NOW + 1, False)
    assert add_out(store, 1) is True  # same id, other direction
    assert len(store.list_messages()) == 2


def test_get_message_fields(store: Store) -> None:
    add_out(store, 7)
    row = store.get_message(mid(7), "out")
    assert row == store_module.MessageRow(
        mid(7), "out", "bob", "text", b"yo", NOW, LATER, "queued", None, True, None
    )
    assert store.get_message(mid(7), "in") is None


def test_invalid_direction_or_status_is_a_value_error(store: Store) -> None:
    with pytest.raises(ValueError, match="direction"):
        store.add_message(mid(1), "sideways", "a", "text", b"", NOW, LATER, "queued")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="status"):
        store.add_message(mid(1), "out", "a", "text", b"", NOW, LATER, "lost")
    with pytest.raises(ValueError, match="status"):
        store.set_message_status(mid(1), "out", "lost")
    with pytest.raises(ValueError, match="direction"):
        store.list_messages(direction="up")  # type: ignore[arg-type]


def test_list_messages_order_filters_and_limit(store: Store) -> None:
    add_in(store, 1, sent_at=NOW + 2)
    add_in(store, 2, sent_at=NOW)
    add_in(store, 3, sent_at=NOW)  # same sent_at: arrival order decides
    add_in(store, 4, peer="carol", sent_at=NOW + 1)
    add_out(store, 5, peer="alice")
    ids = [m.msg_id for m in store.list_messages()]
    assert ids == [mid(2), mid(3), mid(5), mid(4), mid(1)]
    assert [m.msg_id for m in store.list_messages(peer_id="alice", direction="in")] == [
        mid(2),
        mid(3),
        mid(1),
    ]
    assert [m.msg_id for m in store.list_messages(direction="out")] == [mid(5)]
    assert [m.msg_id for m in store.list_messages(limit=2)] == [mid(4), mid(1)]


def test_status_moves_forward_only(store: Store) -> None:
    add_out(store, 1)
    assert store.set_message_status(mid(1), "out", "stored", replicas=3) is True
    assert store.set_message_status(mid(1), "out", "queued") is False
    assert store.set_message_status(mid(1), "out", "failed") is False
    assert store.set_message_status(mid(1), "out", "stored", replicas=5) is True
    assert store.set_message_status(mid(1), "out", "delivered") is True
    assert store.set_message_status(mid(1), "out", "stored") is False
    row = store.get_message(mid(1), "out")
    assert row is not None and (row.status, row.replicas) == ("delivered", 5)


def test_failed_only_from_queued_and_may_still_be_delivered(store: Store) -> None:
    add_out(store, 1)
    assert store.set_message_status(mid(1), "out", "failed") is True
    assert store.set_message_status(mid(1), "out", "queued") is False
    assert store.set_message_status(mid(1), "out", "delivered", replicas=1) is True
    row = store.get_message(mid(1), "out")
    assert row is not None and (row.status, row.replicas) == ("delivered", 1)


def test_status_of_unknown_message_or_wrong_direction(store: Store) -> None:
    add_out(store, 1)
    assert store.set_message_status(mid(2), "out", "stored") is False
    assert store.set_message_status(mid(1), "in", "stored") is False


def test_mark_read_and_unread_counts(store: Store) -> None:
    add_in(store, 1)
    add_in(store, 2)
    add_in(store, 3, peer="carol")
    add_out(store, 4, peer="alice")
    assert store.unread_counts() == {"alice": 2, "carol": 1}
    assert store.mark_read("alice") == 2
    assert store.mark_read("alice") == 0
    assert store.unread_counts() == {"carol": 1}
    assert all(m.read for m in store.list_messages(peer_id="alice"))


def test_delete_expired_messages(store: Store) -> None:
    store.add_message(mid(1), "in", "a", "text", b"", NOW, NOW + 10, "received")
    store.queue_outgoing(mid(2), "a", "text", b"", NOW, NOW + 10, (KEY, b"rec2", 1))
    store.queue_outgoing(mid(3), "a", "text", b"", NOW, NOW + 99, (KEY, b"rec3", 1))
    assert store.delete_expired_messages(NOW + 9) == []
    # The undelivered outgoing one stays as a "failed" stub (tests/test_store_v2.py).
    assert sorted(store.delete_expired_messages(NOW + 10)) == [mid(1)]
    assert [(m.msg_id, m.status) for m in store.list_messages()] == [
        (mid(2), "failed"),
        (mid(3), "queued"),
    ]
    assert [item.msg_id for item in store.outbox_pending()] == [mid(3)]


# -- outbox and queue_outgoing --------------------------------------------------------


def test_outbox_lifecycle(store: Store) -> None:
    assert store.outbox_add(mid(2), KEY, b"r2", NOW + 1) is True
    assert store.outbox_add(mid(1), KEY, b"r1", NOW) is True
    assert store.outbox_add(mid(1), KEY, b"other", NOW + 5) is False
    pending = store.outbox_pending()
    assert [(i.msg_id, i.record, i.attempts) for i in pending] == [
        (mid(1), b"r1", 0),
        (mid(2), b"r2", 0),
    ]
    store.outbox_mark_attempt(mid(1), NOW + 7)
    store.outbox_mark_attempt(mid(1), NOW + 8)
    first = store.outbox_pending(limit=1)
    assert first == [store_module.OutboxItem(mid(1), KEY, b"r1", 2, NOW, NOW + 8)]
    assert store.outbox_remove(mid(1)) is True
    assert store.outbox_remove(mid(1)) is False
    assert [i.msg_id for i in store.outbox_pending()] == [mid(2)]


def test_queue_outgoing_writes_message_and_outbox(store: Store) -> None:
    assert (
        store.queue_outgoing(mid(1), "bob", "text", b"hi", NOW, LATER, (KEY, b"sealed", 1)) is True
    )
    row = store.get_message(mid(1), "out")
    assert row is not None and row.status == "queued" and row.body == b"hi"
    ttl = round(LATER - NOW)
    item = store_module.OutboxItem(
        mid(1), KEY, b"sealed", 0, NOW, None, "bob", "text", b"hi", ttl, 1
    )
    assert store.outbox_pending() == [item]


def test_queue_outgoing_twice_does_not_duplicate(store: Store) -> None:
    store.queue_outgoing(mid(1), "bob", "text", b"hi", NOW, LATER, (KEY, b"sealed", 1))
    store.outbox_remove(mid(1))  # stored in the DHT meanwhile
    assert (
        store.queue_outgoing(mid(1), "bob", "text", b"hi", NOW, LATER, (KEY, b"sealed", 1)) is False
    )
    assert len(store.list_messages()) == 1
    assert store.outbox_pending() == []


def test_queue_outgoing_is_atomic(store: Store) -> None:
    # record NOT NULL makes the second insert of the transaction fail
    with pytest.raises(StoreError, match="refused a write"):
        store.queue_outgoing(mid(1), "bob", "text", b"hi", NOW, LATER, (KEY, None, 1))  # type: ignore[arg-type]
    assert store.get_message(mid(1), "out") is None
    assert store.outbox_pending() == []
    assert store.queue_outgoing(mid(1), "bob", "text", b"hi", NOW, LATER, (KEY, b"ok", 1)) is True


# -- held records and tombstones --------------------------------------------------------


def test_held_put_load_delete(store: Store) -> None:
    assert store.held.held_put(KEY, mid(1), 100, b"p1") is True
    assert store.held.held_put(KEY, mid(1), 999, b"changed") is False
    assert store.held.held_put(b"j" * 20, mid(1), 200, b"p2") is True
    assert store.held.held_put(KEY, mid(3), 50, b"p3") is True
    assert store.held.held_load(50) == [
        HeldRecord(KEY, mid(1), 100, b"p1"),
        HeldRecord(b"j" * 20, mid(1), 200, b"p2"),
    ]
    assert store.held.held_delete(KEY, [mid(1), mid(9)]) == 1
    assert store.held.held_delete(KEY, []) == 0
    assert [r.key for r in store.held.held_load(0)] == [b"j" * 20, KEY]


def test_held_put_many(store: Store) -> None:
    store.held.held_put(KEY, mid(0), 100, b"p0")
    rows = [(KEY, mid(n), 100 + n, b"p%d" % n) for n in range(5)]
    assert store.held.held_put_many(rows) == 4
    assert store.held.held_put_many(iter([])) == 0
    loaded = store.held.held_load(0)
    assert [r.record_id for r in loaded] == [mid(n) for n in range(5)]
    key, record_id, expires_at, packed = loaded[1]  # plain tuple unpacking works
    assert (key, record_id, expires_at, packed) == (KEY, mid(1), 101, b"p1")


def test_tombstones_and_purge(store: Store) -> None:
    store.held.held_put(KEY, mid(1), 100, b"p1")
    store.held.held_put(KEY, mid(2), 300, b"p2")
    store.held.tombstone_put(KEY, mid(3), 200)
    store.held.tombstone_put(KEY, mid(3), 150)  # never shortened
    store.held.tombstone_put(KEY, mid(4), 100)
    assert store.held.tombstones_load(100) == [Tombstone(KEY, mid(3), 200)]
    assert store.held.held_purge_expired(100) == 2  # one record, one tombstone
    assert store.held.held_purge_expired(100) == 0
    assert [r.record_id for r in store.held.held_load(0)] == [mid(2)]
    assert store.held.tombstones_load(0) == [Tombstone(KEY, mid(3), 200)]
    assert store.held.held_purge_expired(1000) == 2


# -- peer cache --------------------------------------------------------------------------


def test_peer_cache_upsert_recent_forget(store: Store) -> None:
    store.peers.peer_seen(b"a" * 20, "127.0.0.2", 4000, NOW)
    store.peers.peer_seen(b"b" * 20, "127.0.0.3", 4001, NOW + 1)
    store.peers.peer_seen(b"a" * 20, "127.0.0.9", 4009, NOW + 2)
    assert store.peers.peers_recent() == [
        PeerRow(b"a" * 20, "127.0.0.9", 4009, NOW + 2),
        PeerRow(b"b" * 20, "127.0.0.3", 4001, NOW + 1),
    ]
    assert store.peers.peers_recent(limit=1) == [PeerRow(b"a" * 20, "127.0.0.9", 4009, NOW + 2)]
    assert store.peers.peer_forget(b"a" * 20) is True
    assert store.peers.peer_forget(b"a" * 20) is False
    assert [p.node_id for p in store.peers.peers_recent()] == [b"b" * 20]


def test_peer_cache_keeps_the_newest() -> None:
    with Store(None, peer_cache_limit=5) as s:
        for n in range(8):
            s.peers.peer_seen(bytes([n]) * 20, "127.0.0.1", 5000 + n, NOW + n)
        s.peers.peer_seen(bytes([3]) * 20, "127.0.0.1", 5003, NOW + 100)  # update: no eviction
        assert [p.port for p in s.peers.peers_recent(limit=100)] == [5003, 5007, 5006, 5005, 5004]
        s.peers.peer_seen(b"\xff" * 20, "127.0.0.1", 6000, NOW + 50)
        assert [p.port for p in s.peers.peers_recent(limit=100)] == [5003, 6000, 5007, 5006, 5005]


# -- on disk -------------------------------------------------------------------------------


def fill(s: Store) -> None:
    s.set_identity_blob(b"id")
    s.set_setting("network", "lan")
    s.add_contact("bob", "id-bob", 60, now=NOW)
    add_in(s, 1)
    s.queue_outgoing(mid(2), "bob", "text", b"hi", NOW, LATER, (KEY, b"sealed", 1))
    s.held.held_put(KEY, mid(3), 2_000_000_000, b"packed")
    s.held.tombstone_put(KEY, mid(4), 2_000_000_000)
    s.peers.peer_seen(b"n" * 20, "127.0.0.5", 7000, NOW)


def test_everything_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "mesh.db"
    with Store(path) as s:
        fill(s)
    with Store(str(path)) as s:
        assert s.get_identity_blob() == b"id"
        assert s.get_setting("network") == "lan"
        assert s.list_contacts() == [Contact("bob", "id-bob", 60, NOW)]
        assert [m.msg_id for m in s.list_messages()] == [mid(1), mid(2)]
        assert [i.msg_id for i in s.outbox_pending()] == [mid(2)]
        assert s.held.held_load(NOW) == [HeldRecord(KEY, mid(3), 2_000_000_000, b"packed")]
        assert s.held.tombstones_load(NOW) == [Tombstone(KEY, mid(4), 2_000_000_000)]
        assert s.peers.peers_recent() == [PeerRow(b"n" * 20, "127.0.0.5", 7000, NOW)]
        assert add_in(s, 1) is False  # dedup survives a restart


def test_writes_are_visible_to_a_second_connection(tmp_path: Path) -> None:
    path = tmp_path / "mesh.db"
    with Store(path) as writer, Store(path) as reader:
        add_in(writer, 1)
        assert reader.get_message(mid(1), "in") is not None


def test_file_is_private_and_configured(tmp_path: Path) -> None:
    path = tmp_path / "mesh.db"
    with Store(path) as s:
        fill(s)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        wal = tmp_path / "mesh.db-wal"
        assert wal.exists() and stat.S_IMODE(wal.stat().st_mode) == 0o600
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_durability_pragmas(tmp_path: Path) -> None:
    with Store(tmp_path / "mesh.db") as s:
        statements: list[str] = []
        s._conn.set_trace_callback(statements.append)
        pragma = s._conn.execute
        assert pragma("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert pragma("PRAGMA foreign_keys").fetchone()[0] == 1
        assert pragma("PRAGMA secure_delete").fetchone()[0] == 1
        add_in(s, 1)
        assert not any("NORMAL" in sql for sql in statements)
        s.held.held_put(KEY, mid(1), 2_000_000_000, b"p")
        assert statements[-3] == "PRAGMA synchronous = NORMAL"
        assert statements[-2].startswith("INSERT INTO held")
        assert statements[-1] == "PRAGMA synchronous = FULL"
        assert pragma("PRAGMA synchronous").fetchone()[0] == 2


def test_memory_string_means_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with Store(":memory:") as s:
        assert s.path is None
        fill(s)
    assert list(tmp_path.iterdir()) == []


# -- migrations, damage, misuse ----------------------------------------------------------


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def test_version_zero_database_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    sqlite3.connect(path).close()  # an existing, empty database at user_version 0
    assert user_version(path) == 0
    with Store(path) as s:
        fill(s)
    assert user_version(path) == len(store_module.MIGRATIONS)


def test_new_migration_runs_once_on_reopen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "mesh.db"
    Store(path).close()
    extra = """
        CREATE TABLE audit (what TEXT);
        CREATE TRIGGER contact_audit AFTER INSERT ON contacts BEGIN
            INSERT INTO audit VALUES ('added; ' || new.name);
        END;
    """
    monkeypatch.setattr(store_module, "MIGRATIONS", (*store_module.MIGRATIONS, extra))
    with Store(path) as s:
        s.add_contact("bob", "id-bob", now=NOW)
    with Store(path) as s:  # already at the new version: not applied again
        assert s._conn.execute("SELECT what FROM audit").fetchall() == [("added; bob",)]
    assert user_version(path) == len(store_module.MIGRATIONS)


def test_failing_migration_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "mesh.db"
    Store(path).close()
    broken = "CREATE TABLE half (x); INSERT INTO no_such_table VALUES (1);"
    monkeypatch.setattr(store_module, "MIGRATIONS", (*store_module.MIGRATIONS, broken))
    with pytest.raises(StoreError, match="damaged or locked"):
        Store(path)
    assert user_version(path) == len(store_module.MIGRATIONS) - 1
    conn = sqlite3.connect(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert "half" not in tables


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match=r"schema version 99, newer .*upgrade mesh-messenger"):
        Store(path)
    assert path.read_bytes()[18:20] == b"\x01\x01"  # left in rollback-journal mode, untouched


def test_corrupted_file_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "mesh.db"
    path.write_bytes(random.Random(1234).randbytes(8192))
    with pytest.raises(StoreError, match=r"mesh\.db is damaged or locked") as caught:
        Store(path)
    assert not isinstance(caught.value, sqlite3.Error)
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)


def test_unopenable_path_raises_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open the local store"):
        Store(tmp_path / "missing-dir" / "mesh.db")


def test_use_after_close_raises_store_error(tmp_path: Path) -> None:
    s = Store(tmp_path / "mesh.db")
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="cannot be used"):
        s.get_setting("x")


def test_split_statements_keeps_trigger_bodies() -> None:
    script = """
        CREATE TABLE t (x);  -- a comment; with a semicolon
        CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; SELECT 2; END;
    """
    statements = store_db.split_statements(script)
    assert len(statements) == 2
    assert "CREATE TRIGGER" in statements[1]
    assert statements[1].endswith("END;")


def test_kinds_and_statuses_are_the_plain_strings_on_disk(store: Store) -> None:
    from mesh.envelope import MessageKind
    from mesh.store import MessageStatus

    assert add_out(store, 1)
    store.set_message_status(mid(1), "out", MessageStatus.STORED, replicas=3)
    raw = store._conn.execute("SELECT kind, status, typeof(status) FROM messages").fetchall()
    assert [tuple(r) for r in raw] == [("text", "stored", "text")]
    row = store.get_message(mid(1), "out")
    assert row is not None and row.status is MessageStatus.STORED
    assert row.kind is MessageKind.TEXT and row.status == "stored"
    with pytest.raises(ValueError):
        store.add_message(mid(2), "in", "bob", "sticker", b"x", 1.0, 2.0, "received")


def test_an_empty_outbox_is_believed_for_a_while_but_never_hides_own_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(store_module.time, "monotonic", lambda: clock[0])
    db = str(tmp_path / "mesh.db")
    mine, other = Store(db), Store(db)
    try:
        assert mine.outbox_pending() == []
        mine.outbox_add(b"a" * 16, b"k" * 20, b"record", 1.0)  # our own write: seen at once
        assert [i.msg_id for i in mine.outbox_pending()] == [b"a" * 16]
        mine.outbox_remove(b"a" * 16)
        assert mine.outbox_pending() == []
        other.outbox_add(b"b" * 16, b"k" * 20, b"record", 2.0)  # another Store's write
        assert mine.outbox_pending() == []  # believed empty for a while...
        clock[0] += store_module.OUTBOX_EMPTY_TRUST + 1
        assert [i.msg_id for i in mine.outbox_pending()] == [b"b" * 16]  # ...then seen
    finally:
        mine.close()
        other.close()
