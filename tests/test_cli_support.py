"""Helpers for the `mesh` end-to-end tests (no tests here).

Every `mesh` runs as a real subprocess (`python -m cli.main`) with an explicit --home;
daemons listen on 127.0.0.N with --no-mdns and join through --peer, so all traffic stays
on loopback. Processes are stopped by their own handle, never by name.
"""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mesh import vault
from mesh.control import ControlClient
from mesh.home import init_home
from mesh.store import MessageRow

MESH = [sys.executable, "-m", "cli.main"]
REPO = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 30.0  # one `mesh` command, generous for a loaded machine
WAIT_TIMEOUT = 20.0  # a condition that depends on the network


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env.update(extra)
    return env


def mesh(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one `mesh --home HOME ARGS...` to completion."""
    return subprocess.run(
        [*MESH, "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=REPO,
        env=env or clean_env(),
    )


def spawn(home: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*MESH, "--home", str(home), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=clean_env(),
    )


def read_line(proc: subprocess.Popen[str], timeout: float = RUN_TIMEOUT) -> str:
    """The next stdout line of `proc`, waiting at most `timeout` seconds."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError(f"no output from {proc.args} within {timeout} s")
    return proc.stdout.readline().rstrip("\n")


def wait_until(
    predicate: Callable[[], Any],
    what: str,
    timeout: float = WAIT_TIMEOUT,
    explain: Callable[[], object] | None = None,
) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f": {explain()}" if explain is not None else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{detail}")
        time.sleep(0.05)


def make_home(path: Path, name: str) -> str:
    """Create a home in-process (fast); returns its ID."""
    return init_home(path, name, None).id


def add_contact(home: Path, name: str, peer_id: str, ttl: int | None = None) -> None:
    with vault.open_store(home) as store:
        store.add_contact(name, peer_id, ttl)


def new_homes(root: Path, *names: str) -> list[Path]:
    """A home for each of `names` (no contacts yet: see `befriend`)."""
    homes = [root / name for name in names]
    for home, name in zip(homes, names, strict=True):
        make_home(home, name)
    return homes


def own_id(home: Path, env: dict[str, str] | None = None) -> str:
    done = mesh(home, "id", "--json", env=env)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["id"])


def agreed(home: Path, name: str, env: dict[str, str] | None = None) -> bool:
    """Does `mesh contacts list --json` of `home` show the agreement with `name` ready?"""
    done = mesh(home, "contacts", "list", "--json", env=env)
    assert done.returncode == 0, done.stderr
    return any(c["name"] == name and c["agreed"] for c in json.loads(done.stdout)["contacts"])


def befriend(
    a: Path,
    b: Path,
    names: tuple[str, str] | None = None,
    envs: tuple[dict[str, str] | None, dict[str, str] | None] = (None, None),
) -> None:
    """`a` and `b` add each other with `mesh contacts add`, as two people would, while
    their daemons run; then wait until both see the key agreement ready. `names`: how `b`
    saves `a` and how `a` saves `b` (default: the homes' directory names)."""
    name_a, name_b = names or (a.name, b.name)
    env_a, env_b = envs
    for home in (a, b):
        wait_until(lambda h=home: control(h, "status")["peers"] >= 1, f"{home.name}'s daemon")
    id_a, id_b = own_id(a, env_a), own_id(b, env_b)
    first = mesh(a, "contacts", "add", name_b, id_b, env=env_a)
    assert first.returncode == 0, first.stderr
    assert f"waiting for {name_b} to add you too" in first.stderr, first.stderr
    second = mesh(b, "contacts", "add", name_a, id_a, env=env_b)
    assert second.returncode == 0, second.stderr
    assert f"{name_a} has added you too" in second.stdout, (second.stdout, second.stderr)
    wait_until(
        lambda: agreed(a, name_b, env_a) and agreed(b, name_a, env_b),
        f"{a.name} and {b.name} to complete the key agreement",
    )


def messages(home: Path, direction: str) -> list[MessageRow]:
    with vault.open_store(home) as store:
        rows = store.list_messages(direction="in" if direction == "in" else "out")
    return [r for r in rows if r.kind == "text"]


def texts(home: Path, direction: str = "in") -> list[str]:
    return [r.body.decode() for r in messages(home, direction)]


def status_of(home: Path, text: str) -> str | None:
    for row in messages(home, "out"):
        if row.body.decode() == text:
            return row.status
    return None


def control(home: Path, op: str, **args: Any) -> dict[str, Any]:
    """One request to the daemon of `home`, from the test process."""

    async def ask() -> dict[str, Any]:
        client = await ControlClient.connect(home)
        assert client is not None, f"no daemon answers for {home}"
        async with client:
            return await asyncio.wait_for(client.request(op, **args), RUN_TIMEOUT)

    return asyncio.run(ask())


class Daemon:
    """A `mesh up` subprocess on 127.0.0.N (no mDNS)."""

    def __init__(self, home: Path, host: str, *peers: str) -> None:
        self.home = home
        self.host = host
        args = ["up", "--host", host, "--no-mdns"]
        for peer in peers:
            args += ["--peer", peer]
        self.proc = spawn(home, *args)
        first = read_line(self.proc)
        assert first.startswith("listening on "), (first, self.stderr_if_dead())
        self.address = first.removeprefix("listening on ")

    def stderr_if_dead(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()

    def peers(self) -> int:
        return int(control(self.home, "status")["peers"])

    def stop(self) -> int:
        """SIGTERM; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=RUN_TIMEOUT)
        finally:
            self.close_pipes()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=RUN_TIMEOUT)
        self.close_pipes()

    def close_pipes(self) -> None:
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


class Daemons:
    """Every daemon a test started, killed at teardown if still running."""

    def __init__(self) -> None:
        self.started: list[Daemon] = []

    def up(self, home: Path, host: str, *peers: str) -> Daemon:
        daemon = Daemon(home, host, *peers)
        self.started.append(daemon)
        return daemon

    def cleanup(self) -> None:
        for daemon in self.started:
            daemon.kill()


class Watcher:
    """A raw `watch` connection to a daemon's control socket."""

    def __init__(self, home: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(WAIT_TIMEOUT)
        self.sock.connect(str(home / "control.sock"))
        self.reader = self.sock.makefile("rb")
        self.sock.sendall(b'{"id": "w", "op": "watch"}\n')
        answer = json.loads(self.reader.readline())
        assert answer["id"] == "w" and answer["ok"], answer

    def next_event(self, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first pushed event that `wanted` accepts (fails on timeout or EOF)."""
        deadline = time.monotonic() + WAIT_TIMEOUT
        while time.monotonic() < deadline:
            line = self.reader.readline()  # bounded by the socket timeout
            assert line, "the daemon closed the watch connection"
            event = json.loads(line)
            if wanted(event):
                return event
        raise AssertionError("timed out waiting for an event")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()
