"""Iterative node lookup that never waits for the slowest member of a wave.

kademlia's crawler sends alpha requests, waits for all of them, then sends the next
wave, so one dead peer stalls every wave it is in for the whole RPC timeout. Here up to
`alpha` requests are in flight at any moment; each answer immediately refills the
window, and the lookup ends as soon as the `confirm` closest candidates have answered,
without waiting for stragglers further away. A request still unanswered after a soft
timeout (a few round-trip times, far below the RPC timeout) stops holding its slot and is
treated as failed unless it answers later, so a dead peer costs milliseconds, not seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from mesh import wire
from mesh.dht.protocol import Reply
from mesh.dht.routing import Peer
from mesh.errors import MeshError

FindCall = Callable[[Peer, bytes], "asyncio.Future[Reply]"]


class Lookup:
    def __init__(
        self,
        target: bytes,
        own_id: bytes,
        seeds: Iterable[Peer],
        find: FindCall,
        *,
        k: int,
        alpha: int,
        confirm: int,
        soft_timeout: float = 1.0,
        is_dead: Callable[[Peer], bool] = lambda c: False,
        max_per_ip: int = 1 << 30,
    ) -> None:
        self.target = target
        self.own_id = own_id
        self.find = find
        self.k = k
        self.alpha = alpha
        self.confirm = min(confirm, k)
        self._t = int.from_bytes(target, "big")
        self.candidates: dict[bytes, Peer] = {}
        self._by_long: dict[int, Peer] = {}
        self.answered: set[bytes] = set()
        self.failed: set[bytes] = set()
        self.asked: set[bytes] = set()
        self.slow: set[bytes] = set()
        self.soft_timeout = soft_timeout
        self.is_dead = is_dead
        self.max_per_ip = max_per_ip
        self._per_ip: dict[str, int] = {}
        self.in_flight = 0
        self.rpcs = 0
        self._done: asyncio.Future[list[Peer]] | None = None
        self._add(seeds)

    def _add(self, contacts: Iterable[Peer]) -> None:
        for c in contacts:
            if c.id == self.own_id or c.id in self.candidates or self.is_dead(c):
                continue
            if self._per_ip.get(c.ip, 0) >= self.max_per_ip:
                continue  # one address (a Sybil) must not crowd out the replica set
            self._per_ip[c.ip] = self._per_ip.get(c.ip, 0) + 1
            self.candidates[c.id] = c
            self._by_long[c.long_id] = c

    def closest(self) -> list[Peer]:
        failed, slow, answered, k = self.failed, self.slow, self.answered, self.k
        top: list[Peer] = []
        # Candidates by distance, with the target's int.__xor__ as the key (no Python
        # function per candidate); the first k live ones.
        for long_id in sorted(self._by_long, key=self._t.__xor__):
            c = self._by_long[long_id]
            if c.id not in failed and (c.id not in slow or c.id in answered):
                top.append(c)
                if len(top) == k:
                    break
        return top

    async def run(self) -> list[Peer]:
        self._done = asyncio.get_running_loop().create_future()
        self._step()
        return await self._done

    def _step(self) -> None:
        assert self._done is not None
        if self._done.done():
            return
        top = self.closest()
        if top and all(c.id in self.answered for c in top[: self.confirm]):
            self._finish(top)
            return
        # Slow requests give their slot back, but at most `alpha` of them may be
        # outstanding on top: under load everything looks slow, and an unbounded
        # fan-out would turn a busy moment into congestion collapse.
        pending_slow = len(self.slow - self.answered - self.failed)
        for contact in top:
            if self.in_flight >= self.alpha or self.in_flight + pending_slow >= 2 * self.alpha:
                break
            if contact.id not in self.asked:
                self._ask(contact)
        if self.in_flight == 0:
            answered = sum(1 for c in top if c.id in self.answered)
            if pending_slow and answered < self.confirm:
                return  # nothing else to ask: a slow answer beats none (a busy seed)
            self._finish(top)

    def _ask(self, contact: Peer) -> None:
        self.asked.add(contact.id)
        self.in_flight += 1
        self.rpcs += 1
        future = self.find(contact, self.target)
        timer = asyncio.get_running_loop().call_later(self.soft_timeout, self._on_slow, contact)
        future.add_done_callback(
            lambda f, c=contact, t=timer: self._on_answer(c, f, t)  # type: ignore[misc]
        )

    def _on_slow(self, contact: Peer) -> None:
        self.slow.add(contact.id)
        self.in_flight -= 1
        self._step()

    def _on_answer(
        self, contact: Peer, future: asyncio.Future[Reply], timer: asyncio.TimerHandle
    ) -> None:
        if contact.id in self.slow:
            pass  # its slot was already given back
        else:
            timer.cancel()
            self.in_flight -= 1
        if future.cancelled() or future.exception() is not None:
            self.failed.add(contact.id)
        else:
            reply = future.result()
            if reply.sender != contact.id:
                self.failed.add(contact.id)  # another node now lives at that address
            else:
                self.answered.add(contact.id)
                self._add(self._parse(reply.result))
        self._step()

    def _parse(self, result: object) -> list[Peer]:
        """The contacts of a find answer that are new to this lookup, validated. Known
        ones are skipped before validation: most of an answer is usually known."""
        try:
            return [Peer(*t) for t in wire.check_contacts(result, skip=self.candidates)]
        except MeshError:
            return []

    def _finish(self, top: list[Peer]) -> None:
        assert self._done is not None
        if not self._done.done():
            self._done.set_result(top)
