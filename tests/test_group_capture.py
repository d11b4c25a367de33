"""Issue 17, what a watcher on the wire sees of a group: a raw socket on `lo` in a
network namespace this test creates (tests/capture_groups.py). No captured datagram
contains a message's text, the group's name, id, secrets, message keys or change ids,
nor any member's verify key, ID or ID-derived mailbox; the group's mailbox keys of the
day are on the wire (the capture works), and the removed member has nothing sent after
its removal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).with_name("capture_groups.py")


@pytest.fixture(scope="module")
def captured() -> dict[str, Any]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private network namespace")
    if subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=30).returncode:
        pytest.skip("cannot create a network namespace here")
    done = subprocess.run(
        ["unshare", "-n", sys.executable, str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_group_works_while_captured(captured: dict[str, Any]) -> None:
    assert captured["ready"] is True
    assert captured["ann"] == sorted(
        ["meet at the north gate", "bring water and the banner", "after the removal"]
    )
    assert captured["ben"] == sorted(["meet at the north gate", "bring water and the banner"])


def test_no_datagram_carries_group_content_keys_or_members(captured: dict[str, Any]) -> None:
    datagrams = [bytes.fromhex(d) for d in captured["datagrams"]]
    assert len(datagrams) > 200
    wire = b"\n".join(datagrams)
    for what, values in captured["forbidden"].items():
        assert values, what
        for value in values:
            raw = bytes.fromhex(value)
            assert raw not in wire, what
            assert raw.hex().encode() not in wire, what
    for key in captured["mailboxes"]:  # the capture works: the group mailboxes are there
        assert bytes.fromhex(key) in wire
