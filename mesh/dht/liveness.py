"""Liveness: which peers are alive, verified, dead, moved or gone. Sans-IO.

The book owns the routing table's membership: only it adds and removes peers. It never
sends anything and never reads a clock: every method takes `now` (loop time, seconds)
and returns what to do, as a tuple of actions the caller carries out:

- `PingPeer(target)`: send a ping to `target` (a `Peer` when a failure must remove it
  from the table, else an address) and call `ping_done(address)` when the call ends;
- `Admitted(peer)`: a stranger entered the table (hand it its records, tell the node);
- `WakeAfter(delay)`: call `verify_due(now)` after `delay` seconds.

The rules (why a stranger is pinged before it enters, why a moved peer keeps its place
until the old address fails, why a goodbye is not undone by late answers) are those of
docs/architecture.md, "Liveness". This is the way `discovery.PeerBook` and aioquic's
connection are driven: events in with a time, decisions out.
"""

from __future__ import annotations

from collections.abc import Container
from typing import NamedTuple

from mesh import wire
from mesh.bounded import BoundedLru
from mesh.dht.routing import Peer, RoutingTable
from mesh.wire import Address

DEAD_FOR = 30.0  # seconds an address that timed out is skipped by lookups
FORGET_FOR = 5.0  # seconds a peer that said goodbye is not re-admitted by its requests
VERIFY_DELAY = 1.0  # seconds between a stranger's first request and our ping to it
MAX_VERIFYING = 256  # strangers queued or being pinged at once (bounded: anyone can be one)
HEAD_FRESH = 60.0  # a bucket head that answered this recently is not pinged again
MAX_ADDRESSES = 4096  # addresses remembered as verified, dead or recently heard
MAX_FORGOTTEN = 1024


class PingPeer(NamedTuple):
    target: Peer | Address


class Admitted(NamedTuple):
    peer: Peer


class WakeAfter(NamedTuple):
    delay: float


Action = PingPeer | Admitted | WakeAfter
NOTHING: tuple[Action, ...] = ()


class Liveness:
    __slots__ = (
        "_dead",
        "_forgotten",
        "_heard_since",
        "_moved",
        "_to_verify",
        "_verified",
        "_verifying",
        "srtt",
        "table",
    )

    def __init__(self, table: RoutingTable) -> None:
        self.table = table
        self.srtt = 0.005  # smoothed round-trip time, seconds
        self._verified: BoundedLru[Address, None] = BoundedLru(MAX_ADDRESSES)
        self._dead: BoundedLru[Address, float] = BoundedLru(MAX_ADDRESSES)  # -> until
        self._heard_since: BoundedLru[Address, float] = BoundedLru(MAX_ADDRESSES)
        self._forgotten: BoundedLru[Address, float] = BoundedLru(MAX_FORGOTTEN)  # -> until
        self._moved: BoundedLru[bytes, Peer] = BoundedLru(MAX_VERIFYING)  # id -> new place
        self._verifying: set[Address] = set()
        self._to_verify: dict[Address, bytes] = {}  # strangers to ping after VERIFY_DELAY

    # -- what others ask ----------------------------------------------------------

    @property
    def dead_marks(self) -> Container[Address]:
        """Addresses marked dead (some may have expired): a cheap first check without a
        clock; an address not in it is not dead."""
        return self._dead

    def is_dead(self, addr: Address, now: float) -> bool:
        until = self._dead.get(addr)
        if until is None:
            return False
        if until < now:
            del self._dead[addr]
            return False
        return True

    def is_verified(self, addr: Address) -> bool:
        """`addr` answered a round trip lately: pushes may go there."""
        return addr in self._verified

    def soft_timeout(self, rpc_timeout: float) -> float:
        return min(rpc_timeout, max(0.05, 4 * self.srtt))

    # -- events -------------------------------------------------------------------

    def on_request(
        self, request: wire.Request, sender: bytes, addr: Address, now: float
    ) -> tuple[Action, ...]:
        """A request arrived (before it is answered)."""
        known = self.table.get(sender)
        if known is not None:
            if known.address == addr:
                self._heard_since.put(
                    addr, now
                )  # a late timeout of an older call must not evict it
                return NOTHING
            return self._verify(addr, now)  # the id at a new address: see on_round_trip
        if type(request) is wire.Listen:
            return self._verify(addr, now)  # at once: pushes go only to verified addresses
        if not self.table.would_accept(sender, addr[0]):  # only if it could enter the table
            return NOTHING
        if type(request) is wire.Ping or (type(request) is wire.Find and request.target == sender):
            # A joining peer introduces itself, or looks up its own id (it asks its future
            # neighbours): meet it now, or peers that join together would not learn of
            # each other.
            return self._verify(addr, now)
        return self._verify_later(addr, sender)

    def on_round_trip(self, sender: bytes, addr: Address, now: float) -> tuple[Action, ...]:
        """`sender` answered one of our calls from `addr`."""
        self._dead.pop(addr, None)
        self._heard_since.put(addr, now)
        known = self.table.get(sender)
        if known is None and self._forgotten:
            until = self._forgotten.get(addr)
            if until is not None and until > now:
                return NOTHING  # it said goodbye: an answer to an older call does not undo it
        if known is not None and known.address == addr:
            # Answered within the last second (20 stores, a lookup): its place in the
            # table and among the verified is as fresh as it needs to be.
            if now - known.last_seen >= 1.0:
                self._verified.put(addr, None)
                self.table.add_contact(known)
            known.last_seen = now
            if self._moved:
                self._moved.pop(sender, None)  # the old address answered: it stays
            return NOTHING
        self._verified.put(addr, None)
        if known is not None:
            if known.address not in self._dead:
                # The same id answers from a new address (a restart on another port, or
                # someone claiming the id). The old address keeps the place until it
                # fails a ping; then the new one takes it at once (`on_call_failed`).
                moved = Peer(sender, addr[0], addr[1])
                moved.last_seen = now
                self._moved.put(sender, moved)
                return self._check_alive(known)
            self.table.remove_contact(known)  # it restarted elsewhere: follow it
        return self._admit(Peer(sender, addr[0], addr[1]), now)

    def on_call_ok(self, started: float, now: float) -> None:
        self.srtt += 0.125 * (min(now - started, 1.0) - self.srtt)

    def on_call_failed(
        self, target: Peer | Address, addr: Address, started: float, now: float
    ) -> tuple[Action, ...]:
        """A call to `addr` got no answer (after its retry)."""
        if self._heard_since.get(addr, -1.0) > started:
            return NOTHING  # heard from since (it restarted on the same address, say)
        self._dead.put(addr, now + DEAD_FOR)
        if not isinstance(target, Peer):
            return NOTHING
        self.table.remove_contact(target)
        moved = self._moved.pop(target.id, None)
        if moved is None or now - moved.last_seen >= HEAD_FRESH or target.id in self.table:
            return NOTHING
        return self._admit(moved, moved.last_seen)  # it restarted there

    def ping_done(self, addr: Address) -> None:
        self._verifying.discard(addr)

    def verify_due(self, now: float) -> tuple[Action, ...]:
        """VERIFY_DELAY after the first stranger was queued: ping those that could still
        enter the table (our own lookups may have met them meanwhile)."""
        pending, self._to_verify = self._to_verify, {}
        actions: list[Action] = []
        for addr, sender in pending.items():
            if self.table.would_accept(sender, addr[0]):
                actions.extend(self._verify(addr, now))
        return tuple(actions)

    def forget(self, addr: Address, now: float) -> None:
        """Drop every peer at `addr` and ignore its requests for FORGET_FOR seconds."""
        for peer in list(self.table.contacts()):
            if peer.address == addr:
                self.table.remove_contact(peer)
        self._forgotten.put(addr, now + FORGET_FOR)

    def introduce(self, addr: Address) -> None:
        """A peer found out of band (mDNS, the user) is back: undo an earlier `forget`."""
        self._forgotten.pop(addr, None)

    # -- decisions ----------------------------------------------------------------

    def _verify(self, addr: Address, now: float) -> tuple[Action, ...]:
        """A stranger talked to us: it enters the table only once it answers a ping.
        (An address verified before is verified again: the peer may have been dropped
        after a timeout, and a peer that came back must be able to re-enter.)"""
        if addr in self._verifying or len(self._verifying) >= MAX_VERIFYING:
            return NOTHING
        until = self._forgotten.get(addr)
        if until is not None:
            if until > now:
                return NOTHING  # it said goodbye: what it still sends does not bring it back
            del self._forgotten[addr]
        self._verifying.add(addr)
        return (PingPeer(addr),)

    def _verify_later(self, addr: Address, sender: bytes) -> tuple[Action, ...]:
        """Verify a stranger after VERIFY_DELAY, once: a newcomer's first requests come
        in a burst (a lookup, then stores), and its ping must not compete with the
        answers it waits for."""
        if addr in self._to_verify or len(self._to_verify) >= MAX_VERIFYING:
            return NOTHING
        self._to_verify[addr] = sender
        return (WakeAfter(VERIFY_DELAY),) if len(self._to_verify) == 1 else NOTHING

    def _check_alive(self, head: Peer) -> tuple[Action, ...]:
        if head.address in self._verifying or len(self._verifying) >= MAX_VERIFYING:
            return NOTHING
        self._verifying.add(head.address)
        return (PingPeer(head),)

    def _admit(self, peer: Peer, now: float) -> tuple[Action, ...]:
        """A stranger that answered a round trip: into the table, or its bucket's least
        recently seen peer gets pinged."""
        peer.last_seen = now
        head = self.table.add_contact(peer)
        if peer.id in self.table:
            return (Admitted(peer),)
        if head is not None and now - head.last_seen > HEAD_FRESH:
            # Kademlia keeps a full bucket's old peers while they live; one that answered
            # within HEAD_FRESH seconds is alive, so no ping (measured: these pings were
            # half the datagrams of a send at 300 peers).
            return self._check_alive(head)
        return NOTHING
