"""What `Node` takes and gives besides itself: its options, a send's receipt, and the
parsing of addresses and network keys (split from mesh/node.py; `mesh.node` re-exports
them)."""

from __future__ import annotations

from dataclasses import dataclass

from mesh import keyring, stamps
from mesh.errors import InvalidIdError, InvalidInviteError
from mesh.netkey import NetworkKey
from mesh.wire import Address


@dataclass(frozen=True)
class Receipt:
    message_id: bytes
    record_id: bytes  # empty while waiting for the contact's keys
    replicas: int
    waiting: bool = False  # they have not added us yet: queued until their keys come


@dataclass(frozen=True)
class NodeOptions:
    # Fetch as a fallback to push: every `poll_interval` while no listen of ours is live
    # (no replica acknowledged our last subscription, or its grant ran out), every
    # `live_poll_interval` while one is (push is then the main path; see docs/simulation.md).
    poll_interval: float = 30.0
    live_poll_interval: float = 1800.0
    # Retry queued sends: a fallback, since every catch-up round (a peer found, a network
    # healed) flushes the outbox at once. 30 s (was 10 s): the wake-ups of every idle
    # peer were the simulator's largest avoidable cost (docs/simulation.md).
    outbox_interval: float = 30.0
    delete_delay: float = 0.2
    rejoin_interval: float = 10.0  # at most one catch-up round per this many seconds
    receipts: bool = True
    # A catch-up round (subscribe, flush the outbox, fetch) after contacts appear only
    # when at least this many new ones arrive within `burst_window` seconds, and at least
    # a tenth of the table: a partition healing, a network merging. One peer returning
    # (churn) is one new contact and is not worth a round for the whole network.
    burst_contacts: int = 4
    burst_window: float = 60.0
    burst_interval: float = 300.0  # at most one round per this many seconds for bursts
    # Listen (push subscription) at this many of the mailbox's replicas, the closest:
    # every sender stores on all of them, and one push is enough. Each listen costs the
    # replica an Ed25519 verification and, usually, a ping to verify our address.
    listen_replicas: int = 10
    # Our mailbox key changes every epoch (mesh.keyring); the length is announced to
    # contacts in our bundle. Tests and the simulator shorten it; a day ships.
    epoch_seconds: int = keyring.EPOCH_SECONDS
    # The stamp cost (bits of work) our door asks of strangers' requests (issue 15):
    # 13 is ~1 s on a laptop. Only used while requests are on.
    request_cost: int = stamps.DEFAULT_COST


def parse_address(value: Address | str) -> Address:
    if isinstance(value, tuple):
        return (str(value[0]), int(value[1]))
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host or not 1 <= int(port) <= 65535:
        raise InvalidIdError(f"not a HOST:PORT address (port 1-65535): {value!r}")
    return (host.strip("[]"), int(port))


def as_network_key(key: NetworkKey | bytes | None) -> NetworkKey | None:
    """A private mesh's key from its `NetworkKey` or its 32 bytes (LocalError if not)."""
    if key is None or isinstance(key, NetworkKey):
        return key
    if type(key) is not bytes:
        raise InvalidInviteError("a network key is a NetworkKey or 32 bytes")
    return NetworkKey("private", key)
