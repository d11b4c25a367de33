"""The key schedule of contacts' mailboxes (pure: no clock, no socket, no store).

Three kinds of keys, all from libsodium (docs/protocol.md, "Contacts and mailboxes"):

- **Mailbox root** (per person, random, handed only to contacts): an Ed25519 scalar `a`,
  its point `A = aB` and a 32-byte nonce prefix. The mailbox of epoch `e` is the DHT key
  `mailbox_key_for(A_e)` of the blinded key `A_e = h_e A`, with the blinding factor
  `h_e = reduce(BLAKE2b-512("mesh/blind/v1\\0" || A || len || e))` (Tor's key blinding,
  rend-spec-v3 A.2). Contacts compute `A_e` from `A`; only the owner can sign as `A_e`
  (scalar `h_e a`), which is what a replica checks before a listen or a delete. Someone
  with an ID alone computes none of this; `A_e` of two epochs are unlinkable without `A`.
- **Prekeys** (per person and epoch, random X25519, as X3DH's signed prekeys): senders
  seal a message of epoch `e` to the recipient's prekey `e`; the recipient deletes the
  secret after the epoch has passed and been fetched (forward secrecy).
- **Introduction key** (per pair of identities): both sides of a new contact compute
  `crypto_kx` of their identities' X25519 keys, and from it an Ed25519 key pair whose
  mailbox holds each side's first bundle (its root and prekeys) until the other reads it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack  # type: ignore[import-untyped, unused-ignore]

from mesh import crypto
from mesh.errors import MalformedError
from mesh.identity import mailbox_key_for

__all__ = [
    "BUNDLE_VERSION",
    "EPOCH_SECONDS",
    "GRACE_EPOCHS",
    "MAX_BUNDLE_PREKEYS",
    "OVERLAP",
    "PREKEY_HORIZON",
    "BlindedSigner",
    "Bundle",
    "MailboxRoot",
    "Signer",
    "blinding_factor",
    "epoch_of",
    "epochs_around",
    "intro_signer",
    "mailbox_key_at",
    "pack_bundle",
    "parse_bundle",
]

EPOCH_SECONDS = 24 * 3600  # a mailbox key lives one day
OVERLAP = 3600  # listen and fetch this far into the neighbouring epochs (clock skew)
PREKEY_HORIZON = 14  # prekeys handed to contacts this many epochs ahead
GRACE_EPOCHS = 1  # a prekey's secret outlives its epoch by one more (see docs)
MAX_BUNDLE_PREKEYS = 32
MIN_EPOCH_SECONDS = 1  # tests shorten epochs; the bundle says each owner's length
MAX_EPOCH_SECONDS = 7 * 24 * 3600
BUNDLE_VERSION = 1

_BLIND_LABEL = b"mesh/blind/v1\x00"
_PREFIX_LABEL = b"mesh/blind-prefix/v1\x00"
_INTRO_LABEL = b"mesh/intro/v1"
_DECODE_ERRORS = (ValueError, TypeError, OverflowError, msgpack.UnpackException)


class Signer(Protocol):
    """What signs an owner request: an Identity, a KeyPair, a BlindedSigner."""

    @property
    def verify_key(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...


def epoch_of(now: float, length: int) -> int:
    """The epoch number of wall time `now` for epochs of `length` seconds."""
    return int(now // length)


def epochs_around(now: float, length: int, overlap: float = OVERLAP) -> list[int]:
    """The epochs a recipient covers at `now`: its own, and the neighbour within `overlap`
    (a sender whose clock is off by up to `overlap`, or who sent just before midnight)."""
    overlap = min(overlap, length / 4)
    epochs = {
        epoch_of(now - overlap, length),
        epoch_of(now, length),
        epoch_of(now + overlap, length),
    }
    return sorted(epochs)


def _period(length: int, epoch: int) -> bytes:
    return struct.pack(">QQ", length, epoch)


def blinding_factor(root_public: bytes, length: int, epoch: int) -> bytes:
    """h_e: the public blinding factor of a root for one epoch (a reduced scalar)."""
    return crypto.scalar_reduce(
        crypto.hash_wide(_BLIND_LABEL, root_public + _period(length, epoch))
    )


def blinded_public(root_public: bytes, length: int, epoch: int) -> bytes:
    """A_e = h_e A: the key a replica sees for this mailbox in this epoch."""
    return crypto.blind_public(root_public, blinding_factor(root_public, length, epoch))


def mailbox_key_at(root_public: bytes, length: int, epoch: int) -> bytes:
    """The DHT key of someone's mailbox in `epoch`, from their root (contacts only)."""
    return mailbox_key_for(blinded_public(root_public, length, epoch))


class BlindedSigner:
    """The owner's signer for one epoch's mailbox: scalar h_e a, its own nonce prefix."""

    __slots__ = ("_prefix", "_scalar", "mailbox_key", "verify_key")

    def __init__(self, scalar: bytes, prefix: bytes, verify_key: bytes) -> None:
        self._scalar = scalar
        self._prefix = prefix
        self.verify_key = verify_key
        self.mailbox_key = mailbox_key_for(verify_key)

    def __repr__(self) -> str:
        return f"BlindedSigner(verify_key={self.verify_key.hex()})"

    def sign(self, data: bytes) -> bytes:
        return crypto.sign_with_scalar(self._scalar, self._prefix, self.verify_key, data)


@dataclass(frozen=True, repr=False)
class MailboxRoot:
    """Our mailbox root: secret scalar and prefix, public point. Never shown."""

    scalar: bytes
    prefix: bytes
    public: bytes

    def __repr__(self) -> str:
        return "MailboxRoot(<secret>)"

    @classmethod
    def generate(cls, rand: Callable[[int], bytes] | None = None) -> MailboxRoot:
        """A new random root (`rand`: the simulator's seeded bytes instead of the OS's)."""
        if rand is None:
            scalar, prefix = crypto.random_scalar(), crypto.random_bytes(32)
        else:
            scalar, prefix = crypto.scalar_reduce(rand(64)), rand(32)
        return cls(scalar, prefix, crypto.scalar_public(scalar))

    def to_bytes(self) -> bytes:
        packed: bytes = msgpack.packb([1, self.scalar, self.prefix], use_bin_type=True)
        return packed

    @classmethod
    def from_bytes(cls, data: bytes) -> MailboxRoot:
        try:
            version, scalar, prefix = msgpack.unpackb(data, raw=False)
        except (*_DECODE_ERRORS, AttributeError):
            raise MalformedError("mailbox root is damaged") from None
        if version != 1 or type(scalar) is not bytes or type(prefix) is not bytes:
            raise MalformedError("mailbox root is damaged")
        return cls(scalar, prefix, crypto.scalar_public(scalar))

    def signer(self, length: int, epoch: int) -> BlindedSigner:
        factor = blinding_factor(self.public, length, epoch)
        scalar = crypto.blind_scalar(self.scalar, factor)
        prefix = crypto.derive_key(self.prefix, _PREFIX_LABEL + _period(length, epoch))
        return BlindedSigner(scalar, prefix, crypto.blind_public(self.public, factor))


def intro_signer(pair_secret: bytes) -> crypto.KeyPair:
    """The key pair both sides of a new contact derive from their crypto_kx secret; its
    mailbox (mailbox_key_for of its public key) carries their first bundles."""
    return crypto.KeyPair(crypto.derive_key(pair_secret, _INTRO_LABEL))


# -- bundles: what a "keys" message carries -------------------------------------------------


@dataclass(frozen=True)
class Bundle:
    """An owner's mailbox root, epoch length and prekeys for epochs first.. (in order);
    `reply`: the sender does not have our bundle yet (send it back)."""

    root_public: bytes
    epoch_length: int
    first_epoch: int
    prekeys: tuple[bytes, ...]
    reply: bool

    def prekey_for(self, epoch: int) -> bytes | None:
        index = epoch - self.first_epoch
        return self.prekeys[index] if 0 <= index < len(self.prekeys) else None


def pack_bundle(bundle: Bundle) -> bytes:
    fields = [
        BUNDLE_VERSION,
        bundle.root_public,
        bundle.epoch_length,
        bundle.first_epoch,
        list(bundle.prekeys),
        bundle.reply,
    ]
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def parse_bundle(data: bytes) -> Bundle:
    """Strictly decode a bundle from a peer; MalformedError for anything else."""
    try:
        obj: Any = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except _DECODE_ERRORS:
        raise MalformedError("keys: not valid msgpack") from None
    if type(obj) is not list or len(obj) != 6:
        raise MalformedError("keys: expected 6 fields")
    version, root, length, first, prekeys, reply = obj
    if version != BUNDLE_VERSION or type(version) is not int:
        raise MalformedError("keys: unknown version")
    if type(root) is not bytes or len(root) != crypto.KEY_SIZE:
        raise MalformedError("keys: root is not 32 bytes")
    if type(length) is not int or not MIN_EPOCH_SECONDS <= length <= MAX_EPOCH_SECONDS:
        raise MalformedError("keys: epoch length out of range")
    if type(first) is not int or not 0 <= first < 2**40:
        raise MalformedError("keys: first epoch out of range")
    if type(prekeys) is not list or not 1 <= len(prekeys) <= MAX_BUNDLE_PREKEYS:
        raise MalformedError(f"keys: 1 to {MAX_BUNDLE_PREKEYS} prekeys")
    if any(type(p) is not bytes or len(p) != crypto.KEY_SIZE for p in prekeys):
        raise MalformedError("keys: a prekey is not 32 bytes")
    if type(reply) is not bool:
        raise MalformedError("keys: reply is not a boolean")
    try:
        crypto.blind_public(root, blinding_factor(root, length, first))
    except MalformedError:
        raise MalformedError("keys: root is not a usable point") from None
    return Bundle(root, length, first, tuple(prekeys), reply)


# -- the requests mailbox (issue 15): what a stranger can compute from an ID ------------------
# Only read while its owner turned requests on. Its key of day `e` is the identity key
# blinded for that day (Tor's key blinding of the identity key itself, as onion services do):
# anyone with the ID computes it, only the owner can sign a listen or delete there.

_REQUESTS_LABEL = b"mesh/requests/v1\x00"
_REQUESTS_PREFIX_LABEL = b"mesh/requests-prefix/v1\x00"


def requests_factor(verify_key: bytes, epoch: int) -> bytes:
    period = _period(EPOCH_SECONDS, epoch)
    return crypto.scalar_reduce(crypto.hash_wide(_REQUESTS_LABEL, verify_key + period))


def requests_key(verify_key: bytes, epoch: int) -> bytes:
    """The DHT key of someone's requests mailbox on day `epoch` (from their ID)."""
    blinded = crypto.blind_public(verify_key, requests_factor(verify_key, epoch))
    return mailbox_key_for(blinded)


def requests_signer(seed: bytes, verify_key: bytes, epoch: int) -> BlindedSigner:
    """The owner's signer for its requests mailbox of day `epoch` (the identity's RFC 8032
    secret scalar, blinded; its nonce prefix derived per day)."""
    scalar, prefix = crypto.ed25519_secret_scalar(seed)
    factor = requests_factor(verify_key, epoch)
    day_prefix = crypto.derive_key(prefix, _REQUESTS_PREFIX_LABEL + _period(EPOCH_SECONDS, epoch))
    blinded = crypto.blind_public(verify_key, factor)
    return BlindedSigner(crypto.blind_scalar(scalar, factor), day_prefix, blinded)
