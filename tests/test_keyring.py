"""Issue 14: the key schedule of contacts' mailboxes (mesh.keyring), with the test
vectors of docs/protocol.md, and checks against libsodium and RFC 8032."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh import crypto, keyring
from mesh.errors import BadSignatureError, MalformedError
from mesh.identity import Identity, mailbox_key_for

# RFC 8032 section 7.1, TEST 1 (empty message).
RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)

# docs/protocol.md, "Contacts and mailboxes": test vectors.
ROOT_SCALAR = crypto.scalar_reduce(bytes(range(64)))
ROOT_PREFIX = bytes(range(32, 64))
VECTOR_ROOT = "f9302fcb3a2937cff4950e4c6272340e171b0a65ed680d8fca72087ab4da078d"
VECTORS = {  # epoch (of 86400 s) -> blinding factor, blinded key, mailbox key, signature
    20000: (
        "6f80a60ae562efa3bc1043002a6fd7563438dd341098a7a350a110f3696da00f",
        "b126103b5d76117b362c328d006616a0d2d10868c5ce91efacd5949ea761ff22",
        "71b021c4d06297415e6d7ea39a93bd710c9757c8",
        "0a91a4d128edfceb90d09903d92d2bf0afd52577ca491f42559436293698b409"
        "7d9a289cacc9a88cb5a5db3781dd441d683c242e888ae744a37c3d8d41f96500",
    ),
    20001: (
        "41e7977c8b9860f8bbfc069f5b429ce256e2308245b88fe431410f7b819dfa0b",
        "77aeced6af9e9acd8a0d10db9511647b462bae9361f93f62bc6a87de6f220024",
        "786bd24bc929b6bb868b280f8b36b188cc9dde90",
        "0b0eb30d0b1b730f8ce0f04f9331af49dcd76a427c09f1b9c3d255513459a209"
        "10b7eb5ae6eb718bc1b26019b8ac301aeb81a5596cfff24975de0775545e120c",
    ),
}
PAIR_SECRET = (
    "4081524abf55a75021ebd5e98e08552fb2bd26315c40e563b74e64abff1be442"
    "2f9c2f944f504caf772db17affc91e3ba8886a806ba53ab37881d15c042f3410"
)
INTRO_VERIFY_KEY = "17342ca2b4de7ff27d2d2bbe5b3cd5c25dbf39bd0d95e2d0cb459789af4b918f"
INTRO_MAILBOX_KEY = "65874eabbc2d6534ee4593bddc71db0a8a2a9149"


def vector_root() -> keyring.MailboxRoot:
    return keyring.MailboxRoot(ROOT_SCALAR, ROOT_PREFIX, crypto.scalar_public(ROOT_SCALAR))


def test_signing_with_a_raw_scalar_is_rfc8032_ed25519() -> None:
    expanded = hashlib.sha512(RFC_SEED).digest()
    clamped = bytearray(expanded[:32])
    clamped[0] &= 248
    clamped[31] &= 127
    clamped[31] |= 64
    scalar = crypto.scalar_reduce(bytes(clamped) + bytes(32))
    assert crypto.scalar_public(scalar) == RFC_PUBLIC
    assert crypto.sign_with_scalar(scalar, expanded[32:], RFC_PUBLIC, b"") == RFC_SIGNATURE


def test_vectors_of_the_blinded_mailbox_keys() -> None:
    root = vector_root()
    assert root.public.hex() == VECTOR_ROOT
    for epoch, (factor, blinded, key, signature) in VECTORS.items():
        assert keyring.blinding_factor(root.public, 86400, epoch).hex() == factor
        signer = root.signer(86400, epoch)
        assert signer.verify_key.hex() == blinded
        assert keyring.mailbox_key_at(root.public, 86400, epoch).hex() == key
        assert signer.mailbox_key.hex() == key
        assert signer.sign(b"mesh test vector").hex() == signature
        crypto.verify(signer.verify_key, b"mesh test vector", bytes.fromhex(signature))


def test_vector_of_the_introduction_key() -> None:
    a, b = Identity.from_seed(bytes([1]) * 32), Identity.from_seed(bytes([2]) * 32)
    ab = crypto.pair_secret(
        a.public.box_public_key, crypto.identity_box_secret(a.seed), b.public.box_public_key
    )
    ba = crypto.pair_secret(
        b.public.box_public_key, crypto.identity_box_secret(b.seed), a.public.box_public_key
    )
    assert ab == ba
    assert ab.hex() == PAIR_SECRET
    pair = keyring.intro_signer(ab)
    assert pair.verify_key.hex() == INTRO_VERIFY_KEY
    assert mailbox_key_for(pair.verify_key).hex() == INTRO_MAILBOX_KEY
    # Nobody else's keys give it.
    c = Identity.from_seed(bytes([3]) * 32)
    ac = crypto.pair_secret(
        a.public.box_public_key, crypto.identity_box_secret(a.seed), c.public.box_public_key
    )
    assert keyring.intro_signer(ac).verify_key != pair.verify_key


@given(st.integers(min_value=0, max_value=2**32))
def test_only_the_owner_signs_as_the_blinded_key_and_anyone_verifies(epoch: int) -> None:
    root = keyring.MailboxRoot.generate()
    signer = root.signer(86400, epoch)
    assert signer.verify_key == keyring.blinded_public(root.public, 86400, epoch)
    signature = signer.sign(b"listen")
    crypto.verify(signer.verify_key, b"listen", signature)
    with pytest.raises(BadSignatureError):
        crypto.verify(signer.verify_key, b"delete", signature)
    with pytest.raises(BadSignatureError):
        crypto.verify(root.signer(86400, epoch + 1).verify_key, b"listen", signature)


def test_root_round_trips_and_never_shows_its_secret() -> None:
    root = keyring.MailboxRoot.generate()
    again = keyring.MailboxRoot.from_bytes(root.to_bytes())
    assert again.public == root.public
    assert root.scalar.hex() not in repr(root) and "secret" in repr(root)
    signer = root.signer(86400, 1)
    assert signer.verify_key.hex() in repr(signer)
    with pytest.raises(MalformedError):
        keyring.MailboxRoot.from_bytes(b"\x93\x02")


def test_epochs_around_cover_the_overlap_only() -> None:
    day = 86400
    assert keyring.epochs_around(10 * day + 5000, day) == [10]
    assert keyring.epochs_around(10 * day + 100, day) == [9, 10]
    assert keyring.epochs_around(11 * day - 100, day) == [10, 11]
    assert keyring.epochs_around(8 * 1000 + 4, 8) == [1000]  # the overlap is at most length/4


def bundle(**changes: object) -> keyring.Bundle:
    fields: dict[str, object] = {
        "root_public": vector_root().public,
        "epoch_length": 86400,
        "first_epoch": 20000,
        "prekeys": (bytes(32), bytes([1]) * 32),
        "reply": True,
    }
    fields.update(changes)
    return keyring.Bundle(**fields)  # type: ignore[arg-type]


def test_bundles_round_trip_and_bad_ones_are_refused() -> None:
    good = bundle()
    parsed = keyring.parse_bundle(keyring.pack_bundle(good))
    assert parsed == good
    assert parsed.prekey_for(20001) == bytes([1]) * 32 and parsed.prekey_for(20002) is None
    for bad in (
        bundle(root_public=bytes(32)),  # the identity point: not usable
        bundle(root_public=b"x" * 31),
        bundle(epoch_length=0),
        bundle(first_epoch=-1),
        bundle(prekeys=()),
        bundle(prekeys=(b"short",)),
        bundle(prekeys=(bytes(32),) * 33),
        bundle(reply=1),
    ):
        with pytest.raises(MalformedError):
            keyring.parse_bundle(keyring.pack_bundle(bad))
    with pytest.raises(MalformedError):
        keyring.parse_bundle(b"\xc1")
