"""Proof-of-work stamps bound to a record (issue #15; not yet on the wire).

A stranger's request has to carry a stamp: the proof that about 2**cost hash attempts
were spent on *this* record in *this* epoch, where the recipient chose `cost`. Minting
takes about a second at DEFAULT_COST on the machine the project is tuned on; verifying
is one attempt (well under a millisecond). Pure: callers pass `now`; the only
randomness is the nonce, and `mint` takes a `start` so tests can be deterministic.

Construction (after LXMF's stamps, with libsodium's BLAKE2b only):

    epoch  = floor(now / EPOCH_SECONDS)                      (u32, big-endian on the wire)
    seed   = BLAKE2b-512(record_id || epoch, person=SEED_LABEL)
    digest = BLAKE2b-256(nonce || seed * (WORK_BYTES / 64), person=WORK_LABEL)
    stamp  = epoch || nonce                                  (4 + 16 = 20 bytes)
    valid  iff digest starts with at least `cost` zero bits, and epoch is fresh

LXMF hashes a large workblock derived from the message id, then the stamp after it,
so a minter can absorb the workblock once and pay only for the stamp per attempt. Here
the nonce comes first: every attempt hashes all WORK_BYTES anew (BLAKE2b's chaining
value depends on the first block), so an attempt costs the same in Python as in C, and
Python's per-call overhead is a small part of it. It is not memory-hard (WORK_BYTES is
repetitive and fits a cache); a GPU gains what it gains on BLAKE2b. The argon2id
variant (crypto_pwhash per attempt) was left out: at a verify budget under 1 ms its
smallest memory setting is too small to be a memory-hardness argument.

Expiry: the epoch is in the hash, so a stamp is valid only while its epoch is within
MAX_AGE_EPOCHS of the verifier's (and at most one ahead, for clock skew); a stamped
record cannot be stockpiled for later floods. Replay: a stamp is bound to its record's
id, so the only replay is the same record again; `ReplayGuard` remembers the record ids
it accepted until their stamps would have expired anyway, which bounds its memory.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from nacl.bindings import (
    crypto_generichash_blake2b_final,
    crypto_generichash_blake2b_init,
    crypto_generichash_blake2b_salt_personal,
    crypto_generichash_blake2b_update,
)

from mesh.errors import BadStampError

SEED_LABEL = b"mesh stamp seed1"  # BLAKE2b personalisations: 16 bytes each
WORK_LABEL = b"mesh stamp work1"
EPOCH_SECONDS = 3600
MAX_AGE_EPOCHS = 24  # a stamp minted up to a day ago is still good
WORK_BYTES = 40960  # hashed per attempt (640 copies of the seed)
NONCE_BYTES = 16
STAMP_BYTES = 4 + NONCE_BYTES  # fits envelope.MAX_STAMP_BYTES (64)
MIN_COST, MAX_COST = 0, 40
DEFAULT_COST = 15  # ~1 s median to mint here (benchmarks/stamps.py)
REASONS = ("malformed", "too cheap", "expired", "from the future", "replayed")
_EPOCH = struct.Struct(">I")


def epoch_of(now: float) -> int:
    return int(now // EPOCH_SECONDS)


def _work(record_id: bytes, epoch: int) -> bytes:
    seed = crypto_generichash_blake2b_salt_personal(
        record_id + _EPOCH.pack(epoch), digest_size=64, person=SEED_LABEL
    )
    return seed * (WORK_BYTES // len(seed))


def _digest(nonce: bytes, work: bytes) -> bytes:
    state = crypto_generichash_blake2b_init(digest_size=32, person=WORK_LABEL)
    crypto_generichash_blake2b_update(state, nonce)
    crypto_generichash_blake2b_update(state, work)
    return bytes(crypto_generichash_blake2b_final(state))


def leading_zero_bits(digest: bytes) -> int:
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def _check_cost(cost: int) -> None:
    if type(cost) is not int or not MIN_COST <= cost <= MAX_COST:
        raise ValueError(f"a stamp cost is {MIN_COST} to {MAX_COST} bits")


def mint(
    record_id: bytes,
    cost: int,
    now: float,
    start: int | None = None,
    on_attempt: Callable[[], object] | None = None,
) -> bytes:
    """A stamp for `record_id` that meets `cost` in the epoch of `now`.

    Tries nonces start, start+1, ... (default: a random start); `on_attempt` is called
    once per attempt (benchmarks count them). Takes 2**cost attempts on average."""
    _check_cost(cost)
    epoch = epoch_of(now)
    work = _work(record_id, epoch)
    counter = int.from_bytes(os.urandom(NONCE_BYTES), "big") if start is None else start
    while True:
        nonce = (counter % (1 << (8 * NONCE_BYTES))).to_bytes(NONCE_BYTES, "big")
        if on_attempt is not None:
            on_attempt()
        if leading_zero_bits(_digest(nonce, work)) >= cost:
            return _EPOCH.pack(epoch) + nonce
        counter += 1


def verify(record_id: bytes, stamp: bytes, cost: int, now: float) -> None:
    """None if `stamp` proves `cost` bits of work on `record_id` and is fresh at `now`;
    else BadStampError (its `reason` one of REASONS but "replayed")."""
    _check_cost(cost)
    if type(stamp) is not bytes or len(stamp) != STAMP_BYTES:
        raise BadStampError("malformed", f"a stamp is {STAMP_BYTES} bytes")
    (epoch,) = _EPOCH.unpack_from(stamp)
    current = epoch_of(now)
    if epoch > current + 1:
        raise BadStampError("from the future", f"epoch {epoch}, now {current}")
    if epoch < current - MAX_AGE_EPOCHS:
        raise BadStampError("expired", f"epoch {epoch}, now {current}")
    bits = leading_zero_bits(work_digest(record_id, stamp))
    if bits < cost:
        raise BadStampError("too cheap", f"{bits} bits of work, {cost} asked")


def work_digest(record_id: bytes, stamp: bytes) -> bytes:
    """The digest whose leading zero bits a stamp is judged by (for vectors and tests)."""
    return _digest(stamp[4:], _work(record_id, stamp_epoch(stamp)))


def stamp_epoch(stamp: bytes) -> int:
    (epoch,) = _EPOCH.unpack_from(stamp)
    return int(epoch)


@dataclass
class ReplayGuard:
    """The record ids whose stamps were accepted, kept until those stamps expire.

    A replica or a recipient calls `accept` after `verify`: a second record with the
    same id is refused as "replayed" (the same request again, not a new one). Memory
    is bounded by what can be minted in MAX_AGE_EPOCHS + 2 epochs."""

    seen: dict[bytes, int] = field(default_factory=dict)  # record id -> stamp epoch

    def accept(self, record_id: bytes, stamp: bytes, now: float) -> None:
        self.forget_expired(now)
        if record_id in self.seen:
            raise BadStampError("replayed", "this record's stamp was already used")
        self.seen[record_id] = stamp_epoch(stamp)

    def forget_expired(self, now: float) -> None:
        oldest = epoch_of(now) - MAX_AGE_EPOCHS
        for record_id in [r for r, epoch in self.seen.items() if epoch < oldest]:
            del self.seen[record_id]
