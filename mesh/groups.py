"""Groups (issue 17), the pure core: a group's membership log, its keys, and one sealed
store per message. No I/O, no clock (callers pass times). Not wired into Node, the CLI
or the chat yet; docs/protocol.md ("Groups") says what is decided and what is left.

Membership is a log of **changes**, each signed by its author's identity key and naming
the change it follows (its parent): a hash chain that forks when two admins act at
once. The state is a pure function of the *set* of changes known: every change that
reaches the group's first change through its parents is applied in the order (depth,
change id), and a change whose rule fails in the state reached so far is void. Members
who know the same changes therefore agree, whatever order the changes arrived in.

Keys: the author of `create`, `remove` and `rekey` picks a new random 32-byte group
secret and hands it to every member of the state after the change, over each one's
contact channel (sealed per member: a key is fanned out, a message body never is). From
a secret come the message key and a mailbox root, blinded per epoch as a person's is
(mesh.keyring, Tor's key blinding), so the group's mailbox of the day cannot be
computed from anything public and changes with every key.

A message is sealed once under the message key and stored once in the group's mailbox
of the day; inside, it is signed by its author (members check who wrote it, replicas
learn nothing).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final, Literal

import msgpack

from mesh import crypto, keyring
from mesh.errors import MalformedError, NotForUsError, RefusedError

GROUP_ID_SIZE: Final = 16
MESSAGE_ID_SIZE: Final = 16
MAX_MEMBERS: Final = 1000  # issue 17 asks for at least 250
MAX_TEXT_BYTES: Final = 3900  # fits the largest record with its signature
VERSION: Final = 1

LABEL_CHANGE: Final = b"mesh/v1/group/change"
LABEL_CHANGE_ID: Final = b"mesh/v1/group/change-id"
LABEL_MESSAGE_KEY: Final = b"mesh/v1/group/message-key"
LABEL_MESSAGE_SIGNATURE: Final = b"mesh/v1/group/message-signature"
LABEL_MAILBOX_ROOT: Final = b"mesh/v1/group/mailbox-root"
LABEL_MAILBOX_PREFIX: Final = b"mesh/v1/group/mailbox-prefix"
LABEL_KEY_WRAP: Final = b"mesh/v1/group/key-wrap"

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
            or kind not in KINDS
            or not _is_bytes(target, 32)
            or type(at) is not int
            or not _is_bytes(signature, 64)
        ):
            raise MalformedError("group change is damaged")
        change = cls(group_id, parent, depth, author, kind, target, at, signature)
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


def resolve(changes: Iterable[Change]) -> GroupState:
    """The group's state from every change known (verified ones only: pass them through
    Change.from_bytes or Change.verify first). MalformedError if there is no create."""
    by_id: dict[bytes, Change] = {}
    for change in changes:
        by_id.setdefault(change.id, change)
    creates = sorted(
        (c for c in by_id.values() if c.kind == "create" and c.depth == 0),
        key=lambda c: c.id,
    )
    if not creates:
        raise MalformedError("no create change: not a group")
    genesis = creates[0]  # two creates of one group id: the smaller id is the group
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
        state.head = change  # the deepest, by id: every member names the same parent
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


# -- keys and the mailbox ------------------------------------------------------------------


@dataclass(frozen=True)
class GroupKey:
    """One generation's secret and what is derived from it. `repr` never shows it."""

    change_id: bytes  # the key change that made it current
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not _is_bytes(self.secret, 32) or not _is_bytes(self.change_id, 32):
            raise MalformedError("a group key is 32 bytes, named by a 32-byte change id")

    @classmethod
    def generate(cls, change: Change) -> GroupKey:
        return cls(change.id, crypto.random_bytes(32))

    @property
    def message_key(self) -> bytes:
        return crypto.derive_key(self.secret, LABEL_MESSAGE_KEY)

    @property
    def mailbox_root(self) -> keyring.MailboxRoot:
        """The mailbox root every member can sign with (listen, delete)."""
        scalar = crypto.scalar_reduce(crypto.hash_wide(LABEL_MAILBOX_ROOT, self.secret))
        prefix = crypto.derive_key(self.secret, LABEL_MAILBOX_PREFIX)
        return keyring.MailboxRoot(scalar, prefix, crypto.scalar_public(scalar))

    def mailbox_key(self, epoch: int, length: int = keyring.EPOCH_SECONDS) -> bytes:
        return keyring.mailbox_key_at(self.mailbox_root.public, length, epoch)


# -- records of the group mailbox: sealed once, padded like every other record -----------

RECORD_MESSAGE: Final = "m"  # a member's message, signed by its author
RECORD_CONTROL: Final = "c"  # membership changes and key hand-overs, posted by a member
RECORD_RECEIPT: Final = "r"  # a member's delivery receipt for some messages, signed
MAX_RECEIPT_IDS: Final = 64
LABEL_RECEIPT_SIGNATURE: Final = b"mesh/v1/group/receipt-signature"
WRAP_SIZE: Final = crypto.AEAD_NONCE_SIZE + 32 + crypto.AEAD_TAG_SIZE
_RECORD_OVERHEAD: Final = crypto.AEAD_NONCE_SIZE + crypto.AEAD_TAG_SIZE
_PAD_MARKER: Final = 0x80
MAX_WRAPS: Final = 48  # key hand-overs per control record (fits the largest bucket)
MAX_CHANGES_PER_RECORD: Final = 12


def record_sizes() -> tuple[int, ...]:
    """The plaintext sizes a group record is padded to: each gives a ciphertext of one
    of envelope's record sizes, so a replica cannot tell a group record from a contact's."""
    from mesh import envelope  # envelope does not import groups: no cycle

    return tuple(b + envelope.SEAL_OVERHEAD - _RECORD_OVERHEAD for b in envelope.PAD_BUCKETS)


def _pad(inner: bytes) -> bytes:
    for size in record_sizes():
        if len(inner) < size:
            return inner + bytes([_PAD_MARKER]) + bytes(size - len(inner) - 1)
    raise MalformedError("a group record is at most the largest record size")


def _unpad(padded: bytes) -> bytes:
    stripped = padded.rstrip(b"\x00")
    if not stripped or stripped[-1] != _PAD_MARKER:
        raise MalformedError("group record: bad padding")
    return stripped[:-1]


def _seal_record(key: GroupKey, group_id: bytes, inner: bytes) -> bytes:
    nonce = crypto.random_bytes(crypto.AEAD_NONCE_SIZE)
    aad = group_id + key.change_id
    return nonce + crypto.aead_encrypt(key.message_key, nonce, _pad(inner), aad)


def _open_record(key: GroupKey, group_id: bytes, data: bytes) -> bytes | None:
    nonce, body = data[: crypto.AEAD_NONCE_SIZE], data[crypto.AEAD_NONCE_SIZE :]
    if len(nonce) != crypto.AEAD_NONCE_SIZE:
        return None
    padded = crypto.aead_decrypt(key.message_key, nonce, body, group_id + key.change_id)
    return None if padded is None else _unpad(padded)


@dataclass(frozen=True)
class GroupMessage:
    group_id: bytes
    key_change: bytes
    author: bytes
    message_id: bytes
    sent_at: int
    text: str


@dataclass(frozen=True)
class Control:
    """What a member posts in the group mailbox besides messages: membership changes
    (each signed by its author) and, with `key_change`, that key's secret wrapped for
    members, each wrap sealed with a key only the poster and that member derive."""

    group_id: bytes
    poster: bytes  # verify key
    changes: tuple[bytes, ...]  # Change.to_bytes()
    key_change: bytes  # b"" when no key is handed over
    wraps: tuple[bytes, ...] = field(repr=False, default=())


@dataclass(frozen=True)
class GroupReceipt:
    """A member says it has these messages (of any author: each author counts its own)."""

    group_id: bytes
    member: bytes  # verify key
    message_ids: tuple[bytes, ...]


def _receipt_signed(group_id: bytes, key_change: bytes, ids: list[bytes]) -> bytes:
    packed: bytes = msgpack.packb([VERSION, group_id, key_change, ids])
    return LABEL_RECEIPT_SIGNATURE + packed


def seal_receipt(
    member: keyring.Signer, group_id: bytes, key: GroupKey, message_ids: Iterable[bytes]
) -> bytes:
    """One record for up to MAX_RECEIPT_IDS messages: ["r", member, ids, signature]."""
    ids = list(message_ids)
    if not 0 < len(ids) <= MAX_RECEIPT_IDS or not all(_is_bytes(i, MESSAGE_ID_SIZE) for i in ids):
        raise MalformedError(f"a group receipt names 1 to {MAX_RECEIPT_IDS} message ids")
    signature = member.sign(_receipt_signed(group_id, key.change_id, ids))
    inner: bytes = msgpack.packb([VERSION, RECORD_RECEIPT, member.verify_key, ids, signature])
    return _seal_record(key, group_id, inner)


def _check_receipt(state: GroupState, key: GroupKey, fields: list[object]) -> GroupReceipt:
    if len(fields) != 5:
        raise MalformedError("group receipt is damaged")
    _v, _t, member, ids, signature = fields
    if (
        not _is_bytes(member, 32)
        or type(ids) is not list
        or not 0 < len(ids) <= MAX_RECEIPT_IDS
        or not all(_is_bytes(i, MESSAGE_ID_SIZE) for i in ids)
        or not _is_bytes(signature, 64)
    ):
        raise MalformedError("group receipt is damaged")
    assert isinstance(member, bytes) and isinstance(signature, bytes)
    crypto.verify(member, _receipt_signed(state.group_id, key.change_id, ids), signature)
    if member not in state.members_under.get(key.change_id, set()):
        raise RefusedError("a receipt from someone who was not a member under this key")
    return GroupReceipt(state.group_id, member, tuple(ids))


def _signed_part(
    group_id: bytes, key_change: bytes, message_id: bytes, sent_at: int, text: str
) -> bytes:
    packed: bytes = msgpack.packb([VERSION, group_id, key_change, message_id, sent_at, text])
    return LABEL_MESSAGE_SIGNATURE + packed


def seal_message(
    author: keyring.Signer,
    group_id: bytes,
    key: GroupKey,
    message_id: bytes,
    sent_at: int,
    text: str,
) -> bytes:
    """nonce || XChaCha20-Poly1305(message key, ["m", the author's key, ids, time, text,
    signature] padded to a record size), the group id and key change as associated data
    (never on the wire)."""
    if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
        raise MalformedError(f"a group message is at most {MAX_TEXT_BYTES} bytes")
    if not _is_bytes(message_id, MESSAGE_ID_SIZE) or not _is_bytes(group_id, GROUP_ID_SIZE):
        raise MalformedError("group and message ids are 16 bytes")
    signature = author.sign(_signed_part(group_id, key.change_id, message_id, sent_at, text))
    fields = [VERSION, RECORD_MESSAGE, author.verify_key, message_id, sent_at, text, signature]
    inner: bytes = msgpack.packb(fields)
    return _seal_record(key, group_id, inner)


def wrap_key(pair: bytes, group_id: bytes) -> bytes:
    """The key of hand-overs between two members: from their crypto_kx pair secret."""
    return crypto.derive_key(pair, LABEL_KEY_WRAP + group_id)


def wrap_secret(pair: bytes, group_id: bytes, key: GroupKey) -> bytes:
    """`key`'s secret for one member: nonce || XChaCha20-Poly1305(wrap key, secret,
    AAD = group id || key change id)."""
    nonce = crypto.random_bytes(crypto.AEAD_NONCE_SIZE)
    sealed = crypto.aead_encrypt(
        wrap_key(pair, group_id), nonce, key.secret, group_id + key.change_id
    )
    return nonce + sealed


def unwrap_secret(pair: bytes, control: Control) -> GroupKey | None:
    """The key handed to us in `control`, if one of its wraps is ours."""
    if not control.key_change:
        return None
    key = wrap_key(pair, control.group_id)
    aad = control.group_id + control.key_change
    for wrap in control.wraps:
        nonce, body = wrap[: crypto.AEAD_NONCE_SIZE], wrap[crypto.AEAD_NONCE_SIZE :]
        secret = crypto.aead_decrypt(key, nonce, body, aad)
        if secret is not None:
            return GroupKey(control.key_change, secret)
    return None


def control_records(
    group_id: bytes,
    poster: bytes,
    changes: Iterable[bytes],
    key_change: bytes = b"",
    wraps: Iterable[bytes] = (),
) -> list[Control]:
    """Changes and hand-overs split into control records that each fit the largest
    record size (a key for 250 members takes six)."""
    budget = record_sizes()[-1] - 120  # the fields around the lists, with room to spare
    records: list[Control] = []
    batch_changes: list[bytes] = []
    batch_wraps: list[bytes] = []
    size = 0

    def flush() -> None:
        nonlocal batch_changes, batch_wraps, size
        if batch_changes or batch_wraps:
            records.append(
                Control(
                    group_id,
                    poster,
                    tuple(batch_changes),
                    key_change if batch_wraps else b"",
                    tuple(batch_wraps),
                )
            )
        batch_changes, batch_wraps, size = [], [], 0

    for data in changes:
        if size + len(data) + 3 > budget or len(batch_changes) >= MAX_CHANGES_PER_RECORD:
            flush()
        batch_changes.append(data)
        size += len(data) + 3
    for wrap in wraps:
        if size + len(wrap) + 2 > budget or len(batch_wraps) >= MAX_WRAPS:
            flush()
        batch_wraps.append(wrap)
        size += len(wrap) + 2
    flush()
    return records


def seal_control(key: GroupKey, control: Control) -> bytes:
    """A control record, sealed under `key` (the one its readers hold)."""
    if len(control.wraps) > MAX_WRAPS or len(control.changes) > MAX_CHANGES_PER_RECORD:
        raise MalformedError("too many changes or hand-overs for one record")
    fields = [
        VERSION,
        RECORD_CONTROL,
        control.poster,
        list(control.changes),
        control.key_change,
        list(control.wraps),
    ]
    inner: bytes = msgpack.packb(fields)
    return _seal_record(key, control.group_id, inner)


def open_record(
    state: GroupState, key: GroupKey, data: bytes
) -> GroupMessage | Control | GroupReceipt:
    """What a group record holds, opened with the key of the mailbox it was found in:
    a message (checked as `open_message` does) or a control record (its changes are
    checked by the caller, through Change.from_bytes and resolve). NotForUsError if the
    key does not open it; MalformedError; BadSignatureError; RefusedError."""
    inner = _open_record(key, state.group_id, data)
    if inner is None:
        raise NotForUsError("this group key does not open it")
    try:
        fields = msgpack.unpackb(inner, raw=False)
    except (*_DECODE_ERRORS, AttributeError):
        raise MalformedError("group record is damaged") from None
    if type(fields) is not list or len(fields) < 2 or fields[0] != VERSION:
        raise MalformedError("group record is damaged")
    if fields[1] == RECORD_MESSAGE:
        return _check_message(state, key, fields)
    if fields[1] == RECORD_CONTROL:
        return _check_control(state.group_id, fields)
    if fields[1] == RECORD_RECEIPT:
        return _check_receipt(state, key, fields)
    raise MalformedError("group record of an unknown type")


def _check_control(group_id: bytes, fields: list[object]) -> Control:
    if len(fields) != 6:
        raise MalformedError("group control record is damaged")
    _v, _t, poster, changes, key_change, wraps = fields
    if (
        not _is_bytes(poster, 32)
        or type(changes) is not list
        or len(changes) > MAX_CHANGES_PER_RECORD
        or not all(type(c) is bytes and len(c) < 1024 for c in changes)
        or not (key_change == b"" or _is_bytes(key_change, 32))
        or type(wraps) is not list
        or len(wraps) > MAX_WRAPS
        or not all(_is_bytes(w, WRAP_SIZE) for w in wraps)
    ):
        raise MalformedError("group control record is damaged")
    assert isinstance(poster, bytes) and isinstance(key_change, bytes)
    return Control(group_id, poster, tuple(changes), key_change, tuple(wraps))


def open_message(state: GroupState, keys: Iterable[GroupKey], data: bytes) -> GroupMessage:
    """The message, if one of `keys` opens it and its author signed it and was a member
    while that key was current. NotForUsError (no key opens it, or it is no message),
    MalformedError, BadSignatureError, RefusedError (the author was not a member then)."""
    for key in keys:
        try:
            opened = open_record(state, key, data)
        except NotForUsError:
            continue
        if isinstance(opened, GroupMessage):
            return opened
        raise NotForUsError("a control record, not a message")
    raise NotForUsError("no key of this group opens it")


def _check_message(state: GroupState, key: GroupKey, fields: list[object]) -> GroupMessage:
    if len(fields) != 7:
        raise MalformedError("group message is damaged")
    _version, _type, author, message_id, sent_at, text, signature = fields
    if (
        not _is_bytes(author, 32)
        or not _is_bytes(message_id, MESSAGE_ID_SIZE)
        or type(sent_at) is not int
        or type(text) is not str
        or not _is_bytes(signature, 64)
    ):
        raise MalformedError("group message is damaged")
    assert isinstance(author, bytes) and isinstance(message_id, bytes)
    assert isinstance(sent_at, int) and isinstance(text, str) and isinstance(signature, bytes)
    signed = _signed_part(state.group_id, key.change_id, message_id, sent_at, text)
    crypto.verify(author, signed, signature)
    if author not in state.members_under.get(key.change_id, set()):
        raise RefusedError("the author was not a member while this key was current")
    return GroupMessage(state.group_id, key.change_id, author, message_id, sent_at, text)


# -- invitations: over the contact channel (envelope kind "group") -----------------------

INVITE_BUDGET: Final = 3300  # bytes of changes per invitation part (a contact message)


@dataclass(frozen=True)
class Invite:
    """One part of an invitation: the group's name and epoch length, its current key,
    and some of its changes (a large group's log comes in several parts)."""

    group_id: bytes
    name: str
    epoch_len: int
    key: GroupKey
    changes: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        fields = [
            VERSION,
            self.group_id,
            self.name,
            self.epoch_len,
            self.key.change_id,
            self.key.secret,
            list(self.changes),
        ]
        packed: bytes = msgpack.packb(fields)
        return packed

    @classmethod
    def from_bytes(cls, data: bytes) -> Invite:
        try:
            fields = msgpack.unpackb(data, raw=False)
            version, group_id, name, epoch_len, change_id, secret, changes = fields
        except (*_DECODE_ERRORS, AttributeError):
            raise MalformedError("group invitation is damaged") from None
        if (
            version != VERSION
            or not _is_bytes(group_id, GROUP_ID_SIZE)
            or type(name) is not str
            or not 0 < len(name) <= MAX_NAME_CHARS
            or type(epoch_len) is not int
            or not 60 <= epoch_len <= 7 * keyring.EPOCH_SECONDS
            or type(changes) is not list
            or not all(type(c) is bytes and len(c) < 1024 for c in changes)
        ):
            raise MalformedError("group invitation is damaged")
        return cls(group_id, name, epoch_len, GroupKey(change_id, secret), tuple(changes))


MAX_NAME_CHARS: Final = 64


def invite_parts(
    group_id: bytes, name: str, epoch_len: int, key: GroupKey, changes: Iterable[Change]
) -> list[Invite]:
    """The invitation of a new member, in parts that each fit a contact message."""
    parts: list[Invite] = []
    batch: list[bytes] = []
    size = 0
    for change in sorted(changes, key=lambda c: (c.depth, c.id)):
        data = change.to_bytes()
        if batch and size + len(data) > INVITE_BUDGET:
            parts.append(Invite(group_id, name, epoch_len, key, tuple(batch)))
            batch, size = [], 0
        batch.append(data)
        size += len(data) + 3
    parts.append(Invite(group_id, name, epoch_len, key, tuple(batch)))
    return parts


def recipients_of(state: GroupState) -> Iterator[bytes]:
    """Who gets the current key (every member but none removed), in a stable order."""
    yield from sorted(state.members)


__all__ = [
    "Change",
    "Control",
    "GroupKey",
    "GroupMessage",
    "GroupReceipt",
    "GroupState",
    "Invite",
    "control_records",
    "invite_parts",
    "open_message",
    "open_record",
    "recipients_of",
    "resolve",
    "seal_control",
    "seal_message",
    "seal_receipt",
    "unwrap_secret",
    "wrap_secret",
]
