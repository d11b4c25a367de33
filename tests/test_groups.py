"""Groups' pure core (mesh/groups.py): signed membership changes that converge whatever
order they arrive in, the documented outcome of concurrent admin changes, refusals,
key derivations (vectors), and messages sealed once and signed by their author."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh import crypto, groups, keyring
from mesh.errors import BadSignatureError, MalformedError, NotForUsError, RefusedError
from mesh.groups import Change, GroupKey, resolve

GROUP = bytes(range(16))
AT = 1_800_000_000


def people(n: int, seed: int = 0) -> list[crypto.KeyPair]:
    return [crypto.KeyPair(bytes([seed, i]) * 16) for i in range(n)]


def created(admin: crypto.KeyPair) -> Change:
    return Change.make(admin, GROUP, None, "create", admin.verify_key, AT)


def chain(admin: crypto.KeyPair, members: list[crypto.KeyPair]) -> list[Change]:
    """create, then one add per member, each following the one before."""
    changes = [created(admin)]
    for member in members:
        changes.append(Change.make(admin, GROUP, changes[-1], "add", member.verify_key, AT))
    return changes


# -- changes ------------------------------------------------------------------------------


def test_a_change_round_trips_and_a_forgery_is_refused() -> None:
    (admin, other) = people(2)
    change = created(admin)
    assert Change.from_bytes(change.to_bytes()) == change
    forged = Change(GROUP, b"", 0, admin.verify_key, "create", admin.verify_key, AT, bytes(64))
    with pytest.raises(BadSignatureError):
        Change.from_bytes(forged.to_bytes())
    stolen = Change(
        GROUP, b"", 0, other.verify_key, "create", admin.verify_key, AT, change.signature
    )
    with pytest.raises(BadSignatureError):
        stolen.verify()  # a signature is bound to its author


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_parse_as_a_change(data: bytes) -> None:
    with pytest.raises((MalformedError, BadSignatureError)):
        Change.from_bytes(data)


def test_vector_of_a_change_id() -> None:
    (admin,) = people(1)
    change = created(admin)
    expected = hashlib.blake2b(
        groups.LABEL_CHANGE_ID + change.body() + change.signature, digest_size=64
    ).digest()[:32]
    assert change.id == expected  # Ed25519 is deterministic: the same id every run


# -- state: membership, refusals ----------------------------------------------------------


def test_admin_adds_promotes_and_removes_and_a_removal_changes_the_key() -> None:
    admin, ann, ben = people(3)
    changes = chain(admin, [ann, ben])
    state = resolve(changes)
    assert state.members == {
        admin.verify_key: "admin",
        ann.verify_key: "member",
        ben.verify_key: "member",
    }
    first_key = state.key_change
    changes.append(Change.make(admin, GROUP, state.head, "promote", ann.verify_key, AT))
    changes.append(Change.make(admin, GROUP, changes[-1], "remove", ben.verify_key, AT))
    state = resolve(changes)
    assert state.admins == {admin.verify_key, ann.verify_key}
    assert ben.verify_key not in state.members
    assert state.key_change == changes[-1].id != first_key
    assert state.keys == [changes[0].id, changes[-1].id]
    assert state.void == {}


def test_refusals_are_void_and_change_nothing() -> None:
    admin, ann, ben = people(3)
    changes = chain(admin, [ann])
    head = changes[-1]
    bad = [
        Change.make(ann, GROUP, head, "add", ben.verify_key, AT),  # not an admin
        Change.make(admin, GROUP, head, "remove", ben.verify_key, AT),  # not a member
        Change.make(admin, GROUP, head, "remove", admin.verify_key, AT),  # the last admin
        Change.make(admin, GROUP, head, "leave", admin.verify_key, AT),  # the last admin
        Change.make(ann, GROUP, head, "leave", admin.verify_key, AT),  # someone else
        Change.make(admin, GROUP, head, "add", ann.verify_key, AT),  # already a member
    ]
    before = resolve(changes)
    state = resolve(changes + bad)
    assert state.members == before.members and state.key_change == before.key_change
    assert set(state.void) == {c.id for c in bad}
    assert "not an admin" in state.void[bad[0].id]
    assert "last admin" in state.void[bad[2].id]


def test_a_leave_asks_for_a_rekey_and_a_rekey_gives_a_new_key() -> None:
    admin, ann, ben = people(3)
    changes = chain(admin, [ann, ben])
    changes.append(Change.make(ben, GROUP, changes[-1], "leave", ben.verify_key, AT))
    state = resolve(changes)
    assert ben.verify_key not in state.members and state.rekey_wanted
    changes.append(Change.make(admin, GROUP, state.head, "rekey", admin.verify_key, AT))
    state = resolve(changes)
    assert not state.rekey_wanted and state.key_change == changes[-1].id
    assert state.members_under[state.key_change] == {admin.verify_key, ann.verify_key}


def test_a_change_of_another_group_or_with_an_unknown_parent_waits() -> None:
    admin, ann = people(2)
    changes = chain(admin, [])
    orphan_parent = Change.make(admin, GROUP, changes[0], "add", ann.verify_key, AT + 1)
    orphan = Change.make(admin, GROUP, orphan_parent, "promote", ann.verify_key, AT)
    elsewhere = Change.make(admin, bytes(16), changes[0], "add", ann.verify_key, AT)
    state = resolve([*changes, orphan, elsewhere])
    assert ann.verify_key not in state.members and orphan.id not in state.void
    state = resolve([*changes, orphan, orphan_parent])  # the parent came: both apply
    assert state.members[ann.verify_key] == "admin"


def test_two_hundred_and_fifty_members() -> None:
    admin, *members = people(251)
    state = resolve(chain(admin, members))
    assert len(state.members) == 251 and state.void == {}


# -- convergence ----------------------------------------------------------------------------


def random_history(rng: random.Random, steps: int) -> list[Change]:
    """Changes by several admins, each made on some earlier change (forks included)."""
    cast = people(6, seed=rng.randrange(256))
    changes = chain(cast[0], cast[1:3])
    changes.append(Change.make(cast[0], GROUP, changes[-1], "promote", cast[1].verify_key, AT))
    for _ in range(steps):
        author, target = rng.choice(cast), rng.choice(cast)
        kind = rng.choice(["add", "promote", "remove", "leave", "rekey"])
        if kind in ("leave", "rekey"):
            target = author
        parent = rng.choice(changes)
        changes.append(Change.make(author, GROUP, parent, kind, target.verify_key, AT))
    return changes


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), steps=st.integers(0, 25))
def test_every_order_of_the_same_changes_gives_the_same_state(seed: int, steps: int) -> None:
    rng = random.Random(seed)
    changes = random_history(rng, steps)
    expected = resolve(changes)
    for _ in range(4):
        shuffled = changes + rng.sample(changes, min(3, len(changes)))  # duplicates too
        rng.shuffle(shuffled)
        state = resolve(shuffled)
        assert state.members == expected.members
        assert state.key_change == expected.key_change
        assert state.applied == expected.applied and state.head == expected.head
    assert expected.admins  # never without an admin


def test_two_admins_removing_each_other_at_once_converge_on_the_smaller_change_id() -> None:
    """The documented outcome (docs/protocol.md, Groups): concurrent changes apply in
    order of change id; the second removal's author is no admin by then, so it is void."""
    root, ann, ben = people(3)
    changes = chain(root, [ann, ben])
    changes.append(Change.make(root, GROUP, changes[-1], "promote", ann.verify_key, AT))
    changes.append(Change.make(root, GROUP, changes[-1], "promote", ben.verify_key, AT))
    changes.append(Change.make(root, GROUP, changes[-1], "leave", root.verify_key, AT))
    fork = changes[-1]
    ann_removes_ben = Change.make(ann, GROUP, fork, "remove", ben.verify_key, AT)
    ben_removes_ann = Change.make(ben, GROUP, fork, "remove", ann.verify_key, AT)
    first, second = sorted([ann_removes_ben, ben_removes_ann], key=lambda c: c.id)
    for order in ([ann_removes_ben, ben_removes_ann], [ben_removes_ann, ann_removes_ben]):
        state = resolve(changes + order)
        winner = first.author
        assert state.admins == {winner} and set(state.members) == {winner}
        assert "not an admin" in state.void[second.id]
        assert state.key_change == first.id


# -- keys: vectors -------------------------------------------------------------------------


def test_vectors_of_the_group_keys() -> None:
    key = GroupKey(bytes(32), bytes(range(32)))
    message_key = hashlib.blake2b(groups.LABEL_MESSAGE_KEY, key=key.secret, digest_size=32)
    assert key.message_key == message_key.digest()
    wide = hashlib.blake2b(groups.LABEL_MAILBOX_ROOT + key.secret, digest_size=64).digest()
    root = key.mailbox_root
    assert root.scalar == crypto.scalar_reduce(wide)
    assert root.public == crypto.scalar_public(root.scalar)
    assert key.mailbox_key(20_000) == keyring.mailbox_key_at(root.public, 86400, 20_000)
    assert key.mailbox_key(20_000) != key.mailbox_key(20_001)
    other = GroupKey(bytes(32), bytes(range(1, 33)))
    assert other.mailbox_key(20_000) != key.mailbox_key(20_000)  # a new key, a new mailbox
    assert key.secret.hex() not in repr(key) and str(list(key.secret)) not in repr(key)
    assert repr(key.secret) not in repr(key)


def test_only_holders_of_the_key_sign_as_the_group_mailbox() -> None:
    key = GroupKey(bytes(32), crypto.random_bytes(32))
    signer = key.mailbox_root.signer(keyring.EPOCH_SECONDS, 20_000)
    assert signer.verify_key == keyring.blinded_public(
        key.mailbox_root.public, keyring.EPOCH_SECONDS, 20_000
    )
    crypto.verify(signer.verify_key, b"listen", signer.sign(b"listen"))


# -- messages ---------------------------------------------------------------------------


def test_a_message_is_sealed_once_and_every_member_opens_it() -> None:
    admin, ann, ben = people(3)
    changes = chain(admin, [ann, ben])
    state = resolve(changes)
    key = GroupKey.generate(changes[0])
    sealed = groups.seal_message(ann, GROUP, key, bytes(16), AT, "meet at the north gate")
    assert b"north gate" not in sealed and ann.verify_key not in sealed and GROUP not in sealed
    message = groups.open_message(state, [key], sealed)
    assert message.author == ann.verify_key and message.text == "meet at the north gate"
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    with pytest.raises(NotForUsError):
        groups.open_message(state, [key], bytes(flipped))


def test_a_removed_member_cannot_read_what_follows_nor_be_believed() -> None:
    admin, ann, ben = people(3)
    changes = chain(admin, [ann, ben])
    old_key = GroupKey.generate(changes[0])
    changes.append(Change.make(admin, GROUP, changes[-1], "remove", ben.verify_key, AT))
    state = resolve(changes)
    new_key = GroupKey.generate(changes[-1])  # handed to admin and ann only
    after = groups.seal_message(ann, GROUP, new_key, bytes([1]) * 16, AT + 5, "after")
    with pytest.raises(NotForUsError):
        groups.open_message(state, [old_key], after)  # all ben still holds
    assert groups.open_message(state, [new_key, old_key], after).text == "after"
    # ben still has the old key: what he signs under the new one cannot exist, and
    # a stranger's message under a key he holds is refused as not from a member then.
    (stranger,) = people(1, seed=9)
    forged = groups.seal_message(stranger, GROUP, new_key, bytes([2]) * 16, AT, "x")
    with pytest.raises(RefusedError):
        groups.open_message(state, [new_key], forged)
    # before the removal ben was a member: his old messages still open for everyone
    before = groups.seal_message(ben, GROUP, old_key, bytes([3]) * 16, AT - 5, "before")
    assert groups.open_message(state, [new_key, old_key], before).author == ben.verify_key


def test_bad_messages_are_clear_errors() -> None:
    (admin,) = people(1)
    state = resolve(chain(admin, []))
    key = GroupKey.generate(resolve(chain(admin, [])).head)
    with pytest.raises(MalformedError):
        groups.seal_message(admin, GROUP, key, bytes(16), AT, "x" * (groups.MAX_TEXT_BYTES + 1))
    with pytest.raises(MalformedError):
        groups.seal_message(admin, GROUP, key, bytes(15), AT, "x")
    with pytest.raises(NotForUsError):
        groups.open_message(state, [key], b"short")
    with pytest.raises(MalformedError):
        resolve([])


# -- records of the group mailbox: padding, hand-overs, receipts ---------------------------


def test_group_records_have_the_sizes_of_contact_records() -> None:
    from mesh import envelope

    (admin,) = people(1)
    state = resolve([created(admin)])
    key = GroupKey.generate(state.head)
    for text in ("x", "y" * 700, "z" * groups.MAX_TEXT_BYTES):
        sealed = groups.seal_message(admin, GROUP, key, bytes(16), AT, text)
        assert len(sealed) in envelope.CIPHERTEXT_SIZES  # a replica cannot tell them apart
        assert groups.open_message(state, [key], sealed).text == text


def test_vector_of_the_key_wrap_and_only_the_pair_unwraps() -> None:
    (admin,) = people(1)
    pair = bytes(range(64))
    expected = hashlib.blake2b(groups.LABEL_KEY_WRAP + GROUP, key=pair, digest_size=32).digest()
    assert groups.wrap_key(pair, GROUP) == expected
    key = GroupKey(bytes([7]) * 32, crypto.random_bytes(32))
    wrap = groups.wrap_secret(pair, GROUP, key)
    assert len(wrap) == groups.WRAP_SIZE
    control = groups.Control(GROUP, admin.verify_key, (), key.change_id, (wrap,))
    assert groups.unwrap_secret(pair, control) == key
    assert groups.unwrap_secret(bytes(reversed(pair)), control) is None  # another pair
    renamed = groups.Control(GROUP, admin.verify_key, (), bytes(32), (wrap,))
    assert groups.unwrap_secret(pair, renamed) is None  # bound to its key change


def test_a_key_for_250_members_takes_a_few_control_records_that_open() -> None:
    (admin,) = people(1)
    state = resolve([created(admin)])
    key = GroupKey.generate(state.head)
    wraps = [bytes(groups.WRAP_SIZE) for _ in range(250)]
    change = created(admin).to_bytes()
    records = groups.control_records(GROUP, admin.verify_key, [change], key.change_id, wraps)
    assert 5 <= len(records) <= 7
    assert sum(len(r.wraps) for r in records) == 250
    assert records[0].changes == (change,)
    for record in records:
        opened = groups.open_record(state, key, groups.seal_control(key, record))
        assert opened == record


def test_receipts_are_signed_by_members_only() -> None:
    admin, ann, stranger = people(3)
    state = resolve(chain(admin, [ann]))
    key = GroupKey(state.key_change, crypto.random_bytes(32))
    ids = [bytes([i]) * 16 for i in range(3)]
    opened = groups.open_record(state, key, groups.seal_receipt(ann, GROUP, key, ids))
    assert isinstance(opened, groups.GroupReceipt)
    assert (opened.member, opened.message_ids) == (ann.verify_key, tuple(ids))
    with pytest.raises(RefusedError):
        groups.open_record(state, key, groups.seal_receipt(stranger, GROUP, key, ids))
    with pytest.raises(MalformedError):
        groups.seal_receipt(ann, GROUP, key, [])
