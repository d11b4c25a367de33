"""Issue 2 end to end: real nodes on loopback, persistence, API contract."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from netutil import bounded, prepare_contacts, start_network, stop_all, wait_until

from mesh import Node
from mesh.errors import InvalidIdError, MeshError, UnreachableError


async def test_offline_recipient_fetches_all_five_once(tmp_path: Path) -> None:
    home = tmp_path / "recipient"
    nodes = await start_network(10, seed=2)
    recipient = await Node.start(home=home, host="127.0.0.1")
    prepare_contacts([recipient], nodes)  # contacts who agreed before it went away
    recipient_id = recipient.id
    await recipient.stop()
    try:
        for i, sender in enumerate(nodes[:5]):
            receipt = await bounded(sender.send(recipient_id, f"message {i}"))
            assert receipt.replicas >= 1
        back = await Node.start(home=home, host="127.0.0.1", bootstrap=[nodes[7].address])
        try:
            assert back.id == recipient_id
            # Joining already fetched them; fetch() still returns each once (issue 18).
            fetched = await bounded(back.fetch())
            assert sorted(m.text for m in fetched) == [f"message {i}" for i in range(5)]
            got = back.inbox()
            assert sorted(m.text for m in got) == [f"message {i}" for i in range(5)]
            assert {m.sender for m in got} == {n.id for n in nodes[:5]}
            assert await bounded(back.fetch()) == []  # once each
            assert len(back.inbox()) == 5
        finally:
            await back.stop()
        again = await Node.start(home=home, host="127.0.0.1")
        try:
            assert again.id == recipient_id
            assert sorted(m.text for m in again.inbox()) == [f"message {i}" for i in range(5)]
        finally:
            await again.stop()
    finally:
        await stop_all(nodes)


async def test_home_is_private(tmp_path: Path) -> None:
    node = await Node.start(home=tmp_path / "h", host="127.0.0.1")
    await node.stop()
    for name in ("mesh.db", "mesh.key"):
        assert stat.S_IMODE(os.stat(tmp_path / "h" / name).st_mode) == 0o600


async def test_address_is_the_bound_one() -> None:
    node = await Node.start(host="127.0.0.1", port=0)
    try:
        host, port = node.address
        assert host == "127.0.0.1" and port > 0
    finally:
        await node.stop()


async def test_malformed_id_is_a_clear_mesh_error() -> None:
    nodes = await start_network(2)
    try:
        good = nodes[1].id
        typo = good[:10] + ("a" if good[10] != "a" else "b") + good[11:]
        with pytest.raises(InvalidIdError, match="typo"):
            await nodes[0].send(typo, "hi")
        with pytest.raises(MeshError):
            await nodes[0].send("not-an-id", "hi")
        assert nodes[0].store.list_messages() == []  # nothing was queued
    finally:
        await stop_all(nodes)


async def test_lonely_node_reports_unreachable_and_keeps_message_queued() -> None:
    nodes = await start_network(2)
    alone = await Node.start(host="127.0.0.3")
    prepare_contacts([alone], nodes)
    try:
        with pytest.raises(UnreachableError):
            await bounded(alone.send(nodes[0].id, "later"))
        pending = alone.store.outbox_pending()
        assert len(pending) == 1
        assert alone.store.list_messages(direction="out")[0].status == "queued"
        alone.add_peer(nodes[1].address)
        assert await alone.wait_peers(1, timeout=5) >= 1
        # The catch-up round that meeting a peer starts may flush the outbox first; either
        # way the message must leave the outbox as stored, and exactly once.
        await bounded(alone.flush_outbox())
        assert alone.store.outbox_pending() == []
        assert alone.store.list_messages(direction="out")[0].status in {"stored", "delivered"}
        message = await bounded(anext(nodes[0].messages()), 10)
        assert message.text == "later"
    finally:
        await alone.stop()
        await stop_all(nodes)


async def test_receipt_marks_message_delivered() -> None:
    nodes = await start_network(5)
    try:
        receipt = await bounded(nodes[0].send(nodes[3].id, "are you there?"))
        await bounded(anext(nodes[3].messages()), 10)

        def delivered() -> bool:
            row = nodes[0].store.get_message(receipt.message_id, "out")
            return row is not None and row.status == "delivered"

        assert await wait_until(delivered, timeout=10)
    finally:
        await stop_all(nodes)
