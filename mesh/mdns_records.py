"""The one adapter to zeroconf's DNS record classes, which are not its public API.

Discovery needs three things zeroconf does not export publicly (they are importable from
the package top level only "for backwards compat" and are absent from `__all__`):

- `DNSRecord` and `DNSPointer`, the records a `RecordUpdateListener` is handed (the
  listener API itself is public);
- `DNSQuestion` and `DNSOutgoing`, to send our own PTR query with known answers
  (`ServiceBrowser` stops querying after ~14 s, and we query forever).

Everything that touches them lives here, so a zeroconf release that moves them breaks
one module. pyproject.toml pins zeroconf below `ZEROCONF_BELOW`, and
tests/test_discovery.py checks that the installed zeroconf still provides these names as
the ones it uses itself, and that a query built here parses back as sent.
"""

from __future__ import annotations

from collections.abc import Iterable

from zeroconf._dns import DNSPointer, DNSQuestion, DNSRecord
from zeroconf._protocol.outgoing import DNSOutgoing

__all__ = [
    "TYPE_PTR",
    "TYPE_SRV",
    "TYPE_TXT",
    "ZEROCONF_BELOW",
    "DNSOutgoing",
    "DNSPointer",
    "DNSRecord",
    "instance_of",
    "known_answer_query",
]

ZEROCONF_BELOW = (0, 155)  # keep in step with the bound in pyproject.toml

# DNS constants (RFC 1035 / RFC 2782)
TYPE_PTR = 12
TYPE_TXT = 16
TYPE_SRV = 33
CLASS_IN = 1
FLAGS_QUERY = 0x0000


def instance_of(record: DNSRecord, service_type: str) -> str | None:
    """The lower-case instance of `service_type` a record speaks about, if any."""
    if record.type == TYPE_PTR:
        if record.key == service_type.lower() and isinstance(record, DNSPointer):
            return record.alias.lower()
        return None
    if record.type in (TYPE_SRV, TYPE_TXT) and record.key.endswith("." + service_type.lower()):
        return record.key
    return None


def known_answer_query(
    service_type: str, cached: Iterable[DNSRecord], fresh: set[str], limit: int, now_ms: float
) -> tuple[DNSOutgoing, int]:
    """A multicast PTR query for `service_type` listing as known answers the cached
    pointers to instances in `fresh` (at most `limit`); also returns how many it lists."""
    out = DNSOutgoing(FLAGS_QUERY, multicast=True)
    out.add_question(DNSQuestion(service_type, TYPE_PTR, CLASS_IN))
    known = 0
    for record in cached:
        if known >= limit:
            break
        if isinstance(record, DNSPointer) and record.alias.lower() in fresh:
            out.add_answer_at_time(record, now_ms)
            known += 1
    return out, known
