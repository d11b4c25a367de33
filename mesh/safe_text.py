"""Text that came from a peer, made safe to show on a terminal (issue 15).

A message body, a contact's or a requester's text can hold anything: ANSI/OSC escape
sequences that clear the screen, rename the window or fake a "verified" mark, C1 controls
that some terminals obey as escapes, and Unicode bidi controls that make text read in
another order than it is. `visible` shows every one of them as a visible escape (`\\x1b`,
`\\x9b`, `\\u202e`) and leaves the rest, newline and tab included, alone. JSON output does not
use it: json.dumps already escapes controls and stays exact.
"""

from __future__ import annotations

import re

__all__ = ["BIDI_CONTROLS", "visible"]

BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f" + "".join(sorted(BIDI_CONTROLS)) + "\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """`text` with every control character (but newline and tab), every C1 control, every
    bidi control and every lone surrogate shown as a visible escape."""
    return _UNSAFE.sub(_escape, text)
