"""A group in virtual time (issue 17): M members among N peers, members churning, one
removal, one member offline for a day, messages from random members.

    report = simulate_group(GroupScenario(peers=300, members=100, messages=50))
    report.missing    # (message, member) pairs that should have arrived and did not
    report.leaked     # messages sent after the removal that the removed member has

The peers are the production `Node`s of mesh.sim.scenario on its in-memory network,
with the settings that ship unless the scenario's `settings` names others. Nobody but
the admin has contacts: every member is the admin's contact (prepared without the
network, as in the other simulations); the group itself is made over the network:
the admin creates it and invites everyone, invitations travel the contact channel,
messages and membership the group mailbox.

The expectations: every message reaches every peer that was a member when it was sent
(the sender's state then, less the removed member from the removal on), exactly once
(the store keeps a message id once; `group_received` counts what was handed to the
application); the removed member has none of the messages sent after the removal had
settled (SETTLE seconds: a member who had not yet heard of the new key may still send
under the old one, a window we state in docs/threat-model.md); and the member who was
offline for a day has every message of that day once it is back and has caught up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from dataclasses import dataclass, field

from mesh.errors import MeshError
from mesh.mailboxes import Mailboxes, exchange_bundles
from mesh.node import Node
from mesh.sim.clock import run_virtual
from mesh.sim.plan import Scenario, make_plan
from mesh.sim.scenario import Simulation
from mesh.store_groups import group_peer

SETTLE = 120.0  # seconds after a removal before a message must be closed to the removed
DAY = 24 * 3600.0
JOIN_WAIT = 1800.0  # virtual seconds the invitations get to arrive


@dataclass(frozen=True)
class GroupScenario:
    peers: int = 300
    members: int = 100  # the admin included
    messages: int = 50
    churn: float = 0.2  # share of the members that leave and come back during the run
    seed: int = 17
    settings: str = "production"
    send_window: float = 4 * 3600.0  # messages spread over this much virtual time
    offline_for: float = DAY + 3600.0  # the member away for a day

    def scenario(self) -> Scenario:
        return Scenario(peers=self.peers, duration=1.0, seed=self.seed, settings=self.settings)


@dataclass
class GroupSent:
    seq: int
    sender: int
    at: float
    message_id: bytes = b""
    members: frozenset[int] = frozenset()  # who should get it (the sender excluded)


@dataclass
class GroupReport:
    scenario: GroupScenario
    joined: int = 0
    sent: list[GroupSent] = field(default_factory=list)
    missing: list[tuple[int, int]] = field(default_factory=list)  # (seq, member slot)
    duplicates: int = 0
    leaked: list[int] = field(default_factory=list)  # seqs the removed member has
    removed: int = -1
    removed_at: float | None = None  # loop time of the removal
    away: int = -1
    away_got: int = 0
    away_expected: int = 0
    send_errors: int = 0
    put_replicas: list[int] = field(default_factory=list)
    send_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    virtual_s: float = 0.0

    def removed_at_or_inf(self) -> float:
        return float("inf") if self.removed_at is None else self.removed_at

    def summary(self) -> dict[str, object]:
        deliveries = sum(len(s.members) for s in self.sent if s.message_id)
        pushes = sorted(self.send_ms)
        return {
            "peers": self.scenario.peers,
            "members": self.scenario.members,
            "joined": self.joined,
            "messages": len([s for s in self.sent if s.message_id]),
            "deliveries_expected": deliveries,
            "missing": len(self.missing),
            "duplicates": self.duplicates,
            "leaked_to_removed": len(self.leaked),
            "away_expected": self.away_expected,
            "away_got": self.away_got,
            "send_errors": self.send_errors,
            "replicas_min": min(self.put_replicas, default=0),
            "send_p50_ms": pushes[len(pushes) // 2] if pushes else None,
            "wall_s": round(self.wall_s, 1),
            "virtual_s": round(self.virtual_s),
            "settings": self.scenario.settings,
        }


class GroupSimulation(Simulation):
    def __init__(self, group: GroupScenario) -> None:
        self.group = group
        scenario = group.scenario()
        empty = dataclasses.replace(
            make_plan(scenario, random.Random(group.seed)), events=(), senders=()
        )
        super().__init__(scenario, plan=empty)
        self.report = GroupReport(group)
        self.removed_at: float | None = None

    def _agree_contacts(self) -> None:
        """The admin (slot 0) and every member are contacts; nobody else is."""
        length = self.scenario.node_options.epoch_seconds
        admin = self.peers[0]
        boxes = Mailboxes(admin.identity, admin.store, length, self.rng.randbytes)
        now = self.wall()
        for slot in range(1, self.group.members):
            peer = self.peers[slot]
            exchange_bundles(
                boxes, Mailboxes(peer.identity, peer.store, length, self.rng.randbytes), now
            )

    def _node(self, slot: int) -> Node | None:
        return self.peers[slot].node

    async def run_group(self) -> GroupReport:
        wall_start = time.perf_counter()
        g, report = self.group, self.report
        await self._start_initial()
        self.t0 = self.loop.time()
        admin = self._node(0)
        assert admin is not None
        gid = admin.create_group("simulated")
        ids = [self.peers[s].identity.id for s in range(1, g.members)]
        await admin.invite_to_group(gid, ids)
        members = list(range(g.members))
        deadline = self.loop.time() + JOIN_WAIT
        while self.loop.time() < deadline:
            report.joined = sum(1 for s in members if self._in_group(s, gid))
            if report.joined == g.members:
                break
            await asyncio.sleep(5.0)
        rng = random.Random(g.seed + 17)
        report.away, report.removed = members[1], members[2]
        others = members[3:]
        churners = rng.sample(others, round(g.churn * len(others)))
        start = self.loop.time()
        away_task = self._spawn(self._away(report.away, g.offline_for))
        for slot in churners:
            leave = rng.uniform(60.0, g.send_window * 0.8)
            back = leave + rng.uniform(300.0, 3600.0)
            self._spawn(self._churn(slot, start + leave, start + back))
        times = sorted(rng.uniform(60.0, g.send_window) for _ in range(g.messages))
        removal = g.send_window / 2
        removal_done = False
        sends = []
        for seq, at in enumerate(times):
            if not removal_done and at >= removal:
                removal_done = True
                await self._sleep_to(start + removal)
                await admin.remove_from_group(gid, self.peers[report.removed].identity.id)
                self.removed_at = report.removed_at = self.loop.time()
            await self._sleep_to(start + at)
            candidates = [
                s
                for s in members
                if s != report.away
                and not (removal_done and s == report.removed)
                and self._node(s) is not None
            ]
            sender = rng.choice(candidates)
            record = GroupSent(seq, sender, self.loop.time())
            report.sent.append(record)
            sends.append(self._spawn(self._send_one(gid, record)))
        await asyncio.gather(*sends, return_exceptions=True)
        await away_task
        await asyncio.sleep(600.0)  # churners back, pushes and catch-ups done
        for slot in members:  # a last fetch, as a user opening the app would
            node = self._node(slot)
            if node is not None:
                with contextlib.suppress(MeshError, TimeoutError):
                    await asyncio.wait_for(node.fetch(), 120.0)
        self._check(gid)
        report.virtual_s = self.loop.time() - self.t0
        await self.shutdown()
        report.wall_s = time.perf_counter() - wall_start
        return report

    def _in_group(self, slot: int, gid: bytes) -> bool:
        node = self._node(slot)
        return node is not None and any(i.group_id == gid and i.active for i in node.group_list())

    async def _sleep_to(self, at: float) -> None:
        delay = at - self.loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _away(self, slot: int, duration: float) -> None:
        await self._leave(slot)
        await asyncio.sleep(duration)
        await self._start(slot, self._pick(self._online(), 3))

    async def _churn(self, slot: int, leave_at: float, back_at: float) -> None:
        await self._sleep_to(leave_at)
        await self._leave(slot)
        await self._sleep_to(back_at)
        await self._start(slot, self._pick(self._online(), 3))

    async def _send_one(self, gid: bytes, record: GroupSent) -> None:
        node = self._node(record.sender)
        assert node is not None
        state = node.groups._group(gid).state
        slots = {p.identity.verify_key: p.slot for p in self.peers}
        gone = {self.report.removed} if self.removed_at is not None else set()
        record.members = frozenset(slots[vk] for vk in state.members) - {record.sender} - gone
        begun = self.loop.time()
        try:
            receipt = await asyncio.wait_for(
                node.send_group(gid, f"group message {record.seq}"), 120
            )
        except (MeshError, TimeoutError):
            self.report.send_errors += 1
            return
        record.message_id = receipt.message_id
        self.report.put_replicas.append(receipt.replicas)
        self.report.send_ms.append((self.loop.time() - begun) * 1000)

    def _check(self, gid: bytes) -> None:
        report = self.report
        peer_of_group = group_peer(gid)
        have: dict[int, dict[bytes, int]] = {}
        for peer in self.peers[: self.group.members]:
            rows = peer.store.list_messages(peer_of_group, direction="in")
            counts: dict[bytes, int] = {}
            for row in rows:
                counts[row.msg_id] = counts.get(row.msg_id, 0) + 1
            have[peer.slot] = counts
            report.duplicates += sum(c - 1 for c in counts.values())
        for sent in report.sent:
            if not sent.message_id:
                continue
            for member in sent.members:
                if member not in have or sent.message_id not in have[member]:
                    report.missing.append((sent.seq, member))
            removed_after = self.removed_at is not None and sent.at >= self.removed_at + SETTLE
            if removed_after and sent.message_id in have.get(report.removed, {}):
                report.leaked.append(sent.seq)
            if report.away in sent.members:
                report.away_expected += 1
                report.away_got += sent.message_id in have[report.away]


def simulate_group(group: GroupScenario) -> GroupReport:
    saved = random.getstate()
    random.seed(group.seed)
    try:
        return run_virtual(_main(group))
    finally:
        random.setstate(saved)


async def _main(group: GroupScenario) -> GroupReport:
    return await GroupSimulation(group).run_group()


__all__ = ["GroupReport", "GroupScenario", "simulate_group"]
