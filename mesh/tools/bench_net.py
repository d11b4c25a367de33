"""The bench's network of our peers (mesh/tools/bench.py runs the trials on it): its
options, the DhtServer-only replicas and full Nodes on loopback, their stores (in
memory, a plain file or SQLCipher), a cProfile per phase, and arrival times of pushed
messages."""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import logging
import pstats
import random
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mesh import crypto, vault
from mesh.dht.server import DhtConfig, DhtServer
from mesh.dht.storage import RecordStorage
from mesh.identity import Identity
from mesh.mailboxes import Mailboxes, exchange_bundles
from mesh.netkey import NetworkKey
from mesh.node import Node, NodeOptions
from mesh.store import Store
from mesh.tools.bench_kv import (
    BOOTSTRAP_CONCURRENCY,
    MAILBOX_SENDERS,
    bounded,
    loopback_address,
    per_peer_kb,
    percentile,
    prepare,
    rss_kb,
)
from mesh.wire import Address

log = logging.getLogger(__name__)

WAIT_TIMEOUT = 5.0
NEVER = 1e9  # seconds: a timer that does not fire during a bench
SENDER_OPTIONS = NodeOptions(poll_interval=NEVER, receipts=False)
RECIPIENT_OPTIONS = NodeOptions(poll_interval=NEVER, receipts=False, delete_delay=NEVER)
BASELINES = ("kademlia", "opendht")


@dataclass(frozen=True)
class BenchOptions:
    peers: int = 300
    trials: int = 20
    seed: int = 1
    use_uvloop: bool = True
    full_nodes: bool = False
    baselines: tuple[str, ...] = BASELINES
    discovery: bool = False
    profile: bool = False
    verbose: bool = False  # progress of every worker process on stderr
    prepare: str = "settle"  # a key of PREPARATIONS: the same for every DHT
    equal_work: bool = True  # also our key/value trials at OpenDHT's replication (k = 8)
    network_key: bool = False  # every peer in one private mesh: every datagram sealed
    store: str = "memory"  # a key of STORES: where the full Nodes keep their SQLite store
    group: int = 0  # with N > 0, the group trials of mesh.tools.bench_group (N members)


#: Where the bench's full Nodes keep their store: in memory (no disk, the default: the
#: DHT's cost alone), a plain SQLite file, or an SQLCipher file (issue 16's A/B: the same
#: files, only the encryption differs). The SQLCipher key is a random data key, as
#: `mesh.vault` makes one; the argon2id unlock is not part of a send (see
#: benchmarks/store_at_rest.py for unlock times).
STORES = ("memory", "plain", "encrypted")


def prepared_store(identity: Identity, path: Path | None = None, encrypted: bool = False) -> Store:
    """A store holding a seeded identity: in memory, or an SQLite file at `path` (SQLCipher
    with a fresh random key if `encrypted`)."""
    key = vault.sqlcipher_key(crypto.random_bytes(crypto.KEY_SIZE)) if encrypted else None
    store = Store(path, key=key)
    store.set_identity_blob(identity.to_bytes())
    return store


# -- our network --------------------------------------------------------------------------


class PhaseProfiler:
    """cProfile per phase (send, fetch, push), running only inside the timed calls. While a
    call awaits, the replicas' handlers run in this same process and are profiled too: a
    phase's profile is the whole cost of the operation, both ends."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.profiles: dict[str, cProfile.Profile] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        profile = self.profiles.setdefault(name, cProfile.Profile())
        profile.enable()
        try:
            yield
        finally:
            profile.disable()

    def print(self, out: IO[str] | None, top: int = 25) -> None:
        for name, profile in self.profiles.items():
            for order in ("tottime", "cumulative"):
                print(f"--- mesh bench --profile: {name}, top {top} by {order}", file=out)
                pstats.Stats(profile, stream=out).sort_stats(order).print_stats(top)


class MeshNet:
    """Every peer of the bench, and the loopback addresses handed out so far."""

    def __init__(
        self, options: BenchOptions, rng: random.Random, config: DhtConfig | None = None
    ) -> None:
        self.options = options
        self.rng = rng
        self.config = config or DhtConfig()
        self.replicas: list[DhtServer] = []
        self.nodes: list[Node] = []
        self.extras: list[Node] = []  # recipients started by the trials
        self.profiler = PhaseProfiler(options.profile)
        self._next_address = 0
        # Seeded like the topology: a reproducible key (the bench sends nowhere but lo).
        secret = random.Random(options.seed + 1).randbytes(32)  # not from rng: same topology
        self.network_key = NetworkKey("bench", secret) if options.network_key else None
        if options.store not in STORES:
            raise ValueError(f"store must be one of {STORES}")
        self._store_dir = (
            None if options.store == "memory" else tempfile.TemporaryDirectory(prefix="meshb-")
        )
        self._stores = 0

    def new_store(self, identity: Identity) -> Store:
        """The store of a full Node of the bench, as `options.store` says."""
        if self._store_dir is None:
            return prepared_store(identity)
        self._stores += 1
        path = Path(self._store_dir.name) / f"node{self._stores}.db"
        return prepared_store(identity, path, self.options.store == "encrypted")

    def address(self) -> str:
        self._next_address += 1
        return loopback_address(self._next_address - 1)

    @property
    def servers(self) -> list[DhtServer]:
        """The DHT of each of the `peers` peers (not the recipients)."""
        return self.replicas + [n.dht for n in self.nodes]

    @property
    def senders(self) -> list[Node]:
        return self.nodes[:MAILBOX_SENDERS]

    def seeds(self) -> list[Address]:
        first = self.replicas[0].address if self.replicas else self.nodes[0].address
        assert first is not None
        return [first]

    async def start_replica(self, host: str) -> DhtServer:
        server = DhtServer(
            self.rng.randbytes(20), self.config, RecordStorage(), network_key=self.network_key
        )
        await server.listen(host, 0)
        self.replicas.append(server)
        return server

    async def start_node(
        self, identity: Identity, options: NodeOptions, host: str, store: Store | None = None
    ) -> Node:
        store = store or self.new_store(identity)
        seeds = self.seeds() if self.replicas or self.nodes else []
        node_id = self.rng.randbytes(20)  # seeded: a reproducible topology
        return await Node.start(
            home=store,
            host=host,
            bootstrap=seeds,
            config=self.config,
            options=options,
            node_id=node_id,
            network_key=self.network_key,
        )

    async def build(self) -> dict[str, Any]:
        """Start and join every peer; returns build time and memory per kind of peer."""
        started = time.perf_counter()
        node_count = self.options.peers if self.options.full_nodes else MAILBOX_SENDERS
        node_count = min(node_count, self.options.peers)
        replica_count = self.options.peers - node_count
        base = rss_kb()
        for _ in range(replica_count):
            await self.start_replica(self.address())
        joins = [s.bootstrap(self.seeds()) for s in self.replicas[1:]]
        await bounded(joins, BOOTSTRAP_CONCURRENCY)
        after_replicas = rss_kb()
        if not self.replicas:
            self.nodes.append(await self._new_node(self.address()))
        hosts = [self.address() for _ in range(node_count - len(self.nodes))]
        self.nodes += await bounded(map(self._new_node, hosts), BOOTSTRAP_CONCURRENCY)
        after_nodes = rss_kb()
        preparation = await prepare(self.options.prepare)
        contacts = [len(s.table) for s in self.servers]
        return {
            "peer_kind": {"dht_server": replica_count, "node": node_count},
            "build_s": round(time.perf_counter() - started, 2),
            "rss_kb_per_peer": per_peer_kb(base, after_nodes, self.options.peers),
            "rss_kb": {
                "dht_server": per_peer_kb(base, after_replicas, replica_count),
                "node": per_peer_kb(after_replicas, after_nodes, node_count),
            },
            "contacts": {"min": min(contacts), "p50": percentile(contacts, 0.5)},
            "preparation": preparation,
        }

    async def _new_node(self, host: str) -> Node:
        identity = Identity.from_seed(self.rng.randbytes(32))
        return await self.start_node(identity, SENDER_OPTIONS, host)

    async def start_recipient(self, identity: Identity, store: Store | None = None) -> Node:
        node = await self.start_node(identity, RECIPIENT_OPTIONS, self.address(), store)
        self.extras.append(node)
        return node

    def befriend(self, boxes: Mailboxes) -> None:
        """The senders and this recipient are contacts whose key agreement is complete
        (preparation, not measured: mesh.mailboxes.exchange_bundles)."""
        now = time.time()
        for sender in self.senders:
            exchange_bundles(boxes, sender.mailboxes, now)

    def datagrams(self) -> int:
        dhts = self.servers + [n.dht for n in self.extras]
        return sum(d.protocol.stats["datagrams_in"] for d in dhts if d.protocol is not None)

    async def wait_quiet(self, quiet: float = 0.05, limit: float = 3.0) -> None:
        """Wait until no peer received a datagram for `quiet` seconds (catch-up rounds,
        subscriptions), so a timing never pays for the previous step's background work."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        last = self.datagrams()
        while loop.time() < deadline:
            await asyncio.sleep(quiet)
            current = self.datagrams()
            if current == last:
                return
            last = current

    async def stop(self) -> None:
        # Together: a recipient's stop waits up to a grace period for its pending deletes.
        await asyncio.gather(*(node.stop() for node in self.extras + self.nodes))
        await asyncio.gather(*(server.close() for server in self.replicas))
        if self._store_dir is not None:
            self._store_dir.cleanup()


class Arrivals:
    """Consumes `node.messages()` in a task and remembers when each message arrived."""

    def __init__(self, node: Node) -> None:
        self.times: dict[bytes, float] = {}
        self._changed = asyncio.Event()
        self._task = asyncio.ensure_future(self._consume(node))

    async def _consume(self, node: Node) -> None:
        async for message in node.messages():
            self.times[message.id] = time.perf_counter()
            self._changed.set()

    async def wait_for(self, wanted: set[bytes], timeout: float = WAIT_TIMEOUT) -> bool:
        """True once every wanted message arrived, False after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not wanted <= self.times.keys():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
