"""An in-memory datagram network for the simulator: the real DhtProtocol runs on top of it.

    network = Network(random.Random(seed), LinkModel(loss=0.05))
    node = await Node.start(host="10.0.0.1", port=4000, bind=network.bind, ...)

What it models, per datagram, all drawn from the one seeded `random.Random`:

- latency: every host gets a position in a unit square when it first binds; a link's
  one-way delay is `base + spread * distance(a, b)` plus a uniform `jitter`, so links
  differ from each other but each one is stable (and jitter can reorder, as UDP does);
- loss: a datagram is dropped with probability `loss`;
- duplication: a delivered datagram arrives a second time with probability `duplicate`;
- partitions: hosts are split into sides; a datagram crossing sides is dropped, also
  when the partition starts while it is in flight;
- unreachable peers: a datagram to an address nobody listens on is dropped (UDP gives
  no error either).

Nothing here touches a socket or the clock of the machine: datagrams wait in a heap
until the running loop's time reaches their arrival (see `Network`), so with
`VirtualTimeLoop` an hour of traffic takes no wall time beyond the cost of running the
protocol code. The same impairments can be put in front of real loopback sockets with
`real_binder` (`mesh sim --real`).
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mesh.dht.protocol import DhtProtocol
from mesh.sim.clock import VirtualTimeLoop
from mesh.wire import Address

MAX_UDP_PAYLOAD = 65507
LINK_CACHE_MAX = 1 << 20  # link delays remembered (hosts never move)


@dataclass(frozen=True)
class LinkModel:
    """Per-link delay (seconds) and per-datagram impairments (probabilities)."""

    base: float = 0.002
    spread: float = 0.030
    jitter: float = 0.003
    loss: float = 0.0
    duplicate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} is a probability in [0, 1): got {value}")
        if min(self.base, self.spread, self.jitter) < 0:
            raise ValueError("delays cannot be negative")


class Impairments:
    """The random part of the network: decides each datagram's fate from one rng."""

    def __init__(self, rng: random.Random, model: LinkModel) -> None:
        self.rng = rng
        self.model = model
        self.stats: Counter[str] = Counter()
        self._position: dict[str, complex] = {}
        self._side: dict[str, int] = {}
        self._partitioned = False
        self._links: dict[tuple[str, str], float] = {}  # (src, dst) -> one-way delay

    def place(self, host: str, side: int | None = None) -> None:
        """Give a new host its position (and, during a partition, its side)."""
        if host not in self._position:
            self._position[host] = complex(self.rng.random(), self.rng.random())
        if side is not None:
            self._side[host] = side

    def partition(self, sides: Iterable[Iterable[str]]) -> None:
        """Split the network: hosts in different groups cannot reach each other. Hosts
        in no group are on side 0 (with the first group)."""
        self._side = {host: i for i, group in enumerate(sides) for host in group}
        self._partitioned = True
        self.stats["partitions"] += 1

    def heal(self) -> None:
        self._partitioned = False
        self.stats["heals"] += 1

    @property
    def partitioned(self) -> bool:
        return self._partitioned

    def side_of(self, host: str) -> int:
        return self._side.get(host, 0)

    def blocked(self, src: str, dst: str) -> bool:
        return self._partitioned and self._side.get(src, 0) != self._side.get(dst, 0)

    def delays(self, src: str, dst: str) -> list[float]:
        """Arrival delays of one datagram: [] if lost, two entries if duplicated."""
        self.stats["sent"] += 1
        model = self.model
        if model.loss and self.rng.random() < model.loss:
            self.stats["lost"] += 1
            return []
        link = self._links.get((src, dst))
        if link is None:
            link = model.base + model.spread * self._distance(src, dst)
            if len(self._links) >= LINK_CACHE_MAX:
                self._links.clear()
            self._links[(src, dst)] = link
        arrivals = [link + model.jitter * self.rng.random()]
        if model.duplicate and self.rng.random() < model.duplicate:
            self.stats["duplicated"] += 1
            arrivals.append(link + model.jitter * self.rng.random())
        return arrivals

    def _distance(self, a: str, b: str) -> float:
        return abs(self._position.get(a, 0.5 + 0.5j) - self._position.get(b, 0.5 + 0.5j))


class SimTransport(asyncio.DatagramTransport):
    """What a DhtProtocol sees of the in-memory network: `sendto` and `close`."""

    def __init__(self, network: Network, address: Address, protocol: DhtProtocol) -> None:
        super().__init__()
        self._network = network
        self._address = address
        self._protocol = protocol
        self._closing = False

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        if self._closing:
            return
        if len(data) > MAX_UDP_PAYLOAD:
            raise OSError(90, "Message too long")
        if type(data) is not bytes:
            data = bytes(data)
        if type(addr) is not tuple or type(addr[0]) is not str or type(addr[1]) is not int:
            addr = (str(addr[0]), int(addr[1]))
        self._network.send(self._address, data, addr)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._network.unbind(self._address, self)
        asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self._closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._address if name == "sockname" else default

    def deliver(self, data: bytes, src: Address) -> None:
        if not self._closing:
            self._protocol.datagram_received(data, src)


class Network:
    """Endpoints by address, and datagrams in flight.

    Datagrams in flight wait in one heap of plain tuples (delivery order: arrival time,
    then send order). On a `VirtualTimeLoop` the network is a source of simulated I/O:
    the loop wakes at the earliest arrival and calls `run_due`, with no asyncio timer
    per datagram (their heap comparisons run in Python and dominated the profile). On
    any other loop, one timer is armed for the earliest arrival.
    """

    def __init__(self, rng: random.Random, model: LinkModel | None = None) -> None:
        self.impairments = Impairments(rng, model or LinkModel())
        self.stats = self.impairments.stats
        self._endpoints: dict[Address, SimTransport] = {}
        self._next_port: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight: list[tuple[float, int, Address, bytes, Address]] = []
        self._sequence = 0
        self._timer: asyncio.TimerHandle | None = None
        self._driven_by_loop = False
        self.due = math.inf  # arrival time of the next datagram (read by VirtualTimeLoop)

    async def bind(
        self, factory: Callable[[], DhtProtocol], host: str, port: int
    ) -> tuple[asyncio.BaseTransport, Address]:
        """A `Binder` for `Node.start(bind=...)` / `DhtServer.listen`."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            if isinstance(self._loop, VirtualTimeLoop):
                self._loop.attach(self)
                self._driven_by_loop = True
        if port == 0:
            port = self._next_port.get(host, 40000)
            self._next_port[host] = port + 1
        address = (host, port)
        if address in self._endpoints:
            raise OSError(98, f"address already in use: {host}:{port}")
        self.impairments.place(host)
        protocol = factory()
        transport = SimTransport(self, address, protocol)
        self._endpoints[address] = transport
        protocol.connection_made(transport)
        return transport, address

    def unbind(self, address: Address, transport: SimTransport) -> None:
        if self._endpoints.get(address) is transport:
            del self._endpoints[address]

    def send(self, src: Address, data: bytes, dst: Address) -> None:
        assert self._loop is not None
        now = self._loop.time()
        for delay in self.impairments.delays(src[0], dst[0]):
            self._sequence += 1
            when = now + delay
            heapq.heappush(self._in_flight, (when, self._sequence, src, data, dst))
            if when < self.due:
                self.due = when
                if not self._driven_by_loop:
                    self._arm(when)

    def run_due(self) -> None:
        """Deliver every datagram whose arrival time has come."""
        assert self._loop is not None
        horizon = self._loop.time() + 1e-9
        queue = self._in_flight
        endpoints = self._endpoints
        impairments = self.impairments
        stats = self.stats
        pop = heapq.heappop
        while queue and queue[0][0] <= horizon:
            _, _, src, data, dst = pop(queue)
            # _arrive, inlined: this loop runs once per datagram of the whole run.
            if impairments.partitioned and impairments.blocked(src[0], dst[0]):
                stats["blocked"] += 1
                continue
            endpoint = endpoints.get(dst)
            if endpoint is None:
                stats["unreachable"] += 1
                continue
            stats["delivered"] += 1
            endpoint.deliver(data, src)
        self.due = queue[0][0] if queue else math.inf

    def _arm(self, when: float) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.run_due()
        if self._in_flight:
            self._arm(self.due)

    def in_flight(self) -> int:
        return len(self._in_flight)

    def listening(self) -> int:
        return len(self._endpoints)

    def statistics(self) -> dict[str, int]:
        return dict(self.stats)


class _ImpairedProtocol(asyncio.DatagramProtocol):
    """Wraps a real protocol: applies loss, duplication, delay and partitions on receive."""

    def __init__(self, inner: DhtProtocol, impairments: Impairments, host: str) -> None:
        self.inner = inner
        self.impairments = impairments
        self.host = host
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def error_received(self, exc: Exception) -> None:
        self.inner.error_received(exc)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        src = str(addr[0])
        if self.impairments.blocked(src, self.host):
            self.impairments.stats["blocked"] += 1
            return
        for delay in self.impairments.delays(src, self.host):
            self.loop.call_later(delay, self.inner.datagram_received, data, addr)


def real_binder(impairments: Impairments) -> Callable[..., Any]:
    """A `Binder` that opens a real UDP socket (loopback only) behind the impairments."""

    async def bind(
        factory: Callable[[], DhtProtocol], host: str, port: int
    ) -> tuple[asyncio.BaseTransport, Address]:
        if not host.startswith("127."):
            raise ValueError(f"--real mode binds loopback addresses only, not {host}")
        impairments.place(host)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _ImpairedProtocol(factory(), impairments, host), local_addr=(host, port)
        )
        sock = transport.get_extra_info("sockname")
        return transport, (str(sock[0]), int(sock[1]))

    return bind
