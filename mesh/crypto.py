"""The only module that imports nacl: small recipes over raw bytes.

Every nacl exception is turned into a MeshError subclass here, so no caller ever has to
know about nacl. nacl objects are expensive to build (an Ed25519 -> X25519 conversion
alone costs ~50 us), so they are built once per key and kept in bounded LRU caches.

Hashing is not here: callers use `hashlib.blake2b` directly (nacl's wrapper is 12x slower).
"""

from __future__ import annotations

import functools
import os
import secrets
import struct
import threading
import unicodedata
from typing import Any, Literal

import nacl.bindings
import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
from nacl.public import PublicKey, SealedBox
from nacl.secret import SecretBox
from nacl.signing import SigningKey, VerifyKey

from mesh.errors import BadSignatureError, MalformedError, NotForUsError, WrongPassphraseError

__all__ = [
    "AEAD_NONCE_SIZE",
    "AEAD_TAG_SIZE",
    "KEY_SIZE",
    "SEAL_OVERHEAD",
    "SEED_SIZE",
    "SIGNATURE_SIZE",
    "KeyPair",
    "aead_decrypt",
    "aead_encrypt",
    "decrypt_with_passphrase",
    "derive_key",
    "ed25519_pk_to_x25519",
    "encrypt_with_passphrase",
    "equal",
    "generate_seed",
    "seal",
    "verify",
]

SEED_SIZE = 32
KEY_SIZE = 32
SIGNATURE_SIZE = 64
SEAL_OVERHEAD: int = nacl.bindings.crypto_box_SEALBYTES  # ephemeral key 32 + MAC 16

# Bounded so that keys chosen by peers cannot grow memory without limit.
_KEY_CACHE_SIZE = 4096

# Passphrase blobs start with a level byte, so a later release can raise the cost and
# still read old files. The default is INTERACTIVE (64 MiB, ~65 ms here): the identity is
# unlocked at every start, on phones and on machines running many peers; MODERATE
# (256 MiB, ~0.6 s) is available for people who want a slower brute force.
KdfStrength = Literal["interactive", "moderate"]
_KDF_LEVELS: dict[int, tuple[int, int]] = {
    1: (argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE),
    2: (argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE),
}
_KDF_LEVEL_FOR: dict[str, int] = {"interactive": 1, "moderate": 2}
_SALT_SIZE: int = argon2id.SALTBYTES
_BOX_OVERHEAD: int = SecretBox.NONCE_SIZE + SecretBox.MACBYTES
_MIN_BLOB = 1 + _SALT_SIZE + _BOX_OVERHEAD


def generate_seed() -> bytes:
    """A fresh random 32-byte Ed25519 seed."""
    return secrets.token_bytes(SEED_SIZE)


class KeyPair:
    """An Ed25519 signing key and its derived X25519 key, with nacl objects built once."""

    __slots__ = ("_signing_key", "_unsealer", "box_public_key", "seed", "verify_key")

    def __init__(self, seed: bytes) -> None:
        if type(seed) is not bytes or len(seed) != SEED_SIZE:
            raise ValueError(f"a seed is exactly {SEED_SIZE} bytes")
        signing_key = SigningKey(seed)
        box_private = signing_key.to_curve25519_private_key()
        self.seed = seed
        self.verify_key = bytes(signing_key.verify_key)
        self.box_public_key = bytes(box_private.public_key)
        self._signing_key = signing_key
        self._unsealer = SealedBox(box_private)

    def __repr__(self) -> str:
        # Never show the seed, not even in a traceback.
        return f"KeyPair(verify_key={self.verify_key.hex()})"

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `data`."""
        return self._signing_key.sign(data).signature

    def unseal(self, ciphertext: bytes) -> bytes:
        """Open a crypto_box_seal ciphertext; NotForUsError if it was not sealed to us."""
        try:
            return self._unsealer.decrypt(ciphertext)
        except (nacl.exceptions.CryptoError, TypeError, ValueError):
            raise NotForUsError("cannot open: sealed to another key or damaged") from None


@functools.lru_cache(maxsize=_KEY_CACHE_SIZE)
def _verify_key(verify_key: bytes) -> VerifyKey:
    return VerifyKey(verify_key)


@functools.lru_cache(maxsize=_KEY_CACHE_SIZE)
def _sealer(box_public_key: bytes) -> SealedBox[PublicKey]:
    return SealedBox(PublicKey(box_public_key))


def verify(verify_key: bytes, data: bytes, signature: bytes) -> None:
    """Check an Ed25519 signature; BadSignatureError if it does not verify."""
    try:
        _verify_key(verify_key).verify(data, signature)
    except (nacl.exceptions.CryptoError, TypeError, ValueError):
        raise BadSignatureError("signature does not verify") from None


def seal(box_public_key: bytes, plaintext: bytes) -> bytes:
    """crypto_box_seal `plaintext` to an X25519 public key (SEAL_OVERHEAD bytes longer)."""
    try:
        return _sealer(box_public_key).encrypt(plaintext)
    except (nacl.exceptions.CryptoError, TypeError, ValueError):
        raise MalformedError("cannot seal to this key: not a usable X25519 key") from None


@functools.lru_cache(maxsize=_KEY_CACHE_SIZE)
def ed25519_pk_to_x25519(verify_key: bytes) -> bytes:
    """The X25519 public key derived from an Ed25519 one; MalformedError if not a valid point."""
    try:
        return nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(verify_key)
    except (nacl.exceptions.CryptoError, TypeError, ValueError):
        raise MalformedError("not a valid Ed25519 public key") from None


def _passphrase_key(passphrase: str, salt: bytes, level: int) -> bytes:
    opslimit, memlimit = _KDF_LEVELS[level]
    # NFC so the same passphrase typed on two keyboards gives the same key.
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8", "surrogatepass")
    return argon2id.kdf(SecretBox.KEY_SIZE, secret, salt, opslimit=opslimit, memlimit=memlimit)


def encrypt_with_passphrase(
    data: bytes, passphrase: str, *, strength: KdfStrength = "interactive"
) -> bytes:
    """Encrypt with a key stretched from `passphrase` (argon2id + XSalsa20-Poly1305).

    The blob is: level byte, random salt, then the SecretBox output (nonce, MAC, data).
    """
    if not passphrase:
        raise WrongPassphraseError("an empty passphrase protects nothing: choose one")
    level = _KDF_LEVEL_FOR[strength]
    salt = secrets.token_bytes(_SALT_SIZE)
    box = SecretBox(_passphrase_key(passphrase, salt, level))
    return bytes([level]) + salt + bytes(box.encrypt(data))


def decrypt_with_passphrase(blob: bytes, passphrase: str) -> bytes:
    """Undo encrypt_with_passphrase; WrongPassphraseError if the passphrase is wrong."""
    if type(blob) is not bytes or len(blob) < _MIN_BLOB or blob[0] not in _KDF_LEVELS:
        raise MalformedError("not a passphrase-encrypted blob")
    salt = blob[1 : 1 + _SALT_SIZE]
    try:
        box = SecretBox(_passphrase_key(passphrase, salt, blob[0]))
        return box.decrypt(blob[1 + _SALT_SIZE :])
    except (nacl.exceptions.CryptoError, TypeError, ValueError):
        raise WrongPassphraseError("wrong passphrase: the identity could not be unlocked") from None


# -- symmetric: key derivation and AEAD ---------------------------------------------------
# Key derivation is BLAKE2b keyed with the master secret over a purpose label (libsodium's
# crypto_generichash, the construction libsodium's own crypto_kdf is built on); the AEAD
# is XChaCha20-Poly1305-IETF (24-byte nonces: random nonces never collide in practice).

AEAD_NONCE_SIZE: int = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
AEAD_TAG_SIZE: int = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES


def derive_key(master: bytes, label: bytes, size: int = 32) -> bytes:
    """A subkey of `master` for one purpose: BLAKE2b(key=master, message=label)."""
    if len(master) < 16 or not 16 <= size <= 64:
        raise MalformedError("derive_key: master key or subkey size out of range")
    digest: bytes = nacl.bindings.crypto_generichash_blake2b_salt_personal(
        label, digest_size=size, key=master
    )
    return digest


# PyNaCl's nacl.bindings wrappers check their arguments with several calls and allocate
# per call: 6-7 us per XChaCha20-Poly1305 at datagram sizes, where libsodium itself takes
# ~1 us, and a private mesh seals and opens every datagram. So the AEAD calls libsodium
# through PyNaCl's own cffi module (the same library, the same function) after checking
# the sizes here; where that module is absent (another PyNaCl), nacl.bindings does it.
# tests/test_crypto_aead.py checks both paths agree and fails if the fast one goes away.
_KEY_SIZE = 32
try:
    import nacl._sodium as _sodium  # type: ignore[import-not-found]

    _ffi, _lib = _sodium.ffi, _sodium.lib

    _FAST = all(
        hasattr(_lib, name)
        for name in (
            "crypto_aead_xchacha20poly1305_ietf_encrypt",
            "crypto_aead_xchacha20poly1305_ietf_decrypt",
            "randombytes",
        )
    )
except ImportError:  # pragma: no cover - another PyNaCl layout
    _FAST = False


def aead_fast() -> bool:
    """Whether the AEAD calls libsodium directly (see above)."""
    return _FAST


def aead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    if not _FAST:
        return _aead_encrypt_bindings(key, nonce, plaintext, aad)
    if (
        type(key) is not bytes
        or len(key) != _KEY_SIZE
        or type(nonce) is not bytes
        or len(nonce) != AEAD_NONCE_SIZE
        or type(plaintext) is not bytes
        or type(aad) is not bytes
    ):
        raise MalformedError("aead_encrypt: a 32-byte key, a 24-byte nonce and bytes")
    out = _ffi.new("unsigned char[]", len(plaintext) + AEAD_TAG_SIZE)
    size = _ffi.new("unsigned long long *")
    extra = aad if aad else _ffi.NULL
    _lib.crypto_aead_xchacha20poly1305_ietf_encrypt(
        out, size, plaintext, len(plaintext), extra, len(aad), _ffi.NULL, nonce, key
    )
    result: bytes = _ffi.buffer(out, size[0])[:]
    return result


def aead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes = b"") -> bytes | None:
    """The plaintext, or None if the tag does not verify (no exception: this runs on every
    datagram of a private mesh, and most forged ones are cheapest refused this way)."""
    if not _FAST:
        return _aead_decrypt_bindings(key, nonce, ciphertext, aad)
    if (
        type(key) is not bytes
        or len(key) != _KEY_SIZE
        or type(nonce) is not bytes
        or len(nonce) != AEAD_NONCE_SIZE
        or type(ciphertext) is not bytes
        or type(aad) is not bytes
        or len(ciphertext) < AEAD_TAG_SIZE
    ):
        return None
    out = _ffi.new("unsigned char[]", max(1, len(ciphertext) - AEAD_TAG_SIZE))
    size = _ffi.new("unsigned long long *")
    extra = aad if aad else _ffi.NULL
    failed = _lib.crypto_aead_xchacha20poly1305_ietf_decrypt(
        out, size, _ffi.NULL, ciphertext, len(ciphertext), extra, len(aad), nonce, key
    )
    if failed:
        return None
    result: bytes = _ffi.buffer(out, size[0])[:]
    return result


def aead_seal(key: bytes, plaintext: bytes) -> bytes:
    """nonce (24 random bytes) || XChaCha20-Poly1305(key, nonce, plaintext), no AAD:
    aead_encrypt with a fresh random nonce, built in one buffer (the per-datagram path of
    a private mesh). The nonce comes from libsodium's randombytes."""
    if not _FAST:
        nonce = secrets.token_bytes(AEAD_NONCE_SIZE)
        return nonce + _aead_encrypt_bindings(key, nonce, plaintext, b"")
    if type(key) is not bytes or len(key) != _KEY_SIZE or type(plaintext) is not bytes:
        raise MalformedError("aead_seal: a 32-byte key and bytes")
    size = AEAD_NONCE_SIZE + len(plaintext) + AEAD_TAG_SIZE
    out = _ffi.new("unsigned char[]", size)
    _lib.randombytes(out, AEAD_NONCE_SIZE)
    _lib.crypto_aead_xchacha20poly1305_ietf_encrypt(
        out + AEAD_NONCE_SIZE,
        _ffi.NULL,
        plaintext,
        len(plaintext),
        _ffi.NULL,
        0,
        _ffi.NULL,
        out,
        key,
    )
    result: bytes = _ffi.buffer(out, size)[:]
    return result


def aead_open(key: bytes, sealed: bytes) -> bytes | None:
    """The plaintext of what aead_seal made, or None (too short, forged, another key)."""
    if len(sealed) < AEAD_NONCE_SIZE + AEAD_TAG_SIZE:
        return None
    if not _FAST:
        nonce = sealed[:AEAD_NONCE_SIZE]
        return _aead_decrypt_bindings(key, nonce, sealed[AEAD_NONCE_SIZE:], b"")
    if type(key) is not bytes or len(key) != _KEY_SIZE or type(sealed) is not bytes:
        return None
    size = len(sealed) - AEAD_NONCE_SIZE - AEAD_TAG_SIZE
    out = _ffi.new("unsigned char[]", max(1, size))
    data = _ffi.from_buffer(sealed)
    failed = _lib.crypto_aead_xchacha20poly1305_ietf_decrypt(
        out,
        _ffi.NULL,
        _ffi.NULL,
        data + AEAD_NONCE_SIZE,
        len(sealed) - AEAD_NONCE_SIZE,
        _ffi.NULL,
        0,
        data,
        key,
    )
    if failed:
        return None
    result: bytes = _ffi.buffer(out, size)[:]
    return result


_u64 = struct.Struct(">Q")
_get_ident = threading.get_ident


class _Shared:
    """The buffers of every AeadScratch of the process: an instance, not class
    attributes (writing a class attribute resets CPython's attribute caches: ~0.5 us a
    datagram)."""

    __slots__ = ("lock", "nonce", "nonces", "out", "out_view", "owner", "plain", "plain_view")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owner: int | None = None
        self.out: Any = None  # nonce || ciphertext || tag
        self.plain: Any = None  # u64 || body
        self.out_view: Any = None  # Python buffers over them: struct and slices use them
        self.plain_view: Any = None
        self.nonces: Any = None
        self.nonce = 0  # the next unused nonce of `nonces`; NONCE_BATCH: draw a batch

    def claim(self) -> bool:
        """Whether this thread owns the buffers (the first thread that asks)."""
        if not _FAST:
            return False
        with self.lock:  # two threads' first calls: one owner, one set of buffers
            if self.owner is None:
                size = AeadScratch.SCRATCH_SIZE
                self.out = _ffi.new("unsigned char[]", AEAD_NONCE_SIZE + size + AEAD_TAG_SIZE)
                self.plain = _ffi.new("unsigned char[]", size)
                self.out_view, self.plain_view = _ffi.buffer(self.out), _ffi.buffer(self.plain)
                self.nonces = _ffi.new("unsigned char[]", AEAD_NONCE_SIZE * NONCE_BATCH)
                self.nonce = NONCE_BATCH
                self.owner = _get_ident()
        return self.owner == _get_ident()


NONCE_BATCH = 256
_shared = _Shared()


class AeadScratch:
    """aead_seal / aead_open for one key and many small messages that start with a
    big-endian 64-bit number (a private mesh's datagrams: timestamp || datagram), in
    few Python-level steps: a private mesh runs this twice per datagram. Buffers shared
    by every AeadScratch of the process (the same few KiB of cache whichever node of a
    simulator seals) serve the first thread that uses them (the event loop); other
    threads, and messages over SCRATCH_SIZE, take aead_seal / aead_open. Nonces come
    from libsodium's randombytes NONCE_BATCH at a time (one system call per batch, not
    one per datagram); each is used once, and a forked child draws its own. The key's
    size is checked once; `repr` never shows the key."""

    SCRATCH_SIZE = 2048  # plaintext bytes; most datagrams are smaller, larger ones rare

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if type(key) is not bytes or len(key) != _KEY_SIZE:
            raise MalformedError("AeadScratch: a 32-byte key")
        self._key = key

    def __repr__(self) -> str:
        return "AeadScratch(<secret>)"

    def seal_u64(self, head: int, body: bytes) -> bytes:
        """What aead_seal(key, u64be(head) || body) gives: a random nonce || ciphertext."""
        size = len(body) + 8
        shared = _shared
        if (
            (shared.owner != _get_ident() and not shared.claim())
            or size > self.SCRATCH_SIZE
            or type(body) is not bytes
        ):
            return aead_seal(self._key, _u64.pack(head) + body)
        index = shared.nonce
        if index == NONCE_BATCH:
            _lib.randombytes(shared.nonces, AEAD_NONCE_SIZE * NONCE_BATCH)
            index = 0
        shared.nonce = index + 1
        out = shared.out
        _ffi.memmove(out, shared.nonces + AEAD_NONCE_SIZE * index, AEAD_NONCE_SIZE)
        plain = shared.plain_view
        _u64.pack_into(plain, 0, head)
        plain[8:size] = body
        _lib.crypto_aead_xchacha20poly1305_ietf_encrypt(
            out + AEAD_NONCE_SIZE, _ffi.NULL, shared.plain, size, _ffi.NULL, 0, _ffi.NULL,
            out, self._key,
        )  # fmt: skip
        result: bytes = shared.out_view[: AEAD_NONCE_SIZE + size + AEAD_TAG_SIZE]
        return result

    def open_u64(self, sealed: bytes) -> tuple[int, bytes] | None:
        """(head, body) of what seal_u64 made, or None: it does not open with this key, or
        its plaintext is shorter than 8 bytes."""
        size = len(sealed) - AEAD_NONCE_SIZE - AEAD_TAG_SIZE
        if size < 8:
            return None
        shared = _shared
        if (
            (shared.owner != _get_ident() and not shared.claim())
            or size > self.SCRATCH_SIZE
            or type(sealed) is not bytes
        ):
            plain = aead_open(self._key, sealed)
            return None if plain is None else (_u64.unpack_from(plain)[0], plain[8:])
        data = _ffi.from_buffer(sealed)
        if _lib.crypto_aead_xchacha20poly1305_ietf_decrypt(
            shared.plain, _ffi.NULL, _ffi.NULL, data + AEAD_NONCE_SIZE, size + AEAD_TAG_SIZE,
            _ffi.NULL, 0, data, self._key,
        ):  # fmt: skip
            return None
        view = shared.plain_view
        return _u64.unpack_from(view)[0], view[8:size]


def _forget_nonces() -> None:
    """In a forked child: never use the parent's unused nonces (the same nonce under the
    same key twice would break XChaCha20-Poly1305); the child draws its own."""
    _shared.nonce = NONCE_BATCH


os.register_at_fork(after_in_child=_forget_nonces)


def _aead_encrypt_bindings(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    try:
        ciphertext: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            plaintext, aad, nonce, key
        )
    except (ValueError, TypeError, nacl.exceptions.CryptoError):
        raise MalformedError("aead_encrypt: a 32-byte key, a 24-byte nonce and bytes") from None
    return ciphertext


def _aead_decrypt_bindings(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes | None:
    try:
        plaintext: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ciphertext, aad, nonce, key
        )
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return None
    return plaintext


def equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of two secrets or tags (libsodium's sodium_memcmp)."""
    return len(a) == len(b) and bool(nacl.bindings.sodium_memcmp(a, b))


# -- the store at rest: argon2id for passphrases ------------------------------------------
# Used by mesh.vault (the key file) and mesh.backup: MODERATE limits (256 MiB, 3 passes).

STORE_OPSLIMIT: int = argon2id.OPSLIMIT_MODERATE
STORE_MEMLIMIT: int = argon2id.MEMLIMIT_MODERATE
PWHASH_SALT_SIZE: int = argon2id.SALTBYTES


def passphrase_key(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    """A 32-byte key from a passphrase: argon2id13 of its NFC UTF-8 bytes (libsodium)."""
    if not passphrase:
        raise WrongPassphraseError("an empty passphrase protects nothing: choose one")
    if not (argon2id.OPSLIMIT_MIN <= opslimit <= argon2id.OPSLIMIT_MAX) or not (
        argon2id.MEMLIMIT_MIN <= memlimit <= argon2id.MEMLIMIT_MAX
    ):
        raise MalformedError("argon2id limits out of range")
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8", "surrogatepass")
    key: bytes = argon2id.kdf(KEY_SIZE, secret, salt, opslimit=opslimit, memlimit=memlimit)
    return key


def random_bytes(size: int) -> bytes:
    """`size` bytes from libsodium's CSPRNG (randombytes_buf)."""
    data: bytes = nacl.bindings.randombytes(size)
    return data


# -- unlinkable mailboxes (docs/protocol.md, "Contacts and mailboxes") ----------------------
# Key blinding as in Tor's v3 onion services (rend-spec-v3 appendix A.2): a public key A and
# a public blinding factor h give A' = h*A, and only the holder of a gives a' = h*a mod l.
# Signatures with a blinded scalar are plain Ed25519 signatures (RFC 8032 section 5.1.6,
# with the nonce prefix derived per period as Tor does), checked by crypto_sign_verify.

SCALAR_SIZE = 32
BOX_SECRET_SIZE: int = nacl.bindings.crypto_box_SECRETKEYBYTES


def _sha512(data: bytes) -> bytes:
    digest: bytes = nacl.bindings.crypto_hash_sha512(data)
    return digest


def scalar_reduce(wide: bytes) -> bytes:
    """A 64-byte string reduced modulo the group order l (crypto_core_ed25519_scalar_reduce)."""
    scalar: bytes = nacl.bindings.crypto_core_ed25519_scalar_reduce(wide)
    return scalar


def random_scalar() -> bytes:
    """A uniformly random non-zero scalar mod l (64 random bytes, reduced)."""
    while True:
        scalar = scalar_reduce(random_bytes(64))
        if any(scalar):
            return scalar


def scalar_public(scalar: bytes) -> bytes:
    """The Ed25519 point scalar*B (no clamping): the public key of a raw scalar."""
    try:
        point: bytes = nacl.bindings.crypto_scalarmult_ed25519_base_noclamp(scalar)
    except (nacl.exceptions.CryptoError, TypeError, ValueError):
        raise MalformedError("not a usable scalar") from None
    return point


def blind_public(public: bytes, factor: bytes) -> bytes:
    """factor*A for an Ed25519 public key A; MalformedError if A is not a usable point."""
    try:
        if not nacl.bindings.crypto_core_ed25519_is_valid_point(public):
            raise MalformedError("not a valid Ed25519 public key")
        point: bytes = nacl.bindings.crypto_scalarmult_ed25519_noclamp(factor, public)
    except (nacl.exceptions.CryptoError, TypeError, ValueError):
        raise MalformedError("cannot blind this key") from None
    return point


def blind_scalar(scalar: bytes, factor: bytes) -> bytes:
    """factor*a mod l."""
    product: bytes = nacl.bindings.crypto_core_ed25519_scalar_mul(factor, scalar)
    return product


def sign_with_scalar(scalar: bytes, prefix: bytes, public: bytes, message: bytes) -> bytes:
    """An Ed25519 signature by the raw scalar `scalar` (public key `public`): RFC 8032's
    r = H(prefix || M), R = rB, S = r + H(R || A || M) a mod l. Verifies with `verify`."""
    r = scalar_reduce(_sha512(prefix + message))
    big_r = scalar_public(r)
    k = scalar_reduce(_sha512(big_r + public + message))
    s: bytes = nacl.bindings.crypto_core_ed25519_scalar_add(
        r, nacl.bindings.crypto_core_ed25519_scalar_mul(k, scalar)
    )
    return big_r + s


def hash_wide(label: bytes, data: bytes, key: bytes | None = None) -> bytes:
    """BLAKE2b-512 of label || data (keyed with `key` if given): input for scalar_reduce."""
    digest: bytes = nacl.bindings.crypto_generichash_blake2b_salt_personal(
        label + data, digest_size=64, key=key or b""
    )
    return digest


# -- X25519 key pairs: prekeys, and the pairwise secret of two identities --------------------


def box_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair (public, secret)."""
    public, secret = nacl.bindings.crypto_box_keypair()
    return bytes(public), bytes(secret)


def box_seed_keypair(seed: bytes) -> tuple[bytes, bytes]:
    """The X25519 key pair of a 32-byte seed (crypto_box_seed_keypair): only for the
    simulator, which draws every key from its seed so that a run can be repeated."""
    public, secret = nacl.bindings.crypto_box_seed_keypair(seed)
    return bytes(public), bytes(secret)


def unseal_with(public: bytes, secret: bytes, ciphertext: bytes) -> bytes | None:
    """Open a crypto_box_seal ciphertext with an X25519 key pair; None if it does not open."""
    try:
        plaintext: bytes = nacl.bindings.crypto_box_seal_open(ciphertext, public, secret)
    except (nacl.exceptions.CryptoError, TypeError, ValueError):
        return None
    return plaintext


def identity_box_secret(seed: bytes) -> bytes:
    """The X25519 secret key of an Ed25519 identity seed (libsodium's conversion)."""
    _pk, sk = nacl.bindings.crypto_sign_seed_keypair(seed)
    secret: bytes = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(sk)
    return secret


def pair_secret(my_public: bytes, my_secret: bytes, their_public: bytes) -> bytes:
    """A 64-byte secret only the two holders of these X25519 keys can compute: libsodium's
    crypto_kx session keys, with the smaller public key as the client (so both sides agree
    on the roles), concatenated as client rx || client tx."""
    try:
        if my_public < their_public:
            rx, tx = nacl.bindings.crypto_kx_client_session_keys(my_public, my_secret, their_public)
            return bytes(rx) + bytes(tx)
        rx, tx = nacl.bindings.crypto_kx_server_session_keys(my_public, my_secret, their_public)
        return bytes(tx) + bytes(rx)
    except (nacl.exceptions.CryptoError, TypeError, ValueError):
        raise MalformedError("no shared secret with this key") from None


def ed25519_secret_scalar(seed: bytes) -> tuple[bytes, bytes]:
    """RFC 8032 section 5.1.5: the secret scalar (clamped, reduced mod l) and the nonce
    prefix of an Ed25519 seed."""
    expanded = _sha512(seed)
    clamped = bytearray(expanded[:32])
    clamped[0] &= 248
    clamped[31] &= 127
    clamped[31] |= 64
    return scalar_reduce(bytes(clamped) + bytes(32)), expanded[32:]
