"""An in-process harness for attacks on groups (tests/test_group_attacks.py): GroupService
instances over a fake DHT (a dict of mailbox -> records, pushes delivered to every
service that owns the key) and a fake outbox that routes contact messages ("group"
invitation parts) straight to the recipient's on_invite. No sockets at all."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from mesh import crypto
from mesh.envelope import Message, MessageKind, Record
from mesh.group_service import GroupService
from mesh.identity import Identity
from mesh.mailboxes import Mailboxes, exchange_bundles
from mesh.store import Store


class Clock:
    def __init__(self, t: float | None = None) -> None:
        self.t = t if t is not None else time.time()

    def __call__(self) -> float:
        return self.t


class _Unrep:
    def put(self, k, v):
        pass


@dataclass
class _Cfg:
    listen_duration: int = 1800


class Net:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.boxes: dict[bytes, dict[bytes, Record]] = {}
        self.services: list[GroupService] = []
        self.by_id: dict[str, GroupService] = {}
        self.online: set[str] = set()
        self.push = True
        self.reachable = True


class FakeDht:
    def __init__(self, net: Net) -> None:
        self.net = net
        self.own_keys: set[bytes] = set()
        self.client = type("C", (), {"unrepairable": _Unrep()})()
        self.config = _Cfg()

    async def fetch(self, key: bytes) -> list[Record]:
        now = self.net.clock()
        return [r for r in self.net.boxes.get(key, {}).values() if r.expires_at > now]

    async def put(self, key: bytes, records: list[Record]) -> int:
        from mesh.errors import UnreachableError

        if not self.net.reachable:
            raise UnreachableError("no replica")
        box = self.net.boxes.setdefault(key, {})
        for r in records:
            box[r.id] = r
        if self.net.push:
            for s in list(self.net.services):
                if s.identity.id in self.net.online and s.owns(key):
                    for r in records:
                        s.accept(r, "push", key)
        return 1

    async def lookup(self, key: bytes) -> list:
        return []

    async def subscribe(self, key, make, targets=None, eager=None) -> int:
        return 0


class FakeOutbox:
    def __init__(self, net: Net, me: Identity, store: Store) -> None:
        self.net = net
        self.me = me
        self.store = store
        self.sent_contact: list[tuple[str, bytes]] = []

    async def deliver(self, message_id: bytes, mailbox: bytes, record: Record) -> int:
        self.store.outbox_mark_attempt(message_id, self.net.clock())
        dht = next(s.dht for s in self.net.services if s.identity.id == self.me.id)
        n = await dht.put(mailbox, [record])
        self.store.outbox_remove(message_id)
        return n

    async def send_to_contact(self, peer_id: str, kind: MessageKind, body: bytes, ttl: int) -> None:
        self.sent_contact.append((peer_id, body))
        target = self.net.by_id.get(peer_id)
        if target is None or peer_id not in self.net.online:
            return
        msg = Message(
            crypto.random_bytes(16), self.me.id, peer_id, self.net.clock(), ttl, kind, body
        )
        target.on_invite(msg)

    def on_status(self, *a) -> None:
        pass


@dataclass
class Peer:
    identity: Identity
    store: Store
    mailboxes: Mailboxes
    service: GroupService
    tasks: list = field(default_factory=list)
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)

    @property
    def id(self) -> str:
        return self.identity.id

    @property
    def vk(self) -> bytes:
        return self.identity.verify_key


def make_peer(net: Net, store: Store | None = None, identity: Identity | None = None) -> Peer:
    identity = identity or Identity.generate()
    if store is None:
        store = Store(None)
        store.set_identity_blob(identity.to_bytes())
    boxes = Mailboxes(identity, store)
    counters: dict[str, int] = {}
    tasks: list = []
    queue: asyncio.Queue = asyncio.Queue()

    def spawn(coro):
        t = asyncio.get_event_loop().create_task(coro)
        tasks.append(t)
        return t

    dht = FakeDht(net)
    outbox = FakeOutbox(net, identity, store)
    svc = GroupService(identity, store, dht, outbox, net.clock, counters, queue, spawn)  # type: ignore[arg-type]
    net.services = [s for s in net.services if s.identity.id != identity.id]
    net.services.append(svc)
    net.by_id[identity.id] = svc
    net.online.add(identity.id)
    return Peer(identity, store, boxes, svc, tasks, queue)


def befriend(net: Net, *peers: Peer) -> None:
    for i, a in enumerate(peers):
        for b in peers[i + 1 :]:
            exchange_bundles(a.mailboxes, b.mailboxes, net.clock())


async def settle(peers: list[Peer], rounds: int = 3) -> None:
    """Let spawned tasks run (bounded)."""
    for _ in range(rounds):
        pending = [t for p in peers for t in p.tasks if not t.done()]
        if pending:
            await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 10)
        await asyncio.sleep(0)


def texts(peer: Peer, gid: bytes) -> set[str]:
    from mesh.store_groups import group_peer

    return {r.body.decode() for r in peer.store.list_messages(group_peer(gid), direction="in")}
