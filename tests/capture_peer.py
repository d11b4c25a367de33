"""Run a small mesh on loopback and capture every datagram on `lo` with a raw socket.

Run it only inside a network namespace of its own (tests/test_capture.py starts it with
`unshare -n`): there `lo` carries nothing but this script's traffic. Prints one JSON
object: the captured UDP payloads (hex) and every value a watcher must not find in them.

    unshare -n python tests/capture_peer.py [--network-key] [--peers 12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import struct
import subprocess
import time

from mesh import envelope
from mesh.dht.server import DhtServer
from mesh.identity import Identity
from mesh.netkey import NetworkKey

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4  # loopback shows each packet twice; keep the incoming copy


class Capture:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind(("lo", 0))
        self.sock.setblocking(False)
        self.payloads: list[bytes] = []

    def drain(self) -> None:
        while True:
            try:
                frame, meta = self.sock.recvfrom(65535)
            except BlockingIOError:
                return
            if meta[2] == PACKET_OUTGOING:
                continue
            payload = udp_payload(frame[14:])  # after the (all-zero) Ethernet header
            if payload is not None:
                self.payloads.append(payload)


def udp_payload(packet: bytes) -> bytes | None:
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != 17:  # IPv4, UDP only
        return None
    header = (packet[0] & 0x0F) * 4
    (length,) = struct.unpack_from("!H", packet, header + 4)
    return packet[header + 8 : header + length]


async def scenario(peers: int, key: NetworkKey | None, capture: Capture) -> dict[str, list[str]]:
    loop = asyncio.get_running_loop()
    loop.add_reader(capture.sock.fileno(), capture.drain)
    servers = [DhtServer(network_key=key) for _ in range(peers)]
    for i, server in enumerate(servers):
        await server.listen(f"127.0.0.{i + 1}")
    seed = servers[0].address
    assert seed is not None
    for server in servers[1:]:
        await server.bootstrap([seed])
    alice, bob = Identity.generate(), Identity.generate()
    key_bob = bob.public.mailbox_key
    record_ids = []
    for i in range(10):
        _, record = envelope.seal_message(
            alice, bob.public, "text", f"meet at gate {i}".encode(), time.time(), 3600
        )
        record_ids.append(record.id)
        await servers[1].put(key_bob, [record])

    def owner(op: str, payload: bytes) -> envelope.OwnerRequest:
        return envelope.sign_owner_request(bob, op, payload, time.time())

    await servers[-1].subscribe(key_bob, lambda d: owner("listen", envelope.listen_payload(d)))
    fetched = await servers[-1].fetch(key_bob)
    await servers[-1].delete(owner("delete", envelope.delete_payload([r.id for r in fetched])))
    await asyncio.sleep(0.2)
    capture.drain()
    loop.remove_reader(capture.sock.fileno())
    await asyncio.gather(*(s.close() for s in servers))
    secrets = {
        "node_ids": [s.node_id.hex() for s in servers],
        "mailbox_keys": [key_bob.hex(), alice.public.mailbox_key.hex()],
        "record_ids": [rid.hex() for rid in record_ids],
        "verify_keys": [alice.public.verify_key.hex(), bob.public.verify_key.hex()],
    }
    return secrets


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--network-key", action="store_true")
    parser.add_argument("--peers", type=int, default=12)
    args = parser.parse_args()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    key = NetworkKey.generate("capture") if args.network_key else None
    capture = Capture()
    secrets = asyncio.run(scenario(args.peers, key, capture))
    print(json.dumps({"datagrams": [p.hex() for p in capture.payloads], **secrets}))


if __name__ == "__main__":
    main()
