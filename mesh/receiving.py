"""What reaches a node: records of its mailboxes (pushed, fetched, polled), opened,
checked, kept and acknowledged once each; and the catch-up fetch of every day's mailbox
since the last complete one.

    receiver = Receiver(identity, store, dht, mailboxes, outbox, agreements, requests, ...)
    receiver.accept(record, "push", key)      # -> the Message if it is new text
    await receiver.fetch_mailbox("poll")      # -> the messages this fetch accepted
    receiver.queue                            # what Node.messages() / fetch() hand out

A record is opened with the prekeys of its mailbox's day; junk is counted, deleted from
our mailbox and never repaired; a blocked sender's message is dropped unseen; keys go to
the agreements; receipts to the outbox; text is written to the store before anything
acknowledges it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

from mesh import envelope
from mesh.agreements import Agreements
from mesh.dht.server import DhtServer
from mesh.envelope import Message, Record
from mesh.errors import MeshError, RemoteProtocolError
from mesh.identity import Identity
from mesh.mailboxes import FETCHED_AT, LEGACY, Mailboxes
from mesh.outbox import Outbox
from mesh.requests import Requests
from mesh.store import MessageStatus, Store

SEEN_RECORDS_MAX = 4096


class Receiver:
    def __init__(
        self,
        identity: Identity,
        store: Store,
        dht: DhtServer,
        mailboxes: Mailboxes,
        outbox: Outbox,
        agreements: Agreements,
        requests: Requests,
        counters: dict[str, int],
        wall: Callable[[], float],
        spawn: Callable[[Coroutine[Any, Any, Any]], object],
        receipts: bool,
    ) -> None:
        self.identity = identity
        self.store = store
        self.dht = dht
        self.mailboxes = mailboxes
        self.outbox = outbox
        self.agreements = agreements
        self.requests = requests
        self.counters = counters
        self.wall = wall
        self._spawn = spawn
        self.receipts = receipts  # delivery receipts for what we receive (NodeOptions)
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        self.seen: OrderedDict[bytes, None] = OrderedDict()  # record ids, bounded
        # A part of a group invitation from a contact goes here (mesh.group_service).
        self.on_group: Callable[[Message], None] | None = None

    async def fetch_mailbox(self, via: str = "fetch") -> list[Message]:
        """Fetch the mailbox from the DHT; returns only the messages this call accepted
        (they are still yielded by `messages()` or returned by the next `fetch()`).
        `via` ("fetch" or "poll") is counted in `received_<via>` for each new message."""
        started = self.wall()
        since = self.store.get_setting(FETCHED_AT)
        epochs = self.mailboxes.catch_up_epochs(started, None if since is None else float(since))
        new = []
        complete = True
        for _epoch, key in epochs:
            try:
                records = await self.dht.fetch(key)
            except MeshError:
                complete = False
                continue
            for record in records:
                message = self.accept(record, via, key)
                if message is not None:
                    new.append(message)
        if complete:
            self.store.set_setting(FETCHED_AT, repr(started))
            self.mailboxes.forget_prekeys(started)
        with contextlib.suppress(MeshError):
            await self.agreements.check_pending()
        if self.requests.on:
            with contextlib.suppress(MeshError):
                await self.requests.open_door()
                await self.requests.check()
        if self.store.get_setting(LEGACY) is not None:
            new += await self.drain_legacy(via)
        return new

    async def drain_legacy(self, via: str) -> list[Message]:
        """Once after an upgrade: what was sent to the previous release's fixed mailbox."""
        key = self.mailboxes.legacy_key()
        records = await self.dht.fetch(key)
        self.store.delete_setting(LEGACY)
        return [m for r in records if (m := self.accept(r, via, key)) is not None]

    def inbox(self) -> list[Message]:
        rows = self.store.list_messages(direction="in")
        return [
            Message(
                r.msg_id,
                r.peer_id,
                self.identity.id,
                r.sent_at,
                int(r.expires_at - r.sent_at),
                r.kind,
                r.body,
            )
            for r in rows
        ]

    def accept(self, record: Record, via: str, key: bytes) -> Message | None:
        """Open, persist, acknowledge. Returns the message if it is new text."""
        if record.id in self.seen:
            return None
        self.seen[record.id] = None
        if len(self.seen) > SEEN_RECORDS_MAX:
            self.seen.popitem(last=False)
        now = self.wall()
        try:
            prekeys = self.mailboxes.prekeys_for(key)
            message = envelope.open_record(self.identity, record, now, prekeys)
        except RemoteProtocolError:
            # Junk (or a record for a prekey long deleted): deleted from our mailbox,
            # and never repaired onto replicas that lack it.
            self.counters["bad_records"] += 1
            self.dht.client.unrepairable.put(record.id, None)
            self.outbox.read(record.id, key)
            return None
        self.outbox.read(record.id, key)
        if self.store.strangers.is_blocked(message.sender):
            self.counters["blocked_dropped"] += 1  # nothing kept, shown or acknowledged
            return None
        self.store.note_heard(message.sender, now)
        if message.kind == envelope.MessageKind.KEYS:
            self._spawn(self.agreements.on_keys(message))
            return None
        if message.kind in envelope.ACKNOWLEDGING:
            self.outbox.receipt_arrived(message)
            return None
        if message.kind == envelope.MessageKind.GROUP:
            if self.on_group is not None:
                self.on_group(message)
            return None
        is_new = self.store.add_message(
            message.id,
            "in",
            message.sender,
            message.kind,
            message.body,
            message.sent_at,
            message.sent_at + message.ttl,
            MessageStatus.RECEIVED,
            received_at=now,
        )
        if not is_new:
            return None
        self.counters["received"] += 1
        self.counters[f"received_{via}"] += 1
        self.queue.put_nowait(message)
        if self.receipts and message.sender != self.identity.id and self.wants_receipt(message):
            self.outbox.acknowledge(message)
        return message

    def wants_receipt(self, message: Message) -> bool:
        """Receipts go to contacts only (their agreement is complete) who did not have
        them turned off (`mesh contacts receipts NAME off`)."""
        agreement = self.store.keys.agreement(message.sender)
        return (
            agreement is not None and agreement.ready and self.store.receipts_wanted(message.sender)
        )
