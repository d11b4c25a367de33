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
import struct
from collections import OrderedDict
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
_timestamp = struct.Struct(">Q")


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
    and anything not newer than it is refused from then on (the floor)."""

    def __init__(self, window: float = REPLAY_WINDOW, limit: int = MAX_REMEMBERED) -> None:
        self.window = window
        self.limit = limit
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._floor = float("-inf")

    def check(self, nonce: bytes, timestamp: float, now: float) -> str | None:
        """None if fresh (and remembered now), else the drop reason."""
        if abs(timestamp - now) > self.window:
            return "stale"
        if timestamp <= self._floor or nonce in self._seen:
            return "replayed"
        seen = self._seen
        horizon = now - self.window
        while seen:
            oldest = next(iter(seen))
            if seen[oldest] >= horizon:
                break
            del seen[oldest]
        seen[nonce] = timestamp
        if len(seen) > self.limit:
            _, dropped = seen.popitem(last=False)
            self._floor = max(self._floor, dropped)
        return None

    def __len__(self) -> int:
        return len(self._seen)


class DatagramSealer:
    """Seals and opens the datagrams of one node in a private mesh."""

    def __init__(self, key: NetworkKey, guard: ReplayGuard | None = None) -> None:
        self._box = crypto.AeadScratch(key.datagram_key)
        self.guard = guard or ReplayGuard()

    def __repr__(self) -> str:
        return "DatagramSealer(<secret>)"

    def seal(self, datagram: bytes, now: float) -> bytes:
        stamped = _timestamp.pack(max(0, int(now * 1000))) + datagram
        return self._box.seal(stamped)

    def open(self, data: bytes, now: float) -> bytes:
        """The datagram inside, or DatagramError("unauthenticated" | "stale" | "replayed")."""
        datagram, timestamp = self.open_fresh(data, now)
        self.check_replay(data, timestamp, now)
        return datagram

    def open_fresh(self, data: bytes, now: float) -> tuple[bytes, float]:
        """The datagram inside and its timestamp, checked for the tag and the window but
        not yet for a replay (DatagramError "unauthenticated" | "stale"); check_replay
        next. Every datagram needs both: an answer too (call ids are 32 bits, so a
        replayed answer could match a later call to the same peer)."""
        opened = self._box.open_split(data, _timestamp.size)
        if opened is None:
            raise DatagramError("unauthenticated", "not sealed with our network key")
        stamp, datagram = opened
        timestamp = _timestamp.unpack(stamp)[0] / 1000
        if abs(timestamp - now) > self.guard.window:
            raise DatagramError("stale", "stale datagram")
        return datagram, timestamp

    def check_replay(self, data: bytes, timestamp: float, now: float) -> None:
        """DatagramError("replayed") if the nonce of sealed `data` was seen in the window."""
        reason = self.guard.check(data[: crypto.AEAD_NONCE_SIZE], timestamp, now)
        if reason is not None:
            raise DatagramError(reason, f"{reason} datagram")
