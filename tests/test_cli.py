"""`mesh` through real subprocesses: identity, contacts, bad input, the daemon's lock and
control socket, and the demo. Traffic stays on loopback (see test_cli_support)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from netutil import wait_until
from test_cli_support import Daemons, add_contact, clean_env, make_home, mesh, messages

from mesh import vault
from mesh.control import ControlClient, encode_line
from mesh.daemon import Daemon
from mesh.envelope import MAX_TEXT_BYTES
from mesh.errors import UnknownContactError
from mesh.identity import Identity, is_valid_id
from mesh.node import Node
from mesh.runner import NetConfig, start_node


@pytest.fixture
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Short paths: a Unix socket path must fit in 107 bytes.
    return tmp_path_factory.mktemp("c")


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    started = Daemons()
    yield started
    started.cleanup()


def one_error_line(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """Assert exit `code` and exactly one line on stderr containing every needle."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


def snapshot(home: Path) -> tuple[object, ...]:
    """Everything a bad command must leave unchanged."""
    with vault.open_store(home) as store:
        contacts = [(c.name, c.peer_id, c.ttl) for c in store.list_contacts()]
        outbox = [item.msg_id for item in store.outbox_pending()]
    return (contacts, outbox, [r.msg_id for r in messages(home, "out")])


def test_init_id_and_contacts(root: Path) -> None:
    home = root / "a"
    created = mesh(home, "init", "--name", "ann")
    assert created.returncode == 0, created.stderr
    first = created.stdout.splitlines()[0]
    assert is_valid_id(first)
    assert os.stat(home).st_mode & 0o077 == 0  # the home is private

    one_error_line(mesh(home, "init"), 1, "already has an identity")

    plain = mesh(home, "id")
    assert plain.stdout.splitlines()[0] == first
    assert "fingerprint: " in plain.stdout
    doc = json.loads(mesh(home, "id", "--json").stdout)
    assert doc["id"] == first and doc["name"] == "ann" and len(doc["fingerprint"].split()) == 12
    qr = mesh(home, "id", "--qr")
    assert qr.stdout.splitlines()[0] == first
    assert len(qr.stdout.splitlines()) > 15 and "█" in qr.stdout

    other = make_home(root / "b", "ben")
    added = mesh(home, "contacts", "add", "ben", other.upper(), "--ttl", "60")
    assert added.returncode == 0, added.stderr
    listed = json.loads(mesh(home, "contacts", "list", "--json").stdout)
    assert [(c["name"], c["id"], c["ttl"]) for c in listed["contacts"]] == [("ben", other, 60)]
    assert other in mesh(home, "contacts", "list").stdout
    one_error_line(mesh(home, "contacts", "add", "ben", other), 1, "already exists")
    assert mesh(home, "contacts", "remove", "ben").returncode == 0
    assert json.loads(mesh(home, "contacts", "list", "--json").stdout) == {"contacts": []}
    one_error_line(mesh(home, "contacts", "remove", "ben"), 1, "no contact named 'ben'")


def typo(peer_id: str) -> str:
    position = 20
    swapped = "b" if peer_id[position] != "b" else "c"
    return peer_id[:position] + swapped + peer_id[position + 1 :]


@pytest.fixture
def sender(root: Path) -> Path:
    home = root / "s"
    make_home(home, "sam")
    add_contact(home, "bob", make_home(root / "bob", "bob"))
    return home


def contact_id(home: Path, name: str) -> str:
    with vault.open_store(home) as store:
        contact = store.get_contact(name)
    assert contact is not None
    return contact.peer_id


TOO_LONG = "é" * (MAX_TEXT_BYTES // 2 + 1)  # few enough characters, too many UTF-8 bytes


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["send", "carol", "hi"], ["no contact named 'carol'"]),
        (["send", "@typo", "hi"], ["typo"]),
        (["contacts", "add", "tim", "@typo"], ["typo"]),
        (["send", "meshabc", "hi"], ["too short"]),
        (["send", "bob", ""], ["empty"]),
        (["send", "bob", "   "], ["empty"]),
        (["send", "bob", TOO_LONG], [f"the limit is {MAX_TEXT_BYTES} bytes"]),
        (["contacts", "remove", "nobody"], ["no contact named 'nobody'"]),
    ],
    ids=["unknown", "typo", "typo-contact", "short-id", "empty", "blank", "too-long", "remove"],
)
def test_bad_input_is_one_line_and_changes_nothing(
    sender: Path, root: Path, args: list[str], needles: list[str]
) -> None:
    args = [typo(contact_id(sender, "bob")) if a == "@typo" else a for a in args]
    before = snapshot(sender)
    extra = ["--no-mdns"] if args[0] == "send" else []
    one_error_line(mesh(sender, *args, *extra), 1, *needles)
    assert snapshot(sender) == before


@pytest.mark.parametrize(
    "args",
    [
        ["id"],
        ["send", "bob", "hi", "--no-mdns"],
        ["inbox", "--no-mdns"],
        ["outbox"],
        ["peers"],
        ["contacts", "list"],
        ["up", "--host", "127.0.0.1", "--no-mdns"],
    ],
    ids=lambda a: a[0] if a[0] != "contacts" else "contacts",
)
def test_home_without_identity(root: Path, args: list[str]) -> None:
    home = root / "nobody"
    one_error_line(mesh(home, *args), 1, "no identity", "init")
    assert not home.exists()  # nothing was created


@pytest.mark.parametrize(
    "args",
    [
        ["send"],
        ["send", "bob", "hi", "--peer", "nowhere"],
        ["send", "bob", "hi", "--ttl", "0"],
        ["up", "--interface", "not-an-ip"],
        ["contacts", "add", "only-a-name"],
        ["frobnicate"],
    ],
    ids=["missing-args", "bad-peer", "bad-ttl", "bad-interface", "contact-no-id", "unknown"],
)
def test_usage_errors_exit_2(sender: Path, args: list[str]) -> None:
    before = snapshot(sender)
    result = mesh(sender, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert snapshot(sender) == before


def test_locked_identity_needs_its_passphrase(root: Path) -> None:
    home = root / "locked"
    env = {"MESH_PASSPHRASE": "correct horse"}
    created = mesh(home, "init", "--passphrase", env=clean_env(**env))
    assert created.returncode == 0, created.stderr
    # A locked home shows nothing but "locked", not even the ID.
    one_error_line(mesh(home, "id"), 1, "locked")
    shown = mesh(home, "id", env=clean_env(**env))
    assert shown.stdout.splitlines()[0] == created.stdout.splitlines()[0]
    vault.unlock(home, "correct horse")
    add_contact(home, "me", created.stdout.splitlines()[0])
    vault.lock(home)
    one_error_line(mesh(home, "outbox"), 1, "locked")
    one_error_line(mesh(home, "send", "me", "hi", "--no-mdns"), 1, "locked", "MESH_PASSPHRASE")
    wrong = mesh(home, "send", "me", "hi", "--no-mdns", env=clean_env(MESH_PASSPHRASE="nope"))
    one_error_line(wrong, 1, "wrong passphrase")
    vault.unlock(home, "correct horse")
    assert messages(home, "out") == []
    right = mesh(home, "send", "me", "hi", "--no-mdns", env=clean_env(**env))
    assert right.returncode == 3, right.stderr  # unlocked and queued: no peer anywhere


def test_second_daemon_and_sigkill(root: Path, daemons: Daemons) -> None:
    home = root / "d"
    make_home(home, "dora")
    first = daemons.up(home, "127.0.0.5")
    sock = home / "control.sock"
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    assert stat.S_ISSOCK(os.stat(sock).st_mode)

    second = mesh(home, "up", "--host", "127.0.0.5", "--no-mdns")
    one_error_line(second, 1, "already running", str(first.proc.pid))
    # Bad input through the daemon is reported the same way.
    one_error_line(mesh(home, "send", "carol", "hi"), 1, "no contact named 'carol'")

    first.kill()  # SIGKILL: no cleanup at all, the socket file stays behind
    assert sock.exists()
    again = daemons.up(home, "127.0.0.5")  # the kernel dropped the lock
    assert again.address.startswith("127.0.0.5:")
    assert again.stop() == 0
    assert not sock.exists()


def test_control_socket_answers_bad_requests(root: Path, daemons: Daemons) -> None:
    home = root / "e"
    me = make_home(home, "eve")
    stranger = Identity.generate().id
    daemons.up(home, "127.0.0.6")
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(10)
        conn.connect(str(home / "control.sock"))
        reader = conn.makefile("rb")
        answers = []
        for line in [
            b"not json\n",
            b'{"id": 7, "op": "launch"}\n',
            b'{"id": 8, "op": "status"}\n',
            b'{"id": 9, "op": "send", "to": 5}\n',
            # Ops that take an ID call it `peer`: the request's own `id` is echoed back.
            b'{"id": 10, "op": "add_contact", "peer": "%s"}\n' % stranger.encode(),
            b'{"id": 11, "op": "request", "peer": "%s", "text": "hi"}\n' % stranger.encode(),
        ]:
            conn.sendall(line)
            answers.append(json.loads(reader.readline()))
    assert answers[0]["ok"] is False and answers[0]["error"]["type"] == "ControlRequestError"
    assert answers[1]["id"] == 7 and "unknown op" in answers[1]["error"]["message"]
    assert answers[2]["id"] == 8 and answers[2]["ok"] and answers[2]["result"]["id"] == me
    assert answers[3]["ok"] is False and "'to'" in answers[3]["error"]["message"]
    assert answers[4]["id"] == 10 and answers[4]["result"] == {"ready": False}
    # Answered, its arguments accepted (no peer here to take it: another error is fine).
    assert answers[5]["id"] == 11 and answers[5].get("error", {}).get("type") != (
        "ControlRequestError"
    ), answers[5]
    # The daemon is still serving after all of that.
    assert json.loads(mesh(home, "peers", "--json").stdout)["live"] is True


def test_demo_runs_on_loopback() -> None:
    result = mesh(Path("/nonexistent-home-for-demo"), "demo")
    assert result.returncode == 0, (result.stdout, result.stderr)
    out = result.stdout
    for line in [
        "all 4 peers found each other",
        'ben received "Hi Ben! This one travels by push." by push',
        "dan goes offline",
        "dan is back on 127.0.0.4",
        'dan received "Dan, read this when you are back." from cat',
        "receipt: ann sees its message as delivered",
        "receipt: cat sees its message as delivered",
        "done in",
    ]:
        assert line in out, out
    assert "Traceback" not in result.stderr


async def test_control_client_watch(root: Path) -> None:
    """The API the chat UI uses: ControlClient against a Daemon, in one process."""
    ann_home, ben_home = root / "ann", root / "ben"
    make_home(ann_home, "ann")
    make_home(ben_home, "ben")
    ann = await start_node(ann_home, NetConfig("127.0.0.7", None, (), False), None)
    ben = await start_node(ben_home, NetConfig("127.0.0.8", None, [ann.address], False), None)
    daemon = Daemon(ben, ben_home)
    await daemon.start()
    client = await ControlClient.connect(ben_home)
    requests = await ControlClient.connect(ben_home)
    assert client is not None and requests is not None
    try:
        async with asyncio.timeout(20):
            # Both add each other: ann with the library, ben through its daemon (as the
            # chat's add-contact form does); ann's bundle waits for ben, who finds it.
            ann.store.add_contact("ben", ben.id)
            assert await ann.add_contact(ben.id) is False
            ben.store.add_contact("ann", ann.id)
            assert (await requests.request("add_contact", peer=ann.id))["ready"] is True
            assert await wait_until(lambda: ann.contact_ready(ben.id), 10)
            events = await client.watch()
            await ann.send(ben.id, "hi ben")
            message = await next_event(events, "message")
            assert message["message"]["text"] == "hi ben"
            assert message["message"]["peer"] == ann.id
            sent = await requests.request("send", to=ann.id, text="hi ann")
            # A receipt can overtake the store acknowledgements on loopback.
            assert sent["status"] == "delivered" or sent["replicas"] >= 1
            status = await next_event(events, "status")
            assert status["message_id"] == sent["message_id"]
            with pytest.raises(UnknownContactError):
                await requests.request("send", to="carol", text="hi")
    finally:
        await client.close()
        await requests.close()
        await daemon.stop()
        await ben.stop()
        await ann.stop()
    assert not (ben_home / "control.sock").exists()


async def next_event(events: AsyncIterator[dict[str, Any]], kind: str) -> dict[str, Any]:
    async for event in events:
        if event["event"] == kind:
            return event
    raise AssertionError(f"the daemon closed the connection before a {kind!r} event")


CONTROL_REQUESTS = st.fixed_dictionaries(
    {
        "id": st.one_of(st.none(), st.integers(), st.text(max_size=5)),
        "op": st.sampled_from(["status", "send", "fetch", "inbox", "outbox", "read", "x", ""]),
    },
    # No "peers": a random HOST:PORT would send a ping somewhere off loopback.
    optional={
        "to": st.one_of(st.text(max_size=70), st.integers()),
        "text": st.one_of(st.text(max_size=50), st.none()),
        "ttl": st.one_of(st.none(), st.integers(), st.booleans(), st.floats(), st.text()),
        "fetch": st.booleans(),
        "peer": st.one_of(st.text(max_size=70), st.lists(st.integers(), max_size=2)),
    },
).map(lambda doc: json.dumps(doc).encode())


def test_control_requests_never_break_the_daemon(tmp_path: Path) -> None:
    """Whatever a local client sends, the daemon answers with ok true/false."""
    loop = asyncio.new_event_loop()
    node = loop.run_until_complete(Node.start(home=None, host="127.0.0.1", port=0))
    daemon = Daemon(node, tmp_path)

    @settings(max_examples=300, deadline=None)
    @given(st.one_of(st.binary(max_size=200), CONTROL_REQUESTS))
    def check(line: bytes) -> None:
        answer = loop.run_until_complete(daemon.answer(line, None))  # type: ignore[arg-type]
        assert answer["ok"] in (True, False)
        if not answer["ok"]:
            assert answer["error"]["type"] != "MeshError", answer  # no internal error
        json.loads(encode_line(answer))

    try:
        check()
    finally:
        loop.run_until_complete(node.stop())
        loop.close()
