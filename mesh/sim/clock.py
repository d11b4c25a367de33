"""A virtual clock for asyncio: time stands still while callbacks run, and jumps straight
to the next timer when nothing is ready.

    loop = VirtualTimeLoop(start=0.0)
    loop.run_until_complete(main())   # asyncio.sleep(3600) returns at once, loop.time() == 3600

Only the clock is replaced; scheduling is the stock asyncio one (`SelectorEventLoop`), so
`call_later`, `sleep`, `wait_for`, futures and tasks behave exactly as in production. The
selector is wrapped: it still polls real file descriptors (the loop's self-pipe, an
executor finishing) without blocking, and where the loop would sleep for `timeout`
seconds the clock advances by `timeout` instead. uvloop cannot be used here (its loop
cannot be subclassed), which is fine: the simulated network does no I/O at all.

Simulated I/O: a `VirtualSource` (the in-memory network) tells the selector when it next
has work (its `due` time); the selector treats that like a socket becoming readable at that
time: it wakes the loop then and queues `run_due` as a ready callback. That costs one
callback per batch instead of one asyncio TimerHandle per datagram.
"""

from __future__ import annotations

import asyncio
import math
import selectors
from collections.abc import Coroutine, Mapping
from typing import Any, Protocol, TypeVar

from mesh.errors import SimulationStalled

T = TypeVar("T")

# With no timer at all and nothing ready, only real I/O could wake the loop; a simulation
# always has periodic timers, so this means every task waits for something that cannot
# happen. Wait this long for real I/O (an executor thread), then give up loudly.
STALL_TIMEOUT = 5.0
REAL_IO_EVERY = 64  # virtual-time jumps between two polls of the real file descriptors


class VirtualSource(Protocol):
    # The loop time at which this source next has work (math.inf: none). An attribute,
    # not a method: the selector reads it at every loop iteration.
    due: float

    def run_due(self) -> None:
        """Do the work that is due (called as a ready callback of the loop)."""


class VirtualSelector(selectors.BaseSelector):
    """Delegates registration to a real selector; `select` never sleeps, it advances the
    virtual clock of `loop` instead."""

    def __init__(
        self, loop: VirtualTimeLoop, inner: selectors.BaseSelector, stall_timeout: float
    ) -> None:
        self._loop = loop
        self._inner = inner
        self._stall_timeout = stall_timeout
        self._skipped = 0

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        loop = self._loop
        if timeout == 0:  # callbacks are ready: real I/O waits until time would move
            loop.queue_due_sources()
            return []
        # A real poll is a system call, and the loop comes here once per simulated
        # arrival time (hundreds of thousands of times a run) with, nearly always, only
        # its self-pipe registered: poll every REAL_IO_EVERY jumps, or when there are
        # real sockets. (A thread finishing does not need the poll to be seen: its
        # callback goes straight into the loop's ready queue.)
        self._skipped += 1
        if self._skipped >= REAL_IO_EVERY or len(self._inner.get_map()) > 1:
            self._skipped = 0
            events = self._inner.select(0)
            if events:
                loop.queue_due_sources()
                return events
        due = loop.next_due()
        if timeout is None and due == math.inf:
            events = self._inner.select(self._stall_timeout)
            if not events:
                raise SimulationStalled("no timer is scheduled and no I/O is pending")
            return events
        wake = loop.time() + timeout if timeout is not None else math.inf
        loop.advance_to(min(due, wake))
        loop.queue_due_sources()
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop whose `time()` is virtual (seconds, starting at `start`)."""

    def __init__(self, start: float = 0.0, stall_timeout: float = STALL_TIMEOUT) -> None:
        self._virtual_now = float(start)
        self._sources: list[VirtualSource] = []
        self.jumps = 0
        self.skipped = 0.0
        super().__init__(VirtualSelector(self, selectors.DefaultSelector(), stall_timeout))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (the loop does this itself whenever it is idle)."""
        if seconds < 0:
            raise ValueError("virtual time never goes backwards")
        self.advance_to(self._virtual_now + seconds)

    def advance_to(self, when: float) -> None:
        if when > self._virtual_now:
            self.jumps += 1
            self.skipped += when - self._virtual_now
            self._virtual_now = when

    def attach(self, source: VirtualSource) -> None:
        """Let `source` wake the loop at its `due` time (see the module docstring)."""
        self._sources.append(source)

    def next_due(self) -> float:
        sources = self._sources
        if len(sources) == 1:  # the usual case: one network
            return sources[0].due
        return min((s.due for s in sources), default=math.inf)

    def queue_due_sources(self) -> None:
        now = self._virtual_now
        for source in self._sources:
            if source.due <= now:
                self.call_soon(source.run_due)

    def statistics(self) -> dict[str, float]:
        return {"now": self._virtual_now, "jumps": self.jumps, "skipped_s": self.skipped}


def run_virtual(main: Coroutine[Any, Any, T], start: float = 0.0) -> T:
    """`asyncio.run` on a virtual clock: run `main` to completion, then close the loop."""
    loop = VirtualTimeLoop(start)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_remaining(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_remaining(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
