"""A group on a small mesh, captured with a raw socket on `lo` (issue 17).

Run only inside a network namespace of its own (tests/test_group_capture.py starts it
with `unshare -n`). An admin creates a group, invites two contacts, everyone sends,
one member is removed and the others go on. Prints one JSON object: the captured UDP
payloads (hex), the values a watcher must not find in them, the group's mailbox keys
(which must be there), and what each member received.

    unshare -n python tests/capture_groups.py
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from capture_peer import Capture

from mesh import Node, keyring
from mesh.identity import mailbox_key_for
from mesh.mailboxes import exchange_bundles
from mesh.store_groups import group_peer

TEXTS = ["meet at the north gate", "bring water and the banner", "after the removal"]


async def wait_for(condition, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def scenario(capture: Capture) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    loop.add_reader(capture.sock.fileno(), capture.drain)
    peers = [await Node.start(host="127.0.0.1")]
    for _ in range(9):
        peers.append(await Node.start(host="127.0.0.1", bootstrap=[peers[0].address]))
    admin, ann, ben = peers[0], peers[1], peers[2]
    for member in (ann, ben):
        exchange_bundles(admin.mailboxes, member.mailboxes, time.time())
    gid = admin.create_group("north gate crew")
    await admin.invite_to_group(gid, [ann.id, ben.id])

    def joined(node: Node) -> bool:
        return any(g.group_id == gid and g.active for g in node.group_list())

    ready = await wait_for(lambda: joined(ann) and joined(ben), 15)
    await admin.send_group(gid, TEXTS[0])
    await ann.send_group(gid, TEXTS[1])
    await wait_for(lambda: len(ben.store.list_messages(group_peer(gid))) >= 2, 10)
    await admin.remove_from_group(gid, ben.id)
    await wait_for(lambda: len(ann.groups._group(gid).keys) >= 2, 10)
    await admin.send_group(gid, TEXTS[2])
    await wait_for(lambda: len(ann.store.list_messages(group_peer(gid))) >= 3, 10)
    await asyncio.sleep(0.5)
    capture.drain()
    loop.remove_reader(capture.sock.fileno())
    group = admin.groups._group(gid)
    now = admin.wall()
    mailboxes = [
        key.mailbox_key(keyring.epoch_of(now, group.row.epoch_len), group.row.epoch_len).hex()
        for key in group.keys.values()
    ]
    members = (admin, ann, ben)
    forbidden = {
        "texts": [t.encode().hex() for t in TEXTS],
        "group_name": [b"north gate crew".hex()],
        "group_id": [gid.hex()],
        "group_secrets": [k.secret.hex() for k in group.keys.values()],
        "message_keys": [k.message_key.hex() for k in group.keys.values()],
        "change_ids": [c.hex() for c in group.changes],
        "verify_keys": [m.identity.verify_key.hex() for m in members],
        "ids": [m.id.encode().hex() for m in members],
        "id_mailbox_keys": [mailbox_key_for(m.identity.verify_key).hex() for m in members],
    }
    received = {
        name: sorted(r.body.decode() for r in node.store.list_messages(group_peer(gid)))
        for name, node in (("ann", ann), ("ben", ben))
    }
    for node in peers:
        await node.stop()
    return {"ready": ready, "forbidden": forbidden, "mailboxes": mailboxes, **received}


def main() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    capture = Capture()
    result = asyncio.run(scenario(capture))
    print(json.dumps({"datagrams": [p.hex() for p in capture.payloads], **result}))


if __name__ == "__main__":
    main()
