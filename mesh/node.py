"""Node: the public API of mesh-messenger.

    a = await Node.start(home=None, host="127.0.0.1", port=0, bootstrap=[], mdns=False)
    receipt = await a.send(b_id, "hello")     # returns once stored; receipt.replicas >= 1
    msgs = await b.fetch()                     # messages not yet returned (fetches first)
    async for m in b.messages(): ...           # pushed as they arrive
    await a.stop()

A message is written to the local store (status "queued", plus its sealed record in the
outbox) before any network I/O, so nothing accepted is lost if the process dies; the
outbox is flushed on start and periodically. Received messages are committed before the
push is acknowledged and before their records are deleted from the DHT.

`home` is a directory (opened, and created if new, by mesh.home), an already opened
home (its Store: the simulator keeps a peer's in-memory store across restarts), or None
(in memory). The node owns: the outbox and receipts (mesh.outbox), its background tasks
(a `TaskSet`), and the catch-up rounds and mailbox subscriptions below.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from mesh import home as homes
from mesh.agreements import Agreements
from mesh.dht.routing import Peer
from mesh.dht.server import Binder, DhtConfig, DhtServer
from mesh.dht.storage import RecordStorage
from mesh.envelope import Message, Record
from mesh.errors import MeshError
from mesh.group_service import GroupInfo, GroupService
from mesh.identity import Identity, PublicIdentity
from mesh.mailboxes import Mailboxes
from mesh.netkey import NetworkKey
from mesh.node_options import NodeOptions as NodeOptions  # re-exported: the API's
from mesh.node_options import Receipt as Receipt
from mesh.node_options import as_network_key as as_network_key
from mesh.node_options import parse_address as parse_address
from mesh.outbox import Outbox
from mesh.receiving import Receiver
from mesh.requests import Requests
from mesh.store import MessageStatus, Request, Store
from mesh.subscription import MOVED_SHARE, Subscription
from mesh.tasks import TaskSet
from mesh.wire import Address

if TYPE_CHECKING:
    from mesh.discovery import Discovery

log = logging.getLogger(__name__)

HomeArg = str | os.PathLike[str] | Store | None  # a directory, an opened home, or memory
STOP_GRACE = 2.0  # seconds stop() waits for receipts and deletes still in flight
VIAS = ("push", "fetch", "poll")  # how a message can reach us (counters received_*)
GROWN_FACTOR = 2.0  # the table doubled since our replicas' lookup: look again
MERGE_INTRODUCTIONS = 2  # out-of-band newcomers within burst_window that mean a merge
MERGE_INTERVAL = 300.0  # at most one table refresh per this many seconds (see _rejoin)


class Node:
    def __init__(
        self,
        identity: Identity,
        store: Store,
        dht: DhtServer,
        options: NodeOptions,
        wall: Callable[[], float],
    ) -> None:
        self.identity = identity
        self.store = store
        self.dht = dht
        self.options = options
        self.wall = wall
        self.discovery: Discovery | None = None
        self._stopped = False
        self.counters: dict[str, int] = {"bad_records": 0, "received": 0, "receipts": 0}
        for via in VIAS:  # how each received message came: push, catch-up/explicit, poll
            self.counters[f"received_{via}"] = 0
        self._tasks = TaskSet()  # background loops and catch-up rounds
        self.on_status: Callable[[bytes, MessageStatus, int | None], None] | None = None
        self.mailboxes = Mailboxes(identity, store, options.epoch_seconds)
        self.mailboxes.ensure_prekeys(wall())
        self.outbox = Outbox(
            self.mailboxes, store, dht, wall, options.delete_delay, self.counters, self._status
        )
        self.agreements = Agreements(
            identity, store, dht, self.mailboxes, self.outbox, wall, self.counters
        )
        self._requests = Requests(
            identity,
            store,
            dht,
            self.mailboxes,
            self.agreements,
            self.outbox,
            wall,
            self.counters,
            options.request_cost,
        )
        self.counters["blocked_dropped"] = 0
        self.receiver = Receiver(
            identity,
            store,
            dht,
            self.mailboxes,
            self.outbox,
            self.agreements,
            self._requests,
            self.counters,
            wall,
            self._tasks.spawn,
            options.receipts,
        )
        self.groups = GroupService(
            identity,
            store,
            dht,
            self.outbox,
            wall,
            self.counters,
            self.receiver.queue,
            self._tasks.spawn,
            options.epoch_seconds,
        )
        self.receiver.on_group = self.groups.on_invite
        self.outbox.readdress = self.groups.readdress
        self._peer_event = asyncio.Event()
        self._rejoin_scheduled = False
        self._last_rejoin = -1e9
        self._recent_contacts: deque[float] = deque()  # loop times of new contacts
        self._introduced: deque[float] = deque()  # loop times of out-of-band newcomers
        self._merge_wanted = False
        self._last_merge = -1e9
        self._last_full_round = -1e9
        self.subscription = Subscription(
            dht,
            self.mailboxes,
            wall,
            self._tasks.spawn,
            listen_replicas=options.listen_replicas,
            epoch_seconds=options.epoch_seconds,
            poll_intervals=(options.live_poll_interval, options.poll_interval),
        )
        dht.on_push = self._on_push
        dht.on_new_contact = self._on_new_contact

    # -- lifecycle ------------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        home: HomeArg = None,
        host: str = "127.0.0.1",
        port: int = 0,
        bootstrap: Iterable[Address | str] = (),
        mdns: bool = False,
        *,
        interfaces: Sequence[str] | None = None,
        network_name: str = "mesh",
        passphrase: str | None = None,
        create: bool = True,
        config: DhtConfig | None = None,
        options: NodeOptions | None = None,
        bind: Binder | None = None,
        wall: Callable[[], float] = time.time,
        network_key: NetworkKey | bytes | None = None,
        node_id: bytes | None = None,
        requests: bool | None = None,
    ) -> Node:
        """Open (or create) the identity of `home`, bind, join the DHT.

        `home`: a directory, an opened home (its Store, e.g. the simulator's in-memory
        store kept across restarts), or None (in memory). `bind` and `wall` let the
        simulator replace the UDP socket and the clock. `network_key` (a `NetworkKey`
        or its 32 bytes) makes this a node of that private mesh: every datagram sealed,
        mDNS names only members can compute (docs/protocol.md); None is the open mesh.
        The DHT node id is new at every start (nothing stable identifies a device);
        `node_id` fixes it instead (the simulator and the bench draw it from their seed).
        `requests` turns strangers' message requests on or off for this home (saved;
        None keeps the home's setting, off for a new one): see mesh.requests.
        """
        key = as_network_key(network_key)
        store = home if isinstance(home, Store) else homes.open_store(home, passphrase)
        try:
            identity = homes.unlock_identity(store, passphrase, create)
            node_id = node_id or homes.fresh_node_id(store)
            storage = RecordStorage(persist=store.held)
            storage.load(wall())
            dht = DhtServer(node_id, config, storage, wall, network_key=key)
            node = cls(identity, store, dht, options or NodeOptions(), wall)
            if requests is not None:
                node._requests.set_on(requests)
            await dht.listen(host, port, bind)
        except BaseException:
            store.close()
            raise
        try:
            await node._join([parse_address(a) for a in bootstrap])
            if mdns:
                await node._start_discovery(interfaces, network_name, key)
        except BaseException:
            await node.stop()
            raise
        return node

    async def _join(self, bootstrap: list[Address]) -> None:
        # The simulator's abrupt departure closes a node's DHT alone: the node's own
        # tasks die with it, as they did when the DHT owned them.
        self.dht.spawn(self._close_with_dht())
        cached = [(h, p) for _nid, h, p, _seen in self.store.peers.peers_recent(32)]
        peers = list(dict.fromkeys(bootstrap + cached))
        self._rejoin_scheduled = True  # contacts found while joining need no extra round
        if peers:
            await self.dht.bootstrap(peers)
        if len(self.dht.table) > 0:
            await self._rejoin()  # subscribe, flush the outbox, fetch what waited for us
        else:
            self._rejoin_scheduled = False
        self._tasks.spawn(self.subscription.renew())
        self._tasks.spawn(self.groups.listen_loop())
        self._tasks.spawn(self._background())

    async def _close_with_dht(self) -> None:
        try:
            await asyncio.get_running_loop().create_future()  # until the DHT closes
        finally:
            await self._close_tasks()

    async def _close_tasks(self) -> None:
        await self.outbox.close()
        await self._tasks.close()

    async def _start_discovery(
        self, interfaces: Sequence[str] | None, network: str, key: NetworkKey | None
    ) -> None:
        from mesh.discovery import Discovery  # zeroconf is only imported when used

        self.discovery = Discovery(
            self, interfaces=interfaces, network_name=network, network_key=key
        )
        await self.discovery.start()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        # Receipts and DHT deletes still in flight are part of what we promised; the mDNS
        # goodbye goes after them, or peers would forget us and then hear from us again.
        await self.outbox.finish(STOP_GRACE)
        if self.discovery is not None:
            with contextlib.suppress(Exception):
                await self.discovery.stop()
        await self._close_tasks()
        self._save_peers()
        await self.dht.close()
        self.store.close()

    async def __aenter__(self) -> Node:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def id(self) -> str:
        return self.identity.id

    @property
    def address(self) -> Address:
        assert self.dht.address is not None
        return self.dht.address

    def statistics(self) -> dict[str, int]:
        stats = self.dht.statistics()
        stats.update(self.counters)
        stats["outbox"] = len(self.store.outbox_pending())
        if self.discovery is not None:
            stats.update({f"mdns_{k}": v for k, v in self.discovery.statistics().items()})
        return stats

    def peer_count(self) -> int:
        return len(self.dht.table)

    async def wait_peers(self, count: int = 1, timeout: float = 2.0) -> int:
        """Wait until the routing table holds `count` contacts or `timeout` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.dht.table) < count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._peer_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._peer_event.wait(), remaining)
        return len(self.dht.table)

    def add_peer(self, address: Address) -> None:
        """A peer was found out of band (mDNS, the user): ping it. If it answers and is
        new to the routing table, the network may have changed under us (a partition
        healed): the node checks its mailbox's replicas and catches up if they moved."""
        if self._stopped:
            return
        addr = parse_address(address)
        known = any(c.address == addr for c in self.dht.table.contacts())
        answer = self.dht.introduce(addr)
        if not known:
            answer.add_done_callback(self._on_introduced)

    def _on_introduced(self, answer: asyncio.Future[Any]) -> None:
        """A peer found out of band that our routing table did not hold answered.

        One such peer is a newcomer (on a LAN, mDNS tells everyone about every join);
        refreshing the table and republishing for it would make every join cost each
        peer a few hundred RPCs. Two or more within `burst_window` (a partition healed:
        mDNS brings back the whole other side), or being alone, is a merge.
        """
        if answer.cancelled() or answer.exception() is not None:
            return
        recent = self._count_recent(self._introduced)
        if recent >= MERGE_INTRODUCTIONS or len(self.dht.table) <= 2:
            self._introduced.clear()
            self._network_changed(merge=True)

    def _count_recent(self, events: deque[float]) -> int:
        """Note an event now; how many happened within the last `burst_window`."""
        now = asyncio.get_running_loop().time()
        events.append(now)
        while events[0] < now - self.options.burst_window:
            events.popleft()
        return len(events)

    def knows_any(self, addresses: tuple[Address, ...]) -> bool:
        """True if the routing table holds a peer at one of `addresses`."""
        known = {c.address for c in self.dht.table.contacts()}
        return any(a in known for a in addresses)

    def forget_peer(self, address: Address) -> None:
        """A peer said goodbye (mDNS): drop it, and do not re-admit it for a few seconds
        on the strength of its last datagrams."""
        self.dht.forget(parse_address(address))

    def _on_new_contact(self, contact: Peer) -> None:
        self._peer_event.set()
        if self._rejoin_scheduled or self._stopped:
            return
        # Every peer that joins or returns anywhere is a new contact for some of us:
        # catching up on each would make ordinary churn cost the whole network a round
        # per peer. What needs a round is the network changing under us: we were alone,
        # or a burst of contacts arrives at once (a partition healed, two LANs merged;
        # the lookups of the first rounds then make the burst spread to everyone).
        # (So are two peers found out of band that the table did not hold: `add_peer`.)
        now = asyncio.get_running_loop().time()
        recent = self._count_recent(self._recent_contacts)
        size = len(self.dht.table)
        burst = recent >= max(self.options.burst_contacts, size // 10)
        # Right after our own (re)start, the peers we met while joining keep arriving:
        # that is a burst too, but the start's complete round already caught up.
        settling = now < self._last_full_round + self.options.burst_window
        # A growing network brings burst after burst: one round per burst_interval.
        settling |= now < self._last_rejoin + self.options.burst_interval
        # A network that grew a lot since we last looked up our replicas (we joined it
        # young) has new replicas for us that may never become our contacts.
        grown = size >= GROWN_FACTOR * max(self.subscription.table_at_lookup, 2)
        if size > 2 and (not burst or settling) and not grown:
            self.subscription.at_newcomer(contact)
            return
        self._network_changed()

    def _network_changed(self, merge: bool = False) -> None:
        """Schedule a catch-up round (at most one per `rejoin_interval`); with `merge`,
        it first refreshes the routing table (see `_rejoin`)."""
        self._merge_wanted |= merge
        if self._rejoin_scheduled or self._stopped:
            return
        self._recent_contacts.clear()
        now = asyncio.get_running_loop().time()
        wait = max(0.0, self._last_rejoin + self.options.rejoin_interval - now)
        if len(self.dht.table) <= 2:
            wait = 0.0  # we were alone: catch up at once
        self._rejoin_scheduled = True
        self._tasks.spawn(self._rejoin(wait))

    async def _rejoin(self, wait: float = 0.0) -> None:
        """Catch up: at start, and when the network may have changed under us.

        At start (and whenever we were alone) the round is complete: subscribe, flush the
        outbox, fetch. Otherwise it starts with a lookup of our mailbox key: it listens at
        the replicas that are new to us, and fetches only if half of them are new (records
        may wait there, never pushed to us) or the network merged (a peer found out of
        band). A lookup is a fifth of a complete round, and churn rarely moves replicas."""
        if self._last_rejoin > -1e9:
            await asyncio.sleep(max(wait, 0.05))  # coalesce a burst into one round
        first = self._last_rejoin <= -1e9 or len(self.dht.table) <= 2
        self._rejoin_scheduled = False
        self._last_rejoin = asyncio.get_running_loop().time()
        if first:
            self._last_full_round = self._last_rejoin
        with contextlib.suppress(MeshError):
            if len(self.dht.table) < self.dht.config.ksize:
                await self.dht.lookup(self.dht.node_id)
            merge = self._merge_wanted and not first  # (alone, the round is complete)
            if merge and self._last_merge + MERGE_INTERVAL <= self._last_rejoin:
                # A peer found out of band was not in our table: maybe a whole network
                # we were cut from. One contact there does not put it on the path of our
                # lookups; refreshing every bucket does, and spreads us to its peers.
                # Records we hold as a replica may now belong on peers of the other
                # network too: hand them over now rather than at the next republish.
                self._last_merge = self._last_rejoin
                await self.dht.refresh_buckets()
                self._tasks.spawn(self.dht.republish())
            merged, self._merge_wanted = self._merge_wanted, False
            fresh = await self.subscription.subscribe_once(only_if_moved=not first)
            await self.flush_outbox()
            if first or merged or fresh >= self.dht.config.ksize // MOVED_SHARE:
                await self.fetch_mailbox()

    def _save_peers(self) -> None:
        now = self.wall()
        with contextlib.suppress(MeshError):
            for contact in list(self.dht.table.contacts())[:64]:
                self.store.peers.peer_seen(contact.id, contact.ip, contact.port, now)

    # -- sending ----------------------------------------------------------------------

    async def send(self, to: str, text: str, ttl: int | None = None) -> Receipt:
        """Queue durably, then store on the recipient's mailbox replicas.

        Raises UnreachableError when no peer answers; the message then stays queued and
        is delivered by a later flush of the outbox.
        """
        queued = homes.queue_text(
            self.store, self.identity, to, text, ttl, self.wall(), self.mailboxes
        )
        if queued.record is None or queued.key is None:
            # A one-way add: nothing can reach them until they add us too.
            self._tasks.spawn(self._start_agreement(queued.recipient.id))
            return Receipt(queued.message.id, b"", 0, waiting=True)
        replicas = await self.outbox.deliver(queued.message.id, queued.key, queued.record)
        return Receipt(queued.message.id, queued.record.id, replicas)

    async def add_contact(self, peer_id: str, name: str | None = None) -> bool:
        """Add someone as a contact (saved under `name` if given) and start the key
        agreement: True if it is ready (they had added us: messages go at once), False if
        it waits for them to add us too (messages to them are queued until then)."""
        public = PublicIdentity.from_id(peer_id)  # InvalidIdError for a typo
        if name is not None and self.store.find_contact_by_id(public.id) is None:
            self.store.add_contact(name, public.id, now=self.wall())
        return await self._start_agreement(public.id)

    async def _start_agreement(self, peer_id: str) -> bool:
        with contextlib.suppress(MeshError):
            return await self.agreements.start(peer_id)
        return False

    def contact_ready(self, peer_id: str) -> bool:
        """True once the key agreement with this ID is complete (their keys arrived)."""
        agreement = self.store.keys.agreement(PublicIdentity.from_id(peer_id).id)
        return agreement is not None and agreement.ready

    def _status(self, message_id: bytes, status: MessageStatus, replicas: int | None) -> None:
        if self.on_status is not None:
            self.on_status(message_id, status, replicas)

    async def flush_outbox(self) -> int:
        """Try every queued message again; returns how many were stored."""
        return await self.outbox.flush()

    # -- receiving ----------------------------------------------------------------

    async def fetch(self) -> list[Message]:
        """Fetch the mailbox from the DHT, then return every received message not yet
        returned by `fetch()` or `messages()`: those that arrived by push or during
        `start()` as well as the ones just fetched. Each message is returned once, by one of
        the two. (`inbox()` lists everything stored, returned or not.)"""
        await self.fetch_mailbox()
        new = []
        while not self.receiver.queue.empty():
            new.append(self.receiver.queue.get_nowait())
        return new

    async def fetch_mailbox(self, via: str = "fetch") -> list[Message]:
        """Fetch every day's mailbox since the last complete fetch (mesh.receiving);
        returns only the messages this call accepted (they are still yielded by
        `messages()` or returned by the next `fetch()`). `via` ("fetch" or "poll") is
        counted in `received_<via>` for each new message."""
        new = await self.receiver.fetch_mailbox(via)
        return new + await self.groups.fetch_all(via)

    async def messages(self) -> AsyncIterator[Message]:
        """New messages as they arrive (pushed, fetched, or found by `start()`), each once,
        unless `fetch()` returned it first."""
        while True:
            yield await self.receiver.queue.get()

    def inbox(self) -> list[Message]:
        return self.receiver.inbox()

    def _on_push(self, key: bytes, record: Record) -> None:
        if self.groups.owns(key):
            self.groups.accept(record, "push", key)
        else:
            self.receiver.accept(record, "push", key)

    # -- groups (issue 17) ------------------------------------------------------------

    def _group_id(self, group: bytes | str) -> bytes:
        return group if isinstance(group, bytes) else self.groups.find(group)

    def create_group(self, name: str) -> bytes:
        """A new group with us as its admin; returns its id."""
        return self.groups.create(name)

    async def invite_to_group(self, group: bytes | str, peer_ids: Iterable[str]) -> int:
        """Add contacts (their agreement complete) to a group we administer."""
        return await self.groups.invite(self._group_id(group), peer_ids)

    async def send_group(self, group: bytes | str, text: str) -> Receipt:
        """One record in the group's mailbox, sealed once for every member."""
        message_id, record_id, replicas = await self.groups.send(self._group_id(group), text)
        return Receipt(message_id, record_id, replicas)

    async def remove_from_group(self, group: bytes | str, member_id: str) -> None:
        await self.groups.remove(self._group_id(group), member_id)

    async def promote_in_group(self, group: bytes | str, member_id: str) -> None:
        await self.groups.promote(self._group_id(group), member_id)

    async def leave_group(self, group: bytes | str) -> None:
        await self.groups.leave(self._group_id(group))

    def group_list(self) -> list[GroupInfo]:
        return self.groups.infos()

    def group_members(self, group: bytes | str) -> list[tuple[str, str]]:
        return self.groups.members(self._group_id(group))

    def group_delivery(self, message_id: bytes) -> tuple[int, int]:
        """("delivered to", "of") for a group message we sent (receipts: groups of up
        to 20 members)."""
        return self.groups.delivery(message_id)

    # -- strangers (issue 15) ---------------------------------------------------------

    async def send_request(self, to: str, text: str) -> int:
        """Ask someone who has not added us to become a contact (they must have requests
        on); returns how many replicas took it. Minting the stamp takes ~1 s."""
        return await self._requests.send(PublicIdentity.from_id(to).id, text)

    def requests(self) -> list[Request]:
        """Strangers' requests waiting for accept, block or delete."""
        return self._requests.pending()

    def set_requests(self, on: bool) -> None:
        """Turn strangers' requests on or off for this home (off: nothing computable
        from our ID is published, fetched or answered)."""
        self._requests.set_on(on)

    async def accept_request(self, peer_id: str) -> None:
        await self._requests.accept(PublicIdentity.from_id(peer_id).id)

    def block(self, peer_id: str) -> None:
        self._requests.block(peer_id)

    def unblock(self, peer_id: str) -> bool:
        return self.store.strangers.unblock(PublicIdentity.from_id(peer_id).id)

    # -- background -----------------------------------------------------------------

    def poll_due(self, last_poll: float, now: float) -> bool:
        """Is a polling fetch due? Rarely while a listen is live, often when none is."""
        return self.subscription.poll_due(last_poll, now)

    async def _background(self) -> None:
        """Outbox retries, fresh prekeys for contacts, and the polling fallback."""
        loop = asyncio.get_running_loop()
        last_poll = loop.time()
        while True:
            with contextlib.suppress(MeshError):
                await self.agreements.refresh(self.wall())
            with contextlib.suppress(MeshError):
                await self.flush_outbox()
            if self.poll_due(last_poll, loop.time()):
                last_poll = loop.time()
                with contextlib.suppress(MeshError):
                    await self.fetch_mailbox("poll")
            await asyncio.sleep(self.options.outbox_interval)
