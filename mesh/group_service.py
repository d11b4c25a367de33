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

from mesh import crypto, envelope, groups, keyring
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
PARKED_PARTS = 32  # invitation parts kept per group until the one that adds us
PARKED_GROUPS = 16  # groups whose invitation is incomplete (32 x 16 x 4 KB at most)
MAX_GROUPS = 256  # groups we are in: an invitation beyond that is refused and counted
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
        self.store.groups.add(group_id, name, self.epoch_len, now)
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
        key = self._current_key(group)
        if key is None:
            raise GroupError("the group's current key has not reached us yet: try again later")
        added = [self._new_change(group, "add", t.verify_key) for t in targets]
        await self._post(group, key, [c.to_bytes() for c in added])
        parts = groups.invite_parts(
            group.group_id, group.row.name, group.row.epoch_len, key, group.changes.values()
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
        before = self._current_key(group)
        change = self._new_change(group, "remove", target)
        await self._hand_over_key(group, change, before)

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
            key = self._current_key(group)
            change = self._new_change(group, "leave", me)
            if key is not None:
                await self._post(group, key, [change.to_bytes()])
        self.store.groups.set_left(group.group_id, self.wall())
        group.row = self.store.groups.get(group.group_id) or group.row
        self._reindex()

    async def promote(self, group_id: bytes, member_id: str) -> None:
        group = self._admin_group(group_id)
        target = PublicIdentity.from_id(member_id).verify_key
        key = self._current_key(group)
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
        key = self._current_key(group)
        if key is None:
            raise GroupError("the group's current key has not reached us yet: try again later")
        now = self.wall()
        sent_at = int(now)
        message_id = crypto.random_bytes(groups.MESSAGE_ID_SIZE)
        sealed = groups.seal_message(self.identity, group.group_id, key, message_id, sent_at, text)
        record = Record(envelope.record_id_for(sealed), envelope.expiry_for(sent_at, ttl), sealed)
        mailbox = key.mailbox_key(keyring.epoch_of(now, group.row.epoch_len), group.row.epoch_len)
        self.store.add_group_message(
            message_id,
            "out",
            group.row.peer,
            self.identity.id,
            body,
            sent_at,
            record.expires_at,
            now,
            outbox=(mailbox, record.pack()),
        )
        self._seen_add(record.id)
        replicas = await self.outbox.deliver(message_id, mailbox, record)
        return message_id, record.id, replicas

    # -- keys -------------------------------------------------------------------------

    async def _hand_over_key(self, group: _Group, change: Change, before: GroupKey | None) -> None:
        """A key change of ours: draw its secret, wrap it for every member after the
        change, post the change and the wraps in the mailbox of the key before."""
        key = GroupKey.generate(change)
        self._add_key(group, key)
        me = self.identity.verify_key
        wraps = [
            groups.wrap_secret(self._pair(vk), group.group_id, key)
            for vk in groups.recipients_of(group.state)
            if vk != me
        ]
        carrier = before or key
        await self._post(group, carrier, [change.to_bytes()], key.change_id, wraps)
        self._spawn(self.subscribe_all())

    def _maybe_rekey(self, group: _Group) -> None:
        """Someone left: the first admin (by ID) among us rekeys, so the leaver's key
        stops opening new messages."""
        state = group.state
        if not state.rekey_wanted or not self._active(group):
            return
        if min(state.admins, default=b"") != self.identity.verify_key:
            return
        if group.group_id in self._rekeying:
            return
        self._rekeying.add(group.group_id)
        self._spawn(self._rekey(group))

    async def _rekey(self, group: _Group) -> None:
        try:
            before = self._current_key(group)
            change = self._new_change(group, "rekey", self.identity.verify_key)
            await self._hand_over_key(group, change, before)
        except MeshError:
            log.info("rekey of a group failed; the next change will try again")
        finally:
            self._rekeying.discard(group.group_id)

    # -- what arrives -----------------------------------------------------------------

    def on_invite(self, message: Message) -> None:
        """A part of an invitation, from a contact (the receiver checked the sender
        signed it). Taken only from an admin of the group, and only if it adds us; parts
        that come before the one that does wait (bounded)."""
        agreement = self.store.keys.agreement(message.sender)
        try:
            if agreement is None or not agreement.ready:
                raise RefusedError("an invitation from someone who is not a contact")
            invite = groups.Invite.from_bytes(message.body)
        except RemoteProtocolError:
            self.counters["group_invites_refused"] += 1
            return
        group = self._groups.get(invite.group_id)
        if group is not None:
            self._merge(group, invite.changes)
            if self._active(group) and invite.key.change_id in group.state.keys:
                self._add_key(group, invite.key)
            return
        if sum(1 for g in self._groups.values() if self._active(g)) >= MAX_GROUPS:
            self.counters["group_invites_refused"] += 1
            return
        parts = self._parked.setdefault(invite.group_id, [])
        if len(parts) >= PARKED_PARTS or len(self._parked) > PARKED_GROUPS:
            self._parked.pop(invite.group_id, None)
            self.counters["group_invites_refused"] += 1
            return
        parts.append(invite)
        changes: dict[bytes, Change] = {}
        for part in parts:
            for data in part.changes:
                with contextlib.suppress(RemoteProtocolError):
                    change = Change.from_bytes(data)
                    if change.group_id == invite.group_id:
                        changes[change.id] = change
        try:
            state = groups.resolve(changes.values())
        except RemoteProtocolError:
            return  # the part with the create is still on its way
        sender = PublicIdentity.from_id(message.sender).verify_key
        me = self.identity.verify_key
        if me not in state.members or state.members.get(sender) != "admin":
            return  # the part with our add is still on its way
        del self._parked[invite.group_id]
        now = self.wall()
        self.store.groups.add(invite.group_id, parts[0].name, invite.epoch_len, now)
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
        if not self._seen_add(record.id):
            return None
        try:
            opened = groups.open_record(group.state, gkey, record.ciphertext)
        except RefusedError:
            # Its author's add has not reached us yet: try again when changes come.
            self.counters["group_refused"] += 1
            if len(group.pending) < PENDING_MAX:
                group.pending.append((gkey.change_id, record))
            self._seen.pop(record.id, None)
            return None
        except RemoteProtocolError:
            self.counters["group_bad_records"] += 1
            self.dht.client.unrepairable.put(record.id, None)
            return None
        if isinstance(opened, Control):
            self._on_control(group, opened)
            return None
        if isinstance(opened, GroupReceipt):
            self._on_receipt(opened)
            return None
        return self._on_message(group, opened, record, via)

    def _retry_pending(self, group: _Group) -> None:
        pending, group.pending = group.pending, []
        for change_id, record in pending:
            gkey = group.keys.get(change_id)
            if gkey is not None:
                self._accept(group, gkey, b"", record, "fetch")

    def _on_control(self, group: _Group, control: Control) -> None:
        self._merge(group, control.changes)
        if not control.key_change or control.key_change in group.keys:
            return
        if not self._active(group) or control.key_change not in group.state.keys:
            return
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
        key = self._current_key(group)
        if key is None or not self._active(group):
            return
        now = self.wall()
        length = group.row.epoch_len
        mailbox = key.mailbox_key(keyring.epoch_of(now, length), length)
        for start in range(0, len(ids), groups.MAX_RECEIPT_IDS):
            chunk = ids[start : start + groups.MAX_RECEIPT_IDS]
            sealed = groups.seal_receipt(self.identity, group.group_id, key, chunk)
            await self._store(mailbox, sealed, envelope.DEFAULT_TTL)

    def _on_receipt(self, receipt: GroupReceipt) -> None:
        if receipt.member == self.identity.verify_key:
            return
        member = id_for_key(receipt.member)
        for message_id in self.store.groups.add_receipts(member, receipt.message_ids):
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
