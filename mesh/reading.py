"""Reading: mark received messages read, and tell contacts who asked for it.

A read receipt is a message of kind "read" whose body lists the message ids read, like a
delivery receipt. It goes only to a contact whose `read_receipts` flag is on (`mesh
contacts receipts NAME on`): the default is off, since "they read it at 21:04" tells the
sender more than "their computer has it". It goes through the outbox like any message:
durable, sent now by a running node, else by the next node on this home. Peers of an
older release drop it as an unknown kind and keep running (docs/protocol.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from mesh import crypto, envelope
from mesh.identity import Identity
from mesh.store import Store

READ_RECEIPT_TTL = 24 * 3600  # a read receipt not picked up within a day is moot


def wants_read_receipts(store: Store, peer_id: str) -> bool:
    """True if a contact saved under this ID has read receipts turned on."""
    return any(c.read_receipts for c in store.list_contacts() if c.peer_id == peer_id)


def queue_read_receipts(
    store: Store, identity: Identity, peer_id: str, ids: Sequence[bytes], now: float
) -> int:
    """Seal read receipts for `ids` to `peer_id` into the outbox if that contact opted in;
    returns how many receipts were queued (0 if none are wanted)."""
    if not ids or not wants_read_receipts(store, peer_id):
        return 0
    step = envelope.MAX_RECEIPT_IDS
    batches = [list(ids[i : i + step]) for i in range(0, len(ids), step)]
    for batch in batches:
        # Sealed by the node that delivers it, for the contact's mailbox of that day.
        body = envelope.receipt_body(batch)
        mid = crypto.random_bytes(envelope.MESSAGE_ID_SIZE)
        store.outbox_for_contact(mid, peer_id, "read", body, READ_RECEIPT_TTL, now, None)
    return len(batches)
