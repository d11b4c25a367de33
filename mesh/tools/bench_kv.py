"""The key/value work of `mesh bench`, the same on three DHTs, and the measuring tools.

Per trial: one value put by a random peer and read by another; then 20 peers put 20
values under one key and a peer that wrote none reads it (`mailbox_values`: how many of
the 20 came back). `MeshKeyValue` runs it on our DhtServer, `KademliaKeyValue` on plain
kademlia 2.2.3 and `OpenDhtKeyValue` on OpenDHT; `run_baseline` is a baseline's whole
run. `mesh.tools.bench.run_worker` runs each in a fresh interpreter, after our own peers
stopped, so no library shares an event loop, a GIL, a core or an allocator with another.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import random
import resource
import statistics
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol, TypeVar

from kademlia.network import Server
from kademlia.utils import digest

from mesh import envelope
from mesh.dht.server import DhtServer
from mesh.identity import Identity

T = TypeVar("T")

MAILBOX_SENDERS = 20
BOOTSTRAP_CONCURRENCY = 32
TEXT = "a short chat message of the usual size, " * 3  # 120 B: the 512 B padding bucket


# -- small helpers ------------------------------------------------------------------------


def loopback_address(index: int) -> str:
    """Peer `index` gets its own address: 127.0.1.1, 127.0.1.2, ... 127.0.2.1, ..."""
    return f"127.0.{1 + index // 250}.{1 + index % 250}"


def percentile(samples: Iterable[float], fraction: float) -> float:
    """Nearest-rank percentile; NaN for no samples."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
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


# -- the same preparation for every DHT --------------------------------------------------

# After its peers joined, each DHT (ours, kademlia, OpenDHT) gets the same preparation,
# or none: "settle" waits SETTLE_S seconds with nothing timed (each DHT's own background
# work runs: our verification pings of strangers, OpenDHT's maintenance), then collects
# and freezes the garbage collector; "none" starts timing straight after the joins. Nobody
# gets an extra bucket refresh or a wait for quiet.
SETTLE_S = 3.0
PREPARATIONS = ("settle", "none")


async def prepare(policy: str) -> dict[str, Any]:
    """Apply `policy` (one of PREPARATIONS); returns what was done, for the JSON."""
    if policy == "none":
        return {"policy": "none", "settle_s": 0.0, "gc_freeze": False, "bucket_refresh": False}
    await asyncio.sleep(SETTLE_S)
    gc.collect()
    gc.freeze()
    return {"policy": policy, "settle_s": SETTLE_S, "gc_freeze": True, "bucket_refresh": False}


# -- the key/value trials ------------------------------------------------


class KeyValueDht(Protocol):
    """What the key/value trials need of a DHT; values are identified by bytes."""

    peers: int

    def new_values(self, count: int) -> list[tuple[bytes, Any]]: ...

    def holds(self, peer: int, key: bytes) -> bool: ...

    async def put(self, peer: int, key: bytes, value: Any) -> None: ...

    async def get(self, peer: int, key: bytes) -> list[bytes]: ...


def pick_reader(dht: KeyValueDht, key: bytes, candidates: list[int]) -> int:
    """A peer that wrote nothing and holds no local copy, so its get asks the network."""
    return next((p for p in candidates if not dht.holds(p, key)), candidates[0])


async def timed(samples: list[float], call: Coroutine[Any, Any, T]) -> T:
    started = time.perf_counter()
    result = await call
    samples.append(elapsed_ms(started))
    return result


async def kv_trials(dht: KeyValueDht, trials: int, rng: random.Random) -> dict[str, Any]:
    """Per trial: one put and a get from another peer; then 20 writers put 20 values to
    one key and a reader that wrote none gets it (`mailbox_values`: how many came back)."""
    set_ms: list[float] = []
    get_ms: list[float] = []
    mailbox_ms: list[float] = []
    counts: list[int] = []
    writer_count = min(MAILBOX_SENDERS, dht.peers - 1)
    for _ in range(trials):
        order = rng.sample(range(dht.peers), dht.peers)
        writers, others = order[:writer_count], order[writer_count:]
        key = rng.randbytes(20)
        ((_, value),) = dht.new_values(1)
        await timed(set_ms, dht.put(writers[0], key, value))
        await timed(get_ms, dht.get(pick_reader(dht, key, others), key))
        key = rng.randbytes(20)
        written = dht.new_values(MAILBOX_SENDERS)
        for i, (_, value) in enumerate(written):
            await timed(set_ms, dht.put(writers[i % writer_count], key, value))
        got = await timed(mailbox_ms, dht.get(pick_reader(dht, key, others), key))
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

    def holds(self, peer: int, key: bytes) -> bool:
        return False  # our fetch always asks every replica, even when it holds a copy

    async def put(self, peer: int, key: bytes, value: Any) -> None:
        await self.servers[peer].put(key, [value])

    async def get(self, peer: int, key: bytes) -> list[bytes]:
        return [r.id for r in await self.servers[peer].fetch(key)]


def record_size() -> int:
    """Bytes of one packed record of TEXT: the value size every baseline stores."""
    sender = Identity.from_seed(bytes(32))
    _, record = envelope.seal_message(sender, sender.public, "text", TEXT, time.time())
    return len(record.pack())


# -- baselines ---------------------------------------------------------------------------


SHUTDOWN_TIMEOUT = 30.0


class KademliaKeyValue:
    def __init__(self, servers: list[Any], rng: random.Random, size: int) -> None:
        self.servers = servers
        self.peers = len(servers)
        self.rng = rng
        self.size = size

    def new_values(self, count: int) -> list[tuple[bytes, Any]]:
        values = [self.rng.randbytes(self.size) for _ in range(count)]
        return [(v, v) for v in values]

    def holds(self, peer: int, key: bytes) -> bool:
        """kademlia's get answers from a local copy without asking anyone: avoid it."""
        return self.servers[peer].storage.get(digest(key)) is not None

    async def put(self, peer: int, key: bytes, value: Any) -> None:
        await self.servers[peer].set(key, value)

    async def get(self, peer: int, key: bytes) -> list[bytes]:
        value = await self.servers[peer].get(key)
        return [value] if isinstance(value, bytes) else []


async def build_kademlia(peers: int, rng: random.Random) -> list[Any]:
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


KADEMLIA_REPLICATION = {
    "k": 20,
    "put_returns": "after a full crawl (alpha 3) and a store to each of the 20 closest "
    "found, once every store answered or timed out",
}
OPENDHT_REPLICATION = {
    "k": 8,
    "put_returns": "when the value is announced: its search's 8 closest nodes acknowledged",
}


async def kademlia_baseline(peers: int, trials: int, seed: int, size: int, policy: str) -> Any:
    rng = random.Random(seed)
    random.seed(seed)
    base = rss_kb()
    started = time.perf_counter()
    servers = await build_kademlia(peers, rng)
    result: dict[str, Any] = {
        "build_s": round(time.perf_counter() - started, 2),
        "rss_kb_per_peer": per_peer_kb(base, rss_kb(), peers),
        "replication": KADEMLIA_REPLICATION,
        "preparation": await prepare(policy),
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

    def holds(self, peer: int, key: bytes) -> bool:
        return False  # OpenDHT's get searches the network even with a local copy

    async def put(self, peer: int, key: bytes, value: Any) -> None:
        future: asyncio.Future[bool] = self.loop.create_future()
        hash_ = self.dht.InfoHash(key.hex().encode())
        self.runners[peer].put(hash_, self.dht.Value(value), done_cb=self._done(future))
        await future

    async def get(self, peer: int, key: bytes) -> list[bytes]:
        return await self.search(self.runners[peer], self.dht.InfoHash(key.hex().encode()))

    async def shutdown(self) -> None:
        """Stop every runner. `join` waits for the runner's threads while holding the GIL,
        so it must only run once no callback into Python can still come."""
        stopped = []
        for runner in self.runners:
            future: asyncio.Future[bool] = self.loop.create_future()
            runner.shutdown(lambda f=future: self.loop.call_soon_threadsafe(_resolve, f, True))
            stopped.append(future)
        await asyncio.wait_for(asyncio.gather(*stopped), SHUTDOWN_TIMEOUT)
        for runner in self.runners:
            runner.join()

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
    """OpenDHT runners, all on 127.0.0.1: with one 127.0.x.y per runner their tables
    filled with wrong addresses (runners listed under the seed's IP with another runner's
    port) and operations stalled for seconds. OpenDHT's bootstrap only pings, so each
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


async def opendht_baseline(peers: int, trials: int, seed: int, size: int, policy: str) -> Any:
    rng = random.Random(seed)
    base = rss_kb()
    started = time.perf_counter()
    kv = await build_opendht(peers, rng, size)
    result: dict[str, Any] = {
        "build_s": round(time.perf_counter() - started, 2),
        "rss_kb_per_peer": per_peer_kb(base, rss_kb(), peers),
        "replication": OPENDHT_REPLICATION,
        "preparation": await prepare(policy),
    }
    result.update(await kv_trials(kv, trials, rng))
    await kv.shutdown()
    return result


BASELINE_RUNNERS = {"kademlia": kademlia_baseline, "opendht": opendht_baseline}


class RunOptions(Protocol):
    @property
    def peers(self) -> int: ...
    @property
    def trials(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def prepare(self) -> str: ...


def run_baseline(name: str, options: RunOptions) -> Coroutine[Any, Any, Any]:
    """The baseline's whole run, for `mesh.tools.bench.worker_main` (in its own process)."""
    runner = BASELINE_RUNNERS[name]
    return runner(options.peers, options.trials, options.seed, record_size(), options.prepare)
