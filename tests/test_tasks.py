"""TaskSet: owns background tasks; one failure does not stop the others; close() stops all."""

from __future__ import annotations

import asyncio
import logging

import pytest

from mesh.errors import NetworkError
from mesh.tasks import TaskSet


async def test_failure_is_reported_and_siblings_continue() -> None:
    failures: list[BaseException] = []
    tasks = TaskSet(on_error=lambda _t, exc: failures.append(exc))
    release = asyncio.Event()

    async def boom() -> None:
        raise ValueError("bug")

    async def waiter() -> str:
        await release.wait()
        return "done"

    sibling = tasks.spawn(waiter())
    tasks.spawn(boom())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert [type(e) for e in failures] == [ValueError]
    assert not sibling.done() and len(tasks) == 1
    release.set()
    assert await sibling == "done"
    assert len(tasks) == 0


async def test_close_cancels_running_and_later_spawns() -> None:
    tasks = TaskSet(on_error=lambda _t, exc: None)
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    running = tasks.spawn(forever())
    await started.wait()
    await tasks.close()
    assert running.cancelled()
    late = tasks.spawn(forever())
    await asyncio.sleep(0)
    assert late.cancelled() and len(tasks) == 0


async def test_default_handler_logs_only_bugs(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSet()

    async def expected() -> None:
        raise NetworkError("nobody answered")

    async def bug() -> None:
        raise KeyError("x")

    with caplog.at_level(logging.ERROR, logger="mesh.tasks"):
        tasks.spawn(expected())
        tasks.spawn(bug())
        for _ in range(3):
            await asyncio.sleep(0)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "KeyError" in messages[0]


async def test_wait_is_bounded_and_cancels_nothing() -> None:
    tasks = TaskSet()
    release = asyncio.Event()

    async def quick() -> None:
        await asyncio.sleep(0)

    async def stuck() -> None:
        await release.wait()

    done = tasks.spawn(quick())
    pending = tasks.spawn(stuck())
    await tasks.wait(0.05)
    assert done.done() and not pending.done() and len(tasks) == 1
    release.set()
    await tasks.wait(1.0)
    assert pending.done() and not pending.cancelled() and len(tasks) == 0
