"""mesh.dht.routing: the table a Sybil or eclipse attempt tries to fill."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.dht.routing import Peer, RoutingTable

OWN = bytes(20)  # id 0: every id with the top bit set lands in one far bucket


def far(n: int) -> bytes:
    """Ids in the far half of the id space (the bucket that never splits)."""
    return (2**159 + 1 + n).to_bytes(20, "big")


def contact(node_id: bytes, ip: str = "", port: int = 4000) -> Peer:
    return Peer(node_id, ip or f"10.0.{node_id[-2]}.{node_id[-1]}", port)


def check_invariants(table: RoutingTable) -> None:
    in_buckets = [c for b in table.buckets for c in b.nodes.values()]
    assert len(in_buckets) == len(table.by_id) == len(table)
    assert {c.id for c in in_buckets} == set(table.by_id)
    per_ip: dict[str, int] = {}
    for c in in_buckets:
        per_ip[c.ip] = per_ip.get(c.ip, 0) + 1
    assert per_ip == table.per_ip
    assert max(per_ip.values(), default=0) <= table.max_per_ip
    for bucket in table.buckets:
        assert len(bucket.nodes) <= table.ksize
        assert all(bucket.range[0] <= c.long_id <= bucket.range[1] for c in bucket.nodes.values())


def test_find_neighbors_considers_every_bucket() -> None:
    rng = random.Random(1)
    table = RoutingTable(rng.randbytes(20), ksize=20, max_per_ip=1000)
    for _ in range(300):
        table.add_contact(contact(rng.randbytes(20)))
    assert len(table.buckets) > 3
    everyone = list(table.contacts())
    for _ in range(50):
        target = rng.randbytes(20)
        t = int.from_bytes(target, "big")
        expected = sorted(everyone, key=lambda c: c.long_id ^ t)[:20]
        assert table.find_neighbors(target) == expected
    check_invariants(table)


def test_one_address_gets_at_most_max_per_ip_contacts() -> None:
    table = RoutingTable(OWN, ksize=20, max_per_ip=3)
    for n in range(2000):  # one socket, 2,000 fake ids
        fake = far(n) if n % 2 else (n * 2**140).to_bytes(20, "big")
        assert table.add_contact(contact(fake, "10.6.6.6")) is None
    assert table.per_ip == {"10.6.6.6": 3}
    table.add_contact(contact(far(5000), "10.0.0.1"))
    assert len(table) == 4
    check_invariants(table)


def test_a_full_bucket_keeps_its_live_contacts_and_names_the_one_to_ping() -> None:
    table = RoutingTable(OWN, ksize=4)
    old = [contact(far(n)) for n in range(4)]
    for c in old:
        assert table.add_contact(c) is None
    assert table.add_contact(old[0]) is None  # seen again: now the most recent
    newcomer = contact(far(100))
    head = table.add_contact(newcomer)
    assert head is old[1]  # the least recently seen is asked whether it is alive ...
    assert newcomer.id not in table  # ... and the newcomer waits, it evicts nobody
    assert {c.id for c in old} <= set(table.by_id)
    for n in range(200):  # a flood of newcomers changes nothing either
        assert table.add_contact(contact(far(1000 + n))) is old[1]
    assert {c.id for c in table.contacts()} == {c.id for c in old}
    check_invariants(table)


def test_a_dead_contact_is_replaced_by_the_freshest_candidate() -> None:
    table = RoutingTable(OWN, ksize=2)
    a, b = contact(far(1)), contact(far(2))
    table.add_contact(a)
    table.add_contact(b)
    first, second = contact(far(10)), contact(far(11))
    table.add_contact(first)
    table.add_contact(second)
    table.remove_contact(a)  # a did not answer the ping
    assert set(table.by_id) == {b.id, second.id}
    table.remove_contact(b)
    assert set(table.by_id) == {second.id, first.id}
    check_invariants(table)


def test_promotion_respects_the_per_ip_cap() -> None:
    table = RoutingTable(OWN, ksize=2, max_per_ip=1)
    honest = contact(far(1), "10.0.0.1")
    table.add_contact(honest)
    table.add_contact(contact(far(2), "10.0.0.2"))
    queued = contact(far(3), "10.6.6.6")
    assert table.add_contact(queued) is honest  # full: queued as a replacement
    near = contact((5).to_bytes(20, "big"), "10.6.6.6")
    assert table.add_contact(near) is None  # another bucket had room: 10.6.6.6 is at its cap
    table.remove_contact(honest)
    assert set(table.by_id) == {far(2), near.id}  # the queued one would exceed the cap
    check_invariants(table)


def test_a_known_id_at_another_address_neither_moves_nor_evicts_it() -> None:
    table = RoutingTable(OWN, ksize=20)
    real = contact(far(1), "10.0.0.1", 4000)
    table.add_contact(real)
    impostor = contact(far(1), "10.6.6.6", 9)
    assert table.add_contact(impostor) is None
    assert table.get(far(1)) is real
    table.remove_contact(impostor)  # e.g. a lookup asked the impostor and it timed out
    assert table.get(far(1)) is real
    table.remove_contact(contact(far(1), "10.0.0.1", 4000))
    assert far(1) not in table
    check_invariants(table)


def test_own_id_is_never_a_contact() -> None:
    table = RoutingTable(OWN)
    assert table.add_contact(contact(OWN)) is None
    assert len(table) == 0


ops = st.lists(
    st.tuples(st.booleans(), st.integers(0, 63), st.integers(0, 5), st.booleans()), max_size=120
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_accounting_holds_under_any_sequence_of_adds_and_removes(
    steps: list[tuple[bool, int, int, bool]],
) -> None:
    table = RoutingTable(bytes([0x55]) * 20, ksize=3, max_per_ip=2)
    for add, n, ip, high in steps:
        node_id = ((2**159 if high else 0) + n * 2**150).to_bytes(20, "big")
        c = contact(node_id, f"10.0.0.{ip}")
        if add:
            table.add_contact(c)
        else:
            table.remove_contact(c)
        check_invariants(table)
