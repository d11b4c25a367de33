"""Backups of an identity (and, if asked, its messages) under a separate passphrase, and
the identity seed as 24 BIP-39 words.

File: magic "MESHBAK\\x01" | opslimit (u32 BE) | memlimit (u64 BE) | salt (16) | nonce (24)
| XChaCha20-Poly1305(msgpack document), AAD = everything before the ciphertext.
Key: BLAKE2b(key=argon2id(passphrase, salt), "mesh-messenger backup v1").
The document: {"v": 1, "seed", "name",
"contacts": [[name, id, ttl, added_at, verified_at, read_receipts]...],
"messages": [[msg_id, direction, peer_id, kind, body, sent_at, expires_at, status,
received_at, read]...] or absent}.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import msgpack
from mnemonic import Mnemonic

from mesh import crypto, vault
from mesh.errors import IdentityExistsError, LocalError, MalformedError, WrongPassphraseError
from mesh.identity import Identity
from mesh.store import Store

MAGIC = b"MESHBAK\x01"
LABEL = b"mesh-messenger backup v1"
_HEADER = struct.Struct(">8sIQ16s")
_MAX_BACKUP = 256 * 1024 * 1024
_WORDS = Mnemonic("english")
_ROW = [
    "msg_id",
    "direction",
    "peer_id",
    "kind",
    "body",
    "sent_at",
    "expires_at",
    "status",
    "received_at",
    "read",
]


def _key(passphrase: str, opslimit: int, memlimit: int, salt: bytes) -> bytes:
    return crypto.derive_key(crypto.passphrase_key(passphrase, salt, opslimit, memlimit), LABEL)


def seal(document: dict[str, Any], passphrase: str) -> bytes:
    salt = crypto.random_bytes(crypto.PWHASH_SALT_SIZE)
    header = _HEADER.pack(MAGIC, crypto.STORE_OPSLIMIT, crypto.STORE_MEMLIMIT, salt)
    nonce = crypto.random_bytes(crypto.AEAD_NONCE_SIZE)
    key = _key(passphrase, crypto.STORE_OPSLIMIT, crypto.STORE_MEMLIMIT, salt)
    plain: bytes = msgpack.packb(document, use_bin_type=True)
    return header + nonce + crypto.aead_encrypt(key, nonce, plain, header + nonce)


def unseal(data: bytes, passphrase: str) -> dict[str, Any]:
    start = _HEADER.size + crypto.AEAD_NONCE_SIZE
    if len(data) < start + crypto.AEAD_TAG_SIZE or not data.startswith(MAGIC):
        raise MalformedError("not a mesh backup, or a truncated one")
    _, opslimit, memlimit, salt = _HEADER.unpack_from(data)
    key = _key(passphrase, opslimit, memlimit, salt)
    plain = crypto.aead_decrypt(key, data[_HEADER.size : start], data[start:], data[:start])
    if plain is None:
        raise WrongPassphraseError("wrong backup passphrase, or the backup is damaged")
    try:
        doc = msgpack.unpackb(plain, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise MalformedError("the backup is damaged") from None
    if not isinstance(doc, dict) or doc.get("v") != 1 or not isinstance(doc.get("seed"), bytes):
        raise MalformedError("the backup is damaged or from a newer release")
    return doc


def export(store: Store, identity: Identity, messages: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "v": 1,
        "seed": identity.seed,
        "name": store.get_setting("name"),
        "contacts": [
            [c.name, c.peer_id, c.ttl, c.added_at, c.verified_at, c.read_receipts]
            for c in store.list_contacts()
        ],
    }
    if messages:
        doc["messages"] = [[getattr(m, f) for f in _ROW] for m in store.list_messages()]
    return doc


def write(path: Path, data: bytes) -> None:
    vault.write_atomic(path, data)


def read(path: Path) -> bytes:
    if path.stat().st_size > _MAX_BACKUP:
        raise MalformedError("not a mesh backup: far too large")
    return path.read_bytes()


def restore(home: Path, doc: dict[str, Any], passphrase: str | None, force: bool) -> Identity:
    """Create `home` from a backup document (refuses an existing identity unless force)."""
    identity = Identity(_seed(doc["seed"]))
    _make_room(home, force)
    with vault.open_store(home, passphrase) as store:
        store.set_identity_blob(identity.to_bytes(None))
        store.set_setting("public_id", identity.id)
        if isinstance(doc.get("name"), str):
            store.set_setting("name", doc["name"])
        for name, peer_id, ttl, added_at, *flags in doc.get("contacts", []):
            store.add_contact(name, peer_id, ttl, now=added_at)
            if len(flags) == 2:
                store.set_contact_flags(name, verified_at=flags[0], read_receipts=flags[1])
        store.add_messages(doc.get("messages", []))
    return identity


def _seed(seed: object) -> bytes:
    if not isinstance(seed, bytes) or len(seed) != crypto.SEED_SIZE:
        raise MalformedError("the backup is damaged: wrong seed size")
    return seed


def _make_room(home: Path, force: bool) -> None:
    if vault.home_state(home) != "empty" or (home / vault.KEY_FILE).exists():
        if not force:
            raise IdentityExistsError(
                f"{home} already has an identity; refusing to replace it (use --force, "
                "which wipes it first, or another --home)"
            )
        vault.wipe(home)


def to_words(identity: Identity) -> str:
    """The identity seed as 24 BIP-39 English words (the last one carries a checksum)."""
    words: str = _WORDS.to_mnemonic(identity.seed)
    return words


def from_words(words: str) -> Identity:
    cleaned = " ".join(words.lower().split())
    if len(cleaned.split()) != 24 or not _WORDS.check(cleaned):
        raise LocalError("these are not 24 valid recovery words (a typo, or a word missing?)")
    return Identity(bytes(_WORDS.to_entropy(cleaned)))
