"""Groups (issue 17), the pure core: keys, the records of a group's mailbox, and
invitations (no I/O, no clock: callers pass times). The membership log (changes and the
state they resolve to) is mesh/group_log.py, re-exported here; mesh/group_service.py
puts all of it on the network. docs/protocol.md ("Groups") has the whole design.

Keys: the author of `create`, `remove` and `rekey` picks a new random 32-byte group
secret and wraps it for every member of the state after the change (`wrap_secret`:
a key from the crypto_kx pair secret of the two identities). From a secret come the
message key and a mailbox root, blinded per epoch as a person's is (mesh.keyring, Tor's
key blinding), so the group's mailbox of the day cannot be computed from anything
public and changes with every key.

A message is sealed once under the message key, padded to a contact record's size, and
stored once in the group's mailbox of the day; inside, it is signed by its author
(members check who wrote it, replicas learn nothing).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import msgpack

from mesh import crypto, keyring
from mesh.errors import MalformedError, NotForUsError, RefusedError
from mesh.group_log import (  # re-exported: the membership log is part of groups
    GROUP_ID_SIZE as GROUP_ID_SIZE,
)
from mesh.group_log import (
    KEY_KINDS as KEY_KINDS,
)
from mesh.group_log import (
    KINDS as KINDS,
)
from mesh.group_log import (
    LABEL_CHANGE as LABEL_CHANGE,
)
from mesh.group_log import (
    LABEL_CHANGE_ID as LABEL_CHANGE_ID,
)
from mesh.group_log import (
    MAX_MEMBERS as MAX_MEMBERS,
)
from mesh.group_log import (
    MESSAGE_ID_SIZE as MESSAGE_ID_SIZE,
)
from mesh.group_log import (
    VERSION as VERSION,
)
from mesh.group_log import (
    Change as Change,
)
from mesh.group_log import (
    GroupState as GroupState,
)
from mesh.group_log import (
    Kind as Kind,
)
from mesh.group_log import (
    Role as Role,
)
from mesh.group_log import (
    _is_bytes as _is_bytes,
)
from mesh.group_log import (
    recipients_of as recipients_of,
)
from mesh.group_log import (
    resolve as resolve,
)

MAX_TEXT_BYTES: Final = 3900  # fits the largest record with its signature
LABEL_MESSAGE_KEY: Final = b"mesh/v1/group/message-key"
LABEL_MESSAGE_SIGNATURE: Final = b"mesh/v1/group/message-signature"
LABEL_MAILBOX_ROOT: Final = b"mesh/v1/group/mailbox-root"
LABEL_MAILBOX_PREFIX: Final = b"mesh/v1/group/mailbox-prefix"
LABEL_KEY_WRAP: Final = b"mesh/v1/group/key-wrap"
_DECODE_ERRORS = (ValueError, TypeError, OverflowError, msgpack.UnpackException)


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
        return _mailbox_key(self.secret, length, epoch)


@functools.lru_cache(maxsize=4096)
def _mailbox_key(secret: bytes, length: int, epoch: int) -> bytes:
    """Two scalar multiplications: cached, since a node's mailbox index is rebuilt at
    every merge of changes for every group's newest keys and the days around now."""
    return keyring.mailbox_key_at(GroupKey(bytes(32), secret).mailbox_root.public, length, epoch)


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
