"""mDNS discovery: the pure parts, then real nodes on loopback.

Every node gets its own 127.0.5.N address and mDNS runs only on that explicit loopback
interface. Each test uses a random network name, so concurrent runs never meet.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from netutil import prepare_contacts
from zeroconf import IPVersion
from zeroconf._dns import DNSPointer
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from mesh import discovery as disc
from mesh.discovery import (
    SERVICE_TYPE,
    Discovery,
    DiscoveryConfig,
    PeerBook,
    choose_interfaces,
    parse_txt,
    tick_delay,
    txt_properties,
    usable_peer_addresses,
)
from mesh.errors import LocalError
from mesh.node import Node

WAIT = 10.0  # generous bound for anything that should take milliseconds


def host(n: int) -> str:
    return f"127.0.5.{n}"


def network() -> str:
    return f"test-{secrets.token_hex(4)}"


ALIVE: list[Node] = []  # every node a test has running: each new one is their contact


@contextlib.asynccontextmanager
async def nodes(*specs: dict[str, Any]) -> AsyncIterator[list[Node]]:
    started: list[Node] = []
    try:
        for spec in specs:
            node = await Node.start(**spec)
            running = [n for n in ALIVE if not n._stopped]
            if running:
                prepare_contacts([node], running)  # agreed before (tests/netutil.py)
            started.append(node)
            ALIVE.append(node)
        yield started
    finally:
        for node in started:
            ALIVE.remove(node)
        await asyncio.gather(*(n.stop() for n in started))


def mdns_node(n: int, net: str, **extra: Any) -> dict[str, Any]:
    return {"host": host(n), "mdns": True, "network_name": net, **extra}


def table(node: Node) -> set[tuple[str, int]]:
    return {c.address for c in node.dht.table.contacts()}


async def next_message_text(node: Node) -> str:
    message = await asyncio.wait_for(anext(aiter(node.messages())), WAIT)
    return message.text


# -- pure parts ---------------------------------------------------------------------------


def test_schedule_backs_off_then_keeps_going_every_few_seconds() -> None:
    config = DiscoveryConfig()
    rng = random.Random(7)
    delays = [tick_delay(t, 3, config, rng) for t in range(50)]
    assert 0.8 <= delays[0] <= 1.2 and 1.6 <= delays[1] <= 2.4
    assert all(3.2 <= d <= 4.8 for d in delays[2:])  # never stops, never slower
    assert tick_delay(40, 200, config, rng) >= 16.0  # big LANs: ~10 announcements/s


def test_txt_carries_version_and_network_only() -> None:
    props = txt_properties("café")
    assert set(props) == {b"v", b"net"}
    assert parse_txt(dict(props)) == "café"
    assert parse_txt({b"v": b"99", b"net": b"x"}) is None
    assert parse_txt({b"v": props[b"v"]}) is None
    assert parse_txt({b"v": props[b"v"], b"net": b"\xff\xfe"}) is None


@given(st.dictionaries(st.binary(max_size=8), st.one_of(st.none(), st.binary(max_size=90))))
def test_parse_txt_never_raises(props: dict[bytes, bytes | None]) -> None:
    result = parse_txt(props)
    assert result is None or isinstance(result, str)


@pytest.mark.parametrize("name", ["", "x" * 64, "bad\nname"])
def test_network_name_is_checked(name: str) -> None:
    with pytest.raises(LocalError):
        disc.check_network_name(name)


def test_interfaces_follow_the_bound_address_unless_given() -> None:
    def real() -> list[str]:
        return ["192.0.2.7"]

    assert choose_interfaces("127.0.5.3", None, real) == ["127.0.5.3"]
    assert choose_interfaces("0.0.0.0", None, real) == ["192.0.2.7"]
    assert choose_interfaces("127.0.5.3", ["127.0.5.9", "nonsense"], real) == ["127.0.5.9"]
    assert choose_interfaces("localhost", None, real) == []


def test_peer_addresses_are_filtered() -> None:
    advertised = ["127.0.0.9", "10.0.0.1", "0.0.0.0", "224.0.0.251", "fe80::1", "x"]
    assert usable_peer_addresses(advertised, 9, on_loopback=False) == [("10.0.0.1", 9)]
    assert usable_peer_addresses(advertised, 9, on_loopback=True)[0] == ("127.0.0.9", 9)
    many = [f"10.0.0.{i}" for i in range(1, 10)]
    assert len(usable_peer_addresses(many, 9, on_loopback=False)) == disc.MAX_ADDRESSES_PER_PEER


def test_instance_of_knows_only_our_service() -> None:
    ours = DNSPointer(SERVICE_TYPE, 12, 1, 120, "Mesh-1._mesh-msg._udp.local.")
    other = DNSPointer("_ipp._tcp.local.", 12, 1, 120, "printer._ipp._tcp.local.")
    assert disc.instance_of(ours) == "mesh-1._mesh-msg._udp.local."
    assert disc.instance_of(other) is None


def test_the_zeroconf_adapter_still_matches_zeroconf() -> None:
    """mesh/mdns_records.py uses classes zeroconf does not export publicly: fail here,
    not on a LAN, when a zeroconf release moves or changes them."""
    import re
    import tomllib

    import zeroconf
    from zeroconf._protocol.incoming import DNSIncoming

    from mesh import mdns_records

    installed = tuple(int(part) for part in zeroconf.__version__.split(".")[:2])
    assert installed < mdns_records.ZEROCONF_BELOW
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    (spec,) = [d for d in project["project"]["dependencies"] if d.startswith("zeroconf")]
    bound = re.search(r"<(\d+)\.(\d+)", spec)
    assert bound is not None and tuple(map(int, bound.groups())) == mdns_records.ZEROCONF_BELOW
    # The names are still the ones zeroconf itself uses (kept at its top level).
    for name in ("DNSOutgoing", "DNSPointer", "DNSRecord"):
        assert getattr(zeroconf, name) is getattr(mdns_records, name)
    fresh = DNSPointer(SERVICE_TYPE, 12, 1, 120, "Mesh-1._mesh-msg._udp.local.")
    stale = DNSPointer(SERVICE_TYPE, 12, 1, 120, "mesh-2._mesh-msg._udp.local.")
    now_ms = zeroconf.current_time_millis()
    out, known = mdns_records.known_answer_query(
        SERVICE_TYPE, [fresh, stale], {"mesh-1._mesh-msg._udp.local."}, 8, now_ms
    )
    assert known == 1
    (packet,) = out.packets()
    parsed = DNSIncoming(packet)
    assert parsed.is_query()
    assert [(q.name, q.type) for q in parsed.questions] == [(SERVICE_TYPE, 12)]
    answers = parsed.answers()
    assert [a.alias for a in answers if isinstance(a, DNSPointer)] == [fresh.alias]


def never_in_table(addresses: tuple[tuple[str, int], ...]) -> bool:
    return False


def test_book_adds_new_peers_and_ignores_other_networks() -> None:
    book = PeerBook(DiscoveryConfig())
    a = (("10.0.0.1", 1),)
    assert book.heard("a", True, a, 0.0, never_in_table).add == [a[0]]
    assert book.heard("a", True, a, 1.0, never_in_table).add == []  # heard again, fresh
    foreign = book.heard("f", False, (("10.0.0.2", 2),), 0.0, never_in_table)
    assert foreign.add == [] and foreign.forget == []
    assert book.peers() == list(a) and book.counters["foreign"] == 1


def test_book_treats_a_peer_back_from_a_partition_as_new() -> None:
    book = PeerBook(DiscoveryConfig())
    a = (("10.0.0.1", 1),)
    book.heard("a", True, a, 0.0, never_in_table)
    back = book.heard("a", True, a, book.stale_after() + 1.0, never_in_table)
    assert back.forget == list(a) and back.add == list(a)
    assert book.counters["reappeared"] == 1
    assert "a" in book.fresh(book.stale_after() + 1.5)
    moved = book.heard("a", True, (("10.0.0.9", 1),), book.stale_after() + 2.0, never_in_table)
    assert moved.forget == list(a) and moved.add == [("10.0.0.9", 1)]


def test_book_repings_a_known_peer_missing_from_the_table() -> None:
    config = DiscoveryConfig()
    a = (("10.0.0.1", 1),)
    # heard every 2 s (never stale) for a bit more than twice the re-add interval
    times = [2.0 * i for i in range(1, int(config.readd_interval) + 3)]
    for in_table, expected_adds in ((lambda _: True, 0), (never_in_table, 2)):
        book = PeerBook(config)
        book.heard("a", True, a, 0.0, never_in_table)
        adds = [book.heard("a", True, a, t, in_table).add for t in times]
        assert [x for x in adds if x] == [list(a)] * expected_adds
        assert book.counters["reappeared"] == 0


def test_book_forgets_a_goodbye_and_ignores_late_answers() -> None:
    config = DiscoveryConfig()
    book = PeerBook(config)
    a, b = (("10.0.0.1", 1),), (("10.0.0.2", 2),)
    book.heard("a", True, a, 0.0, never_in_table)
    book.heard("b", True, b, 0.0, never_in_table)
    _, actions = book.gone("a", goodbye=True, now=1.0)
    assert actions.forget == list(a)
    assert book.heard("a", True, a, 1.5, never_in_table).add == []  # an answer sent late
    # a forged goodbye costs only a while: the real peer is heard again afterwards
    assert book.heard("a", True, a, 2.0 + config.goodbye_hold, never_in_table).add == list(a)
    _, actions = book.gone("b", goodbye=False, now=1.0)  # expired: may come back any time
    assert actions.forget == list(b)
    assert book.heard("b", True, b, 1.5, never_in_table).add == list(b)


def test_book_is_bounded_and_prunes_the_silent() -> None:
    book = PeerBook(DiscoveryConfig(max_instances=2))
    for i in range(3):
        book.heard(f"n{i}", False, ((f"10.0.0.{i + 1}", 1),), 0.0, never_in_table)
    assert len(book.instances) == 2 and book.counters["dropped"] == 1
    assert book.expired(1.0) == []
    assert sorted(book.expired(10_000.0)) == ["n0", "n1"]


# -- real nodes on loopback ------------------------------------------------------------


async def test_five_nodes_find_each_other_and_deliver() -> None:
    net = network()
    async with nodes(*(mdns_node(n, net) for n in range(1, 6))) as five:
        counts = await asyncio.gather(*(n.wait_peers(4, WAIT) for n in five))
        assert counts == [4] * 5
        for i, sender in enumerate(five):
            receipt = await sender.send(five[(i + 1) % 5].id, f"hello {i}")
            assert receipt.replicas >= 1  # a peer acknowledged (our own copy is not counted)
        texts = await asyncio.gather(*(next_message_text(n) for n in five))
        assert texts == [f"hello {(i - 1) % 5}" for i in range(5)]
        assert all(n.discovery.statistics()["own"] >= 1 for n in five)  # heard, ignored


async def test_announcement_reveals_no_identity() -> None:
    net = network()
    observer = AsyncZeroconf(interfaces=[host(99)], ip_version=IPVersion.V4Only)
    try:
        async with nodes(mdns_node(10, net), mdns_node(11, net)) as (a, b):
            name = a.discovery.instance_name
            assert name != b.discovery.instance_name
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            assert await info.async_request(observer.zeroconf, WAIT * 1000)
            assert info.properties == {b"v": b"1", b"net": net.encode()}
            assert info.port == a.address[1]
            assert info.parsed_addresses(IPVersion.V4Only) == [a.address[0]]
            for secret in (a.id, a.dht.node_id.hex(), a.identity.public.fingerprint):
                assert secret.lower() not in (name + str(info.server)).lower()
    finally:
        await observer.async_close()


async def test_a_node_that_stops_is_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    net = network()
    async with nodes(*(mdns_node(n, net) for n in (20, 21, 22))) as (a, b, c):
        assert await a.wait_peers(2, WAIT) == 2 and await b.wait_peers(2, WAIT) == 2
        gone = c.address
        forgotten = {a: asyncio.Event(), b: asyncio.Event()}
        for node, event in forgotten.items():
            monkeypatch.setattr(node, "forget_peer", spy(node.forget_peer, gone, event))
        await c.stop()
        for node, event in forgotten.items():
            await asyncio.wait_for(event.wait(), WAIT)
            assert gone not in node.discovery.peers()
            assert gone not in table(node)
            assert node.discovery.statistics()["departed"] >= 1


def spy(
    forget: Callable[[tuple[str, int]], None], watched: tuple[str, int], event: asyncio.Event
) -> Callable[[tuple[str, int]], None]:
    def forget_peer(address: tuple[str, int]) -> None:
        forget(address)
        if address == watched:
            event.set()

    return forget_peer


async def test_different_network_names_never_mix() -> None:
    red, blue = network(), network()
    specs = (mdns_node(30, red), mdns_node(31, red), mdns_node(32, blue))
    async with nodes(*specs) as (red1, red2, blue1):
        assert await blue1.discovery.wait_heard(2, WAIT) == 2  # it did hear both reds
        assert await red1.discovery.wait_heard(2, WAIT) == 2
        assert await red1.wait_peers(1, WAIT) == 1
        assert table(red1) == {red2.address}
        assert blue1.peer_count() == 0 and blue1.discovery.peers() == []
        assert blue1.discovery.statistics()["foreign"] == 2
        assert blue1.address not in red2.discovery.peers()


async def test_restarted_node_rejoins_from_its_peer_cache(tmp_path: Path) -> None:
    net = network()
    home = tmp_path / "a"
    async with nodes(mdns_node(40, net), mdns_node(41, net, home=home)) as (b, a):
        assert await a.wait_peers(1, WAIT) == 1
        await a.stop()
        # no mDNS at all this time: only the cache in `home` can lead it back to b
        async with nodes({"host": host(41), "home": home, "mdns": False}) as (again,):
            assert again.discovery is None
            assert b.address in table(again)  # already a contact when start() returns
            assert (await again.send(b.id, "I'm back")).replicas >= 1
            assert await next_message_text(b) == "I'm back"


async def test_zeroconf_failure_never_crashes_the_node(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> AsyncZeroconf:
        raise OSError("no multicast here")

    net = network()
    monkeypatch.setattr(disc, "AsyncZeroconf", broken)
    async with nodes({"host": host(50), "mdns": False}) as (b,):
        a_spec = mdns_node(51, net, bootstrap=[b.address])
        async with nodes(a_spec) as (a,):
            assert a.discovery.statistics()["errors"] >= 1
            assert (await a.send(b.id, "still works")).replicas >= 1
            monkeypatch.undo()  # multicast is back: the next tick opens zeroconf
            async with nodes(mdns_node(52, net)) as (c,):
                assert await c.discovery.wait_heard(1, WAIT) == 1
                assert a.address in c.discovery.peers()


async def test_errors_while_adding_peers_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(address: tuple[str, int]) -> None:
        raise RuntimeError("refused")

    net = network()
    async with nodes({"host": host(60), "mdns": False}) as (a,):
        monkeypatch.setattr(a, "add_peer", refuse)
        discovery = Discovery(a, network_name=net)
        await discovery.start()
        try:
            async with nodes(mdns_node(61, net)) as (b,):
                assert await discovery.wait_heard(1, WAIT) == 1
                assert discovery.statistics()["errors"] >= 1
                assert await b.wait_peers(1, WAIT) == 1  # a still announces and answers
        finally:
            await discovery.stop()
