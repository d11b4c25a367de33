"""Where a node listens for its own mailbox: the replicas of the day's mailbox key, a
listen granted there (renewed half-way through), the next day's mailbox subscribed just
before midnight, and newcomers closer to the mailbox than a replica we listen at.

    subscription = Subscription(dht, mailboxes, wall, tasks.spawn, listen_replicas=10, ...)
    fresh = await subscription.subscribe_once()   # a lookup, then listen at the closest
    tasks.spawn(subscription.renew())              # the renewal loop
    subscription.at_newcomer(peer)                 # a new routing contact near the mailbox
    subscription.poll_due(last_poll, now)          # is a polling fetch due?

Node (mesh/node.py) decides when to catch up; this part only knows the mailbox.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from mesh import envelope, keyring
from mesh.dht.routing import Peer
from mesh.dht.server import PUSHERS, DhtServer
from mesh.envelope import OwnerOp
from mesh.errors import MeshError
from mesh.mailboxes import Mailboxes

RENEW_AT = 0.5  # renew a listen subscription this far into the grant
MOVED_SHARE = 2  # our mailbox's replicas moved if half of them are new to us


class Subscription:
    def __init__(
        self,
        dht: DhtServer,
        mailboxes: Mailboxes,
        wall: Callable[[], float],
        spawn: Callable[[Coroutine[Any, Any, Any]], object],
        *,
        listen_replicas: int,
        epoch_seconds: int,
        poll_intervals: tuple[float, float],  # (while a listen is live, while none is)
    ) -> None:
        self.dht = dht
        self.mailboxes = mailboxes
        self.wall = wall
        self._spawn = spawn
        self.listen_replicas = listen_replicas
        self.epoch_seconds = epoch_seconds
        self.poll_intervals = poll_intervals
        self.table_at_lookup = 0  # routing table size at our last lookup of our replicas
        self.listen_epoch = mailboxes.epoch(wall())  # the epoch of `replicas`
        self.next_listened = -1  # the next epoch we subscribed to ahead of midnight
        self.mailbox_long = int.from_bytes(mailboxes.own_key(self.listen_epoch), "big")
        self.replicas: list[Peer] = []  # where the last subscription went
        self.subscribed_at = -1e9
        self.live_until = -1e9  # loop time until which a replica granted our listen
        self._listed: set[bytes] = set()  # the keys own_keys_now put in own_keys
        # Records for our own mailbox that reach us as a replica, even before we have
        # subscribed anywhere, are ours to open at once.
        self.own_keys_now()

    def at_newcomer(self, contact: Peer) -> None:
        """A new contact closer to our mailbox than a replica we listen at is a new
        replica (or an old one that returned and forgot us): subscribe there alone."""
        replicas = self.replicas
        if not replicas:
            return
        key = self.mailbox_long
        full = len(replicas) >= self.dht.config.ksize
        if full and (contact.long_id ^ key) >= (replicas[-1].long_id ^ key):
            return  # the common case: a contact far from our mailbox
        if any(c.id == contact.id for c in replicas):
            return
        wanted = self.listen_replicas
        closer = len(replicas) < wanted or (contact.long_id ^ key) < (
            replicas[wanted - 1].long_id ^ key
        )
        replicas.append(contact)
        replicas.sort(key=lambda c: c.long_id ^ key)
        del replicas[self.dht.config.ksize :]
        if closer:
            self._spawn(self.subscribe_once([contact]))

    def listen_request(self, epoch: int) -> Callable[[int], envelope.OwnerRequest]:
        signer = self.mailboxes.own_signer(epoch)

        def make(duration: int) -> envelope.OwnerRequest:
            payload = envelope.listen_payload(duration)
            return envelope.sign_owner_request(signer, OwnerOp.LISTEN, payload, self.wall())

        return make

    def own_keys_now(self) -> None:
        """Our keys of the epochs around now are the ones replicas may push (or hand us
        as a replica); older ones are dropped, so the set stays small."""
        wanted = {key for _e, key in self.mailboxes.own_epochs(self.wall())}
        own = self.dht.own_keys
        own.difference_update(self._listed - wanted)  # only ours: groups keep theirs
        own.update(wanted)
        self._listed = wanted

    async def subscribe_once(
        self, targets: list[Peer] | None = None, only_if_moved: bool = False
    ) -> int:
        """Subscribe at the replicas of our mailbox (found by a lookup), or at `targets`.

        With `only_if_moved`, the lookup decides: if the replicas moved, subscribe at all
        of them (a renewal); if not, only at the few new ones. Returns how many replicas
        are new since the last lookup (all of them the first time): any of them may hold
        records we never fetched.
        """
        epoch = self.mailboxes.epoch(self.wall())
        if epoch != self.listen_epoch and targets is not None:
            return 0  # a newcomer of yesterday's replicas; today's lookup is on its way
        if epoch != self.listen_epoch:  # a new day: a new mailbox, new replicas
            self.listen_epoch = epoch
            self.replicas = []
            self.own_keys_now()
        key = self.mailboxes.own_key(epoch)
        self.mailbox_long = int.from_bytes(key, "big")
        fresh: list[Peer] = []
        with contextlib.suppress(MeshError):
            if targets is None:
                self.table_at_lookup = len(self.dht.table)
                found = await self.dht.lookup(key)
                found.sort(key=lambda c: c.long_id ^ self.mailbox_long)  # closest first
                known = {c.id for c in self.replicas}
                fresh = [c for c in found if c.id not in known]
                moved = len(fresh) >= max(1, len(found) // MOVED_SHARE) or not known
                self.replicas = list(found)
                closest = found[: self.listen_replicas]
                if only_if_moved and not moved:
                    targets = [c for c in closest if c.id not in known]
                else:
                    self.subscribed_at = asyncio.get_running_loop().time()
                    targets = closest
            if targets:
                eager = {c.id for c in self.replicas[:PUSHERS]}  # closest first
                request = self.listen_request(epoch)
                granted = await self.dht.subscribe(key, request, targets, eager)
                if granted:
                    now = asyncio.get_running_loop().time()
                    self.live_until = now + self.dht.config.listen_duration
        return len(fresh)

    async def renew(self) -> None:
        """Renew half-way through the grant (a lost renewal gets a second chance before
        the grant runs out); a catch-up round's subscription counts as a renewal."""
        loop = asyncio.get_running_loop()
        while True:
            renew_at = self.subscribed_at + self.dht.config.listen_duration * RENEW_AT
            if loop.time() >= renew_at or self.mailboxes.epoch(self.wall()) != self.listen_epoch:
                await self.subscribe_once()
                continue
            ahead = await self.listen_ahead()
            await asyncio.sleep(max(0.0, min(renew_at - loop.time(), ahead)))

    async def listen_ahead(self) -> float:
        """In the last `OVERLAP` of an epoch, subscribe to the next epoch's mailbox too
        (once: senders with a clock ahead of ours use it already). Returns the seconds
        until this matters next (the start of that window, or the next epoch)."""
        length = self.epoch_seconds
        overlap = min(keyring.OVERLAP, length / 4)
        now = self.wall()
        current = self.mailboxes.epoch(now)
        window = (current + 1) * length - overlap
        if now < window:
            return window - now
        if self.next_listened != current + 1:
            self.next_listened = current + 1
            key = self.mailboxes.own_key(current + 1)
            self.dht.own_keys.add(key)
            self._listed.add(key)
            with contextlib.suppress(MeshError):
                await self.dht.subscribe(key, self.listen_request(current + 1))
        return max(0.0, (current + 1) * length - self.wall()) + 0.001

    def poll_due(self, last_poll: float, now: float) -> bool:
        """Is a polling fetch due? Rarely while a listen is live, often when none is."""
        live = now < self.live_until
        interval = self.poll_intervals[0] if live else self.poll_intervals[1]
        return now >= last_poll + interval
