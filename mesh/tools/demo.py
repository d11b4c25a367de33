"""`mesh demo`: four peers in one process, on loopback only, in a few seconds.

ann, ben, cat and dan listen on 127.0.0.1-4 with mDNS restricted to those addresses
(network name "mesh-demo", so a real node is never joined). The transcript shows them
discover each other, a message arriving by push, a message to a peer that is offline
delivered when it comes back (same home, so the same identity), and delivery receipts.
Every wait is bounded; a step that does not happen in time fails the demo (MeshError).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from mesh.dht.server import DhtConfig
from mesh.envelope import Message
from mesh.errors import DemoError
from mesh.home import init_home
from mesh.node import VIAS, Node
from mesh.runner import NetConfig, start_node
from mesh.store import MessageStatus

NAMES = ("ann", "ben", "cat", "dan")
HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")
NETWORK_NAME = "mesh-demo"
# Loopback answers in microseconds: a short timeout keeps an offline peer from stalling
# the demo (the default, for real networks, is 1 s with one retry).
DEMO_DHT = DhtConfig(rpc_timeout=0.3)
STEP_TIMEOUT = 10.0


class Transcript:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.start = time.perf_counter()

    def say(self, text: str) -> None:
        elapsed = time.perf_counter() - self.start
        self.console.print(f"[dim]{elapsed:6.2f} s[/dim]  {text}")


def elapsed_ms(since: float) -> str:
    return f"{(time.perf_counter() - since) * 1000:.0f} ms"


def quoted(text: str) -> str:
    return f'[green]"{escape(text)}"[/green]'


class Demo:
    def __init__(self, root: Path, transcript: Transcript) -> None:
        self.root = root
        self.say = transcript.say
        self.nodes: dict[str, Node] = {}
        self.ids: dict[str, str] = {}
        self.inboxes: dict[str, AsyncIterator[Message]] = {}

    async def run(self) -> None:
        self.say("[bold]mesh demo[/bold]: four peers on 127.0.0.1-4; nothing leaves this machine")
        try:
            since = time.perf_counter()
            await self.start_all()
            await self.discover(since)
            await self.befriend("ann", "ben")
            await self.befriend("cat", "dan")
            await self.online_message()
            await self.offline_message()
        finally:
            await asyncio.gather(*(node.stop() for node in self.nodes.values()))

    # -- peers ------------------------------------------------------------------------

    async def start_peer(self, name: str, port: int = 0) -> Node:
        host = HOSTS[NAMES.index(name)]
        home = self.root / name
        if not home.exists():
            init_home(home, name, None)
        net = NetConfig(host, port, (), True, [host], NETWORK_NAME)
        node = await start_node(home, net, None, DEMO_DHT)
        self.nodes[name] = node
        self.ids[name] = node.id
        self.inboxes[name] = node.messages()
        return node

    async def start_all(self) -> None:
        for name in NAMES:
            node = await self.start_peer(name)
            host, port = node.address
            self.say(f"[cyan]{name}[/cyan] is up on {host}:{port}  id {node.id[:20]}...")

    async def discover(self, since: float) -> None:
        want = len(NAMES) - 1
        counts = await asyncio.gather(
            *(node.wait_peers(want, STEP_TIMEOUT) for node in self.nodes.values())
        )
        if min(counts) < want:
            raise DemoError(f"discovery: the peers found only {min(counts)} of {want} others")
        self.say(
            f"all {len(NAMES)} peers found each other by mDNS on 127.0.0.1-4, "
            f"{elapsed_ms(since)} after the first one started"
        )

    async def befriend(self, first: str, second: str) -> None:
        """Both add each other (as after scanning each other's QR codes): the key
        agreement runs over the mesh; only then can they reach each other's mailbox."""
        since = time.perf_counter()
        a, b = self.nodes[first], self.nodes[second]
        await a.add_contact(b.id, second)
        self.say(
            f"[cyan]{first}[/cyan] adds [cyan]{second}[/cyan]: waiting for {second} to add back"
        )
        await b.add_contact(a.id, first)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STEP_TIMEOUT
        while not (a.contact_ready(b.id) and b.contact_ready(a.id)):
            if loop.time() > deadline:
                raise DemoError(f"{first} and {second} did not complete their key agreement")
            await asyncio.sleep(0.01)
        self.say(
            f"[cyan]{second}[/cyan] adds [cyan]{first}[/cyan]: contacts, keys agreed in "
            f"{elapsed_ms(since)} (their mailboxes now change every day; no one else can find them)"
        )

    # -- messages -----------------------------------------------------------------------

    async def send(self, sender: str, recipient: str, text: str, since: float) -> bytes:
        """The id of a message once it is stored on the recipient's mailbox replicas."""
        receipt = await self.nodes[sender].send(self.ids[recipient], text)
        self.say(
            f"[cyan]{sender}[/cyan] -> [cyan]{recipient}[/cyan] {quoted(text)}: stored on "
            f"{receipt.replicas} replicas in {elapsed_ms(since)}"
        )
        return receipt.message_id

    async def wait_message(self, name: str, message_id: bytes) -> Message:
        inbox = self.inboxes[name]
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                while True:
                    message = await anext(inbox)
                    if message.id == message_id:
                        return message
        except TimeoutError:
            raise DemoError(f"{name} did not receive the message in time") from None

    async def wait_delivered(self, sender: str, message_id: bytes) -> None:
        """The sender's store flips to "delivered" when the recipient's receipt arrives
        (Node offers no receipt event yet, so look at the store between short pauses)."""
        store = self.nodes[sender].store
        since = time.perf_counter()
        deadline = since + STEP_TIMEOUT
        while time.perf_counter() < deadline:
            row = store.get_message(message_id, "out")
            if row is not None and row.status == MessageStatus.DELIVERED:
                self.say(
                    f"receipt: [cyan]{sender}[/cyan] sees its message as "
                    f"[bold]delivered[/bold] ({elapsed_ms(since)} later)"
                )
                return
            await asyncio.sleep(0.01)
        raise DemoError(f"{sender} got no delivery receipt in time")

    def received(self, name: str) -> dict[str, int]:
        """How many messages the peer received so far by each path (push, fetch, poll)."""
        counters = self.nodes[name].counters
        return {via: counters[f"received_{via}"] for via in VIAS}

    def arrived_by(self, name: str, before: dict[str, int]) -> str:
        """The path(s) by which messages reached `name` since `before` was taken."""
        after = self.received(name)
        return " and ".join(via for via in VIAS if after[via] > before[via]) or "unknown"

    async def online_message(self) -> None:
        since = time.perf_counter()
        before = self.received("ben")
        sent = await self.send("ann", "ben", "Hi Ben! This one travels by push.", since)
        message = await self.wait_message("ben", sent)
        self.say(
            f"[cyan]ben[/cyan] received {quoted(message.text)} by "
            f"{self.arrived_by('ben', before)}, {elapsed_ms(since)} after ann sent it"
        )
        await self.wait_delivered("ann", sent)

    async def offline_message(self) -> None:
        dan = self.nodes.pop("dan")
        port = dan.address[1]
        await dan.stop()
        self.say("[cyan]dan[/cyan] goes offline")
        sent = await self.send(
            "cat", "dan", "Dan, read this when you are back.", time.perf_counter()
        )
        self.say("   it waits in dan's mailbox on the other peers")
        since = time.perf_counter()
        await self.start_peer("dan", port)
        self.say(f"[cyan]dan[/cyan] is back on {HOSTS[3]}:{port} with the same identity")
        message = await self.wait_message("dan", sent)
        self.say(
            f"[cyan]dan[/cyan] received {quoted(message.text)} from [cyan]cat[/cyan], "
            f"{elapsed_ms(since)} after restarting"
        )
        await self.wait_delivered("cat", sent)


async def run_demo(console: Console | None = None) -> None:
    """Run the scenario in temporary homes, printing the transcript."""
    console = console or Console(soft_wrap=True, highlight=False)
    transcript = Transcript(console)
    with tempfile.TemporaryDirectory(prefix="mesh-demo-") as root:
        await Demo(Path(root), transcript).run()
    transcript.say(f"[bold]done[/bold] in {time.perf_counter() - transcript.start:.1f} s")
