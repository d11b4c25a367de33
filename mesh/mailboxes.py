"""Our mailboxes and our contacts' mailboxes: which key, which prekey, which signer.

    boxes = Mailboxes(identity, store)
    boxes.own_epochs(now)                 # [(epoch, mailbox key)] to listen at and fetch
    boxes.prekeys_for(key)                # X25519 pairs to open a record found at `key`
    boxes.signer_for(key)                 # who signs a listen or a delete there
    boxes.address(peer_id, now)           # their mailbox key, prekey and epoch, or None
    boxes.intro(peer_id)                  # the introduction key pair of a new contact
    boxes.seal_for(peer_id, ...)          # a message sealed for a contact's epoch

The key schedule is mesh.keyring's; this class holds the state (in the store, so it
survives restarts and is covered by the store's encryption) and caches what is costly
(a blinded key is a scalar multiplication). Nothing here touches the network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from mesh import crypto, envelope
from mesh.bounded import BoundedLru
from mesh.envelope import KindName, Message, Record
from mesh.identity import Identity, PublicIdentity, mailbox_key_for
from mesh.keyring import (
    EPOCH_SECONDS,
    GRACE_EPOCHS,
    OVERLAP,
    PREKEY_HORIZON,
    BlindedSigner,
    Bundle,
    MailboxRoot,
    Signer,
    epoch_of,
    epochs_around,
    intro_signer,
    mailbox_key_at,
    pack_bundle,
    parse_bundle,
)
from mesh.store import Store

ROOT = "root"
FETCHED_AT = "mailbox_fetched_at"  # setting: wall time of the last complete fetch round
LEGACY = "legacy_mailbox"  # setting: the fixed mailbox of the previous release to drain
CATCH_UP_EPOCHS = 31  # a fetch round after a long absence looks this far back (MAX_TTL)
_CACHE = 256


class Address(tuple[bytes, bytes, int]):
    """(mailbox key, prekey, epoch) of a contact's mailbox for one epoch."""

    __slots__ = ()

    @property
    def key(self) -> bytes:
        return self[0]

    @property
    def prekey(self) -> bytes:
        return self[1]

    @property
    def epoch(self) -> int:
        return self[2]


class Mailboxes:
    __slots__ = (
        "_by_key",
        "_intros",
        "_keys_of_peer",
        "_own_epoch",
        "_prekeys",
        "_rand",
        "epoch_len",
        "identity",
        "root",
        "store",
    )

    def __init__(
        self,
        identity: Identity,
        store: Store,
        epoch_len: int = EPOCH_SECONDS,
        rand: Callable[[int], bytes] | None = None,
    ) -> None:
        """`rand`: where new keys' randomness comes from; None is the OS (libsodium).
        The simulator passes its seeded generator so that a run repeats exactly."""
        self.identity = identity
        self.store = store
        self.epoch_len = epoch_len
        self._rand = rand
        saved = store.keys.keyring_get(ROOT)
        if saved is None:
            self.root = MailboxRoot.generate(rand)
            store.keys.keyring_put(ROOT, self.root.to_bytes())
        else:
            self.root = MailboxRoot.from_bytes(saved)
        self._prekeys = {e: (p, s) for e, p, s in store.keys.prekeys()}
        self._by_key: BoundedLru[bytes, Signer] = BoundedLru(_CACHE)
        self._intros: BoundedLru[str, crypto.KeyPair] = BoundedLru(_CACHE)
        self._own_epoch: BoundedLru[bytes, int] = BoundedLru(_CACHE)
        self._keys_of_peer: BoundedLru[tuple[bytes, int, int], bytes] = BoundedLru(_CACHE)

    # -- our side -------------------------------------------------------------------------

    def epoch(self, now: float) -> int:
        return epoch_of(now, self.epoch_len)

    def own_signer(self, epoch: int) -> BlindedSigner:
        signer = self.root.signer(self.epoch_len, epoch)
        self._by_key.put(signer.mailbox_key, signer)
        self._own_epoch.put(signer.mailbox_key, epoch)
        return signer

    def own_key(self, epoch: int) -> bytes:
        return self.own_signer(epoch).mailbox_key

    def own_epochs(self, now: float) -> list[tuple[int, bytes]]:
        """(epoch, mailbox key) of the epochs a recipient covers now (mesh.keyring)."""
        return [(e, self.own_key(e)) for e in epochs_around(now, self.epoch_len, self._overlap)]

    def catch_up_epochs(self, now: float, since: float | None) -> list[tuple[int, bytes]]:
        """Every epoch from the last complete fetch (`since`, less the overlap) to now."""
        last = self.epoch(now + self._overlap)
        first = (
            self.epoch(now - self._overlap) if since is None else self.epoch(since - self._overlap)
        )
        first = max(first, last - CATCH_UP_EPOCHS)
        return [(e, self.own_key(e)) for e in range(first, last + 1)]

    @property
    def _overlap(self) -> float:
        return min(OVERLAP, self.epoch_len / 4)

    def signer_for(self, key: bytes) -> Signer | None:
        """The signer of a listen or delete on one of our keys (an epoch's blinded key,
        or a new contact's introduction key) if we computed that key lately."""
        return self._by_key.get(key)

    def prekeys_for(self, key: bytes) -> list[tuple[bytes, bytes]] | None:
        """The prekeys that may open a record found at `key`, the epoch's own first; None
        for an introduction key (opened with the identity key)."""
        if not isinstance(self._by_key.get(key), BlindedSigner):
            return None
        epoch = self._own_epoch.get(key, 0)
        order = sorted(self._prekeys, key=lambda e: (abs(e - epoch), e))
        return [self._prekeys[e] for e in order]

    def ensure_prekeys(self, now: float) -> bool:
        """Prekeys for this epoch to PREKEY_HORIZON ahead; True if new ones were made (the
        horizon moved by half: contacts are then sent a fresh bundle)."""
        current = self.epoch(now)
        newest = max(self._prekeys, default=current - 1)
        if newest >= current + PREKEY_HORIZON // 2:
            return False
        rows = []
        for epoch in range(max(current, newest + 1), current + PREKEY_HORIZON + 1):
            if self._rand is None:
                public, secret = crypto.box_keypair()
            else:
                public, secret = crypto.box_seed_keypair(self._rand(32))
            rows.append((epoch, public, secret))
            self._prekeys[epoch] = (public, secret)
        self.store.keys.prekeys_add(rows)
        return True

    def forget_prekeys(self, fetched_at: float) -> list[int]:
        """Delete the secrets no record can still need: those of epochs that ended more
        than GRACE_EPOCHS (plus the overlap) before a complete fetch at `fetched_at`.
        The newest prekey is kept (a contact silent past the horizon seals to it)."""
        newest = max(self._prekeys, default=None)
        done = self.epoch(fetched_at - self._overlap) - GRACE_EPOCHS
        old = [e for e in self._prekeys if e < done and e != newest]
        if old:
            self.store.keys.prekeys_delete(old)
            for epoch in old:
                del self._prekeys[epoch]
        return old

    def prekey_epochs(self) -> list[int]:
        return sorted(self._prekeys)

    def bundle(self, now: float, reply: bool) -> bytes:
        """Our bundle: root, epoch length, prekeys from this epoch to the newest."""
        self.ensure_prekeys(now)
        current = self.epoch(now)
        epochs = [e for e in sorted(self._prekeys) if e >= current] or [max(self._prekeys)]
        first = epochs[0]
        prekeys = tuple(self._prekeys[e][0] for e in range(first, epochs[-1] + 1))
        return pack_bundle(Bundle(self.root.public, self.epoch_len, first, prekeys, reply))

    def newest_prekey(self) -> int:
        return max(self._prekeys)

    def legacy_key(self) -> bytes:
        """The fixed mailbox of the previous release (computable from our ID): drained
        once after an upgrade, with the identity key, then never used again."""
        self._by_key.put(self.identity.mailbox_key, self.identity)
        return self.identity.mailbox_key

    # -- new contacts: the introduction mailbox -------------------------------------------

    def intro(self, peer_id: str) -> crypto.KeyPair:
        """The key pair only we and `peer_id` derive (crypto_kx of our identities)."""
        pair = self._intros.get(peer_id)
        if pair is None:
            them = PublicIdentity.from_id(peer_id)
            me = self.identity
            secret = crypto.pair_secret(
                me.public.box_public_key,
                crypto.identity_box_secret(me.seed),
                them.box_public_key,
            )
            pair = intro_signer(secret)
            self._intros.put(peer_id, pair)
        self._by_key.put(mailbox_key_for(pair.verify_key), pair)
        return pair

    def intro_key(self, peer_id: str) -> bytes:
        return mailbox_key_for(self.intro(peer_id).verify_key)

    # -- their side -------------------------------------------------------------------------

    def address(self, peer_id: str, now: float) -> Address | None:
        """Where a message to `peer_id` goes now, or None until their bundle arrived."""
        if peer_id == self.identity.id:  # a note to self: our own mailbox of the day
            self.ensure_prekeys(now)
            epoch = self.epoch(now)
            held = self._prekeys.get(epoch) or self._prekeys[max(self._prekeys)]
            return Address((self.own_key(epoch), held[0], epoch))
        agreement = self.store.keys.agreement(peer_id)
        if agreement is None or agreement.root is None or agreement.epoch_len is None:
            return None
        epoch = epoch_of(now, agreement.epoch_len)
        prekey = self.store.keys.peer_prekey(peer_id, epoch)
        if prekey is None:
            return None
        cache_key = (agreement.root, agreement.epoch_len, epoch)
        key = self._keys_of_peer.get(cache_key)
        if key is None:
            key = mailbox_key_at(agreement.root, agreement.epoch_len, epoch)
            self._keys_of_peer.put(cache_key, key)
        return Address((key, prekey[1], epoch))

    def seal_for(
        self,
        peer_id: str,
        kind: KindName,
        body: bytes,
        now: float,
        ttl: int,
        message_id: bytes | None = None,
        sent_at: float | None = None,
    ) -> tuple[Message, Record, Address] | None:
        """Seal a message for a contact's mailbox of this epoch (None: no keys yet)."""
        address = self.address(peer_id, now)
        if address is None:
            return None
        message, record = envelope.seal_message(
            self.identity,
            PublicIdentity.from_id(peer_id),
            kind,
            body,
            now if sent_at is None else sent_at,
            ttl,
            message_id,
            seal_to=address.prekey,
        )
        return message, record, address

    def seal_intro(self, peer_id: str, now: float) -> tuple[Message, Record, bytes]:
        """Our bundle for a new contact, sealed to their identity key, and the
        introduction mailbox it goes to."""
        body = self.bundle(now, reply=True)
        them = PublicIdentity.from_id(peer_id)
        message, record = envelope.seal_message(
            self.identity, them, "keys", body, now, envelope.MAX_TTL
        )
        return message, record, self.intro_key(peer_id)

    def known_keys(self) -> Iterable[bytes]:
        return list(self._by_key)


def exchange_bundles(a: Mailboxes, b: Mailboxes, now: float) -> None:
    """Make two homes contacts whose key agreement is complete, without the network: each
    gets the other's bundle, as if they had agreed before. For the simulator and the
    benchmarks (their preparation, not what they measure); a real add is Node.add_contact."""
    a.store.keys.agreement_add(b.identity.id, now)
    b.store.keys.agreement_add(a.identity.id, now)
    for me, them in ((a, b), (b, a)):
        peer_id = them.identity.id
        bundle = parse_bundle(them.bundle(now, reply=False))
        me.store.keys.agreement_keys(
            peer_id,
            bundle.root_public,
            bundle.epoch_length,
            bundle.first_epoch,
            bundle.prekeys,
            now,
        )
        them.store.keys.agreement_bundle_sent(me.identity.id, them.newest_prekey())
