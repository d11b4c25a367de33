"""BoundedLru never holds more than its limit and drops the least recently written."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.bounded import BoundedLru


def test_oldest_write_goes_first() -> None:
    lru: BoundedLru[str, int] = BoundedLru(2)
    lru.put("a", 1)
    lru.put("b", 2)
    lru.put("a", 3)  # rewritten: now the most recent
    lru.put("c", 4)
    assert list(lru.items()) == [("a", 3), ("c", 4)]


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        BoundedLru(0)


@given(st.integers(1, 8), st.lists(st.integers(0, 20), max_size=60))
def test_never_over_limit_and_keeps_the_latest(limit: int, keys: list[int]) -> None:
    lru: BoundedLru[int, int] = BoundedLru(limit)
    for i, key in enumerate(keys):
        lru.put(key, i)
        assert len(lru) <= limit
        assert lru[key] == i and next(reversed(lru)) == key
    latest = list(dict.fromkeys(reversed(keys)))[:limit]
    assert set(lru) == set(latest)
