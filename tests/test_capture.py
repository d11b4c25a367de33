"""What a watcher on the Wi-Fi captures: every datagram on `lo`, read with a raw socket in
a network namespace this test creates (so nothing else is on that `lo`).

Open mesh: the datagrams are readable msgpack and carry ids and keys (the baseline that
shows the capture works). Private mesh: none decodes, none contains any node id, mailbox
key, record id or verify key the test knows, as bytes or as hex.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest

from mesh import wire

SCRIPT = Path(__file__).with_name("capture_peer.py")


def capture(network_key: bool) -> dict[str, Any]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private network namespace")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("cannot create a network namespace here")
    args = ["unshare", "-n", sys.executable, str(SCRIPT)]
    if network_key:
        args.append("--network-key")
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def known_values(result: dict[str, Any]) -> list[bytes]:
    values = []
    for name in ("node_ids", "mailbox_keys", "record_ids", "verify_keys"):
        values.extend(bytes.fromhex(h) for h in result[name])
    return values


def decodes(data: bytes) -> bool:
    """Readable as our framing: a msgpack array of 5, with or without the version byte.
    (Any random buffer has a tiny chance of being *some* msgpack value, e.g. a bin8 of
    exactly the right length; an array of five is out of reach.)"""
    for start in (0, 1):
        try:
            obj = msgpack.unpackb(data[start:])
        except Exception:
            continue
        if type(obj) is list and len(obj) == 5:
            return True
    return False


def test_open_mesh_capture_shows_what_a_watcher_reads() -> None:
    result = capture(network_key=False)
    datagrams = [bytes.fromhex(h) for h in result["datagrams"]]
    assert len(datagrams) > 100
    assert all(decodes(d) and wire.decode_datagram(d) for d in datagrams)  # all readable
    everything = b"".join(datagrams)
    assert bytes.fromhex(result["verify_keys"][1]) in everything  # the owner's key, in clear


def test_private_mesh_capture_shows_nothing_a_watcher_can_use() -> None:
    result = capture(network_key=True)
    datagrams = [bytes.fromhex(h) for h in result["datagrams"]]
    assert len(datagrams) > 100  # the same work was captured
    assert not any(decodes(d) for d in datagrams)
    secrets = known_values(result)
    assert len(secrets) == 12 + 2 + 10 + 2
    for data in datagrams:
        lowered = data.lower()
        for value in secrets:
            assert value not in data
            assert value.hex().encode() not in lowered
    # Nothing fixed either: no common prefix a filter could match on.
    assert len({d[:2] for d in datagrams}) > len(datagrams) // 4
