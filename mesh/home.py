"""A home directory and its one owner: opening, locking, migrating, unlocking, names.

A home holds `mesh.db` (the Store), `mesh.lock` and, while a daemon runs, `control.sock`.
Every way into a home goes through this module (running a node for one is mesh.runner):

- open: `open_store(path)` opens or creates the directory and its database (what
  `Node.start(home=PATH)` does); `open_home(path)` opens one that already has an identity
  (every command but `init`); `init_home` creates the identity of a new one. On disk the
  database is encrypted: mesh.vault unlocks it (the passphrase wraps its key), and turns
  a plaintext home of the previous release into an encrypted one on first unlock. Opening
  a Store applies its schema migrations (mesh.store).
- lock: whoever runs a node for a home (the daemon, or a short-lived node started by
  `mesh send` or `mesh inbox`) holds an exclusive `flock` on `mesh.lock` for its whole
  life (`HomeLock`), so two processes never run one identity and node id at once. The
  kernel drops the lock when the process dies, even by SIGKILL, so a crash never leaves a
  home "busy".
- unlock: `unlock_identity` (a passphrase-protected identity needs its passphrase;
  `is_locked` says whether it does, `passphrase_for` gets it from MESH_PASSPHRASE or asks);
  `fresh_node_id` a new DHT node id for each start (never saved: nothing stable
  about a device); `network_key` / `set_network_key` the private mesh it belongs to.
- names: `resolve_recipient` is the one resolver of a contact name or an ID, and
  `queue_text` the one way a text message is sealed and committed (status "queued", plus
  its record in the outbox) before any network I/O.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from mesh import envelope, vault
from mesh.envelope import DEFAULT_TTL, MAX_TEXT_BYTES, MAX_TTL, Message, MessageKind, Record
from mesh.errors import (
    AlreadyRunningError,
    EmptyMessageError,
    IdentityExistsError,
    LocalError,
    MessageTooLargeError,
    NoIdentityError,
    UnknownContactError,
    WrongPassphraseError,
)
from mesh.identity import ID_PREFIX, Identity, PublicIdentity, is_valid_id
from mesh.mailboxes import Mailboxes
from mesh.netkey import NetworkKey
from mesh.store import Store

DB_NAME = vault.DB_NAME
CONTROL_SOCKET = "control.sock"
LOCK_FILE = vault.LOCK_FILE
PASSPHRASE_ENV = "MESH_PASSPHRASE"
NODE_ID_SIZE = 20


# -- opening ------------------------------------------------------------------------------


def control_path(home: Path) -> Path:
    return home / CONTROL_SOCKET


def open_store(home: str | os.PathLike[str] | None, passphrase: str | None = None) -> Store:
    """The store of `home`, created with its directory if new; in memory for None. On
    disk it is encrypted (mesh.vault unlocks it, migrating a plaintext home first)."""
    if home is None:
        return Store(None)
    path = Path(home)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return vault.open_store(path, passphrase)


def open_home(home: Path, passphrase: str | None = None) -> Store:
    """Open the store of a home that has an identity, unlocking it (mesh.vault) on the
    way; never creates anything. A locked home without a passphrase source: LockedError."""
    require_home(home)
    store = vault.open_store(home, passphrase)
    if store.get_identity_blob() is None:
        store.close()
        raise NoIdentityError(f"no identity in {home}: run `mesh --home {home} init` first")
    return store


def require_home(home: Path) -> None:
    """NoIdentityError unless `home` has a store; unlocks nothing (a running daemon
    answers for a locked home without the passphrase being asked again)."""
    if vault.home_state(home) == "empty":
        raise NoIdentityError(f"no identity in {home}: run `mesh --home {home} init` first")


def ensure_new_home(home: Path) -> None:
    """IdentityExistsError if `home` has a store (or a key file) already."""
    if vault.home_state(home) != "empty" or (home / vault.KEY_FILE).exists():
        raise IdentityExistsError(
            f"{home} already has an identity; refusing to replace it "
            "(use another --home for a second identity)"
        )


def init_home(home: Path, name: str | None, passphrase: str | None) -> Identity:
    """Create the identity of a new home; IdentityExistsError if it has one."""
    ensure_new_home(home)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    identity = Identity.generate()
    with vault.open_store(home, passphrase) as store:
        # The seed is stored in clear inside the encrypted store (the passphrase wraps
        # the store's key, see mesh/vault.py).
        store.set_identity_blob(identity.to_bytes(None))
        store.set_setting("public_id", identity.id)
        if name:
            store.set_setting("name", name.strip())
    return identity


# -- locking ------------------------------------------------------------------------------


class HomeLock:
    """An exclusive flock on HOME/mesh.lock, released when closed or when the process dies."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def acquire(cls, home: Path) -> HomeLock:
        fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunningError(
                f"mesh is already running for {home} (pid {holder}): stop it first, "
                "or use another --home"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        return cls(fd)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1

    def __enter__(self) -> HomeLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# -- unlocking ----------------------------------------------------------------------------


def unlock_identity(store: Store, passphrase: str | None, create: bool = False) -> Identity:
    """The identity of a home (WrongPassphraseError); with `create`, a new one is made
    (and saved, encrypted with `passphrase` if given) when the home has none yet."""
    blob = store.get_identity_blob()
    if blob is not None:
        return Identity.from_bytes(blob, passphrase)
    if not create:
        raise NoIdentityError("this home has no identity yet: run `mesh init` first")
    identity = Identity.generate()
    store.set_identity_blob(identity.to_bytes(None))  # inside the encrypted store
    return identity


def is_locked(store: Store) -> bool:
    """True if the identity is encrypted with a passphrase (no key derivation run)."""
    try:
        unlock_identity(store, None)
    except WrongPassphraseError:
        return True
    return False


def env_passphrase() -> str | None:
    """MESH_PASSPHRASE if set; an empty one is an error, never "no passphrase"."""
    if PASSPHRASE_ENV not in os.environ:
        return None
    if not os.environ[PASSPHRASE_ENV]:
        raise WrongPassphraseError(f"{PASSPHRASE_ENV} is set but empty; unset it or give one")
    return os.environ[PASSPHRASE_ENV]


def passphrase_for(store: Store, ask: Callable[[], str] | None) -> str | None:
    """The passphrase a locked identity needs: MESH_PASSPHRASE, else `ask` (None when
    no one can be asked, e.g. stdin is not a terminal); None if it is not locked."""
    if not is_locked(store):
        return None
    given = env_passphrase()
    if given is not None:
        return given
    if ask is None:
        raise WrongPassphraseError(f"this identity is locked: set {PASSPHRASE_ENV}")
    return ask()


def public_identity(store: Store, passphrase: str | None = None) -> PublicIdentity:
    saved = store.get_setting("public_id")
    if saved is not None:
        return PublicIdentity.from_id(saved)
    return unlock_identity(store, passphrase).public


def fresh_node_id(store: Store) -> bytes:
    """A new random DHT node id for this start: a device must not be recognisable by
    its node id across days and networks. The id an older release saved is deleted."""
    if store.get_setting("node_id") is not None:
        store.delete_setting("node_id")
    return os.urandom(NODE_ID_SIZE)


# -- the private mesh a home belongs to -----------------------------------------------------


def network_key(store: Store) -> NetworkKey | None:
    """The home's private mesh (from `mesh network create/join`), or None: the open mesh."""
    invite = store.get_setting("network_invite")
    return None if invite is None else NetworkKey.from_invite(invite)


def set_network_key(store: Store, key: NetworkKey | None) -> None:
    if key is None:
        store.delete_setting("network_invite")
    else:
        store.set_setting("network_invite", key.invite())


# -- names and queued messages ----------------------------------------------------------------


class Recipient(NamedTuple):
    public: PublicIdentity
    ttl: int | None  # the contact's message time to live, if it has one

    @property
    def id(self) -> str:
        return self.public.id


class Queued(NamedTuple):
    message: Message
    record: Record | None  # None: waiting for the contact's keys (they have not added us)
    recipient: PublicIdentity
    key: bytes | None  # the mailbox key of the day it was sealed for


def resolve_recipient(store: Store, to: str) -> Recipient:
    """A contact name or an ID -> the recipient (InvalidIdError, UnknownContactError)."""
    to = to.strip()
    contact = store.get_contact(to)
    if contact is not None:
        return Recipient(PublicIdentity.from_id(contact.peer_id), contact.ttl)
    if to.lower().startswith(ID_PREFIX) or is_valid_id(to):
        public = PublicIdentity.from_id(to)  # a typo'd ID says what is wrong with it
        known = store.find_contact_by_id(public.id)
        return Recipient(public, known.ttl if known is not None else None)
    raise UnknownContactError(
        f"no contact named {to!r}: add one with `mesh contacts add NAME ID`, or give an ID"
    )


def check_text(text: str) -> bytes:
    """The UTF-8 body of a text message, or a LocalError that states the rule."""
    if not text.strip():
        raise EmptyMessageError("nothing to send: the message is empty")
    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate (from a socket, a widget, argv)
        raise LocalError(
            f"the message is not valid UTF-8 text (a lone surrogate at character {exc.start + 1})"
        ) from None
    if len(body) > MAX_TEXT_BYTES:
        raise MessageTooLargeError(
            f"this message is too long: {len(body)} bytes, the limit is {MAX_TEXT_BYTES} "
            "bytes (UTF-8); split it into several messages"
        )
    return body


def check_ttl(ttl: int | None) -> int | None:
    if ttl is not None and (type(ttl) is not int or not 1 <= ttl <= MAX_TTL):
        raise LocalError(f"a time to live is 1 to {MAX_TTL} seconds (30 days)")
    return ttl


def queue_text(
    store: Store,
    identity: Identity,
    to: str,
    text: str,
    ttl: int | None,
    now: float,
    mailboxes: Mailboxes | None = None,
) -> Queued:
    """Seal a text message for the contact's mailbox of the day and commit it (message row
    + outbox) before any network I/O. To an ID we have no agreement with yet, this adds
    one (a one-way add): the message is committed unsealed and waits for their keys."""
    recipient, contact_ttl = resolve_recipient(store, to)
    boxes = mailboxes or Mailboxes(identity, store)
    body = text.encode("utf-8")
    life = ttl or contact_ttl or DEFAULT_TTL
    sealed = boxes.seal_for(recipient.id, MessageKind.TEXT, body, now, life)
    if sealed is None:
        store.keys.agreement_add(recipient.id, now)  # a one-way add, if it is not one already
        message = envelope.unsealed_message(identity, recipient, MessageKind.TEXT, body, now, life)
        where = None
        record = key = None
    else:
        message, record, address = sealed
        where = (address.key, record.pack(), address.epoch)
        key = address.key
    store.queue_outgoing(
        message.id,
        recipient.id,
        MessageKind.TEXT,
        message.body,
        message.sent_at,
        message.expires_at,
        where,
    )
    return Queued(message, record, recipient, key)


def queue_message(
    store: Store, identity: Identity, to: str, text: str, ttl: int | None, now: float
) -> Message:
    """`queue_text` for what a user typed: a blank text or a bad ttl is refused first."""
    check_text(text)
    return queue_text(store, identity, to, text, check_ttl(ttl), now).message
