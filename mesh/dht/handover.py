"""Handover: records move to the peers that should hold them.

- Welcome: a peer that entered our table and is now among the replicas of a key we hold
  gets that key's records from us (unless a closer replica will hand them over).
  Batched: a join makes dozens of peers meet dozens of others at once.
- Republish: every `republish_interval`, each held record is offered to the current
  replicas that lack it; a record most replicas refuse as deleted is deleted here too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from mesh.dht.client import chunk_records, collect_fetch, store_on
from mesh.dht.protocol import Reply
from mesh.dht.routing import Peer
from mesh.dht.rpc import Rpc
from mesh.dht.storage import PutResult, RecordStorage
from mesh.envelope import Record
from mesh.errors import MeshError
from mesh.tasks import TaskSet

MAX_NEWCOMERS = 256


class Handover:
    __slots__ = ("_newcomers", "rpc", "storage", "tasks", "wall")

    def __init__(
        self, rpc: Rpc, storage: RecordStorage, tasks: TaskSet, wall: Callable[[], float]
    ) -> None:
        self.rpc = rpc
        self.storage = storage
        self.tasks = tasks
        self.wall = wall
        self._newcomers: list[Peer] = []

    # -- welcome ------------------------------------------------------------------

    def welcome(self, newcomer: Peer) -> None:
        """Queue a newcomer for the hand-over of records it is now a replica of."""
        if not self.storage.held_keys() or len(self._newcomers) >= MAX_NEWCOMERS:
            return
        self._newcomers.append(newcomer)
        if len(self._newcomers) == 1:
            self.tasks.spawn(self._welcome_batch())

    async def _welcome_batch(self) -> None:
        """Hand newcomers the records of keys they are now replicas of. (kademlia hashes
        the already-hashed key here, so its newcomers get almost nothing.)"""
        await asyncio.sleep(self.rpc.grace)
        newcomers, self._newcomers = self._newcomers, []
        now = self.wall()
        table = self.rpc.table
        for key in self.storage.held_keys():
            k = int.from_bytes(key, "big")
            neighbors = table.find_neighbors(key, self.rpc.ksize)
            mine = table.own_long_id ^ k
            closer = sum(1 for n in neighbors if (n.long_id ^ k) < mine)
            for newcomer in newcomers:
                if newcomer not in neighbors or newcomer.id not in table:
                    continue
                if closer - int((newcomer.long_id ^ k) < mine) > 0:
                    continue  # a closer replica will hand it over
                records = self.storage.records(key, now)
                if records:
                    store_on(self.rpc, newcomer, key, records)

    # -- republish ----------------------------------------------------------------

    async def republish(self) -> None:
        """Hand every held record to the current replicas that lack it.

        A record that most replicas refuse as deleted (TOMBSTONED: its owner deleted it
        while we were away, or we missed the delete) is deleted here too; otherwise we
        would offer it again every round until it expires (days)."""
        for key in self.storage.held_keys():
            with contextlib.suppress(MeshError):
                await self._republish_key(key)

    async def _republish_key(self, key: bytes) -> None:
        targets = await self.rpc.lookup(key)
        calls = [self.rpc.call(p, "fetch", [key, False]) for p in targets]
        await asyncio.gather(*calls, return_exceptions=True)
        held_by = collect_fetch(calls, targets, {})
        now = self.wall()
        records = {r.id: r for r in self.storage.records(key, now)}
        stores: list[tuple[list[bytes], asyncio.Future[Reply]]] = []
        for peer, ids in held_by.items():
            missing = [r for rid, r in records.items() if rid not in ids]
            stores.extend(self._store_missing(peer, key, missing))
        await asyncio.gather(*(f for _, f in stores), return_exceptions=True)
        refused: dict[bytes, int] = {}
        for chunk_ids, fut in stores:
            if fut.cancelled() or fut.exception() is not None:
                continue
            codes = fut.result().result
            if type(codes) is list and len(codes) == len(chunk_ids):
                for rid, code in zip(chunk_ids, codes, strict=True):
                    if code == PutResult.TOMBSTONED:
                        refused[rid] = refused.get(rid, 0) + 1
        gone = [rid for rid, n in refused.items() if 2 * n > len(held_by)]
        if gone:
            self.storage.delete(key, gone, now)

    def _store_missing(
        self, peer: Peer, key: bytes, missing: list[Record]
    ) -> list[tuple[list[bytes], asyncio.Future[Reply]]]:
        """One store call per chunk of `missing`, with the ids each chunk carries."""
        stores = []
        start = 0
        for chunk in chunk_records(missing) if missing else []:
            chunk_ids = [r.id for r in missing[start : start + len(chunk)]]
            start += len(chunk)
            stores.append((chunk_ids, self.rpc.call(peer, "store", [key, chunk])))
        return stores
