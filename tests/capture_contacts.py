"""Two contacts on a small mesh, captured with a raw socket on `lo` (issue 14).

Run only inside a network namespace of its own (tests/test_contacts_capture.py starts it
with `unshare -n`). Alice and Bob add each other, exchange messages online, then Bob goes
offline, Alice sends, and Bob comes back two epoch changes later and catches up. Epochs are
shortened (the length is what each owner announces in its bundle); everything else ships.
Prints one JSON object: the captured UDP payloads (hex), the values a watcher must not
find in them, the mailbox keys of Bob's epochs, and what each side received.

    unshare -n python tests/capture_contacts.py [--epoch 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from capture_peer import Capture

from mesh import Node
from mesh.identity import mailbox_key_for
from mesh.node import NodeOptions


async def wait_for(condition, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def scenario(epoch: int, capture: Capture, home: Path) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    loop.add_reader(capture.sock.fileno(), capture.drain)
    options = NodeOptions(epoch_seconds=epoch, poll_interval=1.0)
    peers = [await Node.start(host="127.0.0.1", options=options)]
    for _ in range(9):
        peers.append(
            await Node.start(host="127.0.0.1", bootstrap=[peers[0].address], options=options)
        )
    alice = await Node.start(host="127.0.0.1", bootstrap=[peers[1].address], options=options)
    bob = await Node.start(
        home=home, host="127.0.0.1", bootstrap=[peers[2].address], options=options
    )
    bob_id = bob.id
    await alice.add_contact(bob.id, "bob")
    await bob.add_contact(alice.id, "alice")
    ready = await wait_for(lambda: alice.contact_ready(bob_id) and bob.contact_ready(alice.id), 15)
    bob_keys = {}
    for i in range(3):
        bob_keys[bob.mailboxes.epoch(bob.wall())] = bob.mailboxes.own_key(
            bob.mailboxes.epoch(bob.wall())
        ).hex()
        await alice.send(bob_id, f"online {i}")
        await bob.send(alice.id, f"reply {i}")
        await asyncio.sleep(epoch * 0.6)
    await wait_for(lambda: len(bob.inbox()) >= 3, 10)
    bob_public = (bob.identity.verify_key, bob.identity.public.box_public_key)
    await bob.stop()
    for i in range(3):
        await alice.send(bob_id, f"offline {i}")
        await asyncio.sleep(epoch * 0.7)  # two epoch changes while Bob is away
    bob = await Node.start(
        home=home, host="127.0.0.1", bootstrap=[peers[3].address], options=options
    )
    await wait_for(lambda: len(bob.inbox()) >= 6, 15)
    bob_keys[bob.mailboxes.epoch(bob.wall())] = bob.mailboxes.own_key(
        bob.mailboxes.epoch(bob.wall())
    ).hex()
    received_bob = sorted(m.text for m in bob.inbox())
    received_alice = sorted(m.text for m in alice.inbox())
    await asyncio.sleep(0.2)
    capture.drain()
    loop.remove_reader(capture.sock.fileno())
    forbidden = {
        "verify_keys": [alice.identity.verify_key.hex(), bob_public[0].hex()],
        "x25519_keys": [alice.identity.public.box_public_key.hex(), bob_public[1].hex()],
        "ids": [alice.id.encode().hex(), bob_id.encode().hex()],
        "id_mailbox_keys": [
            mailbox_key_for(alice.identity.verify_key).hex(),
            mailbox_key_for(bob_public[0]).hex(),
        ],
    }
    for node in [*peers, alice, bob]:
        await node.stop()
    return {
        "ready": ready,
        "forbidden": forbidden,
        "bob_mailbox_keys": bob_keys,
        "received_bob": received_bob,
        "received_alice": received_alice,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epoch", type=int, default=4)
    args = parser.parse_args()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    capture = Capture()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(scenario(args.epoch, capture, Path(tmp) / "bob"))
    print(json.dumps({"datagrams": [p.hex() for p in capture.payloads], **result}))


if __name__ == "__main__":
    main()
