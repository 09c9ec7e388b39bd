"""Stopping background tasks for good.

On Python 3.11, `asyncio.wait_for` drops a cancellation that arrives just as the awaited
operation completes (gh-86296, fixed in 3.12), and redis-py wraps its socket writes in
`wait_for`: a task cancelled while it publishes can carry on as if nothing happened. The
outbox relay did, after the benchmark's webhook load, and shutdown waited for it forever.
So a task is cancelled again until it is done, within a deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

log = logging.getLogger("order_service.tasks")

# Set for the app's own background work (the relay, the published marks, the Redis watch,
# the broker's listener and what they start): tasks inherit it from where they were made.
BACKGROUND: ContextVar[bool] = ContextVar("background", default=False)


@contextmanager
def background() -> Iterator[None]:
    """Tasks created inside are the app's background work (`BACKGROUND`)."""
    token = BACKGROUND.set(True)
    try:
        yield
    finally:
        BACKGROUND.reset(token)


RECANCEL_EVERY_SECONDS = 0.2


async def cancel_and_wait(task: asyncio.Task[object], *, give_up_after: float = 5.0) -> bool:
    """Cancel `task` and wait until it is done, cancelling again while it is not.
    False (and a warning) when it is still running after `give_up_after` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_after
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.warning(
                "task %s did not stop within %.1f s of being cancelled", task, give_up_after
            )
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(RECANCEL_EVERY_SECONDS, remaining))
    if not task.cancelled() and task.exception() is not None:
        log.warning("task %s ended with an error while stopping", task, exc_info=task.exception())
    return True
