"""`mesh bench --group N` (issue 17): a group of N members on the bench's network.

The admin is the bench's first sender; the other N-1 members are extra full Nodes (like
the mailbox trials' recipients), each the admin's contact (prepared without the network,
as the mailbox trials' contacts are). The group itself is made over the network: the
admin creates it and invites everyone, and the trials wait until every member joined
and the network is quiet. Then `trials` x PUSH_SAMPLES messages from the admin, one at
a time:

- `group_send_ms`: `await admin.send_group(group, text)`: seal once, SQLite outbox,
  put on the group mailbox's replicas until they acknowledged;
- `group_push_first_ms`, `group_push_all_ms`: from the start of that send until the
  first member's, and the last (N-1th) member's, `messages()` yields it;
- `group_push_complete`: share of messages every member got within the wait;
- `group_send_vs_send`: `group_send_ms` p50 over the same run's one-to-one
  `send_online_ms` p50;
- `group_cpu_per_member_ms`: the process's CPU time from the start of a send until the
  last member has it, over N-1: what each member's arrival costs the one core that
  runs them all (so `group_push_all_ms` is at least about N-1 times it).

Every member is a Node in the bench's one process, so the last member's arrival also
waits for the other N-2 members' Python (open, verify, store, queue) to run first: on
separate devices those run side by side.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mesh.identity import Identity
from mesh.mailboxes import exchange_bundles
from mesh.node import Node
from mesh.tools.bench_kv import fraction, summary
from mesh.tools.bench_net import Arrivals, MeshNet

JOIN_TIMEOUT = 60.0
PUSH_SAMPLES = 5
TEXT = "bench group message"


async def _joined(members: list[Node], group_id: bytes, timeout: float) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        count = sum(
            1 for m in members if any(g.group_id == group_id and g.active for g in m.group_list())
        )
        if count == len(members) or loop.time() > deadline:
            return count
        await asyncio.sleep(0.05)


async def group_trials(net: MeshNet, size: int, trials: int) -> dict[str, Any]:
    admin = net.senders[0]
    members: list[Node] = []
    started = time.perf_counter()
    for _ in range(size - 1):
        node = await net.start_recipient(Identity.from_seed(net.rng.randbytes(32)))
        exchange_bundles(admin.mailboxes, node.mailboxes, time.time())
        members.append(node)
    build_s = time.perf_counter() - started
    group_id = admin.create_group("bench")
    await admin.invite_to_group(group_id, [m.id for m in members])
    joined = await _joined(members, group_id, JOIN_TIMEOUT)
    for member in members:  # listen now, rather than at the first renewal
        await member.groups.subscribe_all()
    await net.wait_quiet(limit=10.0)
    arrivals = [Arrivals(m) for m in members]
    send_ms: list[float] = []
    first_ms: list[float] = []
    all_ms: list[float] = []
    cpu_ms: list[float] = []  # the process's CPU per member, until the last one has it
    complete: list[bool] = []
    replicas: list[int] = []
    for _ in range(trials * PUSH_SAMPLES):
        with net.profiler.phase("group"):
            cpu = time.process_time()
            begun = time.perf_counter()
            receipt = await admin.send_group(group_id, TEXT)
            send_ms.append((time.perf_counter() - begun) * 1000.0)
            replicas.append(receipt.replicas)
            wanted = {receipt.message_id}
            got = [await a.wait_for(wanted) for a in arrivals]
        complete.append(all(got))
        times = [a.times[receipt.message_id] for a in arrivals if receipt.message_id in a.times]
        if times:
            first_ms.append((min(times) - begun) * 1000.0)
        if all(got):
            all_ms.append((max(times) - begun) * 1000.0)
            cpu_ms.append((time.process_time() - cpu) * 1000.0 / len(members))
        await net.wait_quiet()
    for a in arrivals:
        await a.close()
    return {
        "group_members": size,
        "group_joined": joined + 1,
        "group_build_s": round(build_s, 2),
        "group_send_ms": summary(send_ms),
        "group_send_replicas_min": min(replicas, default=None),
        "group_push_first_ms": summary(first_ms),
        "group_push_all_ms": summary(all_ms),
        "group_push_complete": fraction(complete),
        "group_cpu_per_member_ms": summary(cpu_ms),
    }
