"""mesh.wire: framing and validation. Whatever a peer sends, only MalformedError comes out."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh import wire
from mesh.errors import DatagramError, MalformedError

SENDER = b"s" * 20
KEY = b"k" * 20

# Anything msgpack can carry, nested a little.
leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=30)
    | st.binary(max_size=40)
    | st.sampled_from([b"x" * 16, b"x" * 20, KEY, "ping", "127.0.0.1", 65535, 0, 1])
)
objects = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=25,
)


def frame(obj: Any) -> bytes:
    return wire.VERSION_BYTE + msgpack.packb(obj)


def decode_or_reason(data: bytes) -> str:
    try:
        wire.decode_datagram(data)
    except DatagramError as exc:
        assert exc.reason in wire.DROP_REASONS
        return exc.reason
    return "ok"


# -- round trips ------------------------------------------------------------------------


def test_request_and_response_round_trip() -> None:
    dgram = wire.decode_datagram(wire.encode_request(7, SENDER, "find", [KEY]))
    assert (dgram.kind, dgram.msgid, dgram.sender) == (wire.REQUEST, 7, SENDER)
    assert (dgram.method_or_status, dgram.body) == ("find", [KEY])
    assert wire.decode_request("find", dgram.body) == wire.Find(KEY)
    contacts = [[SENDER, "::1", 9]]
    reply = wire.decode_datagram(wire.encode_response(7, SENDER, wire.OK, contacts))
    assert (reply.kind, reply.method_or_status, reply.body) == (wire.RESPONSE, 0, contacts)


# -- every header fault has its own counter ---------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "bad_version"),
        (b"\x02" + msgpack.packb([0, 1, SENDER, "ping", []]), "bad_version"),
        (wire.VERSION_BYTE + b"x" * wire.MAX_DATAGRAM, "oversized"),
        (wire.VERSION_BYTE + b"\xc1", "undecodable"),
        (wire.VERSION_BYTE + b"\x91" * 5000, "undecodable"),  # nested too deep
        (wire.VERSION_BYTE + b"\xdd\xff\xff\xff\xff", "undecodable"),  # 4 G elements claimed
        (wire.VERSION_BYTE + b"\xc6\xff\xff\xff\xff", "undecodable"),  # 4 GB of bin claimed
        (wire.VERSION_BYTE + b"\xd6\xff\x00\x00\x00\x01", "undecodable"),  # ext (timestamp)
        (wire.VERSION_BYTE + b"\xa2\xff\xfe", "undecodable"),  # str that is not UTF-8
        (wire.VERSION_BYTE + b"\x81\x01\x02", "undecodable"),  # map with an int key
        (frame([0, 1, SENDER, "ping", []]) + b"\x00", "undecodable"),  # trailing bytes
        (frame([0, 1, SENDER, "ping"]), "bad_header"),
        (frame({"kind": 0}), "bad_header"),
        (frame([2, 1, SENDER, "ping", []]), "bad_header"),
        (frame([True, 1, SENDER, "ping", []]), "bad_header"),
        (frame([0, -1, SENDER, "ping", []]), "bad_header"),
        (frame([0, 2**32, SENDER, "ping", []]), "bad_header"),
        (frame([0, 1.0, SENDER, "ping", []]), "bad_header"),
        (frame([0, 1, SENDER, "ping", {}]), "bad_header"),
        (frame([1, 1, SENDER, 256, None]), "bad_header"),
        (frame([1, 1, SENDER, "ok", None]), "bad_header"),
        (frame([0, 1, b"s" * 19, "ping", []]), "bad_node_id"),
        (frame([0, 1, b"s" * 21, "ping", []]), "bad_node_id"),
        (frame([0, 1, "s" * 20, "ping", []]), "bad_node_id"),
        (frame([0, 1, SENDER, "pong", []]), "unknown_method"),
        (frame([0, 1, SENDER, 3, []]), "unknown_method"),
        (frame([0, 1, SENDER, "ping", []]), "ok"),
    ],
)
def test_header_faults_are_classified(data: bytes, reason: str) -> None:
    assert decode_or_reason(data) == reason


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("ping", [1]),
        ("find", []),
        ("find", [b"k" * 19]),
        ("find", ["k" * 20]),
        ("store", [KEY, [[]] * 9]),
        ("store", [KEY, b"records"]),
        ("fetch", [KEY, 1]),
        ("get", [KEY, [b"x" * 15]]),
        ("get", [KEY, [b"x" * 16] * (wire.MAX_IDS + 1)]),
        ("delete", [b"request"]),
        ("listen", [[0] * 9]),
        ("push", [KEY, [1, 2, 3, 4, 5]]),
        ("nosuch", []),
        ("ping", "not a list"),
    ],
)
def test_bad_arguments_are_malformed(method: str, args: Any) -> None:
    with pytest.raises(MalformedError):
        wire.decode_request(method, args)


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "224.0.0.251", "ff02::fb", "255.255.255.255", "localhost", "1.2.3"]
)
def test_contacts_cannot_point_at_everyone_or_at_names(host: str) -> None:
    with pytest.raises(MalformedError):
        wire.check_contact([SENDER, host, 4000])


@pytest.mark.parametrize("host", ["127.0.0.1", "192.168.1.20", "10.99.0.3", "::1", "fe80::1"])
def test_unicast_contacts_are_accepted(host: str) -> None:
    assert wire.check_contact([SENDER, host, 4000]) == (SENDER, host, 4000)


@pytest.mark.parametrize("port", [0, -1, 65536, "80", 80.0])
def test_contact_ports_are_checked(port: Any) -> None:
    with pytest.raises(MalformedError):
        wire.check_contact([SENDER, "127.0.0.1", port])


# -- fuzzing: only MalformedError ever comes out ----------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_datagram_error(data: bytes) -> None:
    decode_or_reason(data)
    decode_or_reason(wire.VERSION_BYTE + data)


@settings(max_examples=200, deadline=None)
@given(objects)
def test_any_msgpack_object_raises_only_datagram_error(obj: Any) -> None:
    decode_or_reason(frame(obj))


@settings(max_examples=100, deadline=None)
@given(objects, st.integers(min_value=1, max_value=200))
def test_truncated_valid_requests_raise_only_datagram_error(args: Any, cut: int) -> None:
    data = wire.encode_request(1, SENDER, "store", [KEY, [args]])
    decode_or_reason(data[: max(1, len(data) - cut)])


# Arguments that are often nearly right: the right arity, keys of about the right size.
near_keys = st.binary(min_size=19, max_size=21) | st.just(KEY)
near_records = st.lists(near_keys | leaves, max_size=9)
near_args = st.lists(near_keys | st.booleans() | near_records, max_size=3)


@settings(max_examples=250, deadline=None)
@given(st.sampled_from(sorted(wire.REQUESTS)), near_args | st.lists(objects, max_size=3))
def test_validate_args_raises_only_malformed_error(method: str, args: list[Any]) -> None:
    data = wire.encode_request(1, SENDER, method, args)
    try:
        dgram = wire.decode_datagram(data)
        checked = wire.decode_request(method, dgram.body)
    except MalformedError:
        return
    assert type(checked) is wire.REQUESTS[method]
    assert wire.request_args(checked)[: len(dgram.body)] == dgram.body  # nothing lost
    assert wire.decode_request(method, wire.request_args(checked)) == checked


@settings(max_examples=150, deadline=None)
@given(objects)
def test_contact_lists_from_peers_raise_only_malformed_error(obj: Any) -> None:
    try:
        contacts = wire.check_contacts(obj)
    except MalformedError:
        return
    for node_id, host, port in contacts:
        assert len(node_id) == wire.NODE_ID_SIZE and 1 <= port <= 65535 and host
