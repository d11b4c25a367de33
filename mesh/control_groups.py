"""Groups over the control protocol (issue 17): the daemon's `group_*` ops, and the
flows of `mesh group ...` that use the daemon of a home when one runs, else a
short-lived node (as `send_text` in mesh.control does).

One implementation of each op, `run_op(node, op, request)`, serves both: the daemon
calls it with its node, a command without a daemon with its short-lived node. The two
read-only ops (`group_list`, `group_members`) need no node without a daemon: they are
answered from the store (mesh.group_views), as `mesh outbox` is.

A GROUP argument is a group's name or the hex of its id (8 characters at least),
resolved by the node (GroupService.find); a MEMBER is a contact name or an ID
(mesh.home.resolve_recipient).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mesh.control import ControlClient, Event, Unlock, connect_or_lock, format_address
from mesh.errors import ControlRequestError, GroupError, UnreachableError
from mesh.group_views import find_stored, group_json, members_json, stored_groups
from mesh.home import check_text, open_home, require_home, resolve_recipient
from mesh.node import Node
from mesh.runner import PEER_WAIT, NetConfig, short_lived_node
from mesh.store import MessageStatus, Store

GROUP_OPS = (
    "group_create",
    "group_invite",
    "group_send",
    "group_remove",
    "group_promote",
    "group_leave",
    "group_list",
    "group_members",
)
READ_ONLY = ("group_list", "group_members")


# -- the ops --------------------------------------------------------------------------------


def _text(request: Event, name: str) -> str:
    value = request.get(name)
    if not isinstance(value, str):
        raise ControlRequestError(f"'{name}' is required and must be a string")
    return value


def _strings(request: Event, name: str) -> list[str]:
    value = request.get(name)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ControlRequestError(f"'{name}' must be a list of strings")
    return value


def _info(node: Node, group_id: bytes) -> Event:
    unread = node.store.unread_counts()
    for info in node.group_list():
        if info.group_id == group_id:
            return group_json(info, unread)
    raise GroupError("no such group")


async def run_op(node: Node, op: str, request: Event) -> Event:
    """One `group_*` request against `node`; raises MeshError subclasses for refusals."""
    store = node.store
    if op == "group_list":
        unread = store.unread_counts()
        return {"groups": [group_json(i, unread) for i in node.group_list()]}
    if op == "group_create":
        group_id = node.create_group(_text(request, "name"))
        return {"group": _info(node, group_id)}
    group_id = node.groups.find(_text(request, "group"))
    if op == "group_members":
        members = members_json(store, node.group_members(group_id))
        return {"group": _info(node, group_id), "members": members}
    if op == "group_invite":
        names = _strings(request, "members")
        if not names:
            raise ControlRequestError("'members' names nobody")
        ids = list(dict.fromkeys(resolve_recipient(store, n).id for n in names))
        added = await node.invite_to_group(group_id, ids)
        return {"group": _info(node, group_id), "added": added}
    if op == "group_send":
        return await _send(node, group_id, _text(request, "text"))
    if op == "group_leave":
        await node.leave_group(group_id)
        return {"group": _info(node, group_id)}
    member = resolve_recipient(store, _text(request, "member")).id
    if op == "group_remove":
        await node.remove_from_group(group_id, member)
    elif op == "group_promote":
        await node.promote_in_group(group_id, member)
    else:
        raise ControlRequestError(f"unknown op {op!r}")
    return {"group": _info(node, group_id), "member": member}


async def _send(node: Node, group_id: bytes, text: str) -> Event:
    """Queue durably and store in the group mailbox: `queued` (exit 3) if no replica
    answered; the node's outbox delivers it later."""
    check_text(text)  # blank text, a lone surrogate: refused as for a contact
    info = _info(node, group_id)
    before = {r.msg_id for r in node.store.list_messages(info["peer"], "out", limit=16)}
    try:
        receipt = await node.send_group(group_id, text)
        message_id = receipt.message_id
    except UnreachableError:
        # The message is committed and waits in the outbox; Node.send_group does not say
        # its id then, so it is the new outgoing row of the group.
        rows = node.store.list_messages(info["peer"], "out", limit=16)
        fresh = [r.msg_id for r in rows if r.msg_id not in before]
        if not fresh:
            raise
        message_id = fresh[-1]
    row = node.store.get_message(message_id, "out")
    return {
        "message_id": message_id.hex(),
        "group": info,
        "status": str(row.status if row is not None else MessageStatus.QUEUED),
        "replicas": row.replicas if row is not None else None,
    }


# -- the flows --------------------------------------------------------------------------------


async def group_request(
    home: Path,
    op: str,
    unlock: Unlock,
    net: NetConfig | None = None,
    **args: Any,
) -> Event:
    """`op` through the daemon of `home` when one runs, else with a short-lived node (or
    the store, for the read-only ops). `net`: how a short-lived node reaches peers, and
    peers (--peer) a running daemon pings first; None for ops without traffic."""
    if op not in GROUP_OPS:
        raise ControlRequestError(f"unknown op {op!r}")
    require_home(home)
    target = await connect_or_lock(home)
    if isinstance(target, ControlClient):
        if net is not None and net.peers:
            args["peers"] = [format_address(p) for p in net.peers]
        async with target:
            return await target.request(op, **args)
    with target:
        if op in READ_ONLY:
            with open_home(home) as store:
                return _stored_answer(store, op, args)
        with open_home(home) as store:
            passphrase = unlock(store)
        config = net or NetConfig(host="127.0.0.1", mdns=False)
        wait = PEER_WAIT if op in ("group_invite", "group_send") else 0.5
        async with short_lived_node(home, config, passphrase, wait) as node:
            return await run_op(node, op, args)


def _stored_answer(store: Store, op: str, args: Event) -> Event:
    unread = store.unread_counts()
    if op == "group_list":
        return {"groups": [group_json(g.info, unread) for g in stored_groups(store)]}
    group = find_stored(store, _text(args, "group"))
    return {"group": group_json(group.info, unread), "members": members_json(store, group.members)}
