"""Held records: what a replica acknowledges is in its database, and the records of one
STORE request are written in one commit (mesh.dht.storage.RecordStorage.put_many)."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netutil import bounded, loopback_host

from mesh import crypto, envelope, vault, wire
from mesh.dht.server import DhtServer
from mesh.dht.storage import PutResult, RecordStorage, StorageLimits
from mesh.envelope import Record
from mesh.errors import StoreError
from mesh.identity import Identity
from mesh.store import Store

OWNER = Identity.generate()
SENDER = Identity.generate()


def record(text: str, ttl: int = 3600) -> Record:
    _, sealed = envelope.seal_message(SENDER, OWNER.public, "text", text.encode(), time.time(), ttl)
    return sealed


def open_store(path: Path, key: bytes | None) -> Store:
    return Store(path, key=key)


@pytest.fixture(params=["plain", "encrypted"])
def store_key(request: pytest.FixtureRequest) -> bytes | None:
    if request.param == "plain":
        return None
    return vault.sqlcipher_key(crypto.random_bytes(crypto.KEY_SIZE))


class Commits:
    """Counts the statements a Store's connection runs (its trace callback)."""

    def __init__(self, store: Store) -> None:
        self.statements: list[str] = []
        store._conn.set_trace_callback(self.statements.append)

    def count(self, word: str) -> int:
        return sum(1 for s in self.statements if s.lstrip().upper().startswith(word))

    @property
    def writes(self) -> int:
        """Commits: each COMMIT, and each write statement outside BEGIN ... COMMIT."""
        commits, inside = 0, False
        for statement in self.statements:
            word = statement.lstrip().split(None, 1)[0].upper()
            if word == "BEGIN":
                inside = True
            elif word in ("COMMIT", "ROLLBACK"):
                inside = False
                commits += word == "COMMIT"
            elif word in ("INSERT", "DELETE", "UPDATE") and not inside:
                commits += 1
        return commits


@pytest.fixture
def replica_store(tmp_path: Path, store_key: bytes | None) -> Iterator[tuple[Store, Path]]:
    path = tmp_path / "replica.db"
    store = open_store(path, store_key)
    yield store, path
    store.close()


async def test_an_acknowledged_store_is_in_the_database(
    tmp_path: Path, store_key: bytes | None
) -> None:
    """Each record a STORE answer calls STORED is found by a second connection opened
    right after the answer arrived: committed before the acknowledgment was sent."""
    path = tmp_path / "replica.db"
    store = open_store(path, store_key)
    replica = DhtServer(storage=RecordStorage(persist=store.held))
    client = DhtServer()
    try:
        address = await replica.listen(loopback_host(0))
        await client.listen(loopback_host(1))
        key = os.urandom(wire.KEY_SIZE)
        for batch in ([record("one")], [record(f"many {i}") for i in range(8)]):
            objs = [r.to_obj() for r in batch]
            reply = await bounded(client.rpc.call(address, "store", [key, objs]), 10)
            assert reply.result == [int(PutResult.STORED)] * len(batch)
            reader = open_store(path, store_key)  # another connection: sees only commits
            try:
                on_disk = {row.record_id for row in reader.held.held_load(time.time())}
            finally:
                reader.close()
            assert {r.id for r in batch} <= on_disk
    finally:
        await client.close()
        await replica.close()
        store.close()


async def test_a_store_request_of_many_records_is_one_commit(
    replica_store: tuple[Store, Path], store_key: bytes | None
) -> None:
    store, _ = replica_store
    replica = DhtServer(storage=RecordStorage(persist=store.held))
    client = DhtServer()
    try:
        address = await replica.listen(loopback_host(2))
        await client.listen(loopback_host(3))
        key = os.urandom(wire.KEY_SIZE)
        records = [record(f"burst {i}") for i in range(8)]
        commits = Commits(store)
        objs = [r.to_obj() for r in records]
        reply = await bounded(client.rpc.call(address, "store", [key, objs]), 10)
        assert reply.result == [int(PutResult.STORED)] * 8
        assert commits.count("COMMIT") == 1 < len(records)
        assert commits.writes == 1
        # A replay of the same request stores nothing and commits nothing.
        commits.statements.clear()
        reply = await bounded(client.rpc.call(address, "store", [key, objs]), 10)
        assert reply.result == [int(PutResult.DUPLICATE)] * 8
        assert commits.writes == 0
    finally:
        await client.close()
        await replica.close()
    reopened = RecordStorage(persist=store.held)
    assert reopened.load(time.time()) == 8
    assert all(reopened.has(key, r.id) for r in records)


async def test_a_mixed_store_request_answers_each_record(
    replica_store: tuple[Store, Path],
) -> None:
    """Bad, duplicate and good records in one request: one answer each, no crash, only
    the good new ones written (in one commit)."""
    store, _ = replica_store
    replica = DhtServer(storage=RecordStorage(persist=store.held))
    client = DhtServer()
    try:
        address = await replica.listen(loopback_host(4))
        await client.listen(loopback_host(5))
        key = os.urandom(wire.KEY_SIZE)
        good = [record("a"), record("b")]
        far = int(time.time()) + 10 * envelope.MAX_TTL
        tampered = dataclasses.replace(record("c"), expires_at=far)  # expiry too far
        wrong_id = dataclasses.replace(record("d"), id=os.urandom(len(good[0].id)))
        objs = [r.to_obj() for r in (good[0], tampered, good[0], wrong_id, good[1])]
        commits = Commits(store)
        reply = await bounded(client.rpc.call(address, "store", [key, objs]), 10)
        refused = int(PutResult.REFUSED_FORMAT)
        stored, dup = int(PutResult.STORED), int(PutResult.DUPLICATE)
        assert reply.result == [stored, refused, dup, refused, stored]
        assert commits.writes == 1
        held = {row.record_id for row in store.held.held_load(time.time())}
        assert held == {r.id for r in good}
    finally:
        await client.close()
        await replica.close()


def test_put_many_persists_evictions_in_the_same_commit(
    replica_store: tuple[Store, Path],
) -> None:
    """Over the total, the records closest to expiry go; a record of the batch evicted
    by a later one of the same batch is never written, an older one is deleted."""
    store, _ = replica_store
    size = len(record("x").ciphertext) + 64
    storage = RecordStorage(StorageLimits(total_bytes=3 * size), persist=store.held)
    key = os.urandom(wire.KEY_SIZE)
    now = time.time()
    oldest = record("oldest", ttl=600)
    assert storage.put(key, oldest, now) is PutResult.STORED
    batch = [record("soon", ttl=700), record("b", ttl=3000), record("c", ttl=3000)]
    batch.append(record("d", ttl=3000))
    commits = Commits(store)
    assert storage.put_many(key, batch, now) == [PutResult.STORED] * 4
    assert commits.writes == 1
    kept = {r.id for r in batch[1:]}
    assert set(storage.ids(key, now)) == kept
    assert {row.record_id for row in store.held.held_load(now)} == kept
    # "oldest" was on disk: deleted; "soon" (evicted by "d" in the same batch) never
    # was: neither written nor deleted.
    assert commits.count("DELETE") == 1 and commits.count("INSERT") == 3


def test_a_failed_commit_takes_the_records_back_out(
    replica_store: tuple[Store, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the disk refuses the write, the records are not kept in memory either: a retry
    of the STORE must find them new (and write them), never answer DUPLICATE."""
    store, _ = replica_store
    storage = RecordStorage(persist=store.held)
    key = os.urandom(wire.KEY_SIZE)
    records = [record("x"), record("y")]

    def refuse(*_args: object) -> None:
        raise StoreError("the disk is full")

    with monkeypatch.context() as patch:
        patch.setattr(store.held, "held_write", refuse)
        with pytest.raises(StoreError):
            storage.put_many(key, records, time.time())
    assert len(storage) == 0 and storage.total_bytes == 0
    assert storage.counters["stored"] == 0
    assert storage.put_many(key, records, time.time()) == [PutResult.STORED] * 2
    assert len(store.held.held_load(time.time())) == 2
