"""A seized laptop gives up nothing: after a real exchange between two `mesh up` daemons
on loopback, no byte under either home holds a message text, a contact name or a peer
address; `mesh wipe` stops the daemon and leaves an empty directory. Also the CLI of
passphrases, wipe, backup and restore."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_support import (
    MESH,
    REPO,
    RUN_TIMEOUT,
    befriend,
    clean_env,
    mesh,
    read_line,
    status_of,
    texts,
    wait_until,
)

from mesh import vault
from mesh.home import init_home

TEXTS = ["meet at the north gate", "bring water and the banner"]
NAMES = ["Zaynab", "Omar"]
HOSTS = ["127.0.0.1", "127.0.0.2"]
PASSPHRASES = ["ann's long passphrase", "ben's long passphrase"]


class Up:
    def __init__(self, home: Path, host: str, passphrase: str, *peers: str) -> None:
        args = ["up", "--host", host, "--no-mdns"]
        for peer in peers:
            args += ["--peer", peer]
        self.proc = subprocess.Popen(
            [*MESH, "--home", str(home), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=clean_env(MESH_PASSPHRASE=passphrase),
        )
        first = read_line(self.proc)
        assert first.startswith("listening on "), first
        self.address = first.removeprefix("listening on ")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=RUN_TIMEOUT)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return code


@pytest.fixture
def ups() -> Iterator[list[Up]]:
    started: list[Up] = []
    yield started
    for up in started:
        up.stop(signal.SIGKILL)


def leaks(home: Path, needles: list[str]) -> list[tuple[str, str]]:
    """(file, needle) for every needle found in the raw bytes of any file under home."""
    found = []
    for path in sorted(home.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            for needle in needles:
                for form in (needle.encode(), needle.encode("utf-16-le")):
                    if form in data:
                        found.append((path.name, needle))
    return found


def test_seized_homes_hold_no_text_name_or_address(
    tmp_path_factory: pytest.TempPathFactory, ups: list[Up]
) -> None:
    root = tmp_path_factory.mktemp("z")
    ann, ben = root / "ann", root / "ben"
    init_home(ann, None, PASSPHRASES[0])
    init_home(ben, None, PASSPHRASES[1])
    ben_up = Up(ben, HOSTS[1], PASSPHRASES[1])
    ups.append(ben_up)
    ann_up = Up(ann, HOSTS[0], PASSPHRASES[0], ben_up.address)
    ups.append(ann_up)
    envs = (clean_env(MESH_PASSPHRASE=PASSPHRASES[0]), clean_env(MESH_PASSPHRASE=PASSPHRASES[1]))
    befriend(ann, ben, names=(NAMES[1], NAMES[0]), envs=envs)  # ann saves ben as NAMES[0]
    for home, to, text, secret in ((ann, NAMES[0], TEXTS[0], 0), (ben, NAMES[1], TEXTS[1], 1)):
        sent = mesh(home, "send", to, text, env=clean_env(MESH_PASSPHRASE=PASSPHRASES[secret]))
        assert sent.returncode == 0, sent.stderr
    wait_until(lambda: TEXTS[0] in texts(ben), "ben to receive")
    wait_until(lambda: TEXTS[1] in texts(ann), "ann to receive")
    wait_until(lambda: status_of(ann, TEXTS[0]) == "delivered", "ann's receipt")
    needles = [*TEXTS, *NAMES, *HOSTS, ben_up.address, ann_up.address]
    assert leaks(ann, needles) == [] and leaks(ben, needles) == []  # WAL and all, live
    assert ann_up.stop() == 0 and ben_up.stop() == 0
    for home in (ann, ben):
        assert leaks(home, needles) == []
        assert {p.name for p in home.iterdir()} <= {
            "mesh.db",
            "mesh.db-wal",
            "mesh.db-shm",
            "mesh.key",
            "mesh.lock",
        }
        vault.lock(home)
        locked = mesh(home, "outbox")
        assert locked.returncode == 1 and "locked" in locked.stderr
        assert not any(t in locked.stdout + locked.stderr for t in TEXTS)

    again = Up(ann, HOSTS[0], PASSPHRASES[0], ben_up.address)
    ups.append(again)
    wiped = mesh(ann, "wipe", "--yes")
    assert wiped.returncode == 0, wiped.stderr
    assert again.proc.wait(timeout=RUN_TIMEOUT) == -signal.SIGKILL
    assert ann.is_dir() and list(ann.iterdir()) == []


def test_cli_passphrase_backup_restore(tmp_path: Path) -> None:
    home = tmp_path / "h"
    empty = mesh(home, "init", env=clean_env(MESH_PASSPHRASE=""))
    assert empty.returncode == 1 and "empty" in empty.stderr
    assert not (home / "mesh.key").exists()
    made = mesh(home, "init", "--no-passphrase")
    assert made.returncode == 0, made.stderr
    peer_id = made.stdout.splitlines()[0]
    added = mesh(home, "passphrase", env=clean_env(MESH_NEW_PASSPHRASE="first passphrase"))
    assert added.returncode == 0, added.stderr
    assert "locked" in mesh(home, "id").stderr
    changed = mesh(
        home,
        "passphrase",
        env=clean_env(MESH_PASSPHRASE="first passphrase", MESH_NEW_PASSPHRASE="second one!"),
    )
    assert changed.returncode == 0, changed.stderr
    old = mesh(home, "id", env=clean_env(MESH_PASSPHRASE="first passphrase"))
    assert old.returncode == 1 and "wrong passphrase" in old.stderr
    env = clean_env(MESH_PASSPHRASE="second one!", MESH_BACKUP_PASSPHRASE="backup passphrase")
    assert mesh(home, "id", env=env).stdout.splitlines()[0] == peer_id
    assert mesh(home, "backup", str(tmp_path / "id.bak"), env=env).returncode == 0
    words = mesh(home, "backup", "--words", env=env).stdout.strip()
    assert len(words.split()) == 24
    refused = mesh(home, "restore", str(tmp_path / "id.bak"), env=env)
    assert refused.returncode == 1 and "--force" in refused.stderr

    other = tmp_path / "o"
    restored = mesh(other, "restore", str(tmp_path / "id.bak"), "--no-passphrase", env=env)
    assert restored.returncode == 0, restored.stderr
    assert mesh(other, "id").stdout.splitlines()[0] == peer_id
    by_words = subprocess.run(
        [*MESH, "--home", str(tmp_path / "w"), "restore", "--words", "--no-passphrase"],
        input=words + "\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        env=clean_env(),
        timeout=RUN_TIMEOUT,
    )
    assert by_words.returncode == 0, by_words.stderr
    assert mesh(tmp_path / "w", "id").stdout.splitlines()[0] == peer_id
    assert mesh(home, "wipe").returncode == 1  # no terminal to confirm, no --yes
    assert mesh(home, "wipe", "--yes").returncode == 0
    assert list(home.iterdir()) == []
