"""Private meshes on one loopback: each works, none learns another's peers or records, a
datagram that fails authentication is dropped, counted and never answered."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

from netutil import bounded, loopback_host

from mesh import envelope, wire
from mesh.dht.server import DhtConfig, DhtServer
from mesh.identity import Identity
from mesh.netkey import DatagramSealer, NetworkKey

KEY_A = NetworkKey("north", bytes([1]) * 32)
KEY_B = NetworkKey("south", bytes([2]) * 32)
FAST = DhtConfig(rpc_timeout=0.2, rpc_retries=0)


async def start_mesh(n: int, first_host: int, key: NetworkKey | None, seed: int) -> list[DhtServer]:
    rng = random.Random(seed)
    servers = [DhtServer(rng.randbytes(20), FAST, network_key=key) for _ in range(n)]
    for i, server in enumerate(servers):
        await server.listen(loopback_host(first_host + i))
    seed_address = servers[0].address
    assert seed_address is not None
    for server in servers[1:]:
        await bounded(server.bootstrap([seed_address]))
    return servers


def record_for(owner: Identity, text: str) -> envelope.Record:
    _, record = envelope.seal_message(
        Identity.generate(), owner.public, "text", text.encode(), time.time(), 3600
    )
    return record


async def test_private_and_open_meshes_on_one_loopback_stay_apart() -> None:
    north = await start_mesh(6, 0, KEY_A, seed=1)
    south = await start_mesh(6, 10, KEY_B, seed=2)
    open_mesh = await start_mesh(6, 20, None, seed=3)
    meshes = [north, south, open_mesh]
    try:
        # Everyone tries to join every other mesh too, as devices on one Wi-Fi would.
        for mesh in meshes:
            for other in meshes:
                if other is not mesh:
                    address = other[0].address
                    assert address is not None
                    await bounded(mesh[1].bootstrap([address]))
        owner = Identity.generate()
        key = owner.public.mailbox_key
        records = {}
        for name, mesh in zip(("north", "south", "open"), meshes, strict=True):
            records[name] = record_for(owner, name)
            assert await bounded(mesh[2].put(key, [records[name]])) >= 5
        for name, mesh in zip(("north", "south", "open"), meshes, strict=True):
            ids = {s.node_id for s in mesh}
            for server in mesh:  # no server knows a peer of another mesh
                assert set(server.table.by_id) <= ids
            fetched = await bounded(mesh[-1].fetch(key))
            assert [r.id for r in fetched] == [records[name].id]
        dropped = sum(s.statistics().get("dropped_unauthenticated", 0) for s in north)
        assert dropped > 0  # the others' pings reached north and were refused
    finally:
        await asyncio.gather(*(s.close() for mesh in meshes for s in mesh))


class CapturingTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent.append((data, addr))


async def test_unauthenticated_datagrams_are_dropped_before_parsing_and_never_answered() -> None:
    server = DhtServer(b"n" * 20, network_key=KEY_A)
    protocol = server.make_protocol()
    transport = CapturingTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    ping = wire.encode_request(5, b"s" * 20, "ping", [])
    now = time.time()
    good = DatagramSealer(KEY_A).seal(ping, now)
    flipped = bytearray(good)
    flipped[30] ^= 0x80
    attempts = {
        "plain": ping,
        "other network": DatagramSealer(KEY_B).seal(ping, now),
        "flipped bit": bytes(flipped),
        "truncated": good[:40],
        "oversized": bytes(wire.MAX_DATAGRAM + 1),
    }
    try:
        for data in attempts.values():
            protocol.datagram_received(data, ("127.0.0.9", 4000))
        stats = protocol.statistics()
        assert stats["dropped_unauthenticated"] == 4 and stats["dropped_oversized"] == 1
        assert stats.get("requests_in", 0) == 0 and transport.sent == []
        protocol.datagram_received(good, ("127.0.0.9", 4000))  # the real one is answered
        opened = [DatagramSealer(KEY_A).open(d, time.time()) for d, _ in transport.sent]
        kinds = sorted(wire.decode_datagram(d).kind for d in opened)
        assert kinds == [wire.REQUEST, wire.RESPONSE]  # the answer, and our ping back
        protocol.datagram_received(good, ("127.0.0.9", 4000))  # replayed: dropped, no answer
        assert protocol.statistics()["dropped_replayed"] == 1 and len(transport.sent) == 2
    finally:
        protocol.cancel_all()


async def test_a_replayed_answer_is_dropped_as_replayed() -> None:
    """Answers go through the nonce cache too (call ids are 32 bits: a replayed answer
    could otherwise match a later call to the same peer)."""
    server = DhtServer(b"n" * 20, network_key=KEY_A)
    protocol = server.make_protocol()
    transport = CapturingTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    peer = ("127.0.0.9", 4000)
    try:
        call = protocol.call(peer, "ping", [])
        ((request, _),) = transport.sent
        msgid = wire.decode_datagram(DatagramSealer(KEY_A).open(request, time.time())).msgid
        answer = DatagramSealer(KEY_A).seal(
            wire.encode_response(msgid, b"p" * 20, wire.OK, None), time.time()
        )
        protocol.datagram_received(answer, peer)
        await bounded(call)
        for _ in range(3):
            protocol.datagram_received(answer, peer)  # the same answer, replayed
        stats = protocol.statistics()
        assert stats["dropped_replayed"] == 3
        assert stats.get("dropped_unsolicited", 0) == 0 and len(transport.sent) == 1
        assert len(protocol.sealer.guard) == 1  # the answer's nonce
    finally:
        protocol.cancel_all()


async def test_nothing_stable_a_new_node_id_per_start_and_old_saved_ids_are_deleted(
    tmp_path: Path,
) -> None:
    from mesh.node import Node

    first = await Node.start(home=tmp_path, host=loopback_host(40))
    try:
        old_id = first.dht.node_id
        first.store.set_setting("node_id", old_id.hex())  # as the previous release kept it
    finally:
        await first.stop()
    again = await Node.start(home=tmp_path, host=loopback_host(40))
    try:
        assert again.dht.node_id != old_id
        assert again.store.get_setting("node_id") is None
        assert again.address[1] != 0
    finally:
        await again.stop()
