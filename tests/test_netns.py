"""Real multicast between three hosts: network namespaces joined by a bridge.

Needs root and a working `ip netns add` (skipped cleanly otherwise). Topology, all of
it created here and deleted in a `finally`:

    ns <tag>h1 (10.99.0.1, eth0) --veth-- p1 \\
    ns <tag>h2 (10.99.0.2, eth0) --veth-- p2 -- br0   (ns <tag>br)
    ns <tag>h3 (10.99.0.3, eth0) --veth-- p3 /

Each host runs tests/netns_peer.py (one node, mdns=True on its 10.99.0.x interface, no
bootstrap, mailbox polling off so only discovery can heal), driven by JSON lines. The
addresses exist only inside the namespaces, so nothing reaches a real network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.netns

PEER_SCRIPT = Path(__file__).with_name("netns_peer.py")
HOSTS = 3
CUT_SECONDS = 20.0
DEBUG = os.environ.get("MESH_NETNS_DEBUG") == "1"  # peers log to <tmp_path>/<ns>.log
# Seconds: a bound against "never", not a timing goal. Expected within one announce
# interval (3.2-4.8 s), but 8 s failed 2 of 4 runs on a loaded 2-core machine once;
# the delay is printed, and the bench and the simulator measure timing.
HEAL_BOUND = 30.0
IP_TIMEOUT = 10.0


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=IP_TIMEOUT)


def netns_unavailable() -> str | None:
    """Why this test cannot run here, or None."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return "needs root on Linux"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`)"
    probe = f"meshprobe{os.getpid()}"
    try:
        ip("netns", "add", probe)
    except (subprocess.SubprocessError, OSError) as exc:
        return f"`ip netns add` does not work here: {exc}"
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        ip("netns", "del", probe)
    return None


@contextlib.contextmanager
def bridged_hosts(tag: str) -> Iterator[list[str]]:
    """HOSTS namespaces, each with eth0 = 10.99.0.i/24, on a bridge in its own namespace;
    deletes exactly the namespaces it created."""
    created: list[str] = []
    bridge = f"{tag}br"
    try:
        ip("netns", "add", bridge)
        created.append(bridge)
        ip("-n", bridge, "link", "add", "br0", "type", "bridge")
        ip("-n", bridge, "link", "set", "br0", "up")
        hosts = []
        for i in range(1, HOSTS + 1):
            host = f"{tag}h{i}"
            ip("netns", "add", host)
            created.append(host)
            ip("-n", bridge, "link", "add", f"p{i}", "type", "veth", "peer", "eth0", "netns", host)
            ip("-n", bridge, "link", "set", f"p{i}", "master", "br0", "up")
            ip("-n", host, "addr", "add", f"10.99.0.{i}/24", "dev", "eth0")
            ip("-n", host, "link", "set", "eth0", "up")
            ip("-n", host, "link", "set", "lo", "up")
            hosts.append(host)
        yield hosts
    finally:
        for name in reversed(created):
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                ip("netns", "del", name)


class Peer:
    """One netns_peer.py process: commands in, timestamped JSON events out."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.events: list[tuple[float, dict[str, Any]]] = []
        self._arrived = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())
        self.id = ""

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        while line := await self.proc.stdout.readline():
            with contextlib.suppress(ValueError):
                self.events.append((loop.time(), json.loads(line)))
                self._arrived.set()

    def command(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())

    async def expect(
        self, match: Callable[[dict[str, Any]], bool], timeout: float, since: int = 0
    ) -> tuple[float, dict[str, Any]]:
        """The first event at index >= `since` that matches, waiting up to `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for when, event in self.events[since:]:
                if match(event):
                    return when, event
            since = len(self.events)
            remaining = deadline - loop.time()
            if remaining <= 0 or self._reader.done():
                raise AssertionError(f"{self.name}: no matching event; saw {self.events}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def ask(self, command: dict[str, Any], answer: str, wait: float) -> dict[str, Any]:
        """Send a command, return the first `answer` event after it (within `wait` s)."""
        mark = len(self.events)
        self.command(**command)
        _, event = await self.expect(lambda e: e["event"] == answer, wait, mark)
        return event

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.command(cmd="stop")
        with contextlib.suppress(TimeoutError, ProcessLookupError):
            await asyncio.wait_for(self.proc.wait(), 10)
        if self.proc.returncode is None:
            self.proc.kill()  # our own child, by its pid
            await asyncio.wait_for(self.proc.wait(), 10)
        self._reader.cancel()


async def start_peer(namespace: str, address: str, log_dir: Path, *extra: str) -> Peer:
    stderr = (log_dir / f"{namespace}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", namespace, sys.executable, str(PEER_SCRIPT),
        "--host", address, "--lifetime", "120", *(["--debug"] if DEBUG else []), *extra,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
        env={**os.environ, "PYTHONPATH": str(PEER_SCRIPT.parent.parent)},
    )  # fmt: skip
    stderr.close()
    return Peer(proc, namespace)


def is_message(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["event"] == "message" and e["text"] == text


async def test_discovery_delivery_and_healing_across_namespaces(tmp_path: Path) -> None:
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    peers: list[Peer] = []
    with bridged_hosts(f"mt{os.getpid()}") as hosts:
        try:
            for i, ns in enumerate(hosts, start=1):
                peers.append(await start_peer(ns, f"10.99.0.{i}", tmp_path))
            for peer in peers:
                _, ready = await peer.expect(lambda e: e["event"] == "ready", 30)
                peer.id = ready["id"]
            await check_discovery_and_delivery(peers)
            await check_partition_heals(peers, hosts[2])
        finally:
            await asyncio.gather(*(p.close() for p in peers))


async def test_a_private_mesh_over_real_multicast(tmp_path: Path) -> None:
    """The same LAN with a network key: the three hosts find each other by the keyed,
    hourly mDNS names alone and deliver, every datagram sealed."""
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    key = ["--network-key", bytes(range(32)).hex()]
    peers: list[Peer] = []
    with bridged_hosts(f"mk{os.getpid()}") as hosts:
        try:
            for i, ns in enumerate(hosts, start=1):
                peers.append(await start_peer(ns, f"10.99.0.{i}", tmp_path, *key))
            for peer in peers:
                _, ready = await peer.expect(lambda e: e["event"] == "ready", 30)
                peer.id = ready["id"]
            await check_discovery_and_delivery(peers)
            stats = await peers[0].ask({"cmd": "stats"}, "stats", 10)
            assert stats["node"].get("dropped_unauthenticated", 0) == 0  # all sealed alike
        finally:
            await asyncio.gather(*(p.close() for p in peers))


async def check_discovery_and_delivery(peers: list[Peer]) -> None:
    """No bootstrap: every node finds the two others over real multicast, and each
    delivers a message to the next one."""
    for peer in peers:
        wait = {"cmd": "wait_peers", "count": HOSTS - 1, "timeout": 15}
        answer = await peer.ask(wait, "peers", 20)
        assert answer["count"] == HOSTS - 1, f"{peer.name} has {answer['count']} contacts"
        wait = {"cmd": "wait_heard", "count": HOSTS - 1, "timeout": 15}
        answer = await peer.ask(wait, "heard", 20)  # by mDNS itself, not only DHT pings
        assert answer["count"] == HOSTS - 1, f"{peer.name} heard {answer['count']} peers"
    await befriend_all(peers)
    for i, sender in enumerate(peers):
        receiver = peers[(i + 1) % HOSTS]
        send = {"cmd": "send", "to": receiver.id, "text": f"hello {i}"}
        assert (await sender.ask(send, "sent", 20))["replicas"] >= 1
    for i in range(HOSTS):
        await peers[(i + 1) % HOSTS].expect(is_message(f"hello {i}"), 15)


async def befriend_all(peers: list[Peer]) -> None:
    """Every two hosts add each other (the key agreement runs over the LAN) and wait,
    bounded, until both ends are ready."""
    for i, a in enumerate(peers):
        for b in peers[i + 1 :]:
            await a.ask({"cmd": "add", "id": b.id}, "added", 20)
            await b.ask({"cmd": "add", "id": a.id}, "added", 20)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    for a in peers:
        for b in peers:
            while a is not b:
                if (await a.ask({"cmd": "ready", "id": b.id}, "contact", 10))["ready"]:
                    break
                assert loop.time() < deadline, f"{a.name} never got {b.name}'s keys"
                await asyncio.sleep(0.2)


async def check_partition_heals(peers: list[Peer], cut_host: str) -> None:
    """Host 3 loses its link for 20 s (longer than zeroconf's ~14 s of startup queries);
    a message sent to it meanwhile reaches it within seconds of the link returning."""
    sender, target = peers[0], peers[2]
    loop = asyncio.get_running_loop()
    before = await discovery_stats(peers)
    ip("-n", cut_host, "link", "set", "eth0", "down")
    cut_at = loop.time()
    try:
        send = {"cmd": "send", "to": target.id, "text": "while cut off"}
        sent = await sender.ask(send, "sent", 20)
        assert sent["replicas"] >= 1  # stored on the hosts still connected
        await asyncio.sleep(max(0.0, cut_at + CUT_SECONDS - loop.time()))  # the outage
    finally:
        ip("-n", cut_host, "link", "set", "eth0", "up")
    restored_at = loop.time()
    when, _ = await target.expect(is_message("while cut off"), HEAL_BOUND)
    assert when >= restored_at, "delivered while the link was down"
    print(f"\ndelivered {when - restored_at:.2f} s after the link came back")
    # Whoever hears the other side first after the cut treats it as a newcomer (found, or
    # reappeared after a silence): the cut-off host rejoins and fetches, or a replica
    # hands it its records at once.
    after = await discovery_stats(peers)
    healed = [
        a["found"] + a["reappeared"] - b["found"] - b["reappeared"]
        for a, b in zip(after, before, strict=True)
    ]
    print("peers (re)discovered by each host after the cut:", healed)
    assert sum(healed) >= 1


async def discovery_stats(peers: list[Peer]) -> list[dict[str, int]]:
    return [(await p.ask({"cmd": "stats"}, "stats", 10))["discovery"] for p in peers]
