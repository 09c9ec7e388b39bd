"""infra.tasks: a task that drops a cancellation (as asyncio.wait_for can on 3.11) is
still stopped."""

from __future__ import annotations

import asyncio

from infra.tasks import cancel_and_wait


async def test_a_task_that_swallows_cancellations_is_cancelled_again_until_it_stops() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed < 3:
                    swallowed += 1
                    continue
                raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    assert await cancel_and_wait(task, give_up_after=5) is True
    assert task.cancelled() and swallowed == 3


async def test_a_task_that_never_stops_is_given_up_on_after_the_timeout() -> None:
    released = asyncio.Event()

    async def immortal() -> None:
        while not released.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(immortal())
    await asyncio.sleep(0)
    assert await cancel_and_wait(task, give_up_after=0.5) is False
    assert not task.done()
    released.set()  # leave nothing running behind the test
    task.cancel()
    await asyncio.wait({task}, timeout=1)
    assert task.done()
