"""Backups and recovery words: round trip to a fresh home (same ID, contacts, messages),
damaged and truncated files, wrong passphrase, refusing to replace an identity."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from mnemonic import Mnemonic

from mesh import backup, vault
from mesh.errors import IdentityExistsError, LocalError, MalformedError, WrongPassphraseError
from mesh.home import init_home, open_home, unlock_identity
from mesh.identity import Identity


@pytest.fixture(autouse=True)
def no_prompt() -> None:
    vault.set_passphrase_source(None)


def filled_home(home: Path) -> Identity:
    identity = init_home(home, "ann", "store passphrase")
    with open_home(home) as store:
        store.add_contact("bob", Identity.generate().id, 3600)
        store.set_contact_flags("bob", verified_at=5.0, read_receipts=True)
        store.add_message(os.urandom(16), "in", "p", "text", b"north gate", 1.0, 9e12, "received")
        store.add_message(os.urandom(16), "out", "p", "text", b"banner", 2.0, 9e12, "stored")
    return identity


def test_backup_restore_keeps_id_contacts_and_messages(tmp_path: Path) -> None:
    identity = filled_home(tmp_path / "a")
    with open_home(tmp_path / "a") as store:
        doc = backup.export(store, unlock_identity(store, None), messages=True)
    sealed = backup.seal(doc, "backup passphrase")
    assert b"north gate" not in sealed and b"bob" not in sealed
    backup.write(tmp_path / "b.bak", sealed)
    restored = backup.restore(
        tmp_path / "b",
        backup.unseal(backup.read(tmp_path / "b.bak"), "backup passphrase"),
        "other store passphrase",
        force=False,
    )
    assert restored.id == identity.id
    vault.lock(tmp_path / "b")
    with open_home(tmp_path / "b", "other store passphrase") as store:
        assert [c.name for c in store.list_contacts()] == ["bob"]
        assert store.list_contacts()[0].ttl == 3600
        assert store.list_contacts()[0].verified_at == 5.0
        assert store.list_contacts()[0].read_receipts
        assert [m.body for m in store.list_messages()] == [b"north gate", b"banner"]
        assert store.get_setting("name") == "ann"


def test_backup_without_messages(tmp_path: Path) -> None:
    filled_home(tmp_path / "a")
    with open_home(tmp_path / "a") as store:
        doc = backup.export(store, unlock_identity(store, None), messages=False)
    assert "messages" not in doc
    backup.restore(tmp_path / "b", doc, None, force=False)
    with open_home(tmp_path / "b") as store:
        assert store.list_messages() == [] and len(store.list_contacts()) == 1


def test_bad_backups_are_refused(tmp_path: Path) -> None:
    sealed = backup.seal({"v": 1, "seed": bytes(32)}, "backup passphrase")
    with pytest.raises(WrongPassphraseError):
        backup.unseal(sealed, "not the one")
    with pytest.raises(WrongPassphraseError):  # damaged: the tag does not verify
        backup.unseal(sealed[:-1] + bytes([sealed[-1] ^ 1]), "backup passphrase")
    for cut in (0, 10, 40, len(sealed) - 1):
        with pytest.raises((MalformedError, WrongPassphraseError)):
            backup.unseal(sealed[:cut], "backup passphrase")
    with pytest.raises(MalformedError):
        backup.unseal(b"PK\x03\x04" + bytes(100), "backup passphrase")


def test_restore_over_an_identity_needs_force(tmp_path: Path) -> None:
    filled_home(tmp_path / "a")
    doc = {"v": 1, "seed": Identity.generate().seed}
    with pytest.raises(IdentityExistsError):
        backup.restore(tmp_path / "a", doc, None, force=False)
    vault.lock(tmp_path / "a")
    open_home(tmp_path / "a", "store passphrase").close()  # untouched
    restored = backup.restore(tmp_path / "a", doc, None, force=True)
    with open_home(tmp_path / "a") as store:
        assert unlock_identity(store, None).id == restored.id
        assert store.list_messages() == []


def test_recovery_words_round_trip_and_standard_vector() -> None:
    identity = Identity.generate()
    words = backup.to_words(identity)
    assert len(words.split()) == 24
    assert backup.from_words("  " + words.upper() + "\n").id == identity.id
    # BIP-39's first English vector for 256 bits of zero entropy.
    zero = backup.to_words(Identity(bytes(32)))
    assert zero == " ".join(["abandon"] * 23 + ["art"])
    swapped = words.split()
    swapped[0], swapped[1] = swapped[1], swapped[0]
    if swapped != words.split():
        with pytest.raises(LocalError):
            backup.from_words(" ".join(swapped[:23]))
    # The word list is the standard one: SHA-256 of BIP-39's english.txt.
    digest = hashlib.sha256("\n".join(Mnemonic("english").wordlist).encode() + b"\n")
    assert digest.hexdigest() == (
        "2f5eed53a4727b4bf8880d8f3f199efc90e58503646d9ff8eff3a2ed3b24dbda"
    )
