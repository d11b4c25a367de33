"""What a node sends on its own: its outbox, receipts, and deletes of what it has read.

    outbox = Outbox(mailboxes, store, dht, wall, delete_delay, counters, on_status)
    replicas = await outbox.deliver(message_id, mailbox_key, record)
    await outbox.flush()             # retry every queued record (messages and receipts)
    await outbox.flush(peer_id)      # only what waits for one contact (their keys came)
    outbox.acknowledge(message)      # a receipt for a text message we received
    outbox.receipt_arrived(message)  # their receipt: our messages are "delivered"
    outbox.read(record_id, key)      # delete a record we have opened, batched per key
    await outbox.finish(grace)       # at stop: receipts and deletes still in flight
    await outbox.close()

Everything it sends is durable first: a message or a receipt is in the store's outbox
before any network I/O, and leaves it once a replica took it. An item for a contact is
sealed for the contact's mailbox of the day (mesh.mailboxes) when it is delivered: one
queued over midnight goes to the new day's mailbox, sealed to the new day's prekey; one
for a contact whose keys have not arrived yet waits for them. Receipts and deletes run as
tasks of its own `TaskSet`, which `finish` waits for (bounded) when the node stops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from mesh import crypto, envelope
from mesh.dht.server import DhtServer
from mesh.envelope import DEFAULT_TTL, Message, MessageKind, OwnerOp, Record
from mesh.errors import MeshError, UnreachableError
from mesh.mailboxes import Mailboxes
from mesh.store import MessageStatus, OutboxItem, Store
from mesh.store_groups import GROUP_PEER_PREFIX
from mesh.tasks import TaskSet

OnStatus = Callable[[bytes, MessageStatus, "int | None"], None]
DELETE_BATCH = 256  # record ids per delete request (envelope.MAX_DELETE_IDS)
RECEIPT_BATCH = 0.05  # seconds a receipt waits for more messages of the same sender


class Outbox:
    __slots__ = (
        "_delete_scheduled",
        "_to_acknowledge",
        "_to_delete",
        "counters",
        "delete_delay",
        "dht",
        "mailboxes",
        "on_status",
        "readdress",
        "store",
        "tasks",
        "wall",
    )

    def __init__(
        self,
        mailboxes: Mailboxes,
        store: Store,
        dht: DhtServer,
        wall: Callable[[], float],
        delete_delay: float,
        counters: dict[str, int],
        on_status: OnStatus,
    ) -> None:
        self.mailboxes = mailboxes
        self.store = store
        self.dht = dht
        self.wall = wall
        self.delete_delay = delete_delay
        self.counters = counters
        self.on_status = on_status
        self.tasks = TaskSet()
        self._to_delete: dict[bytes, list[bytes]] = {}
        self._to_acknowledge: dict[str, list[bytes]] = {}
        self._delete_scheduled = False
        # Set by the node's groups: where a queued group record goes now (or None).
        self.readdress: Callable[[OutboxItem], tuple[bytes, Record] | None] | None = None

    async def finish(self, grace: float) -> None:
        """Wait up to `grace` seconds for the receipts and deletes in flight."""
        await self.tasks.wait(grace)

    async def close(self) -> None:
        await self.tasks.close()

    # -- sending --------------------------------------------------------------------------

    async def deliver(self, message_id: bytes, mailbox_key: bytes, record: Record) -> int:
        """Store a queued record on its mailbox's replicas; it then leaves the outbox."""
        self.store.outbox_mark_attempt(message_id, self.wall())
        replicas = await self.dht.put(mailbox_key, [record])
        stored = MessageStatus.STORED
        if self.store.set_message_status(message_id, "out", stored, replicas=replicas):
            self.on_status(message_id, stored, replicas)
        else:  # the receipt came first, or it is a receipt we send (no message row)
            self.store.set_message_replicas(message_id, "out", replicas)
        self.store.outbox_remove(message_id)
        return replicas

    async def flush(self, peer_id: str | None = None) -> int:
        """Try every queued record again (or those for `peer_id`); returns how many
        were stored."""
        stored = 0
        for item in self.store.outbox_pending():
            if peer_id is not None and item.peer_id != peer_id:
                continue
            try:
                ready = self._ready(item)
            except MeshError:
                self.store.outbox_remove(item.msg_id)
                continue
            if ready is None:
                continue  # waits for the contact's keys
            key, record = ready
            try:
                await self.deliver(item.msg_id, key, record)
                stored += 1
            except UnreachableError:
                continue  # this mailbox's replicas are out of reach; others may not be
        return stored

    def _ready(self, item: OutboxItem) -> tuple[bytes, Record] | None:
        """(key, record) to store now: sealed again for a contact's epoch if needed;
        None if it waits for the contact's keys; the item is failed if it expired."""
        now = self.wall()
        group = item.peer_id is not None and item.peer_id.startswith(GROUP_PEER_PREFIX)
        if item.peer_id is None or group:
            record = Record.unpack(item.record)
            expired = record.expires_at <= now
        else:
            expired = item.created_at + (item.ttl or 0) <= now
        if expired:
            self.store.set_message_status(item.msg_id, "out", MessageStatus.FAILED)
            self.store.outbox_remove(item.msg_id)
            return None
        if item.peer_id is None:
            return item.mailbox_key, record
        if group:  # a group mailbox's record: to the mailbox of today (mesh.group_base)
            if self.readdress is None:
                return item.mailbox_key, record
            found = self.readdress(item)
            if found is None:  # we are no longer in that group
                self.store.set_message_status(item.msg_id, "out", MessageStatus.FAILED)
                self.store.outbox_remove(item.msg_id)
            return found
        address = self.mailboxes.address(item.peer_id, now)
        if address is None:
            return None
        if item.record and item.epoch == address.epoch:
            return item.mailbox_key, Record.unpack(item.record)
        if item.kind is None or item.body is None or item.ttl is None:
            raise ValueError("outbox item without what it seals")
        sealed = self.mailboxes.seal_for(
            item.peer_id,
            MessageKind(item.kind),
            item.body,
            now,
            item.ttl,
            item.msg_id,
            item.created_at,
        )
        if sealed is None:
            return None
        _message, record, address = sealed
        self.store.outbox_resealed(item.msg_id, address.key, record.pack(), address.epoch)
        return address.key, record

    # -- receipts ---------------------------------------------------------------------------

    def acknowledge(self, message: Message) -> None:
        """Send the sender a receipt for `message`, in the background, batched: the
        messages of one sender that arrive within RECEIPT_BATCH seconds (a fetch after
        an absence) share one receipt of up to 64 ids."""
        waiting = self._to_acknowledge.setdefault(message.sender, [])
        waiting.append(message.id)
        if len(waiting) == 1:
            self.tasks.spawn(self._send_receipts(message.sender))

    async def _send_receipts(self, peer_id: str) -> None:
        await asyncio.sleep(RECEIPT_BATCH)
        ids = self._to_acknowledge.pop(peer_id, [])
        for start in range(0, len(ids), envelope.MAX_RECEIPT_IDS):
            body = envelope.receipt_body(ids[start : start + envelope.MAX_RECEIPT_IDS])
            await self.send_to_contact(peer_id, MessageKind.RECEIPT, body, DEFAULT_TTL)

    async def send_to_contact(self, peer_id: str, kind: MessageKind, body: bytes, ttl: int) -> None:
        """Queue something (not a text: a receipt, a bundle) for a contact and store it
        now if their keys are known. Durable like a message: what finds no replica now,
        or no keys yet, waits in the outbox."""
        now = self.wall()
        sealed = self.mailboxes.seal_for(peer_id, kind, body, now, ttl)
        if sealed is None:
            mid = crypto.random_bytes(envelope.MESSAGE_ID_SIZE)
            self.store.outbox_for_contact(mid, peer_id, kind, body, ttl, now, None)
            return
        message, record, address = sealed
        where = (address.key, record.pack(), address.epoch)
        self.store.outbox_for_contact(message.id, peer_id, kind, body, ttl, now, where)
        with contextlib.suppress(MeshError):
            await self.deliver(message.id, address.key, record)

    def receipt_arrived(self, message: Message) -> None:
        """A delivery receipt, or a read receipt (kind "read", sent only by contacts who
        opted in), from the recipient of some of our messages: move them forward."""
        read = message.kind == MessageKind.READ
        status = MessageStatus.READ if read else MessageStatus.DELIVERED
        with contextlib.suppress(MeshError):
            for message_id in envelope.parse_receipt_body(message.body):
                row = self.store.get_message(message_id, "out")
                if row is not None and row.peer_id == message.sender:
                    self.store.set_message_status(message_id, "out", status)
                    self.counters["receipts"] += 1
                    self.on_status(message_id, status, None)

    # -- deletes of what we have read ---------------------------------------------------------

    def read(self, record_id: bytes, key: bytes) -> None:
        """Delete a record of one of our mailboxes from its replicas soon (batched)."""
        self._to_delete.setdefault(key, []).append(record_id)
        if not self._delete_scheduled:
            self._delete_scheduled = True
            self.tasks.spawn(self._delete_later())

    async def _delete_later(self) -> None:
        await asyncio.sleep(self.delete_delay)
        self._delete_scheduled = False
        batches = []
        for key, ids in list(self._to_delete.items()):
            batches.append((key, ids[:DELETE_BATCH]))
            if len(ids) > DELETE_BATCH:
                self._to_delete[key] = ids[DELETE_BATCH:]
            else:
                del self._to_delete[key]
        if self._to_delete:
            self._delete_scheduled = True
            self.tasks.spawn(self._delete_later())
        for key, batch in batches:
            signer = self.mailboxes.signer_for(key)
            if signer is None:
                continue  # a key we no longer know (its epoch is long past)
            request = envelope.sign_owner_request(
                signer, OwnerOp.DELETE, envelope.delete_payload(batch), self.wall()
            )
            with contextlib.suppress(MeshError):
                await self.dht.delete(request)
