"""The liveness book without sockets or clocks: events in with a time, decisions out."""

from __future__ import annotations

from mesh import wire
from mesh.dht.liveness import (
    DEAD_FOR,
    FORGET_FOR,
    HEAD_FRESH,
    MAX_VERIFYING,
    VERIFY_DELAY,
    Admitted,
    Liveness,
    PingPeer,
    WakeAfter,
)
from mesh.dht.routing import RoutingTable

ME = bytes(20)
A = (b"\x80" + bytes(19), ("10.0.0.1", 4000))
B = (b"\x40" + bytes(19), ("10.0.0.2", 4000))


def book() -> Liveness:
    return Liveness(RoutingTable(ME, 20, 4))


def test_a_stranger_that_pings_is_pinged_back_and_enters_only_once_it_answers() -> None:
    live = book()
    node_id, addr = A
    assert live.on_request(wire.Ping(), node_id, addr, now=0.0) == (PingPeer(addr),)
    assert node_id not in live.table  # a request alone never admits
    assert live.on_request(wire.Ping(), node_id, addr, now=0.1) == ()  # already being pinged
    actions = live.on_round_trip(node_id, addr, now=0.2)
    assert [type(a) for a in actions] == [Admitted] and node_id in live.table
    assert live.is_verified(addr)


def test_other_requests_of_strangers_are_verified_in_one_batch_later() -> None:
    live = book()
    (id_a, addr_a), (id_b, addr_b) = A, B
    store = wire.Store(bytes(20), [])
    assert live.on_request(store, id_a, addr_a, now=0.0) == (WakeAfter(VERIFY_DELAY),)
    assert live.on_request(store, id_b, addr_b, now=0.1) == ()  # the timer is already set
    assert set(live.verify_due(now=VERIFY_DELAY)) == {PingPeer(addr_a), PingPeer(addr_b)}
    assert live.verify_due(now=2 * VERIFY_DELAY) == ()  # each stranger once


def test_a_listen_is_verified_at_once() -> None:
    live = book()
    node_id, addr = A
    listen = wire.Listen(None, False)  # type: ignore[arg-type]  # the book reads only the type
    assert live.on_request(listen, node_id, addr, now=0.0) == (PingPeer(addr),)


def test_a_failed_call_marks_the_address_dead_for_a_while_and_removes_the_peer() -> None:
    live = book()
    node_id, addr = A
    live.on_request(wire.Ping(), node_id, addr, now=0.0)
    live.on_round_trip(node_id, addr, now=0.0)
    peer = live.table.get(node_id)
    assert peer is not None
    assert live.on_call_failed(peer, addr, started=1.0, now=3.0) == ()
    assert node_id not in live.table
    assert live.is_dead(addr, now=3.0 + DEAD_FOR - 1)
    assert not live.is_dead(addr, now=3.0 + DEAD_FOR + 1)


def test_a_timeout_of_a_call_older_than_the_last_answer_changes_nothing() -> None:
    live = book()
    node_id, addr = A
    live.on_round_trip(node_id, addr, now=5.0)
    peer = live.table.get(node_id)
    assert peer is not None
    live.on_call_failed(peer, addr, started=4.0, now=6.0)  # started before we heard it
    assert node_id in live.table and not live.is_dead(addr, now=6.0)


def test_a_peer_on_a_new_address_takes_the_place_when_the_old_one_fails() -> None:
    live = book()
    node_id, old = A
    new = ("10.0.0.1", 5000)
    live.on_round_trip(node_id, old, now=0.0)
    old_peer = live.table.get(node_id)
    assert old_peer is not None
    # The id answers from a new port: the old address is checked, not replaced at once.
    assert live.on_round_trip(node_id, new, now=1.0) == (PingPeer(old_peer),)
    current = live.table.get(node_id)
    assert current is not None and current.address == old
    actions = live.on_call_failed(old_peer, old, started=1.0, now=3.0)
    assert [type(a) for a in actions] == [Admitted]
    current = live.table.get(node_id)
    assert current is not None and current.address == new


def test_a_moved_peer_seen_too_long_ago_is_not_followed() -> None:
    live = book()
    node_id, old = A
    live.on_round_trip(node_id, old, now=0.0)
    old_peer = live.table.get(node_id)
    assert old_peer is not None
    live.on_round_trip(node_id, ("10.0.0.1", 5000), now=1.0)
    assert live.on_call_failed(old_peer, old, started=1.0, now=2.0 + HEAD_FRESH) == ()
    assert node_id not in live.table


def test_a_goodbye_is_not_undone_by_late_answers_or_requests_but_by_an_introduction() -> None:
    live = book()
    node_id, addr = A
    live.on_round_trip(node_id, addr, now=0.0)
    live.forget(addr, now=1.0)
    assert node_id not in live.table
    assert live.on_round_trip(node_id, addr, now=1.5) == ()  # an answer to an older call
    assert node_id not in live.table
    assert live.on_request(wire.Ping(), node_id, addr, now=2.0) == ()
    assert live.on_request(wire.Ping(), node_id, addr, now=1.0 + FORGET_FOR + 0.1) == (
        PingPeer(addr),
    )
    live.ping_done(addr)
    live.forget(addr, now=10.0)
    live.introduce(addr)  # found again by mDNS: back at once
    assert live.on_request(wire.Ping(), node_id, addr, now=10.1) == (PingPeer(addr),)


def test_strangers_being_verified_are_bounded() -> None:
    live = book()
    pings = 0
    for i in range(MAX_VERIFYING + 50):
        node_id = (i + 1).to_bytes(20, "big")
        pings += len(live.on_request(wire.Ping(), node_id, (f"10.1.{i // 250}.{i % 250}", 1), 0.0))
    assert pings == MAX_VERIFYING


def test_round_trip_time_is_smoothed() -> None:
    live = book()
    before = live.srtt
    live.on_call_ok(started=0.0, now=0.5)
    assert before < live.srtt < 0.5
    assert live.soft_timeout(1.0) == min(1.0, max(0.05, 4 * live.srtt))


def test_the_book_never_admits_a_peer_it_has_not_heard_answer() -> None:
    live = book()
    for i in range(30):
        node_id = (i + 1).to_bytes(20, "big")
        live.on_request(wire.Find(node_id), node_id, (f"10.2.0.{i}", 1), now=float(i))
    assert len(live.table) == 0
