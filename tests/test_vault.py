"""The store at rest: key file vectors, unlock, passphrase change (and SIGKILL during it),
duress, wipe, migration of a plaintext home from the previous release, retention."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mesh import crypto, retention, vault
from mesh.errors import LockedError, WrongPassphraseError
from mesh.home import init_home, open_home
from mesh.identity import Identity
from mesh.store import Store

REPO = Path(__file__).resolve().parent.parent
SECRETS = [b"meet at the north gate", b"bring water and the banner", b"Zaynab", b"10.9.8.7"]

# Test vectors, also in docs/protocol.md ("Store at rest").
SALT = bytes(range(16))
PASSPHRASE = "correct horse battery staple"
ARGON2ID = "aad608b5866cef907f47d5cae529ed01a91301c92c5d5fef46e1a65e394e5742"
WRAP = "98b33ff48700c2e1cb911f329810ca8dcc071c0b0e91a9df8616cdf01154285d"
OPEN_WRAP = "14078f519856bed2cdfa6015ceeebaa242fe7822c74ec609fbe083cdc5026a84"
SQLCIPHER = "9783d185a2a56af011550eb925063be8e3e4ed62c49087a514b4787d00268007"
HEADER = "4d4553484b45590101000000030000000010000000000102030405060708090a0b0c0d0e0f"
SLOT0 = (
    "242424242424242424242424242424242424242424242424"
    "0cae5560b87bd8acc33d1cad734f0f76988dd7cb0c487ab7b8890358bc2f3799"
    "db11ca21ac1b80cd11ddb50bbd7fd5d5"
)


@pytest.fixture(autouse=True)
def no_prompt() -> None:
    vault.set_passphrase_source(None)


def raw_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file())


def fill(store: Store, count: int = 3) -> None:
    store.add_contact("Zaynab", Identity.generate().id)
    store.peers.peer_seen(os.urandom(20), "10.9.8.7", 4000, time.time())
    for n in range(count):
        body = SECRETS[n % 2] + b" %d" % n
        store.add_message(os.urandom(16), "in", "p", "text", body, 1.0, 9e9, "received", 2.0)


def test_vectors() -> None:
    assert crypto.STORE_OPSLIMIT >= 3 and crypto.STORE_MEMLIMIT >= 256 * 1024 * 1024
    stretched = crypto.passphrase_key(
        PASSPHRASE, SALT, crypto.STORE_OPSLIMIT, crypto.STORE_MEMLIMIT
    )
    assert stretched.hex() == ARGON2ID
    key_file = vault.KeyFile(
        1, crypto.STORE_OPSLIMIT, crypto.STORE_MEMLIMIT, SALT, [bytes(72), bytes(72)]
    )
    assert key_file.wrap_key(PASSPHRASE).hex() == WRAP
    assert key_file.header().hex() == HEADER
    assert crypto.derive_key(SALT, vault.OPEN_LABEL).hex() == OPEN_WRAP
    assert vault.sqlcipher_key(b"\x42" * 32).hex() == SQLCIPHER
    key_file.slots[0] = bytes.fromhex(SLOT0)
    assert key_file.open(0, bytes.fromhex(WRAP)) == b"\x42" * 32
    assert key_file.open(1, bytes.fromhex(WRAP)) is None
    assert len(key_file.pack()) == vault.KEY_FILE_SIZE


def test_everything_at_rest_is_encrypted_and_locked_shows_nothing(tmp_path: Path) -> None:
    home = tmp_path / "h"
    init_home(home, "ann", PASSPHRASE)
    with open_home(home) as store:
        fill(store, 50)
        assert (home / "mesh.db-wal").stat().st_size > 0  # the WAL is there, encrypted too
        data = raw_bytes(home)
        assert not any(secret in data for secret in SECRETS)
        assert b"SQLite format" not in data
    vault.lock(home)
    assert vault.is_locked(home)
    with pytest.raises(LockedError, match=r"^locked$"):
        open_home(home)
    with pytest.raises(WrongPassphraseError, match="wrong passphrase"):
        open_home(home, "not it")
    with open_home(home, PASSPHRASE) as store:
        assert len(store.list_messages()) == 50


def test_passphrase_source_retries_then_gives_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vault, "RETRY_PAUSE", 0.01)
    home = tmp_path / "h"
    init_home(home, None, PASSPHRASE)
    vault.lock(home)
    asked: list[int] = []

    def source(_home: Path, attempt: int) -> str:
        asked.append(attempt)
        return PASSPHRASE if attempt == 2 else "wrong"

    vault.set_passphrase_source(source)
    open_home(home).close()
    assert asked == [1, 2]
    vault.lock(home)
    vault.set_passphrase_source(lambda _h, a: "wrong")
    with pytest.raises(WrongPassphraseError):
        open_home(home)


def test_change_passphrase_keeps_everything(tmp_path: Path) -> None:
    home = tmp_path / "h"
    init_home(home, None, None)  # no passphrase: still encrypted, key beside it
    with open_home(home) as store:
        fill(store)
    assert not any(s in raw_bytes(home) for s in SECRETS)
    vault.change_passphrase(home, "first one")
    vault.lock(home)
    with pytest.raises(LockedError):
        open_home(home)
    open_home(home, "first one").close()
    vault.set_duress(home, "duress one")
    vault.change_passphrase(home, "second one")
    with pytest.raises(WrongPassphraseError):
        vault.change_passphrase(home, "duress one")
    vault.lock(home)
    with pytest.raises(WrongPassphraseError):
        open_home(home, "first one")
    with open_home(home, "second one") as store:
        assert len(store.list_messages()) == 3
        assert store.list_contacts()[0].name == "Zaynab"


def test_duress_passphrase_wipes_and_opens_a_fresh_home(tmp_path: Path) -> None:
    home = tmp_path / "h"
    old = init_home(home, "ann", "real passphrase")
    with open_home(home) as store:
        fill(store)
    with pytest.raises(WrongPassphraseError, match="differ"):
        vault.set_duress(home, "real passphrase")
    vault.set_duress(home, "duress passphrase")
    vault.lock(home)
    with open_home(home, "duress passphrase") as store:  # silent: looks like an unlock
        assert store.list_messages() == [] and store.list_contacts() == []
        fresh = Identity.from_bytes(store.get_identity_blob() or b"")
        assert fresh.id != old.id
    assert not any(s in raw_bytes(home) for s in [*SECRETS, b"ann"])
    vault.lock(home)
    with pytest.raises(WrongPassphraseError):
        open_home(home, "real passphrase")
    open_home(home, "duress passphrase").close()  # the fresh home keeps opening


def test_wipe_destroys_the_key_first_and_leaves_an_empty_directory(tmp_path: Path) -> None:
    home = tmp_path / "h"
    init_home(home, "ann", None)
    with open_home(home) as store:
        fill(store, 200)
    (home / "mesh.lock").write_text("12345\n")  # not held: nobody is killed
    seconds = vault.wipe(home)
    assert home.is_dir() and list(home.iterdir()) == []
    assert seconds < 30  # a sanity bound; benchmarks/wipe.py measures it


def test_wipe_kills_the_process_holding_the_home(tmp_path: Path) -> None:
    home = tmp_path / "h"
    init_home(home, None, None)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from mesh.home import HomeLock; "
            "lock = HomeLock.acquire(Path(sys.argv[1])); print('held', flush=True); "
            "time.sleep(60)",
            str(home),
        ],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        vault.wipe(home)
        assert holder.wait(timeout=10) == -signal.SIGKILL
        assert list(home.iterdir()) == []
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


REKEY_CHILD = """
import sys
from mesh import vault
from mesh.errors import WrongPassphraseError
home, a, b = sys.argv[1:4]
try:
    vault.unlock(home, a)
except WrongPassphraseError:  # the last kill left the other one
    vault.unlock(home, b)
    a, b = b, a
print("ready", flush=True)
while True:
    vault.change_passphrase(home, b)
    vault.change_passphrase(home, a)
"""


def test_rekey_killed_with_sigkill_leaves_one_passphrase_working(tmp_path: Path) -> None:
    home = tmp_path / "h"
    init_home(home, None, "passphrase A")
    with open_home(home) as store:
        fill(store, 20)
    vault.lock(home)
    for delay in (0.05, 0.3, 0.55, 0.8, 1.1):
        child = subprocess.Popen(
            [sys.executable, "-c", REKEY_CHILD, str(home), "passphrase A", "passphrase B"],
            stdout=subprocess.PIPE,
            cwd=REPO,
        )
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        opened = 0
        for passphrase in ("passphrase A", "passphrase B"):
            try:
                with open_home(home, passphrase) as store:
                    assert len(store.list_messages()) == 20
                    opened += 1
            except WrongPassphraseError:
                pass
            vault.lock(home)
        assert opened == 1, delay


def make_old_home(home: Path, passphrase: str | None) -> Identity:
    """A home as the previous release wrote it: plaintext SQLite, seed under a passphrase."""
    home.mkdir(mode=0o700)
    identity = Identity.generate()
    with Store(home / "mesh.db") as store:
        store.set_identity_blob(identity.to_bytes(passphrase))
        store.set_setting("public_id", identity.id)
        fill(store, 5)
        store.held.held_put(b"k" * 20, b"r" * 16, int(time.time()) + 999, b"held record")
    assert SECRETS[0] in raw_bytes(home)
    return identity


def test_plain_home_of_the_previous_release_migrates_on_first_unlock(tmp_path: Path) -> None:
    home = tmp_path / "old"
    identity = make_old_home(home, "old passphrase")
    assert vault.home_state(home) == "plain"
    with pytest.raises(WrongPassphraseError):
        open_home(home, "wrong")
    assert vault.home_state(home) == "plain"  # nothing half-done
    with open_home(home, "old passphrase") as store:
        assert Identity.from_bytes(store.get_identity_blob() or b"").id == identity.id
        assert len(store.list_messages()) == 5
        assert store.list_contacts()[0].name == "Zaynab"
        assert len(store.held.held_load(time.time())) == 1
    assert vault.home_state(home) == "open"
    assert sorted(p.name for p in home.iterdir()) == ["mesh.db", "mesh.key"]
    assert not any(s in raw_bytes(home) for s in SECRETS)
    vault.lock(home)
    with pytest.raises(LockedError):
        open_home(home)
    open_home(home, "old passphrase").close()


def test_plain_home_without_passphrase_migrates(tmp_path: Path) -> None:
    home = tmp_path / "old"
    make_old_home(home, None)
    with open_home(home) as store:
        assert len(store.list_messages()) == 5
    assert not vault.has_passphrase(home)
    assert not any(s in raw_bytes(home) for s in SECRETS)


def test_retention_deletes_old_read_messages(tmp_path: Path) -> None:
    home = tmp_path / "h"
    init_home(home, None, None)
    now = time.time()
    with open_home(home) as store:
        old, new, unread = os.urandom(16), os.urandom(16), os.urandom(16)
        store.add_message(
            old, "in", "p", "text", SECRETS[0], now - 40 * 86400, 9e12, "received", now - 40 * 86400
        )
        store.mark_read("p")
        store.add_message(new, "in", "p", "text", b"fresh", now, 9e12, "received", now)
        store.add_message(unread, "in", "q", "text", b"unread", 1.0, 9e12, "received", 2.0)
        store.mark_read("p")
        assert retention.apply(store, now) == 1
        assert {m.msg_id for m in store.list_messages()} == {new, unread}
        retention.set_days(store, 0)
        assert retention.apply(store, now + 1e9) == 0
