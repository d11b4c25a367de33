"""mesh.envelope: sealing and opening messages, DHT records, owner requests."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import random
from typing import Any

import msgpack
import nacl.bindings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh import crypto
from mesh.envelope import (
    CIPHERTEXT_SIZES,
    DEFAULT_TTL,
    KINDS,
    MAX_DELETE_IDS,
    MAX_LISTEN_SECONDS,
    MAX_RECEIPT_IDS,
    MAX_TEXT_BYTES,
    MAX_TTL,
    OWNER_REQUEST_SKEW,
    PAD_BUCKETS,
    SEAL_OVERHEAD,
    Message,
    OwnerRequest,
    Record,
    check_record_format,
    delete_payload,
    listen_payload,
    open_record,
    parse_delete_payload,
    parse_listen_payload,
    parse_receipt_body,
    receipt_body,
    record_id_for,
    request_body,
    seal_message,
    sign_owner_request,
    verify_owner_request,
)
from mesh.errors import (
    BadSignatureError,
    EmptyMessageError,
    ExpiredError,
    MalformedError,
    MeshError,
    MessageTooLargeError,
    NotForUsError,
    RefusedError,
)
from mesh.identity import Identity, PublicIdentity
from mesh.mailboxes import Mailboxes
from mesh.store import Store

FUZZ = settings(max_examples=300, deadline=None, derandomize=True)

ALICE = Identity.from_seed(bytes(range(32)))
BOB = Identity.from_seed(bytes(range(1, 33)))
CAROL = Identity.from_seed(b"\xff" * 32)
NOW = 1_700_000_000.25
MID = bytes(range(16))
DOMAIN = b"mesh/message/v1\x00"


# -- an independent implementation of the format, from the spec ---------------------------


def _pad(plaintext: bytes) -> bytes:
    bucket = next(size for size in PAD_BUCKETS if size > len(plaintext))
    return plaintext + b"\x80" + bytes(bucket - len(plaintext) - 1)


def _unpad(padded: bytes) -> bytes:
    stripped = padded.rstrip(b"\x00")
    assert stripped[-1] == 0x80
    return stripped[:-1]


def _fields(**changes: Any) -> list[Any]:
    fields = {
        "version": 1,
        "kind": "text",
        "mid": MID,
        "sender": ALICE.verify_key,
        "recipient": BOB.verify_key,
        "sent_at": NOW,
        "ttl": 3600,
        "body": b"hi",
    }
    fields.update(changes)
    return list(fields.values())


def _record_from_plaintext(plaintext: bytes, expires_at: int, to: PublicIdentity) -> Record:
    ciphertext = crypto.seal(to.box_public_key, _pad(plaintext))
    return Record(record_id_for(ciphertext), expires_at, ciphertext)


def _forge(
    fields: list[Any],
    signer: Identity = ALICE,
    to: PublicIdentity = BOB.public,
    domain: bytes = DOMAIN,
    expires_at: int | None = None,
) -> Record:
    """A record built by hand: any inner fields, any signer, any addressee."""
    inner = msgpack.packb(fields, use_bin_type=True)
    signature = signer.sign(domain + inner)
    plaintext = msgpack.packb([inner, signature], use_bin_type=True)
    if expires_at is None:
        expires_at = math.ceil(NOW + 3600)
    return _record_from_plaintext(plaintext, expires_at, to)


def _unseal_parts(me: Identity, record: Record) -> tuple[bytes, bytes]:
    inner, signature = msgpack.unpackb(_unpad(me.unseal(record.ciphertext)))
    return inner, signature


# -- sealing and opening ------------------------------------------------------------------


def test_text_round_trip() -> None:
    sent, record = seal_message(ALICE, BOB.public, "text", "hello, bob", NOW)
    opened = open_record(BOB, record, NOW + 1)
    assert opened == sent
    assert opened.text == "hello, bob"
    assert opened.sender == ALICE.id and opened.recipient == BOB.id
    assert opened.kind == "text" and opened.ttl == DEFAULT_TTL == 7 * 24 * 3600
    assert opened.sent_at == NOW and type(opened.sent_at) is float
    assert opened.expires_at == record.expires_at == math.ceil(NOW + DEFAULT_TTL)
    with pytest.raises(ValueError):
        _ = opened.receipt_ids


def test_receipt_round_trip() -> None:
    ids = [bytes([n]) * 16 for n in range(3)]
    sent, record = seal_message(BOB, ALICE.public, "receipt", receipt_body(ids), NOW, ttl=60)
    opened = open_record(ALICE, record, NOW)
    assert opened == sent and opened.receipt_ids == ids
    with pytest.raises(ValueError):
        _ = opened.text


def test_record_fields() -> None:
    sent, record = seal_message(ALICE, BOB.public, "text", b"hi", NOW, ttl=100, message_id=MID)
    assert sent.id == MID
    assert record.id == hashlib.blake2b(record.ciphertext, digest_size=16).digest()
    assert record.expires_at == math.ceil(NOW + 100) and type(record.expires_at) is int
    assert len(record.ciphertext) == PAD_BUCKETS[0] + SEAL_OVERHEAD
    assert record.stamp == b""
    # Storage peers never see either party's key in the clear.
    for key in (ALICE.verify_key, BOB.verify_key, ALICE.public.box_public_key):
        assert key not in record.pack()


def test_sealed_message_follows_the_spec() -> None:
    sent, record = seal_message(ALICE, BOB.public, "text", b"hi", NOW, ttl=3600, message_id=MID)
    inner, signature = _unseal_parts(BOB, record)
    assert msgpack.unpackb(inner) == _fields()
    crypto.verify(ALICE.verify_key, DOMAIN + inner, signature)
    # And the other way round: a record built from the spec alone opens.
    assert open_record(BOB, _forge(_fields()), NOW) == sent


def test_same_message_id_is_kept_for_retries() -> None:
    first = seal_message(ALICE, BOB.public, "text", "x", NOW, message_id=MID)
    second = seal_message(ALICE, BOB.public, "text", "x", NOW, message_id=MID)
    assert first[0] == second[0]
    assert first[1].id != second[1].id  # sealing is randomised


def test_random_message_ids() -> None:
    ids = {seal_message(ALICE, BOB.public, "text", "x", NOW)[0].id for _ in range(5)}
    assert len(ids) == 5 and all(len(mid) == 16 for mid in ids)


def test_record_for_someone_else() -> None:
    _, record = seal_message(ALICE, BOB.public, "text", "for bob", NOW)
    with pytest.raises(NotForUsError):
        open_record(CAROL, record, NOW)


def test_expired_record_and_message() -> None:
    _, record = seal_message(ALICE, BOB.public, "text", "x", NOW, ttl=60)
    assert open_record(BOB, record, NOW + 59.9).text == "x"
    for when in (record.expires_at, record.expires_at + 1e6):
        with pytest.raises(ExpiredError):
            open_record(BOB, record, when)
        with pytest.raises(ExpiredError):
            check_record_format(record, when)


def test_message_expiry_is_exact_inside_the_last_second() -> None:
    # sent_at + ttl = NOW + 60.25 rounds up to a record expiry of NOW + 60.75.
    _, record = seal_message(ALICE, BOB.public, "text", "x", NOW, ttl=60)
    with pytest.raises(ExpiredError):
        open_record(BOB, record, NOW + 60.5)


def test_readdressing_is_impossible() -> None:
    # Carol got a message from Alice and re-seals it to Bob unchanged: Bob sees the
    # signed recipient is Carol.
    _, record = seal_message(ALICE, CAROL.public, "text", "for carol", NOW)
    plaintext = _unpad(CAROL.unseal(record.ciphertext))
    resealed = _record_from_plaintext(plaintext, record.expires_at, BOB.public)
    with pytest.raises(NotForUsError):
        open_record(BOB, resealed, NOW)
    # Rewriting the recipient inside breaks Alice's signature.
    inner, signature = _unseal_parts(CAROL, record)
    fields = msgpack.unpackb(inner)
    fields[4] = BOB.verify_key
    rewritten = msgpack.packb([msgpack.packb(fields), signature])
    with pytest.raises(BadSignatureError):
        open_record(BOB, _record_from_plaintext(rewritten, record.expires_at, BOB.public), NOW)


def test_forged_sender_and_wrong_domain() -> None:
    with pytest.raises(BadSignatureError):
        open_record(BOB, _forge(_fields(), signer=CAROL), NOW)
    with pytest.raises(BadSignatureError):
        open_record(BOB, _forge(_fields(), domain=b"mesh/owner/v1\x00"), NOW)
    with pytest.raises(BadSignatureError):
        open_record(BOB, _forge(_fields(), domain=b""), NOW)


def test_storage_peer_cannot_change_expiry() -> None:
    _, record = seal_message(ALICE, BOB.public, "text", "x", NOW)
    for expires_at in (record.expires_at + 1, record.expires_at - 1):
        with pytest.raises(MalformedError):
            open_record(BOB, dataclasses.replace(record, expires_at=expires_at), NOW)


@pytest.mark.parametrize(
    "fields",
    [
        _fields(version=2),
        _fields(version=True),
        _fields(version="1"),
        _fields(kind="file"),
        _fields(kind=b"text"),
        _fields(mid=bytes(15)),
        _fields(mid="x" * 16),
        _fields(sender=ALICE.verify_key[:31]),
        _fields(recipient=BOB.verify_key + b"\x00"),
        _fields(sent_at=int(NOW)),
        _fields(sent_at=math.nan),
        _fields(sent_at=math.inf),
        _fields(sent_at=-1.0),
        _fields(ttl=0),
        _fields(ttl=MAX_TTL + 1),
        _fields(ttl=3600.0),
        _fields(ttl=True),
        _fields(body="hi"),
        _fields(body=b""),
        _fields(body=b"\xff\xfe"),
        _fields(kind="receipt", body=b"\x90"),
        _fields(kind="receipt", body=msgpack.packb([bytes(15)])),
        [*_fields(), b"extra"],
        _fields()[:-1],
        {"inner": 1},
    ],
)
def test_malformed_inner_message(fields: list[Any]) -> None:
    with pytest.raises(MalformedError):
        open_record(BOB, _forge(fields), NOW)


@pytest.mark.parametrize(
    "plaintext",
    [
        msgpack.packb(["not bytes", bytes(64)]),
        msgpack.packb([msgpack.packb(_fields()), bytes(63)]),
        msgpack.packb([msgpack.packb(_fields()), bytes(64), b""]),
        msgpack.packb({"a": 1}),
        b"\xc1",
        b"",
    ],
)
def test_malformed_sealed_plaintext(plaintext: bytes) -> None:
    with pytest.raises(MalformedError):
        open_record(BOB, _record_from_plaintext(plaintext, math.ceil(NOW + 3600), BOB.public), NOW)


@pytest.mark.parametrize("padded", [bytes(256), b"\x01" * 256, b"\x90" + bytes(255)])
def test_bad_padding(padded: bytes) -> None:
    ciphertext = crypto.seal(BOB.public.box_public_key, padded)
    record = Record(record_id_for(ciphertext), int(NOW) + 60, ciphertext)
    with pytest.raises(MalformedError):
        open_record(BOB, record, NOW)


def test_flipping_any_byte_of_a_record_is_detected() -> None:
    _, record = seal_message(ALICE, BOB.public, "text", "flip me", NOW)
    packed = record.pack()
    for index in range(len(packed)):
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(packed)
            damaged[index] ^= mask
            with pytest.raises(MeshError):
                open_record(BOB, Record.unpack(bytes(damaged)), NOW)


def test_padding_hides_lengths_within_a_bucket() -> None:
    sizes_seen: dict[int, set[int]] = {}
    for size in range(1, MAX_TEXT_BYTES + 1, 37):
        _, record = seal_message(ALICE, BOB.public, "text", b"a" * size, NOW)
        assert len(record.ciphertext) in CIPHERTEXT_SIZES
        sizes_seen.setdefault(len(record.ciphertext), set()).add(size)
    assert sorted(sizes_seen) == sorted(CIPHERTEXT_SIZES)
    short = {
        len(seal_message(ALICE, BOB.public, "text", b"a" * n, NOW)[1].ciphertext)
        for n in range(1, 60)
    }
    assert short == {256 + 48}


def test_max_text_bytes_boundary() -> None:
    assert MAX_TEXT_BYTES == 3915
    longest = "é" * (MAX_TEXT_BYTES // 2) + "a" * (MAX_TEXT_BYTES % 2)
    assert len(longest.encode()) == MAX_TEXT_BYTES
    for ttl in (1, DEFAULT_TTL, MAX_TTL):  # the ttl's encoded size varies from 1 to 5 bytes
        sent, record = seal_message(ALICE, BOB.public, "text", longest, NOW, ttl=ttl)
        assert len(record.ciphertext) == PAD_BUCKETS[-1] + SEAL_OVERHEAD
        assert open_record(BOB, record, NOW) == sent
    with pytest.raises(MessageTooLargeError, match=str(MAX_TEXT_BYTES)):
        seal_message(ALICE, BOB.public, "text", longest + "a", NOW, ttl=MAX_TTL)
    with pytest.raises(MessageTooLargeError):
        seal_message(ALICE, BOB.public, "text", b"a" * 100_000, NOW)


@pytest.mark.parametrize("body", ["", b""])
def test_empty_message(body: str | bytes) -> None:
    with pytest.raises(EmptyMessageError):
        seal_message(ALICE, BOB.public, "text", body, NOW)


@pytest.mark.parametrize(
    ("kind", "body", "ttl", "message_id"),
    [
        ("file", b"x", 60, None),
        ("text", b"x", 0, None),
        ("text", b"x", MAX_TTL + 1, None),
        ("text", b"x", 60.0, None),
        ("text", b"\xff", 60, None),
        ("text", b"x", 60, bytes(15)),
        ("receipt", b"not a receipt", 60, None),
        ("receipt", "text body", 60, None),
    ],
)
def test_programming_errors_when_sealing(
    kind: str, body: bytes, ttl: int, message_id: bytes | None
) -> None:
    with pytest.raises(ValueError):
        seal_message(ALICE, BOB.public, kind, body, NOW, ttl=ttl, message_id=message_id)


def test_seal_overhead_is_libsodiums() -> None:
    """Wire sizes follow from libsodium's sealed box, not from a number typed twice."""
    assert nacl.bindings.crypto_box_SEALBYTES == SEAL_OVERHEAD
    _, record = seal_message(ALICE, BOB.public, "text", "x", NOW)
    assert len(record.ciphertext) - nacl.bindings.crypto_box_SEALBYTES == PAD_BUCKETS[0]


def test_only_known_kinds_are_sealed() -> None:
    bundle = Mailboxes(ALICE, Store(None)).bundle(NOW, reply=False)
    bodies = {"text": b"x", "keys": bundle, "request": request_body(bundle, "hello")}
    for kind in KINDS:
        body = bodies.get(kind) or receipt_body([bytes(16)])
        _message, record = seal_message(ALICE, BOB.public, kind, body, NOW)
        assert open_record(BOB, record, NOW).kind == kind
    with pytest.raises(ValueError):
        seal_message(ALICE, BOB.public, "file", b"x", NOW)


def test_receipt_body_bounds() -> None:
    ids = [bytes(16)] * MAX_RECEIPT_IDS
    assert parse_receipt_body(receipt_body(ids)) == ids
    for bad in ([], [bytes(16)] * (MAX_RECEIPT_IDS + 1), [bytes(15)], ["x" * 16]):
        with pytest.raises(ValueError):
            receipt_body(bad)  # type: ignore[arg-type]
    for body in (b"", msgpack.packb([]), msgpack.packb([bytes(16)] * 65), msgpack.packb(1)):
        with pytest.raises(MalformedError):
            parse_receipt_body(body)


# -- records ------------------------------------------------------------------------------


def test_record_pack_round_trip() -> None:
    _, record = seal_message(ALICE, BOB.public, "text", "x", NOW)
    stamped = dataclasses.replace(record, stamp=b"s" * 64)
    for item in (record, stamped):
        assert Record.unpack(item.pack()) == item
        assert Record.from_obj(msgpack.unpackb(msgpack.packb(item.to_obj()))) == item
        assert msgpack.unpackb(item.pack()) == [
            item.id,
            item.expires_at,
            item.ciphertext,
            item.stamp,
        ]


_CT = bytes(PAD_BUCKETS[0] + SEAL_OVERHEAD)


@pytest.mark.parametrize(
    "obj",
    [
        [bytes(16), 1, _CT],
        [bytes(16), 1, _CT, b"", b""],
        [bytes(15), 1, _CT, b""],
        ["x" * 16, 1, _CT, b""],
        [bytes(16), True, _CT, b""],
        [bytes(16), 1.0, _CT, b""],
        [bytes(16), -1, _CT, b""],
        [bytes(16), 1, _CT[:-1], b""],
        [bytes(16), 1, bytes(300), b""],
        [bytes(16), 1, _CT, b"x" * 65],
        [bytes(16), 1, _CT, "stamp"],
        [bytes(16), 1, _CT, None],
        [[bytes(16), 1, _CT, b""]],
        {"id": bytes(16)},
        None,
    ],
)
def test_record_unpack_is_strict(obj: object) -> None:
    with pytest.raises(MalformedError):
        Record.unpack(msgpack.packb(obj))
    with pytest.raises(MalformedError):
        Record.from_obj(obj)


def test_record_unpack_rejects_trailing_and_truncated_data() -> None:
    _, record = seal_message(ALICE, BOB.public, "text", "x", NOW)
    for data in (record.pack() + b"\x00", record.pack()[:-1], b"", bytearray(record.pack())):
        with pytest.raises(MalformedError):
            Record.unpack(data)  # type: ignore[arg-type]


def test_check_record_format() -> None:
    _, record = seal_message(ALICE, BOB.public, "text", "x", NOW, ttl=MAX_TTL)
    check_record_format(record, NOW)
    limit = MAX_TTL + OWNER_REQUEST_SKEW
    check_record_format(dataclasses.replace(record, expires_at=int(NOW) + limit), NOW)
    bad = [
        dataclasses.replace(record, id=bytes(16)),
        dataclasses.replace(record, ciphertext=record.ciphertext + b"\x00"),
        dataclasses.replace(record, stamp=bytes(65)),
        dataclasses.replace(record, expires_at=int(NOW) + limit + 1),
    ]
    for item in bad:
        with pytest.raises(MalformedError):
            check_record_format(item, NOW)


# -- owner requests -----------------------------------------------------------------------


def _round_trip(request: OwnerRequest) -> OwnerRequest:
    return OwnerRequest.from_obj(msgpack.unpackb(msgpack.packb(request.to_obj())))


def test_owner_request_round_trip_and_verify() -> None:
    ids = [bytes([n]) * 16 for n in range(3)]
    request = sign_owner_request(BOB, "delete", delete_payload(ids), NOW)
    assert request.mailbox_key == BOB.mailbox_key and request.verify_key == BOB.verify_key
    assert _round_trip(request) == request
    verify_owner_request(_round_trip(request), NOW + OWNER_REQUEST_SKEW)
    verify_owner_request(request, NOW - OWNER_REQUEST_SKEW)
    assert parse_delete_payload(request.payload) == ids
    listen = sign_owner_request(BOB, "listen", listen_payload(300), NOW)
    verify_owner_request(listen, NOW)
    assert parse_listen_payload(listen.payload) == 300


def test_owner_request_for_someone_elses_mailbox() -> None:
    # Carol signs correctly with her own key, but names Bob's mailbox.
    request = sign_owner_request(CAROL, "delete", delete_payload([bytes(16)]), NOW)
    forged = dataclasses.replace(request, mailbox_key=BOB.mailbox_key)
    forged = dataclasses.replace(forged, signature=CAROL.sign(forged.signed_bytes()))
    with pytest.raises(RefusedError):
        verify_owner_request(forged, NOW)
    # Or names Bob's key too, without being able to sign for it.
    stolen = dataclasses.replace(forged, verify_key=BOB.verify_key)
    with pytest.raises(BadSignatureError):
        verify_owner_request(stolen, NOW)


@pytest.mark.parametrize(
    "change",
    [
        {"op": "listen"},
        {"payload": delete_payload([bytes(16), b"\x01" * 16])},
        {"timestamp": NOW + 1},
        {"signature": bytes(64)},
    ],
)
def test_tampered_owner_request(change: dict[str, Any]) -> None:
    request = sign_owner_request(BOB, "delete", delete_payload([bytes(16)]), NOW)
    with pytest.raises(BadSignatureError):
        verify_owner_request(dataclasses.replace(request, **change), NOW)


@pytest.mark.parametrize("offset", [OWNER_REQUEST_SKEW + 0.5, -OWNER_REQUEST_SKEW - 0.5, 1e9])
def test_stale_or_future_owner_request(offset: float) -> None:
    request = sign_owner_request(BOB, "listen", listen_payload(60), NOW)
    with pytest.raises(ExpiredError):
        verify_owner_request(request, NOW + offset)


def test_sign_owner_request_programming_errors() -> None:
    with pytest.raises(ValueError):
        sign_owner_request(BOB, "steal", b"", NOW)
    with pytest.raises(ValueError):
        sign_owner_request(BOB, "delete", bytes(10_000), NOW)


_GOOD_OWNER = sign_owner_request(BOB, "delete", delete_payload([bytes(16)]), NOW).to_obj()


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (0, "steal"),
        (0, b"delete"),
        (1, bytes(19)),
        (2, bytes(33)),
        (3, int(NOW)),
        (3, math.nan),
        (4, "payload"),
        (4, bytes(5000)),
        (5, bytes(63)),
        (5, None),
    ],
)
def test_owner_request_from_obj_is_strict(index: int, value: object) -> None:
    obj = list(_GOOD_OWNER)
    obj[index] = value
    with pytest.raises(MalformedError):
        OwnerRequest.from_obj(obj)


def test_owner_request_from_obj_shape() -> None:
    for obj in (_GOOD_OWNER[:-1], [*_GOOD_OWNER, b""], tuple(_GOOD_OWNER), None, {}):
        with pytest.raises(MalformedError):
            OwnerRequest.from_obj(obj)


def test_owner_payloads() -> None:
    ids = [bytes([n % 256]) * 16 for n in range(MAX_DELETE_IDS)]
    assert parse_delete_payload(delete_payload(ids)) == ids
    sign_owner_request(BOB, "delete", delete_payload(ids), NOW)  # the largest fits
    for bad_ids in ([], [*ids, bytes(16)], [bytes(17)]):
        with pytest.raises(ValueError):
            delete_payload(bad_ids)
    with pytest.raises(MalformedError):
        parse_delete_payload(msgpack.packb([bytes(16)] * (MAX_DELETE_IDS + 1)))
    assert parse_listen_payload(listen_payload(MAX_LISTEN_SECONDS)) == MAX_LISTEN_SECONDS
    for seconds in (0, MAX_LISTEN_SECONDS + 1, 1.5, True):
        with pytest.raises(ValueError):
            listen_payload(seconds)  # type: ignore[arg-type]
    too_long = msgpack.packb([MAX_LISTEN_SECONDS + 1])
    for payload in (msgpack.packb([0]), too_long, msgpack.packb(60), b"\x91"):
        with pytest.raises(MalformedError):
            parse_listen_payload(payload)


# -- fuzzing: peers send anything; only MeshError may come out ----------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=40)
)
objects = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


def _mixed(good: list[Any]) -> st.SearchStrategy[list[Any]]:
    """Lists shaped like `good` where each field is either the good value or anything."""
    return st.tuples(*(st.just(value) | objects for value in good)).map(list)


@st.composite
def random_records(draw: st.DrawFn) -> Record:
    size = draw(st.sampled_from(sorted(CIPHERTEXT_SIZES)))
    ciphertext = random.Random(draw(st.integers(0, 2**32))).randbytes(size)
    record_id = draw(st.just(record_id_for(ciphertext)) | st.binary(min_size=16, max_size=16))
    expires_at = draw(st.integers(0, 2**40) | st.integers(int(NOW) - 10, int(NOW) + MAX_TTL))
    return Record(record_id, expires_at, ciphertext, draw(st.binary(max_size=64)))


def _only_mesh_errors(func: Any, *args: Any) -> None:
    with contextlib.suppress(MeshError):
        func(*args)


@FUZZ
@given(data=st.binary(max_size=400))
def test_fuzz_record_unpack(data: bytes) -> None:
    with pytest.raises(MalformedError):
        Record.unpack(data)


@FUZZ
@given(obj=objects | _mixed([bytes(16), int(NOW), _CT, b""]))
def test_fuzz_record_from_obj(obj: object) -> None:
    _only_mesh_errors(Record.from_obj, obj)


@FUZZ
@given(obj=objects | _mixed(_GOOD_OWNER))
def test_fuzz_owner_request_from_obj(obj: object) -> None:
    try:
        request = OwnerRequest.from_obj(obj)
    except MeshError:
        return
    _only_mesh_errors(verify_owner_request, request, NOW)


@FUZZ
@given(data=st.binary(max_size=200))
def test_fuzz_owner_request_from_random_bytes(data: bytes) -> None:
    try:
        obj = msgpack.unpackb(data)
    except Exception:  # msgpack's own errors are the wire layer's business
        return
    _only_mesh_errors(OwnerRequest.from_obj, obj)


@FUZZ
@given(body=st.binary(max_size=200) | objects.map(msgpack.packb))
def test_fuzz_parse_receipt_body(body: bytes) -> None:
    _only_mesh_errors(parse_receipt_body, body)


@FUZZ
@given(payload=st.binary(max_size=100) | objects.map(msgpack.packb))
def test_fuzz_owner_payloads(payload: bytes) -> None:
    _only_mesh_errors(parse_delete_payload, payload)
    _only_mesh_errors(parse_listen_payload, payload)


@FUZZ
@given(record=random_records())
def test_fuzz_open_random_records(record: Record) -> None:
    with pytest.raises(MeshError):
        open_record(BOB, record, NOW)


@FUZZ
@given(plaintext=objects | _mixed([b"inner", bytes(64)]))
def test_fuzz_open_sealed_garbage(plaintext: object) -> None:
    # Correctly sealed to Bob, so the fuzzing reaches the parser behind the decryption.
    packed = msgpack.packb(plaintext)
    if len(packed) >= PAD_BUCKETS[-1]:
        return
    with pytest.raises(MeshError):
        open_record(BOB, _record_from_plaintext(packed, int(NOW) + 3600, BOB.public), NOW)


@FUZZ
@given(fields=_mixed(_fields()))
def test_fuzz_open_signed_inner_fields(fields: list[Any]) -> None:
    # Correctly signed by Alice: only the inner parser stands between the fields and Bob.
    try:
        record = _forge(fields)
    except StopIteration:  # too large for any bucket
        return
    try:
        message = open_record(BOB, record, NOW)
    except MeshError:
        return
    assert isinstance(message, Message)
    assert (message.id, message.kind, message.body) == (fields[2], fields[1], fields[7])
