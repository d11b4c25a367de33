"""`mesh bench`: N peers in one process on loopback, timed, next to kademlia and OpenDHT.

    result = run_bench(BenchOptions(peers=300, trials=20))   # a JSON-ready dict

Our network: `peers` peers, each bound to its own loopback address 127.0.x.y (the DHT
caps contacts per IP, as a LAN where every device has its own address). 20 of them (the
senders) are full Nodes (identity, SQLite store, outbox); the rest are DhtServer-only
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
our DhtServer (`dht`), on kademlia 2.2.3 and on OpenDHT (mesh/tools/bench_kv.py). Ours
and each baseline run one after the other, each in a fresh interpreter (`run_worker`): no
library shares an event loop or a core with another, and every memory figure starts from
a clean process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import logging
import os
import random
import resource
import subprocess
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from mesh import envelope
from mesh.dht.server import DhtConfig
from mesh.envelope import Record
from mesh.errors import LocalError, MeshError
from mesh.identity import Identity
from mesh.mailboxes import Mailboxes
from mesh.node import Node, Receipt
from mesh.tools.bench_group import group_trials
from mesh.tools.bench_kv import (
    MAILBOX_SENDERS,
    PREPARATIONS,
    TEXT,
    MeshKeyValue,
    elapsed_ms,
    fraction,
    kv_trials,
    percentile,
    run_baseline,
    summary,
)
from mesh.tools.bench_net import BASELINES as BASELINES  # re-exported: the CLI's
from mesh.tools.bench_net import STORES as STORES
from mesh.tools.bench_net import Arrivals
from mesh.tools.bench_net import BenchOptions as BenchOptions
from mesh.tools.bench_net import MeshNet as MeshNet

log = logging.getLogger(__name__)

T = TypeVar("T")

PUSH_SAMPLES_PER_TRIAL = 5
FD_MARGIN = 64  # descriptors besides one socket per peer (SQLite, subprocess pipes)
EQUAL_WORK = "mesh_k8"  # worker name: our DhtServer at OpenDHT's replication factor
EQUAL_WORK_CONFIG = DhtConfig(ksize=8, quorum=8)  # store on 8, return when all 8 acked


def run_loop(coro: Coroutine[Any, Any, T], use_uvloop: bool) -> T:
    factory = None
    if use_uvloop:
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


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
    cold_ms: list[float]
    cold_ok: list[bool]
    open_ms: list[float]
    push_ms: list[float]
    push_ok: list[bool]
    send_online_ms: list[float]


async def send_mailbox(net: MeshNet, recipient: Identity, samples: Samples) -> list[Receipt]:
    """20 messages to `recipient`, from the senders in turn, one `send` at a time."""
    receipts = []
    senders = net.senders
    for i in range(MAILBOX_SENDERS):
        with net.profiler.phase("send"):
            started = time.perf_counter()
            receipt = await senders[i % len(senders)].send(recipient.id, TEXT)
            samples.send_ms.append(elapsed_ms(started))
        samples.replicas.append(receipt.replicas)
        receipts.append(receipt)
    return receipts


async def cold_fetch(net: MeshNet, key: bytes, wanted: set[bytes], samples: Samples) -> None:
    """The mailbox fetched by a peer that never looked the key up and holds no copy
    (the key/value trials' reader rule): no contact near the key, every hop a stranger's."""
    now = time.time()
    readers = [s for s in net.replicas if not s.storage.ids(key, now)] or net.replicas
    reader = net.rng.choice(readers)
    with net.profiler.phase("fetch_cold"):
        started = time.perf_counter()
        records = await reader.fetch(key)
        samples.cold_ms.append(elapsed_ms(started))
    samples.cold_ok.append(wanted <= {r.id for r in records})
    await net.wait_quiet()


async def fetch_trial(net: MeshNet, samples: Samples) -> None:
    identity = Identity.from_seed(net.rng.randbytes(32))
    store = net.new_store(identity)
    boxes = Mailboxes(identity, store, rand=net.rng.randbytes)
    net.befriend(boxes)
    key = boxes.own_key(boxes.epoch(time.time()))  # its mailbox of the day
    receipts = await send_mailbox(net, identity, samples)
    await net.wait_quiet()
    if net.replicas:
        wanted = {r.record_id for r in receipts}
        await cold_fetch(net, key, wanted, samples)
    started = time.perf_counter()
    recipient = await net.start_recipient(identity, store)
    samples.start_ms.append(elapsed_ms(started))
    arrivals = Arrivals(recipient)
    caught_up = await arrivals.wait_for({r.message_id for r in receipts})
    await arrivals.close()
    samples.catchup_ok.append(caught_up)
    if caught_up:
        samples.catchup_ms.append((max(arrivals.times.values()) - started) * 1000.0)
    await net.wait_quiet()
    with net.profiler.phase("fetch_warm"):
        started = time.perf_counter()
        records = await recipient.dht.fetch(key)
        samples.fetch_ms.append(elapsed_ms(started))
    samples.fetch_ok.append({r.record_id for r in receipts} <= {r.id for r in records})
    samples.open_ms.append(open_all(identity, records, recipient.mailboxes.prekeys_for(key)))


def open_all(
    identity: Identity, records: list[Record], prekeys: list[tuple[bytes, bytes]] | None
) -> float:
    """Milliseconds to open (decrypt and verify) every record: `node.fetch`'s crypto."""
    now = time.time()
    started = time.perf_counter()
    for record in records:
        envelope.open_record(identity, record, now, prekeys)
    return elapsed_ms(started)


async def push_trial(net: MeshNet, recipient: Node, arrivals: Arrivals, samples: Samples) -> None:
    senders = net.senders
    for i in range(PUSH_SAMPLES_PER_TRIAL):
        with net.profiler.phase("push"):
            started = time.perf_counter()
            receipt = await senders[i % len(senders)].send(recipient.id, TEXT)
            samples.send_online_ms.append(elapsed_ms(started))
            pushed = await arrivals.wait_for({receipt.message_id})
        samples.push_ok.append(pushed)
        if pushed:
            samples.push_ms.append((arrivals.times[receipt.message_id] - started) * 1000.0)
    await net.wait_quiet()


async def run_trials(net: MeshNet, trials: int) -> Samples:
    samples = Samples(*([] for _ in dataclasses.fields(Samples)))
    online = await net.start_recipient(Identity.from_seed(net.rng.randbytes(32)))
    net.befriend(online.mailboxes)
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
        "fetch20_cold_ms": summary(samples.cold_ms),
        "fetch20_cold_complete": fraction(samples.cold_ok),
        "fetch20_warm_ms": summary(samples.fetch_ms),
        "fetch20_warm_complete": fraction(samples.fetch_ok),
        "open20_ms": summary(samples.open_ms),
        "recipient_start_ms": summary(samples.start_ms),
        "catchup_ms": summary(samples.catchup_ms),
        "catchup_complete": fraction(samples.catchup_ok),
        "push_ms": summary(samples.push_ms),
        "push_complete": fraction(samples.push_ok),
        "send_online_ms": summary(samples.send_online_ms),
    }


async def bench_mesh(options: BenchOptions) -> dict[str, Any]:
    """Our network's whole run; --profile prints to stderr. The key/value trials run
    first, right after the same preparation as every baseline's, so their tables are as
    warm as the baselines' (the mailbox trials warm them further)."""
    rng = random.Random(options.seed)
    random.seed(options.seed)  # the DHT's own random choices (bucket refresh targets)
    net = MeshNet(options, rng)
    try:
        log.info("starting %d peers on loopback", options.peers)
        result = await net.build()
        result["replication"] = replication(net.config)
        log.info("joined in %.1f s; key/value trials on our DhtServer", result["build_s"])
        result["dht"] = await kv_trials(MeshKeyValue(net.servers, rng), options.trials, rng)
        await net.wait_quiet()
        log.info("%d mailbox trials", options.trials)
        samples = await run_trials(net, options.trials)
        result.update(samples_result(samples))
        if options.group:
            log.info("group trials: %d members", options.group)
            result.update(await group_trials(net, options.group, options.trials))
            result["group_send_vs_send"] = ratio(result["group_send_ms"], result["send_online_ms"])
        if options.profile:
            net.profiler.print(sys.stderr)
            result["profiled"] = True  # cProfile slows everything: do not quote these times
        result["extra_nodes"] = len(net.extras)
    finally:
        await net.stop()
    return result


async def bench_mesh_kv(options: BenchOptions, config: DhtConfig) -> dict[str, Any]:
    """Only the key/value trials, on our DhtServer with `config` (the equal-work run)."""
    rng = random.Random(options.seed)
    random.seed(options.seed)
    net = MeshNet(options, rng, config)
    try:
        result = await net.build()
        result["replication"] = replication(config)
        result.update(await kv_trials(MeshKeyValue(net.servers, rng), options.trials, rng))
    finally:
        await net.stop()
    return result


def replication(config: DhtConfig) -> dict[str, Any]:
    """Our replication factor and when our put returns."""
    return {
        "k": config.ksize,
        "put_returns": f"after {min(config.quorum, config.ksize)} of {config.ksize} replicas "
        f"acknowledged (lookup alpha {config.alpha}, ends when the {config.confirm} "
        "closest answered)",
    }


# -- the whole run ------------------------------------------------------------------------


def ratio(ours: Any, theirs: Any) -> float | None:
    if not isinstance(ours, dict) or not isinstance(theirs, dict):
        return None
    a, b = ours.get("p50"), theirs.get("p50")
    return round(a / b, 2) if a is not None and b else None


def ratios(result: dict[str, Any]) -> dict[str, float | None]:
    """ours / theirs on p50 (below 1: we are faster), like with like: the same key/value
    work on each DHT; our cold mailbox fetch against their (cold) 20-value read; and our
    DhtServer at k = 8 (`equal_work`) against OpenDHT, which stores on 8."""
    out: dict[str, float | None] = {}
    dht = result.get("dht", {})
    equal = result.get("equal_work") or {}
    for name, base in result["baselines"].items():
        if base is None:
            continue
        for op in ("set", "get", "mailbox"):
            out[f"dht_{op}_vs_{name}"] = ratio(dht.get(f"{op}_ms"), base.get(f"{op}_ms"))
        out[f"fetch20_cold_vs_{name}_mailbox"] = ratio(
            result.get("fetch20_cold_ms"), base.get("mailbox_ms")
        )
        if name == "opendht" and equal:
            for op in ("set", "get", "mailbox"):
                out[f"k8_{op}_vs_opendht"] = ratio(equal.get(f"{op}_ms"), base.get(f"{op}_ms"))
    return out


async def discovery_result(trials: int, notes: list[str]) -> dict[str, Any] | None:
    try:
        from mesh.tools.bench_discovery import run_discovery_bench
    except ImportError as exc:
        notes.append(f"discovery: skipped, mesh.tools.bench_discovery unavailable ({exc})")
        return None
    return dict(await run_discovery_bench(trials))


def raise_fd_limit(needed: int) -> None:
    """One UDP socket per peer: lift the soft limit on open files if it is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise LocalError(
            f"{needed} open files are needed but the limit is {hard}: "
            "use fewer peers or raise `ulimit -n`"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


WORKER_TIMEOUT = 900.0
WORKER_CODE = "from mesh.tools.bench import worker_main; worker_main()"


def worker_main() -> None:
    """Entry of a worker process: argv[1] is {"name", "options"}; prints one JSON line."""
    args = json.loads(sys.argv[1])
    options = BenchOptions(**{**args["options"], "baselines": tuple(args["options"]["baselines"])})
    if options.verbose:
        logging.basicConfig(level=logging.INFO, format="bench: %(message)s", stream=sys.stderr)
    if args["name"] == "mesh":
        coro = bench_mesh(options)
    elif args["name"] == EQUAL_WORK:
        coro = bench_mesh_kv(options, EQUAL_WORK_CONFIG)
    else:
        coro = run_baseline(args["name"], options)
    print(json.dumps(run_loop(coro, options.use_uvloop)), flush=True)


def run_worker(name: str, options: BenchOptions, notes: list[str]) -> dict[str, Any] | None:
    """Run `name` ("mesh" or a baseline) in a fresh interpreter: its memory figures start
    from a clean process, and nothing it leaves behind (threads, sockets) slows the next.
    Our own run's stderr (progress, --profile) passes through; a baseline's is kept for
    the note that says why it failed."""
    if name in BASELINES and importlib.util.find_spec(name) is None:
        notes.append(f"{name}: not installed (pip install 'mesh-messenger[bench]')")
        return None
    payload = json.dumps({"name": name, "options": dataclasses.asdict(options)})
    try:
        done = subprocess.run(
            [sys.executable, "-c", WORKER_CODE, payload],
            stdout=subprocess.PIPE,
            stderr=None if name in ("mesh", EQUAL_WORK) else subprocess.PIPE,
            text=True,
            timeout=WORKER_TIMEOUT,
            check=True,
        )
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        stderr = (getattr(exc, "stderr", None) or "").strip()
        notes.append(f"{name}: failed ({type(exc).__name__}) {stderr[-300:]}".strip())
        return None
    return result


CODE = (
    ":(top)mesh",
    ":(top)cli",
    ":(top)benchmarks/*.py",
)  # what "+dirty" looks at (not results, docs)


def source_commit() -> str | None:
    """The commit of the code that ran (with "+dirty" if it had uncommitted changes)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(
            ["git", "-C", here, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", here, "status", "--porcelain", "--untracked-files=no", "--", *CODE],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """The whole benchmark: ours, then each baseline, each in its own process."""
    if options.peers < 2 or options.trials < 1:
        raise LocalError("the bench needs at least 2 peers and 1 trial")
    if options.prepare not in PREPARATIONS:
        raise LocalError(f"unknown preparation {options.prepare!r}: {', '.join(PREPARATIONS)}")
    raise_fd_limit(options.peers + options.trials + FD_MARGIN)
    started = time.perf_counter()
    options = dataclasses.replace(options, use_uvloop=options.use_uvloop and uvloop_available())
    notes: list[str] = []
    result: dict[str, Any] = {"peers": options.peers, "trials": options.trials}
    result["seed"] = options.seed
    result["network_key"] = options.network_key  # ours sealed every datagram (private mesh)
    result["store"] = options.store  # where the full Nodes kept their SQLite store
    result["loop"] = "uvloop" if options.use_uvloop else "asyncio"
    result["commit"] = source_commit()
    result["load_avg"] = [round(os.getloadavg()[0], 2)]  # other work on the machine: noise
    ours = run_worker("mesh", options, notes)
    if ours is None:
        raise MeshError(f"the benchmark of our own DHT failed: {'; '.join(notes)}")
    result.update(ours)
    log.info("baselines: %s", ", ".join(options.baselines) or "none")
    result["baselines"] = {
        name: run_worker(name, options, notes) if name in options.baselines else None
        for name in BASELINES
    }
    if options.equal_work:
        result["equal_work"] = run_worker(EQUAL_WORK, options, notes)
    result["ratios"] = ratios(result)
    if options.discovery:
        result["discovery"] = run_loop(discovery_result(options.trials, notes), options.use_uvloop)
    result["notes"] = notes
    result["load_avg"].append(round(os.getloadavg()[0], 2))
    result["cpus"] = os.cpu_count()
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result
