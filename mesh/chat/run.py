"""Running the chat: find or start the daemon of a home, run ChatApp, then stop what
it started (unless asked to keep it running)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from textual.app import AutopilotCallbackType

from mesh.chat.app import ChatApp
from mesh.chat.link import AskPassphrase, find_or_start


@dataclass(frozen=True)
class ChatOptions:
    up_args: Sequence[str] = ()  # for `mesh up`, if the chat has to start it
    peers: Sequence[str] = ()  # HOST:PORT to join through, given to a running daemon too
    open_with: str | None = None  # an ID whose conversation opens first
    keep_running: bool = False  # leave a daemon the chat started running on quit
    node_options: Sequence[str] = ()  # options given that only a started daemon uses


@dataclass(frozen=True)
class ChatOutcome:
    started_here: bool
    stopped: bool
    pid: int | None


async def run_chat(
    home: Path,
    options: ChatOptions,
    ask_passphrase: AskPassphrase,
    auto_pilot: AutopilotCallbackType | None = None,
) -> ChatOutcome:
    """Find or start the daemon of `home`, run the chat until the user quits, then stop
    the daemon if the chat started it (unless `keep_running`). `auto_pilot` (tests) runs
    the app headless under a Textual pilot."""
    link = await find_or_start(home, options.up_args, ask_passphrase, options.keep_running)
    pid = link.process.pid if link.process is not None else None
    stop = link.started_here and not options.keep_running
    try:
        if options.peers and not link.started_here:
            await link.request("inbox", fetch=False, peers=list(options.peers))
        notices = []
        if options.node_options and not link.started_here:
            given = ", ".join(options.node_options)
            notices.append(f"Your node was already running: {given} did not change it.")
        app = ChatApp(home, link, options.open_with, notices)
        await app.run_async(headless=auto_pilot is not None, auto_pilot=auto_pilot)
    finally:
        await link.close()
        if stop:
            await link.stop_daemon()
    return ChatOutcome(link.started_here, stop, pid)
