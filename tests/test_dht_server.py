"""DhtServer behaviour that the send path's speed depends on: who meets whom and when,
the replica-set cache of put, and which replicas push.

Tests that check that something did NOT happen within some time run on the simulator's
virtual clock and in-memory network (`on_virtual_clock`): a sleep there lasts exactly
its virtual duration whatever the machine's load, so "no push within 5 s" is checked at
5 s, not at whenever a busy machine got round to it, and costs no real time.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from netutil import bounded, loopback_host, prepare_contacts, start_network, stop_all, wait_until

from mesh import envelope, wire
from mesh.dht.liveness import Liveness
from mesh.dht.replica import Replica
from mesh.dht.routing import Peer
from mesh.dht.rpc import Rpc
from mesh.dht.server import PUSHERS, VERIFY_DELAY, DhtServer
from mesh.envelope import Record
from mesh.identity import Identity
from mesh.node import Node, NodeOptions
from mesh.sim import LinkModel, Network, run_virtual

VirtualBody = Callable[[Network, pytest.MonkeyPatch], Coroutine[Any, Any, None]]


def on_virtual_clock(body: VirtualBody) -> Callable[[pytest.MonkeyPatch], None]:
    """Run `body(network, monkeypatch)` to completion on a VirtualTimeLoop (as a plain
    test function, so pytest-asyncio leaves it alone)."""

    def test(monkeypatch: pytest.MonkeyPatch) -> None:
        run_virtual(body(Network(random.Random(0), LinkModel()), monkeypatch))

    test.__doc__ = body.__doc__
    return test


def sim_host(i: int) -> str:
    return f"10.0.{i // 250}.{1 + i % 250}"


async def start_virtual_servers(net: Network, n: int, seed: int) -> list[DhtServer]:
    rng = random.Random(seed)
    servers = [DhtServer(rng.randbytes(20)) for _ in range(n)]
    for i, server in enumerate(servers):
        await server.listen(sim_host(i), 0, net.bind)
    return servers


async def start_virtual_nodes(net: Network, n: int, options: NodeOptions) -> list[Node]:
    nodes: list[Node] = []
    for i in range(n):
        boot = [nodes[i // 2].address] if nodes else []
        nodes.append(
            await Node.start(host=sim_host(i), bootstrap=boot, options=options, bind=net.bind)
        )
    return nodes


async def start_servers(n: int, seed: int) -> list[DhtServer]:
    rng = random.Random(seed)
    servers = [DhtServer(rng.randbytes(20)) for _ in range(n)]
    for i, server in enumerate(servers):
        await server.listen(loopback_host(i))
    return servers


async def close_all(servers: list[DhtServer]) -> None:
    await asyncio.gather(*(s.close() for s in servers if s.protocol is not None))


def record_for(key_owner: Identity, sender: Identity, text: str) -> Record:
    _, record = envelope.seal_message(
        sender, key_owner.public, "text", text.encode(), time.time(), 3600
    )
    return record


@on_virtual_clock
async def test_peers_that_join_together_know_their_closest_neighbours_at_once(
    net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    servers = await start_virtual_servers(net, 60, seed=3)
    try:
        seed = servers[0].address
        assert seed is not None
        await bounded(asyncio.gather(*(s.bootstrap([seed]) for s in servers[1:])))
        await asyncio.sleep(VERIFY_DELAY / 4)  # well before any deferred verification
        missing = 0
        for server in servers:
            me = server.table.own_long_id
            nearest = sorted(
                (s for s in servers if s is not server), key=lambda s: s.table.own_long_id ^ me
            )
            missing += sum(1 for s in nearest[:3] if s.node_id not in server.table)
        assert missing == 0
    finally:
        await close_all(servers)


@on_virtual_clock
async def test_a_stranger_that_stores_is_verified_later_not_during_its_burst(
    net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    servers = await start_virtual_servers(net, 2, seed=4)
    a, b = servers
    try:
        assert b.address is not None
        # a knows b (a's call is a round trip); b has only seen a's requests.
        reply = await bounded(a.rpc.call(b.address, "find", [bytes(20)]))
        assert reply.sender == b.node_id
        assert a.node_id not in b.table
        pings_before = b.protocol.stats["requests_out"] if b.protocol else 0
        await asyncio.sleep(VERIFY_DELAY / 4)
        assert a.node_id not in b.table
        assert b.protocol is not None and b.protocol.stats["requests_out"] == pings_before
        await asyncio.sleep(VERIFY_DELAY)  # the deferred verification is due now
        assert await wait_until(lambda: a.node_id in b.table, timeout=1.0)
    finally:
        await close_all(servers)


async def test_put_reuses_the_replica_set_and_falls_back_to_a_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    servers = await start_servers(40, seed=5)
    lookups = 0
    sender = servers[0]
    real_lookup = Rpc.lookup
    counting = False

    async def counting_lookup(self: Rpc, target: bytes, confirm: int | None = None) -> list:  # type: ignore[type-arg]
        nonlocal lookups
        if counting and self is sender.rpc:
            lookups += 1
        return await real_lookup(self, target, confirm)

    monkeypatch.setattr(Rpc, "lookup", counting_lookup)
    try:
        seed = servers[1].address
        assert seed is not None
        for s in [*servers[2:], sender]:
            await bounded(s.bootstrap([seed]))
        owner, writer = Identity.generate(), Identity.generate()
        key = owner.public.mailbox_key
        counting = True
        acks = [
            await bounded(sender.put(key, [record_for(owner, writer, f"m{i}")])) for i in range(3)
        ]
        assert lookups == 1 and min(acks) >= sender.config.quorum
        # Kill most of the cached replica set: the next put must look up again and
        # still reach a quorum on the peers that are left.
        cached = sender.client.replica_sets[key][1]
        by_id = {s.node_id: s for s in servers}
        for contact in cached[:15]:
            await by_id[contact.id].close()
        acks_after = await bounded(sender.put(key, [record_for(owner, writer, "after")]), 20)
        assert lookups == 2 and acks_after >= sender.config.quorum
    finally:
        await close_all(servers)


@on_virtual_clock
async def test_only_the_closest_replicas_push_a_new_record(
    net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    quiet = NodeOptions(poll_interval=1e9, live_poll_interval=1e9, receipts=False)
    nodes = await start_virtual_nodes(net, 40, quiet)
    recipient = nodes[-1]
    prepare_contacts([nodes[0]], [recipient])
    pushes: list[bytes] = []
    real = Replica.answer

    def counting_answer(
        self: Replica, request: wire.Request, sender: bytes, addr: tuple[str, int]
    ) -> Any:
        if self is recipient.dht.replica and type(request) is wire.Push:
            pushes.append(sender)
        return real(self, request, sender, addr)

    monkeypatch.setattr(Replica, "answer", counting_answer)
    try:
        # start() subscribed already; subscribing again makes sure every replica the
        # sender will find has our listen (the pushes counted are the replicas' choice).
        epoch = recipient.mailboxes.epoch(recipient.wall())
        key = recipient.mailboxes.own_key(epoch)
        request = recipient.subscription.listen_request(epoch)
        assert await bounded(recipient.dht.subscribe(key, request)) > 0
        stream = recipient.messages()
        await bounded(nodes[0].send(recipient.id, "hello"))
        message = await bounded(anext(stream), 10)
        assert message.text == "hello"
        await asyncio.sleep(5.0)  # virtual: any further push (even retried) has arrived
        # The subscriber's PUSHERS closest, plus any replica that counts itself among
        # the closest in its own table (usually the same peers).
        assert 1 <= len(pushes) <= 2 * PUSHERS
    finally:
        await stop_all(nodes)


async def test_node_send_repeated_to_one_mailbox_is_received_whole() -> None:
    nodes = await start_network(30, seed=7)
    try:
        recipient = nodes[-1]
        stream = recipient.messages()
        for i in range(10):
            await bounded(nodes[i % 3].send(recipient.id, f"n{i}"))
        got = {(await bounded(anext(stream), 10)).text for _ in range(10)}
        assert got == {f"n{i}" for i in range(10)}
    finally:
        await stop_all(nodes)


async def test_a_peer_restarted_on_another_port_is_followed_once_the_old_one_fails() -> None:
    rng = random.Random(8)
    node_id = rng.randbytes(20)
    b = DhtServer(rng.randbytes(20))
    first = DhtServer(node_id)
    await b.listen(loopback_host(1))
    await first.listen(loopback_host(0))
    second: DhtServer | None = None
    try:
        assert b.address is not None
        await bounded(first.bootstrap([b.address]))
        assert await wait_until(lambda: node_id in b.table)
        await first.close()  # killed: no goodbye
        second = DhtServer(node_id)
        await second.listen(loopback_host(0))  # same IP, new port
        await bounded(second.bootstrap([b.address]))

        def followed() -> bool:
            contact = b.table.get(node_id)
            return contact is not None and contact.address == second.address

        # The old address fails its ping (1 s timeout and one retry), then the new one
        # takes its place without waiting for the restarted peer to call again.
        assert await wait_until(followed, timeout=6)
    finally:
        await close_all([s for s in (b, second) if s is not None])


@on_virtual_clock
async def test_an_id_claimed_from_another_address_does_not_displace_a_live_peer(
    net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(9)
    node_id = rng.randbytes(20)
    b, real, impostor = DhtServer(rng.randbytes(20)), DhtServer(node_id), DhtServer(node_id)
    for i, server in enumerate((real, b, impostor)):
        await server.listen(sim_host(i), 0, net.bind)
    checked: list[tuple[str, int]] = []
    check_alive = Liveness._check_alive

    def counting_check(self: Liveness, head: Peer) -> Any:
        if self is b.liveness:
            checked.append(head.address)
        return check_alive(self, head)

    monkeypatch.setattr(Liveness, "_check_alive", counting_check)
    try:
        assert b.address is not None
        await bounded(real.bootstrap([b.address]))
        assert await wait_until(lambda: node_id in b.table)
        await bounded(impostor.bootstrap([b.address]))
        # Virtual seconds: b verifies the stranger (VERIFY_DELAY), hears the id from a
        # new address, pings the old one (which answers); a failed ping would have
        # taken rpc_timeout x (1 + rpc_retries) = 2 s more.
        await asyncio.sleep(VERIFY_DELAY + 10.0)
        assert real.address in checked  # the claim was seen and put to the test ...
        contact = b.table.get(node_id)
        assert contact is not None and contact.address == real.address  # ... and failed
    finally:
        await close_all([b, real, impostor])


async def test_an_answer_after_a_goodbye_does_not_bring_the_peer_back() -> None:
    servers = await start_servers(2, seed=10)
    a, b = servers
    try:
        assert b.address is not None
        await bounded(a.bootstrap([b.address]))
        assert b.node_id in a.table
        late = a.ping(b.address)  # in flight when the goodbye arrives
        a.forget(b.address)
        assert b.node_id not in a.table
        reply = await bounded(late)  # b still answers: its socket is open
        assert reply.sender == b.node_id
        assert b.node_id not in a.table
    finally:
        await close_all(servers)


@on_virtual_clock
async def test_a_replica_pushes_if_ranked_eager_by_the_subscriber_or_close_by_itself(
    net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, writer = Identity.generate(), Identity.generate()
    key = owner.public.mailbox_key
    k = int.from_bytes(key, "big")
    # Five peers closer to the key than the replica, so the replica never counts itself
    # among the PUSHERS closest.
    closer = [DhtServer((k ^ (i + 1)).to_bytes(20, "big")) for i in range(PUSHERS + 1)]
    replica = DhtServer((k ^ 1000).to_bytes(20, "big"))
    listeners = [DhtServer(), DhtServer()]
    servers = [*closer, replica, *listeners]
    for i, server in enumerate(servers):
        await server.listen(sim_host(i), 0, net.bind)
    try:
        assert replica.address is not None
        for server in closer:
            await bounded(server.bootstrap([replica.address]))
        assert replica.rpc.closer_peers(key, PUSHERS) == PUSHERS
        got: dict[int, list[bytes]] = {0: [], 1: []}
        for i, listener in enumerate(listeners):
            listener.own_keys.add(key)
            listener.replica.push_sources.put(key, {replica.address})  # as subscribe() does
            listener.on_push = lambda _k, r, i=i: got[i].append(r.id)  # type: ignore[misc]
            request = envelope.sign_owner_request(
                owner, "listen", envelope.listen_payload(60), time.time()
            ).to_obj()
            await bounded(listener.rpc.call(replica.address, "listen", [request, i == 0]))
        # A replica pushes only to listeners whose address it verified: wait for both,
        # or "no push to the other one" tests nothing.
        verified = [listener.address for listener in listeners]
        is_verified = replica.liveness.is_verified
        assert await wait_until(lambda: all(a is not None and is_verified(a) for a in verified), 5)
        record = record_for(owner, writer, "hello")
        await bounded(writer_store(closer[0], replica, key, record))
        assert await wait_until(lambda: got[0] == [record.id], timeout=5)
        await asyncio.sleep(5.0)  # virtual: a push to the other listener would be here
        assert got[1] == []  # not eager, and the replica is not among the closest
    finally:
        await close_all(servers)


async def writer_store(via: DhtServer, replica: DhtServer, key: bytes, record: Record) -> None:
    from mesh.dht.server import chunk_records

    assert replica.address is not None
    reply = await via.rpc.call(replica.address, "store", [key, chunk_records([record])[0]])
    assert reply.result == [0]


async def test_a_peer_introduced_again_after_a_goodbye_is_taken_back_at_once() -> None:
    servers = await start_servers(2, seed=11)
    a, b = servers
    try:
        assert b.address is not None
        await bounded(a.bootstrap([b.address]))
        a.forget(b.address)  # mDNS: it left ...
        assert b.node_id not in a.table
        await bounded(a.introduce(b.address))  # ... and mDNS hears it again
        assert b.node_id in a.table
    finally:
        await close_all(servers)


@pytest.mark.asyncio
async def test_a_replica_pushes_after_its_answer_in_batches_and_fewer_for_a_group() -> None:
    """Issue 17: the fan-out goes on the loop's next turns, FAN_OUT_BATCH at a time
    (the STORE's answer is sent first), and a key with more than FEW_LISTENERS
    listeners (a group's) is pushed by the replicas with fewer than GROUP_PUSHERS
    closer peers, not PUSHERS."""
    from mesh.dht import replica as replica_module

    owner, writer = Identity.generate(), Identity.generate()
    key = owner.public.mailbox_key
    record = record_for(owner, writer, "hello")
    sent: list[wire.Address] = []
    closer = {"n": replica_module.GROUP_PUSHERS}  # close for a person's key, not a group's

    class FakeRpc:
        class protocol:  # listening
            transport = object()

        def call(self, addr: wire.Address, method: str, args: Any, retries: int) -> None:
            assert method == "push"
            sent.append(addr)

        def closer_peers(self, key: bytes, limit: int) -> int:
            return min(closer["n"], limit)

    class AllVerified:
        def is_verified(self, addr: wire.Address) -> bool:
            return True

    rep = Replica(FakeRpc(), AllVerified(), None, time.time, 600)  # type: ignore[arg-type]
    until = time.time() + 600
    few = replica_module.FEW_LISTENERS
    rep.listeners[key] = {("127.0.0.1", 1000 + i): (until, False) for i in range(few)}
    rep.push(key, record, time.time())
    assert sent == []  # not before the answer
    for _ in range(4):
        await asyncio.sleep(0)
    assert len(sent) == few  # a person's key: a close replica pushes to every listener
    sent.clear()
    many = 3 * replica_module.FAN_OUT_BATCH + 2
    rep.listeners[key] = {("127.0.0.1", 2000 + i): (until, i < 5) for i in range(many)}
    rep.push(key, record, time.time())
    await asyncio.sleep(0)
    assert len(sent) == 5  # a group's: only the eager ones (first batch holds them all)
    closer["n"] = replica_module.GROUP_PUSHERS - 1  # now among the closest of a group too
    sent.clear()
    rep.push(key, record, time.time())
    await asyncio.sleep(0)
    assert len(sent) == replica_module.FAN_OUT_BATCH  # one batch per turn
    for _ in range(8):
        await asyncio.sleep(0)
    assert sorted(sent) == sorted(rep.listeners[key])  # then every one, once
