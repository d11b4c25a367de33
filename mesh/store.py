"""The local SQLite store: identity, settings, contacts, messages, outbox, held DHT
records, tombstones and the peer cache.

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
    connect_sqlcipher,
    create_private_file,
    split_statements,
)
from mesh.store_rows import (
    AGREEMENT_COLUMNS,
    CONTACT_COLUMNS,
    DIRECTIONS,
    EXPIRE_DELETE,
    EXPIRE_STEPS,
    EXPIRED_KEEP,
    HELD_PUT,
    INSERT_CONTACT_OUTBOX,
    INSERT_MESSAGE,
    INSERT_OUTBOX,
    MAX_TTL_EPOCHS,
    MESSAGE_COLUMNS,
    MIGRATIONS,
    OUTBOX_COLUMNS,
    SET_STATUS_SQL,
    STATUSES,
    Agreement,
    Contact,
    Direction,
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
        self._peer_limit = peer_cache_limit
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

    # -- our mailbox keys and each contact's agreement (mesh.keyring, mesh.contacts) -----

    def keyring_get(self, name: str) -> bytes | None:
        row = self._one("SELECT value FROM keyring WHERE name = ?", (name,))
        return None if row is None else bytes(row[0])

    def keyring_put(self, name: str, value: bytes) -> None:
        self._execute(
            "INSERT INTO keyring (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    def prekeys(self) -> list[tuple[int, bytes, bytes]]:
        """Our prekeys still held: (epoch, public, secret), oldest first."""
        sql = "SELECT epoch, public, secret FROM prekeys ORDER BY epoch"
        return [(int(e), bytes(p), bytes(s)) for e, p, s in self._all(sql)]

    def prekeys_add(self, rows: Iterable[tuple[int, bytes, bytes]]) -> None:
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO prekeys (epoch, public, secret) VALUES (?, ?, ?) "
                "ON CONFLICT (epoch) DO NOTHING",
                list(rows),
            )

    def prekeys_delete(self, epochs: Iterable[int]) -> int:
        """Forget the secrets of these epochs for good (secure_delete overwrites them)."""
        with self._transaction() as conn:
            cursor = conn.executemany(
                "DELETE FROM prekeys WHERE epoch = ?", [(int(e),) for e in epochs]
            )
            return int(cursor.rowcount)

    def agreement(self, peer_id: str) -> Agreement | None:
        row = self._one(f"SELECT {AGREEMENT_COLUMNS} FROM agreements WHERE peer_id = ?", (peer_id,))
        return None if row is None else Agreement(*row)

    def agreements(self) -> list[Agreement]:
        sql = f"SELECT {AGREEMENT_COLUMNS} FROM agreements ORDER BY added_at, peer_id"
        return [Agreement(*row) for row in self._all(sql)]

    def agreement_add(self, peer_id: str, now: float) -> bool:
        """Start an agreement with `peer_id`; False if there is one already."""
        cursor = self._execute(
            "INSERT INTO agreements (peer_id, added_at) VALUES (?, ?) "
            "ON CONFLICT (peer_id) DO NOTHING",
            (peer_id, now),
        )
        return cursor.rowcount == 1

    def agreement_keys(
        self,
        peer_id: str,
        root: bytes,
        epoch_len: int,
        first: int,
        prekeys: Sequence[bytes],
        now: float,
    ) -> bool:
        """Their bundle: root, epoch length, prekeys from epoch `first` on (replacing
        those from `first` on). True if the agreement became ready just now."""
        with self._transaction() as conn:
            before = conn.execute(
                "SELECT root FROM agreements WHERE peer_id = ?", (peer_id,)
            ).fetchone()
            if before is None:
                return False
            conn.execute(
                "UPDATE agreements SET root = ?, epoch_len = ?, "
                "ready_at = coalesce(ready_at, ?) WHERE peer_id = ?",
                (root, epoch_len, now, peer_id),
            )
            conn.execute(
                "DELETE FROM peer_prekeys WHERE peer_id = ? AND (epoch >= ? OR epoch < ?)",
                (peer_id, first, first - MAX_TTL_EPOCHS),
            )
            conn.executemany(
                "INSERT INTO peer_prekeys (peer_id, epoch, public) VALUES (?, ?, ?)",
                [(peer_id, first + i, p) for i, p in enumerate(prekeys)],
            )
        return before[0] is None

    def agreement_bundle_sent(self, peer_id: str, through: int) -> None:
        with self._relaxed():
            self._execute(
                "UPDATE agreements SET bundle_sent = max(coalesce(bundle_sent, -1), ?) "
                "WHERE peer_id = ?",
                (through, peer_id),
            )

    def agreement_remove(self, peer_id: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM agreements WHERE peer_id = ?", (peer_id,))
            conn.execute("DELETE FROM peer_prekeys WHERE peer_id = ?", (peer_id,))

    def peer_prekey(self, peer_id: str, epoch: int) -> tuple[int, bytes] | None:
        """Their prekey for `epoch`; else the newest before it (their last resort, when
        they have been silent past the horizon); else their oldest."""
        row = self._one(
            "SELECT epoch, public FROM peer_prekeys WHERE peer_id = ? AND epoch <= ? "
            "ORDER BY epoch DESC LIMIT 1",
            (peer_id, epoch),
        ) or self._one(
            "SELECT epoch, public FROM peer_prekeys WHERE peer_id = ? ORDER BY epoch LIMIT 1",
            (peer_id,),
        )
        return None if row is None else (int(row[0]), bytes(row[1]))

    # -- strangers: requests and blocks (issue 15) --------------------------------------

    def request_put(self, request: Request) -> bool:
        """Keep a stranger's request (their latest one replaces an earlier one); False if
        this very request (same message id) was kept already."""
        row = self._one("SELECT msg_id FROM requests WHERE peer_id = ?", (request.peer_id,))
        if row is not None and bytes(row[0]) == request.msg_id:
            return False
        self._execute(
            "INSERT INTO requests (peer_id, msg_id, text, bundle, sent_at, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (peer_id) DO UPDATE SET "
            "msg_id = excluded.msg_id, text = excluded.text, bundle = excluded.bundle, "
            "sent_at = excluded.sent_at, received_at = excluded.received_at",
            (
                request.peer_id,
                request.msg_id,
                request.text,
                request.bundle,
                request.sent_at,
                request.received_at,
            ),
        )
        return True

    def requests(self) -> list[Request]:
        sql = (
            "SELECT peer_id, msg_id, text, bundle, sent_at, received_at FROM requests "
            "ORDER BY received_at, peer_id"
        )
        return [
            Request(str(p), bytes(m), bytes(t), bytes(b), s, r)
            for p, m, t, b, s, r in self._all(sql)
        ]

    def request_get(self, peer_id: str) -> Request | None:
        return next((r for r in self.requests() if r.peer_id == peer_id), None)

    def request_remove(self, peer_id: str) -> bool:
        return self._execute("DELETE FROM requests WHERE peer_id = ?", (peer_id,)).rowcount > 0

    def block(self, peer_id: str, now: float) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO blocked (peer_id, blocked_at) VALUES (?, ?) "
                "ON CONFLICT (peer_id) DO NOTHING",
                (peer_id, now),
            )
            conn.execute("DELETE FROM requests WHERE peer_id = ?", (peer_id,))

    def unblock(self, peer_id: str) -> bool:
        return self._execute("DELETE FROM blocked WHERE peer_id = ?", (peer_id,)).rowcount > 0

    def blocked(self) -> set[str]:
        return {str(row[0]) for row in self._all("SELECT peer_id FROM blocked")}

    def is_blocked(self, peer_id: str) -> bool:
        return self._one("SELECT 1 FROM blocked WHERE peer_id = ?", (peer_id,)) is not None

    def receipts_wanted(self, peer_id: str) -> bool:
        """Delivery receipts go to a contact unless every name saved for it turned them off."""
        rows = self._all("SELECT receipts FROM contacts WHERE peer_id = ?", (peer_id,))
        return not rows or any(bool(r[0]) for r in rows)

    def set_receipts(self, name: str, on: bool) -> bool:
        cursor = self._execute(
            "UPDATE contacts SET receipts = ? WHERE name = ?", (int(on), name.strip())
        )
        return cursor.rowcount > 0

    # -- held records and tombstones (for mesh.dht.storage) -----------------------------

    def held_put(self, key: bytes, record_id: bytes, expires_at: int, packed: bytes) -> bool:
        """Insert a record held for others; False if (key, record_id) is already held."""
        with self._relaxed():
            return self._execute(HELD_PUT, (key, record_id, expires_at, packed)).rowcount == 1

    def held_put_many(self, rows: Iterable[tuple[bytes, bytes, int, bytes]]) -> int:
        """Insert many held records in one transaction; returns how many were new."""
        with self._relaxed(), self._transaction() as conn:
            return conn.executemany(HELD_PUT, rows).rowcount

    def held_delete(self, key: bytes, record_ids: Iterable[bytes]) -> int:
        params = [(key, record_id) for record_id in record_ids]
        if not params:
            return 0
        with self._relaxed(), self._transaction() as conn:
            sql = "DELETE FROM held WHERE key = ? AND record_id = ?"
            return conn.executemany(sql, params).rowcount

    def held_load(self, now: float) -> list[HeldRecord]:
        """Unexpired held records (expires_at > now), in insertion order."""
        sql = "SELECT key, record_id, expires_at, packed FROM held WHERE expires_at > ?"
        return [HeldRecord._make(row) for row in self._all(f"{sql} ORDER BY rowid", (now,))]

    def held_purge_expired(self, now: float) -> int:
        """Delete held records and tombstones with expires_at <= now; returns how many."""
        with self._relaxed(), self._transaction() as conn:
            held = conn.execute("DELETE FROM held WHERE expires_at <= ?", (now,)).rowcount
            stones = conn.execute("DELETE FROM tombstones WHERE expires_at <= ?", (now,)).rowcount
        return held + stones

    def tombstone_put(self, key: bytes, record_id: bytes, expires_at: int) -> None:
        """Remember a deleted record id; a second put never shortens the tombstone."""
        with self._relaxed():
            self._execute(
                "INSERT INTO tombstones (key, record_id, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key, record_id) "
                "DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)",
                (key, record_id, expires_at),
            )

    def tombstones_load(self, now: float) -> list[Tombstone]:
        sql = "SELECT key, record_id, expires_at FROM tombstones WHERE expires_at > ?"
        return [Tombstone._make(row) for row in self._all(f"{sql} ORDER BY key, record_id", (now,))]

    # -- peer cache ---------------------------------------------------------------------

    def peer_seen(self, node_id: bytes, host: str, port: int, now: float) -> None:
        """Remember where a peer was seen; keeps only the newest ``peer_cache_limit``."""
        with self._relaxed(), self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE peers SET host = ?, port = ?, last_seen = ? WHERE node_id = ?",
                (host, port, now, node_id),
            )
            if cursor.rowcount > 0:
                return
            conn.execute(
                "INSERT INTO peers (node_id, host, port, last_seen) VALUES (?, ?, ?, ?)",
                (node_id, host, port, now),
            )
            # Only new peers grow the table, so the (index-only) count runs only for them.
            excess = conn.execute("SELECT count(*) FROM peers").fetchone()[0] - self._peer_limit
            if excess > 0:
                conn.execute(
                    "DELETE FROM peers WHERE rowid IN "
                    "(SELECT rowid FROM peers ORDER BY last_seen, rowid LIMIT ?)",
                    (excess,),
                )

    def peers_recent(self, limit: int = 64) -> list[PeerRow]:
        sql = (
            "SELECT node_id, host, port, last_seen FROM peers "
            "ORDER BY last_seen DESC, rowid DESC LIMIT ?"
        )
        return [PeerRow._make(row) for row in self._all(sql, (limit,))]

    def peer_forget(self, node_id: bytes) -> bool:
        with self._relaxed():
            return self._execute("DELETE FROM peers WHERE node_id = ?", (node_id,)).rowcount > 0
