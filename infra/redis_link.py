"""The Redis connection that the cache and the rate limiter share, and how they notice an
outage: each keeps a `RedisLink`, falls back while Redis is away and tries again later."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

log = logging.getLogger("order_service.redis")

# Short timeouts: a request must not hang on a Redis that stopped answering; it falls back.
SOCKET_TIMEOUT_SECONDS = 0.5
RETRY_INTERVAL_SECONDS = 1.0


_RUN_ID = re.compile(rb"^run_id:([0-9a-f]+)", re.M)


class ServerRestarts:
    """Notices that the Redis server behind a client is not the one it last talked to (a
    restart, or a failover to a replica): its run_id changed. Checked on every new
    connection before the connection carries a command, so that a listener (the read
    cache, which starts a new epoch) acts before anything is read through it. A restart
    drops every connection, so every instance sees it, not only those that noticed the
    outage: one that sent nothing while Redis was away would otherwise have read the
    entries of a snapshot restored from before it."""

    def __init__(self) -> None:
        self.run_id: bytes | None = None
        self.supported = True
        self._listeners: list[Callable[[Connection], Awaitable[None]]] = []

    def subscribe(self, listener: Callable[[Connection], Awaitable[None]]) -> None:
        self._listeners.append(listener)

    async def on_connect(self, connection: Connection) -> None:
        await connection.on_connect()
        if not self.supported:
            return
        try:
            await connection.send_command("INFO", "server")
            info = await connection.read_response()
        except ResponseError as exc:  # INFO renamed or refused (some managed services)
            self.supported = False
            log.warning("Redis refuses INFO (%s): its restarts go unnoticed", exc)
            return
        found = _RUN_ID.search(info if isinstance(info, bytes) else str(info).encode())
        run_id = found.group(1) if found else None
        if self.run_id is not None and run_id != self.run_id:
            log.warning("Redis was restarted or replaced (a new run_id)")
            for listener in self._listeners:
                await listener(connection)
        # Only now: a connection made meanwhile sees the change too, and acts on it.
        self.run_id = run_id


def redis_client(url: str, *, restarts: ServerRestarts | None = None) -> Redis:
    # One immediate retry on a fresh connection: after a Redis restart the pooled
    # connections are dead, and the first command would otherwise fail for nothing.
    return Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 1),
        redis_connect_func=restarts.on_connect if restarts is not None else None,
    )


class RedisLink:
    """Up or down, as last seen by one component. Down: callers use their fallback and
    try Redis again at most every `retry_interval` seconds. Logs each change once."""

    def __init__(self, component: str, *, retry_interval: float = RETRY_INTERVAL_SECONDS):
        self.component = component
        self.up = True
        self._retry_interval = retry_interval
        self._retry_at = 0.0

    def usable(self) -> bool:
        return self.up or time.monotonic() >= self._retry_at

    def failed(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + self._retry_interval
        if self.up:
            self.up = False
            log.warning(
                "Redis unavailable for the %s (%s: %s); falling back until it is back",
                self.component,
                type(exc).__name__,
                exc,
            )

    def succeeded(self) -> bool:
        """Record an answer from Redis; True when this ends an outage."""
        if self.up:
            return False
        self.up = True
        log.info("Redis is back for the %s", self.component)
        return True
