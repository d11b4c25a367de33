"""mesh.crypto: signing, sealing, key conversion, passphrase encryption."""

from __future__ import annotations

import contextlib

import nacl.bindings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh import crypto
from mesh.errors import (
    BadSignatureError,
    MalformedError,
    MeshError,
    NotForUsError,
    WrongPassphraseError,
)

FUZZ = settings(max_examples=300, deadline=None, derandomize=True)

ALICE = crypto.KeyPair(bytes(range(32)))
BOB = crypto.KeyPair(bytes(range(1, 33)))
# The all-zero Ed25519 key is a small-order point: never a usable key.
SMALL_ORDER_KEY = bytes(32)


def test_keypair_is_deterministic_and_hides_its_seed() -> None:
    again = crypto.KeyPair(bytes(range(32)))
    assert again.verify_key == ALICE.verify_key
    assert again.box_public_key == ALICE.box_public_key
    assert len(ALICE.verify_key) == crypto.KEY_SIZE
    assert ALICE.seed.hex() not in repr(ALICE)


@pytest.mark.parametrize("seed", [b"", bytes(31), bytes(33), bytearray(32), "x" * 32])
def test_keypair_rejects_bad_seeds(seed: object) -> None:
    with pytest.raises(ValueError):
        crypto.KeyPair(seed)  # type: ignore[arg-type]


def test_generate_seed_is_random() -> None:
    seeds = {crypto.generate_seed() for _ in range(10)}
    assert len(seeds) == 10
    assert all(len(seed) == crypto.SEED_SIZE for seed in seeds)


def test_sign_and_verify() -> None:
    signature = ALICE.sign(b"hello")
    assert len(signature) == crypto.SIGNATURE_SIZE
    crypto.verify(ALICE.verify_key, b"hello", signature)


@pytest.mark.parametrize(
    ("key", "data", "signature"),
    [
        (ALICE.verify_key, b"hellO", ALICE.sign(b"hello")),
        (BOB.verify_key, b"hello", ALICE.sign(b"hello")),
        (ALICE.verify_key, b"hello", bytes(64)),
        (ALICE.verify_key, b"hello", ALICE.sign(b"hello")[:63]),
        (ALICE.verify_key[:31], b"hello", ALICE.sign(b"hello")),
        (SMALL_ORDER_KEY, b"hello", bytes(64)),
    ],
)
def test_verify_rejects(key: bytes, data: bytes, signature: bytes) -> None:
    with pytest.raises(BadSignatureError):
        crypto.verify(key, data, signature)


def test_seal_and_unseal() -> None:
    ciphertext = crypto.seal(BOB.box_public_key, b"secret")
    assert len(ciphertext) == len(b"secret") + crypto.SEAL_OVERHEAD == len(b"secret") + 48
    assert BOB.unseal(ciphertext) == b"secret"
    # Sealing is randomised: an observer cannot tell two equal messages apart.
    assert crypto.seal(BOB.box_public_key, b"secret") != ciphertext


def test_unseal_by_someone_else_or_damaged() -> None:
    ciphertext = crypto.seal(BOB.box_public_key, b"secret")
    with pytest.raises(NotForUsError):
        ALICE.unseal(ciphertext)
    damaged = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])
    with pytest.raises(NotForUsError):
        BOB.unseal(damaged)
    with pytest.raises(NotForUsError):
        BOB.unseal(b"short")


@pytest.mark.parametrize("key", [b"", bytes(31), bytes(32)])
def test_seal_to_unusable_key(key: bytes) -> None:
    with pytest.raises(MalformedError):
        crypto.seal(key, b"secret")


def test_ed25519_to_x25519() -> None:
    assert crypto.ed25519_pk_to_x25519(ALICE.verify_key) == ALICE.box_public_key
    for bad in (SMALL_ORDER_KEY, b"\xff" * 32, ALICE.verify_key[:31], b""):
        with pytest.raises(MalformedError):
            crypto.ed25519_pk_to_x25519(bad)


def test_key_caches_stay_bounded_under_a_flood_of_new_keys() -> None:
    """Peers can send ever new keys: the caches of parsed keys must not grow with them."""
    caches = (crypto._verify_key, crypto._sealer, crypto.ed25519_pk_to_x25519)
    flood = 5000
    for i in range(flood):
        verify_key, _ = nacl.bindings.crypto_sign_seed_keypair(i.to_bytes(32, "big"))
        with contextlib.suppress(BadSignatureError):
            crypto.verify(verify_key, b"x", bytes(64))
        crypto.seal(crypto.ed25519_pk_to_x25519(verify_key), b"x")
    for cache in caches:
        size = cache.cache_info().currsize
        assert 1000 <= size < flood, cache  # it caches, and it forgets


def test_passphrase_round_trip_and_wrong_passphrase() -> None:
    # Each argon2id run costs ~65 ms (INTERACTIVE): three runs in total here.
    blob = crypto.encrypt_with_passphrase(b"seed bytes", "correct horse")
    assert b"seed bytes" not in blob
    assert crypto.decrypt_with_passphrase(blob, "correct horse") == b"seed bytes"
    with pytest.raises(WrongPassphraseError):
        crypto.decrypt_with_passphrase(blob, "wrong horse")


@pytest.mark.parametrize("blob", [b"", b"\x01" + bytes(40), b"\x09" + bytes(100), "text"])
def test_malformed_passphrase_blob(blob: bytes) -> None:
    with pytest.raises(MalformedError):
        crypto.decrypt_with_passphrase(blob, "anything")


def test_empty_passphrase_is_refused() -> None:
    with pytest.raises(WrongPassphraseError):
        crypto.encrypt_with_passphrase(b"data", "")


@FUZZ
@given(key=st.binary(max_size=40), data=st.binary(max_size=64), signature=st.binary(max_size=80))
def test_verify_fuzz_only_raises_bad_signature(key: bytes, data: bytes, signature: bytes) -> None:
    with pytest.raises(BadSignatureError):
        crypto.verify(key, data, signature)


@FUZZ
@given(ciphertext=st.binary(max_size=200))
def test_unseal_fuzz_only_raises_not_for_us(ciphertext: bytes) -> None:
    with pytest.raises(NotForUsError):
        BOB.unseal(ciphertext)


@FUZZ
@given(key=st.binary(max_size=40))
def test_key_conversion_fuzz(key: bytes) -> None:
    try:
        assert len(crypto.ed25519_pk_to_x25519(key)) == 32
    except MeshError as exc:
        assert isinstance(exc, MalformedError)
