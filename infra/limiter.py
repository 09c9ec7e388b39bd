"""Rate limits: `per_minute` units per key, refilled evenly (a leaky bucket / GCRA).

`InProcessLimiter` (aiolimiter) serves the embedded default. `RedisLimiter` keeps one
window per key in Redis, shared by every instance, updated atomically by a Lua script;
while Redis is unreachable it falls back to an in-process limiter and goes back to Redis
on its own once Redis answers again. A limit of 0 (or less) is off.
"""

from __future__ import annotations

import hashlib
import math
from typing import Protocol

from aiolimiter import AsyncLimiter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from infra.redis_link import RedisLink


class Limiter(Protocol):
    async def hit(self, key: str, per_minute: int) -> int | None:
        """Spend one unit of `key`'s budget; None if allowed, else seconds to wait."""
        ...

    async def peek(self, key: str, per_minute: int) -> int | None:
        """Like `hit`, without spending: None if one more unit would be allowed."""
        ...

    async def healthy(self) -> bool:
        """False while the shared store is unreachable (limits are then per process)."""
        ...


def hashed(value: str) -> str:
    """A key part that keeps personal data (an email) out of the limiter's store."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


class InProcessLimiter:
    def __init__(self, max_keys: int = 50_000) -> None:
        self._buckets: dict[tuple[str, int], AsyncLimiter] = {}
        self._max_keys = max_keys

    async def hit(self, key: str, per_minute: int) -> int | None:
        if per_minute <= 0:
            return None
        bucket = self._bucket(key, per_minute)
        if not bucket.has_capacity():
            return _wait_for_one(per_minute)
        await bucket.acquire()
        return None

    async def peek(self, key: str, per_minute: int) -> int | None:
        if per_minute <= 0:
            return None
        bucket = self._buckets.get((key, per_minute))
        if bucket is None or bucket.has_capacity():
            return None
        return _wait_for_one(per_minute)

    async def healthy(self) -> bool:
        return True

    def _bucket(self, key: str, per_minute: int) -> AsyncLimiter:
        bucket = self._buckets.get((key, per_minute))
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._forget_idle()
            bucket = self._buckets[(key, per_minute)] = AsyncLimiter(per_minute, 60)
        return bucket

    def _forget_idle(self) -> None:
        # A bucket with its whole capacity free holds no state worth keeping.
        for k, bucket in list(self._buckets.items()):
            if bucket.has_capacity(bucket.max_rate):
                del self._buckets[k]


def _wait_for_one(per_minute: int) -> int:
    # A full bucket frees one unit every 60/per_minute seconds.
    return max(1, math.ceil(60 / per_minute))


# GCRA: the key holds the "theoretical arrival time" (ms, Redis clock) of the next unit.
# A burst of `per_minute` is allowed, then one unit every 60000/per_minute ms. The Redis
# clock is used so that instances with skewed clocks still share one window.
_GCRA = """
local per_minute = tonumber(ARGV[1])
local spend = ARGV[2] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = 60000 / per_minute
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local next_tat = tat + interval
local allowed_at = next_tat - 60000
if allowed_at > now then
  return math.ceil((allowed_at - now) / 1000)
end
if spend then
  redis.call('SET', KEYS[1], string.format('%d', math.ceil(next_tat)),
             'PX', math.ceil(next_tat - now) + 1000)
end
return 0
"""


class RedisLimiter:
    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "",
        fallback: InProcessLimiter | None = None,
    ) -> None:
        self._client = client
        self._prefix = f"{prefix}rl:"
        self._script = client.register_script(_GCRA)
        self._fallback = fallback or InProcessLimiter()
        self.link = RedisLink("rate limiter")

    async def hit(self, key: str, per_minute: int) -> int | None:
        return await self._check(key, per_minute, spend=True)

    async def peek(self, key: str, per_minute: int) -> int | None:
        return await self._check(key, per_minute, spend=False)

    async def healthy(self) -> bool:
        if self.link.usable():
            try:
                await self._client.ping()
            except (RedisError, OSError) as exc:
                self.link.failed(exc)
            else:
                self.link.succeeded()
        return self.link.up

    async def _check(self, key: str, per_minute: int, *, spend: bool) -> int | None:
        if per_minute <= 0:
            return None
        if self.link.usable():
            try:
                wait = await self._script(
                    keys=[self._prefix + key], args=[per_minute, 1 if spend else 0]
                )
            except (RedisError, OSError) as exc:
                self.link.failed(exc)
            else:
                self.link.succeeded()
                return int(wait) or None
        if spend:
            return await self._fallback.hit(key, per_minute)
        return await self._fallback.peek(key, per_minute)
