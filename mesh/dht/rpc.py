"""Rpc: our side of the network for the other parts of the DHT.

Calls go through the RPC engine (protocol.py); every call's outcome and every answer
feeds the liveness book (liveness.py), and the book's decisions (ping this peer, this
stranger entered the table) are carried out here. Lookups live here too: they need the
table, the calls and the book's view of dead addresses, nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mesh import wire
from mesh.dht.liveness import Action, Admitted, Liveness, PingPeer, WakeAfter
from mesh.dht.lookup import Lookup
from mesh.dht.protocol import DhtProtocol, Reply
from mesh.dht.routing import Peer, RoutingTable
from mesh.errors import NetworkError
from mesh.wire import Address, Method


class Rpc:
    __slots__ = (
        "_dead_marks",
        "alpha",
        "confirm",
        "ksize",
        "liveness",
        "max_per_ip",
        "node_id",
        "on_admitted",
        "protocol",
        "rpc_timeout",
        "straggler_grace",
        "table",
    )

    def __init__(
        self,
        node_id: bytes,
        table: RoutingTable,
        liveness: Liveness,
        *,
        ksize: int,
        alpha: int,
        confirm: int,
        rpc_timeout: float,
        straggler_grace: float,
        max_per_ip: int,
    ) -> None:
        self.node_id = node_id
        self.table = table
        self.liveness = liveness
        self._dead_marks = liveness.dead_marks
        self.ksize = ksize
        self.alpha = alpha
        self.confirm = confirm
        self.rpc_timeout = rpc_timeout
        self.straggler_grace = straggler_grace
        self.max_per_ip = max_per_ip
        self.protocol: DhtProtocol | None = None
        self.on_admitted: Callable[[Peer], None] = lambda _peer: None

    def attach(self, protocol: DhtProtocol) -> None:
        self.protocol = protocol
        protocol.call_done = self._call_done

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    # -- calls --------------------------------------------------------------------

    def call(
        self,
        target: Peer | Address,
        method: Method,
        args: list[wire.Obj],
        retries: int | None = None,
    ) -> asyncio.Future[Reply]:
        assert self.protocol is not None, "server is not listening"
        addr = target.address if isinstance(target, Peer) else target
        return self.protocol.call(addr, method, args, retries=retries, context=target)

    def ping(self, addr: Address) -> asyncio.Future[Reply]:
        return self.call(addr, "ping", [])

    def _call_done(
        self, target: Peer | Address, addr: Address, started: float, fut: asyncio.Future[Reply]
    ) -> None:
        """Every call's outcome (the protocol's `call_done`): round-trip time, dead peers."""
        if fut.cancelled():
            return
        exc = fut.exception()
        now = self.protocol.loop.time() if self.protocol is not None else 0.0
        if exc is None:
            self.liveness.on_call_ok(started, now)
        elif isinstance(exc, NetworkError):
            self.carry_out(self.liveness.on_call_failed(target, addr, started, now))

    def carry_out(self, actions: tuple[Action, ...]) -> None:
        """Do what the liveness book decided."""
        for action in actions:
            if type(action) is PingPeer:
                self._ping_then_release(action.target)
            elif type(action) is Admitted:
                self.on_admitted(action.peer)
            elif type(action) is WakeAfter and self.protocol is not None:
                self.protocol.loop.call_later(action.delay, self._verify_due)

    def _ping_then_release(self, target: Peer | Address) -> None:
        addr = target.address if isinstance(target, Peer) else target
        done = self.liveness.ping_done
        self.call(target, "ping", []).add_done_callback(lambda _f: done(addr))

    def _verify_due(self) -> None:
        if self.protocol is None or self.protocol.transport is None:
            return
        self.carry_out(self.liveness.verify_due(self.protocol.loop.time()))

    # -- timing -------------------------------------------------------------------

    def is_dead(self, peer: Peer) -> bool:
        addr = peer.address
        return addr in self._dead_marks and self.liveness.is_dead(addr, self.now())

    @property
    def soft_timeout(self) -> float:
        return self.liveness.soft_timeout(self.rpc_timeout)

    @property
    def grace(self) -> float:
        """How long to wait for stragglers once a quorum answered: a few RTTs."""
        return min(self.straggler_grace, self.soft_timeout)

    # -- lookups ------------------------------------------------------------------

    async def lookup(self, target: bytes, confirm: int | None = None) -> list[Peer]:
        lookup = Lookup(
            target,
            self.node_id,
            self.table.find_neighbors(target, self.ksize),
            lambda peer, t: self.call(peer, "find", [t]),
            k=self.ksize,
            alpha=self.alpha,
            confirm=self.confirm if confirm is None else confirm,
            soft_timeout=self.soft_timeout,
            is_dead=self.is_dead,
            max_per_ip=self.max_per_ip,
        )
        return await lookup.run()

    def self_is_replica(self, key: bytes, targets: list[Peer]) -> bool:
        if len(targets) < self.ksize:
            return True
        k = int.from_bytes(key, "big")
        return (self.table.own_long_id ^ k) < (targets[-1].long_id ^ k)

    def closer_peers(self, key: bytes, limit: int) -> int:
        """How many peers of our table are closer to `key` than we are (up to limit)."""
        k = int.from_bytes(key, "big")
        mine = self.table.own_long_id ^ k
        closer = 0
        for peer in self.table.by_id.values():
            if peer.long_id ^ k < mine:
                closer += 1
                if closer >= limit:
                    break
        return closer
