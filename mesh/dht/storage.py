"""Records this peer holds for others: many per mailbox key, bounded every way.

- A key holds many records indexed by record id, so a replayed or republished record is
  a no-op, never a second copy.
- Expiry is absolute (`Record.expires_at`); nothing here ever extends it.
- Owner-signed deletes leave tombstones until the record would have expired, so a
  republish from a replica that missed the delete cannot resurrect it.
- Quotas: records and bytes per key, bytes per source address, total bytes. Past the
  total, the record closest to expiry is evicted first.
- With a Store's `held` tables, every change is written through to SQLite before `put`
  returns, so a restarted peer still holds what it acknowledged. `put_many` (the records
  of one STORE request) writes them all in one commit: SQLCipher pays per commit, per
  page written (docs/architecture.md, "Held records").
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

from mesh.envelope import MAX_TTL, Record
from mesh.errors import MeshError

if TYPE_CHECKING:
    from mesh.store_held import HeldTables


class PutResult(IntEnum):
    STORED = 0
    DUPLICATE = 1
    TOMBSTONED = 2
    REFUSED_QUOTA = 3
    REFUSED_FORMAT = 4
    EXPIRED = 5


@dataclass(frozen=True)
class StorageLimits:
    records_per_key: int = 256
    bytes_per_key: int = 1 << 20
    bytes_per_source: int = 16 << 20
    total_bytes: int = 64 << 20
    tombstones_per_key: int = 1024
    # Unstamped records one source (IP) may hold under one key: one device cannot fill a
    # mailbox (issue 15). Stamped records pay with work instead. A replica handing over
    # or repairing a key sends from its own IP: above this, a newcomer keeps the first
    # ones and the other replicas the rest (docs/threat-model.md, "Storage spammer").
    unstamped_per_source_key: int = 128


class _Held:
    __slots__ = ("record", "size", "source")

    def __init__(self, record: Record, source: str) -> None:
        self.record = record
        self.source = source
        self.size = len(record.ciphertext) + 64


class RecordStorage:
    def __init__(
        self, limits: StorageLimits | None = None, persist: HeldTables | None = None
    ) -> None:
        self.limits = limits or StorageLimits()
        self.persist = persist
        self._records: dict[bytes, dict[bytes, _Held]] = {}
        self._tombstones: dict[bytes, dict[bytes, int]] = {}
        self._key_bytes: dict[bytes, int] = {}
        self._source_bytes: dict[str, int] = {}
        self._source_key: dict[tuple[str, bytes], int] = {}  # unstamped records
        self._expiry: list[tuple[int, bytes, bytes]] = []  # lazy-deletion heap
        self.total_bytes = 0
        self.counters: dict[str, int] = {r.name.lower(): 0 for r in PutResult}

    # -- queries ------------------------------------------------------------------

    def held_keys(self) -> list[bytes]:
        return list(self._records)

    def __len__(self) -> int:
        return sum(len(v) for v in self._records.values())

    def has(self, key: bytes, record_id: bytes) -> bool:
        return record_id in self._records.get(key, ())

    def ids(self, key: bytes, now: float) -> list[bytes]:
        held = self._records.get(key)
        if not held:
            return []
        return [rid for rid, h in held.items() if h.record.expires_at > now]

    def get(self, key: bytes, ids: list[bytes], now: float) -> list[Record]:
        held = self._records.get(key, {})
        out = []
        for rid in ids:
            h = held.get(rid)
            if h is not None and h.record.expires_at > now:
                out.append(h.record)
        return out

    def records(self, key: bytes, now: float) -> list[Record]:
        held = self._records.get(key, {})
        return [h.record for h in held.values() if h.record.expires_at > now]

    def is_tombstoned(self, key: bytes, record_id: bytes) -> bool:
        return record_id in self._tombstones.get(key, ())

    # -- mutation -----------------------------------------------------------------

    def put(self, key: bytes, record: Record, now: float, source: str = "") -> PutResult:
        """Store one already format-checked record. Idempotent by record id."""
        return self.put_many(key, [record], now, source)[0]

    def put_many(
        self, key: bytes, records: list[Record], now: float, source: str = ""
    ) -> list[PutResult]:
        """Store already format-checked records under one key, one result each, and
        persist the new ones (and the evictions they caused) in one commit before
        returning: the caller acknowledges only what is on disk. If that commit fails,
        the new records are taken back out of memory too (a retry must not be answered
        DUPLICATE for a record that is not on disk) and the StoreError propagates."""
        results: list[PutResult] = []
        new: dict[bytes, Record] = {}  # record id -> record, this call's new ones
        evicted: list[tuple[bytes, bytes]] = []  # held before this call, now evicted
        for record in records:
            result = self._admit(key, record, now, source)
            self.counters[result.name.lower()] += 1
            results.append(result)
            if result is PutResult.STORED:
                self._insert(key, _Held(record, source))
                new[record.id] = record
                for gone in self._evict_over_total():
                    # One of this call's records, never written: nothing to delete.
                    if gone[0] != key or new.pop(gone[1], None) is None:
                        evicted.append(gone)
        if self.persist is not None and (new or evicted):
            rows = [(key, r.id, r.expires_at, r.pack()) for r in new.values()]
            try:
                self.persist.held_write(rows, evicted)
            except BaseException:
                # (Records evicted for them stay evicted; their rows stay on disk until
                # they expire: a reload may hold them again, never one we did not.)
                for record_id in new:
                    self._remove(key, record_id)
                self.counters["stored"] -= len(new)
                raise
        return results

    def _admit(self, key: bytes, record: Record, now: float, source: str) -> PutResult:
        if record.expires_at <= now:
            return PutResult.EXPIRED
        if self.is_tombstoned(key, record.id):
            return PutResult.TOMBSTONED
        held = self._records.get(key)
        if held is not None and record.id in held:
            return PutResult.DUPLICATE
        size = len(record.ciphertext) + 64
        limits = self.limits
        if held is not None and len(held) >= limits.records_per_key:
            return PutResult.REFUSED_QUOTA
        if self._key_bytes.get(key, 0) + size > limits.bytes_per_key:
            return PutResult.REFUSED_QUOTA
        if self._source_bytes.get(source, 0) + size > limits.bytes_per_source:
            return PutResult.REFUSED_QUOTA
        if not record.stamp and (
            self._source_key.get((source, key), 0) >= limits.unstamped_per_source_key
        ):
            return PutResult.REFUSED_QUOTA
        return PutResult.STORED

    def _insert(self, key: bytes, held: _Held) -> None:
        self._records.setdefault(key, {})[held.record.id] = held
        self._key_bytes[key] = self._key_bytes.get(key, 0) + held.size
        self._source_bytes[held.source] = self._source_bytes.get(held.source, 0) + held.size
        if not held.record.stamp:
            pair = (held.source, key)
            self._source_key[pair] = self._source_key.get(pair, 0) + 1
        self.total_bytes += held.size
        heapq.heappush(self._expiry, (held.record.expires_at, key, held.record.id))

    def _remove(self, key: bytes, record_id: bytes) -> _Held | None:
        held = self._records.get(key)
        if held is None:
            return None
        h = held.pop(record_id, None)
        if h is None:
            return None
        if not held:
            del self._records[key]
        self._key_bytes[key] = self._key_bytes.get(key, 0) - h.size
        if self._key_bytes[key] <= 0:
            del self._key_bytes[key]
        if not h.record.stamp:
            pair = (h.source, key)
            left = self._source_key.get(pair, 0) - 1
            if left > 0:
                self._source_key[pair] = left
            else:
                self._source_key.pop(pair, None)
        remaining = self._source_bytes.get(h.source, 0) - h.size
        if remaining > 0:
            self._source_bytes[h.source] = remaining
        else:
            self._source_bytes.pop(h.source, None)
        self.total_bytes -= h.size
        return h

    def _evict_over_total(self) -> list[tuple[bytes, bytes]]:
        """Evict the records closest to expiry while over the total; the caller
        persists the evictions (put_many, in the commit of the records that caused them)."""
        evicted: list[tuple[bytes, bytes]] = []
        while self.total_bytes > self.limits.total_bytes and self._expiry:
            _, key, rid = heapq.heappop(self._expiry)
            if self._remove(key, rid) is not None:
                evicted.append((key, rid))
                self.counters["evicted"] = self.counters.get("evicted", 0) + 1
        return evicted

    def delete(self, key: bytes, record_ids: list[bytes], now: float) -> int:
        """Owner-authorised delete: remove and tombstone until the record would expire."""
        stones = self._tombstones.setdefault(key, {})
        removed = 0
        for rid in record_ids:
            h = self._remove(key, rid)
            if h is not None:
                removed += 1
            if rid in stones or len(stones) >= self.limits.tombstones_per_key:
                continue
            until = h.record.expires_at if h is not None else int(now) + MAX_TTL
            stones[rid] = until
            if self.persist is not None:
                self.persist.tombstone_put(key, rid, until)
        if self.persist is not None and removed:
            self.persist.held_delete(key, list(record_ids))
        return removed

    def expire(self, now: float) -> int:
        """Drop expired records and tombstones; returns how many records went."""
        gone: list[tuple[bytes, bytes]] = []
        while self._expiry and self._expiry[0][0] <= now:
            _, key, rid = heapq.heappop(self._expiry)
            if self._remove(key, rid) is not None:
                gone.append((key, rid))
        for key in list(self._tombstones):
            stones = self._tombstones[key]
            for rid in [r for r, until in stones.items() if until <= now]:
                del stones[rid]
            if not stones:
                del self._tombstones[key]
        if self.persist is not None:
            self.persist.held_purge_expired(now)
        return len(gone)

    def load(self, now: float) -> int:
        """Reload what a previous run held (after a restart)."""
        if self.persist is None:
            return 0
        loaded = 0
        for key, rid, until in self.persist.tombstones_load(now):
            self._tombstones.setdefault(key, {})[rid] = until
        for key, _rid, _expires, packed in self.persist.held_load(now):
            try:
                record = Record.unpack(packed)
            except MeshError:
                continue
            if self._admit(key, record, now, "") is PutResult.STORED:
                self._insert(key, _Held(record, ""))
                loaded += 1
        return loaded

    def statistics(self) -> dict[str, int]:
        stats = {f"put_{k}": v for k, v in self.counters.items()}
        stats.update(
            keys=len(self._records),
            records=len(self),
            bytes=self.total_bytes,
            tombstones=sum(len(t) for t in self._tombstones.values()),
        )
        return stats
