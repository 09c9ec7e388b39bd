"""The Redis connection that the cache and the rate limiter share, and how they notice an
outage: each keeps a `RedisLink`, falls back while Redis is away and tries again later."""

from __future__ import annotations

import logging
import time

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger("order_service.redis")

# Short timeouts: a request must not hang on a Redis that stopped answering; it falls back.
SOCKET_TIMEOUT_SECONDS = 0.5
RETRY_INTERVAL_SECONDS = 1.0


def redis_client(url: str) -> Redis:
    # One immediate retry on a fresh connection: after a Redis restart the pooled
    # connections are dead, and the first command would otherwise fail for nothing.
    return Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 1),
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
