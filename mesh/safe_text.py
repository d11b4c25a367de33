"""Text that came from a peer, made safe to show on a terminal or in the chat.

A message body, a contact's name or a network's name can hold bytes a terminal acts
on: `ESC[2J` clears the screen, `ESC]0;...BEL` renames the window, an 8-bit CSI (U+009B)
does what `ESC[` does, a carriage return overwrites the line, a bidi override (U+202E)
turns "verified" around. `neutralise` replaces each such character with a visible,
inert escape (`\\x1b`, `\\x9b`, `\\u202e`): the text is still all there to read, it just
does nothing. Kept as they are: newline and tab, and every other character (emoji,
joiners, every script).

Replaced:
- C0 controls U+0000-U+001F but newline and tab, DEL U+007F, C1 controls U+0080-U+009F
  (ESC among them: so no CSI, OSC or DCS sequence can start);
- bidi controls: U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069;
- U+2028 and U+2029 (line and paragraph separators: some widgets break lines there);
- lone surrogates U+D800-U+DFFF (no terminal encoding can print them).

JSON output is not neutralised but escaped (`json_text`): the same string comes back
when parsed, and the raw characters never reach a terminal.

Pure: no I/O. The one place of this rule; cli/render.py and mesh/chat use it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2028\u2029"
    "\u2066-\u2069\ud800-\udfff]"
)


def escape(char: str) -> str:
    """The visible stand-in of one unsafe character: `\\x1b` below U+0100, else `\\u202e`."""
    point = ord(char)
    return f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}"


def is_safe(text: str) -> bool:
    return _UNSAFE.search(text) is None


def neutralise(text: str) -> str:
    """`text` with every unsafe character replaced by its visible escape."""
    return _UNSAFE.sub(lambda match: escape(match.group()), text)


def one_line(text: str) -> str:
    """`text` neutralised, its runs of white space folded into one space: for names."""
    return " ".join(neutralise(text).split())


def pieces(text: str) -> Iterator[tuple[str, bool]]:
    """`text` cut into runs: (plain text, False) and (an escape, True), in order, so a
    widget can show the escapes in a style of their own (a body that *types* `\\x1b`
    then looks different from one that held an ESC)."""
    start = 0
    for match in _UNSAFE.finditer(text):
        if match.start() > start:
            yield text[start : match.start()], False
        yield escape(match.group()), True
        start = match.end()
    if start < len(text):
        yield text[start:], False


def json_text(doc: object, indent: int | None = 2) -> str:
    """`doc` as JSON, readable (non-ASCII kept) but with every unsafe character as a
    `\\uXXXX` escape: exact once parsed, inert on a terminal. json.dumps escapes C0
    controls itself; this adds C1, bidi controls, separators and lone surrogates."""
    text = json.dumps(doc, indent=indent, ensure_ascii=False)
    return _UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
