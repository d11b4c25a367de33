"""Groups through real nodes on loopback (issue 17): invitations over the contact
channel, one record per message in the group mailbox, pushes to every member, removal
with a new key, leaving, catching up after being offline, and the refusals."""

from __future__ import annotations

import asyncio

import pytest

from mesh import Node
from mesh.errors import GroupError
from mesh.groups import Change
from mesh.store_groups import group_peer
from tests.netutil import bounded, start_network, stop_all, wait_until

pytestmark = pytest.mark.asyncio


async def next_group_message(node: Node, timeout: float = 10.0) -> tuple[bytes | None, str, str]:
    async def first() -> tuple[bytes | None, str, str]:
        async for m in node.messages():
            if m.group is not None:
                return m.group, m.sender, m.text
        raise AssertionError("unreachable")

    return await bounded(first(), timeout)


async def joined(node: Node, group_id: bytes, timeout: float = 10.0) -> bool:
    return await wait_until(
        lambda: any(g.group_id == group_id and g.active for g in node.group_list()), timeout
    )


async def test_a_group_message_is_one_record_and_reaches_every_member() -> None:
    nodes = await start_network(8)
    admin, ann, ben = nodes[0], nodes[1], nodes[2]
    try:
        gid = admin.create_group("north gate")
        assert await admin.invite_to_group(gid, [ann.id, ben.id]) == 2
        assert await joined(ann, gid) and await joined(ben, gid)
        assert {i for i, _role in ann.group_members(gid)} == {admin.id, ann.id, ben.id}
        receipt = await bounded(admin.send_group("north gate", "meet at 6"))
        assert receipt.replicas >= 1
        for member in (ann, ben):
            group, sender, text = await next_group_message(member)
            assert (group, sender, text) == (gid, admin.id, "meet at 6")
        # Aggregated receipts: one record per member per window, counted by the author.
        assert await wait_until(lambda: admin.group_delivery(receipt.message_id) == (2, 2))
        row = admin.store.get_message(receipt.message_id, "out")
        assert row is not None and row.status == "delivered"
        from mesh.control import list_messages

        [doc] = [d for d in list_messages(admin.store, "out", admin.wall()) if d["group"]]
        assert doc["delivered_to"] == 2  # what `mesh outbox --json` shows
        # One record in the group mailbox, nothing in the members' own mailboxes.
        reply = await bounded(ann.send_group(gid, "on my way"))
        assert reply.replicas >= 1
        assert (await next_group_message(ben))[1:] == (ann.id, "on my way")
        assert (await next_group_message(admin))[1:] == (ann.id, "on my way")
        stored = admin.store.list_messages(group_peer(gid))
        assert [(r.direction, r.author) for r in stored] == [("out", admin.id), ("in", ann.id)]
    finally:
        await stop_all(nodes)


async def test_a_removed_member_gets_nothing_sent_after_the_removal() -> None:
    nodes = await start_network(8)
    admin, ann, ben = nodes[0], nodes[1], nodes[2]
    try:
        gid = admin.create_group("crew")
        await admin.invite_to_group(gid, [ann.id, ben.id])
        assert await joined(ann, gid) and await joined(ben, gid)
        await admin.remove_from_group(gid, ben.id)
        assert await wait_until(lambda: len(ann.group_members(gid)) == 2)
        assert await wait_until(lambda: not any(g.active for g in ben.group_list()))
        # ann has the new key: her message reaches the admin, and ben cannot open it.
        assert await wait_until(lambda: len(ann.groups._group(gid).keys) == 2)
        await bounded(admin.send_group(gid, "after the removal"))
        assert (await next_group_message(ann))[2] == "after the removal"
        await ben.fetch()
        assert not ben.store.list_messages(group_peer(gid), direction="in")
        with pytest.raises(GroupError):
            await ben.send_group(gid, "still here?")
    finally:
        await stop_all(nodes)


async def test_refusals_are_clear_and_change_nothing() -> None:
    nodes = await start_network(6, contacts=False)
    admin, stranger = nodes[0], nodes[1]
    try:
        gid = admin.create_group("closed")
        with pytest.raises(GroupError, match="not a contact"):
            await admin.invite_to_group(gid, [stranger.id])
        assert admin.group_members(gid) == [(admin.id, "admin")]
        with pytest.raises(GroupError, match="no group"):
            await admin.send_group("no such group", "x")
        with pytest.raises(GroupError, match="use leave"):
            await admin.remove_from_group(gid, admin.id)
        await admin.leave_group(gid)  # alone in it: leaving is allowed
        with pytest.raises(GroupError, match="no longer in"):
            await admin.send_group(gid, "anyone?")
    finally:
        await stop_all(nodes)


async def test_a_forged_change_is_void_and_counted_and_the_last_admin_stays() -> None:
    nodes = await start_network(6)
    admin, ann, outsider = nodes[0], nodes[1], nodes[2]
    try:
        gid = admin.create_group("crew")
        await admin.invite_to_group(gid, [ann.id])
        assert await joined(ann, gid)
        with pytest.raises(GroupError, match="last admin"):
            await admin.leave_group(gid)
        with pytest.raises(GroupError, match="only an admin"):
            await ann.remove_from_group(gid, admin.id)
        # ann forges an add of her own (she is no admin) and posts it in the mailbox.
        group = ann.groups._group(gid)
        forged = Change.make(
            ann.identity, gid, group.state.head, "add", outsider.identity.verify_key, 0
        )
        key = group.keys[group.state.key_change]
        before = admin.counters["group_changes_refused"]
        await bounded(ann.groups._post(group, key, [forged.to_bytes()]))
        assert await wait_until(lambda: admin.counters["group_changes_refused"] > before)
        assert {i for i, _ in admin.group_members(gid)} == {admin.id, ann.id}
        assert admin.group_members(gid)[0] == (admin.id, "admin")
    finally:
        await stop_all(nodes)


async def test_a_member_offline_for_a_day_catches_up_on_return() -> None:
    nodes = await start_network(8)
    admin, ann = nodes[0], nodes[1]
    home = ann.store
    try:
        gid = admin.create_group("later")
        await admin.invite_to_group(gid, [ann.id])
        assert await joined(ann, gid)
        ann_id = ann.id
        await ann.dht.close()  # offline: the node is gone, its store stays
        await asyncio.sleep(0.1)
        for i in range(3):
            await bounded(admin.send_group(gid, f"while you were away {i}"))
        back = await Node.start(home=home, host="127.0.9.9", bootstrap=[admin.address])
        nodes[1] = back
        assert back.id == ann_id
        texts = {r.body.decode() for r in back.store.list_messages(group_peer(gid), direction="in")}
        await back.fetch()
        texts = {r.body.decode() for r in back.store.list_messages(group_peer(gid), direction="in")}
        assert texts == {f"while you were away {i}" for i in range(3)}
    finally:
        await stop_all(nodes)


async def test_two_admins_removing_each_other_at_once_converge_on_one_outcome() -> None:
    nodes = await start_network(8)
    admin, ann, ben = nodes[0], nodes[1], nodes[2]
    try:
        gid = admin.create_group("race")
        await admin.invite_to_group(gid, [ann.id, ben.id])
        assert await joined(ann, gid) and await joined(ben, gid)
        await admin.promote_in_group(gid, ann.id)
        assert await wait_until(lambda: dict(ann.group_members(gid))[ann.id] == "admin")
        assert await wait_until(lambda: dict(ben.group_members(gid))[ann.id] == "admin")
        # Both remove the other before hearing of the other's removal: same parent.
        a_state, n_state = admin.groups._group(gid).state, ann.groups._group(gid).state
        assert a_state.head.id == n_state.head.id
        await asyncio.gather(
            admin.remove_from_group(gid, ann.id), ann.remove_from_group(gid, admin.id)
        )

        def views() -> list[frozenset[str]]:
            return [frozenset(i for i, _ in n.group_members(gid)) for n in (admin, ann, ben)]

        assert await wait_until(lambda: len(set(views())) == 1, 15.0), views()
        survivors = views()[0]
        assert ben.id in survivors and len(survivors) == 2  # exactly one admin was removed
        winner = min(
            (c for c in ben.groups._group(gid).changes.values() if c.kind == "remove"),
            key=lambda c: c.id,
        )
        removed = admin.id if winner.target == admin.identity.verify_key else ann.id
        assert removed not in survivors  # the removal with the smaller change id won
    finally:
        await stop_all(nodes)


async def test_a_replica_bounds_listeners_in_total(monkeypatch: pytest.MonkeyPatch) -> None:
    from mesh import envelope
    from mesh.dht import replica as replica_module
    from mesh.dht.server import DhtServer
    from mesh.errors import RefusedError
    from mesh.identity import Identity

    monkeypatch.setattr(replica_module, "MAX_LISTENERS", 3)
    server = DhtServer()
    owner = Identity.generate()
    request = envelope.sign_owner_request(
        owner, "listen", envelope.listen_payload(60), server.wall()
    )
    for port in range(3):  # one mailbox, three listeners (a group's members)
        server.replica._listen(request, False, ("127.0.0.1", 5000 + port))
    with pytest.raises(RefusedError, match="too many listeners"):
        server.replica._listen(request, False, ("127.0.0.1", 6000))
    server.replica._listen(request, True, ("127.0.0.1", 5000))  # a renewal still counts once
    assert server.replica.listener_count == 3
    server.replica.expire_listeners(server.wall() + 3600)
    assert server.replica.listener_count == 0 and not server.replica.listeners


async def test_a_contact_flooding_invitations_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from mesh import group_service

    monkeypatch.setattr(group_service, "MAX_GROUPS", 2)
    nodes = await start_network(4)
    admin, ann = nodes[0], nodes[1]
    try:
        gids = [admin.create_group(f"spam {i}") for i in range(4)]
        for gid in gids:
            await admin.invite_to_group(gid, [ann.id])
        assert await wait_until(lambda: ann.counters["group_invites_refused"] >= 2)
        await asyncio.sleep(0.3)
        assert len([g for g in ann.group_list() if g.active]) == 2
    finally:
        await stop_all(nodes)
