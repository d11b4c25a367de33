"""Private mesh: one 32-byte network key, shared by a community, seals every DHT datagram.

Pure: no sockets; callers pass `now` (wall-clock seconds). The construction, its labels
and its test vectors are in docs/protocol.md ("Private mesh"):

    datagram key  = BLAKE2b-256(key = network key, message = "mesh/v1/net/datagram")
    sealed        = nonce (24 random bytes)
                    || XChaCha20-Poly1305(datagram key, nonce,
                                          timestamp_ms (8 bytes, big endian) || datagram)

Nothing in a sealed datagram is fixed or readable: no version byte, no key id, no
length field; a watcher without the key sees 48 bytes more than the datagram, all of
them indistinguishable from random. A datagram that fails the tag is dropped before any
parsing (`dropped_unauthenticated`); one whose timestamp is more than REPLAY_WINDOW from
our clock (`dropped_stale`) or whose nonce was seen within the window
(`dropped_replayed`) too. The replay rule is WireGuard's idea (a handshake carries a
timestamp so a replayed one is refused) with a bounded nonce cache instead of per-session
counters, because our datagrams have no sessions.

An invite is "meshnet" + lowercase base32 of version || key || name, with a 4-byte
checksum, as typo-proof as IDs; it shows as text and as a QR code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from array import array
from dataclasses import dataclass, field
from functools import cached_property

from mesh import crypto
from mesh.errors import DatagramError, InvalidInviteError

NETWORK_KEY_SIZE = 32
INVITE_PREFIX = "meshnet"
INVITE_VERSION = 1
MAX_NAME_BYTES = 32
REPLAY_WINDOW = 300.0  # seconds; the clocks of a private mesh's members must agree this well
MAX_REMEMBERED = 8192  # nonces kept per node (bounded whatever members send)
SEAL_OVERHEAD = crypto.AEAD_NONCE_SIZE + 8 + crypto.AEAD_TAG_SIZE  # 48 bytes
MDNS_EPOCH = 3600  # seconds: the mDNS names of a private mesh change every hour

#: Why `DatagramSealer.open` refused a datagram (counted as `dropped_<reason>`), checked
#: before `wire.decode_datagram` and its `wire.DROP_REASONS`.
DROP_REASONS = frozenset({"unauthenticated", "stale", "replayed"})

LABEL_DATAGRAM = b"mesh/v1/net/datagram"
LABEL_MDNS = b"mesh/v1/net/mdns"
_CHECKSUM_LABEL = b"mesh/v1/net/invite"
_CHECKSUM_SIZE = 4
_B32_SET = frozenset("abcdefghijklmnopqrstuvwxyz234567")


@dataclass(frozen=True)
class NetworkKey:
    """A private mesh's secret and its human name. `repr` never shows the secret."""

    name: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != NETWORK_KEY_SIZE:
            raise InvalidInviteError(f"a network key is {NETWORK_KEY_SIZE} bytes")
        check_name(self.name)

    @classmethod
    def generate(cls, name: str) -> NetworkKey:
        return cls(name, os.urandom(NETWORK_KEY_SIZE))

    @cached_property
    def datagram_key(self) -> bytes:
        return crypto.derive_key(self.secret, LABEL_DATAGRAM)

    def mdns_tag(self, epoch: int) -> str:
        """What members' mDNS announcements carry in epoch `epoch` (now // MDNS_EPOCH):
        12 base32 characters only members can compute, new every hour."""
        raw = crypto.derive_key(self.secret, LABEL_MDNS + b"/%d" % epoch, 16)
        return base64.b32encode(raw).decode("ascii").lower()[:12]

    def invite(self) -> str:
        body = bytes([INVITE_VERSION]) + self.secret + self.name.encode("utf-8")
        raw = body + _checksum(body)
        return INVITE_PREFIX + base64.b32encode(raw).decode("ascii").rstrip("=").lower()

    @classmethod
    def from_invite(cls, text: str) -> NetworkKey:
        """Parse an invite; InvalidInviteError (one line, what to do) for any typo."""
        raw = _invite_bytes(text)
        body, checksum = raw[:-_CHECKSUM_SIZE], raw[-_CHECKSUM_SIZE:]
        if not crypto.equal(checksum, _checksum(body)):
            raise InvalidInviteError(
                "this invite has a typo (checksum mismatch): copy or scan it again"
            )
        if body[0] != INVITE_VERSION:
            raise InvalidInviteError(
                f"this invite is from another version of mesh ({body[0]}): update mesh"
            )
        secret, name_bytes = body[1 : 1 + NETWORK_KEY_SIZE], body[1 + NETWORK_KEY_SIZE :]
        try:
            name = name_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInviteError("this invite's network name is not text") from None
        return cls(name, secret)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInviteError("a network needs a name (e.g. mesh network create square)")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES or not name.isprintable():
        raise InvalidInviteError(
            f"a network name is at most {MAX_NAME_BYTES} bytes of printable text"
        )
    return name


def _checksum(body: bytes) -> bytes:
    return hashlib.blake2b(_CHECKSUM_LABEL + body, digest_size=_CHECKSUM_SIZE).digest()


def _invite_bytes(text: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidInviteError("an invite must be text")
    cleaned = "".join(text.split()).lower()
    if not cleaned.startswith(INVITE_PREFIX):
        raise InvalidInviteError(
            f'this is not a network invite: invites start with "{INVITE_PREFIX}"'
        )
    body = cleaned[len(INVITE_PREFIX) :]
    bad = sorted({c for c in body if c not in _B32_SET})
    if bad:
        raise InvalidInviteError(
            f"this invite contains {bad[0]!r}, which invites never use (only a-z and 2-7)"
        )
    try:
        raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except binascii.Error:
        raise InvalidInviteError("this invite is cut short or has a typo: copy it again") from None
    if base64.b32encode(raw).decode().rstrip("=").lower() != body:
        raise InvalidInviteError("this invite has a typo: copy or scan it again")
    if len(raw) < 1 + NETWORK_KEY_SIZE + 1 + _CHECKSUM_SIZE:
        raise InvalidInviteError("this invite is too short: copy it again in full")
    if len(raw) > 1 + NETWORK_KEY_SIZE + MAX_NAME_BYTES + _CHECKSUM_SIZE:
        raise InvalidInviteError("this invite is too long: copy only the invite")
    return raw


class ReplayGuard:
    """Refuses a datagram whose timestamp is outside [now - window, now + window] or whose
    nonce was seen within the window. Bounded: past `limit` nonces the oldest is dropped
    and anything not newer than it is refused from then on (the floor).

    Compact, because every node keeps one and a 300 s window holds every datagram of its
    busiest minutes: a nonce is remembered by its first 8 bytes (random), kept in one of
    about len/8 byte strings (buckets, chosen by two of those bytes), with the insertion
    order and the timestamps in two arrays: ~40 bytes a nonce instead of ~140 for a dict
    of bytes, and the steps are C (`in`, `find`, appends). A replay has the very same
    nonce, so it is always refused; another nonce with the same 8 bytes (2^-64 a pair)
    or straddling two entries of a bucket could only refuse an honest datagram, never let
    a replay through. A member aiming all its nonces at one bucket costs at most a scan
    of `limit` * 8 bytes per datagram."""

    MIN_BUCKETS = 16
    PER_BUCKET = 8  # nonces per bucket after a resize (grows at 2x, shrinks at 1/4 of it)

    __slots__ = (
        "_buckets",
        "_floor",
        "_grow_at",
        "_head",
        "_mask",
        "_ring",
        "_shrink_at",
        "_times",
        "limit",
        "window",
    )

    def __init__(self, window: float = REPLAY_WINDOW, limit: int = MAX_REMEMBERED) -> None:
        self.window = window
        self.limit = limit
        self._floor = float("-inf")
        self._ring = bytearray()  # 8 bytes per remembered nonce, oldest first from _head
        self._times = array("d")  # their timestamps
        self._head = 0
        self._buckets: list[bytearray] = []
        self._mask = self._grow_at = self._shrink_at = 0
        self._rebucket()

    def check(self, nonce: bytes, timestamp: float, now: float) -> str | None:
        """None if fresh (and remembered now), else the drop reason."""
        if abs(timestamp - now) > self.window:
            return "stale"
        if timestamp <= self._floor:
            return "replayed"
        key = nonce[:8]
        if len(key) != 8:
            key = key.ljust(8, b"\0")
        buckets, mask = self._buckets, self._mask
        bucket = buckets[(key[1] << 8 | key[0]) & mask]
        if key in bucket:
            return "replayed"
        ring, times, head = self._ring, self._times, self._head
        horizon = now - self.window
        while head < len(times) and times[head] < horizon:  # the oldest left the window
            self._take_out(head)
            head += 1
        bucket += key
        ring += key
        times.append(timestamp)
        if len(times) - head > self.limit:
            self._floor = max(self._floor, times[head])
            self._take_out(head)
            head += 1
        if head > 32 and head * 2 > len(times):
            del ring[: 8 * head], times[:head]  # the arrays stay under twice what is kept
            head = 0
        self._head = head
        if not self._shrink_at <= len(times) - head <= self._grow_at:
            self._rebucket()
        return None

    def _take_out(self, index: int) -> None:
        """Take the nonce at `index` of the arrays out of its bucket (the caller moves
        the head past it)."""
        key = self._ring[8 * index : 8 * index + 8]
        bucket = self._buckets[(key[1] << 8 | key[0]) & self._mask]
        at = bucket.find(key)
        while at != -1 and at & 7:  # a whole entry, not the end of one and the next's start
            at = bucket.find(key, at + 1)
        if at != -1:  # always
            del bucket[at : at + 8]

    def _rebucket(self) -> None:
        """Spread what is remembered over about one bucket per PER_BUCKET nonces (a
        power of 2, at least MIN_BUCKETS, at most 65,536)."""
        ring = self._ring
        remembered = len(self)
        count = max(self.MIN_BUCKETS, 1 << (remembered // self.PER_BUCKET).bit_length())
        count = min(count, 1 << 16)
        buckets = [bytearray() for _ in range(count)]
        mask = count - 1
        for at in range(8 * self._head, len(ring), 8):
            buckets[(ring[at + 1] << 8 | ring[at]) & mask] += ring[at : at + 8]
        self._buckets, self._mask = buckets, mask
        self._grow_at = 2 * self.PER_BUCKET * count
        self._shrink_at = 0 if count == self.MIN_BUCKETS else self.PER_BUCKET * count // 4

    def __len__(self) -> int:
        return len(self._times) - self._head


class DatagramSealer:
    """Seals and opens the datagrams of one node in a private mesh."""

    __slots__ = ("_box", "guard")

    def __init__(self, key: NetworkKey, guard: ReplayGuard | None = None) -> None:
        self._box = crypto.AeadScratch(key.datagram_key)
        self.guard = guard or ReplayGuard()

    def __repr__(self) -> str:
        return "DatagramSealer(<secret>)"

    def seal(self, datagram: bytes, now: float) -> bytes:
        """nonce || XChaCha20-Poly1305(timestamp_ms || datagram): sealed anew each time."""
        return self._box.seal_u64(max(0, int(now * 1000)), datagram)

    def open(self, data: bytes, now: float) -> bytes:
        """The datagram inside, or DatagramError("unauthenticated" | "stale" | "replayed").
        Every datagram needs every check, an answer too (call ids are 32 bits, so a
        replayed answer could match a later call to the same peer); nothing of it is
        parsed before the tag is checked."""
        opened = self._box.open_u64(data)
        if opened is None:
            raise DatagramError("unauthenticated", "not sealed with our network key")
        reason = self.guard.check(data, opened[0] / 1000, now)  # the nonce leads
        if reason is not None:
            raise DatagramError(reason, f"{reason} datagram")
        return opened[1]
