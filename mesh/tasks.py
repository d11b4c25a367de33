"""TaskSet: the one owner of a component's background tasks.

`asyncio.TaskGroup` is the model, but a TaskGroup cancels every sibling when one task
fails and only lives inside an `async with`. A peer's background work (a repair, a
receipt, a welcome batch) must outlive the call that started it, and one failure must
not stop the others: it is reported to `on_error` (default: logged) and the rest go on.
`close()` cancels what is left and waits for it, so nothing outlives its owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from mesh.errors import MeshError

log = logging.getLogger(__name__)

T = TypeVar("T")


def _log_failure(task: asyncio.Task[Any], exc: BaseException) -> None:
    if not isinstance(exc, MeshError):  # a MeshError is an expected outcome (no peer...)
        log.error("background task %s failed: %r", task.get_name(), exc)


class TaskSet:
    __slots__ = ("_closed", "_on_error", "_tasks")

    def __init__(
        self, on_error: Callable[[asyncio.Task[Any], BaseException], None] = _log_failure
    ) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._on_error = on_error
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run `coro` in the background, owned by this set. After `close()` the task is
        cancelled at once (a late callback must not start work that nobody stops)."""
        task = asyncio.ensure_future(coro)
        if self._closed:
            task.cancel()
            return task
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # always retrieved: no "exception never retrieved"
        if exc is not None:
            self._on_error(task, exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the tasks running now; cancels nothing."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def close(self) -> None:
        """Cancel every task still running and wait until all have finished."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
