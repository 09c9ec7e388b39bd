"""A small pool of asyncpg connections for the request paths.

asyncpg's own pool wraps every release in `asyncio.shield`, a task of its own and three
turns of the event loop: about 90 µs of CPU on the benchmark machine, more than a cached
read's user lookup costs in the database. Here acquiring and releasing are a deque push
and pop; a connection is handed straight to the longest waiter when the pool is full.

What asyncpg's pool guarded against is kept: a connection the server closed is replaced
when it is next wanted; one that comes back from a cancelled or timed-out block (a query
may still be in flight on it) or inside a transaction is terminated, not reused. Session
state is never changed on these connections, so nothing is reset between uses.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import asyncpg


class ConnectionPool:
    def __init__(self, dsn: str, *, max_size: int, **connect_kwargs: Any) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self._dsn = dsn
        self._max_size = max_size
        self._connect_kwargs = connect_kwargs
        self._idle: deque[asyncpg.Connection] = deque()
        self._waiters: deque[asyncio.Future[asyncpg.Connection | None]] = deque()
        self._size = 0  # connections open or being opened
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def in_use(self) -> int:
        return self._size - len(self._idle)

    async def acquire(self) -> asyncpg.Connection:
        if self._closed:
            raise asyncpg.InterfaceError("the connection pool is closed")
        while self._idle:
            conn = self._idle.pop()  # the most recently used: its socket is warm
            if not conn.is_closed():
                return conn
            self._size -= 1
        if self._size < self._max_size:
            return await self._open()
        waiter: asyncio.Future[asyncpg.Connection | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiters.append(waiter)
        try:
            conn = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed a connection (or a slot) just as we were cancelled: pass it on.
                handed = waiter.result()
                if handed is not None:
                    self.release(handed)
                else:
                    self._size -= 1
                    self._wake_for_slot()
            raise
        # None: a slot came free (a connection was dropped): open one in its place.
        return conn if conn is not None else await self._open(counted=True)

    async def _open(self, *, counted: bool = False) -> asyncpg.Connection:
        if not counted:
            self._size += 1
        try:
            conn: asyncpg.Connection = await asyncpg.connect(self._dsn, **self._connect_kwargs)
        except BaseException:
            self._size -= 1
            self._wake_for_slot()
            raise
        return conn

    def release(self, conn: asyncpg.Connection, *, broken: bool = False) -> None:
        """Give a connection back; `broken`: it may be mid-operation (do not reuse it)."""
        if broken or self._closed or conn.is_closed() or conn.is_in_transaction():
            conn.terminate()
            self._size -= 1
            self._wake_for_slot()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def _wake_for_slot(self) -> None:
        """A connection was dropped: the longest waiter may open a new one."""
        if self._size >= self._max_size:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._size += 1  # counted now, opened by the waiter
                waiter.set_result(None)
                return

    async def close(self, *, give_up_after: float = 5.0) -> None:
        """Close the idle connections; those in use are terminated when they come back."""
        self._closed = True
        idle, self._idle = list(self._idle), deque()
        self._size -= len(idle)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(asyncpg.InterfaceError("the connection pool is closed"))
        self._waiters.clear()
        for conn in idle:
            try:
                async with asyncio.timeout(give_up_after):
                    await conn.close()
            except Exception:
                conn.terminate()
