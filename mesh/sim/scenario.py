"""Run a planned scenario on real `Node`s over the in-memory network (or loopback UDP).

    report = simulate(Scenario(peers=50, duration=600, churn=0.3, loss=0.05, seed=7))

`simulate` owns the event loop: a `VirtualTimeLoop` (time jumps when idle) unless
`scenario.real`, in which case real time and real sockets on 127.x.y.z are used. Peers are
the production `Node` objects; the simulator only chooses their addresses, identities,
node ids and stores (so the seed decides them) and plays the plan: sends, departures,
returns, newcomers, partition and heal. Discovery is modelled as mDNS on one LAN would
give it: a starting peer learns a few random online peers on its side of a partition,
and when a partition heals every online peer hears of a few peers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mesh.errors import MeshError
from mesh.identity import Identity
from mesh.mailboxes import Mailboxes, exchange_bundles
from mesh.netkey import NetworkKey
from mesh.node import VIAS, Node
from mesh.sim.clock import run_virtual
from mesh.sim.network import Impairments, LinkModel, Network, real_binder
from mesh.sim.plan import Event, Plan, Scenario, make_plan
from mesh.sim.report import Report, Sent
from mesh.store import Store
from mesh.tasks import TaskSet

log = logging.getLogger(__name__)

SIM_EPOCH = 1_750_000_000.0  # the simulated wall clock at loop time 0
PORT = 4000
BOOTSTRAP_PEERS = 3
HEAL_INTRODUCTIONS = 2
FIRST_WAVES_MAX = 64  # initial peers started at once, each bootstrapping off earlier ones
SEND_TIMEOUT = 120.0

Progress = Callable[[float, dict[str, int]], None]


@dataclass
class Peer:
    """A slot: one identity, one address, one store, and a Node while it is online."""

    slot: int
    host: str
    identity: Identity
    store: Store
    port: int = 0  # 0 until a --real peer first bound (then it keeps its port)
    node: Node | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    sends: TaskSet = field(default_factory=TaskSet)  # this session's sends, cut on leave

    @property
    def online(self) -> bool:
        return self.node is not None


def sim_host(slot: int) -> str:
    """A distinct made-up address per peer (the DHT caps contacts per IP)."""
    return f"10.{(slot >> 16) & 255}.{(slot >> 8) & 255}.{slot & 255}"


def real_host(slot: int) -> str:
    """A distinct loopback address per peer for --real runs."""
    return f"127.{20 + slot // 62500}.{(slot // 250) % 250}.{1 + slot % 250}"


class Simulation:
    def __init__(
        self, scenario: Scenario, progress: Progress | None = None, plan: Plan | None = None
    ) -> None:
        self.scenario = scenario
        self.rng = random.Random(scenario.seed)
        # Not drawn from self.rng (the same plan and topology with or without a key).
        secret = random.Random(scenario.seed + 1).randbytes(32)
        self.network_key = NetworkKey("sim", secret) if scenario.network_key else None
        planned = make_plan(scenario, self.rng)  # drawn even if unused: same rng stream
        self.plan: Plan = plan or planned
        self.progress = progress
        self.loop = asyncio.get_running_loop()
        model = LinkModel(loss=scenario.loss, duplicate=scenario.duplicate)
        if scenario.real:
            self.impairments = Impairments(self.rng, model)
            self.network: Network | None = None
            self.bind: Any = real_binder(self.impairments)
            self.wall: Callable[[], float] = time.time
        else:
            self.network = Network(self.rng, model)
            self.impairments = self.network.impairments
            self.bind = self.network.bind
            self.wall = lambda: SIM_EPOCH + self.loop.time()
        self.peers = [self._make_peer(slot) for slot in range(self.plan.slots)]
        self._agree_contacts()
        self.sent: list[Sent] = []
        self.skipped = 0
        self.counts: dict[str, int] = {}
        self.retired: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.t0 = 0.0
        self._tasks = TaskSet(on_error=self._task_failed)

    def _make_peer(self, slot: int) -> Peer:
        identity = Identity.from_seed(self.rng.randbytes(32))
        store = Store(None)
        store.set_identity_blob(identity.to_bytes())
        host = real_host(slot) if self.scenario.real else sim_host(slot)
        port = 0 if self.scenario.real else PORT
        return Peer(slot, host, identity, store, port, sends=TaskSet(on_error=self._task_failed))

    def _agree_contacts(self) -> None:
        """Every sender and recipient of the plan are contacts whose key agreement is
        complete before the run (mesh.mailboxes.exchange_bundles): the run measures the
        steady state of contacts' rotating mailboxes, not introductions."""
        length = self.scenario.node_options.epoch_seconds
        boxes: dict[int, Mailboxes] = {}

        def of(slot: int) -> Mailboxes:
            if slot not in boxes:
                peer = self.peers[slot]
                boxes[slot] = Mailboxes(peer.identity, peer.store, length, self.rng.randbytes)
            return boxes[slot]

        pairs = {
            (min(e.peer, e.other), max(e.peer, e.other))
            for e in self.plan.events
            if e.kind == "send" and e.peer != e.other
        }
        for slot in range(len(self.peers)):  # every peer's keys from the seed
            of(slot)
        now = self.wall()
        for a, b in sorted(pairs):
            exchange_bundles(of(a), of(b), now)

    # -- the run ----------------------------------------------------------------------

    async def run(self) -> Report:
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        setup_start = self.loop.time()
        await self._start_initial()
        self.t0 = self.loop.time()
        ticker = self.loop.create_task(self._tick())
        try:
            await self._play()
            await self._sleep_until(self.scenario.duration)
        finally:
            ticker.cancel()
        report = self._report(self.t0 - setup_start)
        await self.shutdown()
        report.wall_s = time.perf_counter() - wall_start
        report.cpu_s = time.process_time() - cpu_start
        return report

    async def _start_initial(self) -> None:
        started: list[int] = []
        wave = 1
        while len(started) < self.scenario.peers:
            batch = range(len(started), min(len(started) + wave, self.scenario.peers))
            boots = [self._pick(started, BOOTSTRAP_PEERS) for _ in batch]
            await asyncio.gather(*(self._start(s, b) for s, b in zip(batch, boots, strict=True)))
            started.extend(batch)
            wave = min(wave * 2, FIRST_WAVES_MAX)
            if self.progress is not None:
                self.progress(0.0, {"joined": len(started)})

    async def _play(self) -> None:
        for event in self.plan.events:
            await self._sleep_until(event.at)
            self._dispatch(event)
            self.counts[event.kind] = self.counts.get(event.kind, 0) + 1

    async def _sleep_until(self, at: float) -> None:
        delay = self.t0 + at - self.loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    def _dispatch(self, event: Event) -> None:
        if event.kind == "send":
            self._begin_send(event)
        elif event.kind in ("join", "return"):
            side = self._side(event.peer)
            self._spawn(self._start(event.peer, self._pick(self._online(side), BOOTSTRAP_PEERS)))
        elif event.kind == "leave":
            self._spawn(self._leave(event.peer))
        elif event.kind == "partition":
            half, rest = self.plan.sides
            self.impairments.partition(
                [[self.peers[s].host for s in half], [self.peers[s].host for s in rest]]
            )
        elif event.kind == "heal":
            self._heal()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro)

    def _task_failed(self, task: asyncio.Task[Any], exc: BaseException) -> None:
        """A failed join, departure or send is a bug of the simulator or of the node:
        count it (the report shows `errors`) and log it, never let it pass silently."""
        self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
        log.error("simulated peer task failed: %r", exc, exc_info=exc)

    async def _tick(self) -> None:
        step = max(1.0, self.scenario.duration / 200)
        while True:
            if self.progress is not None:
                self.progress(self.loop.time() - self.t0, self.snapshot())
            await asyncio.sleep(step)

    def snapshot(self) -> dict[str, int]:
        return {
            "online": sum(1 for p in self.peers if p.online),
            "sent": len(self.sent),
            "acked": sum(1 for s in self.sent if s.acked),
        }

    # -- peers ------------------------------------------------------------------------

    def _side(self, slot: int) -> int | None:
        if not self.impairments.partitioned:
            return None
        return 0 if slot in self.plan.sides[0] else 1

    def _online(self, side: int | None = None) -> list[int]:
        return [
            p.slot
            for p in self.peers
            if p.online and (side is None or (p.slot in self.plan.sides[0]) == (side == 0))
        ]

    def _pick(self, candidates: list[int], count: int) -> list[tuple[str, int]]:
        chosen = self.rng.sample(candidates, min(count, len(candidates)))
        return [(self.peers[s].host, self.peers[s].port) for s in chosen]

    async def _start(self, slot: int, bootstrap: list[tuple[str, int]]) -> None:
        peer = self.peers[slot]
        async with peer.lock:
            if peer.node is not None:
                return
            sc = self.scenario
            peer.node = await Node.start(
                host=peer.host,
                port=peer.port,
                bootstrap=bootstrap,
                config=sc.dht_config,
                options=sc.node_options,
                bind=self.bind,
                wall=self.wall,
                home=peer.store,
                node_id=self.rng.randbytes(20),  # new at every start, as in production
                network_key=self.network_key,
            )
            peer.port = peer.node.address[1]

    async def _leave(self, slot: int) -> None:
        """Abrupt departure: in-flight sends die, no goodbye, the store survives."""
        peer = self.peers[slot]
        async with peer.lock:
            node, peer.node = peer.node, None
            if node is None:
                return
            await peer.sends.close()
            peer.sends = TaskSet(on_error=self._task_failed)
            self._retire(node)
            await node.dht.close()

    def _retire(self, node: Node) -> None:
        for name, value in node.statistics().items():
            self.retired[name] = self.retired.get(name, 0) + value

    def _heal(self) -> None:
        self.impairments.heal()
        online = self._online()
        for slot in online:
            node = self.peers[slot].node
            assert node is not None
            for address in self._pick(online, HEAL_INTRODUCTIONS):
                if address[0] != self.peers[slot].host:
                    node.add_peer(address)

    # -- messages ---------------------------------------------------------------------

    def _begin_send(self, event: Event) -> None:
        peer = self.peers[event.peer]
        if peer.node is None:
            self.skipped += 1
            return
        record = Sent(event.seq, event.peer, event.other, self.loop.time() - self.t0)
        self.sent.append(record)
        peer.sends.spawn(self._send(peer.node, record))

    async def _send(self, node: Node, record: Sent) -> None:
        to = self.peers[record.recipient].identity.id
        try:
            receipt = await asyncio.wait_for(node.send(to, text_of(record.seq)), SEND_TIMEOUT)
        except asyncio.CancelledError:
            record.error = "sender left"
            return
        except TimeoutError:
            record.error = "timeout"
            return
        except MeshError as exc:
            record.error = type(exc).__name__
            return
        record.acked = True
        record.replicas = receipt.replicas
        record.message_id = receipt.message_id

    # -- the end ----------------------------------------------------------------------

    def _report(self, setup_s: float) -> Report:
        self._collect_deliveries()
        protocol = dict(self.retired)
        for peer in self.peers:
            if peer.node is not None:
                for name, value in peer.node.statistics().items():
                    protocol[name] = protocol.get(name, 0) + value
        network = self.network.statistics() if self.network else dict(self.impairments.stats)
        return Report(
            peers=self.scenario.peers,
            seed=self.scenario.seed,
            sim_s=self.loop.time() - self.t0,
            wall_s=0.0,
            sent=self.sent,
            skipped=self.skipped,
            events=dict(sorted(self.counts.items())),
            network=network,
            protocol=protocol,
            setup_s=setup_s,
            real=self.scenario.real,
            partition=self._partition_window(),
            errors=dict(sorted(self.errors.items())),
            settings=self.scenario.settings_report(),
            delivered_via={via: protocol.get(f"received_{via}", 0) for via in VIAS},
            cpu_charged=self.scenario.charge_cpu,
            network_key=self.scenario.network_key,
        )

    def _partition_window(self) -> tuple[float, float] | None:
        sc = self.scenario
        if sc.partition_at is None:
            return None
        return (sc.partition_at, sc.duration if sc.heal_at is None else sc.heal_at)

    def _collect_deliveries(self) -> None:
        """Read what each recipient's store holds: that is what it actually got."""
        by_recipient: dict[int, list[Sent]] = {}
        for record in self.sent:
            by_recipient.setdefault(record.recipient, []).append(record)
        for slot, records in by_recipient.items():
            got = {
                row.body: row
                for row in self.peers[slot].store.list_messages(direction="in")
                if row.received_at is not None
            }
            for record in records:
                row = got.get(text_of(record.seq).encode())
                if row is not None and row.received_at is not None:
                    record.delivered_at = row.received_at - self._wall_at_t0()
                    if not record.message_id:
                        record.message_id = row.msg_id

    def _wall_at_t0(self) -> float:
        return self.wall() - (self.loop.time() - self.t0)

    async def shutdown(self) -> None:
        await asyncio.gather(self._tasks.close(), *(p.sends.close() for p in self.peers))
        nodes = [p.node for p in self.peers if p.node is not None]
        for peer in self.peers:
            peer.node = None
        await asyncio.gather(*(n.dht.close() for n in nodes), return_exceptions=True)
        for peer in self.peers:
            with contextlib.suppress(MeshError):
                peer.store.close()


def text_of(seq: int) -> str:
    return f"sim message {seq}"


def simulate(
    scenario: Scenario, progress: Progress | None = None, plan: Plan | None = None
) -> Report:
    """Run `scenario` to the end and return its report (blocks; owns the event loop).

    `plan` replaces the events drawn from the seed (tests use it to stage exact cases).
    """
    saved = random.getstate()
    random.seed(scenario.seed)  # the DHT's own jitter uses the global generator
    try:
        if scenario.real:
            return _run_real(scenario, progress, plan)
        return run_virtual(_main(scenario, progress, plan), charge_cpu=scenario.charge_cpu)
    finally:
        random.setstate(saved)


async def _main(scenario: Scenario, progress: Progress | None, plan: Plan | None) -> Report:
    return await Simulation(scenario, progress, plan).run()


def _run_real(scenario: Scenario, progress: Progress | None, plan: Plan | None) -> Report:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_main(scenario, progress, plan))
    return uvloop.run(_main(scenario, progress, plan))
