"""Who someone is: Ed25519 keys, checksummed ID strings, fingerprints, mailbox keys.

An ID looks like ``mesha...`` (64 characters): "mesh", then lowercase base32 (no padding)
of a version byte, the 32-byte Ed25519 public key and a 4-byte checksum. Parsing is
strict and every failure says, in one line, what the person should do about it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import msgpack  # type: ignore[import-untyped, unused-ignore]

from mesh import crypto
from mesh.errors import InvalidIdError, MalformedError, WrongPassphraseError

__all__ = [
    "ID_LENGTH",
    "ID_PREFIX",
    "ID_VERSION",
    "MAILBOX_KEY_SIZE",
    "Identity",
    "PublicIdentity",
    "fingerprint_for",
    "id_for_key",
    "is_valid_id",
    "key_from_id",
    "mailbox_key_for",
]

ID_PREFIX = "mesh"
ID_VERSION = 1
MAILBOX_KEY_SIZE = 20
_CHECKSUM_SIZE = 4
_ID_RAW_SIZE = 1 + crypto.KEY_SIZE + _CHECKSUM_SIZE
_B32_CHARS = "abcdefghijklmnopqrstuvwxyz234567"
_B32_SET = frozenset(_B32_CHARS)
ID_LENGTH = len(ID_PREFIX) + (_ID_RAW_SIZE * 8 + 4) // 5  # 4 + 60 base32 characters = 64
_FINGERPRINT_GROUPS = 12
_IDENTITY_FORMAT = 1


def mailbox_key_for(verify_key: bytes) -> bytes:
    """The 20-byte DHT key of someone's mailbox (never the raw public key)."""
    return hashlib.blake2b(b"mesh/mailbox/v1" + verify_key, digest_size=MAILBOX_KEY_SIZE).digest()


def _id_checksum(version: int, verify_key: bytes) -> bytes:
    data = b"mesh/id/v1" + bytes([version]) + verify_key
    return hashlib.blake2b(data, digest_size=_CHECKSUM_SIZE).digest()


def id_for_key(verify_key: bytes) -> str:
    """The user-facing ID string of an Ed25519 public key."""
    raw = bytes([ID_VERSION]) + verify_key + _id_checksum(ID_VERSION, verify_key)
    return ID_PREFIX + base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def _id_body(text: str) -> str:
    """Normalise `text` and return its base32 part, or say what is wrong with it."""
    if not isinstance(text, str):
        raise InvalidIdError("an ID must be text")
    cleaned = text.strip().lower()
    if not cleaned:
        raise InvalidIdError("no ID given: paste the ID you were sent")
    if not cleaned.startswith(ID_PREFIX):
        raise InvalidIdError(f'this is not a mesh ID: IDs start with "{ID_PREFIX}"')
    if len(cleaned) != ID_LENGTH:
        size = "short" if len(cleaned) < ID_LENGTH else "long"
        raise InvalidIdError(
            f"this ID is too {size}: {len(cleaned)} characters, expected {ID_LENGTH}; "
            "copy it again in full"
        )
    body = cleaned[len(ID_PREFIX) :]
    for position, char in enumerate(body, start=len(ID_PREFIX) + 1):
        if char not in _B32_SET:
            shown = "a space" if char.isspace() else repr(char)
            raise InvalidIdError(
                f"this ID contains {shown} at position {position}, which IDs never use "
                "(only letters a-z and digits 2-7): check for 0/o and 1/l mix-ups"
            )
    return body


def key_from_id(text: str) -> bytes:
    """The Ed25519 public key inside an ID string; InvalidIdError for any typo."""
    body = _id_body(text)
    typo = "this ID has a typo (checksum mismatch): check it character by character"
    try:
        raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except binascii.Error:
        raise InvalidIdError(typo) from None
    # b32decode ignores the unused low bits of the last character: a typo there would
    # decode to the same bytes, so only the canonical spelling is accepted.
    if len(raw) != _ID_RAW_SIZE or base64.b32encode(raw).decode().rstrip("=").lower() != body:
        raise InvalidIdError(typo)
    version, key, checksum = raw[0], raw[1:-_CHECKSUM_SIZE], raw[-_CHECKSUM_SIZE:]
    # Checksum before version: a typo in the first characters is a typo, not a new version.
    if checksum != _id_checksum(version, key):
        raise InvalidIdError(typo)
    if version != ID_VERSION:
        raise InvalidIdError(
            f"this ID is from another version of mesh ({version}): update mesh and try again"
        )
    try:
        crypto.ed25519_pk_to_x25519(key)
    except MalformedError:
        raise InvalidIdError("this ID does not hold a usable key: ask for the ID again") from None
    return key


def is_valid_id(text: str) -> bool:
    """True if `text` parses as an ID."""
    try:
        key_from_id(text)
    except InvalidIdError:
        return False
    return True


def fingerprint_for(verify_key: bytes) -> str:
    """12 groups of 5 digits that two people read aloud to check each other's key."""
    size = 5 * _FINGERPRINT_GROUPS
    digest = hashlib.blake2b(b"mesh/fingerprint/v1" + verify_key, digest_size=size).digest()
    # 5 bytes (40 bits) per group makes the modulo bias negligible.
    groups = (int.from_bytes(digest[i : i + 5], "big") % 100_000 for i in range(0, size, 5))
    return " ".join(f"{group:05d}" for group in groups)


@dataclass(frozen=True, repr=False)
class PublicIdentity:
    """Someone's public key, and everything derived from it."""

    verify_key: bytes

    def __post_init__(self) -> None:
        if type(self.verify_key) is not bytes or len(self.verify_key) != crypto.KEY_SIZE:
            raise MalformedError(f"a public key is exactly {crypto.KEY_SIZE} bytes")

    def __repr__(self) -> str:
        return f"PublicIdentity({self.id!r})"

    @classmethod
    def from_id(cls, text: str) -> PublicIdentity:
        """Parse an ID string; InvalidIdError with a one-line message for any mistake.

        Parsed IDs are cached (the object is immutable, and its derived keys are then
        computed once): a conversation sends to the same ID again and again, and a parse
        costs ~35 us of base32, checksum and curve conversion.
        """
        return _public_from_id(text) if cls is PublicIdentity else cls(key_from_id(text))

    @cached_property
    def id(self) -> str:
        return id_for_key(self.verify_key)

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint_for(self.verify_key)

    @cached_property
    def mailbox_key(self) -> bytes:
        return mailbox_key_for(self.verify_key)

    @cached_property
    def box_public_key(self) -> bytes:
        """X25519 key messages are sealed to; MalformedError if the key is not a valid point."""
        return crypto.ed25519_pk_to_x25519(self.verify_key)


class Identity:
    """Our own identity: the secret Ed25519 seed and its cached key objects."""

    __slots__ = ("_keys", "_public")

    def __init__(self, seed: bytes) -> None:
        self._keys = crypto.KeyPair(seed)
        self._public = PublicIdentity(self._keys.verify_key)

    @classmethod
    def generate(cls) -> Identity:
        return cls(crypto.generate_seed())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        return cls(seed)

    def __repr__(self) -> str:
        # The seed must never end up in a log or a traceback.
        return f"Identity({self.id!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Identity):
            return NotImplemented
        return self.verify_key == other.verify_key

    def __hash__(self) -> int:
        return hash(self.verify_key)

    @property
    def seed(self) -> bytes:
        return self._keys.seed

    @property
    def verify_key(self) -> bytes:
        return self._keys.verify_key

    @property
    def public(self) -> PublicIdentity:
        return self._public

    @property
    def id(self) -> str:
        return self._public.id

    @property
    def mailbox_key(self) -> bytes:
        return self._public.mailbox_key

    def sign(self, data: bytes) -> bytes:
        """64-byte Ed25519 signature."""
        return self._keys.sign(data)

    def unseal(self, ciphertext: bytes) -> bytes:
        """Open a ciphertext sealed to us; NotForUsError otherwise."""
        return self._keys.unseal(ciphertext)

    def to_bytes(self, passphrase: str | None = None) -> bytes:
        """Serialise for storage, encrypting the seed when a passphrase is given."""
        if passphrase is None:
            doc: dict[str, Any] = {"v": _IDENTITY_FORMAT, "enc": False, "seed": self.seed}
        else:
            blob = crypto.encrypt_with_passphrase(self.seed, passphrase)
            doc = {"v": _IDENTITY_FORMAT, "enc": True, "seed": blob}
        packed: bytes = msgpack.packb(doc, use_bin_type=True)
        return packed

    @classmethod
    def from_bytes(cls, data: bytes, passphrase: str | None = None) -> Identity:
        """Parse `to_bytes` output; MalformedError on garbage, WrongPassphraseError."""
        encrypted, seed = _parse_identity_doc(data)
        if encrypted:
            if passphrase is None:
                raise WrongPassphraseError("this identity is locked: enter its passphrase")
            seed = crypto.decrypt_with_passphrase(seed, passphrase)
        if len(seed) != crypto.SEED_SIZE:
            raise MalformedError("identity data is damaged: wrong seed size")
        return cls(seed)


def _parse_identity_doc(data: bytes) -> tuple[bool, bytes]:
    """(encrypted, seed or blob) from a stored identity, strictly."""
    if type(data) is not bytes:
        raise MalformedError("identity data must be bytes")
    try:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException):
        raise MalformedError("identity data is damaged: not decodable") from None
    if type(doc) is not dict or set(doc) != {"v", "enc", "seed"}:
        raise MalformedError("identity data is damaged: unexpected fields")
    if type(doc["v"]) is not int or doc["v"] != _IDENTITY_FORMAT:
        raise MalformedError("identity data is from another version of mesh")
    if type(doc["enc"]) is not bool or type(doc["seed"]) is not bytes:
        raise MalformedError("identity data is damaged: wrong field types")
    return doc["enc"], doc["seed"]


@functools.lru_cache(maxsize=1024)
def _public_from_id(text: str) -> PublicIdentity:
    return PublicIdentity(key_from_id(text))
