"""`mesh up`: one node per home, serving the control socket.

The daemon holds the home's lock (mesh.home.HomeLock) for its lifetime, binds
`HOME/control.sock` with mode 0600 and answers the newline-delimited JSON requests of
mesh.control. Background work: relaying new messages to watchers, deleting expired
(disappearing) messages, and, while someone watches, reporting status and peer changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesh import reading, retention
from mesh.control import (
    LISTED_MESSAGES,
    MAX_LINE_BYTES,
    PROTOCOL_VERSION,
    Event,
    contact_names,
    encode_line,
    error_json,
    format_address,
    group_names,
    list_messages,
    message_json,
)
from mesh.control_groups import GROUP_OPS, run_op
from mesh.envelope import Message, MessageKind
from mesh.errors import ControlRequestError, LocalError, MeshError, UnreachableError
from mesh.home import HomeLock, control_path, queue_message, resolve_recipient
from mesh.node import Node, parse_address
from mesh.runner import PEER_WAIT, NetConfig, deliver_queued, start_node
from mesh.store import MessageStatus
from mesh.store_groups import group_of_peer
from mesh.tasks import TaskSet
from mesh.wire import Address

log = logging.getLogger(__name__)

TEXT = MessageKind.TEXT

MAX_WATCHER_BACKLOG = 1 << 20  # a watcher that stops reading is dropped past this
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes including the terminating NUL


# -- the daemon ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DaemonOptions:
    expire_interval: float = 1.0  # how often expired (disappearing) messages are deleted
    watch_interval: float = 0.25  # how often status and peer changes are checked for watchers


Handler = Callable[[Event, asyncio.StreamWriter], Awaitable[Event]]


@dataclass
class _Tracker:
    """What watchers were last told: outgoing statuses and the peer count."""

    statuses: dict[bytes, tuple[MessageStatus, int | None]] = field(default_factory=dict)
    peers: int = -1


class Daemon:
    """Serves the control socket of one running node."""

    def __init__(
        self,
        node: Node,
        home: Path,
        options: DaemonOptions | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.node = node
        self.home = home
        self.path = control_path(home)
        self.options = options or DaemonOptions()
        self.on_event = on_event
        self.watchers: set[asyncio.StreamWriter] = set()
        self._tracker = _Tracker()
        self._wake = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks = TaskSet()
        self._handlers: dict[str, Handler] = {
            "status": self._op_status,
            "send": self._op_send,
            "add_contact": self._op_add_contact,
            "request": self._op_request,
            "fetch": self._op_fetch,
            "inbox": self._op_inbox,
            "outbox": self._op_outbox,
            "peers": self._op_peers,
            "read": self._op_read,
            "watch": self._op_watch,
        }
        for op in GROUP_OPS:
            self._handlers[op] = self._op_group

    async def start(self) -> None:
        """Bind the control socket (the caller holds the home's lock, so any old socket
        file is stale) and start the background tasks."""
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            raise LocalError(
                f"the home path is too long for a control socket ({self.path}): "
                "use a shorter --home"
            )
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old_umask = os.umask(0o177)  # the socket is born 0600: no window for others
        try:
            self._server = await asyncio.start_unix_server(
                self._serve_client, path=str(self.path), limit=MAX_LINE_BYTES
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        self._tasks.spawn(self._relay_messages())
        self._tasks.spawn(self._housekeeping())

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self.watchers):
            writer.close()
        await self._tasks.close()
        if self._server is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._server = None

    # -- connections ----------------------------------------------------------------

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # longer than MAX_LINE_BYTES
                    error = ControlRequestError(f"request longer than {MAX_LINE_BYTES} bytes")
                    writer.write(encode_line({"id": None, "ok": False, "error": error_json(error)}))
                    break
                if not line:
                    break
                writer.write(encode_line(await self.answer(line, writer)))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.watchers.discard(writer)
            writer.close()

    async def answer(self, line: bytes, writer: asyncio.StreamWriter) -> Event:
        """The response to one request line; never raises for a bad request."""
        request_id: Any = None
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ControlRequestError("a request is a JSON object with an 'op'")
            request_id = request.get("id")
            op = request.get("op")
            handler = self._handlers.get(op) if isinstance(op, str) else None
            if handler is None:
                known = ", ".join(sorted(self._handlers))
                raise ControlRequestError(f"unknown op {op!r}; known ops: {known}")
            result = await handler(request, writer)
        except (json.JSONDecodeError, UnicodeDecodeError):
            error = ControlRequestError("a request is one line of JSON")
            return {"id": request_id, "ok": False, "error": error_json(error)}
        except MeshError as exc:
            return {"id": request_id, "ok": False, "error": error_json(exc)}
        except Exception as exc:  # a bug: answer it, keep serving, leave a trace in the log
            log.exception("control request failed")
            failure = MeshError(f"internal error in the mesh daemon: {exc!r}")
            return {"id": request_id, "ok": False, "error": error_json(failure)}
        return {"id": request_id, "ok": True, "result": result}

    # -- operations -------------------------------------------------------------------

    async def _op_status(self, request: Event, writer: asyncio.StreamWriter) -> Event:
        node = self.node
        return {
            "protocol": PROTOCOL_VERSION,
            "id": node.id,
            "fingerprint": node.identity.public.fingerprint,
            "name": node.store.get_setting("name"),
            "address": format_address(node.address),
            "peers": node.peer_count(),
            "mdns": node.discovery is not None,
            "pid": os.getpid(),
            "outbox": len(node.store.outbox_pending()),
        }

    async def _op_send(self, request: Event, writer: asyncio.StreamWriter) -> Event:
        to = _text_arg(request, "to")
        text = _text_arg(request, "text")
        ttl = request.get("ttl")
        if ttl is not None and type(ttl) is not int:
            raise ControlRequestError("'ttl' must be an integer number of seconds")
        peers = [parse_address(p) for p in _list_arg(request, "peers")]
        node = self.node
        message = queue_message(node.store, node.identity, to, text, ttl, node.wall())
        await self._join(peers)
        result = await deliver_queued(node, message)
        return result.to_json()

    async def _op_add_contact(self, request: Event, writer: asyncio.StreamWriter) -> Event:
        """A contact was saved (`mesh contacts add`): start the key agreement now. The ID
        is `peer` (as for `read`): `id` is the request's own, echoed in the answer."""
        peer_id = _text_arg(request, "peer")
        return {"ready": await self.node.add_contact(peer_id)}

    async def _op_request(self, request: Event, writer: asyncio.StreamWriter) -> Event:
        """`mesh requests send`: a stranger's request, stamped and stored. The ID is
        `peer`, as for `add_contact`."""
        peer_id = _text_arg(request, "peer")
        text = _text_arg(request, "text")
        return {"replicas": await self.node.send_request(peer_id, text)}

    async def _join(self, peers: list[Address]) -> None:
        """Peers named by a command (--peer): ping them; if we had none, wait for one."""
        for peer in peers:
            self.node.add_peer(peer)
        if peers and self.node.peer_count() == 0:
            await self.node.wait_peers(1, PEER_WAIT)

    async def _op_fetch(self, request: Event, writer: asyncio.StreamWriter) -> Event:
        new = await self._fetch() or []
        names, groups = contact_names(self.node.store), group_names(self.node.store)
        rows = [self.node.store.get_message(m.id, "in") for m in new if m.kind == TEXT]
        return {"messages": [message_json(r, names, groups) for r in rows if r is not None]}

    async def _op_inbox(self, request: Event, writer: asyncio.StreamWriter) -> Event:
        await self._join([parse_address(p) for p in _list_arg(request, "peers")])
        fetched = False
        if request.get("fetch", True) and self.node.peer_count() > 0:
            fetched = await self._fetch() is not None
        return {
            "messages": list_messages(self.node.store, "in", self.node.wall()),
            "fetched": fetched,
        }

    async def _op_outbox(self, request: Event, writer: asyncio.StreamWriter) -> Event:
        return {"messages": list_messages(self.node.store, "out", self.node.wall())}

    async def _op_peers(self, request: Event, writer: asyncio.StreamWriter) -> Event:
        contacts = sorted(self.node.dht.table.contacts(), key=lambda c: c.address)
        peers = [{"node_id": c.id.hex(), "address": format_address(c.address)} for c in contacts]
        return {"live": True, "peers": peers}

    async def _op_group(self, request: Event, writer: asyncio.StreamWriter) -> Event:
        """The `group_*` ops (mesh.control_groups); `peers` as for `send`."""
        await self._join([parse_address(p) for p in _list_arg(request, "peers")])
        return await run_op(self.node, str(request["op"]), request)

    async def _op_read(self, request: Event, writer: asyncio.StreamWriter) -> Event:
        """Mark messages from `peer` read (all, or the hex `ids`); a read receipt goes
        out if that contact opted in (mesh.reading). `peer` may be a group's peer
        string ("group:<hex>", as the chat has it): groups get no read receipts."""
        only = _ids_arg(request)
        named = _text_arg(request, "peer")
        if group_of_peer(named) is not None:
            return {"marked": len(self.node.store.mark_read_ids(named, only)), "receipts": 0}
        peer = resolve_recipient(self.node.store, named)
        ids = self.node.store.mark_read_ids(peer.id, only)
        store, identity = self.node.store, self.node.identity
        queued = reading.queue_read_receipts(store, identity, peer.id, ids, self.node.wall())
        if queued:
            self.node.dht.spawn(self._flush())
        return {"marked": len(ids), "receipts": queued}

    async def _flush(self) -> None:
        with contextlib.suppress(MeshError):
            await self.node.flush_outbox()

    async def _op_watch(self, request: Event, writer: asyncio.StreamWriter) -> Event:
        if not self.watchers:
            self._tracker = _Tracker(self._out_statuses(), self.node.peer_count())
        self.watchers.add(writer)
        self._wake.set()
        return {"watching": True, "peers": self.node.peer_count()}

    async def _fetch(self) -> list[Message] | None:
        """New messages from the mailbox; None if no replica answered."""
        try:
            return await self.node.fetch_mailbox()
        except UnreachableError:
            return None

    # -- events ---------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Push an event line to every watcher; drop watchers that stopped reading."""
        line = encode_line(event)
        for writer in list(self.watchers):
            transport = writer.transport
            if writer.is_closing() or transport.get_write_buffer_size() > MAX_WATCHER_BACKLOG:
                self.watchers.discard(writer)
                writer.close()
                continue
            writer.write(line)
        if self.on_event is not None:
            self.on_event(event)

    async def _relay_messages(self) -> None:
        async for message in self.node.messages():
            row = self.node.store.get_message(message.id, "in")
            if row is not None and row.kind == TEXT:
                names, groups = contact_names(self.node.store), group_names(self.node.store)
                self.emit({"event": "message", "message": message_json(row, names, groups)})

    async def _housekeeping(self) -> None:
        """Delete expired messages now and then; while someone watches, report changes."""
        loop = asyncio.get_running_loop()
        next_expiry = loop.time()
        while True:
            if loop.time() >= next_expiry:
                next_expiry = loop.time() + self.options.expire_interval
                self._delete_expired()
            if self.watchers:
                self._report_changes()
            timeout = self.options.watch_interval if self.watchers else next_expiry - loop.time()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(timeout, 0.0))

    def _delete_expired(self) -> None:
        with contextlib.suppress(MeshError):
            expired = self.node.store.delete_expired_messages(self.node.wall())
            retention.apply(self.node.store, self.node.wall())
            if expired:
                self.emit({"event": "expired", "message_ids": [m.hex() for m in expired]})

    def _out_statuses(self) -> dict[bytes, tuple[MessageStatus, int | None]]:
        rows = self.node.store.list_messages(direction="out", limit=LISTED_MESSAGES)
        return {r.msg_id: (r.status, r.replicas) for r in rows if r.kind == TEXT}

    def _report_changes(self) -> None:
        current = self._out_statuses()
        for msg_id, (status, replicas) in current.items():
            if self._tracker.statuses.get(msg_id) != (status, replicas):
                row = self.node.store.get_message(msg_id, "out")
                self.emit(
                    {
                        "event": "status",
                        "message_id": msg_id.hex(),
                        "peer": row.peer_id if row is not None else None,
                        "status": status,
                        "replicas": replicas,
                    }
                )
        self._tracker.statuses = current
        peers = self.node.peer_count()
        if peers != self._tracker.peers:
            self._tracker.peers = peers
            self.emit({"event": "peers", "count": peers})


def _text_arg(request: Event, name: str) -> str:
    value = request.get(name)
    if not isinstance(value, str):
        raise ControlRequestError(f"'{name}' is required and must be a string")
    return value


def _ids_arg(request: Event) -> list[bytes] | None:
    """The optional `ids` argument: message ids in hex."""
    if "ids" not in request:
        return None
    try:
        ids = [bytes.fromhex(v) for v in _list_arg(request, "ids")]
    except ValueError:
        raise ControlRequestError("'ids' must be message ids in hex") from None
    return ids


def _list_arg(request: Event, name: str) -> list[str]:
    value = request.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ControlRequestError(f"'{name}' must be a list of strings")
    return value


# -- running `mesh up` ----------------------------------------------------------------------


async def run_daemon(
    home: Path,
    net: NetConfig,
    passphrase: str | None,
    echo: Callable[[str], None],
    on_event: Callable[[Event], None] | None = None,
    options: DaemonOptions | None = None,
) -> None:
    """Run the node of `home` with its control socket until SIGINT or SIGTERM."""
    with HomeLock.acquire(home), stop_signals() as stopping:
        node = await start_node(home, net, passphrase)
        daemon = Daemon(node, home, options, on_event)
        try:
            await daemon.start()
            echo(f"listening on {format_address(node.address)}")
            echo(f"id {node.id}")
            echo(f"control socket {daemon.path}")
            if net.mdns:
                where = ", ".join(net.interfaces or ["every IPv4 interface but loopback"])
                echo(f"looking for peers with mDNS on {where}")
            await stopping.wait()
        finally:
            await daemon.stop()
            await node.stop()


@contextlib.contextmanager
def stop_signals() -> Iterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM (installed before startup, so a signal that
    arrives while the node starts still stops it cleanly)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
