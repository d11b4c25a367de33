"""Groups on the network (issue 17): what mesh.groups decides, sent and received.

    groups = GroupService(identity, store, dht, outbox, wall, counters, queue, spawn)
    gid = groups.create("north gate")              # we are its first admin
    await groups.invite(gid, [peer_id, ...])       # contacts only: an add change each
    receipt = await groups.send(gid, "meet at 6")  # one record in the group mailbox
    await groups.remove(gid, member_id)            # a new key for everyone else
    await groups.leave(gid)
    groups.accept(record, "push", key)             # a record of a group mailbox
    await groups.fetch_all("fetch")                # catch up on every group

Where things travel:
- **The group mailbox** (mesh.groups.GroupKey.mailbox_key: blinded per day from the key,
  so only holders of the key compute it) holds one record per message, sealed once under
  the group key, and *control* records: membership changes (each signed by its author)
  and key hand-overs. Every member listens there and fetches it on catch-up; nobody
  deletes from it (the records expire: messages after their ttl, control records after
  MAX_TTL), so a member offline for days still finds what was sent meanwhile.
- **A new key** (create, remove, rekey) is wrapped for each member of the state after
  the change with a key only the admin and that member derive (crypto_kx of their
  identities, as a new contact's introduction mailbox is): the wraps go, in a few
  control records, into the mailbox of the key before, which every remaining member
  holds. A removed member can read that those records exist, not open its neighbours'.
- **An invitation** goes over the contact channel (envelope kind "group", sealed to the
  contact's prekey of the day): the group's name, current key and the whole change log,
  in parts for a large group. Only an admin's invitation naming us is taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

import msgpack

from mesh import crypto, envelope, groups
from mesh.envelope import Message, MessageKind, Record
from mesh.errors import (
    EmptyMessageError,
    GroupError,
    MeshError,
    MessageTooLargeError,
    RefusedError,
    RemoteProtocolError,
)
from mesh.group_base import CONTROL_TTL, GroupBase, GroupInfo, _Group
from mesh.groups import Change, Control, GroupKey, GroupMessage, GroupReceipt
from mesh.identity import PublicIdentity, id_for_key
from mesh.store import MessageStatus
from mesh.store_groups import group_of_peer, group_peer

log = logging.getLogger(__name__)

PENDING_MAX = 256  # records kept per group until the change that admits their author
# Hand-over records kept per group until their change arrives: a hand-over to 1,000
# members is 21 records (MAX_WRAPS each), at most 4 KB each.
WAITING_MAX = 32
PARKED_PARTS = 32  # invitation parts kept per group until the one that adds us
PARKED_GROUPS = 16  # incomplete invitations kept (32 x 16 x 4 KB at most), oldest out
PARKED_PER_SENDER = 2  # of them from one contact: a flood cannot crowd out the others
PARKED_SETTING = "group_parked"  # keyring entry: the incomplete invitations
OLD_KEY_GRACE = 3600.0  # s a superseded key still opens messages of former members
MAX_GROUPS = 256  # groups known (joined or left): an invitation beyond that is refused
# Delivery receipts in groups: each member posts one record per RECEIPT_WINDOW naming
# every message it got in that window (not one per message); authors count them
# ("delivered to 37 of 40"). Off in groups larger than this: there, 250 members' receipt
# records would outnumber the messages in the mailbox every member fetches.
RECEIPTS_UP_TO = 20
RECEIPT_WINDOW = 2.0


class GroupService(GroupBase):
    # -- what the user does -----------------------------------------------------------------

    def create(self, name: str) -> bytes:
        name = _group_name(name)
        group_id = crypto.random_bytes(groups.GROUP_ID_SIZE)
        now = self.wall()
        change = Change.make(
            self.identity, group_id, None, "create", self.identity.verify_key, int(now)
        )
        key = GroupKey.generate(change)
        self.store.groups.add(group_id, name, self.epoch_len, now, change.id)
        self.store.groups.add_changes(group_id, [(change.id, change.to_bytes())])
        self.store.groups.add_key(group_id, change.id, key.secret)
        row = self.store.groups.get(group_id)
        assert row is not None
        self._load(row)
        self._reindex()
        self._spawn(self.subscribe_all())
        return group_id

    def find(self, name_or_id: str) -> bytes:
        """A group by its name (unique among ours) or the hex of its id; GroupError."""
        text = name_or_id.strip()
        matches = [g for g in self._groups.values() if g.row.name == text]
        if not matches:
            matches = (
                [g for g in self._groups.values() if g.group_id.hex().startswith(text.lower())]
                if len(text) >= 8
                else []
            )
        if not matches:
            raise GroupError(f"no group called {text!r} (mesh group list shows yours)")
        active = [g for g in matches if self._active(g)] or matches
        if len(active) > 1:
            raise GroupError(
                f"{len(active)} groups are called {text!r}: use the id from mesh group list"
            )
        return active[0].group_id

    def is_group_name(self, name: str) -> bool:
        return any(g.row.name == name for g in self._groups.values())

    def infos(self) -> list[GroupInfo]:
        me = self.identity.verify_key
        return [
            GroupInfo(
                g.group_id,
                g.row.name,
                g.row.peer,
                len(g.state.members),
                g.state.members.get(me) == "admin",
                self._active(g),
            )
            for g in sorted(
                self._groups.values(), key=lambda g: (g.row.name.lower(), g.row.joined_at)
            )
        ]

    def members(self, group_id: bytes) -> list[tuple[str, str]]:
        """(ID, role) of every member, admins first."""
        state = self._group(group_id).state
        order = sorted(state.members.items(), key=lambda kv: (kv[1] != "admin", id_for_key(kv[0])))
        return [(id_for_key(vk), role) for vk, role in order]

    def _admin_group(self, group_id: bytes) -> _Group:
        group = self._group(group_id)
        if not self._active(group):
            raise GroupError(f"you are no longer in {group.row.name!r}")
        if group.state.members.get(self.identity.verify_key) != "admin":
            raise GroupError(f"only an admin of {group.row.name!r} can do that")
        return group

    def _new_change(self, group: _Group, kind: groups.Kind, target: bytes) -> Change:
        change = Change.make(
            self.identity, group.group_id, group.state.head, kind, target, int(self.wall())
        )
        self._merge(group, [change.to_bytes()])
        if change.id in group.state.void:
            raise GroupError(f"refused: {group.state.void[change.id]}")
        return change

    async def invite(self, group_id: bytes, peer_ids: Iterable[str]) -> int:
        """Add contacts to the group (admins only); returns how many were added. Each
        must be a contact whose key agreement is complete (they added us too)."""
        group = self._admin_group(group_id)
        targets: list[PublicIdentity] = []
        for peer_id in peer_ids:
            public = PublicIdentity.from_id(peer_id)
            agreement = self.store.keys.agreement(public.id)
            if agreement is None or not agreement.ready:
                raise GroupError(
                    f"{public.id} is not a contact yet: add them, and wait until they add you"
                )
            if public.verify_key in group.state.members:
                raise GroupError(f"{public.id} is already in {group.row.name!r}")
            targets.append(public)
        key = self._sending_key(group)
        if key is None:
            raise GroupError("the group's current key has not reached us yet: try again later")
        added = [self._new_change(group, "add", t.verify_key) for t in targets]
        await self._post(group, key, [c.to_bytes() for c in added])
        parts = groups.invite_parts(
            group.group_id,
            group.row.name,
            group.row.epoch_len,
            key,
            self._log_for_invitation(group),
        )
        for public in targets:
            for part in parts:
                await self.outbox.send_to_contact(
                    public.id, MessageKind.GROUP, part.to_bytes(), CONTROL_TTL
                )
        return len(added)

    async def remove(self, group_id: bytes, member_id: str) -> None:
        group = self._admin_group(group_id)
        target = PublicIdentity.from_id(member_id).verify_key
        if target not in group.state.members:
            raise GroupError(f"{member_id} is not in {group.row.name!r}")
        if target == self.identity.verify_key:
            raise GroupError("to leave a group yourself, use leave")
        if group.state.admins == {target}:
            raise GroupError("the last admin cannot be removed")
        change = self._new_change(group, "remove", target)
        await self._hand_over_key(group, change)

    async def leave(self, group_id: bytes) -> None:
        group = self._group(group_id)
        if not self._active(group):
            raise GroupError(f"you already left {group.row.name!r}")
        me = self.identity.verify_key
        if len(group.state.members) > 1:
            if group.state.admins == {me}:
                raise GroupError(
                    "you are its last admin: promote someone first, or remove the others"
                )
            key = self._sending_key(group)
            change = self._new_change(group, "leave", me)
            if key is not None:
                await self._post(group, key, [change.to_bytes()])
        self.store.groups.set_left(group.group_id, self.wall())
        group.row = self.store.groups.get(group.group_id) or group.row
        self._reindex()

    async def promote(self, group_id: bytes, member_id: str) -> None:
        group = self._admin_group(group_id)
        target = PublicIdentity.from_id(member_id).verify_key
        key = self._sending_key(group)
        change = self._new_change(group, "promote", target)
        if key is not None:
            await self._post(group, key, [change.to_bytes()])

    async def send(
        self, group_id: bytes, text: str, ttl: int = envelope.DEFAULT_TTL
    ) -> tuple[bytes, bytes, int]:
        """Seal once, queue durably, store in the group mailbox: (message id, record id,
        replicas). UnreachableError leaves it queued for the outbox."""
        group = self._group(group_id)
        if not self._active(group):
            raise GroupError(f"you are no longer in {group.row.name!r}: nothing was sent")
        body = text.encode("utf-8")
        if not body:
            raise EmptyMessageError("nothing to send: the message is empty")
        if len(body) > groups.MAX_TEXT_BYTES:
            raise MessageTooLargeError(
                f"this message is too long: {len(body)} bytes, the limit is "
                f"{groups.MAX_TEXT_BYTES}; split it into several messages"
            )
        key = self._sending_key(group)
        if key is None:
            raise GroupError("the group's current key has not reached us yet: try again later")
        now = self.wall()
        sent_at = int(now)
        message_id = crypto.random_bytes(groups.MESSAGE_ID_SIZE)
        sealed = groups.seal_message(self.identity, group.group_id, key, message_id, sent_at, text)
        record = Record(envelope.record_id_for(sealed), envelope.expiry_for(sent_at, ttl), sealed)
        item = self.outbox_item(group, key, record, ttl, now)
        self.store.add_group_message(
            message_id,
            "out",
            group.row.peer,
            self.identity.id,
            body,
            sent_at,
            record.expires_at,
            now,
            outbox=item,
        )
        self._seen_add(record.id)
        replicas = await self.outbox.deliver(message_id, item.mailbox_key, record)
        return message_id, record.id, replicas

    # -- keys -------------------------------------------------------------------------

    async def _hand_over_key(self, group: _Group, change: Change) -> None:
        """A key change of ours: draw its secret, wrap it for every member after the
        change, post the change and the wraps in the mailboxes of the keys we held
        before (the newest two: a member added on a branch that had not seen the last
        key change holds only the one before it)."""
        carriers = self._listened_keys(group)
        key = GroupKey.generate(change)
        self._add_key(group, key)
        me = self.identity.verify_key
        wraps = [
            groups.wrap_secret(self._pair(vk), group.group_id, key)
            for vk in groups.recipients_of(group.state)
            if vk != me
        ]
        self._wrapped[key.change_id] = set(group.state.members)
        for carrier in carriers:
            await self._post(group, carrier, [change.to_bytes()], key.change_id, wraps)
        self._spawn(self.subscribe_all())

    def _maybe_rekey(self, group: _Group) -> None:
        """The first admin (by verify key) among us rekeys when someone left (so the
        leaver's key stops opening new messages), and when concurrent changes left the
        current key with the wrong holders: a member its author did not wrap it for (an
        add on another branch), or one who got it and is gone (a removal on another
        branch). Once per key."""
        state = group.state
        if not self._active(group) or group.group_id in self._rekeying:
            return
        if min(state.admins, default=b"") != self.identity.verify_key:
            return
        if not state.rekey_wanted and not self._key_holders_differ(group):
            return
        self._rekeying.add(group.group_id)
        self._rekeyed_for.add(state.key_change)
        self._spawn(self._rekey(group))

    def _key_holders_differ(self, group: _Group) -> bool:
        """Do the holders of the current key differ from the members? The holders: whom
        its author wrapped it for (known exactly for our own key changes, else the
        members of the state its own chain of changes resolves to), and whoever an add
        that follows it invited (the inviter held it)."""
        state = group.state
        current = group.changes.get(state.key_change)
        if current is None or current.depth == 0:
            return False
        if current.id in self._rekeyed_for:
            return False  # one rekey per key: a second difference waits for the next change
        wrapped = self._wrapped.get(current.id)
        if wrapped is None:
            branch: list[Change] = []
            change: Change | None = current
            while change is not None:
                branch.append(change)
                change = group.changes.get(change.parent)
            wrapped = set(groups.resolve(branch, group.row.genesis).members)
        children: dict[bytes, list[Change]] = {}
        for c in group.changes.values():
            children.setdefault(c.parent, []).append(c)
        later: set[bytes] = set()
        todo = [current.id]
        while todo:  # changes that follow the key change: their invitees got its key
            for child in children.get(todo.pop(), []):
                later.add(child.id)
                todo.append(child.id)
        applied = set(state.applied)
        got = wrapped | {
            c.target
            for c in group.changes.values()
            if c.kind == "add" and c.id in later and c.id in applied
        }
        return set(state.members) != got

    async def _rekey(self, group: _Group) -> None:
        try:
            change = self._new_change(group, "rekey", self.identity.verify_key)
            await self._hand_over_key(group, change)
        except MeshError:
            log.info("rekey of a group failed; the next change will try again")
        finally:
            self._rekeying.discard(group.group_id)

    # -- what arrives -----------------------------------------------------------------

    def on_invite(self, message: Message) -> None:
        """A part of an invitation, from a contact (the receiver checked the sender
        signed it). Taken only from an admin of the group, and only if it adds us; parts
        that come before the one that does wait (bounded per sender, kept in the store
        across restarts)."""
        agreement = self.store.keys.agreement(message.sender)
        try:
            if agreement is None or not agreement.ready:
                raise RefusedError("an invitation from someone who is not a contact")
            invite = groups.Invite.from_bytes(message.body)
        except RemoteProtocolError:
            self.counters["group_invites_refused"] += 1
            return
        sender = PublicIdentity.from_id(message.sender).verify_key
        group = self._groups.get(invite.group_id)
        if group is not None:
            self._reinvited(group, invite, sender)
            return
        if len(self._groups) >= MAX_GROUPS:
            self.counters["group_invites_refused"] += 1
            return
        slot = (message.sender, invite.group_id)
        parts = self._parked.setdefault(slot, [])
        mine = [s for s in self._parked if s[0] == message.sender]
        if len(parts) >= PARKED_PARTS or len(mine) > PARKED_PER_SENDER:
            self._parked.pop(slot, None)
            self._save_parked()
            self.counters["group_invites_refused"] += 1
            return
        while len(self._parked) > PARKED_GROUPS:  # the oldest incomplete invitation goes
            self._parked.pop(next(iter(self._parked)))
        parts.append(invite)
        changes: dict[bytes, Change] = {}
        for part in parts:
            for data in part.changes:
                with contextlib.suppress(RemoteProtocolError):
                    change = Change.from_bytes(data)
                    if change.group_id == invite.group_id:
                        changes[change.id] = change
        me = self.identity.verify_key
        try:
            state = groups.resolve(changes.values())
        except RemoteProtocolError:
            state = None  # the part with the create is still on its way
        if state is None or me not in state.members or state.members.get(sender) != "admin":
            self._save_parked()
            return  # the part with our add is still on its way
        del self._parked[slot]
        self._save_parked()
        now = self.wall()
        name = parts[0].name
        self.store.groups.add(invite.group_id, name, invite.epoch_len, now, state.applied[0])
        self.store.groups.add_changes(
            invite.group_id, [(c.id, c.to_bytes()) for c in changes.values()]
        )
        row = self.store.groups.get(invite.group_id)
        assert row is not None
        group = self._load(row)
        for part in parts:
            if part.key.change_id in group.state.keys:
                self._add_key(group, part.key)
        self._spawn(self._joined(group))

    def _reinvited(self, group: _Group, invite: groups.Invite, sender: bytes) -> None:
        """A part for a group we know: only an admin's is taken (a removed member could
        otherwise plant a key of its own choosing for a change it saw), and its key only
        if we are a member after its changes and hold no key for that change yet."""
        if group.state.members.get(sender) != "admin":
            self.counters["group_invites_refused"] += 1
            return
        self._merge(group, invite.changes)
        if group.state.members.get(sender) != "admin":
            return  # its own changes removed it
        rejoined = group.row.left_at is not None and self.identity.verify_key in group.state.members
        if rejoined:
            self.store.groups.add(
                group.group_id, group.row.name, group.row.epoch_len, self.wall(), group.row.genesis
            )
            group.row = self.store.groups.get(group.group_id) or group.row
        held = self._active(group) and invite.key.change_id in group.state.keys
        if held and (self._add_key(group, invite.key) or rejoined):
            self._spawn(self._joined(group))

    def _save_parked(self) -> None:
        """Incomplete invitations survive a restart (in the encrypted store)."""
        packed = msgpack.packb(
            [[s, g, [p.to_bytes() for p in parts]] for (s, g), parts in self._parked.items()]
        )
        self.store.keys.keyring_put(PARKED_SETTING, packed)

    async def _joined(self, group: _Group) -> None:
        await self.subscribe_all()
        await self.fetch_group(group, "fetch")

    def accept(self, record: Record, via: str, key: bytes) -> Message | None:
        """A record found at one of our groups' mailboxes (pushed, or as a replica)."""
        where = self._index.get(key)
        if where is None:
            return None
        group = self._groups.get(where[0])
        gkey = None if group is None else group.keys.get(where[1])
        if group is None or gkey is None:
            return None
        return self._accept(group, gkey, key, record, via)

    def _accept(
        self, group: _Group, gkey: GroupKey, mailbox: bytes, record: Record, via: str
    ) -> Message | None:
        if record.id in self._seen:
            return None
        try:
            opened = groups.open_record(group.state, gkey, record.ciphertext)
        except RefusedError:
            # Its author's add has not reached us yet: try again when changes come.
            self.counters["group_refused"] += 1
            if len(group.pending) < PENDING_MAX:
                group.pending.append((gkey.change_id, record))
            return None
        except (RemoteProtocolError, TypeError, ValueError):
            # Not ours to mark seen: a replica could copy a record of another key's
            # mailbox here, and the real one must still open where it belongs.
            self.counters["group_bad_records"] += 1
            return None
        self._seen_add(record.id)
        if isinstance(opened, GroupMessage) and not self._timely(group, gkey, opened):
            self.counters["group_refused"] += 1
            return None
        if isinstance(opened, Control):
            self._on_control(group, opened)
            return None
        if isinstance(opened, GroupReceipt):
            self._on_receipt(group, opened)
            return None
        return self._on_message(group, opened, record, via)

    def _timely(self, group: _Group, gkey: GroupKey, message: GroupMessage) -> bool:
        """A message under a key that is no longer current is taken from a member of
        the group as it is now, or within OLD_KEY_GRACE of the moment we learned of
        the next key (by our clock: a removed member cannot backdate its way in)."""
        if gkey.change_id == group.state.key_change or message.author in group.state.members:
            return True
        superseded = self._superseded.setdefault(gkey.change_id, self.wall())
        return self.wall() < superseded + OLD_KEY_GRACE

    def _retry_pending(self, group: _Group) -> None:
        waiting, group.waiting = group.waiting, []
        for control in waiting:
            self._on_control(group, control)
        pending, group.pending = group.pending, []
        for change_id, record in pending:
            gkey = group.keys.get(change_id)
            if gkey is not None:
                self._accept(group, gkey, b"", record, "fetch")

    def _on_control(self, group: _Group, control: Control) -> None:
        self._merge(group, control.changes)
        if not control.key_change or control.key_change in group.keys:
            return
        if not self._active(group):
            return
        if control.key_change not in group.changes:
            # A hand-over split over several records (more than MAX_WRAPS members),
            # read before the one with its change (a fetch gives records in the
            # replicas' order): keep it until the change arrives.
            if control.wraps:
                if len(group.waiting) < WAITING_MAX:
                    group.waiting.append(control)
                else:
                    self.counters["group_refused"] += 1
            return
        if control.key_change not in group.state.keys:
            return  # void, or not ours to hold
        poster_role = group.state.members.get(control.poster)
        author = group.changes.get(control.key_change)
        if poster_role != "admin" and (author is None or author.author != control.poster):
            self.counters["group_refused"] += 1  # only an admin hands over keys
            return
        key = groups.unwrap_secret(self._pair(control.poster), control)
        if key is not None:
            self._add_key(group, key)
            self._spawn(self._joined(group))

    def _on_message(
        self, group: _Group, opened: GroupMessage, record: Record, via: str
    ) -> Message | None:
        if opened.author == self.identity.verify_key:
            return None  # our own, already stored when we sent it
        author = id_for_key(opened.author)
        body = opened.text.encode("utf-8")
        if not body:
            self.counters["group_bad_records"] += 1
            return None
        is_new = self.store.add_group_message(
            opened.message_id,
            "in",
            group.row.peer,
            author,
            body,
            float(opened.sent_at),
            float(record.expires_at),
            self.wall(),
        )
        if not is_new:
            return None
        self.counters["group_received"] += 1
        self.counters["received"] = self.counters.get("received", 0) + 1
        counter = f"received_{via}"
        self.counters[counter] = self.counters.get(counter, 0) + 1
        ttl = max(1, int(record.expires_at - opened.sent_at))
        message = Message(
            opened.message_id,
            author,
            self.identity.id,
            float(opened.sent_at),
            ttl,
            MessageKind.TEXT,
            body,
            group.group_id,
        )
        self.queue.put_nowait(message)
        if len(group.state.members) <= RECEIPTS_UP_TO:
            waiting = self._to_receipt.setdefault(group.group_id, [])
            waiting.append(opened.message_id)
            if len(waiting) == 1:
                self._spawn(self._send_receipts(group))
        return message

    # -- receipts ---------------------------------------------------------------------

    async def _send_receipts(self, group: _Group) -> None:
        await asyncio.sleep(RECEIPT_WINDOW)
        ids = self._to_receipt.pop(group.group_id, [])
        key = self._sending_key(group)
        if key is None or not self._active(group):
            return
        for start in range(0, len(ids), groups.MAX_RECEIPT_IDS):
            chunk = ids[start : start + groups.MAX_RECEIPT_IDS]
            sealed = groups.seal_receipt(self.identity, group.group_id, key, chunk)
            await self._store(group, key, sealed, envelope.DEFAULT_TTL)

    def _on_receipt(self, group: _Group, receipt: GroupReceipt) -> None:
        me = self.identity.verify_key
        if receipt.member == me or receipt.member not in group.state.members:
            return  # a removed member's receipts count no more
        member = id_for_key(receipt.member)
        ids = receipt.message_ids
        for message_id in self.store.groups.add_receipts(group.row.peer, member, ids):
            self.counters["group_receipts"] += 1
            delivered = MessageStatus.DELIVERED
            if self.store.set_message_status(message_id, "out", delivered):
                self.outbox.on_status(message_id, delivered, None)

    def delivery(self, message_id: bytes) -> tuple[int, int]:
        """(members that said they have it, members of its group but us) for a group
        message of ours; (0, 0) for any other id."""
        row = self.store.get_message(message_id, "out")
        gid = None if row is None else group_of_peer(row.peer_id)
        group = None if gid is None else self._groups.get(gid)
        if group is None:
            return (0, 0)
        others = len(group.state.members) - (self.identity.verify_key in group.state.members)
        return self.store.groups.delivered_to(message_id), others


def _group_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise GroupError("a group needs a name")
    if len(name) > groups.MAX_NAME_CHARS or any(not ch.isprintable() for ch in name):
        raise GroupError(f"a group name is 1-{groups.MAX_NAME_CHARS} printable characters")
    return name


__all__ = ["GroupInfo", "GroupService", "group_peer"]
