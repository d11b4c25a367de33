"""mDNS of a private mesh on loopback: members find each other as fast as in the open
mesh, announcements carry nothing fixed, and outsiders neither recognise nor join."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from netutil import prepare_contacts
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from mesh.mdns_names import SERVICE_TYPE, Naming
from mesh.netkey import MDNS_EPOCH, NetworkKey
from mesh.node import Node

WAIT = 10.0
KEY = NetworkKey("square", bytes([7]) * 32)
OTHER = NetworkKey("square", bytes([8]) * 32)  # same name, another key


def host(n: int) -> str:
    return f"127.0.6.{n}"


@contextlib.asynccontextmanager
async def nodes(*specs: dict[str, Any]) -> AsyncIterator[list[Node]]:
    started: list[Node] = []
    try:
        for spec in specs:
            started.append(await Node.start(mdns=True, network_name="square", **spec))
        prepare_contacts(started)  # contacts who agreed before (tests/netutil.py)
        yield started
    finally:
        await asyncio.gather(*(n.stop() for n in started))


def test_private_names_are_keyed_random_and_rotate() -> None:
    naming, open_naming = Naming("square", KEY), Naming("square", None)
    epoch = naming.epoch(1_800_000_000.0)
    assert epoch == 1_800_000_000 // MDNS_EPOCH
    types = naming.browsed_types(epoch)
    assert types[0] == naming.service_type(epoch) and len(set(types)) == 3
    assert naming.service_type(epoch) != naming.service_type(epoch + 1)
    assert naming.service_type(epoch) != Naming("square", OTHER).service_type(epoch)
    for text in (*types, naming.label(), naming.label()):
        assert "mesh" not in text and "square" not in text
    assert naming.label() != naming.label()
    assert naming.properties() == {}
    assert open_naming.service_type(epoch) == SERVICE_TYPE
    assert open_naming.properties() == {b"v": b"1", b"net": b"square"}


async def test_members_find_each_other_and_deliver_outsiders_do_not_join() -> None:
    specs = [
        {"host": host(1), "network_key": KEY},
        {"host": host(2), "network_key": KEY},
        {"host": host(3), "network_key": OTHER},
        {"host": host(4)},  # the open mesh
    ]
    async with nodes(*specs) as (a, b, other, open_node):
        assert await a.wait_peers(1, WAIT) == 1 and await b.wait_peers(1, WAIT) == 1
        receipt = await a.send(b.id, "meet at the north gate")
        assert receipt.replicas >= 1
        message = await asyncio.wait_for(anext(aiter(b.messages())), WAIT)
        assert message.text == "meet at the north gate"
        await asyncio.sleep(0)
        members = {a.address, b.address}
        for outsider in (other, open_node):
            assert outsider.peer_count() == 0
            assert outsider.discovery is not None and not set(outsider.discovery.peers())
            assert not members & {p.address for p in outsider.dht.table.contacts()}
        assert open_node.discovery is not None
        assert open_node.discovery.statistics()["foreign"] == 0  # it cannot even tell


async def test_a_private_announcement_says_nothing_fixed() -> None:
    observer = AsyncZeroconf(interfaces=[host(99)], ip_version=IPVersion.V4Only)
    try:
        async with nodes({"host": host(10), "network_key": KEY}) as (a,):
            assert a.discovery is not None
            name, service_type = a.discovery.instance_name, a.discovery.service_type
            assert service_type != SERVICE_TYPE
            info = AsyncServiceInfo(service_type, name)
            assert await info.async_request(observer.zeroconf, WAIT * 1000)
            assert info.properties in ({}, {b"": None})  # an empty TXT record
            text = (name + str(info.server) + service_type).lower()
            for fixed in ("mesh", "square", a.id.lower(), a.dht.node_id.hex()):
                assert fixed not in text
            # The open mesh's browser hears nothing of it.
            plain = AsyncServiceInfo(SERVICE_TYPE, f"x.{SERVICE_TYPE}")
            assert not await plain.async_request(observer.zeroconf, 300)
    finally:
        await observer.async_close()
