"""What a node sends on its own: its outbox, receipts, and deletes of what it has read.

    outbox = Outbox(identity, store, dht, wall, delete_delay, counters, on_status)
    replicas = await outbox.deliver(message_id, mailbox_key, record)
    await outbox.flush()             # retry every queued record (messages and receipts)
    outbox.acknowledge(message)      # a receipt for a text message we received
    outbox.receipt_arrived(message)  # their receipt: our messages are "delivered"
    outbox.read(record_id)           # delete a record we have opened, batched
    await outbox.finish(grace)       # at stop: receipts and deletes still in flight
    await outbox.close()

Everything it sends is durable first: a message or a receipt is in the store's outbox
before any network I/O, and leaves it once a replica took it. Receipts and deletes run as
tasks of its own `TaskSet`, which `finish` waits for (bounded) when the node stops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from mesh import envelope
from mesh.dht.server import DhtServer
from mesh.envelope import DEFAULT_TTL, Message, MessageKind, OwnerOp, Record
from mesh.errors import MeshError, UnreachableError
from mesh.identity import Identity, PublicIdentity
from mesh.store import MessageStatus, Store
from mesh.tasks import TaskSet

OnStatus = Callable[[bytes, MessageStatus, "int | None"], None]
DELETE_BATCH = 256  # record ids per delete request (envelope.MAX_DELETE_IDS)


class Outbox:
    __slots__ = (
        "_delete_scheduled",
        "_to_delete",
        "counters",
        "delete_delay",
        "dht",
        "identity",
        "on_status",
        "store",
        "tasks",
        "wall",
    )

    def __init__(
        self,
        identity: Identity,
        store: Store,
        dht: DhtServer,
        wall: Callable[[], float],
        delete_delay: float,
        counters: dict[str, int],
        on_status: OnStatus,
    ) -> None:
        self.identity = identity
        self.store = store
        self.dht = dht
        self.wall = wall
        self.delete_delay = delete_delay
        self.counters = counters
        self.on_status = on_status
        self.tasks = TaskSet()
        self._to_delete: list[bytes] = []
        self._delete_scheduled = False

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

    async def flush(self) -> int:
        """Try every queued record again; returns how many were stored."""
        stored = 0
        for item in self.store.outbox_pending():
            try:
                record = Record.unpack(item.record)
            except MeshError:
                self.store.outbox_remove(item.msg_id)
                continue
            if record.expires_at <= self.wall():
                self.store.set_message_status(item.msg_id, "out", MessageStatus.FAILED)
                self.store.outbox_remove(item.msg_id)
                continue
            try:
                await self.deliver(item.msg_id, item.mailbox_key, record)
                stored += 1
            except UnreachableError:
                continue  # this mailbox's replicas are out of reach; others may not be
        return stored

    # -- receipts ---------------------------------------------------------------------------

    def acknowledge(self, message: Message) -> None:
        """Send the sender a receipt for `message`, in the background."""
        self.tasks.spawn(self._send_receipt(message))

    async def _send_receipt(self, message: Message) -> None:
        recipient = PublicIdentity.from_id(message.sender)
        receipt, record = envelope.seal_message(
            self.identity,
            recipient,
            MessageKind.RECEIPT,
            envelope.receipt_body([message.id]),
            self.wall(),
            DEFAULT_TTL,
        )
        # Durable like a message: a receipt that finds no replica now waits in the outbox.
        self.store.outbox_add(receipt.id, recipient.mailbox_key, record.pack(), self.wall())
        with contextlib.suppress(MeshError):
            await self.deliver(receipt.id, recipient.mailbox_key, record)

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

    def read(self, record_id: bytes) -> None:
        """Delete a record of our mailbox from its replicas soon (batched)."""
        self._to_delete.append(record_id)
        if not self._delete_scheduled:
            self._delete_scheduled = True
            self.tasks.spawn(self._delete_later())

    async def _delete_later(self) -> None:
        await asyncio.sleep(self.delete_delay)
        self._delete_scheduled = False
        batch = self._to_delete[:DELETE_BATCH]
        self._to_delete = self._to_delete[DELETE_BATCH:]
        if self._to_delete:
            self._delete_scheduled = True
            self.tasks.spawn(self._delete_later())
        request = envelope.sign_owner_request(
            self.identity, OwnerOp.DELETE, envelope.delete_payload(batch), self.wall()
        )
        with contextlib.suppress(MeshError):
            await self.dht.delete(request)
