"""The control protocol of `mesh up`: encoding, the client, and the command flows.

The daemon listens on the Unix socket `HOME/control.sock` (mode 0600). A request is one
line of JSON, ``{"id": 1, "op": "send", "to": "bob", "text": "hi"}``; its answer is one
line, ``{"id": 1, "ok": true, "result": {...}}`` or
``{"id": 1, "ok": false, "error": {"type": "UnknownContactError", "message": "..."}}``.
After ``{"op": "watch"}`` the daemon also pushes event lines on that connection, each with
an ``"event"`` key and no ``"id"``. docs/cli.md is the full reference.

`send_text`, `read_inbox` and `list_peers` go through the daemon of a home when one runs,
and otherwise do the same work with a short-lived node (mesh.home).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from mesh import errors, reading, retention
from mesh.envelope import MessageKind
from mesh.errors import AlreadyRunningError, MeshError, UnreachableError
from mesh.group_views import conversation
from mesh.home import (
    HomeLock,
    check_text,
    check_ttl,
    control_path,
    open_home,
    passphrase_for,
    queue_message,
    require_home,
    resolve_recipient,
    unlock_identity,
)
from mesh.runner import PEER_WAIT, NetConfig, SendResult, deliver_queued, short_lived_node
from mesh.store import MessageRow, Store
from mesh.store_groups import group_of_peer
from mesh.wire import Address

PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 64 * 1024  # one request or answer; the longest text is ~4 KiB
LISTED_MESSAGES = 1000  # newest messages an inbox/outbox listing returns
LOCK_WAIT = 5.0  # how long a command waits for a daemon that is still starting
HEARD_RECENTLY = 600.0  # `mesh peers`: a contact heard from this recently is "recent"

Event = dict[str, Any]
Unlock = Callable[[Store], "str | None"]


# -- JSON views -------------------------------------------------------------------------


def contact_names(store: Store) -> dict[str, str]:
    """ID -> the first name it is saved under."""
    names: dict[str, str] = {}
    for contact in store.list_contacts():
        names.setdefault(contact.peer_id, contact.name)
    return names


def group_names(store: Store) -> dict[str, str]:
    """A group's peer (mesh.store_groups.group_peer) -> its name."""
    return {row.peer: row.name for row in store.groups.all()}


def message_json(
    row: MessageRow, names: dict[str, str], groups: dict[str, str] | None = None
) -> Event:
    """A message row as JSON. For a group's message `peer` is the group's peer string
    ("group:<hex>"), `contact` is null, and `group`, `group_name`, `author` (who wrote
    it) and `author_contact` (their contact name) say the rest; null for a contact's."""
    group = group_of_peer(row.peer_id)
    author = row.author if group is not None else None
    return {
        "id": row.msg_id.hex(),
        "direction": row.direction,
        "peer": row.peer_id,
        "contact": names.get(row.peer_id),
        "group": None if group is None else group.hex(),
        "group_name": None if group is None else (groups or {}).get(row.peer_id),
        "author": author,
        "author_contact": None if author is None else names.get(author),
        "text": row.body.decode("utf-8", "replace"),
        "sent_at": row.sent_at,
        "received_at": row.received_at,
        "expires_at": row.expires_at,
        "status": row.status,
        "replicas": row.replicas,
        "read": row.read,
    }


def list_messages(store: Store, direction: str, now: float) -> list[Event]:
    """Text messages one way, oldest first, after deleting the expired ones."""
    store.delete_expired_messages(now)
    retention.apply(store, now)
    names, groups = contact_names(store), group_names(store)
    rows = store.list_messages(direction="in" if direction == "in" else "out")
    texts = rows[-LISTED_MESSAGES:]
    out = [message_json(r, names, groups) for r in texts if r.kind == MessageKind.TEXT]
    for doc, row in zip(out, (r for r in texts if r.kind == MessageKind.TEXT), strict=True):
        if doc["group"] is not None and row.direction == "out":
            # Aggregated receipts (groups of up to 20): how many members said they have it.
            doc["delivered_to"] = store.groups.delivered_to(row.msg_id)
    return out


def encode_line(doc: Event) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def error_json(exc: BaseException) -> Event:
    return {"type": type(exc).__name__, "message": str(exc)}


def format_address(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- the client -----------------------------------------------------------------------------


class ControlClient:
    """A connection to the daemon of a home."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._next_id = 0

    @classmethod
    async def connect(cls, home: Path) -> ControlClient | None:
        """None when no daemon answers on this home's socket (absent or stale)."""
        try:
            reader, writer = await asyncio.open_unix_connection(
                str(control_path(home)), limit=MAX_LINE_BYTES
            )
        except OSError:  # no socket, a stale one, or a path no daemon could have bound
            return None
        return cls(reader, writer)

    async def request(self, op: str, **args: Any) -> Event:
        """Send one request and return its result; raises the daemon's error as the
        matching MeshError subclass."""
        if "id" in args:  # it would replace the request's own id: no answer would match
            raise ValueError("'id' names the request itself; pass an ID as 'peer'")
        self._next_id += 1
        request_id = self._next_id
        self._writer.write(encode_line({"id": request_id, "op": op, **args}))
        await self._writer.drain()
        while True:
            doc = await self._read()
            if doc.get("id") == request_id and "ok" in doc:
                break
        if doc["ok"]:
            result = doc.get("result")
            return result if isinstance(result, dict) else {}
        raise _error_from_json(doc.get("error"))

    async def watch(self) -> AsyncIterator[Event]:
        """Subscribe to the daemon's events. Returns once the daemon has confirmed, so
        nothing that happens afterwards is missed; iterate the result for the events
        (it ends when the daemon closes the connection). Use this connection for
        nothing else."""
        await self.request("watch")
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        while True:
            try:
                doc = await self._read()
            except MeshError:
                return
            if "event" in doc:
                yield doc

    async def _read(self) -> Event:
        line = await self._reader.readline()
        if not line:
            raise MeshError("the mesh daemon closed the connection")
        try:
            doc = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            doc = None
        if not isinstance(doc, dict):
            raise MeshError("the mesh daemon sent something that is not a JSON object")
        return doc

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _error_from_json(error: object) -> MeshError:
    if not isinstance(error, dict):
        return MeshError("the mesh daemon refused the request")
    message = str(error.get("message", "the mesh daemon refused the request"))
    name = str(error.get("type"))
    kind = getattr(errors, name, None)
    if isinstance(kind, type) and issubclass(kind, MeshError):
        return kind(message)
    return MeshError(message)


async def connect_or_lock(home: Path, timeout: float = LOCK_WAIT) -> ControlClient | HomeLock:
    """The daemon of `home` if one runs, else the home's lock for a short-lived node.

    The lock can be held while the socket is not up yet (a daemon starting, another
    command's short-lived node): wait a bounded time for one or the other.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        client = await ControlClient.connect(home)
        if client is not None:
            return client
        try:
            return HomeLock.acquire(home)
        except AlreadyRunningError:
            if loop.time() >= deadline:
                raise
        await asyncio.sleep(0.05)


# -- command flows: through the daemon, or with a short-lived node ---------------------------


async def send_text(
    home: Path,
    to: str,
    text: str,
    ttl: int | None,
    net: NetConfig,
    unlock: Unlock,
    on_queued: Callable[[bytes], None],
) -> SendResult:
    """Queue a text message durably, then store it on the recipient's mailbox replicas.

    Bad input (unknown contact, ID typo, empty or too long text) raises before anything
    is written or any process is contacted. `on_queued` runs once the message is
    committed locally.
    """
    require_home(home)
    check_text(text)
    check_ttl(ttl)
    target = await connect_or_lock(home)
    if isinstance(target, ControlClient):  # it resolves TO: no unlock (KDF) here
        peers = [format_address(p) for p in net.peers]
        async with target:
            doc = await target.request("send", to=to, text=text, ttl=ttl, peers=peers)
        result = SendResult.from_json(doc)
        on_queued(result.message_id)
        return result
    with target:
        with open_home(home) as store:
            resolve_recipient(store, to)
            passphrase = unlock(store)
            identity = unlock_identity(store, passphrase)
            message = queue_message(store, identity, to, text, ttl, time.time())
        on_queued(message.id)
        async with short_lived_node(home, net, passphrase, PEER_WAIT) as node:
            return await deliver_queued(node, message)


async def send_request(home: Path, peer_id: str, text: str) -> int:
    """Send a stranger's request through the daemon, or a short-lived node; returns the
    replicas that took it (NoRequestsError if they do not accept requests)."""
    require_home(home)
    target = await connect_or_lock(home)
    if isinstance(target, ControlClient):
        async with target:
            doc = await target.request("request", peer=peer_id, text=text)
        return int(doc.get("replicas", 0))
    with target:
        with open_home(home) as store:
            passphrase = passphrase_for(store, None)
        async with short_lived_node(home, NetConfig(), passphrase, PEER_WAIT) as node:
            return await node.send_request(peer_id, text)


async def tell_contact_added(home: Path, peer_id: str) -> bool:
    """If a daemon runs for `home`, have it start the key agreement with `peer_id` now;
    True if it is ready (else the next node for this home starts it)."""
    client = await ControlClient.connect(home)
    if client is None:
        return False
    async with client:
        with contextlib.suppress(MeshError):
            doc = await client.request("add_contact", peer=peer_id)
            return doc.get("ready") is True
    return False


async def read_inbox(home: Path, net: NetConfig, unlock: Unlock) -> tuple[list[Event], bool]:
    """(received text messages, whether the mailbox was fetched from the network)."""
    require_home(home)
    target = await connect_or_lock(home)
    if isinstance(target, ControlClient):
        async with target:
            peers = [format_address(p) for p in net.peers]
            doc = await target.request("inbox", fetch=True, peers=peers)
        return list(doc.get("messages", [])), bool(doc.get("fetched", True))
    with target:
        with open_home(home) as store:
            passphrase = unlock(store)
        async with short_lived_node(home, net, passphrase, PEER_WAIT) as node:
            fetched = False
            if node.peer_count() > 0:
                with contextlib.suppress(UnreachableError):
                    await node.fetch()
                    fetched = True
            return list_messages(node.store, "in", time.time()), fetched


async def list_peers(home: Path) -> Event:
    """The daemon's live routing table, else the peers this home saw last."""
    require_home(home)
    client = await ControlClient.connect(home)
    if client is not None:
        async with client:
            doc = await client.request("peers")
        with open_home(home) as store:
            return {**doc, "contacts": contacts_presence(store, time.time())}
    with open_home(home) as store:
        rows = store.peers.peers_recent(64)
        contacts = contacts_presence(store, time.time())
    peers = [
        {
            "node_id": r.node_id.hex(),
            "address": format_address((r.host, r.port)),
            "last_seen": r.last_seen,
        }
        for r in rows
    ]
    return {"live": False, "peers": peers, "contacts": contacts}


def contacts_presence(store: Store, now: float) -> list[Event]:
    """Each contact and when anything signed by them last arrived (a message or a
    receipt): what this home already knows, no new broadcast. `recent` means within
    HEARD_RECENTLY; nobody's presence is announced, so that is the best answer."""
    heard = store.last_heard()
    rows = []
    for contact in store.list_contacts():
        last = heard.get(contact.peer_id)
        recent = last is not None and now - last <= HEARD_RECENTLY
        rows.append(
            {
                "name": contact.name,
                "id": contact.peer_id,
                "last_heard": last,
                "recent": recent,
                "verified": contact.verified,
            }
        )
    return rows


async def read_messages(home: Path, to: str, unlock: Unlock, now: float) -> tuple[list[Event], int]:
    """The unread texts from `to` (oldest first), now marked read; and how many read
    receipts were queued (only for a contact who opted in; see mesh.reading). `to` may
    name a group (mesh.group_views.conversation: contacts win); groups get no receipts."""
    with open_home(home) as store:
        peer, group = conversation(store, to)
        store.delete_expired_messages(now)
        names, groups = contact_names(store), group_names(store)
        rows = [
            r
            for r in store.list_messages(peer_id=peer, direction="in")
            if r.kind == MessageKind.TEXT and not r.read
        ]
    docs = [message_json(r, names, groups) for r in rows]
    if not rows:
        return docs, 0
    ids = [r.msg_id for r in rows]
    client = await ControlClient.connect(home)
    if client is not None:
        async with client:
            doc = await client.request("read", peer=peer, ids=[i.hex() for i in ids])
        return docs, int(doc.get("receipts", 0))
    with open_home(home) as store:
        marked = store.mark_read_ids(peer, ids)
        if group is not None or not reading.wants_read_receipts(store, peer):
            return docs, 0
        identity = unlock_identity(store, unlock(store))
        return docs, reading.queue_read_receipts(store, identity, peer, marked, now)
