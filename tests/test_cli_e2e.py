"""`mesh` end to end: daemons on 127.0.0.N, short-lived nodes, queued and offline
delivery, receipts, SIGKILL during send, disappearing messages. Loopback only."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_support import (
    Daemons,
    Watcher,
    befriend,
    control,
    mesh,
    messages,
    new_homes,
    read_line,
    spawn,
    status_of,
    texts,
    wait_until,
)

SHORT_LIVED = ["--no-mdns", "--host", "127.0.0.1"]


@pytest.fixture
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e")  # short: socket paths must fit in 107 bytes


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    started = Daemons()
    yield started
    started.cleanup()


def inbox_texts(home: Path, *args: str) -> list[str]:
    result = mesh(home, "inbox", "--json", *args)
    assert result.returncode == 0, result.stderr
    return [m["text"] for m in json.loads(result.stdout)["messages"]]


def test_queued_message_is_delivered_by_mesh_up(root: Path, daemons: Daemons) -> None:
    ann, ben = new_homes(root, "ann", "ben")
    ben_up = daemons.up(ben, "127.0.0.2")
    ann_up = daemons.up(ann, "127.0.0.1", ben_up.address)
    befriend(ann, ben)
    assert ann_up.stop() == 0 and ben_up.stop() == 0  # ann is alone from now on
    alone = mesh(ann, "send", "ben", "sent while alone", *SHORT_LIVED)
    assert alone.returncode == 3, alone.stderr
    assert alone.stdout.startswith("queued ")
    assert "stays queued" in alone.stderr and "mesh up" in alone.stderr
    outbox = json.loads(mesh(ann, "outbox", "--json").stdout)["messages"]
    assert [(m["text"], m["status"], m["contact"]) for m in outbox] == [
        ("sent while alone", "queued", "ben")
    ]

    ben_up = daemons.up(ben, "127.0.0.2")
    ann_up = daemons.up(ann, "127.0.0.1", ben_up.address)  # flushes the outbox on start
    wait_until(lambda: "sent while alone" in texts(ben), "ben to receive the queued message")
    wait_until(lambda: status_of(ann, "sent while alone") == "delivered", "ann's receipt")
    received = json.loads(mesh(ben, "inbox", "--json").stdout)["messages"]  # via ben's daemon
    assert [(m["text"], m["contact"]) for m in received] == [("sent while alone", "ann")]
    assert "delivered" in mesh(ann, "outbox").stdout

    # ann goes away. ben's message to her is stored on ben itself (exit 0) while ben still
    # lists ann as a peer, or stays queued (exit 3) once ben has dropped her...
    assert ann_up.stop() == 0
    later = mesh(ben, "send", "ann", "read me later")
    assert later.returncode in (0, 3), later.stderr
    # ...either way ann gets it with a short-lived node, which also sends the receipt.
    ben_address = ben_up.address
    wait_until(
        lambda: "read me later" in inbox_texts(ann, *SHORT_LIVED, "--peer", ben_address),
        "ann's short-lived inbox to fetch the message",
    )
    wait_until(lambda: status_of(ben, "read me later") == "delivered", "ben's receipt")
    assert texts(ann).count("read me later") == 1


def test_three_daemons_push_offline_delivery_and_watch(root: Path, daemons: Daemons) -> None:
    ann, ben, cat = new_homes(root, "ann", "ben", "cat")
    ann_up = daemons.up(ann, "127.0.0.1")
    ben_up = daemons.up(ben, "127.0.0.2", ann_up.address)
    cat_up = daemons.up(cat, "127.0.0.3", ann_up.address)
    wait_until(lambda: cat_up.peers() >= 2 and ben_up.peers() >= 2, "the three to meet")
    befriend(cat, ben)  # ann only relays

    ben_watch, cat_watch = Watcher(ben), Watcher(cat)
    sent = mesh(cat, "send", "ben", "hello ben")  # through cat's daemon
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.splitlines()[1].startswith(("stored on ", "delivered"))
    pushed = ben_watch.next_event(lambda e: e["event"] == "message")
    assert pushed["message"]["text"] == "hello ben" and pushed["message"]["contact"] == "cat"
    receipt = cat_watch.next_event(lambda e: e["event"] == "status" and e["status"] == "delivered")
    assert receipt["message_id"] == sent.stdout.split()[1]
    ben_watch.close()

    assert ben_up.stop() == 0
    assert not (ben / "control.sock").exists()
    away = mesh(cat, "send", "ben", "while you were away")
    assert away.returncode == 0, away.stderr  # ann holds it for ben
    assert status_of(cat, "while you were away") == "stored"

    daemons.up(ben, "127.0.0.2", ann_up.address)  # same home: same identity
    wait_until(lambda: "while you were away" in texts(ben), "ben to fetch after restarting")
    cat_watch.next_event(lambda e: e["event"] == "status" and e["status"] == "delivered")
    assert status_of(cat, "while you were away") == "delivered"
    assert texts(ben).count("while you were away") == 1
    assert texts(ben).count("hello ben") == 1
    assert control(ben, "read", peer="cat")["marked"] == 2
    cat_watch.close()
    peers = json.loads(mesh(cat, "peers", "--json").stdout)
    assert peers["live"] is True and ann_up.address in [p["address"] for p in peers["peers"]]


def test_sigkill_during_send_loses_nothing_and_never_duplicates(
    root: Path, daemons: Daemons
) -> None:
    ann, ben = new_homes(root, "ann", "ben")
    ben_up = daemons.up(ben, "127.0.0.2")
    ann_up = daemons.up(ann, "127.0.0.1", ben_up.address)
    befriend(ann, ben)
    assert ann_up.stop() == 0  # ann sends with short-lived nodes from now on
    # Killed right after it reports the message queued (committed, no network yet);
    # while it waits on a peer that never answers (network I/O in progress); and a
    # little later, at whatever point of delivery it has reached.
    moments = [("killed when queued", ben_up.address, 0.0)]
    moments.append(("killed while joining", "127.0.0.9:9", 0.3))
    moments += [(f"killed after {d} s", ben_up.address, d) for d in (0.01, 0.03, 0.1)]
    kill_sends(ann, moments)
    done = mesh(ann, *send_args("completed", ben_up.address))
    assert done.returncode == 0, done.stderr

    accepted = texts(ann, "out")
    assert {m[0] for m in moments} | {"completed"} <= set(accepted)
    daemons.up(ann, "127.0.0.1", ben_up.address)  # delivers whatever is still queued
    wait_until(lambda: set(accepted) <= set(texts(ben)), "every accepted message at ben")
    received = texts(ben)
    assert sorted(received) == sorted(accepted)  # each exactly once, nothing else
    # Receipts to a sender killed mid-send wait until the recipient has found the old
    # address dead (a failed ping, ~2 s) and followed the sender to its new port.
    wait_until(
        lambda: all(r.status == "delivered" for r in messages(ann, "out")),
        "receipts for every message",
        timeout=20.0,
        explain=lambda: [(r.body, r.status, r.replicas) for r in messages(ann, "out")],
    )


def send_args(text: str, peer: str) -> list[str]:
    return ["send", "ben", text, *SHORT_LIVED, "--peer", peer]


def kill_sends(home: Path, moments: list[tuple[str, str, float]]) -> None:
    """SIGKILL one `mesh send` per moment (text, peer, delay after `queued`), plus one
    killed at once, before it could write anything (it may or may not be accepted)."""
    early = spawn(home, *send_args("killed at once", moments[0][1]))
    early.kill()
    procs = [early]
    for text, peer, delay in moments:
        proc = spawn(home, *send_args(text, peer))
        procs.append(proc)
        assert read_line(proc) == f"queued {_queued_id(home, text)}"
        time.sleep(delay)  # picks a kill moment; nothing waits on it
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    for proc in procs:
        proc.wait(timeout=30)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def _queued_id(home: Path, text: str) -> str:
    for row in messages(home, "out"):
        if row.body.decode() == text:
            return row.msg_id.hex()
    return "(not in the store)"


def test_disappearing_messages(root: Path, daemons: Daemons) -> None:
    ann, ben = new_homes(root, "ann", "ben")
    ben_up = daemons.up(ben, "127.0.0.2")
    ann_up = daemons.up(ann, "127.0.0.1", ben_up.address)
    wait_until(lambda: ann_up.peers() >= 1, "ann to know ben")
    befriend(ann, ben)
    ben_id = json.loads(mesh(ben, "id", "--json").stdout)["id"]
    secret = mesh(ann, "contacts", "add", "ben-secret", ben_id, "--ttl", "7")
    assert secret.returncode == 0, secret.stderr
    assert "ben-secret has added you too" in secret.stdout  # one agreement per ID

    assert mesh(ann, "send", "ben-secret", "burn after reading").returncode == 0
    assert mesh(ann, "send", "ben", "gone in 6 s", "--ttl", "6").returncode == 0
    assert mesh(ann, "send", "ben", "stays").returncode == 0
    wait_until(lambda: {"burn after reading", "gone in 6 s"} <= set(texts(ben)), "delivery")
    ttls = {r.body.decode(): r.expires_at - r.sent_at for r in messages(ann, "out")}
    assert 7 <= ttls["burn after reading"] < 8 and 6 <= ttls["gone in 6 s"] < 7
    assert ttls["stays"] > 3600

    # Both daemons delete expired messages by themselves (no command needed).
    gone = {"burn after reading", "gone in 6 s"}
    wait_until(lambda: not gone & set(texts(ben)), "ben's copies to disappear", timeout=30)
    wait_until(lambda: not gone & set(texts(ann, "out")), "ann's copies to disappear", timeout=30)
    assert texts(ben) == ["stays"] and inbox_texts(ben) == ["stays"]
