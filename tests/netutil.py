"""Helpers to build small networks of real nodes on loopback."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from mesh import Node
from mesh.dht.server import DhtConfig
from mesh.identity import Identity
from mesh.keyring import Signer
from mesh.mailboxes import Mailboxes, exchange_bundles
from mesh.node import NodeOptions
from mesh.store import Store

T = TypeVar("T")


def loopback_host(i: int) -> str:
    """A distinct loopback address per peer (the DHT caps contacts per IP, as on a LAN)."""
    return f"127.0.{10 + i // 250}.{1 + i % 250}"


async def start_network(
    n: int,
    seed: int = 1,
    config: DhtConfig | None = None,
    options: NodeOptions | None = None,
    contacts: bool = True,
) -> list[Node]:
    """`n` nodes on loopback; with `contacts`, every two of them are contacts whose key
    agreement is complete (prepared without the network, as if done before the test:
    tests/test_contacts.py exercises the agreement itself)."""
    rng = random.Random(seed)
    nodes: list[Node] = []
    for i in range(n):
        boot = [rng.choice(nodes).address] if nodes else []
        nodes.append(
            await Node.start(host=loopback_host(i), bootstrap=boot, config=config, options=options)
        )
    if contacts:
        prepare_contacts(nodes)
    return nodes


def prepare_contacts(nodes: list[Node], others: list[Node] | None = None) -> None:
    """Complete agreements between every two of `nodes` (or each of `nodes` with each of
    `others`) without the network (mesh.mailboxes.exchange_bundles)."""
    now = time.time()
    pairs = (
        [(a, b) for i, a in enumerate(nodes) for b in nodes[i + 1 :]]
        if others is None
        else [(a, b) for a in nodes for b in others if a is not b]
    )
    for a, b in pairs:
        exchange_bundles(a.mailboxes, b.mailboxes, now)


async def stop_all(nodes: list[Node]) -> None:
    await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)


def offline_identity(contacts: Iterable[Node] = ()) -> tuple[Identity, Store]:
    """An identity that exists (someone can write to it) but has no running node yet;
    its agreement with each of `contacts` is complete (prepared, see prepare_contacts)."""
    identity = Identity.generate()
    store = Store(None)
    store.set_identity_blob(identity.to_bytes())
    boxes = Mailboxes(identity, store)
    for node in contacts:
        exchange_bundles(boxes, node.mailboxes, time.time())
    return identity, store


async def wait_until(
    condition: Callable[[], bool], timeout: float = 10.0, step: float = 0.01
) -> bool:
    """Bounded poll for a condition that has no event to wait on."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(step)
    return True


async def bounded(aw: Awaitable[T], timeout: float = 30.0) -> T:
    return await asyncio.wait_for(aw, timeout)


async def befriend(a: Node, b: Node, timeout: float = 10.0) -> None:
    """Make `a` and `b` contacts of each other (both add, as two people who scanned each
    other's codes) and wait until both ends of the key agreement are ready."""
    await bounded(a.add_contact(b.id), timeout)
    await bounded(b.add_contact(a.id), timeout)
    ok = await wait_until(lambda: a.contact_ready(b.id) and b.contact_ready(a.id), timeout)
    assert ok, "the key agreement did not complete"


async def befriend_all(pairs: list[tuple[Node, Node]], timeout: float = 10.0) -> None:
    for a, b in pairs:
        await befriend(a, b, timeout)


def mailbox_of(identity: Identity, store: Store) -> tuple[bytes, Signer]:
    """An offline identity's mailbox key of today and the signer of its owner requests."""
    boxes = Mailboxes(identity, store)
    signer = boxes.own_signer(boxes.epoch(time.time()))
    return signer.mailbox_key, signer
