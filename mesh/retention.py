"""How long read messages are kept: a per-home setting (days; 0 keeps them forever).

Disappearing timers (per contact or per message) are separate: they set a message's
`expires_at`. Both deletions checkpoint the WAL, so nothing deleted stays in it.
"""

from __future__ import annotations

from mesh.errors import LocalError
from mesh.store import Store

SETTING = "retention_days"
DEFAULT_DAYS = 30
DAY = 86400.0


def get_days(store: Store) -> int:
    saved = store.get_setting(SETTING)
    return DEFAULT_DAYS if saved is None or not saved.isdigit() else int(saved)


def set_days(store: Store, days: int) -> None:
    if type(days) is not int or days < 0:
        raise LocalError("retention is a whole number of days (0: keep forever)")
    store.set_setting(SETTING, str(days))


def apply(store: Store, now: float) -> int:
    """Delete read messages older than the retention period; returns how many."""
    days = get_days(store)
    return 0 if days == 0 else store.delete_read_before(now - days * DAY)
