"""The tables of mesh/store.py's `Store` for the DHT: records held for others and
tombstones (mesh.dht.storage persists into `store.held`), and the peer cache
(`store.peers`). Cache-like writes: synchronous=NORMAL (see mesh/store.py)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mesh.store_db import Sql
from mesh.store_rows import HELD_PUT, HeldRecord, PeerRow, Tombstone

HELD_DELETE = "DELETE FROM held WHERE key = ? AND record_id = ?"


class HeldTables:
    """Records held for others and tombstones of deleted ones."""

    def __init__(self, sql: Sql) -> None:
        self._sql = sql

    def held_put(self, key: bytes, record_id: bytes, expires_at: int, packed: bytes) -> bool:
        """Insert a record held for others; False if (key, record_id) is already held."""
        with self._sql.relaxed():
            return self._sql.execute(HELD_PUT, (key, record_id, expires_at, packed)).rowcount == 1

    def held_put_many(self, rows: Iterable[tuple[bytes, bytes, int, bytes]]) -> int:
        """Insert many held records in one transaction; returns how many were new."""
        with self._sql.relaxed(), self._sql.transaction() as conn:
            return conn.executemany(HELD_PUT, rows).rowcount

    def held_write(
        self,
        rows: Sequence[tuple[bytes, bytes, int, bytes]],
        deleted: Sequence[tuple[bytes, bytes]],
    ) -> None:
        """Insert held records and delete (key, record_id) pairs in one commit: what one
        `RecordStorage.put_many` changed. One row alone is one autocommit statement (no
        BEGIN/COMMIT round trips): the common case, a STORE of one record."""
        if len(rows) == 1 and not deleted:
            self.held_put(*rows[0])
            return
        with self._sql.relaxed(), self._sql.transaction() as conn:
            if deleted:
                conn.executemany(HELD_DELETE, deleted)
            if rows:
                conn.executemany(HELD_PUT, rows)

    def held_delete(self, key: bytes, record_ids: Iterable[bytes]) -> int:
        params = [(key, record_id) for record_id in record_ids]
        if not params:
            return 0
        with self._sql.relaxed(), self._sql.transaction() as conn:
            return conn.executemany(HELD_DELETE, params).rowcount

    def held_load(self, now: float) -> list[HeldRecord]:
        """Unexpired held records (expires_at > now), in insertion order."""
        sql = "SELECT key, record_id, expires_at, packed FROM held WHERE expires_at > ?"
        return [HeldRecord._make(row) for row in self._sql.all(f"{sql} ORDER BY rowid", (now,))]

    def held_purge_expired(self, now: float) -> int:
        """Delete held records and tombstones with expires_at <= now; returns how many."""
        with self._sql.relaxed(), self._sql.transaction() as conn:
            held = conn.execute("DELETE FROM held WHERE expires_at <= ?", (now,)).rowcount
            stones = conn.execute("DELETE FROM tombstones WHERE expires_at <= ?", (now,)).rowcount
        return held + stones

    def tombstone_put(self, key: bytes, record_id: bytes, expires_at: int) -> None:
        """Remember a deleted record id; a second put never shortens the tombstone."""
        with self._sql.relaxed():
            self._sql.execute(
                "INSERT INTO tombstones (key, record_id, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key, record_id) "
                "DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)",
                (key, record_id, expires_at),
            )

    def tombstones_load(self, now: float) -> list[Tombstone]:
        sql = "SELECT key, record_id, expires_at FROM tombstones WHERE expires_at > ?"
        return [
            Tombstone._make(row) for row in self._sql.all(f"{sql} ORDER BY key, record_id", (now,))
        ]


class PeerCache:
    """Where peers were seen, newest first; at most `limit` kept."""

    def __init__(self, sql: Sql, limit: int) -> None:
        self._sql = sql
        self._limit = limit

    def peer_seen(self, node_id: bytes, host: str, port: int, now: float) -> None:
        """Remember where a peer was seen; keeps only the newest ``peer_cache_limit``."""
        with self._sql.relaxed(), self._sql.transaction() as conn:
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
            excess = conn.execute("SELECT count(*) FROM peers").fetchone()[0] - self._limit
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
        return [PeerRow._make(row) for row in self._sql.all(sql, (limit,))]

    def peer_forget(self, node_id: bytes) -> bool:
        with self._sql.relaxed():
            return self._sql.execute("DELETE FROM peers WHERE node_id = ?", (node_id,)).rowcount > 0
