"""A home directory: its store, its lock, and the steps every command shares.

A home holds `mesh.db` (the Store), `mesh.lock` and, while a daemon runs, `control.sock`.
Whoever runs a node for a home (the daemon, or a short-lived node started by `mesh send`
or `mesh inbox`) holds an exclusive `flock` on `mesh.lock` for its whole life, so two
processes never run one identity and node id at once. The kernel drops the lock when the
process dies, even by SIGKILL, so a crash never leaves a home "busy".

Sending is two steps for every caller: `queue_message` seals the message and commits it
(status "queued", plus its record in the outbox) before any network I/O; then
`deliver_queued` flushes the outbox if at least one peer is known. With no peer the
message stays queued, and the node flushes its outbox whenever a peer appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesh import envelope, vault
from mesh import node as node_module
from mesh.dht.server import DhtConfig
from mesh.envelope import DEFAULT_TTL, MAX_TEXT_BYTES, MAX_TTL, Message
from mesh.errors import (
    AlreadyRunningError,
    EmptyMessageError,
    IdentityExistsError,
    LocalError,
    MessageTooLargeError,
    NoIdentityError,
    UnreachableError,
    WrongPassphraseError,
)
from mesh.identity import Identity, PublicIdentity
from mesh.node import Node
from mesh.store import Store
from mesh.wire import Address

log = logging.getLogger(__name__)

CONTROL_SOCKET = "control.sock"
LOCK_FILE = vault.LOCK_FILE
PEER_WAIT = 2.5  # how long a short-lived node waits for its first peer


# -- the home directory -------------------------------------------------------------------


def control_path(home: Path) -> Path:
    return home / CONTROL_SOCKET


def open_home(home: Path, passphrase: str | None = None) -> Store:
    """Open the store of a home that has an identity, unlocking it (mesh.vault) on the
    way; never creates anything. A locked home without a passphrase source: LockedError."""
    if vault.home_state(home) == "empty":
        raise NoIdentityError(f"no identity in {home}: run `mesh --home {home} init` first")
    store = vault.open_store(home, passphrase)
    if store.get_identity_blob() is None:
        store.close()
        raise NoIdentityError(f"no identity in {home}: run `mesh --home {home} init` first")
    return store


def require_home(home: Path) -> None:
    """NoIdentityError unless `home` has a store; unlocks nothing (a running daemon
    answers for a locked home without the passphrase being asked again)."""
    if vault.home_state(home) == "empty":
        raise NoIdentityError(f"no identity in {home}: run `mesh --home {home} init` first")


class HomeLock:
    """An exclusive flock on HOME/mesh.lock, released when closed or when the process dies."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def acquire(cls, home: Path) -> HomeLock:
        fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunningError(
                f"mesh is already running for {home} (pid {holder}): stop it first, "
                "or use another --home"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        return cls(fd)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1

    def __enter__(self) -> HomeLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def unlock_identity(store: Store, passphrase: str | None) -> Identity:
    blob = store.get_identity_blob()
    if blob is None:
        raise NoIdentityError("this home has no identity yet: run `mesh init` first")
    return Identity.from_bytes(blob, passphrase)


def is_locked(store: Store) -> bool:
    """True if the identity is encrypted with a passphrase (no key derivation run)."""
    try:
        unlock_identity(store, None)
    except WrongPassphraseError:
        return True
    return False


def ensure_new_home(home: Path) -> None:
    """IdentityExistsError if `home` has a store (or a key file) already."""
    if vault.home_state(home) != "empty" or (home / vault.KEY_FILE).exists():
        raise IdentityExistsError(
            f"{home} already has an identity; refusing to replace it "
            "(use another --home for a second identity)"
        )


def init_home(home: Path, name: str | None, passphrase: str | None) -> Identity:
    """Create the identity of a new home; IdentityExistsError if it has one."""
    ensure_new_home(home)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    identity = Identity.generate()
    with vault.open_store(home, passphrase) as store:
        # The seed is stored in clear inside the encrypted store (the passphrase wraps
        # the store's key, see mesh/vault.py).
        store.set_identity_blob(identity.to_bytes(None))
        store.set_setting("public_id", identity.id)
        if name:
            store.set_setting("name", name.strip())
    return identity


def public_identity(store: Store, passphrase: str | None = None) -> PublicIdentity:
    saved = store.get_setting("public_id")
    if saved is not None:
        return PublicIdentity.from_id(saved)
    return unlock_identity(store, passphrase).public


# -- sending --------------------------------------------------------------------------


@dataclass(frozen=True)
class SendResult:
    message_id: bytes
    recipient: str
    status: str  # "queued" (no peer reachable), "stored", "delivered"
    replicas: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id.hex(),
            "to": self.recipient,
            "status": self.status,
            "replicas": self.replicas,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SendResult:
        replicas = doc.get("replicas")
        return cls(
            bytes.fromhex(str(doc["message_id"])),
            str(doc["to"]),
            str(doc["status"]),
            replicas if isinstance(replicas, int) else None,
        )


def resolve_recipient(store: Store, to: str) -> PublicIdentity:
    """A contact name or an ID -> the recipient (InvalidIdError, UnknownContactError)."""
    return node_module.resolve_recipient(store, to)[0]


def check_text(text: str) -> bytes:
    """The UTF-8 body of a text message, or a LocalError that states the rule."""
    if not text.strip():
        raise EmptyMessageError("nothing to send: the message is empty")
    body = text.encode("utf-8")
    if len(body) > MAX_TEXT_BYTES:
        raise MessageTooLargeError(
            f"this message is too long: {len(body)} bytes, the limit is {MAX_TEXT_BYTES} "
            "bytes (UTF-8); split it into several messages"
        )
    return body


def check_ttl(ttl: int | None) -> int | None:
    if ttl is not None and (type(ttl) is not int or not 1 <= ttl <= MAX_TTL):
        raise LocalError(f"a time to live is 1 to {MAX_TTL} seconds (30 days)")
    return ttl


def queue_message(
    store: Store, identity: Identity, to: str, text: str, ttl: int | None, now: float
) -> Message:
    """Seal a text message and commit it to the outbox; no network I/O."""
    check_text(text)
    return node_module.queue_text(store, identity, to, text, check_ttl(ttl), now)[0]


async def deliver_queued(node: Node, message: Message) -> SendResult:
    """Flush the outbox (this message included) if any peer is known."""
    if node.peer_count() > 0:
        with contextlib.suppress(UnreachableError):
            await node.flush_outbox()
    row = node.store.get_message(message.id, "out")
    status = row.status if row is not None else "queued"
    replicas = row.replicas if row is not None else None
    return SendResult(message.id, message.recipient, status, replicas)


# -- starting a node ----------------------------------------------------------------------


@dataclass(frozen=True)
class NetConfig:
    host: str = "0.0.0.0"
    port: int | None = None  # None: the port this home used last time, else any
    peers: Sequence[Address] = ()
    mdns: bool = True
    interfaces: Sequence[str] | None = None
    network_name: str = "mesh"


async def start_node(
    home: Path, net: NetConfig, passphrase: str | None, config: DhtConfig | None = None
) -> Node:
    """Start the node of a home, with mDNS discovery if `net.mdns`.

    Without an explicit port the node takes the port this home used last (if free):
    peers that know this node id keep its old address in their routing tables, so a
    restarted node, or a short-lived one for `mesh send`, is reachable where they look.
    """
    port = net.port
    sticky = port is None
    if port is None:
        with open_home(home) as store:
            port = int(store.get_setting("listen_port") or 0)
    try:
        node = await _start(home, net, port, passphrase, config)
    except OSError as exc:
        if not (sticky and port and exc.errno == errno.EADDRINUSE):
            raise LocalError(f"cannot listen on {net.host}:{port}: {exc.strerror}") from None
        node = await _start(home, net, 0, passphrase, config)
    node.store.set_setting("listen_port", str(node.address[1]))
    return node


async def _start(
    home: Path, net: NetConfig, port: int, passphrase: str | None, config: DhtConfig | None
) -> Node:
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
    )


@contextlib.asynccontextmanager
async def short_lived_node(
    home: Path, net: NetConfig, passphrase: str | None, wait: float
) -> AsyncIterator[Node]:
    """A node for one command; the caller holds the home's lock.

    On exit, receipts for the messages it received are sent before it stops (the
    node's own receipt tasks would be cancelled by `stop`).
    """
    with open_home(home) as store:
        before = {row.msg_id for row in store.list_messages(direction="in")}
    node = await start_node(home, net, passphrase)
    try:
        if node.peer_count() == 0 and (net.mdns or net.peers):
            await node.wait_peers(1, wait)
        yield node
        await _send_receipts(node, before)
    finally:
        await node.stop()


async def _send_receipts(node: Node, before: set[bytes]) -> None:
    """Receipts for every text message received since `before` was taken (a second
    receipt for one message, if the node's own got out too, changes nothing)."""
    by_sender: dict[str, list[bytes]] = {}
    for row in node.store.list_messages(direction="in"):
        if row.msg_id not in before and row.kind == "text" and row.peer_id != node.id:
            by_sender.setdefault(row.peer_id, []).append(row.msg_id)
    puts = []
    for sender, ids in by_sender.items():
        recipient = PublicIdentity.from_id(sender)
        for start in range(0, len(ids), envelope.MAX_RECEIPT_IDS):
            body = envelope.receipt_body(ids[start : start + envelope.MAX_RECEIPT_IDS])
            _, record = envelope.seal_message(
                node.identity, recipient, "receipt", body, node.wall(), DEFAULT_TTL
            )
            puts.append(node.dht.put(recipient.mailbox_key, [record]))
    if puts:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*puts, return_exceptions=True), 3.0)
