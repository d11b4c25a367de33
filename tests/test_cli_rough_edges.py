"""Issue 18, items 2-11: the rough edges a new user hit, each through the real `mesh`
command (exit codes and one-line errors as in docs/cli.md). Daemons run on 127.0.0.N
with --no-mdns, so traffic stays on loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import one_error_line
from test_cli_support import (
    MESH,
    REPO,
    RUN_TIMEOUT,
    Daemons,
    add_contact,
    befriend,
    clean_env,
    make_home,
    messages,
    new_homes,
    status_of,
    wait_until,
)

from cli import bench
from mesh import vault
from mesh.errors import InvalidAddressError
from mesh.netaddr import parse_host_port

OFFLINE = ("--no-mdns",)  # a short-lived node with no peer: the message stays queued


def run(
    home: Path | None, *args: str | bytes, stdin: bytes | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    head: list[str | bytes] = [*MESH] + (["--home", str(home)] if home else [])
    done = subprocess.run(
        [*head, *args],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=RUN_TIMEOUT,
        cwd=REPO,
        env=clean_env(**env),
    )
    out, err = done.stdout.decode(), done.stderr.decode()
    return subprocess.CompletedProcess(done.args, done.returncode, out, err)


def usage_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 2 and click's `Error: ...` line naming the problem; never a traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(error) == 1, result.stderr
    for needle in needles:
        assert needle in error[0], error[0]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    make_home(tmp_path / "a", "Ann")
    return tmp_path / "a"


@pytest.fixture
def bob(home: Path) -> str:
    bob_id = make_home(home.parent / "b", "Bob")
    add_contact(home, "bob", bob_id)
    return bob_id


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    started = Daemons()
    yield started
    started.cleanup()


def out_texts(home: Path) -> list[tuple[str, str]]:
    return [(r.body.decode(), r.status) for r in messages(home, "out")]


# -- 2: text from stdin or a file --------------------------------------------------------


def test_send_reads_stdin_and_files(home: Path, bob: str, tmp_path: Path) -> None:
    done = run(home, "send", "bob", "-", *OFFLINE, stdin=b"secret plan\n")
    assert done.returncode == 3, done.stderr  # queued: no peer
    note = tmp_path / "note.txt"
    note.write_text("from a file ✓\n", "utf-8")
    assert run(home, "send", "bob", "--file", str(note), *OFFLINE).returncode == 3
    assert out_texts(home) == [("secret plan", "queued"), ("from a file ✓", "queued")]


def test_send_refuses_bad_text_sources(home: Path, bob: str, tmp_path: Path) -> None:
    usage_error(run(home, "send", "bob"), "missing TEXT", "-")
    (tmp_path / "x").write_text("x")
    usage_error(run(home, "send", "bob", "hi", "--file", str(tmp_path / "x")), "not both")
    one_error_line(run(home, "send", "bob", "-", stdin=b"\xff\xfe bad"), 1, "not UTF-8")
    one_error_line(run(home, "send", "bob", "-", stdin=b"\n"), 1, "empty")
    assert out_texts(home) == []


# -- 3: expired and failed ---------------------------------------------------------------


def test_a_message_that_expires_unsent_shows_as_failed(home: Path, bob: str) -> None:
    assert run(home, "send", "bob", "short-lived", "--ttl", "1", *OFFLINE).returncode == 3
    expires_at = messages(home, "out")[0].expires_at  # whole seconds, rounded up
    time.sleep(max(0.0, expires_at - time.time()) + 0.05)  # wall-clock expiry, by design
    doc = json.loads(run(home, "outbox", "--json").stdout)
    assert [(m["status"], m["text"]) for m in doc["messages"]] == [("failed", "")]
    plain = run(home, "outbox")
    assert "failed" in plain.stdout and "expired before any peer took it" in plain.stdout
    assert "short-lived" not in plain.stdout  # the text itself is gone


# -- 4: HOST:PORT checked at parse time --------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "needle"),
    [
        ("127.0.0.9:99999", "1 to 65535"),
        ("127.0.0.9:0", "1 to 65535"),
        ("localhost:4000", "not an IPv4 or IPv6"),
        ("::1:4000", "[ADDR]:PORT"),
        ("127.0.0.9", "not HOST:PORT"),
    ],
)
def test_bad_peer_addresses_are_usage_errors(home: Path, bob: str, peer: str, needle: str) -> None:
    usage_error(run(home, "send", "bob", "hi", "--peer", peer), needle)
    assert out_texts(home) == []  # refused before anything was written


def test_bad_hosts_and_chat_peers_are_usage_errors(home: Path) -> None:
    usage_error(run(home, "up", "--host", "my-laptop"), "not an IPv4 or IPv6")
    usage_error(run(home, "inbox", "--peer", "1.2.3.4:65536"), "1 to 65535")
    usage_error(run(home, "chat", "--peer", "1.2.3.4:99999"), "1 to 65535")


def test_parse_host_port_accepts_literals_only() -> None:
    assert parse_host_port("192.168.1.5:4000") == ("192.168.1.5", 4000)
    assert parse_host_port("[fe80::1]:65535") == ("fe80::1", 65535)
    for bad in ("[fe80::1]:", ":80", "1.2.3.4:+80", "1.2.3.4:٣", "1.2.3.400:80"):
        with pytest.raises(InvalidAddressError):
            parse_host_port(bad)


# -- 5, 6: who is around, per-contact inbox, read, read receipts -------------------------


def test_peers_inbox_read_and_read_receipts(tmp_path: Path, daemons: Daemons) -> None:
    ann, ben = new_homes(tmp_path, "ann", "ben")
    carol = make_home(tmp_path / "carol", "Carol")
    add_contact(ann, "carol", carol)  # never runs a node
    ben_up = daemons.up(ben, "127.0.0.61")
    daemons.up(ann, "127.0.0.62", ben_up.address)
    befriend(ann, ben)
    assert run(ben, "send", "ann", "first").returncode == 0
    wait_until(lambda: status_of(ben, "first") == "delivered", "the delivery receipt")

    doc = json.loads(run(ann, "peers", "--json").stdout)
    heard = {c["name"]: c for c in doc["contacts"]}
    assert heard["ben"]["recent"] and heard["ben"]["last_heard"] is not None
    assert heard["carol"]["last_heard"] is None and not heard["carol"]["recent"]
    plain = run(ann, "peers").stdout
    assert "ben" in plain and "active" in plain and "never heard from" in plain

    unread = json.loads(run(ann, "inbox", "ben", "--unread", "--json").stdout)["messages"]
    assert [m["text"] for m in unread] == ["first"]
    assert json.loads(run(ann, "inbox", "carol", "--json").stdout)["messages"] == []
    shown = run(ann, "read", "ben")
    assert shown.returncode == 0 and "first" in shown.stdout
    assert json.loads(run(ann, "inbox", "--unread", "--json").stdout)["messages"] == []
    assert "no unread messages" in run(ann, "read", "ben").stderr

    # Read receipts are opt-in: "first" was read with them off, "second" with them on.
    assert run(ann, "contacts", "receipts", "ben", "on").returncode == 0
    assert run(ben, "send", "ann", "second").returncode == 0
    wait_until(lambda: status_of(ben, "second") == "delivered", "the second receipt")
    assert run(ann, "read", "ben").returncode == 0
    wait_until(lambda: status_of(ben, "second") == "read", "the read receipt")
    assert status_of(ben, "first") == "delivered"
    assert "read" in run(ben, "outbox").stdout
    one_error_line(run(ann, "read", "nobody"), 1, "no contact named 'nobody'")
    one_error_line(run(ann, "contacts", "receipts", "nobody", "on"), 1, "no contact")


def test_read_without_a_daemon_marks_read_and_queues_the_receipt(home: Path, bob: str) -> None:
    with vault.open_store(home) as store:
        store.add_message(b"\x01" * 16, "in", bob, "text", b"hello", 1.0, 4e9, "received")
        store.set_contact_flags("bob", read_receipts=True)
        before = len(store.outbox_pending())
    done = run(home, "read", "bob", "--json")
    doc = json.loads(done.stdout)
    assert [m["text"] for m in doc["messages"]] == ["hello"] and doc["read_receipts"] == 1
    with vault.open_store(home) as store:
        assert store.unread_counts() == {}
        assert len(store.outbox_pending()) == before + 1  # durable: sent by the next node


# -- 7: no interface for mDNS; chat without a terminal -----------------------------------


def test_up_warns_when_only_loopback_exists(home: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root for unshare -n")
    inner = (
        f'ip link set lo up; exec "{sys.executable}" -m cli.main --home "{home}" '
        "up --host 127.0.0.1 --port 0"
    )
    proc = subprocess.Popen(
        ["unshare", "-n", "sh", "-c", inner],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=clean_env(),
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("listening on "), first
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=RUN_TIMEOUT)
    assert "warning: no network interface but loopback" in err


def test_chat_refuses_without_a_terminal(home: Path) -> None:
    one_error_line(run(home, "chat"), 1, "needs a terminal")


# -- 8: bad bytes, passphrases without a terminal ----------------------------------------


def test_non_utf8_argument_is_one_line(home: Path) -> None:
    done = run(home, "contacts", "add", b"b\xffd", "x")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "error: argument 5 is not valid UTF-8 text"


def test_passphrase_without_a_terminal_or_empty(tmp_path: Path) -> None:
    fresh = tmp_path / "new"
    done = run(fresh, "init", "--passphrase")
    one_error_line(done, 1, "no terminal", "MESH_PASSPHRASE")
    assert "GetPassWarning" not in done.stderr and not fresh.exists()
    one_error_line(run(fresh, "init", "--passphrase", MESH_PASSPHRASE=""), 1, "empty")
    assert not fresh.exists()
    assert run(fresh, "init", "--passphrase", MESH_PASSPHRASE="s3cret pass").returncode == 0
    up = run(fresh, "up", "--host", "127.0.0.1", "--no-mdns", MESH_PASSPHRASE="")
    one_error_line(up, 1, "empty")


# -- 9: --version, send --json, id --qr --json, markup-safe hints ------------------------


def test_version_and_json_outputs(home: Path, bob: str) -> None:
    done = run(None, "--version")
    assert done.returncode == 0 and done.stdout.strip() == "mesh 0.1.0"
    sent = run(home, "send", "bob", "hello", "--json", *OFFLINE)
    assert sent.returncode == 3
    doc = json.loads(sent.stdout)  # one document: the `queued` line is not on stdout
    assert doc["status"] == "queued" and len(doc["message_id"]) == 32
    ident = json.loads(run(home, "id", "--qr", "--json").stdout)
    assert "▀" in ident["qr"] or "█" in ident["qr"]
    assert "\x1b" not in ident["qr"]
    assert "qr" not in json.loads(run(home, "id", "--json").stdout)


def test_bench_notes_are_not_markup(capsys: pytest.CaptureFixture[str]) -> None:
    result = {
        "peer_kind": {"ours": 1},
        "peers": 1,
        "loop": "asyncio",
        "send_ms": None,
        "fetch20_ms": None,
        "fetch20_complete": 0,
        "push_ms": None,
        "rss_kb_per_peer": 1,
        "dht": None,
        "baselines": {},
        "notes": ["opendht: not installed (pip install 'mesh-messenger[bench]')"],
    }
    bench._print_summary(result)
    assert "pip install 'mesh-messenger[bench]'" in capsys.readouterr().out


# -- 10: self, duplicates, verified ------------------------------------------------------


def test_contacts_warn_and_verify(home: Path, bob: str) -> None:
    own = json.loads(run(home, "id", "--json").stdout)["id"]
    me = run(home, "contacts", "add", "me", own)
    assert me.returncode == 0 and "warning: this is your own ID" in me.stderr
    again = run(home, "contacts", "add", "bobby", bob)
    assert again.returncode == 0 and "warning: this ID is already saved as bob" in again.stderr
    assert "mesh contacts verify bobby" in again.stderr
    assert run(home, "contacts", "verify", "bob").returncode == 0
    rows = {
        c["name"]: c for c in json.loads(run(home, "contacts", "list", "--json").stdout)["contacts"]
    }
    assert rows["bob"]["verified"] and not rows["bobby"]["verified"]
    assert rows["me"]["agreed"] and not rows["bob"]["agreed"]  # bob never added Ann
    listing = run(home, "contacts", "list").stdout.splitlines()
    assert any(
        line.startswith("bob ") and "waiting for them to add you" in line for line in listing
    )
    assert not any(line.startswith("me ") and "waiting" in line for line in listing)
    assert any(line.startswith("bob ") and " verified " in line for line in listing)
    assert any(line.startswith("bobby") and "unverified" in line for line in listing)
    one_error_line(run(home, "contacts", "verify", "nobody"), 1, "no contact named 'nobody'")
