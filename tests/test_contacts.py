"""Issue 14: contacts' key agreement, rotating mailboxes, forward secrecy (end to end)."""

from __future__ import annotations

from netutil import befriend, bounded, start_network, stop_all, wait_until

from mesh.node import NodeOptions


async def test_two_contacts_message_both_ways_after_both_add() -> None:
    nodes = await start_network(8, seed=3)
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
    nodes = await start_network(8, seed=4)
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
