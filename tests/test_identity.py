"""mesh.identity: ID strings, fingerprints, mailbox keys, identity storage."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh import crypto
from mesh.errors import InvalidIdError, MalformedError, MeshError, WrongPassphraseError
from mesh.identity import (
    ID_LENGTH,
    Identity,
    PublicIdentity,
    fingerprint_for,
    id_for_key,
    is_valid_id,
    key_from_id,
    mailbox_key_for,
)

FUZZ = settings(max_examples=300, deadline=None, derandomize=True)
B32 = "abcdefghijklmnopqrstuvwxyz234567"

ALICE = Identity.from_seed(bytes(range(32)))
BOB = Identity.from_seed(bytes(range(1, 33)))
CAROL = Identity.from_seed(b"\xff" * 32)
IDS = [ALICE.id, BOB.id, CAROL.id]

# Pinned so that an accidental change of the ID, fingerprint or mailbox format is caught.
ALICE_ID = "meshaeb2cb576phbbpq5odorrz2lycmwpzgwgcn2kdk7dxoimzaskuy3rvo5473q"
ALICE_FINGERPRINT = "36699 79463 25515 57051 77039 42572 17623 64708 14383 14670 78016 40755"
ALICE_MAILBOX = "f8be56a7f05435e14ab827762b945b86ec510211"


def _raw_id(version: int, key: bytes) -> str:
    """An ID with a correct checksum for any version and key (to reach later checks)."""
    checksum = hashlib.blake2b(b"mesh/id/v1" + bytes([version]) + key, digest_size=4).digest()
    encoded = base64.b32encode(bytes([version]) + key + checksum).decode().rstrip("=")
    return "mesh" + encoded.lower()


def test_known_vectors() -> None:
    assert ALICE.id == ALICE_ID
    assert ALICE.public.fingerprint == ALICE_FINGERPRINT
    assert ALICE.mailbox_key.hex() == ALICE_MAILBOX


def test_mailbox_key_formula() -> None:
    expected = hashlib.blake2b(b"mesh/mailbox/v1" + ALICE.verify_key, digest_size=20).digest()
    assert mailbox_key_for(ALICE.verify_key) == expected == ALICE.public.mailbox_key
    assert ALICE.verify_key not in ALICE.mailbox_key


def test_id_shape_and_round_trip() -> None:
    for identity in (ALICE, BOB, CAROL):
        assert re.fullmatch(r"mesh[a-z2-7]{60}", identity.id)
        assert len(identity.id) == ID_LENGTH == 64
        assert key_from_id(identity.id) == identity.verify_key
        assert PublicIdentity.from_id(identity.id) == identity.public


def test_id_parsing_forgives_case_and_surrounding_whitespace() -> None:
    assert PublicIdentity.from_id(f"  {ALICE.id.upper()}\n") == ALICE.public
    assert is_valid_id(f"\t{ALICE.id}  ")


def test_seed_determinism_and_distinct_identities() -> None:
    again = Identity.from_seed(ALICE.seed)
    assert again.id == ALICE.id
    assert again.public.fingerprint == ALICE.public.fingerprint
    assert again == ALICE and hash(again) == hash(ALICE)
    assert len({ALICE.id, BOB.id, CAROL.id, Identity.generate().id}) == 4


def _all_typos(text: str) -> set[str]:
    """Every substitution, adjacent swap, insertion, deletion and truncation of `text`."""
    typos: set[str] = set()
    for i in range(len(text)):
        for char in B32 + "01890-_ .":
            typos.add(text[:i] + char + text[i + 1 :])
        typos.add(text[:i] + text[i + 1 :])
        typos.add(text[:i])
        typos.add(text[i + 1 :])
        typos.add(text[:i] + text[i + 1 : i + 2] + text[i] + text[i + 2 :])
    for i in range(len(text) + 1):
        for char in B32 + "0":
            typos.add(text[:i] + char + text[i:])
    typos.discard(text)
    # Only surrounding whitespace is forgiven, so a space at either end is no typo.
    return {typo for typo in typos if typo.strip() != text}


@pytest.mark.parametrize("text", IDS)
def test_every_typo_is_caught(text: str) -> None:
    typos = _all_typos(text)
    assert len(typos) > 4500
    for typo in typos:
        with pytest.raises(InvalidIdError):
            key_from_id(typo)


def test_last_character_unused_bits_are_checked() -> None:
    # The final base32 character carries only 1 meaningful bit; the other 4 must be zero,
    # otherwise two spellings would decode to the same key.
    for text in IDS:
        for char in B32:
            typo = text[:-1] + char
            assert (typo == text) == is_valid_id(typo)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no ID given"),
        ("   ", "no ID given"),
        ("hello" + ALICE_ID[5:], "not a mesh ID"),
        (ALICE_ID[:57], "too short: 57 characters, expected 64"),
        (ALICE_ID + "aa", "too long: 66 characters, expected 64"),
        (ALICE_ID[:10] + "0" + ALICE_ID[11:], "'0' at position 11"),
        (ALICE_ID[:10] + " " + ALICE_ID[11:], "a space at position 11"),
        (ALICE_ID[:10] + "b" + ALICE_ID[11:], "typo (checksum mismatch)"),
        (ALICE_ID[:9] + ALICE_ID[10] + ALICE_ID[9] + ALICE_ID[11:], "typo"),
        (_raw_id(2, ALICE.verify_key), "another version of mesh"),
        (_raw_id(1, bytes(32)), "does not hold a usable key"),
    ],
)
def test_error_messages_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InvalidIdError, match=re.escape(message)) as caught:
        PublicIdentity.from_id(text)
    assert "\n" not in str(caught.value)


def test_non_text_id() -> None:
    with pytest.raises(InvalidIdError):
        key_from_id(b"mesh")  # type: ignore[arg-type]
    assert not is_valid_id(None)  # type: ignore[arg-type]


def test_fingerprint_shape_and_uniqueness() -> None:
    fingerprint = ALICE.public.fingerprint
    assert re.fullmatch(r"\d{5}( \d{5}){11}", fingerprint)
    assert fingerprint == fingerprint_for(ALICE.verify_key)
    assert len({ALICE.public.fingerprint, BOB.public.fingerprint, CAROL.public.fingerprint}) == 3


def test_public_identity() -> None:
    public = PublicIdentity(ALICE.verify_key)
    assert public.id == id_for_key(ALICE.verify_key) == ALICE.id
    assert public.box_public_key == crypto.ed25519_pk_to_x25519(ALICE.verify_key)
    assert public == ALICE.public and hash(public) == hash(ALICE.public)
    assert public != BOB.public
    assert ALICE.id in repr(public)
    for bad in (b"", bytes(31), bytes(33), bytearray(32)):
        with pytest.raises(MalformedError):
            PublicIdentity(bad)  # type: ignore[arg-type]


def test_identity_sign_and_unseal() -> None:
    signature = ALICE.sign(b"data")
    crypto.verify(ALICE.verify_key, b"data", signature)
    ciphertext = crypto.seal(BOB.public.box_public_key, b"for bob")
    assert BOB.unseal(ciphertext) == b"for bob"


def test_identity_repr_hides_seed() -> None:
    assert ALICE.seed.hex() not in repr(ALICE)
    assert repr(ALICE.seed) not in repr(ALICE)
    assert ALICE.id in repr(ALICE)


def test_identity_bytes_round_trip_without_passphrase() -> None:
    data = ALICE.to_bytes()
    assert msgpack.unpackb(data) == {"v": 1, "enc": False, "seed": ALICE.seed}
    assert Identity.from_bytes(data).seed == ALICE.seed


def test_identity_bytes_with_passphrase() -> None:
    # Three argon2id runs (INTERACTIVE, ~65 ms each).
    data = ALICE.to_bytes(passphrase="tr0ub4dor & 3")
    assert ALICE.seed not in data
    with pytest.raises(WrongPassphraseError, match="passphrase"):
        Identity.from_bytes(data)
    assert Identity.from_bytes(data, passphrase="tr0ub4dor & 3").seed == ALICE.seed
    with pytest.raises(WrongPassphraseError):
        Identity.from_bytes(data, passphrase="tr0ub4dor & 4")


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [1, False, bytes(32)],
        {"v": 1, "enc": False},
        {"v": 1, "enc": False, "seed": bytes(32), "extra": 1},
        {"v": 2, "enc": False, "seed": bytes(32)},
        {"v": True, "enc": False, "seed": bytes(32)},
        {"v": 1, "enc": 0, "seed": bytes(32)},
        {"v": 1, "enc": False, "seed": "x" * 32},
        {"v": 1, "enc": False, "seed": bytes(31)},
        {"v": 1, "enc": True, "seed": b"too short to be a blob"},
    ],
)
def test_identity_from_bytes_rejects_garbage(doc: object) -> None:
    data = msgpack.packb(doc, use_bin_type=True)
    with pytest.raises(MalformedError):
        Identity.from_bytes(data, passphrase="pw")


def test_identity_from_bytes_rejects_trailing_data_and_non_bytes() -> None:
    with pytest.raises(MalformedError):
        Identity.from_bytes(ALICE.to_bytes() + b"\x00")
    with pytest.raises(MalformedError):
        Identity.from_bytes(bytearray(ALICE.to_bytes()))  # type: ignore[arg-type]


@FUZZ
@given(text=st.text(max_size=80))
def test_from_id_fuzz_text(text: str) -> None:
    with pytest.raises(InvalidIdError):
        PublicIdentity.from_id(text)


@FUZZ
@given(body=st.text(alphabet=B32, min_size=60, max_size=60))
def test_from_id_fuzz_well_shaped(body: str) -> None:
    # Right prefix, length and alphabet: only the checksum stands in the way.
    with pytest.raises(InvalidIdError):
        PublicIdentity.from_id("mesh" + body)


@FUZZ
@given(data=st.binary(max_size=120))
def test_identity_from_bytes_fuzz(data: bytes) -> None:
    with contextlib.suppress(MeshError):
        Identity.from_bytes(data)


@FUZZ
@given(
    doc=st.dictionaries(
        st.sampled_from(["v", "enc", "seed", "x"]),
        st.none() | st.booleans() | st.integers(-3, 3) | st.binary(max_size=64) | st.text(),
    )
)
def test_identity_from_bytes_fuzz_docs(doc: dict[str, object]) -> None:
    try:
        identity = Identity.from_bytes(msgpack.packb(doc, use_bin_type=True))
    except MeshError:
        return
    assert identity.seed == doc["seed"]
