"""What the store holds: the schema and its migrations, the row types, and the message
statuses with the moves between them (mesh.store reads and writes them).

Status and kind values are the strings on disk (and on the control socket): a
`StrEnum` member compares equal to its value, so no migration was needed for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, NamedTuple

from mesh.envelope import KINDS, MessageKind
from mesh.errors import LocalError

Direction = Literal["in", "out"]
DIRECTIONS = frozenset({"in", "out"})


class MessageStatus(StrEnum):
    """Where a message is. The value is what the store (and the control socket) hold."""

    QUEUED = "queued"  # committed locally, not yet on any replica
    STORED = "stored"  # on at least one of the recipient's mailbox replicas
    DELIVERED = "delivered"  # the recipient's receipt arrived
    READ = "read"  # the recipient sent a read receipt (they opted in)
    FAILED = "failed"  # expired before any replica took it (a stub)
    EXPIRED = "expired"  # stored, but expired before it was picked up (a stub)
    RECEIVED = "received"  # every incoming message


StatusName = (
    MessageStatus
    | Literal["queued", "stored", "delivered", "read", "failed", "expired", "received"]
)

_S = MessageStatus
# Status -> the statuses it may move to. Forward only: queued -> stored -> delivered
# -> read. At its expiry an outgoing message that no receipt reached is kept as a stub
# (text wiped) for EXPIRED_KEEP: "failed" if no peer ever took it (it was queued),
# "expired" if it was stored but never picked up. A receipt that comes late after all
# may still move a stub on, since that is not going backwards.
NEXT_STATUS: dict[MessageStatus, frozenset[MessageStatus]] = {
    _S.QUEUED: frozenset({_S.STORED, _S.DELIVERED, _S.READ, _S.FAILED}),
    _S.STORED: frozenset({_S.DELIVERED, _S.READ, _S.EXPIRED}),
    _S.FAILED: frozenset({_S.STORED, _S.DELIVERED, _S.READ}),
    _S.EXPIRED: frozenset({_S.DELIVERED, _S.READ}),
    _S.DELIVERED: frozenset({_S.READ}),
    _S.READ: frozenset(),
    _S.RECEIVED: frozenset(),  # every incoming message
}
STATUSES = frozenset(MessageStatus)

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE identity (id INTEGER PRIMARY KEY CHECK (id = 1), blob BLOB NOT NULL);
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE contacts (name TEXT PRIMARY KEY, peer_id TEXT NOT NULL, ttl INTEGER,
                           added_at REAL NOT NULL) WITHOUT ROWID;
    CREATE INDEX contacts_peer ON contacts (peer_id);
    CREATE TABLE messages (
        msg_id BLOB NOT NULL, direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
        peer_id TEXT NOT NULL, kind TEXT NOT NULL, body BLOB NOT NULL,
        sent_at REAL NOT NULL, expires_at REAL NOT NULL, status TEXT NOT NULL,
        received_at REAL, is_read INTEGER NOT NULL DEFAULT 0, replicas INTEGER,
        UNIQUE (msg_id, direction));
    CREATE INDEX messages_peer ON messages (peer_id, sent_at);
    CREATE INDEX messages_expiry ON messages (expires_at);
    CREATE INDEX messages_unread ON messages (peer_id) WHERE direction = 'in' AND is_read = 0;
    CREATE TABLE outbox (msg_id BLOB PRIMARY KEY, mailbox_key BLOB NOT NULL,
                         record BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
                         created_at REAL NOT NULL, last_attempt_at REAL);
    -- held rows carry whole records (up to 8 KiB): a rowid table keeps the key index small
    CREATE TABLE held (key BLOB NOT NULL, record_id BLOB NOT NULL,
                       expires_at INTEGER NOT NULL, packed BLOB NOT NULL,
                       PRIMARY KEY (key, record_id));
    CREATE INDEX held_expiry ON held (expires_at);
    CREATE TABLE tombstones (key BLOB NOT NULL, record_id BLOB NOT NULL,
                             expires_at INTEGER NOT NULL,
                             PRIMARY KEY (key, record_id)) WITHOUT ROWID;
    CREATE INDEX tombstones_expiry ON tombstones (expires_at);
    CREATE TABLE peers (node_id BLOB PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL,
                        last_seen REAL NOT NULL);
    CREATE INDEX peers_last_seen ON peers (last_seen);
    """,
    # 2: verified contacts, read receipts opt-in per contact, when each ID was last heard
    # from (for `mesh peers`); statuses "expired" and "read" need no schema change.
    """
    ALTER TABLE contacts ADD COLUMN verified_at REAL;
    ALTER TABLE contacts ADD COLUMN read_receipts INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE heard (peer_id TEXT PRIMARY KEY, last_heard REAL NOT NULL) WITHOUT ROWID;
    """,
    # 3: unlinkable mailboxes (mesh.keyring): our mailbox root and prekeys, each contact's
    # agreement (their root and prekeys once their bundle arrived), and outbox items
    # addressed to a contact (sealed again at delivery for the epoch of the day). Every
    # contact of the previous release starts a new agreement; its queued messages wait
    # for it; its queued receipts (sealed to the old fixed mailbox) are dropped.
    """
    CREATE TABLE keyring (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
    CREATE TABLE prekeys (epoch INTEGER PRIMARY KEY, public BLOB NOT NULL,
                          secret BLOB NOT NULL);
    CREATE TABLE agreements (peer_id TEXT PRIMARY KEY, root BLOB, epoch_len INTEGER,
                             added_at REAL NOT NULL, ready_at REAL,
                             bundle_sent INTEGER) WITHOUT ROWID;
    CREATE TABLE peer_prekeys (peer_id TEXT NOT NULL, epoch INTEGER NOT NULL,
                               public BLOB NOT NULL,
                               PRIMARY KEY (peer_id, epoch)) WITHOUT ROWID;
    ALTER TABLE outbox ADD COLUMN peer_id TEXT;
    ALTER TABLE outbox ADD COLUMN kind TEXT;
    ALTER TABLE outbox ADD COLUMN body BLOB;
    ALTER TABLE outbox ADD COLUMN ttl INTEGER;
    ALTER TABLE outbox ADD COLUMN epoch INTEGER;
    INSERT INTO agreements (peer_id, added_at)
        SELECT peer_id, min(added_at) FROM contacts GROUP BY peer_id;
    UPDATE outbox SET
        peer_id = (SELECT m.peer_id FROM messages m
                   WHERE m.msg_id = outbox.msg_id AND m.direction = 'out'),
        kind = 'text',
        body = (SELECT m.body FROM messages m
                WHERE m.msg_id = outbox.msg_id AND m.direction = 'out'),
        ttl = (SELECT CAST(round(m.expires_at - m.sent_at) AS INTEGER) FROM messages m
               WHERE m.msg_id = outbox.msg_id AND m.direction = 'out'),
        created_at = (SELECT m.sent_at FROM messages m
                      WHERE m.msg_id = outbox.msg_id AND m.direction = 'out'),
        record = x'', mailbox_key = x''
        WHERE EXISTS (SELECT 1 FROM messages m WHERE m.msg_id = outbox.msg_id
                      AND m.direction = 'out' AND m.kind = 'text');
    DELETE FROM outbox WHERE peer_id IS NULL;
    INSERT OR IGNORE INTO agreements (peer_id, added_at)
        SELECT peer_id, created_at FROM outbox;
    INSERT INTO settings (key, value) SELECT 'legacy_mailbox', '1'
        WHERE EXISTS (SELECT 1 FROM identity);
    -- issue 15: strangers' requests (kept apart from messages), blocked IDs, and the
    -- per-contact switch for delivery receipts
    CREATE TABLE requests (peer_id TEXT PRIMARY KEY, msg_id BLOB NOT NULL,
                           text BLOB NOT NULL, bundle BLOB NOT NULL,
                           sent_at REAL NOT NULL, received_at REAL NOT NULL) WITHOUT ROWID;
    CREATE TABLE blocked (peer_id TEXT PRIMARY KEY, blocked_at REAL NOT NULL) WITHOUT ROWID;
    ALTER TABLE contacts ADD COLUMN receipts INTEGER NOT NULL DEFAULT 1;
    """,
    # 4: groups (issue 17): the groups we are in or left, their signed membership changes,
    # the group keys we hold; a group's messages are rows of `messages` whose peer_id is
    # the group's (mesh.store_groups.group_peer) and whose author is who wrote them.
    """
    CREATE TABLE group_info (group_id BLOB PRIMARY KEY, name TEXT NOT NULL,
                             epoch_len INTEGER NOT NULL, joined_at REAL NOT NULL,
                             left_at REAL, fetched_at REAL,
                             genesis BLOB NOT NULL) WITHOUT ROWID;
    CREATE TABLE group_changes (change_id BLOB PRIMARY KEY, group_id BLOB NOT NULL,
                                data BLOB NOT NULL);
    CREATE INDEX group_changes_group ON group_changes (group_id);
    CREATE TABLE group_keys (change_id BLOB PRIMARY KEY, group_id BLOB NOT NULL,
                             secret BLOB NOT NULL);
    CREATE INDEX group_keys_group ON group_keys (group_id);
    CREATE TABLE group_receipts (msg_id BLOB NOT NULL, member TEXT NOT NULL,
                                 PRIMARY KEY (msg_id, member)) WITHOUT ROWID;
    ALTER TABLE messages ADD COLUMN author TEXT;
    """,
)
EXPIRED_KEEP = 7 * 24 * 3600.0  # how long the stub of an undelivered message is listed


@dataclass(frozen=True, slots=True)
class Contact:
    name: str
    peer_id: str
    ttl: int | None
    added_at: float
    verified_at: float | None = None  # when the user said the fingerprints matched
    read_receipts: bool = False  # send this contact read receipts

    @property
    def verified(self) -> bool:
        return self.verified_at is not None


@dataclass(frozen=True, slots=True)
class MessageRow:
    msg_id: bytes
    direction: Direction
    peer_id: str
    kind: MessageKind
    body: bytes
    sent_at: float
    expires_at: float
    status: MessageStatus
    received_at: float | None
    read: bool
    replicas: int | None
    author: str | None = None  # who wrote a group message (peer_id is the group's)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A record to store. With `peer_id`, it is addressed to a contact: `kind`, `body`,
    `ttl` and `created_at` (the sent_at) are what is sealed again for each epoch, and
    `record`/`mailbox_key` are the last sealing (of `epoch`; empty until the contact's
    keys arrive). Without, it is a fixed record for a fixed key (an introduction)."""

    msg_id: bytes
    mailbox_key: bytes
    record: bytes
    attempts: int
    created_at: float
    last_attempt_at: float | None
    peer_id: str | None = None
    kind: str | None = None
    body: bytes | None = None
    ttl: int | None = None
    epoch: int | None = None


@dataclass(frozen=True, slots=True)
class GroupOutboxItem:
    """A record for a group mailbox, as the outbox keeps it: `peer_id` is the group's
    (group_peer), `kind` "group", `body` the key change whose mailbox it goes to, and
    `epoch` the day of `mailbox_key`; the outbox moves it to the mailbox of the day when
    it is sent later (mesh.group_base.GroupBase.readdress)."""

    mailbox_key: bytes
    record: bytes
    key_change: bytes
    epoch: int
    ttl: int

    def row(self, msg_id: bytes, group_peer: str, now: float) -> tuple[object, ...]:
        fields = (self.key_change, self.ttl, self.epoch)
        return (msg_id, self.mailbox_key, self.record, now, group_peer, "group", *fields)


@dataclass(frozen=True, slots=True)
class Request:
    """A stranger's first message, kept apart until the owner accepts, blocks or deletes."""

    peer_id: str
    msg_id: bytes
    text: bytes
    bundle: bytes
    sent_at: float
    received_at: float


@dataclass(frozen=True, slots=True)
class Agreement:
    """The key agreement with one contact ID: ready once their bundle arrived."""

    peer_id: str
    root: bytes | None
    epoch_len: int | None
    added_at: float
    ready_at: float | None
    bundle_sent: int | None  # the last epoch of our prekeys they have been sent

    @property
    def ready(self) -> bool:
        return self.root is not None


# Bulk rows stay tuples (cheap to build, unpack like plain tuples) with field names.
class HeldRecord(NamedTuple):
    key: bytes
    record_id: bytes
    expires_at: int
    packed: bytes


class Tombstone(NamedTuple):
    key: bytes
    record_id: bytes
    expires_at: int


class PeerRow(NamedTuple):
    node_id: bytes
    host: str
    port: int
    last_seen: float


# -- the SQL every Store shares, and rows in and out -----------------------------------

MESSAGE_COLUMNS = (
    "msg_id, direction, peer_id, kind, body, sent_at, expires_at, status, received_at, "
    "is_read, replicas, author"
)
INSERT_MESSAGE = (
    "INSERT INTO messages (msg_id, direction, peer_id, kind, body, sent_at, expires_at, "
    "status, received_at, is_read) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (msg_id, direction) DO NOTHING"
)
INSERT_GROUP_MESSAGE = (
    "INSERT INTO messages (msg_id, direction, peer_id, kind, body, sent_at, expires_at, "
    "status, received_at, is_read, author) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (msg_id, direction) DO NOTHING"
)
INSERT_OUTBOX = (
    "INSERT INTO outbox (msg_id, mailbox_key, record, created_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (msg_id) DO NOTHING"
)
OUTBOX_COLUMNS = (
    "msg_id, mailbox_key, record, attempts, created_at, last_attempt_at, peer_id, kind, "
    "body, ttl, epoch"
)
HELD_PUT = (
    "INSERT INTO held (key, record_id, expires_at, packed) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (key, record_id) DO NOTHING"
)
INSERT_CONTACT_OUTBOX = (
    "INSERT INTO outbox (msg_id, mailbox_key, record, created_at, peer_id, kind, body, ttl, "
    "epoch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (msg_id) DO NOTHING"
)
AGREEMENT_COLUMNS = "peer_id, root, epoch_len, added_at, ready_at, bundle_sent"
MAX_TTL_EPOCHS = 64  # their prekeys older than this many epochs before the newest go
CONTACT_COLUMNS = "name, peer_id, ttl, added_at, verified_at, read_receipts"


def status_update_sql(target: MessageStatus) -> str:
    allowed_from = sorted(s for s, nxt in NEXT_STATUS.items() if target in nxt or s == target)
    quoted = ", ".join(f"'{s}'" for s in allowed_from)  # constants, never user input
    return (
        "UPDATE messages SET status = ?, replicas = coalesce(?, replicas) "
        f"WHERE msg_id = ? AND direction = ? AND status IN ({quoted})"
    )


SET_STATUS_SQL = {status: status_update_sql(status) for status in STATUSES}


def check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'in' or 'out', not {direction!r}")


def check_status(status: str) -> MessageStatus:
    if status not in STATUSES:
        raise ValueError(f"unknown message status {status!r}; expected one of {sorted(STATUSES)}")
    return MessageStatus(status)


def check_kind(kind: str) -> MessageKind:
    if kind not in KINDS:
        raise ValueError(f"unknown message kind {kind!r}")
    return MessageKind(kind)


def contact_name(name: str) -> str:
    trimmed = name.strip()
    if not trimmed:
        raise LocalError("a contact name cannot be empty; pick a name such as 'alice'")
    return trimmed


def contact_from_row(row: Any) -> Contact:
    name, peer_id, ttl, added_at, verified_at, read_receipts = row
    return Contact(name, peer_id, ttl, added_at, verified_at, bool(read_receipts))


def message_from_row(row: Any) -> MessageRow:
    fields = list(row)
    fields[3] = MessageKind(fields[3])
    fields[7] = MessageStatus(fields[7])
    fields[9] = bool(fields[9])  # is_read
    return MessageRow(*fields)


# -- the expiry of messages (Store.delete_expired_messages) ---------------------------------
# Parameters given as None are `now`. An outgoing text that never got a receipt becomes a
# stub (empty body) with status failed (still queued) or expired (stored, not picked up).
EXPIRE_STEPS: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    (
        "UPDATE messages SET status = ?, body = x'' WHERE direction = 'out' "
        "AND status = ? AND expires_at <= ? AND kind = 'text'",
        ("failed", "queued", None),
    ),
    (
        "UPDATE messages SET status = ?, body = x'' WHERE direction = 'out' "
        "AND status = ? AND expires_at <= ? AND kind = 'text'",
        ("expired", "stored", None),
    ),
    (
        "UPDATE messages SET body = x'' WHERE direction = 'out' AND expires_at <= ? "
        "AND status IN ('failed', 'expired') AND length(body) > 0",
        (None,),
    ),
    (
        "DELETE FROM outbox WHERE msg_id IN (SELECT msg_id FROM messages "
        "WHERE direction = 'out' AND expires_at <= ?)",
        (None,),
    ),
)
EXPIRE_DELETE = (
    "DELETE FROM messages WHERE (expires_at <= ? AND status NOT IN "
    "('failed', 'expired')) OR expires_at <= ? RETURNING msg_id, direction"
)
