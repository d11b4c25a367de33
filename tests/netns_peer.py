"""One mesh node in its own process, driven by JSON lines (used by tests/test_netns.py).

    python tests/netns_peer.py --host 10.99.0.1 [--network mesh] [--lifetime 120] [--poll 3600]
        [--network-key HEX]

Polling the mailbox is off by default (once an hour), so a message that reaches a node
after a partition got there through discovery, not through the 30 s polling fallback.

stdout, one JSON object a line:
    {"event": "ready", "id": ..., "address": [host, port]}
    {"event": "peers", "count": n}                      answer to "peers"/"wait_peers"
    {"event": "heard", "count": n}                      answer to "wait_heard"
    {"event": "sent", "replicas": n} | {"event": "send_failed", "error": ...}
    {"event": "message", "from": ..., "text": ...}      whenever a message arrives
    {"event": "stats", "discovery": {...}, "node": {...}}
stdin, one JSON object a line:
    {"cmd": "peers"} | {"cmd": "wait_peers", "count": n, "timeout": s}
    {"cmd": "wait_heard", "count": n, "timeout": s}     mDNS instances -> "heard"
    {"cmd": "send", "to": ID, "text": ...} | {"cmd": "stats"} | {"cmd": "stop"}

The process stops on "stop", when stdin closes (the test died) or after --lifetime
seconds, whichever comes first, so it can never outlive its test for long.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from typing import Any

from mesh.errors import MeshError
from mesh.node import Node, NodeOptions


def emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def read_commands(queue: asyncio.Queue[dict[str, Any] | None]) -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while True:
        line = await stdin.readline()
        if not line:
            await queue.put(None)
            return
        with contextlib.suppress(ValueError):
            await queue.put(json.loads(line))


async def forward_messages(node: Node) -> None:
    async for message in node.messages():
        emit(event="message", **{"from": message.sender, "text": message.text})


async def handle(node: Node, command: dict[str, Any]) -> bool:
    """Run one command; False means stop."""
    cmd = command.get("cmd")
    if cmd == "stop":
        return False
    if cmd == "peers":
        emit(event="peers", count=node.peer_count())
    elif cmd == "wait_peers":
        count = await node.wait_peers(int(command["count"]), float(command["timeout"]))
        emit(event="peers", count=count)
    elif cmd == "wait_heard" and node.discovery is not None:
        count = await node.discovery.wait_heard(int(command["count"]), float(command["timeout"]))
        emit(event="heard", count=count)
    elif cmd == "send":
        try:
            receipt = await node.send(str(command["to"]), str(command["text"]))
            emit(event="sent", replicas=receipt.replicas)
        except MeshError as exc:
            emit(event="send_failed", error=str(exc))
    elif cmd == "add":  # a real key agreement, over the namespaces' LAN
        ready = await node.add_contact(str(command["id"]))
        emit(event="added", ready=ready)
    elif cmd == "ready":
        emit(event="contact", ready=node.contact_ready(str(command["id"])))
    elif cmd == "stats":
        discovery = node.discovery.statistics() if node.discovery is not None else {}
        emit(event="stats", discovery=discovery, node=node.statistics())
    return True


async def main(args: argparse.Namespace) -> None:
    node = await Node.start(
        host=args.host,
        mdns=True,
        interfaces=[args.host],
        network_name=args.network,
        options=NodeOptions(poll_interval=args.poll),
        network_key=bytes.fromhex(args.network_key) if args.network_key else None,
    )
    emit(event="ready", id=node.id, address=list(node.address))
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    reader = asyncio.ensure_future(read_commands(queue))
    forwarder = asyncio.ensure_future(forward_messages(node))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.lifetime
    try:
        while (remaining := deadline - loop.time()) > 0:
            try:
                command = await asyncio.wait_for(queue.get(), remaining)
            except TimeoutError:
                break
            if command is None or not await handle(node, command):
                break
    finally:
        forwarder.cancel()
        reader.cancel()
        await node.stop()
        emit(event="stopped")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--network", default="mesh")
    parser.add_argument("--lifetime", type=float, default=120.0)
    parser.add_argument("--poll", type=float, default=3600.0)
    parser.add_argument("--network-key", default="", help="hex: a private mesh (a test key)")
    parser.add_argument("--debug", action="store_true", help="mesh debug logs on stderr")
    arguments = parser.parse_args()
    logging.basicConfig(
        level=logging.DEBUG if arguments.debug else logging.WARNING,
        format="%(relativeCreated)8.0f %(name)s %(message)s",
    )
    for noisy in ("zeroconf", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    asyncio.run(main(arguments))
