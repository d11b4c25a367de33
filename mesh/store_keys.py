"""The tables of mesh/store.py's `Store` for contacts' keys (issue 14: our keyring and
prekeys, each contact's agreement and prekeys) and for strangers (issue 15: requests and
blocks): `store.keys`, `store.strangers`. They share the Store's connection through its
`Sql` (mesh/store_db.py): the same guard, commits and durability rules."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mesh.store_db import Sql
from mesh.store_rows import AGREEMENT_COLUMNS, MAX_TTL_EPOCHS, Agreement, Request


class KeyTables:
    """Our mailbox keys and each contact's agreement (mesh.keyring, mesh.agreements)."""

    def __init__(self, sql: Sql) -> None:
        self._sql = sql

    def keyring_get(self, name: str) -> bytes | None:
        row = self._sql.one("SELECT value FROM keyring WHERE name = ?", (name,))
        return None if row is None else bytes(row[0])

    def keyring_put(self, name: str, value: bytes) -> None:
        self._sql.execute(
            "INSERT INTO keyring (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    def prekeys(self) -> list[tuple[int, bytes, bytes]]:
        """Our prekeys still held: (epoch, public, secret), oldest first."""
        sql = "SELECT epoch, public, secret FROM prekeys ORDER BY epoch"
        return [(int(e), bytes(p), bytes(s)) for e, p, s in self._sql.all(sql)]

    def prekeys_add(self, rows: Iterable[tuple[int, bytes, bytes]]) -> None:
        with self._sql.transaction() as conn:
            conn.executemany(
                "INSERT INTO prekeys (epoch, public, secret) VALUES (?, ?, ?) "
                "ON CONFLICT (epoch) DO NOTHING",
                list(rows),
            )

    def prekeys_delete(self, epochs: Iterable[int]) -> int:
        """Forget the secrets of these epochs for good (secure_delete overwrites them)."""
        with self._sql.transaction() as conn:
            cursor = conn.executemany(
                "DELETE FROM prekeys WHERE epoch = ?", [(int(e),) for e in epochs]
            )
            return int(cursor.rowcount)

    def agreement(self, peer_id: str) -> Agreement | None:
        row = self._sql.one(
            f"SELECT {AGREEMENT_COLUMNS} FROM agreements WHERE peer_id = ?", (peer_id,)
        )
        return None if row is None else Agreement(*row)

    def agreements(self) -> list[Agreement]:
        sql = f"SELECT {AGREEMENT_COLUMNS} FROM agreements ORDER BY added_at, peer_id"
        return [Agreement(*row) for row in self._sql.all(sql)]

    def agreement_add(self, peer_id: str, now: float) -> bool:
        """Start an agreement with `peer_id`; False if there is one already."""
        cursor = self._sql.execute(
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
        with self._sql.transaction() as conn:
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
        with self._sql.relaxed():
            self._sql.execute(
                "UPDATE agreements SET bundle_sent = max(coalesce(bundle_sent, -1), ?) "
                "WHERE peer_id = ?",
                (through, peer_id),
            )

    def agreement_remove(self, peer_id: str) -> None:
        with self._sql.transaction() as conn:
            conn.execute("DELETE FROM agreements WHERE peer_id = ?", (peer_id,))
            conn.execute("DELETE FROM peer_prekeys WHERE peer_id = ?", (peer_id,))

    def peer_prekey(self, peer_id: str, epoch: int) -> tuple[int, bytes] | None:
        """Their prekey for `epoch`; else the newest before it (their last resort, when
        they have been silent past the horizon); else their oldest."""
        row = self._sql.one(
            "SELECT epoch, public FROM peer_prekeys WHERE peer_id = ? AND epoch <= ? "
            "ORDER BY epoch DESC LIMIT 1",
            (peer_id, epoch),
        ) or self._sql.one(
            "SELECT epoch, public FROM peer_prekeys WHERE peer_id = ? ORDER BY epoch LIMIT 1",
            (peer_id,),
        )
        return None if row is None else (int(row[0]), bytes(row[1]))


class StrangerTables:
    """Strangers' requests and the blocked (mesh.requests)."""

    def __init__(self, sql: Sql) -> None:
        self._sql = sql

    def request_put(self, request: Request) -> bool:
        """Keep a stranger's request (their latest one replaces an earlier one); False if
        this very request (same message id) was kept already."""
        row = self._sql.one("SELECT msg_id FROM requests WHERE peer_id = ?", (request.peer_id,))
        if row is not None and bytes(row[0]) == request.msg_id:
            return False
        self._sql.execute(
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
            for p, m, t, b, s, r in self._sql.all(sql)
        ]

    def request_get(self, peer_id: str) -> Request | None:
        return next((r for r in self.requests() if r.peer_id == peer_id), None)

    def request_remove(self, peer_id: str) -> bool:
        return self._sql.execute("DELETE FROM requests WHERE peer_id = ?", (peer_id,)).rowcount > 0

    def block(self, peer_id: str, now: float) -> None:
        with self._sql.transaction() as conn:
            conn.execute(
                "INSERT INTO blocked (peer_id, blocked_at) VALUES (?, ?) "
                "ON CONFLICT (peer_id) DO NOTHING",
                (peer_id, now),
            )
            conn.execute("DELETE FROM requests WHERE peer_id = ?", (peer_id,))

    def unblock(self, peer_id: str) -> bool:
        return self._sql.execute("DELETE FROM blocked WHERE peer_id = ?", (peer_id,)).rowcount > 0

    def blocked(self) -> set[str]:
        return {str(row[0]) for row in self._sql.all("SELECT peer_id FROM blocked")}

    def is_blocked(self, peer_id: str) -> bool:
        return self._sql.one("SELECT 1 FROM blocked WHERE peer_id = ?", (peer_id,)) is not None
