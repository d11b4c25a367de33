"""`mesh bench`: N peers in one process on loopback, timed, next to kademlia and OpenDHT.

    result = run_bench(BenchOptions(peers=300, trials=20))   # a JSON-ready dict

Our network: `peers` peers, each bound to its own loopback address 127.0.x.y (the DHT
caps contacts per IP, as a LAN where every device has its own address). `senders` of
them (20) are full Nodes (identity, SQLite store, outbox); the rest are DhtServer-only
replicas, unless `full_nodes` makes every peer a Node. The result says which
(`peer_kind`) and reports the memory of each kind. Recipients are extra Nodes that the
trials start; they stay online until the end, so no trial meets a dead contact.

Each trial: 20 messages go to a fresh offline recipient (`send_ms`: one `node.send`);
the recipient starts (`Node.start` with bootstrap), its automatic catch-up delivers the
20 (`catchup_ms`); then its explicit mailbox fetch is timed (`fetch20_ms`: the DHT part
of `node.fetch`, complete if all 20 records came back) and the 20 records are opened
(`open20_ms`: the crypto part). `push_ms` runs from `send` start until an online
recipient's `messages()` yields the message. Recipients neither send receipts nor
delete what they received, so no background traffic overlaps a timing.

The same key/value work (one put and get, then 20 writers to one key and a get) runs on
our DhtServer (`dht`), on kademlia 2.2.3 and on OpenDHT. Each baseline runs in its own
subprocess after our peers are stopped, so no library shares an event loop or a core
with another.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import gc
import importlib.util
import json
import logging
import os
import pstats
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import asdict, dataclass
from typing import IO, Any, Protocol, TypeVar

from mesh import envelope
from mesh.dht.server import DhtConfig, DhtServer
from mesh.dht.storage import RecordStorage
from mesh.envelope import Record
from mesh.identity import Identity
from mesh.node import Address, Node, NodeOptions, Receipt
from mesh.store import Store

log = logging.getLogger(__name__)

T = TypeVar("T")

MAILBOX_SENDERS = 20
BOOTSTRAP_CONCURRENCY = 32
WAIT_TIMEOUT = 5.0
BASELINE_TIMEOUT = 600.0
PUSH_SAMPLES_PER_TRIAL = 5
TEXT = "a short chat message of the usual size, " * 3  # 120 B: the 512 B padding bucket
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


# -- small helpers ------------------------------------------------------------------------


def loopback_address(index: int) -> str:
    """Peer `index` gets its own address: 127.0.1.1, 127.0.1.2, ... 127.0.2.1, ..."""
    return f"127.0.{1 + index // 250}.{1 + index % 250}"


def percentile(samples: Iterable[float], fraction: float) -> float:
    """Nearest-rank percentile; NaN for no samples."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(samples: list[float]) -> dict[str, float | int | None]:
    """{p50, p95, n} in the samples' unit, rounded; None when there are no samples."""
    if not samples:
        return {"p50": None, "p95": None, "n": 0}
    return {
        "p50": round(percentile(samples, 0.50), 3),
        "p95": round(percentile(samples, 0.95), 3),
        "n": len(samples),
    }


def fraction(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 3) if flags else None


def elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def rss_kb() -> int:
    """Resident memory of this process, after a full garbage collection."""
    gc.collect()
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # peak, not current


def per_peer_kb(before: int, after: int, count: int) -> float | None:
    return round((after - before) / count, 1) if count else None


async def bounded(coros: Iterable[Coroutine[Any, Any, T]], limit: int) -> list[T]:
    """Run coroutines with at most `limit` at a time (joins are bursty: do not flood)."""
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Coroutine[Any, Any, T]) -> T:
        async with semaphore:
            return await coro

    return list(await asyncio.gather(*(one(c) for c in coros)))


def run_loop(coro: Coroutine[Any, Any, T], use_uvloop: bool) -> T:
    factory = None
    if use_uvloop:
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def prepared_store(identity: Identity, node_id: bytes) -> Store:
    """An in-memory store holding a seeded identity and node id (reproducible topology)."""
    store = Store(None)
    store.set_identity_blob(identity.to_bytes())
    store.set_setting("node_id", node_id.hex())
    return store


# -- the same key/value work for every DHT ------------------------------------------------


class KeyValueDht(Protocol):
    """What the key/value trials need of a DHT; values are identified by bytes."""

    peers: int

    def new_values(self, count: int) -> list[tuple[bytes, Any]]: ...

    async def put(self, peer: int, key: bytes, value: Any) -> None: ...

    async def get(self, peer: int, key: bytes) -> list[bytes]: ...


async def kv_trials(dht: KeyValueDht, trials: int, rng: random.Random) -> dict[str, Any]:
    """Per trial: one put and a get from another peer; then 20 writers put 20 values to
    one key and a reader that wrote none gets it (`mailbox_values`: how many came back)."""
    set_ms: list[float] = []
    get_ms: list[float] = []
    mailbox_ms: list[float] = []
    counts: list[int] = []
    for _ in range(trials):
        reader, *writers = rng.sample(range(dht.peers), min(dht.peers, MAILBOX_SENDERS + 1))
        key = rng.randbytes(20)
        ((_, value),) = dht.new_values(1)
        started = time.perf_counter()
        await dht.put(writers[0], key, value)
        set_ms.append(elapsed_ms(started))
        started = time.perf_counter()
        await dht.get(reader, key)
        get_ms.append(elapsed_ms(started))
        key = rng.randbytes(20)
        written = dht.new_values(MAILBOX_SENDERS)
        for i, (_, value) in enumerate(written):
            started = time.perf_counter()
            await dht.put(writers[i % len(writers)], key, value)
            set_ms.append(elapsed_ms(started))
        started = time.perf_counter()
        got = await dht.get(reader, key)
        mailbox_ms.append(elapsed_ms(started))
        counts.append(len({vid for vid, _ in written} & set(got)))
    return {
        "set_ms": summary(set_ms),
        "get_ms": summary(get_ms),
        "mailbox_ms": summary(mailbox_ms),
        "mailbox_values": int(statistics.median(counts)) if counts else None,
        "mailbox_values_min": min(counts, default=None),
    }


class MeshKeyValue:
    """Our DhtServer doing the baselines' work, with records sealed before the clock runs."""

    def __init__(self, servers: list[DhtServer], rng: random.Random) -> None:
        self.servers = servers
        self.peers = len(servers)
        self.sender = Identity.from_seed(rng.randbytes(32))
        self.recipient = Identity.from_seed(rng.randbytes(32)).public

    def new_values(self, count: int) -> list[tuple[bytes, Any]]:
        now = time.time()
        records = [
            envelope.seal_message(self.sender, self.recipient, "text", TEXT, now)[1]
            for _ in range(count)
        ]
        return [(r.id, r) for r in records]

    async def put(self, peer: int, key: bytes, value: Any) -> None:
        await self.servers[peer].put(key, [value])

    async def get(self, peer: int, key: bytes) -> list[bytes]:
        return [r.id for r in await self.servers[peer].fetch(key)]


def record_size() -> int:
    """Bytes of one packed record of TEXT: the value size every baseline stores."""
    sender = Identity.from_seed(bytes(32))
    _, record = envelope.seal_message(sender, sender.public, "text", TEXT, time.time())
    return len(record.pack())


# -- our network --------------------------------------------------------------------------


class MeshNet:
    """Every peer of the bench, and the loopback addresses handed out so far."""

    def __init__(self, options: BenchOptions, rng: random.Random) -> None:
        self.options = options
        self.rng = rng
        self.config = DhtConfig()
        self.replicas: list[DhtServer] = []
        self.nodes: list[Node] = []
        self.extras: list[Node] = []  # recipients started by the trials
        self._next_address = 0

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
        server = DhtServer(self.rng.randbytes(20), self.config, RecordStorage())
        await server.listen(host, 0)
        self.replicas.append(server)
        return server

    async def start_node(self, identity: Identity, options: NodeOptions, host: str) -> Node:
        store = prepared_store(identity, self.rng.randbytes(20))
        seeds = self.seeds() if self.replicas or self.nodes else []
        return await Node.start(
            host=host, bootstrap=seeds, config=self.config, options=options, store=store
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
        await self.wait_quiet()
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
        }

    async def _new_node(self, host: str) -> Node:
        identity = Identity.from_seed(self.rng.randbytes(32))
        return await self.start_node(identity, SENDER_OPTIONS, host)

    async def start_recipient(self, identity: Identity) -> Node:
        node = await self.start_node(identity, RECIPIENT_OPTIONS, self.address())
        self.extras.append(node)
        return node

    def datagrams(self) -> int:
        dhts = self.servers + [n.dht for n in self.extras]
        return sum(d.statistics().get("datagrams_in", 0) for d in dhts)

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
        for node in self.extras + self.nodes:
            await node.stop()
        for server in self.replicas:
            await server.close()


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


# -- trials -------------------------------------------------------------------------------


@dataclass
class Samples:
    send_ms: list[float]
    replicas: list[int]
    start_ms: list[float]
    catchup_ms: list[float]
    catchup_ok: list[bool]
    fetch_ms: list[float]
    fetch_ok: list[bool]
    open_ms: list[float]
    push_ms: list[float]
    push_ok: list[bool]
    send_online_ms: list[float]


async def send_mailbox(net: MeshNet, recipient: Identity, samples: Samples) -> list[Receipt]:
    """20 messages to `recipient`, from the senders in turn, one `send` at a time."""
    receipts = []
    senders = net.senders
    for i in range(MAILBOX_SENDERS):
        started = time.perf_counter()
        receipt = await senders[i % len(senders)].send(recipient.id, TEXT)
        samples.send_ms.append(elapsed_ms(started))
        samples.replicas.append(receipt.replicas)
        receipts.append(receipt)
    return receipts


async def fetch_trial(net: MeshNet, samples: Samples) -> None:
    identity = Identity.from_seed(net.rng.randbytes(32))
    receipts = await send_mailbox(net, identity, samples)
    await net.wait_quiet()
    started = time.perf_counter()
    recipient = await net.start_recipient(identity)
    samples.start_ms.append(elapsed_ms(started))
    arrivals = Arrivals(recipient)
    caught_up = await arrivals.wait_for({r.message_id for r in receipts})
    await arrivals.close()
    samples.catchup_ok.append(caught_up)
    if caught_up:
        samples.catchup_ms.append((max(arrivals.times.values()) - started) * 1000.0)
    await net.wait_quiet()
    started = time.perf_counter()
    records = await recipient.dht.fetch(identity.mailbox_key)
    samples.fetch_ms.append(elapsed_ms(started))
    samples.fetch_ok.append({r.record_id for r in receipts} <= {r.id for r in records})
    samples.open_ms.append(open_all(identity, records))


def open_all(identity: Identity, records: list[Record]) -> float:
    """Milliseconds to open (decrypt and verify) every record: `node.fetch`'s crypto."""
    now = time.time()
    started = time.perf_counter()
    for record in records:
        envelope.open_record(identity, record, now)
    return elapsed_ms(started)


async def push_trial(net: MeshNet, recipient: Node, arrivals: Arrivals, samples: Samples) -> None:
    senders = net.senders
    for i in range(PUSH_SAMPLES_PER_TRIAL):
        started = time.perf_counter()
        receipt = await senders[i % len(senders)].send(recipient.id, TEXT)
        samples.send_online_ms.append(elapsed_ms(started))
        pushed = await arrivals.wait_for({receipt.message_id})
        samples.push_ok.append(pushed)
        if pushed:
            samples.push_ms.append((arrivals.times[receipt.message_id] - started) * 1000.0)
    await net.wait_quiet()


async def run_trials(net: MeshNet, trials: int) -> Samples:
    samples = Samples([], [], [], [], [], [], [], [], [], [], [])
    online = await net.start_recipient(Identity.from_seed(net.rng.randbytes(32)))
    arrivals = Arrivals(online)
    await net.wait_quiet()
    for _ in range(trials):
        await fetch_trial(net, samples)
        await push_trial(net, online, arrivals, samples)
    await arrivals.close()
    return samples


def samples_result(samples: Samples) -> dict[str, Any]:
    return {
        "send_ms": summary(samples.send_ms),
        "send_replicas": {
            "min": min(samples.replicas, default=None),
            "p50": percentile(samples.replicas, 0.5) if samples.replicas else None,
        },
        "fetch20_ms": summary(samples.fetch_ms),
        "fetch20_complete": fraction(samples.fetch_ok),
        "open20_ms": summary(samples.open_ms),
        "recipient_start_ms": summary(samples.start_ms),
        "catchup_ms": summary(samples.catchup_ms),
        "catchup_complete": fraction(samples.catchup_ok),
        "push_ms": summary(samples.push_ms),
        "push_complete": fraction(samples.push_ok),
        "send_online_ms": summary(samples.send_online_ms),
    }


async def bench_mesh(options: BenchOptions, profile_out: IO[str] | None) -> dict[str, Any]:
    rng = random.Random(options.seed)
    random.seed(options.seed)  # the DHT's own random choices (bucket refresh targets)
    net = MeshNet(options, rng)
    try:
        result = await net.build()
        profiler = cProfile.Profile() if profile_out is not None else None
        if profiler is not None:
            profiler.enable()
        samples = await run_trials(net, options.trials)
        if profiler is not None:
            profiler.disable()
            print_profile(profiler, profile_out)
        result.update(samples_result(samples))
        await net.wait_quiet()
        result["dht"] = await kv_trials(MeshKeyValue(net.servers, rng), options.trials, rng)
        result["extra_nodes"] = len(net.extras)
    finally:
        await net.stop()
    return result


def print_profile(profiler: cProfile.Profile, out: IO[str] | None) -> None:
    for order in ("tottime", "cumulative"):
        print(f"--- mesh bench --profile: top 25 by {order} (send/fetch/push trials)", file=out)
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats(order).print_stats(25)


# -- baselines: kademlia 2.2.3 and OpenDHT, each in its own process ------------------------


class KademliaKeyValue:
    def __init__(self, servers: list[Any], rng: random.Random, size: int) -> None:
        self.servers = servers
        self.peers = len(servers)
        self.rng = rng
        self.size = size

    def new_values(self, count: int) -> list[tuple[bytes, Any]]:
        values = [self.rng.randbytes(self.size) for _ in range(count)]
        return [(v, v) for v in values]

    async def put(self, peer: int, key: bytes, value: Any) -> None:
        await self.servers[peer].set(key, value)

    async def get(self, peer: int, key: bytes) -> list[bytes]:
        value = await self.servers[peer].get(key)
        return [value] if isinstance(value, bytes) else []


async def build_kademlia(peers: int, rng: random.Random) -> list[Any]:
    from kademlia.network import Server

    for name in ("kademlia", "rpcudp"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    servers = []
    for i in range(peers):
        server = Server(ksize=20, alpha=3, node_id=rng.randbytes(20))
        await server.listen(0, interface=loopback_address(i))
        servers.append(server)
    seed = servers[0].transport.get_extra_info("sockname")[:2]
    await bounded((s.bootstrap([seed]) for s in servers[1:]), BOOTSTRAP_CONCURRENCY)
    return servers


async def kademlia_baseline(peers: int, trials: int, seed: int, size: int) -> dict[str, Any]:
    rng = random.Random(seed)
    random.seed(seed)
    base = rss_kb()
    started = time.perf_counter()
    servers = await build_kademlia(peers, rng)
    result: dict[str, Any] = {
        "build_s": round(time.perf_counter() - started, 2),
        "rss_kb_per_peer": per_peer_kb(base, rss_kb(), peers),
    }
    result.update(await kv_trials(KademliaKeyValue(servers, rng, size), trials, rng))
    for server in servers:
        server.stop()
    return result


class OpenDhtKeyValue:
    """OpenDHT runners; their callbacks come from C++ threads and reach the event loop
    through `call_soon_threadsafe`."""

    def __init__(self, runners: list[Any], rng: random.Random, size: int) -> None:
        import opendht

        self.dht = opendht
        self.runners = runners
        self.peers = len(runners)
        self.rng = rng
        self.size = size
        self.loop = asyncio.get_running_loop()

    def new_values(self, count: int) -> list[tuple[bytes, Any]]:
        values = [self.rng.randbytes(self.size) for _ in range(count)]
        return [(v, v) for v in values]

    def _done(self, future: asyncio.Future[bool]) -> Callable[[bool, Any], None]:
        def done(ok: bool, _nodes: Any) -> None:
            self.loop.call_soon_threadsafe(_resolve, future, bool(ok))

        return done

    async def put(self, peer: int, key: bytes, value: Any) -> None:
        future: asyncio.Future[bool] = self.loop.create_future()
        hash_ = self.dht.InfoHash(key.hex().encode())
        self.runners[peer].put(hash_, self.dht.Value(value), done_cb=self._done(future))
        await future

    async def get(self, peer: int, key: bytes) -> list[bytes]:
        return await self.search(self.runners[peer], self.dht.InfoHash(key.hex().encode()))

    async def search(self, runner: Any, hash_: Any) -> list[bytes]:
        future: asyncio.Future[bool] = self.loop.create_future()
        found: list[bytes] = []

        def on_value(value: Any) -> bool:
            found.append(bytes(value.data))
            return True

        runner.get(hash_, on_value, self._done(future))
        await future
        return found


def _resolve(future: asyncio.Future[bool], ok: bool) -> None:
    if not future.done():
        future.set_result(ok)


async def build_opendht(peers: int, rng: random.Random, size: int) -> OpenDhtKeyValue:
    """OpenDHT runners, all on 127.0.0.1: OpenDHT replaces a loopback address in the node
    lists it receives by the sender's address, so with one 127.0.x.y per runner contacts
    become unreachable and operations stall for seconds. Its bootstrap only pings, so each
    runner then searches its own id, as our bootstrap and kademlia's do."""
    import opendht

    runners = []
    for _ in range(peers):
        runner = opendht.DhtRunner()
        runner.run(ipv4="127.0.0.1", port=0)
        runners.append(runner)
    port = runners[0].getBound().getPort()
    for runner in runners[1:]:
        runner.bootstrap("127.0.0.1", str(port))
    kv = OpenDhtKeyValue(runners, rng, size)
    await bounded((kv.search(r, r.getNodeId()) for r in runners), BOOTSTRAP_CONCURRENCY)
    return kv


async def opendht_baseline(peers: int, trials: int, seed: int, size: int) -> dict[str, Any]:
    rng = random.Random(seed)
    base = rss_kb()
    started = time.perf_counter()
    kv = await build_opendht(peers, rng, size)
    result: dict[str, Any] = {
        "build_s": round(time.perf_counter() - started, 2),
        "rss_kb_per_peer": per_peer_kb(base, rss_kb(), peers),
    }
    result.update(await kv_trials(kv, trials, rng))
    for runner in kv.runners:
        runner.shutdown()
    for runner in kv.runners:
        runner.join()
    return result


BASELINE_RUNNERS = {"kademlia": kademlia_baseline, "opendht": opendht_baseline}
BASELINE_MODULES = {"kademlia": "kademlia", "opendht": "opendht"}


def baseline_main() -> None:
    """Subprocess entry: argv[1] is a JSON object of arguments; prints one JSON line."""
    args = json.loads(sys.argv[1])
    runner = BASELINE_RUNNERS[args.pop("name")]
    use_uvloop = args.pop("use_uvloop")
    print(json.dumps(run_loop(runner(**args), use_uvloop)))


def run_baseline(name: str, options: BenchOptions, notes: list[str]) -> dict[str, Any] | None:
    """Run one baseline in a fresh interpreter; None (and a note) if it cannot run."""
    if importlib.util.find_spec(BASELINE_MODULES[name]) is None:
        notes.append(f"{name}: not installed (pip install 'mesh-messenger[bench]')")
        return None
    args = {
        "name": name,
        "peers": options.peers,
        "trials": options.trials,
        "seed": options.seed,
        "size": record_size(),
        "use_uvloop": options.use_uvloop,
    }
    code = "from mesh.bench import baseline_main; baseline_main()"
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, json.dumps(args)],
            capture_output=True,
            text=True,
            timeout=BASELINE_TIMEOUT,
            check=True,
        )
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        stderr = getattr(exc, "stderr", "") or ""
        notes.append(f"{name}: failed ({type(exc).__name__}) {stderr.strip()[-300:]}")
        return None
    return result


# -- the whole run ------------------------------------------------------------------------


def ratio(ours: Any, theirs: Any) -> float | None:
    if not isinstance(ours, dict) or not isinstance(theirs, dict):
        return None
    a, b = ours.get("p50"), theirs.get("p50")
    return round(a / b, 2) if a is not None and b else None


def ratios(result: dict[str, Any]) -> dict[str, float | None]:
    """ours / theirs on p50 (below 1: we are faster), for each baseline that ran."""
    out: dict[str, float | None] = {}
    dht = result.get("dht", {})
    for name, base in result["baselines"].items():
        if base is None:
            continue
        out[f"dht_set_vs_{name}"] = ratio(dht.get("set_ms"), base.get("set_ms"))
        out[f"dht_get_vs_{name}"] = ratio(dht.get("get_ms"), base.get("get_ms"))
        out[f"send_vs_{name}_set"] = ratio(result.get("send_ms"), base.get("set_ms"))
        out[f"fetch20_vs_{name}_mailbox"] = ratio(result.get("fetch20_ms"), base["mailbox_ms"])
    return out


async def discovery_result(trials: int, notes: list[str]) -> dict[str, Any] | None:
    try:
        from mesh.bench_discovery import run_discovery_bench
    except ImportError as exc:
        notes.append(f"discovery: skipped, mesh.bench_discovery unavailable ({exc})")
        return None
    return dict(await run_discovery_bench(trials))


def run_bench(options: BenchOptions, profile_out: IO[str] | None = None) -> dict[str, Any]:
    """The whole benchmark; with `profile_out`, cProfile's top functions go there."""
    if options.peers < 2 or options.trials < 1:
        raise ValueError("the bench needs at least 2 peers and 1 trial")
    started = time.perf_counter()
    use_uvloop = options.use_uvloop and uvloop_available()
    options = BenchOptions(**{**asdict(options), "use_uvloop": use_uvloop})
    notes: list[str] = []
    out = (profile_out or sys.stderr) if options.profile else None
    result: dict[str, Any] = {"peers": options.peers, "trials": options.trials}
    result["seed"] = options.seed
    result["loop"] = "uvloop" if use_uvloop else "asyncio"
    result.update(run_loop(bench_mesh(options, out), use_uvloop))
    result["baselines"] = {
        name: run_baseline(name, options, notes) if name in options.baselines else None
        for name in BASELINES
    }
    result["ratios"] = ratios(result)
    if options.discovery:
        result["discovery"] = run_loop(discovery_result(options.trials, notes), use_uvloop)
    result["notes"] = notes
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result
