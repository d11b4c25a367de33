"""Routing table: kademlia's KBucket/RoutingTable, with the fixes a hostile LAN needs.

What differs from kademlia 2.2.3 and why:
- `find_neighbors` considers every contact. kademlia's `TableTraverser` stops before it
  has visited all buckets, so at 300 nodes some lookups start from 1-3 contacts.
- `add_contact` never schedules a ping itself (kademlia fires `asyncio.ensure_future`);
  it returns the least-recently-seen contact of a full bucket so the caller can check it
  is alive. Long-lived live contacts are kept, newcomers wait in the replacement cache
  (Kademlia's own rule, and what makes Sybil floods expensive).
- Contacts are only added by the caller once they answered a round trip (see
  protocol.py); at most `max_per_ip` contacts share one IP address.
"""

from __future__ import annotations

from collections.abc import Iterator

from kademlia.node import Node as _KademliaNode
from kademlia.routing import KBucket as _KademliaBucket
from kademlia.routing import RoutingTable as _KademliaTable

ID_SPACE = 2**160


class Peer(_KademliaNode):
    """A peer: 20-byte node id plus the UDP address it answered from."""

    __slots__ = ("failures", "id", "ip", "last_seen", "long_id", "port")

    def __init__(self, node_id: bytes, ip: str, port: int) -> None:
        self.id = node_id
        self.ip = ip
        self.port = port
        self.long_id = int.from_bytes(node_id, "big")
        self.failures = 0
        self.last_seen = 0.0  # loop time of its last answer

    @property
    def address(self) -> tuple[str, int]:
        return (self.ip, self.port)

    def to_tuple(self) -> tuple[bytes, str, int]:
        return (self.id, self.ip, self.port)

    def __repr__(self) -> str:
        return f"Peer({self.id.hex()[:8]}, {self.ip}:{self.port})"


class Bucket(_KademliaBucket):
    def __init__(self, lower: int, upper: int, ksize: int) -> None:
        super().__init__(lower, upper, ksize, replacementNodeFactor=1)

    def split(self) -> tuple[Bucket, Bucket]:
        midpoint = (self.range[0] + self.range[1]) // 2
        low = Bucket(self.range[0], midpoint, self.ksize)
        high = Bucket(midpoint + 1, self.range[1], self.ksize)
        # Replacement candidates are dropped: they were never accounted as contacts.
        for node in self.nodes.values():
            (low if node.long_id <= midpoint else high).add_node(node)
        return low, high

    def least_recent(self) -> Peer:
        return next(iter(self.nodes.values()))  # type: ignore[no-any-return]


class RoutingTable(_KademliaTable):
    def __init__(self, node_id: bytes, ksize: int = 20, max_per_ip: int = 4) -> None:
        self.own_long_id = int.from_bytes(node_id, "big")
        self.node = Peer(node_id, "0.0.0.0", 1)
        self.ksize = ksize
        self.max_per_ip = max_per_ip
        self.per_ip: dict[str, int] = {}
        self.by_id: dict[bytes, Peer] = {}
        self._by_long: dict[int, Peer] | None = None  # find_neighbors' index, rebuilt on change
        self.buckets: list[Bucket] = [Bucket(0, ID_SPACE, ksize)]

    def flush(self) -> None:  # kademlia calls this from __init__; we set state there
        self.buckets = [Bucket(0, ID_SPACE, self.ksize)]

    def __len__(self) -> int:
        return len(self.by_id)

    def __contains__(self, node_id: bytes) -> bool:
        return node_id in self.by_id

    def contacts(self) -> Iterator[Peer]:
        return iter(list(self.by_id.values()))

    def get(self, node_id: bytes) -> Peer | None:
        return self.by_id.get(node_id)

    def bucket_index(self, long_id: int) -> int:
        for index, bucket in enumerate(self.buckets):
            if long_id <= bucket.range[1]:
                return index
        return len(self.buckets) - 1

    def add_contact(self, node: Peer) -> Peer | None:
        """Insert or refresh a verified contact.

        Returns None when the contact is in the table (or was refused by the per-IP cap),
        or the least-recently-seen contact of a full bucket, which the caller should ping:
        if that one fails, `remove_contact` promotes the newcomer from the replacement cache.
        """
        if node.id == self.node.id:
            return None
        known = self.by_id.get(node.id)
        if known is not None and known.address != node.address:
            return None  # an id does not move to another address without going stale first
        if known is None and self.per_ip.get(node.ip, 0) >= self.max_per_ip:
            return None
        index = self.bucket_index(node.long_id)
        bucket = self.buckets[index]
        while known is None and len(bucket) >= self.ksize and self._splittable(bucket):
            self.split_bucket(index)
            index = self.bucket_index(node.long_id)
            bucket = self.buckets[index]
        if bucket.add_node(known or node):
            if known is None:
                self._account(node, +1)
            else:
                known.failures = 0
            return None
        return bucket.least_recent()

    def would_accept(self, node_id: bytes, ip: str) -> bool:
        """Could a stranger with this id enter the table now (so verifying it is worth a
        ping)? False if it is known, its IP is at the cap, or its bucket is full and
        cannot split."""
        if node_id in self.by_id or node_id == self.node.id:
            return False
        if self.per_ip.get(ip, 0) >= self.max_per_ip:
            return False
        bucket = self.buckets[self.bucket_index(int.from_bytes(node_id, "big"))]
        return len(bucket) < self.ksize or self._splittable(bucket)

    def _splittable(self, bucket: Bucket) -> bool:
        low: int = bucket.range[0]
        high: int = bucket.range[1]
        return low <= self.own_long_id <= high and high > low

    def split_bucket(self, index: int) -> None:
        low, high = self.buckets[index].split()
        self.buckets[index : index + 1] = [low, high]

    def remove_contact(self, node: Peer) -> None:
        """Forget a contact that failed, and promote the freshest replacement.

        Only the entry at `node`'s own address goes: a peer advertising a known id at
        another (dead) address must not be able to evict the contact we verified.
        """
        bucket = self.buckets[self.bucket_index(node.long_id)]
        held = bucket.nodes.get(node.id)
        if held is None or held.address != node.address:
            spare = bucket.replacement_nodes.get(node.id)
            if spare is not None and spare.address == node.address:
                del bucket.replacement_nodes[node.id]
            return
        del bucket.nodes[node.id]
        self._account(held, -1)
        self._promote(bucket)

    def _promote(self, bucket: Bucket) -> None:
        while bucket.replacement_nodes:
            _, candidate = bucket.replacement_nodes.popitem()  # most recently seen first
            if candidate.id in self.by_id or self.per_ip.get(candidate.ip, 0) >= self.max_per_ip:
                continue  # the cap holds for promotions too
            bucket.nodes[candidate.id] = candidate
            self._account(candidate, +1)
            return

    def _account(self, node: Peer, delta: int) -> None:
        self._by_long = None
        if delta > 0:
            self.by_id[node.id] = node
        else:
            self.by_id.pop(node.id, None)
        count = self.per_ip.get(node.ip, 0) + delta
        if count > 0:
            self.per_ip[node.ip] = count
        else:
            self.per_ip.pop(node.ip, None)

    def find_neighbors(
        self, target: bytes, k: int | None = None, exclude: bytes | None = None
    ) -> list[Peer]:
        """The k contacts closest to `target` by XOR distance, across every bucket."""
        want = k or self.ksize
        by_long = self._by_long
        if by_long is None:
            by_long = self._by_long = {c.long_id: c for c in self.by_id.values()}
        # A full sort (2x faster than heapq.nsmallest at ~100 contacts) keyed by the
        # target's own int.__xor__, so no Python function runs per contact.
        t = int.from_bytes(target, "big")
        nearest = sorted(by_long, key=t.__xor__)[: want + 1]
        found = [by_long[i] for i in nearest]
        if exclude is not None:
            found = [c for c in found if c.id != exclude]
        return found[:want]
