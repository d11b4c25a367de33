"""Message requests: how a stranger who knows only an ID can ask (issue 15).

Off by default. A person who turns requests on publishes, every day, a **door**: a record
at a key computable from the ID, signed by the day's blinded identity key, saying the
stamp cost they ask. A stranger reads the door, seals a request (their bundle and a short
text, a message of kind "request" sealed to the identity key) and stores it on the day's
**requests mailbox** with a stamp (mesh.stamps) bound to that record and that mailbox.
The owner checks the stamp before anything else, then opens it; a request is kept apart
(`Store.requests`): never shown as a message, never notified, never acknowledged, until
the owner accepts it (the stranger becomes a contact: their bundle completes the
agreement) or blocks them. With requests off, nothing of this is fetched, published,
opened or answered: the owner's node never touches a key computable from its ID.

    requests = Requests(identity, store, dht, agreements, outbox, wall, counters, cost)
    await requests.send(peer_id, text)     # a stranger's side (a one-way add, plus this)
    await requests.open_door()             # once a day while requests are on
    await requests.check()                 # fetch, vet, keep, delete
    await requests.accept(peer_id) / requests.block(peer_id) / requests.delete(peer_id)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable

import msgpack  # type: ignore[import-untyped, unused-ignore]

from mesh import crypto, envelope, keyring, stamps
from mesh.agreements import Agreements
from mesh.dht.server import DhtServer
from mesh.envelope import MAX_TTL, MessageKind, OwnerOp, Record
from mesh.errors import (
    LocalError,
    MalformedError,
    MeshError,
    NoRequestsError,
    RemoteProtocolError,
)
from mesh.identity import Identity, PublicIdentity, mailbox_key_for
from mesh.mailboxes import Mailboxes
from mesh.outbox import Outbox
from mesh.store import MessageStatus, Request, Store

REQUESTS_SETTING = "requests"  # "on" or absent
DOOR_EPOCH = "door_epoch"  # the last day our door was published
REQUEST_TTL = 3 * 24 * 3600  # a request not picked up in three days is moot
_DOOR_LABEL = b"mesh/door/v1"
_DOOR_SEAL_LABEL = b"mesh/door-seal/v1"
_DOOR_SIGN = b"mesh/door/v1\x00"
_DOOR_PLAIN = 264  # 24 + 264 + 16 = 304 bytes: the smallest record size (256 + 48)


def door_key(verify_key: bytes, epoch: int) -> bytes:
    """Where someone's door of day `epoch` is (computable from the ID)."""
    return mailbox_key_for(_DOOR_LABEL + keyring.requests_key(verify_key, epoch))


def seal_door(identity: Identity, epoch: int, cost: int) -> Record:
    """The door of day `epoch`: the stamp cost, signed by the day's requests signer, sealed
    with a key derived from the ID (replicas, who do not know whose door it is, read
    nothing)."""
    signer = keyring.requests_signer(identity.seed, identity.verify_key, epoch)
    fields = msgpack.packb([1, cost, epoch], use_bin_type=True)
    plain = msgpack.packb([fields, signer.sign(_DOOR_SIGN + fields)], use_bin_type=True)
    plain += bytes(_DOOR_PLAIN - len(plain))
    key = crypto.derive_key(identity.verify_key, _DOOR_SEAL_LABEL)
    nonce = crypto.random_bytes(crypto.AEAD_NONCE_SIZE)
    where = door_key(identity.verify_key, epoch)
    ciphertext = nonce + crypto.aead_encrypt(key, nonce, plain, where)
    expires = (epoch + 2) * keyring.EPOCH_SECONDS
    return Record(envelope.record_id_for(ciphertext), expires, ciphertext)


def open_door(verify_key: bytes, epoch: int, record: Record) -> int:
    """The stamp cost a door asks; MalformedError unless it is that person's door."""
    data = record.ciphertext
    key = crypto.derive_key(verify_key, _DOOR_SEAL_LABEL)
    where = door_key(verify_key, epoch)
    nonce = data[: crypto.AEAD_NONCE_SIZE]
    plain = crypto.aead_decrypt(key, nonce, data[crypto.AEAD_NONCE_SIZE :], where)
    if plain is None:
        raise MalformedError("door: does not open")
    try:
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(plain)
        fields, signature = next(unpacker)
        version, cost, day = msgpack.unpackb(fields, raw=False)
    except (ValueError, TypeError, StopIteration, msgpack.UnpackException):
        raise MalformedError("door: damaged") from None
    if type(fields) is not bytes or type(signature) is not bytes:
        raise MalformedError("door: damaged")
    blinded = crypto.blind_public(verify_key, keyring.requests_factor(verify_key, epoch))
    crypto.verify(blinded, _DOOR_SIGN + fields, signature)
    if version != 1 or day != epoch or type(cost) is not int or not 0 <= cost <= stamps.MAX_COST:
        raise MalformedError("door: not for this day")
    return cost


class Requests:
    __slots__ = (
        "agreements",
        "cost",
        "counters",
        "dht",
        "identity",
        "mailboxes",
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
        agreements: Agreements,
        outbox: Outbox,
        wall: Callable[[], float],
        counters: dict[str, int],
        cost: int = stamps.DEFAULT_COST,
    ) -> None:
        self.identity = identity
        self.store = store
        self.dht = dht
        self.mailboxes = mailboxes
        self.agreements = agreements
        self.outbox = outbox
        self.wall = wall
        self.counters = counters
        self.cost = max(cost, stamps.MIN_REPLICA_COST)  # replicas refuse less
        for name in ("requests_kept", "requests_refused", "requests_sent"):
            counters.setdefault(name, 0)

    @property
    def on(self) -> bool:
        return self.store.get_setting(REQUESTS_SETTING) == "on"

    def set_on(self, on: bool) -> None:
        if on:
            self.store.set_setting(REQUESTS_SETTING, "on")
        else:
            self.store.delete_setting(REQUESTS_SETTING)
            self.store.delete_setting(DOOR_EPOCH)

    def _day(self) -> int:
        return keyring.epoch_of(self.wall(), keyring.EPOCH_SECONDS)

    # -- a stranger's side ----------------------------------------------------------------

    async def send(self, peer_id: str, text: str) -> int:
        """Ask `peer_id` (who has not added us) to become a contact: read their door,
        mint a stamp at their price, store the request. Returns the replicas that took it;
        NoRequestsError if they publish no door (requests off)."""
        them = PublicIdentity.from_id(peer_id)
        self.agreements.add(them.id)  # a one-way add: their acceptance completes it
        day = self._day()
        cost = await self._their_cost(them.verify_key, day)
        now = self.wall()
        body = envelope.request_body(self.mailboxes.bundle(now, reply=False), text)
        _message, sealed = envelope.seal_message(
            self.identity, them, MessageKind.REQUEST, body, now, REQUEST_TTL
        )
        key = keyring.requests_key(them.verify_key, day)
        stamp = await asyncio.to_thread(stamps.mint, key, sealed.id, cost)
        record = Record(sealed.id, sealed.expires_at, sealed.ciphertext, stamp)
        self.store.outbox_add(sealed.id, key, record.pack(), now)  # durable first
        replicas = await self.outbox.deliver(sealed.id, key, record)
        self.store.keys.agreement_bundle_sent(them.id, self.mailboxes.newest_prekey())
        self.counters["requests_sent"] += 1
        return replicas

    async def _their_cost(self, verify_key: bytes, day: int) -> int:
        for record in await self.dht.fetch(door_key(verify_key, day)):
            with contextlib.suppress(RemoteProtocolError):
                return open_door(verify_key, day, record)
        raise NoRequestsError(
            "they do not accept requests from people they have not added: ask them to "
            "add you (`mesh contacts add`), or to turn requests on"
        )

    # -- the owner's side -----------------------------------------------------------------

    async def open_door(self) -> bool:
        """Publish today's door if it is not yet; True if it was published now."""
        day = self._day()
        if not self.on or self.store.get_setting(DOOR_EPOCH) == str(day):
            return False
        record = seal_door(self.identity, day, self.cost)
        await self.dht.put(door_key(self.identity.verify_key, day), [record])
        self.store.set_setting(DOOR_EPOCH, str(day))
        return True

    async def check(self) -> int:
        """Fetch the requests mailboxes of today and yesterday; keep the good requests,
        delete everything fetched. Returns how many requests were kept."""
        if not self.on:
            return 0
        kept = 0
        day = self._day()
        for epoch in (day - 1, day):
            signer = keyring.requests_signer(self.identity.seed, self.identity.verify_key, epoch)
            with contextlib.suppress(MeshError):
                records = await self.dht.fetch(signer.mailbox_key)
                done = []
                for record in records:
                    done.append(record.id)
                    if await self._vet(signer.mailbox_key, record):
                        kept += 1
                for start in range(0, len(done), envelope.MAX_DELETE_IDS):
                    batch = done[start : start + envelope.MAX_DELETE_IDS]
                    request = envelope.sign_owner_request(
                        signer, OwnerOp.DELETE, envelope.delete_payload(batch), self.wall()
                    )
                    await self.dht.delete(request)
        return kept

    async def _vet(self, key: bytes, record: Record) -> bool:
        """Stamp first (cheap to refuse), then open; True if a request was kept."""
        self.dht.client.unrepairable.put(record.id, None)  # never spread what we drop
        try:
            stamps.verify(key, record.id, record.stamp, self.cost)
            message = envelope.open_record(self.identity, record, self.wall())
            if message.kind != MessageKind.REQUEST:
                raise MalformedError("not a request")
            bundle, text = envelope.parse_request_body(message.body)
        except RemoteProtocolError:
            self.counters["requests_refused"] += 1
            return False
        sender = message.sender
        if sender == self.identity.id or self.store.strangers.is_blocked(sender):
            return False
        agreement = self.store.keys.agreement(sender)
        if agreement is not None:  # we added them too: that is an acceptance
            if not agreement.ready:
                await self._take_bundle(sender, bundle)
            return False
        request = Request(sender, message.id, text, bundle, message.sent_at, self.wall())
        if self.store.strangers.request_put(request):
            self.counters["requests_kept"] += 1
            return True
        return False

    async def _take_bundle(self, peer_id: str, bundle: bytes) -> None:
        """Their bundle completes the agreement; ours goes to their mailbox."""
        parsed = keyring.parse_bundle(bundle)
        ready = self.store.keys.agreement_keys(
            peer_id,
            parsed.root_public,
            parsed.epoch_length,
            parsed.first_epoch,
            parsed.prekeys,
            self.wall(),
        )
        body = self.mailboxes.bundle(self.wall(), reply=False)
        self.store.keys.agreement_bundle_sent(peer_id, self.mailboxes.newest_prekey())
        await self.outbox.send_to_contact(peer_id, MessageKind.KEYS, body, MAX_TTL)
        if ready:
            with contextlib.suppress(MeshError):
                await self.outbox.flush(peer_id)

    def pending(self) -> list[Request]:
        return self.store.strangers.requests()

    async def accept(self, peer_id: str) -> Request:
        """Make the requester a contact: their text joins the inbox as their first message."""
        request = accept_in_store(self.store, self.identity, peer_id, self.wall())
        with contextlib.suppress(MeshError):
            await self.outbox.flush(request.peer_id)
        return request

    def block(self, peer_id: str) -> None:
        """Block an ID (a requester or a contact): their records are dropped, no receipts."""
        self.store.strangers.block(PublicIdentity.from_id(peer_id).id, self.wall())

    def delete(self, peer_id: str) -> None:
        self._get(peer_id)
        self.store.strangers.request_remove(peer_id)

    def _get(self, peer_id: str) -> Request:
        request = self.store.strangers.request_get(PublicIdentity.from_id(peer_id).id)
        if request is None:
            raise LocalError("no request from this ID: `mesh requests` lists them")
        return request


def request_id_hint(peer_id: str) -> str:
    """A short, stable label for a requester in lists (not a name: they chose none)."""
    return hashlib.blake2b(peer_id.encode(), digest_size=4).hexdigest()


def accept_in_store(store: Store, identity: Identity, peer_id: str, now: float) -> Request:
    """Accept a request with the store alone (the CLI without a daemon): their bundle
    completes the agreement, ours is queued for their mailbox (sealed and sent by the
    next node), their text becomes their first message. LocalError if there is none."""
    request = store.strangers.request_get(PublicIdentity.from_id(peer_id).id)
    if request is None:
        raise LocalError("no request from this ID: `mesh requests` lists them")
    bundle = keyring.parse_bundle(request.bundle)
    store.keys.agreement_add(request.peer_id, now)
    store.keys.agreement_keys(
        request.peer_id,
        bundle.root_public,
        bundle.epoch_length,
        bundle.first_epoch,
        bundle.prekeys,
        now,
    )
    boxes = Mailboxes(identity, store)
    ours = boxes.bundle(now, reply=False)
    mid = crypto.random_bytes(envelope.MESSAGE_ID_SIZE)
    store.outbox_for_contact(mid, request.peer_id, MessageKind.KEYS, ours, MAX_TTL, now, None)
    store.keys.agreement_bundle_sent(request.peer_id, boxes.newest_prekey())
    store.add_message(
        request.msg_id,
        "in",
        request.peer_id,
        MessageKind.TEXT,
        request.text,
        request.sent_at,
        request.sent_at + envelope.DEFAULT_TTL,
        MessageStatus.RECEIVED,
        received_at=request.received_at,
    )
    store.strangers.request_remove(request.peer_id)
    return request
