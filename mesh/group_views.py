"""Groups as the CLI, the daemon and the chat show them (issue 17), from the store: no
node, no network. `stored_groups` resolves each group's changes as the node does
(GroupService.infos / members); `conversation` decides what one word means where it
could be a contact or a group.

**Contacts win**: in `mesh send NAME`, `mesh inbox NAME`, `mesh read NAME` a name
saved in the address book, or an ID, always means that person; a group is meant only
when no contact has the name (or for the hex of a group's id). A group's name comes
from whoever invited us: it must never redirect a private message. `mesh group send`
always means the group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mesh import groups
from mesh.errors import GroupError, RemoteProtocolError, UnknownContactError
from mesh.group_service import GroupInfo
from mesh.groups import Change
from mesh.home import resolve_recipient
from mesh.identity import PublicIdentity, id_for_key
from mesh.store import Store

HEX_PREFIX_MIN = 8  # as GroupService.find: a shorter hex string is only ever a name
Event = dict[str, Any]


# -- JSON views -------------------------------------------------------------------------


def group_json(info: GroupInfo, unread: dict[str, int] | None = None) -> Event:
    return {
        "id": info.group_id.hex(),
        "name": info.name,
        "peer": info.peer,
        "members": info.members,
        "admin": info.admin,
        "active": info.active,
        "unread": (unread or {}).get(info.peer, 0),
    }


def members_json(store: Store, members: list[tuple[str, str]]) -> list[Event]:
    """(ID, role) pairs -> rows with the contact name where we have one."""
    names: dict[str, str] = {}
    for contact in store.list_contacts():
        names.setdefault(contact.peer_id, contact.name)
    own = store.get_setting("public_id")
    return [
        {"id": i, "role": role, "contact": names.get(i), "you": i == own} for i, role in members
    ]


# -- the store's view (no node needed) ----------------------------------------------------


@dataclass(frozen=True)
class StoredGroup:
    info: GroupInfo
    members: list[tuple[str, str]]  # (ID, role), admins first


def stored_groups(store: Store) -> list[StoredGroup]:
    """Every group of the home as its changes in the store resolve, in the order and
    with the meaning of GroupService.infos / members (the node's view of the same rows)."""
    own = store.get_setting("public_id")
    me = PublicIdentity.from_id(own).verify_key if own else b""
    found = []
    for row in store.groups.all():
        try:
            changes = [Change.from_bytes(data) for data in store.groups.changes(row.group_id)]
            state = groups.resolve(changes, row.genesis)
        except RemoteProtocolError:
            continue  # as the node: a group it cannot load is not listed
        order = sorted(state.members.items(), key=lambda kv: (kv[1] != "admin", id_for_key(kv[0])))
        info = GroupInfo(
            row.group_id,
            row.name,
            row.peer,
            len(state.members),
            state.members.get(me) == "admin",
            row.left_at is None and me in state.members,
        )
        found.append(StoredGroup(info, [(id_for_key(vk), role) for vk, role in order]))
    return found


def find_stored(store: Store, name_or_id: str) -> StoredGroup:
    """A group by name or hex id prefix, with GroupService.find's rules; GroupError."""
    text = name_or_id.strip()
    every = stored_groups(store)
    matches = [g for g in every if g.info.name == text]
    if not matches and len(text) >= HEX_PREFIX_MIN:
        matches = [g for g in every if g.info.group_id.hex().startswith(text.lower())]
    if not matches:
        raise GroupError(f"no group called {text!r} (mesh group list shows yours)")
    active = [g for g in matches if g.info.active] or matches
    if len(active) > 1:
        raise GroupError(
            f"{len(active)} groups are called {text!r}: use the id from mesh group list"
        )
    return active[0]


def group_named(store: Store, name: str) -> StoredGroup | None:
    """The group `name` means, or None if no group has that name or id prefix (an
    ambiguous name is a GroupError)."""
    try:
        return find_stored(store, name)
    except GroupError:
        text = name.strip()
        if any(g.info.name == text for g in stored_groups(store)):
            raise  # several groups of that name: say so
        return None


def conversation(store: Store, name: str) -> tuple[str, StoredGroup | None]:
    """The conversation `name` means: (a contact's ID, None), or (the group's peer, the
    group) when no contact has that name. Contacts win: see the module docstring."""
    try:
        return resolve_recipient(store, name).id, None
    except UnknownContactError:
        group = group_named(store, name)
        if group is None:
            raise
        return group.info.peer, group
