"""Messages, DHT records and owner requests: build, seal, open, parse.

Pure: nothing here reads the clock or touches a socket; the caller passes `now` (float
seconds since the Unix epoch). One message, from the inside out:

    inner      msgpack [1, kind, message_id, sender_vk, recipient_vk, sent_at, ttl, body]
    signature  Ed25519 over b"mesh/message/v1\\x00" + inner; the recipient is inside the
               signed bytes, so nobody can re-address a message to someone else
    plaintext  msgpack [inner, signature] + 0x80 + zeros up to the next PAD_BUCKETS size
    record     [id = blake2b-128(ciphertext), expires_at, ciphertext, stamp], where
               ciphertext = crypto_box_seal(plaintext) to the recipient's X25519 key

Storage peers see a mailbox key, a size bucket and an expiry; nothing else.
Every failure to open or parse something that came from a peer is a RemoteProtocolError.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import msgpack  # type: ignore[import-untyped, unused-ignore]

from mesh import crypto
from mesh.errors import (
    EmptyMessageError,
    ExpiredError,
    MalformedError,
    MessageTooLargeError,
    NotForUsError,
    RefusedError,
)
from mesh.identity import MAILBOX_KEY_SIZE, Identity, PublicIdentity, id_for_key, mailbox_key_for
from mesh.keyring import Signer, parse_bundle

__all__ = [
    "ACKNOWLEDGING",
    "CIPHERTEXT_SIZES",
    "DEFAULT_TTL",
    "KINDS",
    "MAX_DELETE_IDS",
    "MAX_LISTEN_SECONDS",
    "MAX_OWNER_PAYLOAD",
    "MAX_RECEIPT_IDS",
    "MAX_STAMP_BYTES",
    "MAX_TEXT_BYTES",
    "MAX_TTL",
    "MESSAGE_ID_SIZE",
    "OWNER_OPS",
    "OWNER_REQUEST_SKEW",
    "PAD_BUCKETS",
    "RECORD_ID_SIZE",
    "SEAL_OVERHEAD",
    "KindName",
    "Message",
    "MessageKind",
    "OwnerOp",
    "OwnerOpName",
    "OwnerRequest",
    "Record",
    "check_record_format",
    "delete_payload",
    "expiry_for",
    "listen_payload",
    "open_record",
    "parse_delete_payload",
    "parse_listen_payload",
    "parse_receipt_body",
    "receipt_body",
    "record_id_for",
    "seal_message",
    "sign_owner_request",
    "verify_owner_request",
]


class MessageKind(StrEnum):
    """What a message carries. The value is what goes on the wire and into the store."""

    TEXT = "text"
    RECEIPT = "receipt"  # delivery receipt
    READ = "read"  # read receipt, sent only to contacts who opted in: docs/protocol.md
    KEYS = "keys"  # a contact's mailbox root and prekeys (mesh.keyring.Bundle)
    REQUEST = "request"  # a stranger's first message: their bundle and a short text
    GROUP = "group"  # a part of a group invitation (mesh.groups.Invite)


class OwnerOp(StrEnum):
    """What a mailbox's owner asks of its replicas (the value is signed and sent)."""

    DELETE = "delete"
    LISTEN = "listen"


# What callers may pass: a member, or its value spelled out.
KindName = MessageKind | Literal["text", "receipt", "read", "keys", "request", "group"]
OwnerOpName = OwnerOp | Literal["delete", "listen"]

MESSAGE_VERSION = 1
KINDS = frozenset(MessageKind)
ACKNOWLEDGING = frozenset({MessageKind.RECEIPT, MessageKind.READ})  # bodies: message ids
PAD_BUCKETS = (256, 512, 1024, 2048, 4096)
SEAL_OVERHEAD = crypto.SEAL_OVERHEAD
CIPHERTEXT_SIZES = frozenset(bucket + SEAL_OVERHEAD for bucket in PAD_BUCKETS)
MESSAGE_ID_SIZE = 16
RECORD_ID_SIZE = 16
MAX_STAMP_BYTES = 64
DEFAULT_TTL = 7 * 24 * 3600
MAX_TTL = 30 * 24 * 3600
OWNER_REQUEST_SKEW = 600
OWNER_OPS = frozenset(OwnerOp)
MAX_RECEIPT_IDS = 64
MAX_DELETE_IDS = 256
MAX_LISTEN_SECONDS = 3600

_MESSAGE_DOMAIN = b"mesh/message/v1\x00"
_OWNER_DOMAIN = b"mesh/owner/v1\x00"
_PAD_MARKER = 0x80
# Later than any real clock, early enough that sent_at + ttl stays an exact, finite float.
_MAX_TIMESTAMP = 2.0**40
_DECODE_ERRORS = (ValueError, TypeError, OverflowError, msgpack.UnpackException)


# -- msgpack and field helpers ------------------------------------------------------------


def _pack(obj: object) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def _unpack(data: bytes, what: str) -> object:
    """Decode msgpack from a peer; MalformedError for anything msgpack rejects."""
    if type(data) is not bytes:
        raise MalformedError(f"{what}: expected bytes")
    try:
        obj: object = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except _DECODE_ERRORS:
        raise MalformedError(f"{what}: not valid msgpack") from None
    return obj


def _fields(obj: object, count: int, what: str) -> list[Any]:
    if type(obj) is not list or len(obj) != count:
        raise MalformedError(f"{what}: expected a list of {count} fields")
    return obj


def _sized_bytes(value: object, size: int, what: str) -> bytes:
    if type(value) is not bytes or len(value) != size:
        raise MalformedError(f"{what}: expected {size} bytes")
    return value


def _timestamp(value: object, what: str) -> float:
    if type(value) is not float or not 0.0 <= value < _MAX_TIMESTAMP:
        raise MalformedError(f"{what}: expected a timestamp")
    return value


def _parse_id_list(data: bytes, size: int, max_count: int, what: str) -> list[bytes]:
    ids = _unpack(data, what)
    if type(ids) is not list or not 1 <= len(ids) <= max_count:
        raise MalformedError(f"{what}: expected a list of 1 to {max_count} ids")
    for item in ids:
        _sized_bytes(item, size, what)
    return ids


def _pack_id_list(ids: Sequence[bytes], size: int, max_count: int, what: str) -> bytes:
    items = list(ids)
    if not 1 <= len(items) <= max_count:
        raise ValueError(f"{what}: 1 to {max_count} ids, got {len(items)}")
    if any(type(item) is not bytes or len(item) != size for item in items):
        raise ValueError(f"{what}: every id is exactly {size} bytes")
    return _pack(items)


# -- messages -----------------------------------------------------------------------------


def expiry_for(sent_at: float, ttl: int) -> int:
    """Absolute expiry (whole seconds, rounded up) of a message; republishing never moves it."""
    return math.ceil(sent_at + ttl)


def record_id_for(ciphertext: bytes) -> bytes:
    """Record id: blake2b-128 of the ciphertext, so storing a record twice is idempotent."""
    return hashlib.blake2b(ciphertext, digest_size=RECORD_ID_SIZE).digest()


MAX_REQUEST_TEXT = 1024  # bytes of UTF-8 in a request (a bundle rides along)


def request_body(bundle: bytes, text: str) -> bytes:
    """Body of a "request": the stranger's bundle (so accepting needs no round trip)
    and a short text."""
    data = text.encode("utf-8")
    if not 1 <= len(data) <= MAX_REQUEST_TEXT:
        raise MessageTooLargeError(f"a request says 1 to {MAX_REQUEST_TEXT} bytes")
    return _pack([bundle, data])


def parse_request_body(body: bytes) -> tuple[bytes, bytes]:
    """(bundle, UTF-8 text) of a request; MalformedError unless exactly well formed."""
    bundle, text = _fields(_unpack(body, "request"), 2, "request")
    if type(bundle) is not bytes or type(text) is not bytes:
        raise MalformedError("request: fields are not bytes")
    if not 1 <= len(text) <= MAX_REQUEST_TEXT:
        raise MalformedError("request: text length out of range")
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedError("request: text is not UTF-8") from None
    parse_bundle(bundle)
    return bundle, text


def receipt_body(message_ids: Sequence[bytes]) -> bytes:
    """Body of a "receipt" message acknowledging 1 to MAX_RECEIPT_IDS message ids."""
    return _pack_id_list(message_ids, MESSAGE_ID_SIZE, MAX_RECEIPT_IDS, "receipt")


def parse_receipt_body(body: bytes) -> list[bytes]:
    """Message ids in a receipt body; MalformedError unless exactly well formed."""
    return _parse_id_list(body, MESSAGE_ID_SIZE, MAX_RECEIPT_IDS, "receipt")


@dataclass(frozen=True)
class Message:
    """A message after opening (or as sent). `sender` and `recipient` are ID strings."""

    id: bytes
    sender: str
    recipient: str
    sent_at: float
    ttl: int
    kind: MessageKind
    body: bytes
    group: bytes | None = None  # the group id of a group message (sender: its author)

    @property
    def text(self) -> str:
        if self.kind != MessageKind.TEXT:
            raise ValueError(f"a {self.kind} message has no text")
        return self.body.decode("utf-8")

    @property
    def receipt_ids(self) -> list[bytes]:
        if self.kind not in ACKNOWLEDGING:
            raise ValueError(f"a {self.kind} message acknowledges nothing")
        return parse_receipt_body(self.body)

    @property
    def expires_at(self) -> int:
        return expiry_for(self.sent_at, self.ttl)


def _check_body(kind: str, body: bytes) -> None:
    """Content rules shared by both ends; MalformedError."""
    if kind == MessageKind.TEXT:
        if not body:
            raise MalformedError("text message: empty")
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedError("text message: not UTF-8") from None
    elif kind == MessageKind.KEYS:
        parse_bundle(body)
    elif kind == MessageKind.REQUEST:
        parse_request_body(body)
    elif kind == MessageKind.GROUP:
        pass  # parsed by mesh.groups.Invite.from_bytes where it is used
    else:
        parse_receipt_body(body)


def _pad(plaintext: bytes) -> bytes:
    # The marker is always present, so unpadding is unambiguous even if plaintext ends in 0.
    for bucket in PAD_BUCKETS:
        if len(plaintext) < bucket:
            return plaintext + bytes([_PAD_MARKER]) + bytes(bucket - len(plaintext) - 1)
    raise MessageTooLargeError(f"message too large: the limit is {MAX_TEXT_BYTES} bytes")


def _unpad(padded: bytes) -> bytes:
    stripped = padded.rstrip(b"\x00")
    if not stripped or stripped[-1] != _PAD_MARKER:
        raise MalformedError("message: bad padding")
    return stripped[:-1]


def _sealed_plaintext(inner: bytes, signature: bytes) -> bytes:
    return _pad(_pack([inner, signature]))


def _max_text_bytes() -> int:
    """Largest text body that still fits the biggest bucket, measured on a worst case."""
    # Any probe size with the same msgpack length headers (bin16) as the answer will do;
    # the worst case has the longest ttl encoding (MAX_TTL needs a uint32).
    probe = 1000
    fields = [MESSAGE_VERSION, "text", bytes(MESSAGE_ID_SIZE), bytes(32), bytes(32), 0.0, MAX_TTL]
    inner = _pack([*fields, bytes(probe)])
    overhead = len(_pack([inner, bytes(crypto.SIGNATURE_SIZE)])) - probe + 1  # +1: marker
    return PAD_BUCKETS[-1] - overhead


MAX_TEXT_BYTES = _max_text_bytes()


def _outgoing_body(kind: KindName, body: bytes | str, ttl: int) -> bytes:
    """Check what the caller wants to send: LocalError for user mistakes, ValueError for bugs."""
    if kind not in KINDS:
        raise ValueError(f"unknown message kind {kind!r}")
    if type(ttl) is not int or not 1 <= ttl <= MAX_TTL:
        raise ValueError(f"ttl must be 1 to {MAX_TTL} seconds")
    data = body.encode("utf-8") if isinstance(body, str) and kind == "text" else body
    if type(data) is not bytes:
        raise ValueError("body must be bytes (or str for text)")
    if not data:
        raise EmptyMessageError("nothing to send: the message is empty")
    if len(data) > MAX_TEXT_BYTES:
        raise MessageTooLargeError(
            f"this message is too long: {len(data)} bytes, the limit is {MAX_TEXT_BYTES}; "
            "split it into several messages"
        )
    try:
        _check_body(kind, data)
    except MalformedError as exc:
        raise ValueError(str(exc)) from None
    return data


def seal_message(
    sender: Identity,
    recipient: PublicIdentity,
    kind: KindName,
    body: bytes | str,
    now: float,
    ttl: int = DEFAULT_TTL,
    message_id: bytes | None = None,
    seal_to: bytes | None = None,
) -> tuple[Message, Record]:
    """Sign and seal a message for `recipient`; returns what was sent and its DHT record.

    `seal_to`: the X25519 key to seal to (a contact's prekey); by default the recipient's
    identity key (only a new contact's first bundle, on the introduction mailbox)."""
    data = _outgoing_body(kind, body, ttl)
    mid = os.urandom(MESSAGE_ID_SIZE) if message_id is None else message_id
    if type(mid) is not bytes or len(mid) != MESSAGE_ID_SIZE:
        raise ValueError(f"message_id is exactly {MESSAGE_ID_SIZE} bytes")
    sent_at = float(now)
    fields = [MESSAGE_VERSION, kind, mid, sender.verify_key, recipient.verify_key, sent_at, ttl]
    inner = _pack([*fields, data])
    signature = sender.sign(_MESSAGE_DOMAIN + inner)
    box_key = recipient.box_public_key if seal_to is None else seal_to
    ciphertext = crypto.seal(box_key, _sealed_plaintext(inner, signature))
    record = Record(record_id_for(ciphertext), expiry_for(sent_at, ttl), ciphertext)
    message = Message(mid, sender.id, recipient.id, sent_at, ttl, MessageKind(kind), data)
    return message, record


def unsealed_message(
    sender: Identity,
    recipient: PublicIdentity,
    kind: KindName,
    body: bytes | str,
    now: float,
    ttl: int = DEFAULT_TTL,
) -> Message:
    """A message checked and given its id, to be sealed later (its recipient's keys have
    not arrived yet); sealing it then with the same id and `sent_at` gives the same
    message to the recipient."""
    data = _outgoing_body(kind, body, ttl)
    mid = os.urandom(MESSAGE_ID_SIZE)
    return Message(mid, sender.id, recipient.id, float(now), ttl, MessageKind(kind), data)


@dataclass(frozen=True)
class _Inner:
    kind: MessageKind
    message_id: bytes
    sender_vk: bytes
    recipient_vk: bytes
    sent_at: float
    ttl: int
    body: bytes


def _parse_inner(packed: bytes) -> _Inner:
    fields = _fields(_unpack(packed, "message"), 8, "message")
    version, kind, mid, sender_vk, recipient_vk, sent_at, ttl, body = fields
    if type(version) is not int or version != MESSAGE_VERSION:
        raise MalformedError("message: unknown version")
    if type(kind) is not str or kind not in KINDS:
        raise MalformedError("message: unknown kind")
    if type(ttl) is not int or not 1 <= ttl <= MAX_TTL:
        raise MalformedError("message: ttl out of range")
    if type(body) is not bytes:
        raise MalformedError("message: body is not bytes")
    _check_body(kind, body)
    return _Inner(
        MessageKind(kind),
        _sized_bytes(mid, MESSAGE_ID_SIZE, "message id"),
        _sized_bytes(sender_vk, crypto.KEY_SIZE, "sender key"),
        _sized_bytes(recipient_vk, crypto.KEY_SIZE, "recipient key"),
        _timestamp(sent_at, "message sent_at"),
        ttl,
        body,
    )


def _split_plaintext(plaintext: bytes) -> tuple[bytes, bytes]:
    inner, signature = _fields(_unpack(_unpad(plaintext), "sealed message"), 2, "sealed message")
    if type(inner) is not bytes:
        raise MalformedError("sealed message: inner message is not bytes")
    return inner, _sized_bytes(signature, crypto.SIGNATURE_SIZE, "signature")


def _unseal(
    me: Identity, ciphertext: bytes, prekeys: Sequence[tuple[bytes, bytes]] | None
) -> bytes:
    if prekeys is None:
        return me.unseal(ciphertext)
    for public, secret in prekeys:
        plaintext = crypto.unseal_with(public, secret, ciphertext)
        if plaintext is not None:
            return plaintext
    raise NotForUsError("cannot open: sealed to none of our prekeys")


def open_record(
    me: Identity,
    record: Record,
    now: float,
    prekeys: Sequence[tuple[bytes, bytes]] | None = None,
) -> Message:
    """Open a record from our mailbox; a RemoteProtocolError subclass for any problem.

    `prekeys`: the (public, secret) X25519 pairs to try, in order (a contact mailbox:
    the identity key is then never tried); None opens with the identity key (the
    introduction mailbox, and the fixed mailbox of the previous release)."""
    check_record_format(record, now)
    packed_inner, signature = _split_plaintext(_unseal(me, record.ciphertext, prekeys))
    inner = _parse_inner(packed_inner)
    if inner.recipient_vk != me.verify_key:
        raise NotForUsError("message is addressed to someone else")
    crypto.verify(inner.sender_vk, _MESSAGE_DOMAIN + packed_inner, signature)
    # A storage peer could rewrite expires_at (it is outside the ciphertext): pin it to
    # the signed sent_at + ttl.
    if record.expires_at != expiry_for(inner.sent_at, inner.ttl):
        raise MalformedError("record expiry does not match the signed message")
    if inner.sent_at + inner.ttl <= now:
        raise ExpiredError("message has expired")
    sender = id_for_key(inner.sender_vk)
    return Message(
        inner.message_id, sender, me.id, inner.sent_at, inner.ttl, inner.kind, inner.body
    )


# -- records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """What a storage peer holds: an opaque ciphertext, its id, expiry and a stamp."""

    id: bytes
    expires_at: int
    ciphertext: bytes
    stamp: bytes = b""

    def to_obj(self) -> list[object]:
        """The msgpack-ready list, for embedding in a larger message."""
        return [self.id, self.expires_at, self.ciphertext, self.stamp]

    def pack(self) -> bytes:
        return _pack(self.to_obj())

    @classmethod
    def from_obj(cls, obj: object) -> Record:
        """Validate an already-decoded [id, expires_at, ciphertext, stamp]; MalformedError."""
        record_id, expires_at, ciphertext, stamp = _fields(obj, 4, "record")
        if type(expires_at) is not int or expires_at < 0:
            raise MalformedError("record: expires_at is not a timestamp")
        if type(ciphertext) is not bytes or len(ciphertext) not in CIPHERTEXT_SIZES:
            raise MalformedError("record: ciphertext is not a padded bucket size")
        if type(stamp) is not bytes or len(stamp) > MAX_STAMP_BYTES:
            raise MalformedError(f"record: stamp is not bytes of at most {MAX_STAMP_BYTES}")
        return cls(
            _sized_bytes(record_id, RECORD_ID_SIZE, "record id"), expires_at, ciphertext, stamp
        )

    @classmethod
    def unpack(cls, data: bytes) -> Record:
        """Strictly decode `pack()` output; MalformedError for anything else."""
        return cls.from_obj(_unpack(data, "record"))


def check_record_format(record: Record, now: float) -> None:
    """What a storage peer can check without keys; MalformedError or ExpiredError."""
    if len(record.ciphertext) not in CIPHERTEXT_SIZES:
        raise MalformedError("record: ciphertext is not a padded bucket size")
    if len(record.stamp) > MAX_STAMP_BYTES:
        raise MalformedError("record: stamp too long")
    if record.id != record_id_for(record.ciphertext):
        raise MalformedError("record: id does not match ciphertext")
    if record.expires_at <= now:
        raise ExpiredError("record has expired")
    if record.expires_at > now + MAX_TTL + OWNER_REQUEST_SKEW:
        raise MalformedError("record: expiry too far in the future")


# -- owner requests (delete, listen) ------------------------------------------------------


def delete_payload(record_ids: Sequence[bytes]) -> bytes:
    """Payload of a "delete" request: 1 to MAX_DELETE_IDS record ids."""
    return _pack_id_list(record_ids, RECORD_ID_SIZE, MAX_DELETE_IDS, "delete")


def parse_delete_payload(payload: bytes) -> list[bytes]:
    return _parse_id_list(payload, RECORD_ID_SIZE, MAX_DELETE_IDS, "delete")


def listen_payload(duration: int) -> bytes:
    """Payload of a "listen" request: push new records to me for `duration` seconds."""
    if type(duration) is not int or not 1 <= duration <= MAX_LISTEN_SECONDS:
        raise ValueError(f"listen duration must be 1 to {MAX_LISTEN_SECONDS} seconds")
    return _pack([duration])


def parse_listen_payload(payload: bytes) -> int:
    (duration,) = _fields(_unpack(payload, "listen"), 1, "listen")
    if type(duration) is not int or not 1 <= duration <= MAX_LISTEN_SECONDS:
        raise MalformedError(f"listen: duration must be 1 to {MAX_LISTEN_SECONDS} seconds")
    return duration


MAX_OWNER_PAYLOAD = len(delete_payload([bytes(RECORD_ID_SIZE)] * MAX_DELETE_IDS))


@dataclass(frozen=True)
class OwnerRequest:
    """A request only a mailbox's owner may make, signed with the owner's key."""

    op: OwnerOp
    mailbox_key: bytes
    verify_key: bytes
    timestamp: float
    payload: bytes
    signature: bytes

    def signed_bytes(self) -> bytes:
        fields = [str(self.op), self.mailbox_key, self.verify_key, self.timestamp, self.payload]
        return _OWNER_DOMAIN + _pack(fields)

    def to_obj(self) -> list[object]:
        return [
            str(self.op),
            self.mailbox_key,
            self.verify_key,
            self.timestamp,
            self.payload,
            self.signature,
        ]

    @classmethod
    def from_obj(cls, obj: object) -> OwnerRequest:
        """Validate an already-decoded owner request; MalformedError."""
        op, mailbox_key, verify_key, timestamp, payload, signature = _fields(
            obj, 6, "owner request"
        )
        if type(op) is not str or op not in OWNER_OPS:
            raise MalformedError("owner request: unknown op")
        if type(payload) is not bytes or len(payload) > MAX_OWNER_PAYLOAD:
            raise MalformedError("owner request: payload is not bytes or too long")
        return cls(
            OwnerOp(op),
            _sized_bytes(mailbox_key, MAILBOX_KEY_SIZE, "mailbox key"),
            _sized_bytes(verify_key, crypto.KEY_SIZE, "owner key"),
            _timestamp(timestamp, "owner request timestamp"),
            payload,
            _sized_bytes(signature, crypto.SIGNATURE_SIZE, "signature"),
        )


def sign_owner_request(me: Signer, op: OwnerOpName, payload: bytes, now: float) -> OwnerRequest:
    """Sign `op` on the mailbox of `me` (its key is mailbox_key_for(me.verify_key)): an
    epoch's blinded signer, an introduction key pair, or (the old scheme) an Identity."""
    if op not in OWNER_OPS:
        raise ValueError(f"unknown owner op {op!r}")
    if type(payload) is not bytes or len(payload) > MAX_OWNER_PAYLOAD:
        raise ValueError(f"payload must be bytes of at most {MAX_OWNER_PAYLOAD}")
    key = mailbox_key_for(me.verify_key)
    unsigned = OwnerRequest(OwnerOp(op), key, me.verify_key, float(now), payload, b"")
    return dataclasses.replace(unsigned, signature=me.sign(unsigned.signed_bytes()))


def verify_owner_request(request: OwnerRequest, now: float) -> None:
    """RefusedError (not the owner), ExpiredError (clock skew) or BadSignatureError."""
    if mailbox_key_for(request.verify_key) != request.mailbox_key:
        raise RefusedError("only the owner of a mailbox may do this")
    if abs(request.timestamp - now) > OWNER_REQUEST_SKEW:
        raise ExpiredError("owner request is too old or from the future: check the clock")
    crypto.verify(request.verify_key, request.signed_bytes(), request.signature)
