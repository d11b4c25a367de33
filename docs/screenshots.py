"""Regenerate the chat screenshots in docs/img/ (SVG, saved by Textual).

Three homes (Amina, Ben, Chloe) with real `mesh up` daemons on 127.0.0.61-63 (no mDNS,
joined with --peer): nothing leaves this machine. Run from the repository root:

    python docs/screenshots.py
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import Input

from mesh.chat import ChatApp, DaemonLink, find_or_start
from mesh.home import init_home, open_home
from mesh.identity import Identity

IMG = Path(__file__).resolve().parent / "img"
SIZE = (100, 34)
WAIT = 30.0


async def wait_for(what: str, check: Callable[[], object]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not check():
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def daemon(home: Path, host: str, *peers: str) -> DaemonLink:
    args = ["--host", host, "--no-mdns"]
    for peer in peers:
        args += ["--peer", peer]
    return await find_or_start(home, args, lambda: None)


async def befriend(
    links: dict[str, DaemonLink],
    homes: dict[str, Path],
    ids: dict[str, str],
    pairs: list[tuple[str, str]],
) -> None:
    """Both add each other, as `mesh contacts add` does (save, then ask the daemon to
    start the key agreement); wait until both ends are ready."""
    for a, b in pairs:
        for me, them in ((a, b), (b, a)):
            with open_home(homes[me]) as store:
                store.add_contact(them, ids[them])
                store.keys.agreement_add(ids[them], time.time())
            await links[me].request("add_contact", peer=ids[them])
        await wait_for("the key agreement", lambda a=a, b=b: agreed(homes, ids, a, b))  # type: ignore[misc]


def agreed(homes: dict[str, Path], ids: dict[str, str], a: str, b: str) -> bool:
    for me, them in ((a, b), (b, a)):
        with open_home(homes[me]) as store:
            agreement = store.keys.agreement(ids[them])
        if agreement is None or not agreement.ready:
            return False
    return True


def delivered(home: Path) -> bool:
    with open_home(home) as store:
        rows = store.list_messages(direction="out")
    return all(r.status == "delivered" for r in rows if r.kind == "text")


async def conversation(links: dict[str, DaemonLink], homes: dict[str, Path]) -> None:
    script = [
        ("Ben", "Amina", "Are you at the square?"),
        ("Amina", "Ben", "Yes, near the fountain. The phones have no internet here."),
        ("Ben", "Amina", "Same. This still works: we are on the same Wi-Fi."),
        ("Amina", "Ben", "Great. Stay close to the library, I am coming."),
        ("Chloe", "Amina", "Main street is blocked, take the river path."),
        ("Chloe", "Amina", "Tell Ben too."),
    ]
    for sender, to, text in script:
        await links[sender].request("send", to=to, text=text, ttl=None)
        await wait_for("delivery", lambda s=sender: delivered(homes[s]))  # type: ignore[misc]
    await links["Amina"].request("send", to="Ben", text="See you in 5 minutes.", ttl=None)


async def shoot(app: ChatApp, pilot: Pilot[None], name: str) -> None:
    await pilot.pause()
    app.save_screenshot(f"{name}.svg", path=str(IMG))
    print(f"saved {IMG / name}.svg")


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="shot") as tmp:
        names = ["Amina", "Ben", "Chloe"]
        homes = {n: Path(tmp) / n.lower() for n in names}
        ids = {n: init_home(homes[n], n, None).id for n in names}
        links = {"Ben": await daemon(homes["Ben"], "127.0.0.61")}
        try:
            ben_address = str((await links["Ben"].request("status"))["address"])
            links["Amina"] = await daemon(homes["Amina"], "127.0.0.62", ben_address)
            links["Chloe"] = await daemon(homes["Chloe"], "127.0.0.63", ben_address)
            await befriend(links, homes, ids, [("Amina", "Ben"), ("Amina", "Chloe")])
            await conversation(links, homes)
            await links.pop("Chloe").stop_daemon()  # Chloe goes offline: mail waits for her
            text = "Are you safe? Ben is with me."
            await links["Amina"].request("send", to="Chloe", text=text, ttl=None)
            await screenshots(homes["Amina"], links["Amina"], ids)
        finally:
            for link in links.values():
                await link.stop_daemon()


async def screenshots(home: Path, link: DaemonLink, ids: dict[str, str]) -> None:
    app = ChatApp(home, link, open_with=ids["Ben"])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for("the chat", lambda: app.ready)
        await shoot(app, pilot, "chat")
        await pilot.press("ctrl+n")
        for key in "Dana":
            await pilot.press(key)
        await pilot.press("enter")
        typo = ids["Chloe"][:20] + ("b" if ids["Chloe"][20] != "b" else "c") + ids["Chloe"][21:]
        for key in typo:
            await pilot.press(key)
        await shoot(app, pilot, "add-contact-typo")
        await pilot.press("escape")
        await pilot.press("ctrl+o")
        await shoot(app, pilot, "my-id")
        await pilot.press("escape")
        await app.open_conversation(ids["Chloe"])
        await shoot(app, pilot, "chat-waiting")
        # Dana is added here, but has not added Amina yet: one-way.
        await pilot.press("ctrl+n")
        for key in "Dana":
            await pilot.press(key)
        await pilot.press("enter")
        app.screen.query_one("#peer-id", Input).value = Identity.generate().id
        await pilot.press("enter")
        await wait_for("Dana's waiting note", lambda: any(e.waiting for e in app.entries))
        await shoot(app, pilot, "contact-waiting")


if __name__ == "__main__":
    asyncio.run(main())
