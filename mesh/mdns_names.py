"""What a node's mDNS announcements say, and how it recognises its own network's.

Open mesh: the service type `_mesh-msg._udp`, a TXT record with the protocol version and
the network name, instances `mesh-<random>`. Private mesh: nothing fixed (see `Naming`).
Pure: no sockets; the epoch comes from the caller's clock.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from mesh import mdns_records, wire
from mesh.errors import LocalError
from mesh.mdns_records import DNSRecord
from mesh.netkey import MDNS_EPOCH, NetworkKey

SERVICE_TYPE = "_mesh-msg._udp.local."
PROTOCOL_VERSION = str(wire.VERSION)
TXT_VERSION = b"v"
TXT_NETWORK = b"net"
MAX_NETWORK_NAME_BYTES = 63


def check_network_name(name: str) -> str:
    size = len(name.encode("utf-8"))
    if not 1 <= size <= MAX_NETWORK_NAME_BYTES or not name.isprintable():
        raise LocalError(
            f"network name must be 1-{MAX_NETWORK_NAME_BYTES} printable bytes: {name!r}"
        )
    return name


def txt_properties(network_name: str) -> dict[bytes, bytes]:
    """What we publish: the protocol version and the network name, nothing else."""
    return {TXT_VERSION: PROTOCOL_VERSION.encode(), TXT_NETWORK: network_name.encode("utf-8")}


def parse_txt(properties: dict[bytes, bytes | None]) -> str | None:
    """The network name of a peer that speaks our protocol version, else None."""
    if properties.get(TXT_VERSION) != PROTOCOL_VERSION.encode():
        return None
    raw = properties.get(TXT_NETWORK)
    if not raw or len(raw) > MAX_NETWORK_NAME_BYTES:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def instance_of(record: DNSRecord, service_types: Iterable[str] = (SERVICE_TYPE,)) -> str | None:
    """The lower-case service instance a record speaks about, if it is one of ours."""
    for service_type in service_types:
        name = mdns_records.instance_of(record, service_type)
        if name is not None:
            return name
    return None


class Naming:
    """What this node announces and browses for.

    Open mesh: the service type `_mesh-msg._udp`, a TXT record with the protocol version
    and the network name, instances `mesh-<random>`. Private mesh: nothing fixed at all:
    the service type is `_<tag>._udp` with a tag only members can compute from the
    network key (netkey.NetworkKey.mdns_tag), new every MDNS_EPOCH seconds; instance
    names are random hex; the TXT record is empty. Members browse the previous, current
    and next epoch's types, so clocks a little apart still meet.
    """

    def __init__(self, network_name: str, key: NetworkKey | None) -> None:
        self.network_name = check_network_name(network_name)
        self.key = key
        self._browsed: tuple[int, tuple[str, ...]] | None = None  # (epoch, types)

    def epoch(self, wall: float) -> int:
        return int(wall // MDNS_EPOCH)

    def service_type(self, epoch: int) -> str:
        if self.key is None:
            return SERVICE_TYPE
        return f"_{self.key.mdns_tag(epoch)}._udp.local."

    def browsed_types(self, epoch: int) -> tuple[str, ...]:
        """Asked for every batch of mDNS records: derived once per epoch, not each time."""
        if self.key is None:
            return (SERVICE_TYPE,)
        if self._browsed is None or self._browsed[0] != epoch:
            types = tuple(self.service_type(e) for e in (epoch, epoch - 1, epoch + 1))
            self._browsed = (epoch, types)
        return self._browsed[1]

    def label(self) -> str:
        token = secrets.token_hex(6)
        return token if self.key is not None else f"mesh-{token}"

    def properties(self) -> dict[bytes, bytes]:
        return {} if self.key is not None else txt_properties(self.network_name)

    def same_network(self, properties: dict[bytes, bytes | None]) -> bool | None:
        """True: ours; False: another network's; None: not a mesh announcement at all.
        A private mesh's instances are ours by their service type alone."""
        if self.key is not None:
            return True
        network = parse_txt(properties)
        return None if network is None else network == self.network_name
