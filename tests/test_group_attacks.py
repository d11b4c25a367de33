"""Issue 17, attacks on groups (from an attack review of the first version; each of
these passed against it): a member's forged create, a planted key, an orphaning void
change, concurrent removals and adds, records hidden by copies, a removed member
posting under its old key, a malformed change, a queued record sent days later.
In process, over tests/group_harness.py's fake DHT and outbox."""

from __future__ import annotations

import msgpack
import pytest
from group_harness import Clock, Net, befriend, make_peer, settle, texts

from mesh import crypto, groups, keyring
from mesh.envelope import Message, MessageKind
from mesh.errors import MalformedError, UnreachableError
from mesh.groups import Change, GroupKey, Invite
from mesh.outbox import Outbox

pytestmark = pytest.mark.asyncio
DAY = 86400


def grind_create(signer: crypto.KeyPair, gid: bytes, genesis_id: bytes) -> Change:
    at = 0
    while True:
        change = Change.make(signer, gid, None, "create", signer.verify_key, at)
        if change.id < genesis_id:
            return change
        at += 1


async def three(net: Net) -> tuple:  # type: ignore[type-arg]
    admin, ben, hostile = (make_peer(net) for _ in range(3))
    befriend(net, admin, ben, hostile)
    gid = admin.service.create("g")
    await admin.service.invite(gid, [ben.id, hostile.id])
    await settle([admin, ben, hostile])
    return admin, ben, hostile, gid


async def test_a_members_second_create_takes_nothing_over() -> None:
    net = Net(Clock())
    admin, ben, hostile, gid = await three(net)
    hg = hostile.service._group(gid)
    fake = grind_create(hostile.identity, gid, hg.state.applied[0])  # a smaller id
    add_admin = Change.make(hostile.identity, gid, fake, "add", admin.vk, 0)
    key = hg.keys[hg.state.key_change]
    await hostile.service._post(hg, key, [fake.to_bytes(), add_admin.to_bytes()])
    await settle([admin, ben, hostile])
    for peer in (admin, ben):
        state = peer.service._group(gid).state
        assert state.admins == {admin.vk} and hostile.vk in state.members
        assert peer.service._active(peer.service._group(gid))
    await admin.service.remove(gid, hostile.id)  # and the admin still rules


async def test_a_removed_member_cannot_plant_a_key_by_invitation() -> None:
    net = Net(Clock())
    admin, ben, rem, gid = await three(net)
    net.online.discard(ben.id)
    await admin.service.remove(gid, rem.id)
    await settle([admin, ben, rem])
    rg = rem.service._group(gid)
    removal = next(c for c in rg.changes.values() if c.kind == "remove")
    evil = GroupKey(removal.id, crypto.random_bytes(32))
    part = Invite(gid, "g", rg.row.epoch_len, evil, (removal.to_bytes(),))
    net.online.add(ben.id)
    refused = ben.service.counters["group_invites_refused"]
    body = part.to_bytes()
    message = Message(
        crypto.random_bytes(16), rem.id, ben.id, net.clock(), 60, MessageKind.GROUP, body
    )
    ben.service.on_invite(message)
    assert ben.service.counters["group_invites_refused"] == refused + 1
    await ben.service.fetch_all()
    await settle([admin, ben, rem])
    bg = ben.service._group(gid)
    assert bg.keys[removal.id].secret == admin.service._group(gid).keys[removal.id].secret
    await ben.service.send(gid, "after the removal")
    await settle([admin, ben, rem])
    assert "after the removal" in texts(admin, gid)
    assert "after the removal" not in texts(rem, gid)


async def test_a_void_change_never_becomes_the_parent_of_a_removal() -> None:
    net = Net(Clock())
    admin, ben, hostile, gid = await three(net)
    hg = hostile.service._group(gid)
    junk = Change.make(hostile.identity, gid, hg.state.head, "promote", hostile.vk, 0)
    await hostile.service._post(hg, hg.keys[hg.state.key_change], [junk.to_bytes()])
    await settle([admin, ben, hostile])
    assert admin.service._group(gid).state.head.id != junk.id
    await admin.service.remove(gid, hostile.id)
    await settle([admin, ben, hostile])
    await ben.service.fetch_all()
    ag, bg = admin.service._group(gid), ben.service._group(gid)
    assert hostile.vk not in bg.state.members and bg.state.key_change == ag.state.key_change
    assert ag.state.key_change in bg.keys


async def test_concurrent_removals_leave_no_removed_member_with_the_current_key() -> None:
    net = Net(Clock())
    a, b, x, y = (make_peer(net) for _ in range(4))
    befriend(net, a, b, x, y)
    gid = a.service.create("g")
    await a.service.invite(gid, [b.id, x.id, y.id])
    await settle([a, b, x, y])
    await a.service.promote(gid, b.id)
    await settle([a, b, x, y])
    net.push = False
    await a.service.remove(gid, x.id)
    await b.service.remove(gid, y.id)  # on the same parent: neither saw the other's
    net.push = True
    for _ in range(3):
        for p in (a, b):
            await p.service.fetch_all()
        await settle([a, b, x, y])
    sa, sb = a.service._group(gid).state, b.service._group(gid).state
    assert set(sa.members) == set(sb.members) == {a.vk, b.vk}
    assert sa.key_change == sb.key_change
    for removed in (x, y):
        assert sa.key_change not in removed.service._group(gid).keys


async def test_a_member_added_beside_a_removal_gets_the_current_key() -> None:
    net = Net(Clock())
    a, b, x, y = (make_peer(net) for _ in range(4))
    befriend(net, a, b, x, y)
    gid = a.service.create("g")
    await a.service.invite(gid, [b.id, y.id])
    await settle([a, b, x, y])
    await a.service.promote(gid, b.id)
    await settle([a, b, x, y])
    net.push = False
    net.online.discard(x.id)
    await a.service.invite(gid, [x.id])
    await b.service.remove(gid, y.id)
    net.push = True
    net.online.add(x.id)
    for peer_id, body in a.service.outbox.sent_contact:
        if peer_id == x.id:
            msg = Message(b"\x00" * 16, a.id, x.id, net.clock(), 60, MessageKind.GROUP, body)
            x.service.on_invite(msg)
    for _ in range(3):
        for p in (a, b, x):
            await p.service.fetch_all()
        await settle([a, b, x, y])
    sa, sx = a.service._group(gid).state, x.service._group(gid).state
    assert sx.key_change == sa.key_change and sa.key_change in x.service._group(gid).keys
    await a.service.send(gid, "to everyone")
    await settle([a, b, x, y])
    await x.service.fetch_all()
    assert "to everyone" in texts(x, gid)
    await x.service.send(gid, "x speaking")


async def test_a_copied_record_does_not_hide_the_genuine_one() -> None:
    net = Net(Clock(1_800_000_000 + 12 * 3600))
    a, b, c = (make_peer(net) for _ in range(3))
    befriend(net, a, b, c)
    gid = a.service.create("g")
    await a.service.invite(gid, [b.id, c.id])
    await settle([a, b, c])
    await a.service.remove(gid, c.id)
    await settle([a, b])
    net.online.discard(b.id)
    await a.service.send(gid, "under K1")
    bg = b.service._group(gid)
    k0, k1 = b.service._listened_keys(bg)
    epoch = keyring.epoch_of(net.clock(), bg.row.epoch_len)
    box0 = net.boxes.setdefault(k0.mailbox_key(epoch, bg.row.epoch_len), {})
    for rid, rec in list(net.boxes[k1.mailbox_key(epoch, bg.row.epoch_len)].items()):
        box0[rid] = rec  # a hostile replica's copy into the other key's mailbox
    net.online.add(b.id)
    await b.service.fetch_all()
    await settle([a, b])
    assert "under K1" in texts(b, gid)


async def test_a_removed_member_cannot_post_under_its_old_key_later() -> None:
    net = Net(Clock(1_800_000_000 + 12 * 3600))
    a, b, c = (make_peer(net) for _ in range(3))
    befriend(net, a, b, c)
    gid = a.service.create("g")
    await a.service.invite(gid, [b.id, c.id])
    await settle([a, b, c])
    await a.service.remove(gid, c.id)
    await settle([a, b, c])
    net.clock.t += 2 * 3600  # past the grace of the old key
    cg = c.service._group(gid)
    old = next(iter(cg.keys.values()))  # all c holds: the key before its removal
    sealed = groups.seal_message(c.identity, gid, old, bytes(16), int(net.clock.t), "send money")
    from mesh.envelope import Record, expiry_for, record_id_for

    record = Record(record_id_for(sealed), expiry_for(net.clock.t, 3600), sealed)
    mailbox = old.mailbox_key(keyring.epoch_of(net.clock.t, cg.row.epoch_len), cg.row.epoch_len)
    net.boxes.setdefault(mailbox, {})[record.id] = record
    for p in (a, b):
        await p.service.fetch_all()
    assert "send money" not in texts(a, gid) | texts(b, gid)


async def test_a_malformed_change_is_refused_not_raised() -> None:
    body = msgpack.packb([1, b"\x00" * 16, b"", 0, b"\x01" * 32, [], b"\x01" * 32, 0])
    with pytest.raises(MalformedError):
        Change.from_bytes(msgpack.packb([body, b"\x00" * 64]))
    net = Net(Clock())
    admin, _ben, hostile, gid = await three(net)
    hg = hostile.service._group(gid)
    bad_body = msgpack.packb([1, gid, b"", 0, b"\x01" * 32, [], b"\x01" * 32, 0])
    poison = msgpack.packb([bad_body, b"\x00" * 64])
    hostile.service._with_ancestors = lambda _group, changes: changes  # type: ignore[method-assign]
    await hostile.service._post(hg, hg.keys[hg.state.key_change], [poison])
    await admin.service.fetch_all()  # no TypeError
    assert admin.service.counters["group_changes_refused"] >= 1


async def test_a_group_record_queued_for_days_goes_to_the_mailbox_of_the_day() -> None:
    net = Net(Clock(1_800_000_000 + 12 * 3600))
    a, b = make_peer(net), make_peer(net)
    befriend(net, a, b)
    gid = a.service.create("g")
    await a.service.invite(gid, [b.id])
    await settle([a, b])
    net.reachable = False
    with pytest.raises(UnreachableError):
        await b.service.send(gid, "queued while offline")
    net.reachable = True
    net.clock.t += 2 * DAY
    await a.service.fetch_all()  # a caught up meanwhile: yesterday's mailboxes are read
    net.online.discard(a.id)
    outbox = Outbox(b.mailboxes, b.store, b.service.dht, net.clock, 0.2, {}, lambda *_: None)  # type: ignore[arg-type]
    outbox.readdress = b.service.readdress
    assert await outbox.flush() == 1
    net.online.add(a.id)
    await a.service.fetch_all()
    assert "queued while offline" in texts(a, gid)
