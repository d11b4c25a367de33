"""mesh.crypto's AEAD calls libsodium through PyNaCl's cffi module (nacl.bindings costs
6-7 us per call at datagram sizes, libsodium ~1 us): the fast path must stay in use,
give exactly what nacl.bindings gives, and refuse what nacl.bindings refuses."""

from __future__ import annotations

import nacl.bindings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh import crypto
from mesh.errors import MalformedError

KEY = bytes(range(32))
NONCE = bytes(range(100, 124))


def test_the_fast_path_is_in_use() -> None:
    # Fails when PyNaCl's layout changes (nacl._sodium gone): then the slow path runs and
    # a private mesh's datagrams cost ~5x more CPU; look at mesh/crypto.py.
    assert crypto.aead_fast()


@settings(max_examples=300, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32),
    nonce=st.binary(min_size=24, max_size=24),
    plaintext=st.binary(max_size=1500),
    aad=st.binary(max_size=64),
)
def test_same_bytes_as_nacl_bindings(
    key: bytes, nonce: bytes, plaintext: bytes, aad: bytes
) -> None:
    sealed = crypto.aead_encrypt(key, nonce, plaintext, aad)
    assert sealed == nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, aad, nonce, key
    )
    assert crypto.aead_decrypt(key, nonce, sealed, aad) == plaintext


def test_vector() -> None:
    # Checked against nacl.bindings above; pinned here so a change of either shows.
    sealed = crypto.aead_encrypt(KEY, NONCE, b"mesh datagram", b"aad")
    assert (
        sealed.hex()
        == nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            b"mesh datagram", b"aad", NONCE, KEY
        ).hex()
    )
    assert len(sealed) == len(b"mesh datagram") + crypto.AEAD_TAG_SIZE


def test_tampering_and_wrong_keys_open_to_none() -> None:
    sealed = crypto.aead_encrypt(KEY, NONCE, b"hello", b"aad")
    for i in range(len(sealed)):
        flipped = bytearray(sealed)
        flipped[i] ^= 1
        assert crypto.aead_decrypt(KEY, NONCE, bytes(flipped), b"aad") is None
    assert crypto.aead_decrypt(bytes(32), NONCE, sealed, b"aad") is None
    assert crypto.aead_decrypt(KEY, bytes(24), sealed, b"aad") is None
    assert crypto.aead_decrypt(KEY, NONCE, sealed, b"other") is None
    assert crypto.aead_decrypt(KEY, NONCE, sealed[:-1], b"aad") is None
    assert crypto.aead_decrypt(KEY, NONCE, b"", b"aad") is None
    assert crypto.aead_decrypt(KEY, NONCE, sealed[: crypto.AEAD_TAG_SIZE - 1]) is None


@pytest.mark.parametrize(
    ("key", "nonce"),
    [(KEY[:31], NONCE), (KEY + b"x", NONCE), (KEY, NONCE[:23]), (KEY, NONCE + b"x")],
)
def test_wrong_sizes_never_reach_libsodium(key: bytes, nonce: bytes) -> None:
    # libsodium reads exactly 32 and 24 bytes: the sizes are checked before the call.
    with pytest.raises(MalformedError):
        crypto.aead_encrypt(key, nonce, b"x")
    assert crypto.aead_decrypt(key, nonce, b"x" * 40) is None


def test_not_bytes_is_refused() -> None:
    with pytest.raises(MalformedError):
        crypto.aead_encrypt(KEY, NONCE, "text")  # type: ignore[arg-type]
    assert crypto.aead_decrypt(KEY, NONCE, bytearray(40)) is None  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(plaintext=st.binary(max_size=1500))
def test_seal_is_a_random_nonce_then_aead_encrypt(plaintext: bytes) -> None:
    sealed = crypto.aead_seal(KEY, plaintext)
    nonce, body = sealed[: crypto.AEAD_NONCE_SIZE], sealed[crypto.AEAD_NONCE_SIZE :]
    assert body == crypto.aead_encrypt(KEY, nonce, plaintext)
    assert crypto.aead_open(KEY, sealed) == plaintext
    assert crypto.aead_decrypt(KEY, nonce, body) == plaintext


def test_seal_draws_a_new_nonce_each_time() -> None:
    nonces = {crypto.aead_seal(KEY, b"same")[: crypto.AEAD_NONCE_SIZE] for _ in range(1000)}
    assert len(nonces) == 1000


def test_open_refuses_what_was_not_sealed_with_the_key() -> None:
    sealed = crypto.aead_seal(KEY, b"hello")
    for i in range(len(sealed)):
        flipped = bytearray(sealed)
        flipped[i] ^= 0x80
        assert crypto.aead_open(KEY, bytes(flipped)) is None
    for cut in range(len(sealed)):
        assert crypto.aead_open(KEY, sealed[:cut]) is None
    assert crypto.aead_open(bytes(32), sealed) is None
    assert crypto.aead_open(KEY[:31], sealed) is None
    with pytest.raises(MalformedError):
        crypto.aead_seal(KEY[:31], b"x")


@settings(max_examples=200, deadline=None)
@given(head=st.integers(0, 2**64 - 1), body=st.binary(max_size=3000))  # past 2048: the functions
def test_scratch_seals_and_opens_as_the_functions_do(head: int, body: bytes) -> None:
    scratch = crypto.AeadScratch(KEY)
    plaintext = head.to_bytes(8, "big") + body
    sealed = scratch.seal_u64(head, body)
    assert len(sealed) == crypto.AEAD_NONCE_SIZE + len(plaintext) + crypto.AEAD_TAG_SIZE
    assert crypto.aead_open(KEY, sealed) == plaintext
    assert scratch.open_u64(crypto.aead_seal(KEY, plaintext)) == (head, body)
    assert scratch.open_u64(sealed) == (head, body)
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    assert scratch.open_u64(bytes(flipped)) is None
    assert crypto.AeadScratch(bytes(32)).open_u64(sealed) is None  # another key
    assert scratch.open_u64(crypto.aead_seal(KEY, plaintext[:7])) is None  # no 8-byte head
    assert repr(scratch) == "AeadScratch(<secret>)"


def test_scratch_results_do_not_share_its_buffers() -> None:
    scratch = crypto.AeadScratch(KEY)
    first, second = scratch.seal_u64(1, b"first datagram"), scratch.seal_u64(2, b"second one")
    assert crypto.aead_open(KEY, first) == (1).to_bytes(8, "big") + b"first datagram"
    a, b = scratch.open_u64(first), scratch.open_u64(second)
    assert a == (1, b"first datagram") and b == (2, b"second one")


def test_scratch_nonces_are_drawn_in_batches_and_never_repeat() -> None:
    scratch = crypto.AeadScratch(KEY)
    count = 3 * crypto.NONCE_BATCH + 5  # several batches
    nonces = {scratch.seal_u64(0, b"x")[: crypto.AEAD_NONCE_SIZE] for _ in range(count)}
    assert len(nonces) == count


def test_a_forked_child_never_uses_the_parents_unused_nonces() -> None:
    import os

    scratch = crypto.AeadScratch(KEY)
    scratch.seal_u64(0, b"x")  # a batch drawn, most of it unused
    nonce_of = crypto._shared  # the child must draw a new batch before its first seal
    assert nonce_of.nonce < crypto.NONCE_BATCH
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, b"1" if nonce_of.nonce == crypto.NONCE_BATCH else b"0")
        os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"1"
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    following = scratch.seal_u64(0, b"x")
    assert crypto.aead_open(KEY, following) is not None


def test_scratch_from_another_thread_takes_the_functions() -> None:
    import threading

    scratch = crypto.AeadScratch(KEY)
    scratch.seal_u64(0, b"claims the buffers for this thread")
    results: list[bytes | None] = []
    worker = threading.Thread(target=lambda: results.append(scratch.seal_u64(7, b"elsewhere")))
    worker.start()
    worker.join(10)
    (sealed,) = results
    assert sealed is not None
    assert crypto.aead_open(KEY, sealed) == (7).to_bytes(8, "big") + b"elsewhere"
    opened: list[tuple[int, bytes] | None] = []
    worker = threading.Thread(target=lambda: opened.append(scratch.open_u64(sealed)))
    worker.start()
    worker.join(10)
    assert opened == [(7, b"elsewhere")]
