"""Zero-configuration LAN discovery: advertise this node over mDNS, browse for others,
hand every peer found to the DHT. How and why: docs/discovery.md.

    discovery = Discovery(node, interfaces=None, network_name="mesh")
    await discovery.start()      # never raises for network trouble; see statistics()
    await discovery.stop()       # goodbye packets, so peers forget us at once

A record listener sees every announcement (zeroconf's ServiceBrowser stops querying
after ~14 s and reports no refreshes), so the PeerBook knows when each peer was last
heard: new peer -> `node.add_peer`; goodbye or expiry -> `node.forget_peer`; heard again
after a silence (a healed partition) -> forget and add, so the node rejoins and merges.
Every node re-announces and queries at 1, 2, 4 s, then every few seconds forever.
Zeroconf failures never escape: they are logged at debug level and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import ifaddr
from zeroconf import (
    IPVersion,
    RecordUpdate,
    RecordUpdateListener,
    ServiceInfo,
    Zeroconf,
    current_time_millis,
)
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from mesh import mdns_records
from mesh.mdns_names import (
    SERVICE_TYPE,
    Naming,
    check_network_name,
    instance_of,
    parse_txt,
    txt_properties,
)
from mesh.mdns_records import TYPE_PTR, TYPE_SRV
from mesh.netkey import NetworkKey
from mesh.wire import Address

__all__ = [
    "SERVICE_TYPE",
    "Discovery",
    "Naming",
    "PeerBook",
    "PeerSink",
    "check_network_name",
    "instance_of",
    "parse_txt",
    "txt_properties",
]

log = logging.getLogger(__name__)


MAX_ADDRESSES_PER_PEER = 4
UNSPECIFIED_HOSTS = frozenset({"", "0.0.0.0", "::"})


class PeerSink(Protocol):
    """What discovery needs from the node it feeds (mesh.node.Node is one): the address
    it advertises, and where the peers it hears about go."""

    @property
    def address(self) -> Address: ...

    def add_peer(self, address: Address) -> None: ...

    def forget_peer(self, address: Address) -> None: ...

    def knows_any(self, addresses: tuple[Address, ...]) -> bool:
        """True if the routing table holds a peer at one of `addresses`."""
        ...


@dataclass(frozen=True)
class DiscoveryConfig:
    startup_interval: float = 1.0  # first re-announce/query; doubles up to steady_interval
    steady_interval: float = 4.0  # then every few seconds forever
    per_peer_interval: float = 0.1  # grows the interval on big LANs: ~10 announcements/s
    jitter: float = 0.2  # +-20 %, so nodes started together do not stay in step
    stale_factor: float = 3.0  # unheard for this many intervals = partitioned
    host_ttl: int = 60  # SRV/A: a node that vanishes silently is forgotten after this
    resolve_timeout: float = 3.0
    readd_interval: float = 30.0  # re-ping a known peer missing from the routing table
    max_instances: int = 1024  # anyone on the LAN can announce: bound what we keep
    goodbye_hold: float = 5.0  # ignore a name this long after its goodbye (late answers)
    max_known_answers: int = 128
    max_resolving: int = 16


# -- pure helpers ------------------------------------------------------------------------


def tick_delay(tick: int, peers: int, config: DiscoveryConfig, rng: random.Random) -> float:
    """Seconds until the next announce+query: a doubling backoff from
    `startup_interval` that settles at the steady interval, with jitter."""
    base = min(config.startup_interval * 2.0 ** min(tick, 16), steady_interval(peers, config))
    return base * rng.uniform(1.0 - config.jitter, 1.0 + config.jitter)


def steady_interval(peers: int, config: DiscoveryConfig) -> float:
    return max(config.steady_interval, peers * config.per_peer_interval)


def is_ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


def choose_interfaces(
    bound_host: str, explicit: Sequence[str] | None, local_ipv4: Callable[[], list[str]]
) -> list[str]:
    """The interface addresses mDNS runs on: `explicit` if given, else the address the
    node is bound to, else (bound to every address) every real IPv4 interface."""
    if explicit is not None:
        return [a for a in explicit if is_ipv4(a)]
    if bound_host in UNSPECIFIED_HOSTS:
        return local_ipv4()
    return [bound_host] if is_ipv4(bound_host) else []


def real_ipv4_addresses() -> list[str]:
    """IPv4 addresses of this host's interfaces, loopback excluded (real use only)."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            address = ip.ip
            if isinstance(address, str) and is_ipv4(address) and address not in found:
                found.append(address)
    return [a for a in found if not ipaddress.ip_address(a).is_loopback]


def usable_peer_addresses(addresses: Iterable[str], port: int, on_loopback: bool) -> list[Address]:
    """A peer's advertised addresses we may ping: loopback only when we are on loopback
    ourselves (127.x of another host is ourselves), at most a few."""
    result: list[Address] = []
    for text in addresses:
        if not is_ipv4(text):
            continue
        ip = ipaddress.ip_address(text)
        if ip.is_unspecified or ip.is_multicast or (ip.is_loopback and not on_loopback):
            continue
        result.append((text, port))
    return result[:MAX_ADDRESSES_PER_PEER]


# -- the peer book: what we heard, when, and what the node should do (no I/O) ------------


@dataclass
class Instance:
    """A service instance heard on the network (ours or a foreign network's)."""

    name: str
    same_network: bool
    addresses: tuple[Address, ...]
    last_seen: float
    last_added: float


@dataclass
class Actions:
    """What the node should do: forget these addresses, then ping these."""

    forget: list[Address] = field(default_factory=list)
    add: list[Address] = field(default_factory=list)


class PeerBook:
    """Every instance heard, keyed by its lower-case name; times are loop seconds
    passed in by the caller, so this is tested without a network or a clock."""

    def __init__(self, config: DiscoveryConfig) -> None:
        self.config = config
        self.instances: dict[str, Instance] = {}
        self._departed: OrderedDict[str, float] = OrderedDict()  # name -> ignored until
        self.counters: dict[str, int] = dict.fromkeys(
            ("found", "lost", "reappeared", "readded", "foreign", "dropped", "departed"), 0
        )

    def peers(self) -> list[Address]:
        return [a for i in self.instances.values() if i.same_network for a in i.addresses]

    def peer_count(self) -> int:
        return sum(1 for i in self.instances.values() if i.same_network)

    def stale_after(self) -> float:
        return self.config.stale_factor * steady_interval(self.peer_count(), self.config)

    def fresh(self, now: float) -> set[str]:
        """Instances heard recently (listed as known answers in our queries)."""
        horizon = now - self.stale_after()
        return {key for key, inst in self.instances.items() if inst.last_seen >= horizon}

    def expired(self, now: float) -> list[str]:
        """Instances unheard for longer than their records live (foreign ones, ones
        whose expiry we missed): the caller drops them so the book stays bounded."""
        horizon = now - 2 * max(self.config.host_ttl, self.stale_after())
        return [key for key, inst in self.instances.items() if inst.last_seen < horizon]

    def is_departed(self, name: str, now: float) -> bool:
        until = self._departed.get(name)
        if until is not None and until < now:
            del self._departed[name]
            return False
        return until is not None

    def heard(
        self,
        name: str,
        same_network: bool,
        addresses: tuple[Address, ...],
        now: float,
        in_table: Callable[[tuple[Address, ...]], bool],
    ) -> Actions:
        if self.is_departed(name, now):
            return Actions()
        inst = self.instances.get(name)
        if inst is None:
            return self._new(Instance(name, same_network, addresses, now, now))
        stale = now - inst.last_seen > self.stale_after()
        inst.last_seen = now
        if not (inst.same_network and same_network):
            return Actions()
        if addresses != inst.addresses:
            old, inst.addresses, inst.last_added = inst.addresses, addresses, now
            return Actions(list(old), list(addresses))
        if stale:  # partition healed: a newcomer again, so the node rejoins and merges
            self.counters["reappeared"] += 1
            inst.last_added = now
            return Actions(list(addresses), list(addresses))
        if now - inst.last_added > self.config.readd_interval and not in_table(addresses):
            self.counters["readded"] += 1
            inst.last_added = now
            return Actions(add=list(addresses))
        return Actions()

    def _new(self, inst: Instance) -> Actions:
        if len(self.instances) >= self.config.max_instances:
            self.counters["dropped"] += 1
            return Actions()
        self.instances[inst.name] = inst
        if not inst.same_network:
            self.counters["foreign"] += 1
            return Actions()
        self.counters["found"] += 1
        return Actions(add=list(inst.addresses))

    def gone(self, name: str, goodbye: bool, now: float) -> tuple[Instance | None, Actions]:
        """The instance said goodbye (`goodbye`) or its records expired."""
        if goodbye:
            # An answer it queued just before leaving must not revive it. Held only for a
            # while: a goodbye forged by someone on the LAN then costs a few seconds.
            self.counters["departed"] += 1
            self._departed[name] = now + self.config.goodbye_hold
            self._departed.move_to_end(name)
            if len(self._departed) > self.config.max_instances:
                self._departed.popitem(last=False)
        inst = self.instances.pop(name, None)
        if inst is None or not inst.same_network:
            return inst, Actions()
        self.counters["lost"] += 1
        return inst, Actions(forget=list(inst.addresses))


class _RecordListener(RecordUpdateListener):
    """Turns zeroconf cache updates into instance names touched, expired and departed."""

    def __init__(
        self,
        on_batch: Callable[[set[str], dict[str, bool]], None],
        service_types: Callable[[], tuple[str, ...]] = lambda: (SERVICE_TYPE,),
    ) -> None:
        super().__init__()
        self._on_batch = on_batch
        self._service_types = service_types
        self._touched: set[str] = set()
        self._gone: dict[str, bool] = {}  # instance -> said goodbye (TTL 0)

    def async_update_records(self, zc: Zeroconf, now: float, records: list[RecordUpdate]) -> None:
        types = self._service_types()
        for update in records:
            record = update.new
            name = instance_of(record, types)
            if name is None:
                continue
            if not record.is_expired(now):
                self._touched.add(name)
            elif record.type in (TYPE_PTR, TYPE_SRV):
                # a goodbye carries TTL 0; a cache expiry hands back the cached record
                self._gone[name] = self._gone.get(name, False) or record.ttl == 0

    def async_update_records_complete(self) -> None:
        if not self._touched and not self._gone:
            return
        touched, gone = self._touched - self._gone.keys(), self._gone
        self._touched, self._gone = set(), {}
        try:
            self._on_batch(touched, gone)
        except Exception as exc:  # a bug here must not break zeroconf's packet handling
            log.debug("discovery: batch failed: %r", exc)


# -- the service -------------------------------------------------------------------------


class Discovery:
    def __init__(
        self,
        node: PeerSink,
        interfaces: Sequence[str] | None = None,
        network_name: str = "mesh",
        config: DiscoveryConfig | None = None,
        rng: random.Random | None = None,
        network_key: NetworkKey | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.naming = Naming(network_name, network_key)
        self.network_name = self.naming.network_name
        self._wall = wall
        self._epoch = self.naming.epoch(wall())
        self.service_type = self.naming.service_type(self._epoch)
        self.config = config or DiscoveryConfig()
        self.book = PeerBook(self.config)
        self.instance_name = ""
        self._explicit = list(interfaces) if interfaces is not None else None
        self._rng = rng or random.Random()
        self._zc: AsyncZeroconf | None = None
        self._info: ServiceInfo | None = None
        self._interfaces: list[str] = []
        self._listener = _RecordListener(self._on_batch, self._browsed)
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._broadcasts: set[asyncio.Future[Any]] = set()
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._stopped = False
        self.counters: dict[str, int] = dict.fromkeys(
            ("own", "malformed", "errors", "announcements", "queries", "resolves", "restarts"), 0
        )

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Advertise and browse. Network trouble is counted, never raised: the periodic
        tick keeps trying (an interface may appear later)."""
        await self._open()
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        self._stopped = True
        tasks = [t for t in (self._task, *self._resolving.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._resolving.clear()
        await self._close()

    def statistics(self) -> dict[str, int]:
        stats = dict(self.counters)
        stats.update(self.book.counters)
        stats["instances"] = len(self.book.instances)
        stats["peers"] = self.book.peer_count()
        return stats

    def peers(self) -> list[Address]:
        """Addresses of the peers of our network that mDNS currently knows."""
        return self.book.peers()

    async def wait_heard(self, count: int = 1, timeout: float = 2.0) -> int:
        """Wait until `count` instances (of any network) are known or `timeout` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.book.instances) < count and (remaining := deadline - loop.time()) > 0:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return len(self.book.instances)

    def _error(self, what: str, exc: BaseException) -> None:
        self.counters["errors"] += 1
        log.debug("discovery: %s failed: %r", what, exc)

    async def _open(self) -> None:
        self._interfaces = choose_interfaces(
            self.node.address[0], self._explicit, real_ipv4_addresses
        )
        if not self._interfaces:
            self._error("open", OSError("no usable IPv4 interface"))
            return
        try:
            self._zc = AsyncZeroconf(interfaces=list(self._interfaces), ip_version=IPVersion.V4Only)
            self._zc.zeroconf.async_add_listener(self._listener, None)
            self._info = self._service_info()
            broadcast = await self._zc.async_register_service(
                self._info, cooperating_responders=True
            )
            self._track(broadcast)
            self._query()
        except Exception as exc:
            self._error("open", exc)
            await self._close()

    def _browsed(self) -> tuple[str, ...]:
        return self.naming.browsed_types(self._epoch)

    def _service_info(self) -> ServiceInfo:
        """A fresh random name at every (re)open: it links nothing across starts, and a
        name that said goodbye is never revived by peers."""
        self._epoch = self.naming.epoch(self._wall())
        self.service_type = self.naming.service_type(self._epoch)
        label = self.naming.label()
        self.instance_name = f"{label}.{self.service_type}"
        host = self.node.address[0]
        return ServiceInfo(
            self.service_type,
            self.instance_name,
            port=self.node.address[1],
            properties=self.naming.properties(),
            server=f"{label}.local.",
            host_ttl=self.config.host_ttl,
            parsed_addresses=self._interfaces if host in UNSPECIFIED_HOSTS else [host],
        )

    def _track(self, awaitable: Any) -> None:
        """Keep zeroconf's announcement task so stop() can cancel it, and consume its
        outcome so a failure is counted rather than logged by asyncio."""
        future = asyncio.ensure_future(awaitable)
        self._broadcasts.add(future)

        def done(f: asyncio.Future[Any]) -> None:
            self._broadcasts.discard(f)
            if not f.cancelled() and f.exception() is not None:
                self._error("announce", f.exception() or Exception())

        future.add_done_callback(done)

    async def _close(self) -> None:
        zc, self._zc = self._zc, None
        for future in list(self._broadcasts):
            future.cancel()
        if zc is None:
            return
        try:
            zc.zeroconf.async_remove_listener(self._listener)
            await zc.async_close()  # sends goodbyes: peers forget us at once
        except Exception as exc:
            self._error("close", exc)

    # -- the periodic tick ------------------------------------------------------------

    async def _run(self) -> None:
        tick = 0
        while not self._stopped:
            delay = tick_delay(tick, self.book.peer_count(), self.config, self._rng)
            await asyncio.sleep(delay)
            tick += 1
            try:
                await self._tick()
            except Exception as exc:  # discovery never takes the node down
                self._error("tick", exc)

    async def _tick(self) -> None:
        if self._explicit is None and self.node.address[0] in UNSPECIFIED_HOSTS:
            current = choose_interfaces(self.node.address[0], None, real_ipv4_addresses)
            if current != self._interfaces:  # Wi-Fi joined, left or renumbered
                self.counters["restarts"] += 1
                await self._close()
        if self._zc is not None and self.naming.epoch(self._wall()) != self._epoch:
            self.counters["restarts"] += 1  # a private mesh's names changed: re-register
            await self._close()
        if self._zc is None:
            await self._open()
            return
        self._announce()
        self._query()
        for name in self.book.expired(self._now()):
            self._gone(name, goodbye=False)

    def _announce(self) -> None:
        if self._zc is None or self._info is None:
            return
        zc = self._zc.zeroconf
        zc.async_send(zc.generate_service_broadcast(self._info, None))
        self.counters["announcements"] += 1

    def _query(self) -> None:
        """Ask for every instance; the peers heard recently are listed as known
        answers, so only new or returning peers answer."""
        if self._zc is None:
            return
        zc = self._zc.zeroconf
        now_ms = current_time_millis()
        fresh = self.book.fresh(self._now())
        limit = self.config.max_known_answers
        for service_type in self._browsed():
            cached = zc.cache.async_entries_with_name(service_type)
            out, _ = mdns_records.known_answer_query(service_type, cached, fresh, limit, now_ms)
            zc.async_send(out)
            self.counters["queries"] += 1

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    # -- what the network told us --------------------------------------------------------

    def _on_batch(self, touched: set[str], gone: dict[str, bool]) -> None:
        for name, goodbye in gone.items():
            self._gone(name, goodbye)
        for name in touched:
            if name == self.instance_name.lower():
                self.counters["own"] += 1
            elif not self.book.is_departed(name, self._now()):
                self._lookup(name)

    def _lookup(self, name: str) -> None:
        if self._zc is None or name in self._resolving:
            return
        info = AsyncServiceInfo(name.split(".", 1)[1], name)
        if info.load_from_cache(self._zc.zeroconf):
            self._on_resolved(name, info)
        elif len(self._resolving) < self.config.max_resolving:
            self._resolving[name] = asyncio.ensure_future(self._resolve(name, info))

    async def _resolve(self, name: str, info: AsyncServiceInfo) -> None:
        """Records arrived piecemeal (a lost packet, a cache flush): ask for the rest."""
        try:
            if self._zc is None:
                return
            self.counters["resolves"] += 1
            timeout_ms = self.config.resolve_timeout * 1000
            if await info.async_request(self._zc.zeroconf, timeout_ms):
                self._on_resolved(name, info)
        except Exception as exc:
            self._error("resolve", exc)
        finally:
            self._resolving.pop(name, None)

    def _on_resolved(self, name: str, info: ServiceInfo) -> None:
        same = self.naming.same_network(info.properties)
        on_loopback = all(ipaddress.ip_address(a).is_loopback for a in self._interfaces)
        port = info.port or 0
        addresses = usable_peer_addresses(
            info.parsed_addresses(IPVersion.V4Only), port, on_loopback
        )
        if same is None or not addresses or not 0 < port < 65536:
            self.counters["malformed"] += 1
            return
        if self.node.address in addresses:
            self.counters["own"] += 1  # another instance claiming our address
            return
        is_new = name not in self.book.instances
        actions = self.book.heard(name, same, tuple(addresses), self._now(), self.node.knows_any)
        if is_new and name in self.book.instances:
            self._changed.set()
            log.debug("discovery: heard %s (ours: %s) at %s", name, same, addresses)
        self._apply(actions)

    def _gone(self, name: str, goodbye: bool) -> None:
        inst, actions = self.book.gone(name, goodbye, self._now())
        if inst is not None:
            self._changed.set()
            log.debug("discovery: %s is gone", name)
        self._apply(actions)

    def _apply(self, actions: Actions) -> None:
        for address in actions.forget:
            try:
                self.node.forget_peer(address)
            except Exception as exc:
                self._error("forget_peer", exc)
        for address in actions.add:
            try:
                self.node.add_peer(address)
            except Exception as exc:
                self._error("add_peer", exc)
