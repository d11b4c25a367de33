"""The state side of a node's groups (issue 17): what mesh/group_service.py builds on.

`GroupBase` loads each group (its changes, resolved; the keys we hold) from the store,
merges new changes, maps the group mailboxes of the epochs around now to their group and
key (and puts them in the DHT's own keys, so pushes for them are ours), posts control
records through the outbox, and listens at and catches up with the mailboxes of each
group's newest keys. What arrives and what the user does are GroupService's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack

from mesh import crypto, envelope, groups, keyring
from mesh.dht.replica import GROUP_PUSHERS
from mesh.dht.server import DhtServer
from mesh.envelope import Message, OwnerOp, Record
from mesh.errors import (
    GroupError,
    MeshError,
    RemoteProtocolError,
)
from mesh.groups import Change, GroupKey, GroupState
from mesh.identity import Identity
from mesh.outbox import Outbox
from mesh.store import Store
from mesh.store_groups import GroupRow, group_of_peer
from mesh.store_rows import GroupOutboxItem, OutboxItem

log = logging.getLogger(__name__)
_DECODE_ERRORS = (ValueError, TypeError, KeyError, OverflowError, msgpack.UnpackException)

CONTROL_TTL = envelope.MAX_TTL  # changes and keys outlive the messages they let open
KEYS_LISTENED = 2  # the newest keys of a group whose mailboxes we listen at and fetch
SEEN_MAX = 4096
LISTEN_REPLICAS = 10  # as NodeOptions.listen_replicas: every put reaches these
MAX_CHANGES = 5000  # per group; past it only admins' changes are kept (a member's spam)
CATCH_UP_EPOCHS = 31
ANCESTORS = 8  # applied changes posted with each new one (see _with_ancestors)


@dataclass(frozen=True)
class GroupInfo:
    """A group as the CLI and the chat show it."""

    group_id: bytes
    name: str
    peer: str  # the peer_id of its messages in the store
    members: int
    admin: bool
    active: bool  # False once we left or were removed


@dataclass
class _Group:
    row: GroupRow
    changes: dict[bytes, Change]
    keys: dict[bytes, GroupKey]
    state: GroupState
    pending: list[tuple[bytes, Record]]
    # hand-overs read before the change they hand over (GroupService._on_control)
    waiting: list[groups.Control] = field(default_factory=list)

    @property
    def group_id(self) -> bytes:
        return self.row.group_id


class GroupBase:
    def __init__(
        self,
        identity: Identity,
        store: Store,
        dht: DhtServer,
        outbox: Outbox,
        wall: Callable[[], float],
        counters: dict[str, int],
        queue: asyncio.Queue[Message],
        spawn: Callable[[Coroutine[Any, Any, Any]], object],
        epoch_len: int = keyring.EPOCH_SECONDS,
    ) -> None:
        self.identity = identity
        self.store = store
        self.dht = dht
        self.outbox = outbox
        self.wall = wall
        self.counters = counters
        self.queue = queue
        self._spawn = spawn
        self.epoch_len = epoch_len  # of the groups we create
        for name in (
            "group_received",
            "group_bad_records",
            "group_refused",
            "group_changes_refused",
            "group_invites_refused",
            "group_receipts",
        ):
            counters.setdefault(name, 0)
        self._groups: dict[bytes, _Group] = {}
        self._index: dict[bytes, tuple[bytes, bytes]] = {}  # mailbox key -> (group, key)
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._rekeying: set[bytes] = set()
        self._superseded: dict[bytes, float] = {}  # key change -> when it stopped being current
        self._wrapped: dict[bytes, set[bytes]] = {}  # our key changes -> whom we wrapped for
        self._rekeyed_for: set[bytes] = set()  # key changes we rekeyed after
        # Incomplete invitations, by (sender ID, group id), oldest first.
        self._parked: dict[tuple[str, bytes], list[groups.Invite]] = self._load_parked()
        self._to_receipt: dict[bytes, list[bytes]] = {}  # group -> message ids, batched
        with contextlib.suppress(MeshError):
            store.groups.forget_stale_receipts()
        self._pairs: dict[bytes, bytes] = {}  # member verify key -> crypto_kx pair secret
        for row in store.groups.all():
            with contextlib.suppress(RemoteProtocolError):
                self._load(row)
        self._reindex()

    def _load(self, row: GroupRow) -> _Group:
        changes: dict[bytes, Change] = {}
        for data in self.store.groups.changes(row.group_id):
            change = Change.from_bytes(data)
            changes[change.id] = change
        keys = {cid: GroupKey(cid, secret) for cid, secret in self.store.groups.keys(row.group_id)}
        state = groups.resolve(changes.values(), row.genesis)
        group = _Group(row, changes, keys, state, [])
        self._groups[row.group_id] = group
        return group

    def _group(self, group_id: bytes) -> _Group:
        group = self._groups.get(group_id)
        if group is None:
            raise GroupError("no such group")
        return group

    def _active(self, group: _Group) -> bool:
        return group.row.left_at is None and self.identity.verify_key in group.state.members

    def _current_key(self, group: _Group) -> GroupKey | None:
        return group.keys.get(group.state.key_change)

    def _sending_key(self, group: _Group) -> GroupKey | None:
        """The current key, or, while its hand-over has not reached us (it was made on
        a branch that had not seen our add), the newest key we hold: every member
        listens at the mailboxes of its newest two, so the others still read it."""
        current = self._current_key(group)
        if current is not None:
            return current
        held = self._listened_keys(group)
        return held[-1] if held else None

    def _listened_keys(self, group: _Group) -> list[GroupKey]:
        """The newest keys we hold, in the order they became current."""
        held = [group.keys[c] for c in group.state.keys if c in group.keys]
        return held[-KEYS_LISTENED:]

    def _listened(self, now: float) -> Iterator[tuple[_Group, GroupKey, int, bytes]]:
        """(group, key, epoch, mailbox) of every mailbox we listen at now: the epochs
        around now of each active group's newest keys."""
        for group in list(self._groups.values()):
            if not self._active(group):
                continue
            length = group.row.epoch_len
            for key in self._listened_keys(group):
                for epoch in keyring.epochs_around(now, length):
                    yield group, key, epoch, key.mailbox_key(epoch, length)

    def _reindex(self) -> None:
        """Map the mailbox keys of the epochs around now to their group and key."""
        index: dict[bytes, tuple[bytes, bytes]] = {}
        wanted: set[bytes] = set()
        for group, key, _epoch, mailbox in self._listened(self.wall()):
            index[mailbox] = (group.group_id, key.change_id)
            wanted.add(mailbox)
        stale = set(self._index) - wanted
        self.dht.own_keys.difference_update(stale)
        self.dht.own_keys.update(wanted)
        self._index = index

    def owns(self, key: bytes) -> bool:
        return key in self._index

    def _merge(self, group: _Group, datas: Iterable[bytes]) -> bool:
        """Add verified changes of this group; re-resolve if any was new."""
        new: list[tuple[bytes, bytes]] = []
        for data in datas:
            try:
                change = Change.from_bytes(data)
            except RemoteProtocolError:
                self.counters["group_changes_refused"] += 1
                continue
            if change.group_id != group.group_id:
                self.counters["group_changes_refused"] += 1
                continue
            full = len(group.changes) >= MAX_CHANGES
            if full and group.state.members.get(change.author) != "admin":
                self.counters["group_changes_refused"] += 1
                continue
            if change.id not in group.changes:
                group.changes[change.id] = change
                new.append((change.id, data))
        if not new:
            return False
        self.store.groups.add_changes(group.group_id, new)
        was_member = self.identity.verify_key in group.state.members
        before = group.state.key_change
        group.state = groups.resolve(group.changes.values(), group.row.genesis)
        if group.state.key_change != before:
            self._superseded.setdefault(before, self.wall())
        for change_id in (cid for cid, _ in new):
            if change_id in group.state.void:
                self.counters["group_changes_refused"] += 1
        if was_member and self.identity.verify_key not in group.state.members:
            self.store.groups.set_left(group.group_id, self.wall())
            group.row = self.store.groups.get(group.group_id) or group.row
        self._reindex()
        self._retry_pending(group)
        self._maybe_rekey(group)
        return True

    def _add_key(self, group: _Group, key: GroupKey) -> bool:
        if key.change_id in group.keys:
            return False
        group.keys[key.change_id] = key
        self.store.groups.add_key(group.group_id, key.change_id, key.secret)
        self._reindex()
        return True

    def _pair(self, verify_key: bytes) -> bytes:
        pair = self._pairs.get(verify_key)
        if pair is None:
            me = self.identity
            pair = crypto.pair_secret(
                me.public.box_public_key,
                crypto.identity_box_secret(me.seed),
                crypto.ed25519_pk_to_x25519(verify_key),
            )
            if len(self._pairs) > 4096:
                self._pairs.clear()
            self._pairs[verify_key] = pair
        return pair

    async def _post(
        self,
        group: _Group,
        key: GroupKey,
        changes: list[bytes],
        key_change: bytes = b"",
        wraps: Iterable[bytes] = (),
    ) -> None:
        """Control records into `key`'s mailbox of today, through the outbox (durable)."""
        controls = groups.control_records(
            group.group_id,
            self.identity.verify_key,
            self._with_ancestors(group, changes),
            key_change,
            wraps,
        )
        for control in controls:
            await self._store(group, key, groups.seal_control(key, control), CONTROL_TTL)

    def _with_ancestors(self, group: _Group, changes: list[bytes]) -> list[bytes]:
        """`changes` and up to ANCESTORS applied changes before each, oldest first: a
        member who missed one (it was offline when it was posted, the record expired)
        can still connect these to the log."""
        out: dict[bytes, bytes] = {}
        for data in changes:
            chain: list[bytes] = []
            change = Change.from_bytes(data)
            parent = group.changes.get(change.parent)
            while parent is not None and len(chain) < ANCESTORS:
                chain.append(parent.to_bytes())
                parent = group.changes.get(parent.parent)
            for item in [*reversed(chain), data]:
                out.setdefault(item, item)
        return list(out)

    def _log_for_invitation(self, group: _Group) -> list[Change]:
        """What an invitee needs: every applied change and its ancestors; void changes
        that nothing applied follows (a member's spam) stay out."""
        needed: dict[bytes, Change] = {}
        for change_id in group.state.applied:
            change = group.changes.get(change_id)
            while change is not None and change.id not in needed:
                needed[change.id] = change
                change = group.changes.get(change.parent)
        return list(needed.values())

    async def _store(self, group: _Group, key: GroupKey, sealed: bytes, ttl: int) -> None:
        """A record of ours (not a message: control, receipt) into `key`'s mailbox of
        today, through the outbox: durable, and retried (in the mailbox of the day
        then) if no replica takes it now."""
        now = self.wall()
        record = Record(envelope.record_id_for(sealed), envelope.expiry_for(now, ttl), sealed)
        self._seen_add(record.id)
        item_id = crypto.random_bytes(envelope.MESSAGE_ID_SIZE)
        item = self.outbox_item(group, key, record, ttl, now)
        self.store.outbox_for_group(item_id, group.row.peer, item, now)
        with contextlib.suppress(MeshError):
            await self.outbox.deliver(item_id, item.mailbox_key, record)

    @staticmethod
    def outbox_item(
        group: _Group, key: GroupKey, record: Record, ttl: int, now: float
    ) -> GroupOutboxItem:
        length = group.row.epoch_len
        epoch = keyring.epoch_of(now, length)
        mailbox = key.mailbox_key(epoch, length)
        return GroupOutboxItem(mailbox, record.pack(), key.change_id, epoch, ttl)

    def readdress(self, item: OutboxItem) -> tuple[bytes, Record] | None:
        """Where a queued group record goes now: the mailbox of today of the key it is
        sealed under (members fetch every day since they last did, of their newest
        keys; yesterday's mailbox they may have read already). None drops it (we are
        no longer in the group)."""
        record = Record.unpack(item.record)
        group_id = group_of_peer(item.peer_id or "")
        group = None if group_id is None else self._groups.get(group_id)
        if group is None or not self._active(group):
            return None
        key = group.keys.get(item.body or b"")
        length = group.row.epoch_len
        epoch = keyring.epoch_of(self.wall(), length)
        if key is None or item.epoch == epoch:
            return item.mailbox_key, record
        mailbox = key.mailbox_key(epoch, length)
        self.store.outbox_resealed(item.msg_id, mailbox, item.record, epoch)
        return mailbox, record

    def _seen_add(self, record_id: bytes) -> bool:
        if record_id in self._seen:
            return False
        self._seen[record_id] = None
        if len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)
        return True

    def _listen_request(
        self, key: GroupKey, length: int, epoch: int
    ) -> Callable[[int], envelope.OwnerRequest]:
        signer = key.mailbox_root.signer(length, epoch)

        def make(duration: int) -> envelope.OwnerRequest:
            payload = envelope.listen_payload(duration)
            return envelope.sign_owner_request(signer, OwnerOp.LISTEN, payload, self.wall())

        return make

    async def subscribe_all(self) -> int:
        """Listen at the mailboxes of today (and the neighbouring day near midnight) of
        every group's newest keys; returns how many subscriptions some replica took."""
        self._reindex()
        calls = [
            self._subscribe(mailbox, self._listen_request(key, group.row.epoch_len, epoch))
            for group, key, epoch, mailbox in self._listened(self.wall())
        ]
        if not calls:
            return 0
        results = await asyncio.gather(*calls, return_exceptions=True)
        return sum(1 for r in results if isinstance(r, int) and r > 0)

    async def _subscribe(self, mailbox: bytes, make: Callable[[int], envelope.OwnerRequest]) -> int:
        """Listen at the LISTEN_REPLICAS closest replicas, as for our own mailbox, but
        with GROUP_PUSHERS of them eager rather than PUSHERS: a group's replicas push
        each message to every member, so each copy more per member is a hundred
        datagrams more per message (a missed push is fetched at the next renewal)."""
        found = await self.dht.lookup(mailbox)
        found.sort(key=lambda c: c.long_id ^ int.from_bytes(mailbox, "big"))
        eager = {p.id for p in found[:GROUP_PUSHERS]}
        return await self.dht.subscribe(mailbox, make, found[:LISTEN_REPLICAS], eager)

    async def listen_loop(self) -> None:
        """Renew every group's listens half-way through the grant, and at each new day."""
        while True:
            with contextlib.suppress(MeshError):
                await self.subscribe_all()
            await asyncio.sleep(self.dht.config.listen_duration / 2)

    async def fetch_all(self, via: str = "fetch") -> list[Message]:
        new: list[Message] = []
        for group in list(self._groups.values()):
            if self._active(group):
                new += await self.fetch_group(group, via)
        return new

    async def fetch_group(self, group: _Group, via: str) -> list[Message]:
        """Every day's mailbox of the group's newest keys since the last complete fetch;
        keys handed over on the way are fetched too (at most a few rounds)."""
        started = self.wall()
        length = group.row.epoch_len
        overlap = min(keyring.OVERLAP, length / 4)
        # With no complete fetch behind us (we went away before the join fetch had
        # finished), start at the day we joined: a key handed over since then sits in
        # the mailbox of its day, and without it nothing later opens.
        since = group.row.fetched_at
        if since is None:
            since = group.row.joined_at
        last = keyring.epoch_of(started + overlap, length)
        first = keyring.epoch_of(since - overlap, length)
        first = max(first, last - CATCH_UP_EPOCHS)
        new: list[Message] = []
        done: set[bytes] = set()
        complete = True
        for _round in range(4):
            todo = [k for k in self._listened_keys(group) if k.change_id not in done]
            if not todo or not self._active(group):
                break
            for key in todo:
                done.add(key.change_id)
                for epoch in range(first, last + 1):
                    mailbox = key.mailbox_key(epoch, length)
                    try:
                        records = await self.dht.fetch(mailbox)
                    except MeshError:
                        complete = False
                        continue
                    for record in records:
                        message = self._accept(group, key, mailbox, record, via)
                        if message is not None:
                            new.append(message)
        if complete:
            self.store.groups.set_fetched(group.group_id, started)
            group.row = self.store.groups.get(group.group_id) or group.row
        return new

    def _load_parked(self) -> dict[tuple[str, bytes], list[groups.Invite]]:
        parked: dict[tuple[str, bytes], list[groups.Invite]] = {}
        saved = self.store.keys.keyring_get("group_parked")
        if saved is None:
            return parked
        with contextlib.suppress(*_DECODE_ERRORS, RemoteProtocolError):
            for sender, group_id, parts in msgpack.unpackb(saved, raw=False):
                parked[(str(sender), bytes(group_id))] = [
                    groups.Invite.from_bytes(bytes(p)) for p in parts
                ]
        return parked

    # -- hooks of GroupService ------------------------------------------------------------

    def _retry_pending(self, group: _Group) -> None:
        """Records that waited for a change: open them again (GroupService)."""

    def _maybe_rekey(self, group: _Group) -> None:
        """Someone left: perhaps rekey (GroupService)."""

    def _accept(
        self, group: _Group, gkey: GroupKey, mailbox: bytes, record: Record, via: str
    ) -> Message | None:
        raise NotImplementedError  # GroupService opens and takes records
