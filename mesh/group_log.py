"""Groups (issue 17), the membership log: signed changes and the state they resolve to
(pure: no I/O, no clock). mesh.groups re-exports all of it, with the keys and records.

Membership is a log of **changes**, each signed by its author's identity key and naming
the change it follows (its parent): a hash chain that forks when two admins act at
once. The state is a pure function of the *set* of changes known: every change that
reaches the group's first change through its parents is applied in the order (depth,
change id), and a change whose rule fails in the state reached so far is void. Members
who know the same changes therefore agree, whatever order the changes arrived in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final, Literal, cast

import msgpack

from mesh import crypto, keyring
from mesh.errors import MalformedError

GROUP_ID_SIZE: Final = 16
MESSAGE_ID_SIZE: Final = 16
MAX_MEMBERS: Final = 1000  # issue 17 asks for at least 250
VERSION: Final = 1

LABEL_CHANGE: Final = b"mesh/v1/group/change"
LABEL_CHANGE_ID: Final = b"mesh/v1/group/change-id"

Kind = Literal["create", "add", "promote", "remove", "leave", "rekey"]
KINDS: Final[frozenset[str]] = frozenset({"create", "add", "promote", "remove", "leave", "rekey"})
KEY_KINDS: Final[frozenset[str]] = frozenset({"create", "remove", "rekey"})  # a new secret
Role = Literal["admin", "member"]

_DECODE_ERRORS = (ValueError, TypeError, OverflowError, msgpack.UnpackException)


# -- changes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One signed membership change. `target` is the member concerned (the author for
    create, leave and rekey); `at` is the author's clock, shown, never trusted."""

    group_id: bytes
    parent: bytes  # the id of the change this one follows; b"" for create
    depth: int  # the parent's depth + 1; 0 for create
    author: bytes  # verify key
    kind: Kind
    target: bytes  # verify key
    at: int
    signature: bytes = field(repr=False)

    def body(self) -> bytes:
        fields = [VERSION, self.group_id, self.parent, self.depth, self.author]
        packed: bytes = msgpack.packb([*fields, self.kind, self.target, self.at])
        return packed

    @property
    def id(self) -> bytes:
        """32 bytes naming this change (BLAKE2b of the body and the signature)."""
        return crypto.hash_wide(LABEL_CHANGE_ID, self.body() + self.signature)[:32]

    @classmethod
    def make(
        cls,
        signer: keyring.Signer,
        group_id: bytes,
        parent: Change | None,
        kind: Kind,
        target: bytes,
        at: int,
    ) -> Change:
        """A change by `signer`, following `parent` (None only for create)."""
        unsigned = cls(
            group_id,
            b"" if parent is None else parent.id,
            0 if parent is None else parent.depth + 1,
            signer.verify_key,
            kind,
            target,
            at,
            b"",
        )
        signature = signer.sign(LABEL_CHANGE + unsigned.body())
        return dataclasses.replace(unsigned, signature=signature)

    def verify(self) -> None:
        """BadSignatureError unless the author signed exactly this change."""
        crypto.verify(self.author, LABEL_CHANGE + self.body(), self.signature)

    def to_bytes(self) -> bytes:
        packed: bytes = msgpack.packb([self.body(), self.signature])
        return packed

    @classmethod
    def from_bytes(cls, data: bytes) -> Change:
        """Parse and check the shape and the signature (MalformedError /
        BadSignatureError); whether the author may make it is `resolve`'s business."""
        try:
            body, signature = msgpack.unpackb(data, raw=False)
            version, group_id, parent, depth, author, kind, target, at = msgpack.unpackb(
                body, raw=False
            )
        except (*_DECODE_ERRORS, AttributeError):
            raise MalformedError("group change is damaged") from None
        if (
            version != VERSION
            or not _is_bytes(group_id, GROUP_ID_SIZE)
            or not (parent == b"" or _is_bytes(parent, 32))
            or type(depth) is not int
            or not 0 <= depth < 2**32
            or (depth == 0) != (parent == b"")
            or not _is_bytes(author, 32)
            or type(kind) is not str
            or kind not in KINDS
            or not _is_bytes(target, 32)
            or type(at) is not int
            or not _is_bytes(signature, 64)
        ):
            raise MalformedError("group change is damaged")
        change = cls(group_id, parent, depth, author, cast(Kind, kind), target, at, signature)
        if change.body() != body:
            raise MalformedError("group change is not in its canonical form")
        change.verify()
        return change


def _is_bytes(value: object, size: int) -> bool:
    return type(value) is bytes and len(value) == size


# -- the state: a pure function of the set of changes --------------------------------------


@dataclass
class GroupState:
    """Who is in the group, who administers it, and which key is current."""

    group_id: bytes
    members: dict[bytes, Role]  # verify key -> role
    key_change: bytes  # the id of the change whose secret is the current key
    head: Change  # the change the next one should follow
    applied: list[bytes]  # change ids, in the order applied
    void: dict[bytes, str]  # change id -> why it was refused
    keys: list[bytes]  # ids of every key change applied, oldest first
    # Who was a member while each key was current: their messages under it are accepted.
    members_under: dict[bytes, set[bytes]]
    rekey_wanted: bool = False  # someone left: an admin should issue a rekey

    @property
    def admins(self) -> set[bytes]:
        return {vk for vk, role in self.members.items() if role == "admin"}


def resolve(changes: Iterable[Change], genesis_id: bytes | None = None) -> GroupState:
    """The group's state from every change known (verified ones only: pass them through
    Change.from_bytes or Change.verify first). MalformedError if there is no create.

    `genesis_id` pins the group's create: a member knows it from the moment it created
    or joined the group, and any other create of the same group id (a member can sign
    one, and grind its id) is ignored. Without it (the first invitation, whose sender
    we trust as an admin), the create with the smallest id is the group."""
    by_id: dict[bytes, Change] = {}
    for change in changes:
        by_id.setdefault(change.id, change)
    creates = sorted(
        (
            c
            for c in by_id.values()
            if c.kind == "create" and c.depth == 0 and genesis_id in (None, c.id)
        ),
        key=lambda c: c.id,
    )
    if not creates:
        raise MalformedError("no create change: not a group")
    genesis = creates[0]
    reachable = _reachable(genesis, by_id)
    state = GroupState(
        genesis.group_id,
        {genesis.author: "admin"},
        genesis.id,
        genesis,
        [genesis.id],
        {},
        [genesis.id],
        {genesis.id: {genesis.author}},
    )
    for change in sorted(reachable, key=lambda c: (c.depth, c.id)):
        if change is genesis:
            continue
        refusal = _refusal(state, change)
        if refusal is not None:
            state.void[change.id] = refusal
        else:
            _apply(state, change)
            state.applied.append(change.id)
            # The last applied change, which every member who applied the same changes
            # names as parent; never a void one (a member's void change, sent to one
            # admin alone, would orphan that admin's next change for everyone else).
            state.head = change
    return state


def _reachable(genesis: Change, by_id: dict[bytes, Change]) -> list[Change]:
    """The changes of `genesis`'s group whose parents lead to it, each one deeper than
    its parent (a change naming an unknown parent waits until the parent comes)."""
    children: dict[bytes, list[Change]] = {}
    for change in by_id.values():
        if change.group_id == genesis.group_id and change.parent:
            children.setdefault(change.parent, []).append(change)
    found, todo = [genesis], [genesis]
    while todo:
        parent = todo.pop()
        for child in children.get(parent.id, []):
            if child.depth == parent.depth + 1:
                found.append(child)
                todo.append(child)
    return found


def _refusal(state: GroupState, change: Change) -> str | None:
    """Why `change` cannot apply to `state`, or None."""
    author_role = state.members.get(change.author)
    target_role = state.members.get(change.target)
    admins = state.admins
    if change.kind == "create":
        return "a second create"
    if change.kind == "leave":
        if change.target != change.author or target_role is None:
            return "only a member leaves, and only itself"
        if admins == {change.author}:
            return "the last admin cannot leave (promote someone first)"
        return None
    if author_role != "admin":
        return "the author is not an admin"
    if change.kind == "add":
        if target_role is not None:
            return "already a member"
        if len(state.members) >= MAX_MEMBERS:
            return f"a group has at most {MAX_MEMBERS} members"
        return None
    if change.kind == "promote":
        return "not a member" if target_role is None else None
    if change.kind == "remove":
        if target_role is None:
            return "not a member"
        if admins == {change.target}:
            return "the last admin cannot be removed"
        return None
    if change.kind == "rekey":
        return None if change.target == change.author else "a rekey names its author"
    return "unknown kind"  # pragma: no cover - KINDS is closed


def _apply(state: GroupState, change: Change) -> None:
    if change.kind == "add":
        state.members[change.target] = "member"
    elif change.kind == "promote":
        state.members[change.target] = "admin"
    elif change.kind in ("remove", "leave"):
        del state.members[change.target]
        state.rekey_wanted = change.kind == "leave"
    if change.kind in KEY_KINDS:
        state.key_change = change.id
        state.keys.append(change.id)
        state.members_under[change.id] = set(state.members)
        state.rekey_wanted = False
    else:
        state.members_under[state.key_change] |= set(state.members)


def recipients_of(state: GroupState) -> Iterator[bytes]:
    """Who gets the current key (every member but none removed), in a stable order."""
    yield from sorted(state.members)
