"""The database plumbing under mesh.store: SQLCipher connections and their settings, the
error guard that turns every driver error into a StoreError naming the file, and the
helpers migrations use. The store's sections (identity, contacts, messages, ...) are in
mesh/store.py; its rows and schema in mesh/store_rows.py.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, cast

import sqlcipher3

from mesh.errors import StoreError

BUSY_TIMEOUT = 5.0  # seconds to wait for another process's write lock
CIPHER_PAGE_SIZE = 1024  # see connect_sqlcipher


class ErrorGuard:
    """Turns any sqlite3.Error raised inside ``with`` into a StoreError naming the file."""

    __slots__ = ("where",)

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, _DB_ERRORS):
            raise StoreError(_describe(self.where, exc)) from exc


_DB_ERRORS = (sqlite3.Error, sqlcipher3.Error)


def _describe(where: str, exc: BaseException) -> str:
    if isinstance(exc, sqlite3.IntegrityError | sqlcipher3.IntegrityError):
        return f"the local store at {where} refused a write: {exc}"
    if isinstance(exc, sqlite3.ProgrammingError | sqlcipher3.ProgrammingError):
        return f"the local store at {where} cannot be used: {exc}"
    return f"the local store at {where} is damaged or locked: {exc}"


def sqlcipher_key_literal(key: bytes) -> str:
    """SQLCipher's raw-key syntax (no PBKDF2): x'<64 hex digits>'. Never log it."""
    if len(key) != 32:
        raise ValueError("a store key is 32 bytes")
    return f"x'{key.hex()}'"


def connect_sqlcipher(path: str | os.PathLike[str], key: bytes | None) -> sqlite3.Connection:
    """A SQLCipher connection (plaintext if `key` is None, for migrations).

    Settings: SQLCipher 4 defaults (AES-256-CBC, HMAC-SHA512 per page, a random IV per
    page write) but 1024-byte pages like the plain store (a commit fsyncs a quarter of the
    bytes of 4096-byte pages: the send path is fsync-bound), a raw key (no PBKDF2), temp
    files in memory.
    """
    conn = sqlcipher3.connect(
        os.fspath(path), isolation_level=None, timeout=BUSY_TIMEOUT, cached_statements=32
    )
    if key is not None:
        conn.execute(f'PRAGMA key = "{sqlcipher_key_literal(key)}"')
        conn.execute(f"PRAGMA cipher_page_size = {CIPHER_PAGE_SIZE:d}")
    conn.execute("PRAGMA temp_store = MEMORY")
    return cast(sqlite3.Connection, conn)


def split_statements(script: str) -> list[str]:
    """Split a migration script into statements (semicolons inside triggers are kept)."""
    statements: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                statements.append(pending.strip())
            pending = ""
    return statements


def create_private_file(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot open the local store at {path}: {exc}") from exc
    os.close(fd)


@dataclass(frozen=True)
class Sql:
    """A Store's connection, as its table groups (mesh/store_keys.py, store_held.py)
    use it: the Store's own guarded execute, queries, transaction and relaxed commits."""

    execute: Callable[..., sqlite3.Cursor]
    one: Callable[..., Any]
    all: Callable[..., list[Any]]
    transaction: Callable[[], AbstractContextManager[sqlite3.Connection]]
    relaxed: Callable[[], AbstractContextManager[None]]
