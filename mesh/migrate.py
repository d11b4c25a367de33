"""Migrating a home of the previous release (plaintext SQLite) to the encrypted store.

On first unlock: the passphrase is checked against the old identity (whose seed it
encrypted, if it had one); the plaintext database is checkpointed, exported with
`sqlcipher_export` into `mesh.db.migrating` under a new data key, the identity is
re-stored inside the encrypted store, the key file is written, and the new database
replaces the old by rename. A crash at any step leaves a plaintext `mesh.db` (migrated
again at the next unlock) or the finished encrypted one. The old file is overwritten
with zeros before it is unlinked (best effort: flash and journaling file systems may
keep copies of old blocks; see docs/threat-model.md).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from mesh import vault
from mesh.errors import LockedError, NoIdentityError, WrongPassphraseError
from mesh.identity import Identity
from mesh.store import Store
from mesh.store_db import CIPHER_PAGE_SIZE, connect_sqlcipher, sqlcipher_key_literal

MIGRATING = "mesh.db.migrating"
RETIRED = "mesh.db.old"


def migrate_plain_home(home: Path, passphrase: str | None) -> bytes:
    """Encrypt a plaintext home in place; returns its SQLCipher key."""
    db = home / vault.DB_NAME
    with Store(db) as old:
        blob = old.get_identity_blob()
        if blob is None:
            raise NoIdentityError(f"no identity in {home}: run `mesh --home {home} init` first")
        if passphrase is None and _is_encrypted(blob):
            passphrase = _ask(home)
        identity = Identity.from_bytes(blob, passphrase)  # WrongPassphraseError
        version = old.schema_version()
        old.checkpoint()
    target = home / MIGRATING
    _remove_database(target)
    key = _new_key(home, passphrase)
    try:
        _export(db, target, key, version)
        with Store(target, key=key) as new:
            new.set_identity_blob(identity.to_bytes(None), replace=True)
            new.checkpoint()
        _retire(db)
    except BaseException:
        vault.lock(home)
        raise
    os.replace(target, db)
    vault._fsync_dir(home)
    _scrub(home / RETIRED)
    return key


def _is_encrypted(blob: bytes) -> bool:
    try:
        Identity.from_bytes(blob, None)
    except WrongPassphraseError:
        return True
    return False


def _ask(home: Path) -> str:
    source = vault._source
    if source is None:
        raise LockedError("locked")
    return source(home, 1)


def _new_key(home: Path, passphrase: str | None) -> bytes:
    vault.lock(home)
    return vault.create(home, passphrase)


def _export(plain: Path, target: Path, key: bytes, version: int) -> None:
    conn = connect_sqlcipher(plain, None)
    try:
        conn.execute(
            "ATTACH DATABASE ? AS enc KEY ?", (os.fspath(target), sqlcipher_key_literal(key))
        )
        conn.execute(f"PRAGMA enc.cipher_page_size = {CIPHER_PAGE_SIZE:d}")
        conn.execute("SELECT sqlcipher_export('enc')")
        conn.execute(f"PRAGMA enc.user_version = {int(version):d}")
        conn.execute("DETACH DATABASE enc")
    finally:
        conn.close()


def _retire(db: Path) -> None:
    """Keep a hard link to the plaintext file, to overwrite it once it is replaced."""
    retired = db.with_name(RETIRED)
    with contextlib.suppress(FileNotFoundError):
        retired.unlink()
    os.link(db, retired)
    for suffix in ("-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            db.with_name(db.name + suffix).unlink()


def _scrub(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        size = path.stat().st_size
        with path.open("r+b") as file:
            file.write(b"\x00" * size)
            file.flush()
            os.fsync(file.fileno())
        path.unlink()


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            path.with_name(path.name + suffix).unlink()


def finish_interrupted(home: Path) -> None:
    """Scrub what an interrupted migration left (called at every unlock)."""
    _scrub(home / RETIRED)
    _remove_database(home / MIGRATING)
