"""mDNS discovery (being written)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Discovery:
    def __init__(self, node: Any, interfaces: Sequence[str] | None, network_name: str) -> None:
        raise NotImplementedError("mDNS discovery is not available in this build yet")

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
