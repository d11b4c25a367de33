"""Issue 14: contacts' key agreement, rotating mailboxes, forward secrecy (end to end)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from netutil import befriend, bounded, start_network, stop_all, wait_until

from mesh import Node, envelope, keyring
from mesh.envelope import Record
from mesh.errors import NotForUsError
from mesh.identity import Identity
from mesh.keyring import GRACE_EPOCHS
from mesh.node import NodeOptions


async def test_two_contacts_message_both_ways_after_both_add() -> None:
    nodes = await start_network(8, seed=3, contacts=False)
    try:
        a, b = nodes[0], nodes[5]
        await befriend(a, b)
        receipt = await bounded(a.send(b.id, "hello bob"))
        assert receipt.replicas >= 1 and not receipt.waiting
        assert await wait_until(lambda: [m.text for m in b.inbox()] == ["hello bob"], 10)
        receipt = await bounded(b.send(a.id, "hello alice"))
        assert receipt.replicas >= 1
        assert await wait_until(lambda: [m.text for m in a.inbox()] == ["hello alice"], 10)
    finally:
        await stop_all(nodes)


async def test_one_way_add_queues_until_the_other_adds() -> None:
    nodes = await start_network(8, seed=4, contacts=False)
    try:
        a, b = nodes[1], nodes[6]
        assert await bounded(a.add_contact(b.id)) is False
        receipt = await bounded(a.send(b.id, "waiting for you"))
        assert receipt.waiting and receipt.replicas == 0
        assert b.inbox() == []
        assert await bounded(b.add_contact(a.id)) is True  # a's bundle was there
        assert await wait_until(lambda: a.contact_ready(b.id), 10)
        assert await wait_until(lambda: [m.text for m in b.inbox()] == ["waiting for you"], 10)
    finally:
        await stop_all(nodes)


async def test_forward_secrecy_the_seed_alone_no_longer_opens_a_captured_record() -> None:
    nodes = await start_network(6, seed=5, contacts=False)
    clock = [time.time()]
    options = NodeOptions(epoch_seconds=60)
    b = await Node.start(bootstrap=[nodes[2].address], options=options, wall=lambda: clock[0])
    a = nodes[0]
    try:
        await befriend(a, b)
        captured: list[tuple[bytes, Record]] = []
        put = a.dht.put

        async def spy(key: bytes, records: list[Record]) -> int:
            captured.extend((key, r) for r in records)
            return await put(key, records)

        a.dht.put = spy  # type: ignore[method-assign]
        await bounded(a.send(b.id, "the meeting moved to the station"))
        assert await wait_until(lambda: len(b.inbox()) == 1, 10)
        key, record = captured[-1]
        # Inside the window the device can still open what a watcher captured...
        opened = envelope.open_record(b.identity, record, clock[0], b.mailboxes.prekeys_for(key))
        assert opened.text == "the meeting moved to the station"
        # ...and the seed never could: the record is sealed to a prekey, not the identity.
        seized = Identity.from_seed(b.identity.seed)
        with pytest.raises(NotForUsError, match="sealed to another key"):
            envelope.open_record(seized, record, clock[0])
        epoch = b.mailboxes.epoch(clock[0])
        # Past the window (the epoch, one more, the overlap) and one complete fetch...
        clock[0] += 60 * (GRACE_EPOCHS + 2) + 1
        await bounded(b.fetch())
        assert all(e > epoch for e in b.mailboxes.prekey_epochs())
        held = [(p, s) for _e, p, s in b.store.keys.prekeys()]
        assert held and all(e > epoch for e, _p, _s in b.store.keys.prekeys())
        # ...neither the seed nor every key the device still holds opens it.
        with pytest.raises(NotForUsError, match="sealed to another key"):
            envelope.open_record(seized, record, clock[0])
        with pytest.raises(NotForUsError, match="none of our prekeys"):
            envelope.open_record(seized, record, clock[0], held)
        assert [m.text for m in b.inbox()] == ["the meeting moved to the station"]
    finally:
        await b.stop()
        await stop_all(nodes)


async def test_across_midnight_and_a_week_offline_everything_within_ttl_arrives(
    tmp_path: Path,
) -> None:
    """A message stored just before midnight, fetched two days later, arrives; so does one
    of every day of a week the recipient was away. One clock for every peer (replicas
    check expiries and owner-request times against theirs), moved by hand."""
    day = keyring.EPOCH_SECONDS
    clock = [(time.time() // day + 1) * day - 5.0]  # five seconds before midnight

    def wall() -> float:
        return clock[0]

    peers = [await Node.start(wall=wall)]
    for _ in range(6):
        peers.append(await Node.start(bootstrap=[peers[0].address], wall=wall))
    home = tmp_path / "bob"
    a = await Node.start(bootstrap=[peers[1].address], wall=wall)
    b = await Node.start(home=home, bootstrap=[peers[2].address], wall=wall)
    bob_id = b.id
    try:
        await befriend(a, b)
        await b.stop()
        assert (await bounded(a.send(bob_id, "just before midnight"))).replicas >= 1
        texts = ["just before midnight"]
        clock[0] += 2 * day  # fetched two days later...
        b = await Node.start(home=home, bootstrap=[peers[3].address], wall=wall)
        assert await wait_until(lambda: [m.text for m in b.inbox()] == texts, 15)
        await b.stop()
        for i in range(7):  # ...and a week away, a message every day
            clock[0] += day
            texts.append(f"day {i}")
            assert (await bounded(a.send(bob_id, f"day {i}"))).replicas >= 1
        b = await Node.start(home=home, bootstrap=[peers[4].address], wall=wall)
        assert await wait_until(lambda: sorted(m.text for m in b.inbox()) == sorted(texts), 20)
        assert len(b.inbox()) == len(texts)  # each once
    finally:
        await b.stop()
        await a.stop()
        await stop_all(peers)


async def test_a_note_to_self_needs_no_agreement() -> None:
    nodes = await start_network(5, seed=8, contacts=False)
    try:
        a = nodes[2]
        receipt = await bounded(a.send(a.id, "remember the water"))
        assert receipt.replicas >= 1 and not receipt.waiting
        assert await wait_until(lambda: [m.text for m in a.inbox()] == ["remember the water"], 10)
    finally:
        await stop_all(nodes)
