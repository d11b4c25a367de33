"""Issue 17: catching up after an absence that began before the first complete fetch.

Found by the 300-peer/100-member simulation (benchmarks/results/sim-group-300.json at
25752ca): a member that went offline right after joining, before its join fetch had
completed, had no `fetched_at`; on return it fetched only today's mailboxes, never saw
the hand-over of the key made at the removal the day before, and missed every message
sent after it. A fetch with no complete fetch behind it now starts at the day it joined.
In process, over tests/group_harness.py's fake DHT and outbox."""

from __future__ import annotations

import pytest
from group_harness import Clock, Net, befriend, make_peer, settle, texts

from mesh import groups, keyring

pytestmark = pytest.mark.asyncio
HOUR = 3600.0


async def test_a_member_away_since_joining_gets_the_new_key_and_what_followed() -> None:
    net = Net(Clock(1_800_000_000.0))  # an arbitrary fixed moment
    admin, ann, rem = (make_peer(net) for _ in range(3))
    befriend(net, admin, ann, rem)
    gid = admin.service.create("g")
    await admin.service.invite(gid, [ann.id, rem.id])
    await settle([admin, ann, rem])
    group = ann.service._group(gid)
    assert ann.service._active(group)
    # Ann's join fetch never completed (she left at once): no fetched_at.
    ann.store.groups._sql.execute("UPDATE group_info SET fetched_at = NULL")
    group.row = ann.store.groups.get(gid) or group.row
    assert group.row.fetched_at is None
    net.online.discard(ann.id)
    net.clock.t += 2 * HOUR
    await admin.service.remove(gid, rem.id)  # a new key, handed over under the old one
    await settle([admin, ann, rem])
    old_key = group.state.key_change
    net.clock.t += 25 * HOUR  # the next day: the hand-over sits in yesterday's mailbox
    await admin.service.send(gid, "after the removal")
    await settle([admin, ann, rem])
    assert "after the removal" not in texts(rem, gid)
    net.online.add(ann.id)
    await ann.service.fetch_all()
    await settle([admin, ann, rem])
    assert group.state.key_change != old_key  # she learned of the removal
    assert group.state.key_change in group.keys  # and holds the new key
    assert texts(ann, gid) == {"after the removal"}
    assert group.row.fetched_at == net.clock.t  # and the fetch was complete


async def test_a_hand_over_read_before_the_record_with_its_change_still_gives_the_key() -> None:
    """A removal in a group of more than MAX_WRAPS members posts several control
    records: the first carries the change, the others only wraps. A member that reads
    a later one first (a fetch returns records in the replicas' order) must keep it
    until the change arrives (found by the 300-peer/100-member simulation: two
    members missed every message after the removal)."""
    net = Net(Clock(1_800_000_000.0))
    size = groups.MAX_WRAPS + 4
    admin, *others = (make_peer(net) for _ in range(size))
    befriend(net, admin, *others)
    gid = admin.service.create("big")
    await admin.service.invite(gid, [p.id for p in others])
    everyone = [admin, *others]
    await settle(everyone)
    assert all(p.service._active(p.service._group(gid)) for p in others)
    gone, *stay = others
    for p in stay:
        net.online.discard(p.id)  # away: they will fetch, not get pushes
    old = admin.service._group(gid).state.key_change
    await admin.service.remove(gid, gone.id)
    await settle(everyone)
    new_key = admin.service._group(gid).state.key_change
    assert new_key != old
    ag = admin.service._group(gid)
    length = ag.row.epoch_len
    mailbox = ag.keys[old].mailbox_key(keyring.epoch_of(net.clock.t, length), length)
    box = net.boxes[mailbox]  # the old key's mailbox of today: the adds, then the removal
    opened = [groups.open_record(ag.state, ag.keys[old], r.ciphertext) for r in box.values()]
    handovers = [o for o in opened if isinstance(o, groups.Control) and o.key_change == new_key]
    assert len(handovers) >= 2  # the hand-over took several records
    for p in stay:  # fetch each record alone, the last posted first
        net.online.add(p.id)
        g = p.service._group(gid)
        key = g.keys[old]
        for record in reversed(list(box.values())):
            p.service._accept(g, key, b"", record, "fetch")
        await settle(everyone)
        assert g.state.key_change == new_key
        assert new_key in g.keys, "a member lost its new key"
