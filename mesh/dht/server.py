"""DhtServer: the mailbox DHT of one peer, composed of parts that each do one job.

    protocol.DhtProtocol   the RPC engine: datagrams in and out, replies, timeouts
    liveness.Liveness      sans-IO book of who is alive, verified, dead, moved; owns
                           the routing table's membership
    rpc.Rpc                our calls and lookups; carries out the book's decisions
    replica.Replica        answers to the RPCs of others; listeners and pushes
    client.Client          put / fetch / delete / subscribe on the replicas of a key
    handover.Handover      welcome newcomers, republish

Each part gets what it needs through its constructor; none imports this module. This
class wires them, owns the lifecycle (listen, maintenance, close) and the background
tasks (one `TaskSet`), and is what `Node` and the tools use. Wall-clock time (record
expiry) comes from `wall`, loop time (timers) from the event loop, so the simulator can
drive both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from mesh import wire
from mesh.dht.client import (
    Client,
    Tally,
    chunk_records,
    parse_fetch_result,
    parse_records,
)
from mesh.dht.handover import Handover
from mesh.dht.liveness import VERIFY_DELAY, Liveness
from mesh.dht.protocol import DhtProtocol, Reply
from mesh.dht.replica import PUSHERS, Replica
from mesh.dht.routing import Peer, RoutingTable
from mesh.dht.rpc import Rpc
from mesh.dht.storage import RecordStorage
from mesh.envelope import OwnerRequest, Record
from mesh.errors import MeshError
from mesh.netkey import DatagramSealer, NetworkKey
from mesh.tasks import TaskSet
from mesh.wire import Address

__all__ = [
    "PUSHERS",
    "VERIFY_DELAY",
    "Binder",
    "DhtConfig",
    "DhtServer",
    "Tally",
    "bind_udp",
    "chunk_records",
    "parse_fetch_result",
    "parse_records",
]

RECEIVE_BUFFER = 1 << 20
T = TypeVar("T")

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


class DhtServer:
    def __init__(
        self,
        node_id: bytes | None = None,
        config: DhtConfig | None = None,
        storage: RecordStorage | None = None,
        wall: Callable[[], float] = time.time,
        network_key: NetworkKey | None = None,
    ) -> None:
        self.node_id = node_id or os.urandom(wire.NODE_ID_SIZE)
        self.network_key = network_key  # a private mesh: see netkey.py
        self.config = c = config or DhtConfig()
        self.storage = storage if storage is not None else RecordStorage()
        self.wall = wall
        self.table = RoutingTable(self.node_id, c.ksize, c.max_per_ip)
        self.liveness = Liveness(self.table)
        self.rpc = Rpc(
            self.node_id,
            self.table,
            self.liveness,
            ksize=c.ksize,
            alpha=c.alpha,
            confirm=c.confirm,
            rpc_timeout=c.rpc_timeout,
            straggler_grace=c.straggler_grace,
            max_per_ip=c.max_per_ip,
        )
        self.tasks = TaskSet()
        self.replica = Replica(self.rpc, self.liveness, self.storage, wall, c.listen_duration)
        self.client = Client(
            self.rpc,
            self.replica,
            self.storage,
            self.tasks,
            wall,
            quorum=c.quorum,
            listen_duration=c.listen_duration,
        )
        self.handover = Handover(self.rpc, self.storage, self.tasks, wall)
        self.rpc.on_admitted = self._admitted
        self.on_new_contact: Callable[[Peer], None] | None = None
        self.protocol: DhtProtocol | None = None
        self.address: Address | None = None
        self._transport: asyncio.BaseTransport | None = None

    # -- the parts' state, as the node and the tools see it --------------------------

    @property
    def listeners(self) -> dict[bytes, dict[Address, tuple[float, bool]]]:
        return self.replica.listeners

    @property
    def own_keys(self) -> set[bytes]:
        return self.replica.own_keys

    @property
    def on_push(self) -> Callable[[bytes, Record], None] | None:
        return self.replica.on_push

    @on_push.setter
    def on_push(self, callback: Callable[[bytes, Record], None] | None) -> None:
        self.replica.on_push = callback

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
            sealer=DatagramSealer(self.network_key) if self.network_key is not None else None,
            wall=self.wall,
        )
        self.rpc.attach(self.protocol)
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
        await self.tasks.close()
        if self.protocol is not None:
            self.protocol.cancel_all()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        return self.tasks.spawn(coro)

    def statistics(self) -> dict[str, int]:
        stats = dict(self.protocol.statistics()) if self.protocol else {}
        stats.update(self.storage.statistics())
        stats["contacts"] = len(self.table)
        stats["listeners"] = sum(len(v) for v in self.listeners.values())
        return stats

    # -- the protocol's RequestHandler ----------------------------------------------

    def handle_request(self, request: wire.Request, sender: bytes, addr: Address) -> wire.Obj:
        if self.protocol is not None:
            actions = self.liveness.on_request(request, sender, addr, self.protocol.loop.time())
            if actions:
                self.rpc.carry_out(actions)
        return self.replica.answer(request, sender, addr)

    def on_round_trip(self, sender: bytes, addr: Address) -> None:
        now = self.protocol.loop.time() if self.protocol is not None else 0.0
        actions = self.liveness.on_round_trip(sender, addr, now)
        if actions:
            self.rpc.carry_out(actions)

    def _admitted(self, peer: Peer) -> None:
        self.handover.welcome(peer)
        if self.on_new_contact is not None:
            self.on_new_contact(peer)

    # -- peers --------------------------------------------------------------------

    def is_dead(self, peer: Peer) -> bool:
        return self.rpc.is_dead(peer)

    @property
    def grace(self) -> float:
        return self.rpc.grace

    def ping(self, addr: Address) -> asyncio.Future[Reply]:
        return self.rpc.ping(addr)

    def introduce(self, addr: Address) -> asyncio.Future[Reply]:
        """Ping a peer found out of band (mDNS, the user); that also undoes an earlier
        `forget` of its address: it is back."""
        self.liveness.introduce(addr)
        return self.ping(addr)

    def forget(self, addr: Address) -> None:
        """Drop every peer at `addr` and ignore its requests for a few seconds."""
        now = self.protocol.loop.time() if self.protocol is not None else 0.0
        self.liveness.forget(addr, now)

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
        return await self.rpc.lookup(target, confirm)

    # -- client operations ------------------------------------------------------------

    async def put(self, key: bytes, records: list[Record]) -> int:
        return await self.client.put(key, records)

    async def fetch(self, key: bytes) -> list[Record]:
        return await self.client.fetch(key)

    async def delete(self, request: OwnerRequest) -> int:
        return await self.client.delete(request)

    async def subscribe(
        self,
        key: bytes,
        make_request: Callable[[int], OwnerRequest],
        targets: list[Peer] | None = None,
        eager: set[bytes] | None = None,
    ) -> int:
        return await self.client.subscribe(key, make_request, targets, eager)

    async def keep_subscribed(
        self,
        key: bytes,
        make_request: Callable[[int], OwnerRequest],
        ready: asyncio.Event | None = None,
    ) -> None:
        await self.client.keep_subscribed(key, make_request, ready)

    async def republish(self) -> None:
        await self.handover.republish()

    # -- maintenance ----------------------------------------------------------------

    async def _maintenance(self) -> None:
        interval = self.config.maintenance_interval
        next_republish = asyncio.get_running_loop().time() + self.config.republish_interval
        while True:
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))
            now = self.wall()
            self.storage.expire(now)
            self.replica.expire_listeners(now)
            if 0 < len(self.table) < self.config.ksize:
                with contextlib.suppress(MeshError):  # a thin table: meet more peers
                    await self.lookup(self.node_id, confirm=self.config.ksize)
            if asyncio.get_running_loop().time() >= next_republish:
                next_republish += self.config.republish_interval
                await self.republish()
