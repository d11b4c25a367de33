"""The store's tables for groups (issue 17): `store.groups`. Each group we belong to (or
left), its membership changes and the keys we hold. They share the Store's connection
through its `Sql` (mesh/store_db.py); group messages are rows of `messages` whose peer
is the group's local name (`group_peer`) and whose `author` says who wrote them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mesh.store_db import Sql

GROUP_PEER_PREFIX = "group:"


def group_peer(group_id: bytes) -> str:
    """The `peer_id` of a group's messages in the messages table (never a real ID:
    those have no colon)."""
    return GROUP_PEER_PREFIX + group_id.hex()


def group_of_peer(peer_id: str) -> bytes | None:
    """The group id of a `group_peer` string, or None for a contact's ID."""
    if not peer_id.startswith(GROUP_PEER_PREFIX):
        return None
    try:
        return bytes.fromhex(peer_id[len(GROUP_PEER_PREFIX) :])
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class GroupRow:
    group_id: bytes
    name: str
    epoch_len: int
    joined_at: float
    left_at: float | None
    fetched_at: float | None
    genesis: bytes  # the id of the group's create: no other create is ever taken

    @property
    def peer(self) -> str:
        return group_peer(self.group_id)


_COLUMNS = "group_id, name, epoch_len, joined_at, left_at, fetched_at, genesis"


def _row(row: Any) -> GroupRow:
    group_id, name, epoch_len, joined_at, left_at, fetched_at, genesis = row
    return GroupRow(
        bytes(group_id),
        str(name),
        int(epoch_len),
        float(joined_at),
        None if left_at is None else float(left_at),
        None if fetched_at is None else float(fetched_at),
        bytes(genesis),
    )


class GroupTables:
    def __init__(self, sql: Sql) -> None:
        self._sql = sql

    def add(self, group_id: bytes, name: str, epoch_len: int, now: float, genesis: bytes) -> bool:
        """A group we joined (or created); False if it was known (a rejoin clears left_at)."""
        cursor = self._sql.execute(
            "INSERT INTO group_info (group_id, name, epoch_len, joined_at, genesis) "
            "VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (group_id) DO UPDATE SET left_at = NULL WHERE left_at IS NOT NULL",
            (group_id, name, epoch_len, now, genesis),
        )
        return cursor.rowcount == 1

    def get(self, group_id: bytes) -> GroupRow | None:
        row = self._sql.one(f"SELECT {_COLUMNS} FROM group_info WHERE group_id = ?", (group_id,))
        return None if row is None else _row(row)

    def by_name(self, name: str) -> list[GroupRow]:
        sql = f"SELECT {_COLUMNS} FROM group_info WHERE name = ? ORDER BY joined_at"
        return [_row(r) for r in self._sql.all(sql, (name,))]

    def all(self) -> list[GroupRow]:
        sql = f"SELECT {_COLUMNS} FROM group_info ORDER BY name COLLATE NOCASE, joined_at"
        return [_row(r) for r in self._sql.all(sql)]

    def set_left(self, group_id: bytes, at: float) -> None:
        self._sql.execute(
            "UPDATE group_info SET left_at = ? WHERE group_id = ? AND left_at IS NULL",
            (at, group_id),
        )

    def set_fetched(self, group_id: bytes, at: float) -> None:
        self._sql.execute("UPDATE group_info SET fetched_at = ? WHERE group_id = ?", (at, group_id))

    def changes(self, group_id: bytes) -> list[bytes]:
        sql = "SELECT data FROM group_changes WHERE group_id = ? ORDER BY rowid"
        return [bytes(r[0]) for r in self._sql.all(sql, (group_id,))]

    def add_changes(self, group_id: bytes, changes: Iterable[tuple[bytes, bytes]]) -> int:
        """(change id, bytes) pairs, verified by the caller; returns how many were new."""
        rows = [(cid, group_id, data) for cid, data in changes]
        with self._sql.transaction() as conn:
            cursor = conn.executemany(
                "INSERT INTO group_changes (change_id, group_id, data) VALUES (?, ?, ?) "
                "ON CONFLICT (change_id) DO NOTHING",
                rows,
            )
            return int(cursor.rowcount)

    def add_receipts(self, peer: str, member: str, message_ids: Iterable[bytes]) -> list[bytes]:
        """A member of the group `peer` has these messages of ours (in that group);
        returns the ids newly counted."""
        new = []
        with self._sql.transaction() as conn:
            for mid in message_ids:
                cursor = conn.execute(
                    "INSERT INTO group_receipts (msg_id, member) SELECT ?, ? WHERE EXISTS "
                    "(SELECT 1 FROM messages WHERE msg_id = ? AND direction = 'out' "
                    "AND peer_id = ?) ON CONFLICT DO NOTHING",
                    (mid, member, mid, peer),
                )
                if cursor.rowcount == 1:
                    new.append(mid)
        return new

    def forget_stale_receipts(self) -> int:
        """Receipts of messages no longer kept (expired, retention) go with them."""
        cursor = self._sql.execute(
            "DELETE FROM group_receipts WHERE msg_id NOT IN "
            "(SELECT msg_id FROM messages WHERE direction = 'out')"
        )
        return int(cursor.rowcount)

    def delivered_to(self, message_id: bytes) -> int:
        """How many members have said they have this message of ours."""
        row = self._sql.one("SELECT count(*) FROM group_receipts WHERE msg_id = ?", (message_id,))
        return int(row[0])

    def keys(self, group_id: bytes) -> list[tuple[bytes, bytes]]:
        """(change id, secret) of every key of the group we hold, oldest first."""
        sql = "SELECT change_id, secret FROM group_keys WHERE group_id = ? ORDER BY rowid"
        return [(bytes(c), bytes(s)) for c, s in self._sql.all(sql, (group_id,))]

    def add_key(self, group_id: bytes, change_id: bytes, secret: bytes) -> bool:
        cursor = self._sql.execute(
            "INSERT INTO group_keys (change_id, group_id, secret) VALUES (?, ?, ?) "
            "ON CONFLICT (change_id) DO NOTHING",
            (change_id, group_id, secret),
        )
        return cursor.rowcount == 1
