"""BoundedLru: a dict that keeps at most `limit` entries, least recently written out first.

Every map a peer can grow (addresses it makes us remember, keys it makes us cache) is one
of these, so no stranger can bloat a node: one helper instead of a copy of "insert,
move_to_end, popitem when over N" per map.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedLru(dict[K, V]):
    """A plain dict underneath (insertion order is recency): an OrderedDict costs a
    linked-list node per entry, measured +4 KiB per peer at 300 peers."""

    __slots__ = ("limit",)  # no per-instance __dict__: every peer has six of these

    def __init__(self, limit: int) -> None:
        super().__init__()
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit

    def put(self, key: K, value: V) -> None:
        """Insert or replace `key` as the most recent entry; drop the oldest past `limit`."""
        self.pop(key, None)  # re-inserted below: now the most recent
        self[key] = value
        if len(self) > self.limit:
            del self[next(iter(self))]
