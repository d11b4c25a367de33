"""Key agreement with contacts: both sides add each other, then bundles cross.

    agreements = Agreements(identity, store, dht, mailboxes, outbox, wall, counters)
    await agreements.start(peer_id)     # we added them: look for their bundle, else post ours
    await agreements.check_pending()    # every catch-up round: the intros of pending ones
    await agreements.on_keys(message)   # a "keys" message reached one of our mailboxes
    await agreements.refresh(now)       # new prekeys made: send contacts a fresh bundle

As in Briar, a contact is mutual: Alice's add posts her bundle (her mailbox root and
prekeys, sealed to Bob's identity key) on the introduction mailbox only she and Bob can
compute (crypto_kx of their identity keys, mesh.keyring). Bob's add finds it there, makes
the agreement ready on his side, and sends his own bundle to Alice's mailbox of the day;
hers becomes ready when it arrives. Whoever adds first waits; their messages are queued
(docs/protocol.md, "Contacts and mailboxes"). A bundle from an ID we have not added is
dropped unopened-as-a-message: strangers are the requests feature's job.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from mesh import envelope
from mesh.dht.server import DhtServer
from mesh.envelope import MAX_TTL, Message, MessageKind, OwnerOp
from mesh.errors import MeshError, RemoteProtocolError
from mesh.identity import Identity
from mesh.keyring import parse_bundle
from mesh.mailboxes import Mailboxes
from mesh.outbox import Outbox
from mesh.store import Store

PENDING_INTERVAL = 300.0  # look at pending introductions at most this often (seconds)


class Agreements:
    __slots__ = (
        "_checked_at",
        "counters",
        "dht",
        "identity",
        "mailboxes",
        "on_ready",
        "outbox",
        "store",
        "wall",
    )

    def __init__(
        self,
        identity: Identity,
        store: Store,
        dht: DhtServer,
        mailboxes: Mailboxes,
        outbox: Outbox,
        wall: Callable[[], float],
        counters: dict[str, int],
    ) -> None:
        self.identity = identity
        self.store = store
        self.dht = dht
        self.mailboxes = mailboxes
        self.outbox = outbox
        self.wall = wall
        self.counters = counters
        self.on_ready: Callable[[str], None] | None = None
        self._checked_at = -1e18
        for name in ("agreements_ready", "keys_received", "keys_dropped"):
            counters.setdefault(name, 0)

    def add(self, peer_id: str) -> bool:
        """Note that we added `peer_id` (durable); True if the agreement is new."""
        if peer_id == self.identity.id:
            return False
        return self.store.keys.agreement_add(peer_id, self.wall())

    async def start(self, peer_id: str) -> bool:
        """Look for their bundle on our introduction mailbox; post ours there if it is
        not. True if the agreement is ready."""
        if peer_id == self.identity.id:
            return False
        self.add(peer_id)
        with contextlib.suppress(MeshError):
            if await self._check_intro(peer_id):
                return True
        agreement = self.store.keys.agreement(peer_id)
        if agreement is None or agreement.ready:
            return agreement is not None
        if agreement.bundle_sent is None:
            await self._post_intro(peer_id)
        return False

    async def _post_intro(self, peer_id: str) -> None:
        now = self.wall()
        message, record, key = self.mailboxes.seal_intro(peer_id, now)
        # Durable first, like a message: the outbox delivers it if no replica answers now.
        self.store.outbox_add(message.id, key, record.pack(), now)
        self.store.keys.agreement_bundle_sent(peer_id, self.mailboxes.newest_prekey())
        with contextlib.suppress(MeshError):
            await self.outbox.deliver(message.id, key, record)

    async def check_pending(self, force: bool = False) -> int:
        """Look at the introduction mailbox of every agreement still pending (posting our
        bundle there first if it never was), at most every PENDING_INTERVAL seconds unless
        `force`: someone who never adds us back must not cost a lookup per poll forever.
        Returns how many became ready."""
        now = self.wall()
        if not force and now < self._checked_at + PENDING_INTERVAL:
            return 0
        self._checked_at = now
        ready = 0
        for agreement in self.store.keys.agreements():
            if agreement.ready:
                continue
            with contextlib.suppress(MeshError):
                if await self.start(agreement.peer_id):
                    ready += 1
        return ready

    def pending(self) -> list[str]:
        return [a.peer_id for a in self.store.keys.agreements() if not a.ready]

    async def _check_intro(self, peer_id: str) -> bool:
        key = self.mailboxes.intro_key(peer_id)
        records = await self.dht.fetch(key)
        now = self.wall()
        found = []
        for record in records:
            try:
                message = envelope.open_record(self.identity, record, now)
            except RemoteProtocolError:
                self.counters["bad_records"] = self.counters.get("bad_records", 0) + 1
                continue
            if message.sender != peer_id or message.kind != MessageKind.KEYS:
                continue  # our own bundle, waiting for them
            found.append(record.id)
            await self.on_keys(message)
        if found:
            pair = self.mailboxes.intro(peer_id)
            request = envelope.sign_owner_request(
                pair, OwnerOp.DELETE, envelope.delete_payload(found), now
            )
            with contextlib.suppress(MeshError):
                await self.dht.delete(request)
        agreement = self.store.keys.agreement(peer_id)
        return agreement is not None and agreement.ready

    async def on_keys(self, message: Message) -> None:
        """A contact's bundle: save it; when the agreement becomes ready, deliver what
        waited; send ours back if they asked (they do not have it yet)."""
        peer_id = message.sender
        agreement = self.store.keys.agreement(peer_id)
        if agreement is None or peer_id == self.identity.id:
            self.counters["keys_dropped"] += 1  # a stranger (or ourselves): not a contact
            return
        try:
            bundle = parse_bundle(message.body)
        except RemoteProtocolError:
            self.counters["keys_dropped"] += 1
            return
        self.counters["keys_received"] += 1
        became_ready = self.store.keys.agreement_keys(
            peer_id,
            bundle.root_public,
            bundle.epoch_length,
            bundle.first_epoch,
            bundle.prekeys,
            self.wall(),
        )
        if bundle.reply:
            await self._send_bundle(peer_id, reply=False)
        if became_ready:
            self.counters["agreements_ready"] += 1
            if self.on_ready is not None:
                self.on_ready(peer_id)
            with contextlib.suppress(MeshError):
                await self.outbox.flush(peer_id)

    async def _send_bundle(self, peer_id: str, reply: bool) -> None:
        now = self.wall()
        body = self.mailboxes.bundle(now, reply)
        self.store.keys.agreement_bundle_sent(peer_id, self.mailboxes.newest_prekey())
        await self.outbox.send_to_contact(peer_id, MessageKind.KEYS, body, MAX_TTL)

    async def refresh(self, now: float) -> int:
        """Make prekeys up to the horizon; send a fresh bundle to every ready contact whose
        last one ends before our newest prekey. Returns how many were sent."""
        self.mailboxes.ensure_prekeys(now)
        newest = self.mailboxes.newest_prekey()
        sent = 0
        for agreement in self.store.keys.agreements():
            if agreement.ready and (agreement.bundle_sent or -1) < newest:
                with contextlib.suppress(MeshError):
                    await self._send_bundle(agreement.peer_id, reply=False)
                    sent += 1
        return sent
