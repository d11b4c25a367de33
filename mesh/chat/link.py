"""The chat's line to the node of a home: the running `mesh up`, or one it starts.

Requests each use a fresh connection to the control socket (a slow `send` never holds
up the others); one long-lived connection carries the watch stream.

A daemon the chat finds running is left running when the chat quits. A daemon the chat
starts itself is stopped when the chat quits (unless asked to keep it running): someone
who opened a chat and closed it does not expect a node to stay behind, invisible.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import IO, Any

from mesh.control import ControlClient, Event, connect_or_lock
from mesh.errors import LocalError, MeshError, NodeStoppedError

START_WAIT = 30.0  # how long a started `mesh up` may take to answer on its socket
STOP_WAIT = 10.0  # how long it may take to stop after SIGTERM
POLL = 0.05  # how often a starting daemon is checked for

AskPassphrase = Callable[[], "str | None"]


class DaemonLink:
    """Requests and events to and from the daemon of one home."""

    def __init__(
        self,
        home: Path,
        process: subprocess.Popen[bytes] | None = None,
        errors: IO[bytes] | None = None,
    ) -> None:
        self.home = home
        self.process = process  # set when the chat started the daemon itself
        self._errors = errors
        self._watcher: ControlClient | None = None

    @property
    def started_here(self) -> bool:
        return self.process is not None

    async def request(self, op: str, **args: Any) -> Event:
        client = await ControlClient.connect(self.home)
        if client is None:
            raise NodeStoppedError("your node is not running any more")
        async with client:
            try:
                return await client.request(op, **args)
            except ConnectionError:
                raise NodeStoppedError("your node is not running any more") from None

    async def watch(self) -> AsyncIterator[Event]:
        """The daemon's events from now on (the iterator ends if the daemon stops)."""
        client = await ControlClient.connect(self.home)
        if client is None:
            raise NodeStoppedError("your node is not running any more")
        self._watcher = client
        return await client.watch()

    async def close(self) -> None:
        """Close the watch connection (the daemon keeps running)."""
        if self._watcher is not None:
            await self._watcher.close()
            self._watcher = None

    async def stop_daemon(self) -> int | None:
        """Stop the daemon this link started (SIGTERM, then SIGKILL); its exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
        try:
            code = await asyncio.to_thread(process.wait, STOP_WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            code = await asyncio.to_thread(process.wait, STOP_WAIT)
        self._close_errors()
        return code

    def last_error(self) -> str:
        """The last line the started daemon wrote to stderr (why it failed to start)."""
        if self._errors is None:
            return ""
        self._errors.seek(0)
        lines = self._errors.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1].removeprefix("error: ") if lines else ""

    def adopt_running(self) -> None:
        """The daemon we started gave way to one already running: use that one."""
        self.process = None
        self._close_errors()

    def _close_errors(self) -> None:
        if self._errors is not None:
            self._errors.close()
            self._errors = None


async def find_or_start(
    home: Path,
    up_args: Sequence[str],
    ask_passphrase: AskPassphrase,
    keep_running: bool = False,
) -> DaemonLink:
    """The running daemon of `home`, else a `mesh up UP_ARGS...` started for the chat.

    `ask_passphrase` is called only when a daemon must be started. With `keep_running`
    the started daemon gets its own session, so it outlives the terminal.
    """
    target = await connect_or_lock(home)
    if isinstance(target, ControlClient):
        await target.close()
        return DaemonLink(home)
    target.release()  # the daemon takes the lock itself
    link = _spawn(home, up_args, ask_passphrase(), keep_running)
    try:
        await _wait_started(link)
    except BaseException:
        await link.stop_daemon()
        raise
    return link


def _spawn(
    home: Path, up_args: Sequence[str], passphrase: str | None, keep_running: bool
) -> DaemonLink:
    env = dict(os.environ)
    if passphrase is not None:
        env["MESH_PASSPHRASE"] = passphrase  # only this child sees it
    errors = tempfile.TemporaryFile()  # noqa: SIM115 - kept for the daemon's lifetime
    command = [sys.executable, "-m", "cli.main", "--home", str(home), "up", *up_args]
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=errors,
        env=env,
        start_new_session=keep_running,
    )
    return DaemonLink(home, process, errors)


async def _wait_started(link: DaemonLink) -> None:
    """Until the started daemon answers on its socket; LocalError if it exits or hangs."""
    assert link.process is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_WAIT
    while True:
        client = await ControlClient.connect(link.home)
        if client is not None:
            await client.close()
            return
        if link.process.poll() is not None:
            # Another process may have taken the home in between: use its daemon if any.
            with contextlib.suppress(MeshError):
                await link.request("status")
                link.adopt_running()
                return
            reason = link.last_error() or f"exit code {link.process.returncode}"
            raise LocalError(f"could not start your node: {reason}")
        if loop.time() >= deadline:
            raise LocalError(f"your node did not start within {START_WAIT:.0f} s")
        await asyncio.sleep(POLL)
