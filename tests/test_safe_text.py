"""Terminal safety (issue #15): text from a peer is shown with its control characters as
visible escapes (mesh.safe_text) by `mesh inbox`, `mesh contacts list` and the chat, while
JSON stays exact; `mesh send` refuses text that is not UTF-8 with one line.

The end-to-end tests run two real `mesh up` on 127.0.0.151-152 (loopback only, bounded
waits); Ben sends Ann a message built to take over a terminal."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from test_chat import SIZE, line_with, no_passphrase, plain, until
from test_cli_support import (
    Daemons,
    add_contact,
    befriend,
    control,
    mesh,
    new_homes,
    texts,
    wait_until,
)

from cli.main import cli
from mesh import vault
from mesh.chat import ChatApp, find_or_start
from mesh.chat.view import ESCAPE_STYLE, message_text
from mesh.safe_text import is_safe, json_text, neutralise, one_line, pieces
from mesh.store import MessageRow

# Clears the screen, renames the window, rings the bell, an 8-bit CSI and a C1 NEL, a
# carriage return that would overwrite the line, a bidi override and isolate, a DCS.
EVIL = (
    "hi \x1b[2J\x1b]0;pwned\x07 there\x9b31m red\x85 \r\u202eevil\u2066x\u2069"
    " \x1bP1$r\x1b\\ [bold red]fake verified[/] \x7f\x00end\nsecond line\tok"
)
# What no rendered output may contain: C0 but newline and tab, DEL, C1, bidi controls.
FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def any_text() -> st.SearchStrategy[str]:
    """Any string at all, lone surrogates included (st.text() leaves those out)."""
    return st.text(st.characters(codec=None, exclude_categories=()), max_size=200)


# -- the function -------------------------------------------------------------------------


@given(any_text())
def test_neutralised_text_holds_no_control_character(text: str) -> None:
    shown = neutralise(text)
    assert FORBIDDEN.search(shown) is None
    assert is_safe(shown)
    shown.encode("utf-8")  # no lone surrogate left: printable on any UTF-8 terminal
    assert shown.count("\n") == text.count("\n") and shown.count("\t") == text.count("\t")
    assert "".join(piece for piece, _ in pieces(text)) == shown
    assert FORBIDDEN.search(one_line(text)) is None and "\n" not in one_line(text)


@given(any_text())
def test_safe_text_is_left_exactly_as_it_is(text: str) -> None:
    if is_safe(text):
        assert neutralise(text) == text
    else:
        assert neutralise(text) != text


@given(st.dictionaries(any_text(), any_text(), max_size=4))
def test_json_text_is_exact_and_inert(doc: dict[str, str]) -> None:
    shown = json_text(doc)
    assert json.loads(shown) == doc
    assert FORBIDDEN.search(shown) is None
    shown.encode("utf-8")


def test_each_kind_of_control_has_its_escape() -> None:
    assert neutralise("\x1b[2J") == "\\x1b[2J"
    assert neutralise("a\x9bb\x85c\x7f\x00") == "a\\x9bb\\x85c\\x7f\\x00"
    assert neutralise("\u202eabc\u2066\u200f\u061c") == "\\u202eabc\\u2066\\u200f\\u061c"
    assert neutralise("\ud83d") == "\\ud83d"
    assert neutralise("line\nnext\ttab é 日本 🙂 \u200d") == "line\nnext\ttab é 日本 🙂 \u200d"
    assert list(pieces("a\x1bb")) == [("a", False), ("\\x1b", True), ("b", False)]


def test_the_chat_shows_escapes_in_their_own_style_and_never_as_markup() -> None:
    row = MessageRow(
        b"\x01" * 16, "in", "meshx", "text", EVIL.encode(), 1e9, 2e9, "received", None, True, None
    )
    text = message_text(row, "ben\x1b[31m", 1e9)
    assert FORBIDDEN.search(text.plain) is None
    assert "[bold red]fake verified[/]" in text.plain  # shown literally
    styled = [text.plain[span.start : span.end] for span in text.spans]
    assert "\\x1b" in styled and "\\u202e" in styled
    assert all(s.style != ESCAPE_STYLE for s in text.spans if "fake" in text.plain[s.start : s.end])


def own(home: Path) -> str:
    with vault.open_store(home) as store:
        value = store.get_setting("public_id")
    assert value is not None
    return value


# -- `mesh send` refuses text that is not UTF-8 -----------------------------------------


def test_send_refuses_a_lone_surrogate_with_one_line(tmp_path: Path) -> None:
    (home,) = new_homes(tmp_path, "ann")
    add_contact(home, "ann", own(home))
    result = CliRunner().invoke(cli, ["--home", str(home), "send", "ann", "x\udcff"])
    assert result.exit_code == 1
    assert result.output.startswith("error: the message is not valid UTF-8 text")
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert texts(home, "out") == []


def test_send_refuses_bytes_that_are_not_utf8_in_argv_and_stdin(tmp_path: Path) -> None:
    (home,) = new_homes(tmp_path, "ann")
    add_contact(home, "ann", own(home))
    argv = mesh(home, "send", "ann", "\udcff", "--no-mdns")  # what Python makes of b"\xff"
    assert argv.returncode == 2, argv.stderr
    assert argv.stderr == "error: argument 5 is not valid UTF-8 text\n"
    piped = mesh_stdin(home, b"a\xed\xa0\x80b")  # a surrogate encoded as if it were UTF-8
    assert piped.returncode == 1 and piped.stderr == b"error: the message is not UTF-8 text\n"
    assert texts(home, "out") == []


def mesh_stdin(home: Path, data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "--home", str(home), "send", "ann", "-", "--no-mdns"],
        input=data,
        capture_output=True,
        timeout=30,
        cwd=Path(__file__).resolve().parent.parent,
    )


# -- end to end: what `mesh inbox`, `mesh contacts list` and the chat print ---------------


class Pair:
    def __init__(self, root: Path, daemons: Daemons) -> None:
        self.ann, self.ben = new_homes(root, "ann", "ben")
        self.ben_up = daemons.up(self.ben, "127.0.0.151")
        self.ann_up = daemons.up(self.ann, "127.0.0.152", self.ben_up.address)
        wait_until(lambda: self.ann_up.peers() >= 1, "ann's node to know ben's")
        befriend(self.ann, self.ben)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    daemons = Daemons()
    try:
        pair = Pair(tmp_path_factory.mktemp("safe"), daemons)
        control(pair.ben, "send", to="ann", text=EVIL)
        wait_until(lambda: EVIL in texts(pair.ann), "ann to receive the message")
        yield pair
    finally:
        daemons.cleanup()


def test_inbox_prints_the_message_inert(pair: Pair) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "--home", str(pair.ann), "inbox"],
        capture_output=True,
        timeout=30,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode("utf-8")
    assert FORBIDDEN.search(out) is None and b"\x1b" not in result.stdout
    assert "ben: hi \\x1b[2J\\x1b]0;pwned\\x07 there\\x9b31m red\\x85 \\x0d\\u202eevil" in out


def test_inbox_json_is_exact(pair: Pair) -> None:
    result = mesh(pair.ann, "inbox", "--json")
    assert result.returncode == 0, result.stderr
    assert FORBIDDEN.search(result.stdout) is None
    assert [m["text"] for m in json.loads(result.stdout)["messages"]] == [EVIL]


def test_contacts_list_prints_a_hostile_name_inert(tmp_path: Path) -> None:
    home, ben = new_homes(tmp_path, "ann", "ben")
    add_contact(home, "ben", own(ben))
    evil_name = "ann\x1b]0;pwned\x07\u202e"
    removed = CliRunner().invoke(cli, ["--home", str(home), "contacts", "remove", "ben"])
    assert removed.exit_code == 0
    peer_id = mesh(ben, "id").stdout.splitlines()[0]
    added = CliRunner().invoke(cli, ["--home", str(home), "contacts", "add", evil_name, peer_id])
    assert added.exit_code == 0 and FORBIDDEN.search(added.output) is None
    listed = mesh(home, "contacts", "list")
    assert listed.returncode == 0, listed.stderr
    assert FORBIDDEN.search(listed.stdout) is None
    assert listed.stdout.startswith("ann\\x1b]0;pwned\\x07\\u202e  ")


async def test_chat_shows_the_message_inert(pair: Pair) -> None:
    link = await find_or_start(pair.ann, [], no_passphrase)
    app = ChatApp(pair.ann, link)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.ready, "the chat to load")
        line = await until(pilot, lambda: line_with(app, EVIL), "the message to show")
        shown = plain(line)
        assert FORBIDDEN.search(shown) is None
        assert "\\x1b[2J\\x1b]0;pwned\\x07" in shown and "[bold red]fake verified[/]" in shown
        screen = app.export_screenshot()  # what the terminal would draw
        assert FORBIDDEN.search(screen) is None
        assert "pwned" in screen and "\\x1b" in screen
