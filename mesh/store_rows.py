"""What the store holds: the schema and its migrations, the row types, and the message
statuses with the moves between them (mesh.store reads and writes them).

Status and kind values are the strings on disk (and on the control socket): a
`StrEnum` member compares equal to its value, so no migration was needed for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, NamedTuple

from mesh.envelope import MessageKind

Direction = Literal["in", "out"]
DIRECTIONS = frozenset({"in", "out"})


class MessageStatus(StrEnum):
    """Where a message is. The value is what the store (and the control socket) hold."""

    QUEUED = "queued"  # committed locally, not yet on any replica
    STORED = "stored"  # on at least one of the recipient's mailbox replicas
    DELIVERED = "delivered"  # the recipient's receipt arrived
    FAILED = "failed"  # expired before any replica took it
    RECEIVED = "received"  # every incoming message


StatusName = MessageStatus | Literal["queued", "stored", "delivered", "failed", "received"]

# Status -> the statuses it may move to. Forward only: queued -> stored -> delivered.
# "failed" is reachable from queued only; a failed message that got out after all
# (a late store ack, a receipt) may still move on, since that is not going backwards.
NEXT_STATUS: dict[MessageStatus, frozenset[MessageStatus]] = {
    MessageStatus.QUEUED: frozenset(
        {MessageStatus.STORED, MessageStatus.DELIVERED, MessageStatus.FAILED}
    ),
    MessageStatus.STORED: frozenset({MessageStatus.DELIVERED}),
    MessageStatus.FAILED: frozenset({MessageStatus.STORED, MessageStatus.DELIVERED}),
    MessageStatus.DELIVERED: frozenset(),
    MessageStatus.RECEIVED: frozenset(),
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
)


@dataclass(frozen=True, slots=True)
class Contact:
    name: str
    peer_id: str
    ttl: int | None
    added_at: float


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


@dataclass(frozen=True, slots=True)
class OutboxItem:
    msg_id: bytes
    mailbox_key: bytes
    record: bytes
    attempts: int
    created_at: float
    last_attempt_at: float | None


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
