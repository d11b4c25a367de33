"""The store at rest: the key file, unlocking, passphrase changes, duress and wipe.

A home's database `mesh.db` is a SQLCipher database (AES-256 pages with an HMAC each,
its WAL too) under a random 32-byte data key. The data key is wrapped in `mesh.key`:

    magic "MESHKEY\\x01" | mode (1) | opslimit (u32 BE) | memlimit (u64 BE) | salt (16)
    | slot 0: nonce (24) + XChaCha20-Poly1305(data key) (48)
    | slot 1: nonce (24) + XChaCha20-Poly1305(duress marker) (48), or 72 random bytes

Mode 1: wrap key = BLAKE2b(key=argon2id(passphrase, salt), "mesh-messenger store wrap v1").
Mode 0 (no passphrase): wrap key = BLAKE2b(key=salt, "mesh-messenger store no passphrase
v1"): encrypted at rest but openable by anyone holding the file; `wipe` still destroys it.
The AAD of slot i is the header (magic to salt) and the byte i. The SQLCipher key is
BLAKE2b(key=data key, "mesh-messenger sqlcipher v1"), given as a raw key (no PBKDF2).

A passphrase change re-wraps the same data key and replaces `mesh.key` by rename, so a
SIGKILL at any moment leaves the old or the new file, each complete. Slot 1 is opaque
without the duress passphrase: it keeps its bytes (and the salt) across changes.

The unlocked key lives in one place: `_unlocked`, keyed by home, as a `_Key` whose repr
never shows it. The CLI registers the one passphrase prompt with `set_passphrase_source`;
without one, a locked home raises LockedError ("locked") and nothing is decrypted.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import resource
import shutil
import signal
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from mesh import crypto
from mesh.errors import LockedError, MalformedError, StoreError, WrongPassphraseError
from mesh.identity import Identity
from mesh.store import Store

log = logging.getLogger(__name__)

DB_NAME = "mesh.db"
KEY_FILE = "mesh.key"
LOCK_FILE = "mesh.lock"
MAGIC = b"MESHKEY\x01"
SQLITE_HEADER = b"SQLite format 3\x00"
WRAP_LABEL = b"mesh-messenger store wrap v1"
OPEN_LABEL = b"mesh-messenger store no passphrase v1"
SQLCIPHER_LABEL = b"mesh-messenger sqlcipher v1"
DURESS_MARKER = b"mesh-messenger duress v1".ljust(crypto.KEY_SIZE, b"\x00")
_HEADER = struct.Struct(">8sBIQ16s")
_SLOT_SIZE = crypto.AEAD_NONCE_SIZE + crypto.KEY_SIZE + crypto.AEAD_TAG_SIZE
KEY_FILE_SIZE = _HEADER.size + 2 * _SLOT_SIZE
MAX_ATTEMPTS = 3  # passphrase prompts per unlock, with a growing pause between them
RETRY_PAUSE = 1.0  # seconds, times the attempt number

HomeState = Literal["empty", "plain", "open", "locked"]
PassphraseSource = Callable[[Path, int], str]


class _Key:
    """An unlocked key; never shown."""

    __slots__ = ("value",)

    def __init__(self, value: bytes) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "_Key(<hidden>)"


_unlocked: dict[Path, _Key] = {}
_source: PassphraseSource | None = None


def set_passphrase_source(source: PassphraseSource | None) -> None:
    """The prompt asked for a locked home's passphrase: (home, attempt) -> passphrase."""
    global _source
    _source = source


def _home(home: str | os.PathLike[str]) -> Path:
    return Path(home).resolve()


# -- the key file -------------------------------------------------------------------------


class KeyFile:
    __slots__ = ("memlimit", "mode", "opslimit", "salt", "slots")

    def __init__(
        self, mode: int, opslimit: int, memlimit: int, salt: bytes, slots: list[bytes]
    ) -> None:
        self.mode, self.opslimit, self.memlimit, self.salt = mode, opslimit, memlimit, salt
        self.slots = slots

    def header(self) -> bytes:
        return _HEADER.pack(MAGIC, self.mode, self.opslimit, self.memlimit, self.salt)

    def pack(self) -> bytes:
        return self.header() + b"".join(self.slots)

    @classmethod
    def unpack(cls, data: bytes) -> KeyFile:
        if len(data) != KEY_FILE_SIZE or not data.startswith(MAGIC):
            raise MalformedError("the key file of this home is damaged")
        _, mode, ops, mem, salt = _HEADER.unpack_from(data)
        if mode not in (0, 1):
            raise MalformedError("the key file of this home is damaged")
        body = data[_HEADER.size :]
        return cls(mode, ops, mem, salt, [body[:_SLOT_SIZE], body[_SLOT_SIZE:]])

    def wrap_key(self, passphrase: str | None) -> bytes:
        if self.mode == 0:
            return crypto.derive_key(self.salt, OPEN_LABEL)
        if passphrase is None:
            raise LockedError("locked")
        stretched = crypto.passphrase_key(passphrase, self.salt, self.opslimit, self.memlimit)
        return crypto.derive_key(stretched, WRAP_LABEL)

    def seal(self, index: int, wrap_key: bytes, secret: bytes) -> None:
        nonce = crypto.random_bytes(crypto.AEAD_NONCE_SIZE)
        aad = self.header() + bytes([index])
        self.slots[index] = nonce + crypto.aead_encrypt(wrap_key, nonce, secret, aad)

    def open(self, index: int, wrap_key: bytes) -> bytes | None:
        slot = self.slots[index]
        nonce = slot[: crypto.AEAD_NONCE_SIZE]
        aad = self.header() + bytes([index])
        return crypto.aead_decrypt(wrap_key, nonce, slot[crypto.AEAD_NONCE_SIZE :], aad)


def new_key_file(passphrase: str | None) -> KeyFile:
    mode = 0 if passphrase is None else 1
    salt = crypto.random_bytes(crypto.PWHASH_SALT_SIZE)
    slots = [crypto.random_bytes(_SLOT_SIZE), crypto.random_bytes(_SLOT_SIZE)]
    return KeyFile(mode, crypto.STORE_OPSLIMIT, crypto.STORE_MEMLIMIT, salt, slots)


def read_key_file(home: Path) -> KeyFile | None:
    try:
        return KeyFile.unpack((home / KEY_FILE).read_bytes())
    except FileNotFoundError:
        return None


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` by fsync + rename: a crash leaves the old or the new file."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sqlcipher_key(data_key: bytes) -> bytes:
    return crypto.derive_key(data_key, SQLCIPHER_LABEL)


# -- state and unlocking --------------------------------------------------------------------


def home_state(home: str | os.PathLike[str]) -> HomeState:
    """empty (no store), plain (a store from before encryption), open or locked."""
    path = _home(home)
    db = path / DB_NAME
    if not db.is_file():
        return "empty"
    with db.open("rb") as file:
        if file.read(len(SQLITE_HEADER)) == SQLITE_HEADER:
            return "plain"
    key_file = read_key_file(path)
    if key_file is None:
        raise StoreError(f"{db} is encrypted but its key file {KEY_FILE} is missing")
    return "open" if key_file.mode == 0 or path in _unlocked else "locked"


def is_locked(home: str | os.PathLike[str]) -> bool:
    return home_state(home) == "locked"


def has_passphrase(home: str | os.PathLike[str]) -> bool:
    key_file = read_key_file(_home(home))
    return key_file is not None and key_file.mode == 1


def create(home: str | os.PathLike[str], passphrase: str | None) -> bytes:
    """A new data key for an empty home, wrapped in a new key file; the SQLCipher key."""
    path = _home(home)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    data_key = crypto.random_bytes(crypto.KEY_SIZE)
    key_file = new_key_file(passphrase)
    key_file.seal(0, key_file.wrap_key(passphrase), data_key)
    write_atomic(path / KEY_FILE, key_file.pack())
    _forget_core_dumps()
    _unlocked[path] = _Key(data_key)
    return sqlcipher_key(data_key)


def unlock(home: str | os.PathLike[str], passphrase: str | None = None) -> bytes:
    """The SQLCipher key of a home: cached, unwrapped, migrated or created as needed.

    A locked home without `passphrase` asks the passphrase source (up to MAX_ATTEMPTS
    times, pausing between tries), or raises LockedError when there is none.
    """
    path = _home(home)
    cached = _unlocked.get(path)
    if cached is not None and passphrase is None:
        return sqlcipher_key(cached.value)  # a passphrase given explicitly is checked
    from mesh.migrate import finish_interrupted, migrate_plain_home  # the old format

    finish_interrupted(path)
    state = home_state(path)
    if state == "empty":
        return create(path, passphrase)
    if state == "plain":
        return migrate_plain_home(path, passphrase)
    if passphrase is not None or state == "open":
        return _unwrap(path, passphrase)
    return _ask_and_unwrap(path)


def _ask_and_unwrap(path: Path) -> bytes:
    if _source is None:
        raise LockedError("locked")
    for attempt in range(1, MAX_ATTEMPTS + 1):
        passphrase = _source(path, attempt)  # its own errors (no terminal...) go up
        try:
            return _unwrap(path, passphrase)
        except WrongPassphraseError:
            if attempt == MAX_ATTEMPTS:
                raise
            time.sleep(RETRY_PAUSE * attempt)  # rate-limit guessing at the prompt
    raise LockedError("locked")  # not reached


def _unwrap(path: Path, passphrase: str | None) -> bytes:
    key_file = read_key_file(path)
    if key_file is None:
        raise StoreError(f"the key file {KEY_FILE} of {path} is missing")
    wrap_key = key_file.wrap_key(passphrase)
    data_key = key_file.open(0, wrap_key)
    if data_key is None:
        if key_file.mode == 1 and key_file.open(1, wrap_key) is not None:
            return _duress(path, passphrase)
        raise WrongPassphraseError("wrong passphrase: this home stays locked")
    _forget_core_dumps()
    _unlocked[path] = _Key(data_key)
    return sqlcipher_key(data_key)


def _duress(path: Path, passphrase: str | None) -> bytes:
    """The duress passphrase: wipe silently, then a fresh home with a new identity."""
    log.debug("opening %s", path)
    wipe(path)
    key = create(path, passphrase)
    with Store(path / DB_NAME, key=key) as store:
        identity = Identity.generate()
        store.set_identity_blob(identity.to_bytes(None))
        store.set_setting("public_id", identity.id)
    return key


def lock(home: str | os.PathLike[str]) -> None:
    """Forget the unlocked key of a home (Python cannot zero the bytes object itself)."""
    _unlocked.pop(_home(home), None)


def open_store(home: str | os.PathLike[str], passphrase: str | None = None) -> Store:
    """The store of a home, unlocked (see `unlock`)."""
    path = _home(home)
    key = unlock(path, passphrase)
    return Store(path / DB_NAME, key=key)


def _forget_core_dumps() -> None:
    """A process holding a key writes no core dump."""
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


# -- changing the passphrase ----------------------------------------------------------------


def _unlocked_key_file(path: Path) -> tuple[KeyFile, bytes]:
    """The key file and data key of a home unlocked in this process (else LockedError)."""
    key_file = read_key_file(path)
    cached = _unlocked.get(path)
    if key_file is None or cached is None:
        raise LockedError("locked")
    return key_file, cached.value


def change_passphrase(home: str | os.PathLike[str], new: str) -> None:
    """Re-wrap the data key of an unlocked home under `new` (atomically; a duress
    passphrase already set stays valid: the salt and slot 1 are kept)."""
    path = _home(home)
    key_file, data_key = _unlocked_key_file(path)
    if key_file.mode == 0:
        fresh = new_key_file(new)
    else:
        fresh = KeyFile(1, key_file.opslimit, key_file.memlimit, key_file.salt, key_file.slots)
    wrap_key = fresh.wrap_key(new)
    if key_file.mode == 1 and fresh.open(1, wrap_key) is not None:
        raise WrongPassphraseError("that is the duress passphrase: choose another one")
    fresh.seal(0, wrap_key, data_key)
    write_atomic(path / KEY_FILE, fresh.pack())


def set_duress(home: str | os.PathLike[str], duress: str) -> None:
    """Store the duress passphrase of an unlocked home in slot 1 (not the real one)."""
    path = _home(home)
    key_file, _ = _unlocked_key_file(path)
    if key_file.mode == 0:
        raise LockedError("set a passphrase first (`mesh passphrase`), then a duress one")
    wrap_key = key_file.wrap_key(duress)
    if key_file.open(0, wrap_key) is not None:
        raise WrongPassphraseError("the duress passphrase must differ from the real one")
    key_file.seal(1, wrap_key, DURESS_MARKER)
    write_atomic(path / KEY_FILE, key_file.pack())


# -- wipe -------------------------------------------------------------------------------------


def wipe(home: str | os.PathLike[str]) -> float:
    """Destroy the key material, stop the home's node, delete every file; seconds taken.

    The key file goes first (overwritten with random bytes, fsynced, unlinked): from that
    moment the database is noise. Then the process holding the home's lock (a running
    `mesh up`) is killed, and everything under the home is deleted; the directory stays.
    """
    started = time.perf_counter()
    path = _home(home)
    _unlocked.pop(path, None)
    _shred(path / KEY_FILE)
    _kill_holder(path)
    for entry in list(path.iterdir()) if path.is_dir() else []:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
    with contextlib.suppress(OSError):
        _fsync_dir(path)
    return time.perf_counter() - started


def _shred(path: Path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        size = os.fstat(fd).st_size
        os.pwrite(fd, crypto.random_bytes(max(size, KEY_FILE_SIZE)), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink()


def _kill_holder(path: Path) -> None:
    """SIGKILL the process that holds HOME/mesh.lock, if one does (never ourselves)."""
    try:
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return  # nobody holds it
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    if text.isdigit() and int(text) != os.getpid():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(text), signal.SIGKILL)
