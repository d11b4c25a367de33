"""mesh.stamps: proof-of-work stamps bound to a record (issue #15, not yet on the wire).
A fixed vector (docs/protocol.md), and stamps refused when too cheap, for another record,
expired, from the future, tampered with or replayed. Low costs keep the tests fast."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh import stamps
from mesh.envelope import MAX_STAMP_BYTES
from mesh.errors import BadStampError
from mesh.stamps import EPOCH_SECONDS, MAX_AGE_EPOCHS, ReplayGuard, mint, verify

# The vector of docs/protocol.md: record id 00 01 .. 1f, now 1.8e9 (epoch 500000), cost
# 10, nonces counted from 0: the 1012th (0x3f3) is the first with 10 leading zero bits.
RECORD = bytes(range(32))
NOW = 1_800_000_000.0
VECTOR = bytes.fromhex("0007a120000000000000000000000000000003f3")
VECTOR_DIGEST = "0038fabed3b30d7418186f56d3605f5ccceeff276eb7cec64ed353200ea49cd7"


def reason(record_id: bytes, stamp: bytes, cost: int, now: float) -> str:
    with pytest.raises(BadStampError) as caught:
        verify(record_id, stamp, cost, now)
    return caught.value.reason


def test_fixed_vector() -> None:
    assert mint(RECORD, 10, NOW, start=0) == VECTOR
    verify(RECORD, VECTOR, 10, NOW)
    assert stamps.work_digest(RECORD, VECTOR).hex() == VECTOR_DIGEST
    assert stamps.leading_zero_bits(bytes.fromhex(VECTOR_DIGEST)) == 10
    assert reason(RECORD, VECTOR, 11, NOW) == "too cheap"
    tampered = VECTOR[:-1] + bytes([VECTOR[-1] ^ 1])
    assert reason(RECORD, tampered, 10, NOW) == "too cheap"


def test_fits_the_record_stamp_field() -> None:
    assert len(VECTOR) == stamps.STAMP_BYTES <= MAX_STAMP_BYTES


def test_too_cheap_wrong_record_and_malformed_are_refused() -> None:
    stamp = mint(RECORD, 6, NOW, start=1000)
    verify(RECORD, stamp, 6, NOW)
    other = bytes(32)
    # Deterministic (nonces from 1000): on the record 00..00 this nonce has 0 zero bits.
    assert reason(other, stamp, 6, NOW) == "too cheap"
    assert reason(RECORD, stamp[:-1], 6, NOW) == "malformed"
    assert reason(RECORD, stamp + b"\x00", 6, NOW) == "malformed"


def test_expired_and_future_stamps_are_refused() -> None:
    stamp = mint(RECORD, 4, NOW, start=0)
    verify(RECORD, stamp, 4, NOW + MAX_AGE_EPOCHS * EPOCH_SECONDS)  # the oldest still good
    assert reason(RECORD, stamp, 4, NOW + (MAX_AGE_EPOCHS + 1) * EPOCH_SECONDS) == "expired"
    verify(RECORD, stamp, 4, NOW - EPOCH_SECONDS)  # one epoch of clock skew is allowed
    assert reason(RECORD, stamp, 4, NOW - 2 * EPOCH_SECONDS) == "from the future"


def test_the_epoch_is_bound_into_the_work() -> None:
    stamp = mint(RECORD, 10, NOW, start=0)
    moved = (stamps.epoch_of(NOW) - 1).to_bytes(4, "big") + stamp[4:]
    assert reason(RECORD, moved, 10, NOW) == "too cheap"


def test_replayed_record_is_refused_until_its_stamp_expires() -> None:
    guard = ReplayGuard()
    stamp = mint(RECORD, 4, NOW, start=0)
    guard.accept(RECORD, stamp, NOW)
    with pytest.raises(BadStampError) as caught:
        guard.accept(RECORD, stamp, NOW + 60)
    assert caught.value.reason == "replayed"
    later = NOW + (MAX_AGE_EPOCHS + 2) * EPOCH_SECONDS
    guard.forget_expired(later)
    assert RECORD not in guard.seen  # memory bounded: expired stamps are verify's to refuse


def test_cost_out_of_range_is_the_callers_mistake() -> None:
    with pytest.raises(ValueError):
        mint(RECORD, stamps.MAX_COST + 1, NOW)
    with pytest.raises(ValueError):
        verify(RECORD, VECTOR, -1, NOW)


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(0, 6), st.floats(0, 2**31))
def test_every_minted_stamp_verifies(record_id: bytes, cost: int, now: float) -> None:
    stamp = mint(record_id, cost, now)
    verify(record_id, stamp, cost, now)
    assert stamps.stamp_epoch(stamp) == stamps.epoch_of(now)


@given(st.binary(max_size=40))
def test_garbage_never_raises_anything_but_bad_stamp(garbage: bytes) -> None:
    try:
        verify(RECORD, garbage, 8, NOW)
    except BadStampError as exc:
        assert exc.reason in stamps.REASONS
