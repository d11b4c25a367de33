"""Two peers on loopback: one sends, the other receives by push and by fetch.

Run: python examples/two_peers.py   (traffic stays on 127.0.0.1)
"""

from __future__ import annotations

import asyncio
import time

from mesh import Node


async def main() -> None:
    alice = await Node.start(home=None, host="127.0.0.1", port=0, bootstrap=[], mdns=False)
    bob = await Node.start(home=None, host="127.0.0.1", port=0, bootstrap=[alice.address])
    print(f"alice {alice.id[:16]}... listens on {alice.address[0]}:{alice.address[1]}")
    print(f"bob   {bob.id[:16]}... listens on {bob.address[0]}:{bob.address[1]}")
    try:
        # Both add each other first (as after scanning each other's QR codes): the key
        # agreement runs over the mesh, and only contacts can find each other's mailbox.
        await alice.add_contact(bob.id, "bob")
        await bob.add_contact(alice.id, "alice")
        for _ in range(500):
            if alice.contact_ready(bob.id):
                break
            await asyncio.sleep(0.01)
        start = time.perf_counter()
        receipt = await alice.send(bob.id, "hello bob")
        sent_ms = (time.perf_counter() - start) * 1000
        print(f"alice -> bob: stored on {receipt.replicas} replica(s) in {sent_ms:.1f} ms")
        message = await asyncio.wait_for(anext(bob.messages()), timeout=5)
        print(f"bob got {message.text!r} by push from {message.sender[:16]}...")
        await bob.send(alice.id, "hi alice")
        reply = await asyncio.wait_for(anext(alice.messages()), timeout=5)
        print(f"alice got {reply.text!r}")
        for _ in range(100):  # bounded: the receipt travels like any message
            row = alice.store.get_message(receipt.message_id, "out")
            if row is not None and row.status == "delivered":
                break
            await asyncio.sleep(0.02)
        print(f"alice's first message is now: {row.status if row else 'unknown'}")
    finally:
        await bob.stop()
        await alice.stop()


if __name__ == "__main__":
    asyncio.run(main())
