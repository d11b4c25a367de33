"""Issue 15: strangers can ask, not jam, spam or take over: requests, stamps, quotas,
receipts to contacts only, blocking."""

from __future__ import annotations

import os
import time

import pytest
from netutil import bounded, prepare_contacts, start_network, stop_all, wait_until

from mesh import Node, envelope, keyring, stamps
from mesh.envelope import MessageKind, Record
from mesh.errors import NoRequestsError, UnreachableError
from mesh.identity import Identity
from mesh.mailboxes import Mailboxes
from mesh.node import NodeOptions
from mesh.outbox import Outbox
from mesh.requests import REQUEST_TTL, door_key
from mesh.store import Store

STAMP_VECTOR = "0108491e5eff760c7687491e5eff760c76b3491e5eff760c7724491e5eff760c779f"
TEST_COST = stamps.MIN_REPLICA_COST  # a test door asks little (64 argon2id runs); 13 ships


def junk(count: int) -> list[Record]:
    """Well-formed records of random ciphertext, valid sizes: what a jammer sends."""
    out = []
    for _ in range(count):
        size = 256 + envelope.SEAL_OVERHEAD
        ciphertext = os.urandom(size)
        out.append(Record(envelope.record_id_for(ciphertext), int(time.time()) + 86400, ciphertext))
    return out


def throwaway_request(bob: Identity, i: int, key: bytes, stamped: bool) -> tuple[str, Record]:
    stranger = Identity.generate()
    now = time.time()
    bundle = Mailboxes(stranger, Store(None)).bundle(now, reply=False)
    body = envelope.request_body(bundle, f"hello from stranger {i}")
    _m, record = envelope.seal_message(
        stranger, bob.public, MessageKind.REQUEST, body, now, REQUEST_TTL
    )
    stamp = stamps.mint(key, record.id, TEST_COST) if stamped else b""
    return stranger.id, Record(record.id, record.expires_at, record.ciphertext, stamp)


async def test_a_junk_flood_and_forty_strangers_do_not_reach_a_contacts_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nodes = await start_network(10, seed=21, contacts=False)
    options = NodeOptions(request_cost=TEST_COST)
    bob = await Node.start(
        host="127.0.9.1", bootstrap=[nodes[0].address], options=options, requests=True
    )
    alice = await Node.start(host="127.0.9.2", bootstrap=[nodes[1].address])
    laptop = nodes[9]  # the attacker: one device, one IP
    try:
        prepare_contacts([alice], [bob])
        await bounded(bob.fetch())  # publishes today's door
        day = keyring.epoch_of(time.time(), keyring.EPOCH_SECONDS)
        key = keyring.requests_key(bob.identity.verify_key, day)
        flood = junk(300)
        refused = 0
        for start in range(0, 300, 8):
            try:
                await bounded(laptop.dht.put(key, flood[start : start + 8]))
            except UnreachableError:
                refused += 1  # past the quota of one source on one key
        assert refused >= 15
        strangers = []
        for i in range(40):
            sender, record = throwaway_request(bob.identity, i, key, stamped=True)
            strangers.append(sender)
            await bounded(laptop.dht.put(key, [record]))
        acknowledged: list[str] = []
        send = Outbox.send_to_contact

        async def spy(self: Outbox, peer_id: str, kind: MessageKind, body: bytes, ttl: int) -> None:
            if self is bob.outbox and kind == MessageKind.RECEIPT:
                acknowledged.append(peer_id)
            await send(self, peer_id, kind, body, ttl)

        monkeypatch.setattr(Outbox, "send_to_contact", spy)
        for i in range(20):
            receipt = await bounded(alice.send(bob.id, f"from alice {i}"))
            assert receipt.replicas >= 1
        await bounded(bob.fetch())
        assert await wait_until(lambda: len(bob.inbox()) == 20, 15)
        assert {m.sender for m in bob.inbox()} == {alice.id}  # 0 strangers in the inbox
        assert sorted(r.peer_id for r in bob.requests()) == sorted(strangers)  # 40 requests
        assert await wait_until(lambda: len(acknowledged) >= 1, 5)
        assert set(acknowledged) == {alice.id}  # receipts to the contact, 0 to strangers
        assert bob.statistics()["requests_refused"] >= 128  # the junk, refused unopened
        # The junk is gone from every replica after the owner's fetch (deleted, never
        # repaired) plus one maintenance round.
        for node in [*nodes, alice, bob]:
            node.dht.replica.storage.expire(time.time())
        held = sum(
            node.dht.replica.storage.has(key, r.id) for node in [*nodes, alice] for r in flood
        )
        assert held == 0
    finally:
        await stop_all([bob, alice, *nodes])


async def test_requests_accept_block_and_off_by_default() -> None:
    nodes = await start_network(8, seed=22, contacts=False)
    options = NodeOptions(request_cost=TEST_COST)
    bob = await Node.start(bootstrap=[nodes[0].address], options=options)  # requests off
    carol = await Node.start(bootstrap=[nodes[1].address], options=options)
    mallory = await Node.start(bootstrap=[nodes[2].address], options=options)
    try:
        await bounded(bob.fetch())
        with pytest.raises(NoRequestsError):
            await bounded(carol.send_request(bob.id, "hi bob, it is carol"))
        bob.set_requests(True)
        await bounded(bob.fetch())  # the door goes up
        assert await bounded(carol.send_request(bob.id, "hi bob, it is carol")) >= 1
        assert await bounded(mallory.send_request(bob.id, "buy now")) >= 1
        await bounded(bob.fetch())
        assert {r.peer_id for r in bob.requests()} == {carol.id, mallory.id}
        assert bob.inbox() == []  # nothing shown as a message before accepting
        bob.block(mallory.id)
        await bounded(bob.accept_request(carol.id))
        assert [m.text for m in bob.inbox()] == ["hi bob, it is carol"]
        assert bob.requests() == []
        # Accepting completed the agreement both ways: they talk like any contacts.
        assert await wait_until(lambda: carol.contact_ready(bob.id), 10)
        await bounded(carol.send(bob.id, "thanks"))
        assert await wait_until(lambda: "thanks" in {m.text for m in bob.inbox()}, 10)
        await bounded(bob.send(carol.id, "welcome"))
        assert await wait_until(lambda: "welcome" in {m.text for m in carol.inbox()}, 10)
        # A blocked requester asking again is dropped.
        await bounded(mallory.send_request(bob.id, "buy now, again"))
        await bounded(bob.fetch())
        assert bob.requests() == []
        # Off again: nothing computable from Bob's ID is fetched any more.
        bob.set_requests(False)
        fetched: list[bytes] = []
        fetch = bob.dht.fetch

        async def spy(key: bytes) -> list[Record]:
            fetched.append(key)
            return await fetch(key)

        bob.dht.fetch = spy  # type: ignore[method-assign]
        await bounded(bob.fetch())
        day = keyring.epoch_of(time.time(), keyring.EPOCH_SECONDS)
        computable = {keyring.requests_key(bob.identity.verify_key, d) for d in (day - 1, day)}
        computable |= {door_key(bob.identity.verify_key, day), bob.identity.mailbox_key}
        assert fetched and not computable & set(fetched)
    finally:
        await stop_all([bob, carol, mallory, *nodes])


def test_stamps_too_cheap_wrong_record_and_expired_are_refused() -> None:
    day = 20000
    vk = Identity.from_seed(bytes([7]) * 32).verify_key
    key, other_day = keyring.requests_key(vk, day), keyring.requests_key(vk, day - 3)
    record_id, other_id = b"r" * 16, b"s" * 16
    stamp = stamps.mint(key, record_id, 6)
    stamps.verify(key, record_id, stamp, 6)
    with pytest.raises(Exception, match="too cheap"):
        stamps.verify(key, record_id, stamp, 10)
    with pytest.raises(Exception, match="does not hold"):
        stamps.verify(key, other_id, stamp, 6)  # another record
    with pytest.raises(Exception, match="does not hold"):
        stamps.verify(other_day, record_id, stamp, 6)  # a mailbox of another day: expired
    forged = bytes([1, 20]) + stamp[2:]  # a claimed cost the work does not reach
    with pytest.raises(Exception, match="does not hold"):
        stamps.verify(key, record_id, forged, 6)
    repeated = stamp[:2] + stamp[2:10] * 4  # one solution four times
    with pytest.raises(Exception, match="repeated"):
        stamps.verify(key, record_id, repeated, 6)
    with pytest.raises(Exception, match="not a version-1 stamp"):
        stamps.verify(key, record_id, stamp[:-1], 6)
    assert stamps.cost_of(stamp) == 6 and len(stamp) == stamps.STAMP_SIZE


def test_stamp_vector() -> None:
    """docs/protocol.md, "Stamps": a fixed stamp verifies; any change to it fails."""
    key, record_id = bytes(range(20)), bytes(range(16))
    stamp = bytes.fromhex(STAMP_VECTOR)
    stamps.verify(key, record_id, stamp, 8)
    tampered = stamp[:-1] + bytes([stamp[-1] ^ 1])
    with pytest.raises(Exception, match="does not hold"):
        stamps.verify(key, record_id, tampered, 8)
