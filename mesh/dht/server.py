"""DhtServer: the mailbox DHT of one peer (both the client and the replica side).

Client side: `put` stores records on the replicas of a key and returns how many
acknowledged; `fetch` asks every replica, unions by record id and repairs replicas that
miss records; `delete` and `subscribe` carry owner-signed requests. Replica side:
`handle_request` answers the RPCs of protocol.py synchronously.

Maintenance (expiry, republish to peers that became closer, listen renewal) runs in one
background task per server. Wall-clock time (record expiry) comes from `wall`, loop time
(timers) from the event loop, so the simulator can drive both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mesh import envelope, wire
from mesh.dht.lookup import Lookup
from mesh.dht.protocol import DhtProtocol, Reply
from mesh.dht.routing import Peer, RoutingTable
from mesh.dht.storage import PutResult, RecordStorage
from mesh.envelope import OwnerRequest, Record
from mesh.errors import (
    MeshError,
    NetworkError,
    RefusedError,
    RemoteProtocolError,
    UnreachableError,
)
from mesh.wire import Address

log = logging.getLogger(__name__)

ACCEPTED = {PutResult.STORED, PutResult.DUPLICATE, PutResult.TOMBSTONED}
FULL_PAGE_REPLICAS = 2  # replicas asked for records in the first fetch round; others send ids
RECEIVE_BUFFER = 1 << 20
DEAD_FOR = 30.0  # seconds an address that timed out is skipped by lookups
FORGET_FOR = 5.0  # seconds a peer that said goodbye is not re-admitted by its requests
VERIFY_DELAY = 1.0  # seconds between a stranger's first request and our ping to it
MAX_VERIFYING = 256  # strangers queued or being pinged at once (bounded: anyone can be one)
REPLICA_SET_FRESH = 30.0  # seconds a put reuses the replica set a lookup found
MAX_REPLICA_SETS = 256
PUSHERS = 4  # replicas that push a new record: those with fewer closer contacts
HEAD_FRESH = 60.0  # a bucket head that answered this recently is not pinged again
MAX_LISTENED_KEYS = 4096  # mailboxes with listeners; anyone can make keys, so bounded


Binder = Callable[
    [Callable[[], DhtProtocol], str, int], Awaitable[tuple[asyncio.BaseTransport, Address]]
]


async def bind_udp(
    factory: Callable[[], DhtProtocol], host: str, port: int
) -> tuple[asyncio.BaseTransport, Address]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(factory, local_addr=(host, port))
    sock = transport.get_extra_info("socket")
    with contextlib.suppress(OSError):
        # Fetch answers arrive in bursts of near-8 KiB datagrams from every replica at
        # once; the default buffer (~200 KiB) overflows and the kernel drops them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    name = transport.get_extra_info("sockname")
    return transport, (name[0], name[1])


@dataclass(frozen=True)
class DhtConfig:
    ksize: int = 20  # bucket size and replication factor; see docs/replication.md
    # Lookups keep 2 finds in flight and end when the 2 closest candidates answered:
    # at 300 peers that is 4.4 finds per lookup instead of 7.4 (alpha 3, confirm 3),
    # with the same replica set found in 200 of 200 trials (docs/replication.md).
    alpha: int = 2
    confirm: int = 2  # closest candidates that must answer before a lookup ends
    quorum: int = 10
    straggler_grace: float = 0.25
    rpc_timeout: float = 1.0
    rpc_retries: int = 1
    max_per_ip: int = 4  # contacts per IP, in the table and in each lookup (Sybil cap)
    listen_duration: int = 1800  # longest listen granted; subscribers renew half-way
    republish_interval: float = 600.0
    maintenance_interval: float = 30.0
    request_rate: float = 4000.0
    request_burst: float = 8000.0


class Tally:
    """Waits for replica answers: all of them; or a quorum plus a short grace; or, when
    `impatient_ok` and 4 x grace passed (the rest are probably dead), any answer.

    Stores are never impatient: an acknowledgement must mean a quorum holds the record
    (or every replica answered), or half the peers dying could lose it.
    """

    def __init__(
        self,
        futures: list[asyncio.Future[Any]],
        quorum: int,
        grace: float,
        impatient_ok: bool = True,
        accept: Callable[[Any], bool] | None = None,
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

    def _one_done(self, f: asyncio.Future[Any]) -> None:
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


class DhtServer:
    def __init__(
        self,
        node_id: bytes | None = None,
        config: DhtConfig | None = None,
        storage: RecordStorage | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.node_id = node_id or os.urandom(wire.NODE_ID_SIZE)
        self.config = config or DhtConfig()
        self.storage = storage if storage is not None else RecordStorage()
        self.wall = wall
        self.table = RoutingTable(self.node_id, self.config.ksize, self.config.max_per_ip)
        self.protocol: DhtProtocol | None = None
        self.address: Address | None = None
        # key -> listener address -> (until, eager); see _push
        self.listeners: dict[bytes, dict[Address, tuple[float, bool]]] = {}
        self.own_keys: set[bytes] = set()
        self.on_push: Callable[[bytes, Record], None] | None = None
        self.on_new_contact: Callable[[Peer], None] | None = None
        self._verified: OrderedDict[Address, None] = OrderedDict()
        self._dead: OrderedDict[Address, float] = OrderedDict()
        self._forgotten: dict[Address, float] = {}  # address -> until (loop time)
        self._heard_since: dict[Address, float] = {}  # address -> loop time last heard from
        self.srtt = 0.005  # smoothed round-trip time, seconds
        self._verifying: set[Address] = set()
        self._moved: dict[bytes, Peer] = {}  # id -> where it answered from since
        self._thin_lookup_size = -1  # table size at the last thin-table lookup
        self._to_verify: dict[Address, bytes] = {}  # strangers to ping after VERIFY_DELAY
        self._newcomers: list[Peer] = []
        # key -> (loop time found, replicas): see put()
        self._replica_sets: OrderedDict[bytes, tuple[float, list[Peer]]] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._transport: asyncio.BaseTransport | None = None
        self._handlers: dict[str, Callable[[list[Any], bytes, Address], Any]] = {
            "ping": self._rpc_ping,
            "find": self._rpc_find,
            "store": self._rpc_store,
            "fetch": self._rpc_fetch,
            "get": self._rpc_get,
            "delete": self._rpc_delete,
            "listen": self._rpc_listen,
            "push": self._rpc_push,
        }

    # -- lifecycle ----------------------------------------------------------------

    def make_protocol(self) -> DhtProtocol:
        c = self.config
        self.protocol = DhtProtocol(
            self.node_id,
            self,
            timeout=c.rpc_timeout,
            retries=c.rpc_retries,
            rate=c.request_rate,
            burst=c.request_burst,
        )
        self.protocol.call_done = self._note_result
        return self.protocol

    async def listen(self, host: str, port: int = 0, bind: Binder | None = None) -> Address:
        """Bind a UDP socket (or, with `bind`, an endpoint of another network such as
        the simulator's) and start maintenance."""
        transport, self.address = await (bind or bind_udp)(self.make_protocol, host, port)
        self._transport = transport
        self.start_maintenance()
        return self.address

    def start_maintenance(self) -> None:
        self.spawn(self._maintenance())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.protocol is not None:
            self.protocol.cancel_all()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, MeshError):
                log.error("background task failed: %r", exc)

    def statistics(self) -> dict[str, int]:
        stats = dict(self.protocol.statistics()) if self.protocol else {}
        stats.update(self.storage.statistics())
        stats["contacts"] = len(self.table)
        stats["listeners"] = sum(len(v) for v in self.listeners.values())
        return stats

    # -- calls ----------------------------------------------------------------------

    def _call(
        self, contact: Peer | Address, method: str, args: list[Any], retries: int | None = None
    ) -> asyncio.Future[Reply]:
        assert self.protocol is not None, "server is not listening"
        addr = contact.address if isinstance(contact, Peer) else contact
        return self.protocol.call(addr, method, args, retries=retries, context=contact)

    def _note_result(
        self, contact: Peer | Address, addr: Address, started: float, fut: asyncio.Future[Reply]
    ) -> None:
        """Every call's outcome (the protocol's `call_done`): round-trip time, dead peers."""
        if fut.cancelled():
            return
        exc = fut.exception()
        now = self.protocol.loop.time() if self.protocol is not None else 0.0
        if exc is None:
            self.srtt += 0.125 * (min(now - started, 1.0) - self.srtt)
        elif isinstance(exc, NetworkError):
            if self._heard_since.get(addr, -1.0) > started:
                return  # heard from since (it restarted on the same address, say)
            self._dead[addr] = now + DEAD_FOR
            self._dead.move_to_end(addr)
            if len(self._dead) > 4096:
                self._dead.popitem(last=False)
            if isinstance(contact, Peer):
                self.table.remove_contact(contact)
                moved = self._moved.pop(contact.id, None)
                fresh = moved is not None and now - moved.last_seen < HEAD_FRESH
                if moved is not None and fresh and contact.id not in self.table:
                    self._admit(moved, moved.last_seen)  # it restarted there

    def is_dead(self, contact: Peer) -> bool:
        until = self._dead.get(contact.address)
        if until is None:
            return False
        if until < asyncio.get_running_loop().time():
            del self._dead[contact.address]
            return False
        return True

    @property
    def grace(self) -> float:
        """How long to wait for stragglers once a quorum answered: a few RTTs."""
        return min(self.config.straggler_grace, self.soft_timeout)

    @property
    def soft_timeout(self) -> float:
        return min(self.config.rpc_timeout, max(0.05, 4 * self.srtt))

    def ping(self, addr: Address) -> asyncio.Future[Reply]:
        return self._call(addr, "ping", [])

    def introduce(self, addr: Address) -> asyncio.Future[Reply]:
        """Ping a peer found out of band (mDNS, the user); that also undoes an earlier
        `forget` of its address: it is back."""
        self._forgotten.pop(addr, None)
        return self.ping(addr)

    async def bootstrap(self, addresses: Iterable[Address]) -> int:
        """Ping the given peers, then look ourselves up to fill the routing table."""
        pings = [self.ping(a) for a in addresses]
        if pings:
            await asyncio.gather(*pings, return_exceptions=True)
        if len(self.table) == 0:
            return 0
        await self.lookup(self.node_id, confirm=self.config.ksize)
        await self.refresh_buckets()
        return len(self.table)

    async def refresh_buckets(self) -> None:
        """Look up a random id in every bucket but our own, so far regions are known."""
        lookups: list[bytes] = []
        for bucket in self.table.buckets:
            low, high = bucket.range
            if low <= self.table.own_long_id <= high:
                continue
            lookups.append(random.randint(low, min(high, 2**160 - 1)).to_bytes(20, "big"))
        for target in lookups[-8:]:  # one at a time: a joining node must not burst
            with contextlib.suppress(MeshError):
                await self.lookup(target)

    async def lookup(self, target: bytes, confirm: int | None = None) -> list[Peer]:
        c = self.config
        seeds = self.table.find_neighbors(target, c.ksize)
        lookup = Lookup(
            target,
            self.node_id,
            seeds,
            lambda contact, t: self._call(contact, "find", [t]),
            k=c.ksize,
            alpha=c.alpha,
            confirm=c.confirm if confirm is None else confirm,
            soft_timeout=self.soft_timeout,
            is_dead=self.is_dead,
            max_per_ip=c.max_per_ip,
        )
        return await lookup.run()

    def _self_is_replica(self, key: bytes, targets: list[Peer]) -> bool:
        if len(targets) < self.config.ksize:
            return True
        k = int.from_bytes(key, "big")
        return (self.table.own_long_id ^ k) < (targets[-1].long_id ^ k)

    def _closer_contacts(self, key: bytes, limit: int) -> int:
        """How many contacts of our table are closer to `key` than we are (up to limit)."""
        k = int.from_bytes(key, "big")
        mine = self.table.own_long_id ^ k
        closer = 0
        for contact in self.table.by_id.values():
            if contact.long_id ^ k < mine:
                closer += 1
                if closer >= limit:
                    break
        return closer

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
            if ok >= self.config.quorum:
                return ok
        targets = await self.lookup(key)
        ok = await self._store_on_set(key, records, targets)
        if ok == 0:
            # Our own copy alone is not delivery: the recipient may never reach us.
            raise UnreachableError("no peer is reachable: the message stays queued")
        if ok >= self.config.quorum:
            self._replica_sets[key] = (asyncio.get_running_loop().time(), targets)
            self._replica_sets.move_to_end(key)
            if len(self._replica_sets) > MAX_REPLICA_SETS:
                self._replica_sets.popitem(last=False)
        return ok  # only peers count: our own copy leaves with us

    def _cached_replica_set(self, key: bytes) -> list[Peer] | None:
        entry = self._replica_sets.get(key)
        if entry is None:
            return None
        found_at, targets = entry
        if asyncio.get_running_loop().time() - found_at > REPLICA_SET_FRESH:
            del self._replica_sets[key]
            return None
        live = [c for c in targets if not self.is_dead(c)]
        return live if len(live) >= self.config.quorum else None

    async def _store_on_set(self, key: bytes, records: list[Record], targets: list[Peer]) -> int:
        if self._self_is_replica(key, targets):
            self._store_locally(key, records)  # a bonus copy; never counted as an ack
            targets = targets[: self.config.ksize - 1]
        chunks = chunk_records(records)
        if len(chunks) == 1:  # the usual case: one call per replica, judged by the tally
            futures = [self._call(c, "store", [key, chunks[0]]) for c in targets]
            tally = Tally(futures, self.config.quorum, self.grace, False, _store_accepted)
        else:
            futures = [self._store_on(c, key, records) for c in targets]
            tally = Tally(futures, self.config.quorum, self.grace, impatient_ok=False)
        await tally.wait()
        return tally.ok

    def _store_locally(self, key: bytes, records: list[Record]) -> None:
        now = self.wall()
        for record in records:
            self._accept_record(key, record, now, "")

    def _store_on(
        self, contact: Peer | Address, key: bytes, records: list[Record]
    ) -> asyncio.Future[Any]:
        """One future per replica; its result is False if any record was refused."""
        calls = [self._call(contact, "store", [key, chunk]) for chunk in chunk_records(records)]
        loop = asyncio.get_running_loop()
        outer: asyncio.Future[Any] = loop.create_future()
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

    # -- fetch and repair -----------------------------------------------------------

    async def fetch(self, key: bytes) -> list[Record]:
        """Every unexpired record any replica of `key` holds, union by id."""
        try:
            return await self._fetch_once(key)
        except UnreachableError:
            return await self._fetch_once(key)  # a fresh lookup routes around the dead

    async def _fetch_once(self, key: bytes) -> list[Record]:
        targets = await self.lookup(key)
        now = self.wall()
        have: dict[bytes, Record] = {r.id: r for r in self.storage.records(key, now)}
        calls = [
            self._call(c, "fetch", [key, i < FULL_PAGE_REPLICAS]) for i, c in enumerate(targets)
        ]
        tally = Tally(calls, self.config.quorum, self.grace)
        await tally.wait()
        if targets and tally.ok == 0 and not have:
            raise UnreachableError("no replica of this mailbox answered")
        held_by = self._collect_fetch(calls, targets, have)
        await self._fetch_missing(key, held_by, have)
        self.spawn(self._repair(key, held_by, dict(have)))
        return [r for r in have.values() if r.expires_at > now]

    def _collect_fetch(
        self, calls: list[asyncio.Future[Reply]], targets: list[Peer], have: dict[bytes, Record]
    ) -> dict[Peer, set[bytes]]:
        held_by: dict[Peer, set[bytes]] = {}
        for contact, call in zip(targets, calls, strict=True):
            if not call.done() or call.cancelled() or call.exception() is not None:
                continue
            try:
                ids, records = parse_fetch_result(call.result().result)
            except RemoteProtocolError:
                continue
            held_by[contact] = set(ids)
            for record in records:
                if record.id in held_by[contact]:
                    have.setdefault(record.id, record)
        return held_by

    async def _fetch_missing(
        self, key: bytes, held_by: dict[Peer, set[bytes]], have: dict[bytes, Record]
    ) -> None:
        for _ in range(16):  # each round pages at least one record in, or gives up
            missing = set().union(*held_by.values()) - set(have) if held_by else set()
            if not missing:
                return
            source = max(held_by, key=lambda c: len(held_by[c] & missing))
            wanted = sorted(held_by[source] & missing)[: wire.MAX_IDS]
            try:
                reply = await self._call(source, "get", [key, wanted])
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
        live = {rid: r for rid, r in have.items() if r.expires_at > now}
        futures = []
        for contact, ids in held_by.items():
            missing = [live[rid] for rid in live.keys() - ids]
            if missing:
                futures.append(self._store_on(contact, key, missing))
        if futures:
            await asyncio.gather(*futures, return_exceptions=True)

    # -- delete, listen -------------------------------------------------------------

    async def delete(self, request: OwnerRequest) -> int:
        """Send an owner-signed delete to every replica; returns how many accepted."""
        targets = await self.lookup(request.mailbox_key)
        obj = request.to_obj()
        accepted = 0
        if self._self_is_replica(request.mailbox_key, targets):
            with contextlib.suppress(MeshError):
                self._rpc_delete([obj], self.node_id, ("", 0))
                accepted += 1
        calls = [self._call(c, "delete", [obj]) for c in targets]
        tally = Tally(calls, self.config.quorum, self.grace)
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
        the closest (see `_push`)."""
        self.own_keys.add(key)
        if targets is None:
            targets = await self.lookup(key)
        if eager is None:
            eager = {c.id for c in targets[:PUSHERS]}
        obj = make_request(self.config.listen_duration).to_obj()
        calls = [self._call(c, "listen", [obj, c.id in eager]) for c in targets]
        tally = Tally(calls, self.config.quorum, self.grace)
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
            await asyncio.sleep(self.config.listen_duration / 2)

    # -- maintenance ----------------------------------------------------------------

    async def _maintenance(self) -> None:
        interval = self.config.maintenance_interval
        next_republish = asyncio.get_running_loop().time() + self.config.republish_interval
        while True:
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))
            now = self.wall()
            self.storage.expire(now)
            self._expire_listeners(now)
            size = len(self.table)
            if 0 < size < self.config.ksize and size != self._thin_lookup_size:
                # A thin table: meet more peers, once per change of the table (in a
                # network smaller than k, a lookup every round finds no one new).
                self._thin_lookup_size = size
                with contextlib.suppress(MeshError):
                    await self.lookup(self.node_id, confirm=self.config.ksize)
            if asyncio.get_running_loop().time() >= next_republish:
                next_republish += self.config.republish_interval
                await self.republish()

    async def republish(self) -> None:
        """Hand every held record to the current replicas that lack it.

        A record that most replicas refuse as deleted (TOMBSTONED: its owner deleted it
        while we were away, or we missed the delete) is deleted here too; otherwise we
        would offer it again every round until it expires (days)."""
        for key in self.storage.held_keys():
            with contextlib.suppress(MeshError):
                targets = await self.lookup(key)
                calls = [self._call(c, "fetch", [key, False]) for c in targets]
                await asyncio.gather(*calls, return_exceptions=True)
                held_by = self._collect_fetch(calls, targets, {})
                now = self.wall()
                records = {r.id: r for r in self.storage.records(key, now)}
                stores: list[tuple[list[bytes], asyncio.Future[Reply]]] = []
                for contact, ids in held_by.items():
                    missing = [r for rid, r in records.items() if rid not in ids]
                    start = 0
                    for chunk in chunk_records(missing) if missing else []:
                        chunk_ids = [r.id for r in missing[start : start + len(chunk)]]
                        start += len(chunk)
                        stores.append((chunk_ids, self._call(contact, "store", [key, chunk])))
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

    def _expire_listeners(self, now: float) -> None:
        for key, subs in list(self.listeners.items()):
            for addr in [a for a, (until, _) in subs.items() if until <= now]:
                del subs[addr]
            if not subs:
                del self.listeners[key]

    # -- replica side: RPC handlers -------------------------------------------------

    def handle_request(
        self, method: str, args: list[Any], sender: bytes, addr: Address
    ) -> tuple[int, Any]:
        known = self.table.get(sender)
        if known is not None:
            if known.address == addr:
                self._heard(addr)  # a late timeout of an older call must not evict it
            else:
                self._verify(addr)  # the id at a new address: see on_round_trip
        elif method == "listen":
            self._verify(addr)  # at once: pushes go only to verified addresses
        elif self.table.would_accept(sender, addr[0]):  # only if it could enter the table
            if method == "ping" or (method == "find" and args[0] == sender):
                # A joining peer introduces itself, or looks up its own id (it asks its
                # future neighbours): meet it now, or peers that join together would
                # not learn of each other.
                self._verify(addr)
            else:
                self._verify_later(addr, sender)
        return wire.OK, self._handlers[method](args, sender, addr)

    def on_round_trip(self, sender: bytes, addr: Address) -> None:
        self._dead.pop(addr, None)
        self._heard(addr)
        known = self.table.get(sender)
        now = self.protocol.loop.time() if self.protocol is not None else 0.0
        if known is None and self._forgotten:
            until = self._forgotten.get(addr)
            if until is not None and until > now:
                return  # it said goodbye: an answer to a call made before does not undo it
        if known is not None and known.address == addr:
            # Answered within the last second (20 stores, a lookup): its place in the
            # table and in `_verified` is as fresh as it needs to be.
            if now - known.last_seen >= 1.0:
                self._note_verified(addr)
                self.table.add_contact(known)
            known.last_seen = now
            if self._moved:
                self._moved.pop(sender, None)  # the old address answered: it stays
            return
        self._note_verified(addr)
        if known is not None:
            if known.address not in self._dead:
                # The same id answers from a new address (a restart on another port, or
                # someone claiming the id). The old address keeps the place until it
                # fails a ping; then the new one takes it at once (`_note_result`).
                moved = Peer(sender, addr[0], addr[1])
                moved.last_seen = now
                self._moved[sender] = moved
                if len(self._moved) > MAX_VERIFYING:
                    self._moved.pop(next(iter(self._moved)))
                self._check_alive(known)
                return
            self.table.remove_contact(known)  # it restarted elsewhere: follow it
        self._admit(Peer(sender, addr[0], addr[1]), now)

    def _note_verified(self, addr: Address) -> None:
        """`addr` answered a round trip: pushes may go there (bounded, least recent out)."""
        self._verified[addr] = None
        self._verified.move_to_end(addr)
        if len(self._verified) > 4096:
            self._verified.popitem(last=False)

    def _admit(self, contact: Peer, now: float) -> None:
        """A stranger that answered a round trip: into the table, or its bucket's least
        recently seen contact gets pinged."""
        contact.last_seen = now
        head = self.table.add_contact(contact)
        if contact.id in self.table:
            self._welcome(contact)
            if self.on_new_contact is not None:
                self.on_new_contact(contact)
        elif head is not None and now - head.last_seen > HEAD_FRESH:
            # Kademlia keeps a full bucket's old contacts while they live; one that
            # answered within HEAD_FRESH seconds is alive, so no ping (measured: these
            # pings were half the datagrams of a send at 300 peers).
            self._check_alive(head)

    def forget(self, addr: Address) -> None:
        """Drop every contact at `addr` and ignore its requests for FORGET_FOR seconds."""
        for contact in list(self.table.contacts()):
            if contact.address == addr:
                self.table.remove_contact(contact)
        if self.protocol is not None:
            self._forgotten[addr] = self.protocol.loop.time() + FORGET_FOR
            if len(self._forgotten) > 1024:
                self._forgotten.pop(next(iter(self._forgotten)))

    def _heard(self, addr: Address) -> None:
        if self.protocol is not None:
            self._heard_since[addr] = self.protocol.loop.time()
            if len(self._heard_since) > 4096:
                self._heard_since.pop(next(iter(self._heard_since)))

    def _verify(self, addr: Address) -> None:
        """A stranger talked to us: it enters the table only once it answers a ping."""
        # (An address verified before is verified again: the contact may have been dropped
        # after a timeout, and a peer that came back must be able to re-enter.)
        if addr in self._verifying or len(self._verifying) >= MAX_VERIFYING:
            return
        until = self._forgotten.get(addr)
        if until is not None and self.protocol is not None:
            if until > self.protocol.loop.time():
                return  # it said goodbye: what it still sends does not bring it back
            del self._forgotten[addr]
        self._verifying.add(addr)
        self.ping(addr).add_done_callback(lambda _f: self._verifying.discard(addr))

    def _verify_later(self, addr: Address, sender: bytes) -> None:
        """Verify a stranger after VERIFY_DELAY, once: a newcomer's first requests come
        in a burst (a lookup, then stores), and its ping must not compete with the
        answers it waits for. It may also have entered the table by then (our own
        lookups meet it), and then no ping is needed at all."""
        if addr in self._to_verify or len(self._to_verify) >= MAX_VERIFYING:
            return
        self._to_verify[addr] = sender
        if len(self._to_verify) == 1 and self.protocol is not None:
            self.protocol.loop.call_later(VERIFY_DELAY, self._verify_batch)

    def _verify_batch(self) -> None:
        pending, self._to_verify = self._to_verify, {}
        if self.protocol is None or self.protocol.transport is None:
            return
        for addr, sender in pending.items():
            if self.table.would_accept(sender, addr[0]):
                self._verify(addr)

    def _check_alive(self, head: Peer) -> None:
        if head.address in self._verifying or len(self._verifying) >= MAX_VERIFYING:
            return
        self._verifying.add(head.address)
        self._call(head, "ping", []).add_done_callback(
            lambda _f: self._verifying.discard(head.address)
        )

    def _welcome(self, newcomer: Peer) -> None:
        """Queue a newcomer for the hand-over of records it is now a replica of."""
        if not self.storage.held_keys() or len(self._newcomers) >= 256:
            return
        self._newcomers.append(newcomer)
        if len(self._newcomers) == 1:
            self.spawn(self._welcome_batch())

    async def _welcome_batch(self) -> None:
        """Hand newcomers the records of keys they are now replicas of. Batched: a join
        makes dozens of peers meet dozens of others at once. (kademlia hashes the
        already-hashed key here, so its newcomers get almost nothing.)"""
        await asyncio.sleep(self.grace)
        newcomers, self._newcomers = self._newcomers, []
        now = self.wall()
        for key in self.storage.held_keys():
            k = int.from_bytes(key, "big")
            neighbors = self.table.find_neighbors(key, self.config.ksize)
            mine = self.table.own_long_id ^ k
            closer = sum(1 for n in neighbors if (n.long_id ^ k) < mine)
            for newcomer in newcomers:
                if newcomer not in neighbors or newcomer.id not in self.table:
                    continue
                if closer - int((newcomer.long_id ^ k) < mine) > 0:
                    continue  # a closer replica will hand it over
                records = self.storage.records(key, now)
                if records:
                    self._store_on(newcomer, key, records)

    def _rpc_ping(self, args: list[Any], sender: bytes, addr: Address) -> None:
        return None

    def _rpc_find(self, args: list[Any], sender: bytes, addr: Address) -> list[Any]:
        return [
            c.to_tuple()
            for c in self.table.find_neighbors(args[0], wire.MAX_CONTACTS, exclude=sender)
        ]

    def _rpc_store(self, args: list[Any], sender: bytes, addr: Address) -> list[int]:
        key, objs = args
        now = self.wall()
        records = [Record.from_obj(obj) for obj in objs]
        return [int(self._accept_record(key, r, now, addr[0])) for r in records]

    def _accept_record(self, key: bytes, record: Record, now: float, source: str) -> PutResult:
        try:
            envelope.check_record_format(record, now)
        except RemoteProtocolError:
            self.storage.counters["refused_format"] += 1
            return PutResult.REFUSED_FORMAT
        result = self.storage.put(key, record, now, source)
        if result is PutResult.STORED:
            self._push(key, record, now)
        return result

    def _push(self, key: bytes, record: Record, now: float) -> None:
        subs = self.listeners.get(key)
        if key in self.own_keys and self.on_push is not None:
            self.on_push(key, record)
        if not subs:
            return
        # Not every replica pushes (20 pushes of one record would be waste): those the
        # subscriber ranked among its PUSHERS closest (eager), and those that count
        # fewer than PUSHERS closer contacts in their own table. Two views, so a
        # replica set that the sender and the recipient see differently still pushes.
        close: bool | None = None
        obj: list[object] | None = None
        for addr, (until, eager) in subs.items():
            if until <= now or addr not in self._verified:
                continue
            if not eager:
                if close is None:
                    close = self._closer_contacts(key, PUSHERS) < PUSHERS
                if not close:
                    continue
            if obj is None:
                obj = record.to_obj()
            self._call(addr, "push", [key, obj], retries=1)

    def _rpc_fetch(self, args: list[Any], sender: bytes, addr: Address) -> list[Any]:
        key, with_records = args
        now = self.wall()
        ids = self.storage.ids(key, now)
        if not with_records:
            return [ids, []]
        budget = wire.PAGE_BUDGET - 18 * len(ids)
        return [ids, page_of(self.storage.records(key, now), budget)]

    def _rpc_get(self, args: list[Any], sender: bytes, addr: Address) -> list[Any]:
        key, ids = args
        return page_of(self.storage.get(key, ids, self.wall()), wire.PAGE_BUDGET)

    def _rpc_delete(self, args: list[Any], sender: bytes, addr: Address) -> int:
        request = self._owner_request(args, "delete")
        ids = envelope.parse_delete_payload(request.payload)
        return self.storage.delete(request.mailbox_key, ids, self.wall())

    def _rpc_listen(self, args: list[Any], sender: bytes, addr: Address) -> int:
        request = self._owner_request(args, "listen")
        duration = min(envelope.parse_listen_payload(request.payload), self.config.listen_duration)
        if request.mailbox_key not in self.listeners and len(self.listeners) >= MAX_LISTENED_KEYS:
            raise RefusedError("too many mailboxes with listeners")
        subs = self.listeners.setdefault(request.mailbox_key, {})
        if addr not in subs and len(subs) >= 8:
            raise RefusedError("too many listeners on this key")
        subs[addr] = (self.wall() + duration, len(args) > 1 and args[1] is True)
        return duration

    def _owner_request(self, args: list[Any], op: str) -> OwnerRequest:
        request = OwnerRequest.from_obj(args[0])
        if request.op != op:
            raise RefusedError("wrong owner request kind")
        envelope.verify_owner_request(request, self.wall())
        return request

    def _rpc_push(self, args: list[Any], sender: bytes, addr: Address) -> None:
        key, obj = args
        if key not in self.own_keys or self.on_push is None:
            raise RefusedError("not subscribed to this key")
        record = Record.from_obj(obj)
        envelope.check_record_format(record, self.wall())
        self.on_push(key, record)


def _store_accepted(reply: Reply) -> bool:
    return _all_accepted(reply.result)


def _all_accepted(result: Any) -> bool:
    return type(result) is list and all(type(code) is int and code in ACCEPTED for code in result)


def chunk_records(records: list[Record]) -> list[list[Any]]:
    """Split records into store requests that each fit in one datagram."""
    chunks: list[list[Any]] = [[]]
    size = 0
    for record in records:
        cost = len(record.ciphertext) + 40
        if chunks[-1] and (size + cost > wire.PAGE_BUDGET or len(chunks[-1]) >= 8):
            chunks.append([])
            size = 0
        chunks[-1].append(record.to_obj())
        size += cost
    return [c for c in chunks if c] or [[]]


def page_of(records: list[Record], budget: int) -> list[Any]:
    page, size = [], 0
    for record in records:
        cost = len(record.ciphertext) + 40
        if size + cost > budget:
            break
        page.append(record.to_obj())
        size += cost
    return page


def parse_records(obj: Any) -> list[Record]:
    records = [Record.from_obj(o) for o in wire.check_list(obj, wire.MAX_IDS, "records")]
    if any(r.id != envelope.record_id_for(r.ciphertext) for r in records):
        # A forged id would shadow the real record of that id: refuse the whole answer.
        raise RemoteProtocolError("record id does not match its ciphertext")
    return records


def parse_fetch_result(obj: Any) -> tuple[list[bytes], list[Record]]:
    if type(obj) is not list or len(obj) != 2:
        raise RemoteProtocolError("fetch result must be [ids, records]")
    return wire.check_ids(obj[0]), parse_records(obj[1])
