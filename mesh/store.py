"""The local SQLite store: identity, settings, contacts, messages and outbox here; the
other tables in groups of their own, on the same connection: `store.keys` (our keyring
and prekeys, contacts' agreements: mesh/store_keys.py), `store.strangers` (requests and
blocks), `store.held` (records held for others, tombstones: mesh/store_held.py) and
`store.peers` (the peer cache).

One connection per `Store`, no threads: calls are short and run inline on the event loop,
so hundreds of in-memory test peers stay cheap. Every mutating method commits before it
returns; every `sqlite3.Error` becomes a `StoreError` naming the file.

Durability: on disk the database uses WAL with ``synchronous=FULL``, so a message the
user sent or received is fsynced before anything acknowledges it (the UI, a receipt, the
delete of the mailbox copy in the DHT). Cache-like writes (held records, tombstones, peer
cache) use ``synchronous=NORMAL``: they survive a process crash, a power cut may lose the
last few (the DHT republishes, peers are rediscovered), and a DHT peer under a burst does
not pay one fsync per record. Status changes and outbox bookkeeping (attempts, removal
after a store) are NORMAL too: a power cut can only roll them back to an earlier state
(a message shown queued again and re-sent, which the recipient deduplicates by id). The
next FULL commit makes them durable too (the WAL is append-only, replayed in order).
``secure_delete`` overwrites expired (disappearing) messages.

Schema: ``PRAGMA user_version`` counts the applied `MIGRATIONS`; each one runs in one
transaction with its version bump. A database from a newer release is refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from mesh.envelope import KindName
from mesh.errors import IdentityExistsError, LocalError, StoreError
from mesh.store_db import (
    BUSY_TIMEOUT,
    ErrorGuard,
    Sql,
    connect_sqlcipher,
    create_private_file,
    split_statements,
)
from mesh.store_groups import GroupTables
from mesh.store_held import HeldTables, PeerCache
from mesh.store_keys import KeyTables, StrangerTables
from mesh.store_rows import (
    CONTACT_COLUMNS,
    DIRECTIONS,
    EXPIRE_DELETE,
    EXPIRE_STEPS,
    EXPIRED_KEEP,
    INSERT_CONTACT_OUTBOX,
    INSERT_GROUP_MESSAGE,
    INSERT_MESSAGE,
    INSERT_OUTBOX,
    MESSAGE_COLUMNS,
    MIGRATIONS,
    OUTBOX_COLUMNS,
    SET_STATUS_SQL,
    STATUSES,
    Contact,
    Direction,
    GroupOutboxItem,
    HeldRecord,
    MessageRow,
    MessageStatus,
    OutboxItem,
    PeerRow,
    Request,
    StatusName,
    Tombstone,
    check_direction,
    check_kind,
    check_status,
    contact_from_row,
    contact_name,
    message_from_row,
)
from mesh.walsync import WalSync

__all__ = [
    "DIRECTIONS",
    "EXPIRED_KEEP",
    "MIGRATIONS",
    "STATUSES",
    "Contact",
    "Direction",
    "HeldRecord",
    "MessageRow",
    "MessageStatus",
    "OutboxItem",
    "PeerRow",
    "Request",
    "StatusName",
    "Store",
    "Tombstone",
]

log = logging.getLogger(__name__)

PEER_CACHE_LIMIT = 1000
OUTBOX_EMPTY_TRUST = 60.0  # seconds an empty outbox is believed without a query


class Store:
    """The local SQLite store. ``path=None`` keeps everything in memory; with ``key``
    the file is a SQLCipher database (see mesh/vault.py, which owns the key)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        peer_cache_limit: int = PEER_CACHE_LIMIT,
        key: bytes | None = None,
    ) -> None:
        disk_path = None if path is None else os.fspath(path)
        self.path: str | None = None if disk_path == ":memory:" else disk_path
        self._guard = ErrorGuard(self.path or ":memory:")
        self._outbox_empty_at: float | None = None  # see outbox_pending
        if self.path is not None:
            create_private_file(self.path)
        self.encrypted = key is not None and self.path is not None
        self._walsync = WalSync(self.path) if self.encrypted and self.path else None
        with self._guard:
            if key is not None and self.path is not None:
                self._conn = connect_sqlcipher(self.path, key)
            else:
                self._conn = sqlite3.connect(
                    self.path or ":memory:",
                    isolation_level=None,
                    timeout=BUSY_TIMEOUT,
                    cached_statements=32,  # we use ~30 statements; the default keeps 128
                )
        try:
            self._open()
        except BaseException:
            self._conn.close()
            raise
        sql = Sql(self._execute, self._one, self._all, self._transaction, self._relaxed)
        self.keys = KeyTables(sql)  # our keyring and prekeys, contacts' agreements
        self.strangers = StrangerTables(sql)  # requests and blocks
        self.held = HeldTables(sql)  # records held for others, tombstones
        self.peers = PeerCache(sql, peer_cache_limit)
        self.groups = GroupTables(sql)  # groups we are in, their changes and keys

    def _open(self) -> None:
        version = int(self._one("PRAGMA user_version")[0])  # fails here on a non-database
        if version > len(MIGRATIONS):
            raise StoreError(
                f"the local store at {self._guard.where} has schema version {version}, newer "
                f"than this mesh-messenger understands ({len(MIGRATIONS)}); upgrade mesh-messenger"
            )
        self._configure()
        for number in range(version + 1, len(MIGRATIONS) + 1):
            self._apply_migration(number)

    def _configure(self) -> None:
        with self._guard:
            self._conn.execute("PRAGMA foreign_keys = ON")
            # Small pages for a small database: an empty in-memory store drops from ~172 KiB
            # to ~100 KiB (hundreds of peers run in one process). Only a new file takes it.
            if not self.encrypted:  # SQLCipher has cipher_page_size (connect_sqlcipher)
                self._conn.execute("PRAGMA page_size = 1024")
            if self.path is None:
                return
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("store %s: journal mode is %s, not WAL", self.path, mode)
            # FULL; the encrypted store syncs its WAL itself (mesh/walsync.py).
            sync = "NORMAL" if self._walsync is not None else "FULL"
            self._conn.execute(f"PRAGMA synchronous = {sync}")
            self._conn.execute("PRAGMA secure_delete = ON")

    def _apply_migration(self, number: int) -> None:
        with self._transaction() as conn:
            # Another process may have migrated while we waited for the write lock.
            if int(conn.execute("PRAGMA user_version").fetchone()[0]) >= number:
                return
            for statement in split_statements(MIGRATIONS[number - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number:d}")
        log.debug("store %s: migrated to schema version %d", self._guard.where, number)

    # -- plumbing -------------------------------------------------------------------

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        with self._guard:
            cursor = self._conn.execute(sql, params)
            if self._walsync is not None:
                self._walsync.after_write(self._conn.total_changes)
            return cursor

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._guard:
            return self._conn.execute(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._guard:
            return self._conn.execute(sql, params).fetchall()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        with self._guard:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
                if self._walsync is not None:
                    self._walsync.after_write(conn.total_changes)
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise

    @contextlib.contextmanager
    def _relaxed(self) -> Iterator[None]:
        """Commit cache-like writes with synchronous=NORMAL (see module docstring)."""
        if self.path is None:
            yield
            return
        if self._walsync is not None:  # NORMAL already; just skip the WAL sync
            self._walsync.relaxed += 1
            try:
                yield
            finally:
                self._walsync.relaxed -= 1
            return
        self._execute("PRAGMA synchronous = NORMAL")
        try:
            yield
        finally:
            self._execute("PRAGMA synchronous = FULL")

    def close(self) -> None:
        with self._guard:
            self._conn.close()
        if self._walsync is not None:
            self._walsync.close()

    def schema_version(self) -> int:
        return int(self._one("PRAGMA user_version")[0])

    def checkpoint(self) -> None:
        """Move the WAL into the database and truncate it (deleted rows leave the WAL)."""
        if self.path is not None:
            self._execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- identity and settings ------------------------------------------------------

    def get_identity_blob(self) -> bytes | None:
        row = self._one("SELECT blob FROM identity WHERE id = 1")
        return None if row is None else bytes(row[0])

    def set_identity_blob(self, blob: bytes, *, replace: bool = False) -> None:
        on_conflict = "DO UPDATE SET blob = excluded.blob" if replace else "DO NOTHING"
        sql = f"INSERT INTO identity (id, blob) VALUES (1, ?) ON CONFLICT (id) {on_conflict}"
        if self._execute(sql, (blob,)).rowcount == 0:
            raise IdentityExistsError(
                "this home already has an identity; refusing to overwrite it "
                "(use another home, or replace it explicitly)"
            )

    def get_setting(self, key: str, default: str | None = None) -> str | None:
        row = self._one("SELECT value FROM settings WHERE key = ?", (key,))
        return default if row is None else str(row[0])

    def set_setting(self, key: str, value: str) -> None:
        self._execute(
            "INSERT INTO settings (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def delete_setting(self, key: str) -> None:
        self._execute("DELETE FROM settings WHERE key = ?", (key,))

    # -- contacts ---------------------------------------------------------------------

    def add_contact(
        self, name: str, peer_id: str, ttl: int | None = None, *, now: float | None = None
    ) -> Contact:
        contact = Contact(contact_name(name), peer_id, ttl, time.time() if now is None else now)
        cursor = self._execute(
            f"INSERT INTO contacts ({CONTACT_COLUMNS}) VALUES (?, ?, ?, ?, NULL, 0) "
            "ON CONFLICT (name) DO NOTHING",
            (contact.name, contact.peer_id, contact.ttl, contact.added_at),
        )
        if cursor.rowcount == 0:
            raise LocalError(
                f"a contact named {contact.name} already exists; remove it first or pick "
                "another name"
            )
        return contact

    def remove_contact(self, name: str) -> bool:
        cursor = self._execute("DELETE FROM contacts WHERE name = ?", (name.strip(),))
        return cursor.rowcount > 0

    def get_contact(self, name: str) -> Contact | None:
        sql = f"SELECT {CONTACT_COLUMNS} FROM contacts WHERE name = ?"
        row = self._one(sql, (name.strip(),))
        return None if row is None else contact_from_row(row)

    def find_contact_by_id(self, peer_id: str) -> Contact | None:
        """The earliest-added contact with this ID (one ID may be saved under two names)."""
        sql = (
            f"SELECT {CONTACT_COLUMNS} FROM contacts WHERE peer_id = ? "
            "ORDER BY added_at, name LIMIT 1"
        )
        row = self._one(sql, (peer_id,))
        return None if row is None else contact_from_row(row)

    def list_contacts(self) -> list[Contact]:
        sql = f"SELECT {CONTACT_COLUMNS} FROM contacts ORDER BY name COLLATE NOCASE, name"
        return [contact_from_row(row) for row in self._all(sql)]

    # -- messages -----------------------------------------------------------------------

    def add_message(
        self,
        msg_id: bytes,
        direction: Direction,
        peer_id: str,
        kind: KindName,
        body: bytes,
        sent_at: float,
        expires_at: float,
        status: StatusName,
        received_at: float | None = None,
    ) -> bool:
        """Insert a message; False, changing nothing, if the id is known for this direction."""
        check_direction(direction)
        status = check_status(status)
        kind = check_kind(kind)
        row = (msg_id, direction, peer_id, kind, body, sent_at, expires_at, status)
        cursor = self._execute(INSERT_MESSAGE, (*row, received_at, direction == "out"))
        return cursor.rowcount == 1

    def add_messages(self, rows: Iterable[Sequence[Any]]) -> int:
        """Insert many messages in one transaction (a restore): rows of (msg_id, direction,
        peer_id, kind, body, sent_at, expires_at, status, received_at, read); returns how
        many were new."""
        checked = []
        for row in rows:
            check_direction(row[1])
            kind, status = check_kind(row[3]), check_status(row[7])
            checked.append((*row[:3], kind, *row[4:7], status, row[8], bool(row[9])))
        with self._transaction() as conn:
            return int(conn.executemany(INSERT_MESSAGE, checked).rowcount)

    def add_group_message(
        self,
        msg_id: bytes,
        direction: Direction,
        group_peer: str,
        author: str,
        body: bytes,
        sent_at: float,
        expires_at: float,
        now: float,
        outbox: GroupOutboxItem | None = None,
    ) -> bool:
        """A group's text message (received, or sent: then 'queued' with its sealed
        record for the group mailbox in the outbox, atomically); False if known."""
        check_direction(direction)
        status = MessageStatus.QUEUED if direction == "out" else MessageStatus.RECEIVED
        received_at = None if direction == "out" else now
        row = (msg_id, direction, group_peer, "text", body, sent_at, expires_at, status)
        if outbox is not None:
            self._outbox_empty_at = None
        with self._transaction() as conn:
            cursor = conn.execute(
                INSERT_GROUP_MESSAGE, (*row, received_at, direction == "out", author)
            )
            if cursor.rowcount == 0:
                return False
            if outbox is not None:
                conn.execute(INSERT_CONTACT_OUTBOX, outbox.row(msg_id, group_peer, now))
        return True

    def outbox_for_group(
        self, msg_id: bytes, group_peer: str, item: GroupOutboxItem, now: float
    ) -> bool:
        """Queue a record of ours (control, receipt) for a group mailbox."""
        self._outbox_empty_at = None
        cursor = self._execute(INSERT_CONTACT_OUTBOX, item.row(msg_id, group_peer, now))
        return cursor.rowcount == 1

    def queue_outgoing(
        self,
        msg_id: bytes,
        peer_id: str,
        kind: KindName,
        body: bytes,
        sent_at: float,
        expires_at: float,
        sealed: tuple[bytes, bytes, int] | None,
    ) -> bool:
        """Write a 'queued' message and its outbox item (addressed to the contact
        `peer_id`; `sealed` = (mailbox key, record, epoch) if it could be sealed now)
        atomically; False if queued before."""
        kind, queued = check_kind(kind), MessageStatus.QUEUED
        row = (msg_id, "out", peer_id, kind, body, sent_at, expires_at, queued, None, True)
        key, record, epoch = sealed if sealed is not None else (b"", b"", None)
        ttl = round(expires_at - sent_at)
        self._outbox_empty_at = None
        with self._transaction() as conn:
            if conn.execute(INSERT_MESSAGE, row).rowcount == 0:
                return False
            conn.execute(
                INSERT_CONTACT_OUTBOX,
                (msg_id, key, record, sent_at, peer_id, kind, body, ttl, epoch),
            )
        return True

    def get_message(self, msg_id: bytes, direction: Direction) -> MessageRow | None:
        sql = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE msg_id = ? AND direction = ?"
        row = self._one(sql, (msg_id, direction))
        return None if row is None else message_from_row(row)

    def list_messages(
        self,
        peer_id: str | None = None,
        direction: Direction | None = None,
        limit: int | None = None,
    ) -> list[MessageRow]:
        """Messages ordered by sent_at (then arrival); with ``limit``, the newest ones."""
        if direction is not None:
            check_direction(direction)
        filters = (("peer_id", peer_id), ("direction", direction))
        used = {column: value for column, value in filters if value is not None}
        where = " AND ".join(f"{column} = ?" for column in used) or "1"
        sql = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE {where} ORDER BY sent_at DESC, "
        rows = self._all(
            sql + "rowid DESC LIMIT ?", (*used.values(), -1 if limit is None else limit)
        )
        rows.reverse()
        return [message_from_row(row) for row in rows]

    def set_message_status(
        self,
        msg_id: bytes,
        direction: Direction,
        status: StatusName,
        replicas: int | None = None,
    ) -> bool:
        """Move a message forward (or update replicas); False if unknown or backwards."""
        check_direction(direction)
        status = check_status(status)
        with self._relaxed():  # progress, not content: see the module docstring
            cursor = self._execute(SET_STATUS_SQL[status], (status, replicas, msg_id, direction))
        return cursor.rowcount == 1

    def set_message_replicas(self, msg_id: bytes, direction: Direction, replicas: int) -> bool:
        """Record how many replicas took a message, whatever its status is by now."""
        with self._relaxed():
            cursor = self._execute(
                "UPDATE messages SET replicas = ? WHERE msg_id = ? AND direction = ?",
                (replicas, msg_id, direction),
            )
        return cursor.rowcount == 1

    def mark_read(self, peer_id: str) -> int:
        cursor = self._execute(
            "UPDATE messages SET is_read = 1 "
            "WHERE peer_id = ? AND direction = 'in' AND is_read = 0",
            (peer_id,),
        )
        return cursor.rowcount

    def mark_read_ids(self, peer_id: str, only: Sequence[bytes] | None = None) -> list[bytes]:
        """Mark unread texts from `peer_id` read (all, or those of `only`); returns the ids
        that changed."""
        sql = (
            "UPDATE messages SET is_read = 1 WHERE peer_id = ? AND direction = 'in' "
            "AND is_read = 0 AND kind = 'text'"
        )
        with self._transaction() as conn:
            if only is None:
                rows = conn.execute(sql + " RETURNING msg_id", (peer_id,)).fetchall()
            else:
                rows = [
                    row
                    for msg_id in only
                    for row in conn.execute(
                        sql + " AND msg_id = ? RETURNING msg_id", (peer_id, msg_id)
                    ).fetchall()
                ]
        return [bytes(r[0]) for r in rows]

    def set_contact_flags(
        self, name: str, *, verified_at: float | None = None, read_receipts: bool | None = None
    ) -> bool:
        """Mark a contact verified (at `verified_at`) and/or set its read-receipt opt-in."""
        cursor = self._execute(
            "UPDATE contacts SET verified_at = coalesce(?, verified_at), "
            "read_receipts = coalesce(?, read_receipts) WHERE name = ?",
            (verified_at, None if read_receipts is None else int(read_receipts), name.strip()),
        )
        return cursor.rowcount > 0

    def note_heard(self, peer_id: str, now: float) -> None:
        """Remember that something signed by `peer_id` arrived at `now` (for `mesh peers`)."""
        with self._relaxed():
            self._execute(
                "INSERT INTO heard (peer_id, last_heard) VALUES (?, ?) ON CONFLICT (peer_id) "
                "DO UPDATE SET last_heard = max(last_heard, excluded.last_heard)",
                (peer_id, now),
            )

    def last_heard(self) -> dict[str, float]:
        return {str(p): float(t) for p, t in self._all("SELECT peer_id, last_heard FROM heard")}

    def unread_counts(self) -> dict[str, int]:
        sql = (
            "SELECT peer_id, count(*) FROM messages "
            "WHERE direction = 'in' AND is_read = 0 GROUP BY peer_id"
        )
        return {str(peer): int(count) for peer, count in self._all(sql)}

    def delete_expired_messages(self, now: float) -> list[bytes]:
        """Delete messages with expires_at <= now (and their outbox items); returns ids.

        An outgoing message that never got a receipt is not deleted but wiped to a stub
        (empty text) with status "failed" (it was still queued) or "expired" (stored, never
        picked up), listed for EXPIRED_KEEP more so the sender learns it did not arrive."""
        with self._transaction() as conn:
            for sql, params in EXPIRE_STEPS:
                conn.execute(sql, tuple(now if p is None else p for p in params))
            rows = conn.execute(EXPIRE_DELETE, (now, now - EXPIRED_KEEP)).fetchall()
            outgoing = [(msg_id,) for msg_id, direction in rows if direction == "out"]
            conn.executemany("DELETE FROM outbox WHERE msg_id = ?", outgoing)
        if rows:
            self.checkpoint()  # no copy of a disappearing message left in the WAL file
        return [bytes(msg_id) for msg_id, _ in rows]

    def delete_read_before(self, cutoff: float) -> int:
        """Retention: delete read incoming messages received before `cutoff`, and sent
        ones older than it that left the outbox; returns how many."""
        with self._transaction() as conn:
            count = conn.execute(
                "DELETE FROM messages WHERE (direction = 'in' AND is_read = 1 "
                "AND coalesce(received_at, sent_at) < ?) OR (direction = 'out' AND "
                "sent_at < ? AND msg_id NOT IN (SELECT msg_id FROM outbox))",
                (cutoff, cutoff),
            ).rowcount
        if count:
            self.checkpoint()
        return int(count)

    # -- outbox -----------------------------------------------------------------------

    def outbox_add(self, msg_id: bytes, mailbox_key: bytes, record: bytes, now: float) -> bool:
        """Queue a sealed record for the DHT; False if this msg_id is already queued."""
        self._outbox_empty_at = None
        cursor = self._execute(INSERT_OUTBOX, (msg_id, mailbox_key, record, now))
        return cursor.rowcount == 1

    def outbox_pending(self, limit: int | None = None) -> list[OutboxItem]:
        """The queued records, oldest first. An empty outbox is believed for
        OUTBOX_EMPTY_TRUST s unless this Store queues something (only the lock holder
        writes; the retry loop asks every 10 s, a sixth of a 1,000-peer simulation)."""
        empty_at = self._outbox_empty_at
        if empty_at is not None and time.monotonic() - empty_at < OUTBOX_EMPTY_TRUST:
            return []
        sql = f"SELECT {OUTBOX_COLUMNS} FROM outbox ORDER BY created_at, rowid LIMIT ?"
        items = [OutboxItem(*row) for row in self._all(sql, (-1 if limit is None else limit,))]
        self._outbox_empty_at = time.monotonic() if not items else None
        return items

    def outbox_mark_attempt(self, msg_id: bytes, now: float) -> None:
        with self._relaxed():
            self._execute(
                "UPDATE outbox SET attempts = attempts + 1, last_attempt_at = ? WHERE msg_id = ?",
                (now, msg_id),
            )

    def outbox_remove(self, msg_id: bytes) -> bool:
        with self._relaxed():
            return self._execute("DELETE FROM outbox WHERE msg_id = ?", (msg_id,)).rowcount > 0

    def outbox_for_contact(
        self,
        msg_id: bytes,
        peer_id: str,
        kind: KindName,
        body: bytes,
        ttl: int,
        sent_at: float,
        sealed: tuple[bytes, bytes, int] | None,
    ) -> bool:
        """Queue something for a contact (a receipt, a bundle): sealed again at delivery;
        `sealed` (mailbox key, record, epoch) if it could be sealed now."""
        key, record, epoch = sealed if sealed is not None else (b"", b"", None)
        self._outbox_empty_at = None
        cursor = self._execute(
            INSERT_CONTACT_OUTBOX,
            (msg_id, key, record, sent_at, peer_id, check_kind(kind), body, ttl, epoch),
        )
        return cursor.rowcount == 1

    def outbox_resealed(self, msg_id: bytes, mailbox_key: bytes, record: bytes, epoch: int) -> None:
        """The item was sealed again for `epoch` (a new day, or the contact's keys came)."""
        with self._relaxed():
            self._execute(
                "UPDATE outbox SET mailbox_key = ?, record = ?, epoch = ? WHERE msg_id = ?",
                (mailbox_key, record, epoch, msg_id),
            )

    def outbox_waiting(self, peer_id: str) -> int:
        """How many outbox items wait for `peer_id` (their keys, or a replica)."""
        row = self._one("SELECT count(*) FROM outbox WHERE peer_id = ?", (peer_id,))
        return int(row[0])

    # -- contacts' receipts switch -----------------------------------------------------

    def receipts_wanted(self, peer_id: str) -> bool:
        """Delivery receipts go to a contact unless every name saved for it turned them off."""
        rows = self._all("SELECT receipts FROM contacts WHERE peer_id = ?", (peer_id,))
        return not rows or any(bool(r[0]) for r in rows)

    def set_receipts(self, name: str, on: bool) -> bool:
        cursor = self._execute(
            "UPDATE contacts SET receipts = ? WHERE name = ?", (int(on), name.strip())
        )
        return cursor.rowcount > 0
