"""Event broker: fan-out of published messages to bounded per-subscriber queues.

`InProcessBroker` serves the embedded default (one process). A Redis broker shares the
same `Fanout`, fed by one listener per process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol


class SubscriberTooSlow(Exception):
    """The subscriber's queue filled up; it was dropped rather than let memory grow."""


class BrokerUnavailable(Exception):
    """The broker could not take a message; the outbox relay will try again."""


class Subscription:
    def __init__(self, fanout: Fanout, channel: str, maxsize: int) -> None:
        self.channel = channel
        self._fanout = fanout
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=maxsize)
        self.overflowed = False
        self.closed = False

    def offer(self, message: bytes) -> None:
        if self.closed:
            return
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.overflowed = True
            self._close_queue()

    def _close_queue(self) -> None:
        self.closed = True
        self._fanout.remove(self)
        # Wake a waiting reader: empty the queue so the end marker fits.
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    def close(self) -> None:
        if not self.closed:
            self._close_queue()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while True:
            message = await self._queue.get()
            if message is None:
                if self.overflowed:
                    raise SubscriberTooSlow("subscriber could not keep up and was dropped")
                return
            yield message


class Fanout:
    """Channel name -> live subscriptions, all on this process's event loop."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}

    def add(self, channel: str, maxsize: int) -> Subscription:
        sub = Subscription(self, channel, maxsize)
        self._subs.setdefault(channel, set()).add(sub)
        return sub

    def remove(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.channel)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.channel]

    def dispatch(self, channel: str, message: bytes) -> int:
        subs = self._subs.get(channel)
        if not subs:
            return 0
        for sub in list(subs):
            sub.offer(message)
        return len(subs)

    def count(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def close_all(self) -> None:
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub.close()


class Broker(Protocol):
    fanout: Fanout

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, channel: str, message: bytes) -> None: ...

    def subscribe(self, channel: str, maxsize: int) -> Subscription: ...

    async def healthy(self) -> bool: ...


class InProcessBroker:
    """Delivers to subscribers of this process only: the embedded default."""

    def __init__(self) -> None:
        self.fanout = Fanout()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.fanout.close_all()

    async def publish(self, channel: str, message: bytes) -> None:
        self.fanout.dispatch(channel, message)

    def subscribe(self, channel: str, maxsize: int) -> Subscription:
        return self.fanout.add(channel, maxsize)

    async def healthy(self) -> bool:
        return True
