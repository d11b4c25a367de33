"""Running the node of a home for a command: the steps the daemon and every command share.

Sending is two steps for every caller: `mesh.home.queue_message` seals the message and
commits it (status "queued", plus its record in the outbox) before any network I/O; then
`deliver_queued` flushes the outbox if at least one peer is known. With no peer the
message stays queued, and the node flushes its outbox whenever a peer appears.

`start_node` starts the node of a home (its store, identity and lock are mesh.home's);
`short_lived_node` runs one for a single command (`mesh send`, `mesh inbox` without a
daemon).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesh.dht.server import DhtConfig
from mesh.envelope import Message
from mesh.errors import LocalError, MeshError, UnreachableError
from mesh.home import network_key, open_home
from mesh.node import Node
from mesh.store import STATUSES, MessageStatus
from mesh.wire import Address

PEER_WAIT = 2.5  # how long a short-lived node waits for its first peer


# -- sending --------------------------------------------------------------------------


@dataclass(frozen=True)
class SendResult:
    message_id: bytes
    recipient: str
    status: MessageStatus  # queued (no peer reachable), stored, delivered
    replicas: int | None
    waiting: bool = False  # queued until the recipient adds us too (their keys come)

    def to_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id.hex(),
            "to": self.recipient,
            "status": str(self.status),
            "replicas": self.replicas,
            "waiting": self.waiting,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SendResult:
        replicas = doc.get("replicas")
        status = str(doc["status"])
        if status not in STATUSES:
            raise MeshError(f"the mesh daemon sent an unknown message status {status!r}")
        return cls(
            bytes.fromhex(str(doc["message_id"])),
            str(doc["to"]),
            MessageStatus(status),
            replicas if isinstance(replicas, int) else None,
            doc.get("waiting") is True,
        )


async def deliver_queued(node: Node, message: Message) -> SendResult:
    """Flush the outbox (this message included) if any peer is known; to a recipient
    whose keys have not come yet, look for them first (they may have added us)."""
    waiting = not node.contact_ready(message.recipient)
    if node.peer_count() > 0:
        if waiting:
            waiting = not await node.add_contact(message.recipient)
        with contextlib.suppress(UnreachableError):
            await node.flush_outbox()
    row = node.store.get_message(message.id, "out")
    status = row.status if row is not None else MessageStatus.QUEUED
    replicas = row.replicas if row is not None else None
    return SendResult(message.id, message.recipient, status, replicas, waiting)


# -- starting a node ----------------------------------------------------------------------


@dataclass(frozen=True)
class NetConfig:
    host: str = "0.0.0.0"
    port: int | None = None  # None: a random port at every start
    peers: Sequence[Address] = ()
    mdns: bool = True
    interfaces: Sequence[str] | None = None
    network_name: str = "mesh"


async def start_node(
    home: Path, net: NetConfig, passphrase: str | None, config: DhtConfig | None = None
) -> Node:
    """Start the node of a home, in the home's private mesh if it joined one
    (`mesh network`), with mDNS discovery if `net.mdns`.

    Without an explicit port the node takes a random one at every start, as it takes a
    new node id: nothing stable recognises a device across days and networks; peers
    find it again through its peer cache and mDNS.
    """
    with open_home(home) as store:
        key = network_key(store)
        if store.get_setting("listen_port") is not None:
            store.delete_setting("listen_port")  # an older release kept the port
    port = net.port or 0
    try:
        return await Node.start(
            home,
            net.host,
            port,
            bootstrap=list(net.peers),
            mdns=net.mdns,
            interfaces=net.interfaces,
            network_name=net.network_name,
            passphrase=passphrase,
            create=False,
            config=config,
            network_key=key,
        )
    except OSError as exc:
        raise LocalError(f"cannot listen on {net.host}:{port}: {exc.strerror}") from None


@contextlib.asynccontextmanager
async def short_lived_node(
    home: Path, net: NetConfig, passphrase: str | None, wait: float
) -> AsyncIterator[Node]:
    """A node for one command; the caller holds the home's lock.

    Receipts for the messages it received are sent by the node itself, and `stop` waits
    (a bounded grace) for them; one that does not get out waits in the outbox.
    """
    node = await start_node(home, net, passphrase)
    try:
        if node.peer_count() == 0 and (net.mdns or net.peers):
            await node.wait_peers(1, wait)
        yield node
    finally:
        await node.stop()
