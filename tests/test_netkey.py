"""The private mesh's construction (mesh/netkey.py): vectors, invites, sealing, replays.

The vectors below are the ones in docs/protocol.md ("Private mesh"); a change of label,
layout or primitive breaks them, and with them interoperability with older peers.
"""

from __future__ import annotations

import hashlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh import crypto, netkey, wire
from mesh.errors import DatagramError, InvalidInviteError
from mesh.netkey import DatagramSealer, NetworkKey, ReplayGuard

SECRET = bytes(range(32))
KEY = NetworkKey("square", SECRET)
NOW = 1_800_000_000.0

DATAGRAM_KEY = "b8e7a7fdd67abbf40c27a4bbbcd5008ad12bcb0b3e88ae3f91d73dd9cb04313e"
SEALED = (
    "6465666768696a6b6c6d6e6f707172737475767778797a7b9af54ed4e5c46ba00c8d454ad55989a2fccde4d4"
    "8e3e32cfc201f90b1990"
)
INVITE = "meshnetaeaacaqdaqcqmbyibefawdanbyhraeiscmkbkfqxdamrugy4dupb643rovqxeznnx7fhs"


# -- vectors ----------------------------------------------------------------------------


def test_datagram_key_is_keyed_blake2b_of_the_label() -> None:
    assert KEY.datagram_key.hex() == DATAGRAM_KEY
    # hashlib's BLAKE2b is an independent implementation of the same function.
    independent = hashlib.blake2b(netkey.LABEL_DATAGRAM, key=SECRET, digest_size=32)
    assert independent.hexdigest() == DATAGRAM_KEY


def test_sealed_datagram_vector() -> None:
    nonce = bytes(range(100, 124))
    stamp = int(NOW * 1000).to_bytes(8, "big")
    sealed = nonce + crypto.aead_encrypt(KEY.datagram_key, nonce, stamp + b"\x01hello")
    assert sealed.hex() == SEALED
    assert DatagramSealer(KEY).open(bytes.fromhex(SEALED), NOW) == b"\x01hello"


def test_invite_vector_and_round_trip() -> None:
    assert KEY.invite() == INVITE
    again = NetworkKey.from_invite(INVITE)
    assert again.name == "square" and crypto.equal(again.secret, SECRET)
    spaced = " ".join(INVITE[i : i + 8] for i in range(0, len(INVITE), 8)).upper()
    assert NetworkKey.from_invite(spaced) == KEY  # spaces and capitals are forgiven


def test_mdns_tags_change_every_epoch_and_depend_on_the_key() -> None:
    assert (KEY.mdns_tag(0), KEY.mdns_tag(493000)) == ("2u6malcxbhby", "6e3c43cpadxg")
    tags = {KEY.mdns_tag(epoch) for epoch in range(50)}
    assert len(tags) == 50
    other = NetworkKey("square", bytes(32))
    assert KEY.mdns_tag(7) != other.mdns_tag(7)
    assert KEY.mdns_tag(7) == NetworkKey("renamed", SECRET).mdns_tag(7)


# -- secrets stay secret ------------------------------------------------------------------


def test_repr_never_shows_the_secret() -> None:
    for text in (repr(KEY), str(KEY), repr(DatagramSealer(KEY))):
        assert SECRET.hex() not in text and repr(SECRET) not in text
        assert KEY.datagram_key.hex() not in text


# -- invites: typo-proof ------------------------------------------------------------------


def test_every_single_character_typo_is_caught() -> None:
    body = INVITE[len(netkey.INVITE_PREFIX) :]
    for i, char in enumerate(body):
        for swap in "a7":
            if swap == char:
                continue
            typo = netkey.INVITE_PREFIX + body[:i] + swap + body[i + 1 :]
            with pytest.raises(InvalidInviteError):
                NetworkKey.from_invite(typo)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "mesh" + INVITE[7:],
        INVITE[:-1],
        INVITE[:30],
        INVITE + "aa",
        INVITE.replace("a", "0", 1),
        INVITE[:-2] + "é",
    ],
)
def test_malformed_invites_get_a_one_line_error(text: str) -> None:
    with pytest.raises(InvalidInviteError) as info:
        NetworkKey.from_invite(text)
    assert "\n" not in str(info.value) and SECRET.hex() not in str(info.value)


@pytest.mark.parametrize("name", ["", "   ", "x" * 33, "tab\there"])
def test_bad_network_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInviteError):
        NetworkKey.generate(name)


def test_a_key_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(InvalidInviteError):
        NetworkKey("square", bytes(31))


# -- sealing ----------------------------------------------------------------------------

DATAGRAM = wire.encode_request(7, b"n" * 20, "find", [b"k" * 20])


def test_sealed_datagrams_are_opaque_and_open_once() -> None:
    sealer, receiver = DatagramSealer(KEY), DatagramSealer(KEY)
    sealed = sealer.seal(DATAGRAM, NOW)
    assert len(sealed) == len(DATAGRAM) + netkey.SEAL_OVERHEAD
    assert b"find" not in sealed and b"n" * 20 not in sealed and b"k" * 20 not in sealed
    for start in (0, 1):
        with pytest.raises(Exception):  # noqa: B017 (any decoding failure will do)
            msgpack.unpackb(sealed[start:])
    assert receiver.open(sealed, NOW + 1) == DATAGRAM
    with pytest.raises(DatagramError) as info:
        receiver.open(sealed, NOW + 2)
    assert info.value.reason == "replayed"
    assert sealer.seal(DATAGRAM, NOW) != sealed  # a fresh nonce every time


@pytest.mark.parametrize("position", [0, 23, 24, 40, -1])
def test_a_flipped_bit_anywhere_is_unauthenticated(position: int) -> None:
    sealed = bytearray(DatagramSealer(KEY).seal(DATAGRAM, NOW))
    sealed[position] ^= 0x01
    with pytest.raises(DatagramError) as info:
        DatagramSealer(KEY).open(bytes(sealed), NOW)
    assert info.value.reason == "unauthenticated"


@pytest.mark.parametrize("length", [0, 1, 24, netkey.SEAL_OVERHEAD - 1, netkey.SEAL_OVERHEAD + 3])
def test_truncated_datagrams_are_unauthenticated(length: int) -> None:
    sealed = DatagramSealer(KEY).seal(DATAGRAM, NOW)
    with pytest.raises(DatagramError) as info:
        DatagramSealer(KEY).open(sealed[:length], NOW)
    assert info.value.reason == "unauthenticated"


def test_another_networks_datagrams_and_plain_ones_are_unauthenticated() -> None:
    other = NetworkKey("square", bytes(32))
    for data in (DatagramSealer(other).seal(DATAGRAM, NOW), DATAGRAM):
        with pytest.raises(DatagramError) as info:
            DatagramSealer(KEY).open(data, NOW)
        assert info.value.reason == "unauthenticated"


@pytest.mark.parametrize("skew", [-netkey.REPLAY_WINDOW - 1, netkey.REPLAY_WINDOW + 1])
def test_datagrams_from_outside_the_window_are_stale(skew: float) -> None:
    sealed = DatagramSealer(KEY).seal(DATAGRAM, NOW + skew)
    with pytest.raises(DatagramError) as info:
        DatagramSealer(KEY).open(sealed, NOW)
    assert info.value.reason == "stale"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_open(data: bytes) -> None:
    with pytest.raises(DatagramError):
        DatagramSealer(KEY).open(data, NOW)


# -- the replay guard -------------------------------------------------------------------


def test_replay_guard_forgets_only_what_is_out_of_the_window() -> None:
    guard = ReplayGuard(window=10.0, limit=100)
    assert guard.check(b"a", 100.0, now=100.0) is None
    assert guard.check(b"a", 100.0, now=105.0) == "replayed"
    assert guard.check(b"b", 104.0, now=112.0) is None  # prunes "a" (100 < 112 - 10)
    assert len(guard) == 1
    assert guard.check(b"a", 100.0, now=112.0) == "stale"  # and "a" is stale by then


def test_replay_guard_is_bounded_and_refuses_below_its_floor() -> None:
    guard = ReplayGuard(window=1000.0, limit=10)
    for i in range(30):
        assert guard.check(bytes([i]), 100.0 + i, now=150.0) is None
        assert len(guard) <= 10
    assert guard.check(bytes([0]), 100.0, now=150.0) == "replayed"  # evicted, still refused
    assert guard.check(b"new", 110.0, now=150.0) == "replayed"  # older than the floor
    assert guard.check(b"new", 140.0, now=150.0) is None


class _ModelGuard:
    """The replay guard's rules in the plainest form (a list): what ReplayGuard must do."""

    def __init__(self, window: float, limit: int) -> None:
        self.window, self.limit, self.seen, self.floor = window, limit, [], float("-inf")

    def check(self, nonce: bytes, timestamp: float, now: float) -> str | None:
        if abs(timestamp - now) > self.window:
            return "stale"
        if timestamp <= self.floor or any(n == nonce for n, _ in self.seen):
            return "replayed"
        while self.seen and self.seen[0][1] < now - self.window:
            self.seen.pop(0)
        self.seen.append((nonce, timestamp))
        if len(self.seen) > self.limit:
            self.floor = max(self.floor, self.seen.pop(0)[1])
        return None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 400), st.floats(-3.0, 3.0), st.floats(0.0, 2.0)),
        min_size=1,
        max_size=600,
    ),
    st.integers(1, 300),
)
def test_replay_guard_decides_as_the_plain_rules_do(
    steps: list[tuple[int, float, float]], limit: int
) -> None:
    # Nonces from a small set (replays), timestamps around a clock that moves forward:
    # the compact guard (buckets that grow and shrink, arrays cut at the head) must agree
    # with the plain list on every datagram.
    guard, model = ReplayGuard(window=5.0, limit=limit), _ModelGuard(5.0, limit)
    now = 1000.0
    for which, skew, advance in steps:
        now += advance
        nonce = which.to_bytes(2, "big") * 12  # 24 bytes, like a real nonce
        assert guard.check(nonce, now + skew, now) == model.check(nonce, now + skew, now)
        assert len(guard) == len(model.seen)


def test_replay_guard_memory_is_small_per_nonce() -> None:
    # The point of its layout: ~40 bytes a remembered nonce (a dict of bytes: ~140).
    import os
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        guards = [ReplayGuard() for _ in range(20)]
        for guard in guards:
            for i in range(200):
                assert guard.check(os.urandom(24), NOW + i * 0.01, NOW + 2) is None
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert sum(len(g) for g in guards) == 4000
    assert used / 4000 < 64, used / 4000


def test_replay_guard_refuses_every_replay_at_its_limit_and_shrinks_back() -> None:
    import os

    guard = ReplayGuard(window=100.0, limit=netkey.MAX_REMEMBERED)
    nonces = [os.urandom(24) for _ in range(netkey.MAX_REMEMBERED)]
    for i, nonce in enumerate(nonces):
        assert guard.check(nonce, NOW + i * 0.001, NOW) is None
    assert len(guard) == netkey.MAX_REMEMBERED
    for i, nonce in enumerate(nonces):
        assert guard.check(nonce, NOW + i * 0.001, NOW) == "replayed"
    grown = len(guard._buckets)
    assert grown >= netkey.MAX_REMEMBERED // (2 * ReplayGuard.PER_BUCKET)
    later = NOW + 200.0  # everything has left the window
    for i in range(50):
        assert guard.check(os.urandom(24), later + i * 0.001, later) is None
    assert len(guard) == 50 and len(guard._buckets) < grown


def test_every_refusal_reason_is_in_the_fixed_vocabulary() -> None:
    sealer = DatagramSealer(KEY)
    seen = set()
    good = sealer.seal(DATAGRAM, NOW)
    for data, now in ((b"x", NOW), (good, NOW + 10 * netkey.REPLAY_WINDOW), (good, NOW)):
        try:
            sealer.open(data, now)
        except DatagramError as exc:
            seen.add(exc.reason)
    try:
        sealer.open(good, NOW)
    except DatagramError as exc:
        seen.add(exc.reason)
    assert seen == netkey.DROP_REASONS
