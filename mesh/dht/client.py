"""Client: what a peer asks of the replicas of a key (put, fetch, delete, subscribe).

A put stores on the k replicas a lookup finds and returns once a quorum acknowledged
(`Tally`); the replica set of a key is reused for REPLICA_SET_FRESH seconds. A fetch
asks FULL_PAGE_REPLICAS replicas for records and the rest for ids, pages in what is
missing, and repairs the replicas that miss records in the background. Deletes and
listens carry owner-signed requests built by the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from mesh import envelope, wire
from mesh.bounded import BoundedLru
from mesh.dht.protocol import Reply
from mesh.dht.replica import PUSHERS, Replica
from mesh.dht.routing import Peer
from mesh.dht.rpc import Rpc
from mesh.dht.storage import PutResult, RecordStorage
from mesh.envelope import OwnerRequest, Record
from mesh.errors import MeshError, NetworkError, RemoteProtocolError, UnreachableError
from mesh.tasks import TaskSet
from mesh.wire import Address

PUSH_SOURCES_MAX = 256  # addresses remembered per subscribed key (a bound, see Replica)

ACCEPTED = {PutResult.STORED, PutResult.DUPLICATE, PutResult.TOMBSTONED}
FULL_PAGE_REPLICAS = 2  # replicas asked for records in the first fetch round; others send ids
REPLICA_SET_FRESH = 30.0  # seconds a put reuses the replica set a lookup found
MAX_REPLICA_SETS = 256


class Tally:
    """Waits for replica answers: all of them; or a quorum plus a short grace; or, when
    `impatient_ok` and 4 x grace passed (the rest are probably dead), any answer.

    Stores are never impatient: an acknowledgement must mean a quorum holds the record
    (or every replica answered), or half the peers dying could lose it.
    """

    def __init__(
        self,
        futures: Sequence[asyncio.Future[Reply] | asyncio.Future[bool]],
        quorum: int,
        grace: float,
        impatient_ok: bool = True,
        accept: Callable[[Reply | bool], bool] | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.outstanding = len(futures)
        self.ok = 0
        self.quorum = max(1, min(quorum, len(futures)))
        self.grace = grace
        self.impatient = False
        self.started = self.loop.time()
        self.accept = accept  # what counts as an ok result; default: anything but False
        self._timer: asyncio.TimerHandle | None = None
        self._patience = (
            self.loop.call_later(4 * grace, self._lose_patience) if impatient_ok else None
        )
        if not futures:
            self.done.set_result(None)
        for f in futures:
            f.add_done_callback(self._one_done)

    def _one_done(self, f: asyncio.Future[Reply] | asyncio.Future[bool]) -> None:
        self.outstanding -= 1
        if not f.cancelled() and f.exception() is None:
            result = f.result()
            if (result is not False) if self.accept is None else self.accept(result):
                self.ok += 1
        if self.done.done():
            return
        if self.outstanding == 0 or (self.impatient and self.ok > 0):
            self.done.set_result(None)
        elif self.ok >= self.quorum and self._timer is None:
            # Stragglers get at most half as long again as the quorum took: a peer that
            # answers pings but drops stores (a black hole) costs 1.5x, not a whole grace.
            waited = self.loop.time() - self.started
            self._timer = self.loop.call_later(min(self.grace, waited / 2), self._expire)

    def _lose_patience(self) -> None:
        self.impatient = True
        if self.ok > 0:
            self._expire()

    def _expire(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    async def wait(self) -> None:
        try:
            await self.done
        finally:
            if self._patience is not None:
                self._patience.cancel()
            if self._timer is not None:
                self._timer.cancel()


class Client:
    __slots__ = (
        "listen_duration",
        "quorum",
        "replica",
        "replica_sets",
        "rpc",
        "storage",
        "tasks",
        "unrepairable",
        "wall",
    )

    def __init__(
        self,
        rpc: Rpc,
        replica: Replica,
        storage: RecordStorage,
        tasks: TaskSet,
        wall: Callable[[], float],
        *,
        quorum: int,
        listen_duration: int,
    ) -> None:
        self.rpc = rpc
        self.replica = replica
        self.storage = storage
        self.tasks = tasks
        self.wall = wall
        # Records the owner could not open (junk, a stranger's refused request): a fetch
        # never repairs them onto replicas that lack them (the owner marks them before
        # the repair task runs, right after the fetch returns).
        self.unrepairable: BoundedLru[bytes, None] = BoundedLru(4096)
        self.quorum = quorum
        self.listen_duration = listen_duration
        # key -> (loop time found, replicas): see put()
        self.replica_sets: BoundedLru[bytes, tuple[float, list[Peer]]] = BoundedLru(
            MAX_REPLICA_SETS
        )

    # -- put ----------------------------------------------------------------------

    async def put(self, key: bytes, records: list[Record]) -> int:
        """Store records on the replicas of `key`; returns how many replicas took all.

        The replica set of a key found by a lookup is reused for REPLICA_SET_FRESH
        seconds (a conversation sends to the same mailbox again and again); if the
        cached set no longer gives a quorum, a fresh lookup is made and used.
        """
        cached = self._cached_replica_set(key)
        if cached is not None:
            ok = await self._store_on_set(key, records, cached)
            if ok >= self.quorum:
                return ok
        targets = await self.rpc.lookup(key)
        ok = await self._store_on_set(key, records, targets)
        if ok == 0:
            # Our own copy alone is not delivery: the recipient may never reach us.
            raise UnreachableError("no peer is reachable: the message stays queued")
        if ok >= self.quorum:
            self.replica_sets.put(key, (self.rpc.now(), targets))
        return ok  # only peers count: our own copy leaves with us

    def _cached_replica_set(self, key: bytes) -> list[Peer] | None:
        entry = self.replica_sets.get(key)
        if entry is None:
            return None
        found_at, targets = entry
        if self.rpc.now() - found_at > REPLICA_SET_FRESH:
            del self.replica_sets[key]
            return None
        live = [p for p in targets if not self.rpc.is_dead(p)]
        return live if len(live) >= self.quorum else None

    async def _store_on_set(self, key: bytes, records: list[Record], targets: list[Peer]) -> int:
        if self.rpc.self_is_replica(key, targets):
            self._store_locally(key, records)  # a bonus copy; never counted as an ack
            targets = targets[: self.rpc.ksize - 1]
        chunks = chunk_records(records)
        if len(chunks) == 1:  # the usual case: one call per replica, judged by the tally
            futures = [self.rpc.call(p, "store", [key, chunks[0]]) for p in targets]
            tally = Tally(futures, self.quorum, self.rpc.grace, False, _store_accepted)
        else:
            stores = [store_on(self.rpc, p, key, records) for p in targets]
            tally = Tally(stores, self.quorum, self.rpc.grace, impatient_ok=False)
        await tally.wait()
        return tally.ok

    def _store_locally(self, key: bytes, records: list[Record]) -> None:
        now = self.wall()
        for record in records:
            self.replica.accept(key, record, now, "")

    # -- fetch and repair ---------------------------------------------------------

    async def fetch(self, key: bytes) -> list[Record]:
        """Every unexpired record any replica of `key` holds, union by id."""
        try:
            return await self._fetch_once(key)
        except UnreachableError:
            return await self._fetch_once(key)  # a fresh lookup routes around the dead

    async def _fetch_once(self, key: bytes) -> list[Record]:
        targets = await self.rpc.lookup(key)
        now = self.wall()
        have: dict[bytes, Record] = {r.id: r for r in self.storage.records(key, now)}
        calls = [
            self.rpc.call(p, "fetch", [key, i < FULL_PAGE_REPLICAS]) for i, p in enumerate(targets)
        ]
        tally = Tally(calls, self.quorum, self.rpc.grace)
        await tally.wait()
        if targets and tally.ok == 0 and not have:
            raise UnreachableError("no replica of this mailbox answered")
        held_by = collect_fetch(calls, targets, have)
        await self._fetch_missing(key, held_by, have)
        self.tasks.spawn(self._repair(key, held_by, dict(have)))
        return [r for r in have.values() if r.expires_at > now]

    async def _fetch_missing(
        self, key: bytes, held_by: dict[Peer, set[bytes]], have: dict[bytes, Record]
    ) -> None:
        for _ in range(16):  # each round pages at least one record in, or gives up
            missing = set().union(*held_by.values()) - set(have) if held_by else set()
            if not missing:
                return
            source = max(held_by, key=lambda p: len(held_by[p] & missing))
            wanted = sorted(held_by[source] & missing)[: wire.MAX_IDS]
            try:
                reply = await self.rpc.call(source, "get", [key, wanted])
                records = parse_records(reply.result)
            except MeshError:
                records = []
            got = [r for r in records if r.id in missing]
            if not got:
                held_by[source] -= missing  # it will not give them: ask someone else
                continue
            for record in got:
                have[record.id] = record

    async def _repair(
        self, key: bytes, held_by: dict[Peer, set[bytes]], have: dict[bytes, Record]
    ) -> None:
        now = self.wall()
        bad = self.unrepairable
        live = {rid: r for rid, r in have.items() if r.expires_at > now and rid not in bad}
        futures = []
        for peer, ids in held_by.items():
            missing = [live[rid] for rid in live.keys() - ids]
            if missing:
                futures.append(store_on(self.rpc, peer, key, missing))
        if futures:
            await asyncio.gather(*futures, return_exceptions=True)

    # -- delete, listen -----------------------------------------------------------

    async def delete(self, request: OwnerRequest) -> int:
        """Send an owner-signed delete to every replica; returns how many accepted."""
        targets = await self.rpc.lookup(request.mailbox_key)
        accepted = 0
        if self.rpc.self_is_replica(request.mailbox_key, targets):
            with contextlib.suppress(MeshError):
                self.replica.delete(request)
                accepted += 1
        obj = request.to_obj()
        calls = [self.rpc.call(p, "delete", [obj]) for p in targets]
        tally = Tally(calls, self.quorum, self.rpc.grace)
        await tally.wait()
        return accepted + tally.ok

    async def subscribe(
        self,
        key: bytes,
        make_request: Callable[[int], OwnerRequest],
        targets: list[Peer] | None = None,
        eager: set[bytes] | None = None,
    ) -> int:
        """Ask the replicas of `key` (or just `targets`) to push new records to us;
        returns how many agreed. The `eager` ones (default: the PUSHERS closest of the
        lookup) push every new record; the others only if they count themselves among
        the closest (see `Replica.push`)."""
        self.replica.own_keys.add(key)
        if targets is None:
            targets = await self.rpc.lookup(key)
        if eager is None:
            eager = {p.id for p in targets[:PUSHERS]}
        obj = make_request(self.listen_duration).to_obj()
        sources = self.replica.push_sources.get(key) or set()
        if len(sources) > PUSH_SOURCES_MAX:
            sources = set()  # replicas of long ago: start again from this subscription
        sources.update(p.address for p in targets)
        self.replica.push_sources.put(key, sources)
        calls = [self.rpc.call(p, "listen", [obj, p.id in eager]) for p in targets]
        tally = Tally(calls, self.quorum, self.rpc.grace)
        await tally.wait()
        return tally.ok

    async def keep_subscribed(
        self,
        key: bytes,
        make_request: Callable[[int], OwnerRequest],
        ready: asyncio.Event | None = None,
    ) -> None:
        """Renew the subscription before it expires, for as long as the node runs."""
        while True:
            with contextlib.suppress(MeshError):
                await self.subscribe(key, make_request)
            if ready is not None:
                ready.set()
            await asyncio.sleep(self.listen_duration / 2)


# -- shared with handover.py ------------------------------------------------------------


def store_on(
    rpc: Rpc, target: Peer | Address, key: bytes, records: list[Record]
) -> asyncio.Future[bool]:
    """One future per replica; its result is False if any record was refused."""
    calls = [rpc.call(target, "store", [key, chunk]) for chunk in chunk_records(records)]
    loop = asyncio.get_running_loop()
    outer: asyncio.Future[bool] = loop.create_future()
    gathered = asyncio.gather(*calls)

    def finish(g: asyncio.Future[list[Reply]]) -> None:
        exc = None if g.cancelled() else g.exception()  # always retrieve it
        if outer.done():
            return
        if g.cancelled() or exc is not None:
            outer.set_exception(exc or NetworkError("store cancelled"))
            return
        outer.set_result(all(_all_accepted(r.result) for r in g.result()))

    gathered.add_done_callback(finish)
    outer.add_done_callback(lambda f: f.cancelled() or f.exception())
    return outer


def collect_fetch(
    calls: list[asyncio.Future[Reply]], targets: list[Peer], have: dict[bytes, Record]
) -> dict[Peer, set[bytes]]:
    """Which replica listed which ids; records that came along go into `have`."""
    held_by: dict[Peer, set[bytes]] = {}
    for peer, call in zip(targets, calls, strict=True):
        if not call.done() or call.cancelled() or call.exception() is not None:
            continue
        try:
            ids, records = parse_fetch_result(call.result().result)
        except RemoteProtocolError:
            continue
        held_by[peer] = set(ids)
        for record in records:
            if record.id in held_by[peer]:
                have.setdefault(record.id, record)
    return held_by


def _store_accepted(reply: Reply | bool) -> bool:
    return type(reply) is Reply and _all_accepted(reply.result)


def _all_accepted(result: wire.Obj) -> bool:
    return type(result) is list and all(type(code) is int and code in ACCEPTED for code in result)


def chunk_records(records: list[Record]) -> list[list[wire.Obj]]:
    """Split records into store requests that each fit in one datagram."""
    chunks: list[list[wire.Obj]] = [[]]
    size = 0
    for record in records:
        cost = len(record.ciphertext) + 40
        if chunks[-1] and (size + cost > wire.PAGE_BUDGET or len(chunks[-1]) >= 8):
            chunks.append([])
            size = 0
        chunks[-1].append(record.to_obj())
        size += cost
    return [c for c in chunks if c] or [[]]


def parse_records(obj: wire.Obj) -> list[Record]:
    records = [Record.from_obj(o) for o in wire.check_list(obj, wire.MAX_IDS, "records")]
    if any(r.id != envelope.record_id_for(r.ciphertext) for r in records):
        # A forged id would shadow the real record of that id: refuse the whole answer.
        raise RemoteProtocolError("record id does not match its ciphertext")
    return records


def parse_fetch_result(obj: wire.Obj) -> tuple[list[bytes], list[Record]]:
    if type(obj) is not list or len(obj) != 2:
        raise RemoteProtocolError("fetch result must be [ids, records]")
    return wire.check_ids(obj[0]), parse_records(obj[1])
