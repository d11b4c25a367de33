"""Stamps: proof of work bound to one record on one mailbox of one day (issue 15).

As LXMF's stamps, a stamp is work the sender spends per message and the recipient sets
the price of; here the work is memory-hard (libsodium's argon2id at 256 KiB, one pass),
so a GPU farm gains less over a phone than with a plain hash:

    digest = argon2id13(password = "mesh/stamp/v1\\0" || mailbox_key || record_id || nonce,
                        salt = BLAKE2b-128("mesh/stamp-salt/v1\\0" || mailbox_key),
                        opslimit 1, memlimit 256 KiB, 32 bytes)
    stamp  = [version 1][cost 1 byte][4 nonces, 8 bytes each]   (34 bytes; a record holds 64)

valid at cost `c` if the four nonces are distinct and each one's digest starts with
`c - 2` zero bits: four solutions of a quarter of the work each (as Equihash-style
k-solution puzzles do) cost the same on average as one of `c` bits but vary far less:
the time to mint is a sum of four geometric draws, not one. The mailbox key is a requests
mailbox of one day (mesh.keyring.requests_key): a stamp is good for that day only (and
the next, the overlap), and for one record id only: it cannot be moved to another record
and a replay of the same record is a duplicate (same id). Minting takes 2^c argon2id runs
on average (0.14 ms each here, so cost 13 is ~1 s); verifying takes four (0.6 ms).
"""

from __future__ import annotations

import hashlib
import os
import struct

import nacl.pwhash.argon2id as argon2id

from mesh.errors import MalformedError, RefusedError

__all__ = [
    "DEFAULT_COST",
    "MAX_COST",
    "MIN_REPLICA_COST",
    "STAMP_SIZE",
    "cost_of",
    "mint",
    "verify",
]

STAMP_VERSION = 1
SOLUTIONS = 4
SOLUTION_BITS = 2  # log2(SOLUTIONS): each solution carries cost - 2 bits of work
STAMP_SIZE = 2 + 8 * SOLUTIONS
DEFAULT_COST = 13  # ~1 s to mint on this machine (docs/benchmarks.md)
MIN_REPLICA_COST = 6  # what a replica demands of any stamped record (>= SOLUTION_BITS)
MAX_COST = 24
_MEMLIMIT = 256 * 1024
_OPSLIMIT = 1
_LABEL = b"mesh/stamp/v1\x00"
_SALT_LABEL = b"mesh/stamp-salt/v1\x00"


def _digest(mailbox_key: bytes, record_id: bytes, nonce: bytes) -> bytes:
    salt = hashlib.blake2b(_SALT_LABEL + mailbox_key, digest_size=argon2id.SALTBYTES).digest()
    password = _LABEL + mailbox_key + record_id + nonce
    digest: bytes = argon2id.kdf(32, password, salt, opslimit=_OPSLIMIT, memlimit=_MEMLIMIT)
    return digest


def _zero_bits(digest: bytes) -> int:
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def mint(mailbox_key: bytes, record_id: bytes, cost: int = DEFAULT_COST) -> bytes:
    """Search nonces until SOLUTIONS of them meet `cost`; the stamp for this record on
    this mailbox."""
    if not SOLUTION_BITS <= cost <= MAX_COST:
        raise ValueError(f"a stamp cost is {SOLUTION_BITS} to {MAX_COST} bits")
    each = cost - SOLUTION_BITS
    start = int.from_bytes(os.urandom(8), "big")
    found: list[bytes] = []
    step = 0
    while len(found) < SOLUTIONS:
        nonce = struct.pack(">Q", (start + step) % (1 << 64))
        step += 1
        if _zero_bits(_digest(mailbox_key, record_id, nonce)) >= each:
            found.append(nonce)
    return bytes([STAMP_VERSION, cost]) + b"".join(found)


def cost_of(stamp: bytes) -> int:
    """The cost a stamp claims (checked by `verify`); MalformedError if not a stamp."""
    if type(stamp) is not bytes or len(stamp) != STAMP_SIZE or stamp[0] != STAMP_VERSION:
        raise MalformedError("stamp: not a version-1 stamp")
    return stamp[1]


def verify(mailbox_key: bytes, record_id: bytes, stamp: bytes, cost: int) -> None:
    """RefusedError unless `stamp` is valid for this record on this mailbox at `cost` or
    more (MalformedError if it is not a stamp at all)."""
    claimed = cost_of(stamp)
    if claimed < cost:
        raise RefusedError(f"stamp too cheap: {claimed} bits, {cost} wanted")
    if not SOLUTION_BITS <= claimed <= MAX_COST:
        raise MalformedError("stamp: cost out of range")
    nonces = [stamp[2 + 8 * i : 10 + 8 * i] for i in range(SOLUTIONS)]
    if len(set(nonces)) != SOLUTIONS:
        raise RefusedError("stamp does not hold: a solution is repeated")
    for nonce in nonces:
        if _zero_bits(_digest(mailbox_key, record_id, nonce)) < claimed - SOLUTION_BITS:
            raise RefusedError("stamp does not hold for this record and mailbox")
