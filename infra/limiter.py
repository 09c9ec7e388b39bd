"""Rate limits: `per_minute` units per key, refilled evenly (a leaky bucket / GCRA).

`InProcessLimiter` serves the embedded default. `RedisLimiter` keeps one window per key in
Redis, shared by every instance, updated atomically by a Lua script; while Redis is
unreachable it falls back to an in-process limiter and goes back to Redis on its own once
Redis answers again. A limit of 0 (or less) is off.

Both keep the same state per key: the "theoretical arrival time" (TAT) of the next unit.
A burst of `per_minute` units is allowed, then one unit every 60/per_minute seconds.

`hit` spends a unit if there is one (check and spend are one step). `reserve` does the
same for several keys at once, all or none, and `release` gives a reserved unit back:
work that is only paid for when it fails (a password check that turns out wrong) reserves
first and gives back on success. Peeking first and spending after the work would let
every racing request through the peek before any of them spends.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from infra import tracing
from infra.redis_link import RedisLink


@dataclass(frozen=True, slots=True)
class Refusal:
    """Which key of a reservation had no unit left, and when one comes back."""

    key: str
    retry_after: int


class Limiter(Protocol):
    async def hit(self, key: str, per_minute: int) -> int | None:
        """Spend one unit of `key`'s budget; None if allowed, else seconds to wait."""
        ...

    async def reserve(self, keys: Sequence[str], per_minute: int) -> Refusal | None:
        """Spend one unit of every key, atomically, if each has one; else spend nothing and
        say which key (the first in `keys` order) refused and for how long."""
        ...

    async def release(self, keys: Sequence[str], per_minute: int) -> None:
        """Give back one unit of every key (after `reserve`, when the work was free)."""
        ...

    async def healthy(self) -> bool:
        """False while the shared store is unreachable (limits are then per process)."""
        ...


def hashed(value: str) -> str:
    """A key part that keeps personal data (an email) out of the limiter's store."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def _wait_seconds(allowed_at: float, now: float) -> int:
    return max(1, math.ceil(allowed_at - now))


class InProcessLimiter:
    """GCRA on the monotonic clock. Nothing awaits between a check and its update, so each
    call is atomic on the event loop: racing requests see each other's spending."""

    def __init__(self, max_keys: int = 50_000) -> None:
        self._tats: dict[tuple[str, int], float] = {}
        self._max_keys = max_keys
        self.clock = time.monotonic

    async def hit(self, key: str, per_minute: int) -> int | None:
        refused = self.take([key], per_minute)
        return refused.retry_after if refused else None

    async def reserve(self, keys: Sequence[str], per_minute: int) -> Refusal | None:
        return self.take(keys, per_minute)

    async def release(self, keys: Sequence[str], per_minute: int) -> None:
        if per_minute <= 0:
            return
        now = self.clock()
        interval = 60 / per_minute
        for key in keys:
            tat = self._tats.get((key, per_minute))
            if tat is None:
                continue
            if tat - interval <= now:
                del self._tats[(key, per_minute)]  # back to a full budget
            else:
                self._tats[(key, per_minute)] = tat - interval

    async def healthy(self) -> bool:
        return True

    def take(self, keys: Sequence[str], per_minute: int) -> Refusal | None:
        """`reserve`, synchronously."""
        if per_minute <= 0:
            return None
        now = self.clock()
        interval = 60 / per_minute
        updates = []
        for key in keys:
            tat = max(self._tats.get((key, per_minute), now), now)
            allowed_at = tat + interval - 60
            if allowed_at > now:
                return Refusal(key, _wait_seconds(allowed_at, now))
            updates.append(((key, per_minute), tat + interval))
        if len(self._tats) + len(updates) > self._max_keys:
            self._forget_idle(now)
        self._tats.update(updates)
        return None

    def _forget_idle(self, now: float) -> None:
        # A key whose TAT has passed has its whole budget free: no state worth keeping.
        for k, tat in list(self._tats.items()):
            if tat <= now:
                del self._tats[k]


# GCRA over KEYS, all or none. The Redis clock is used so that instances with skewed
# clocks still share one window. Returns 0 when every key had a unit (now spent), else
# {index of the first refusing key (1-based), seconds to wait} (nothing spent).
# (Several keys in one script: fine on one Redis; a Redis Cluster would need hash tags.)
_RESERVE = """
local per_minute = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = 60000 / per_minute
local next_tats = {}
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local allowed_at = tat + interval - 60000
  if allowed_at > now then
    return {i, math.max(1, math.ceil((allowed_at - now) / 1000))}
  end
  next_tats[i] = tat + interval
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%d', math.ceil(next_tats[i])),
             'PX', math.ceil(next_tats[i] - now) + 1000)
end
return 0
"""

# Gives one unit back to every key of KEYS.
_RELEASE = """
local interval = 60000 / tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key) or '0')
  local back = tat - interval
  if back <= now then
    redis.call('DEL', key)
  else
    redis.call('SET', key, string.format('%d', math.ceil(back)), 'PX', math.ceil(back - now) + 1000)
  end
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
        self._reserve_script = client.register_script(_RESERVE)
        self._release_script = client.register_script(_RELEASE)
        self._fallback = fallback or InProcessLimiter()
        self.link = RedisLink("rate limiter")

    async def hit(self, key: str, per_minute: int) -> int | None:
        refused = await self.reserve([key], per_minute)
        return refused.retry_after if refused else None

    async def reserve(self, keys: Sequence[str], per_minute: int) -> Refusal | None:
        if per_minute <= 0 or not keys:
            return None
        if self.link.usable():
            try:
                answer = await tracing.redis(
                    self._reserve_script(keys=[self._prefix + k for k in keys], args=[per_minute]),
                    "EVALSHA",
                )
            except (RedisError, OSError) as exc:
                self.link.failed(exc)
            else:
                self.link.succeeded()
                if not answer:
                    return None
                index, wait = answer
                return Refusal(keys[int(index) - 1], int(wait))
        return self._fallback.take(keys, per_minute)

    async def release(self, keys: Sequence[str], per_minute: int) -> None:
        if per_minute <= 0 or not keys:
            return
        if self.link.usable():
            try:
                await tracing.redis(
                    self._release_script(keys=[self._prefix + k for k in keys], args=[per_minute]),
                    "EVALSHA",
                )
            except (RedisError, OSError) as exc:
                self.link.failed(exc)
            else:
                self.link.succeeded()
                return
        # Reserved in Redis and given back here (or the other way round) only costs the
        # caller one unit until Redis is back: never more checks than the budget.
        await self._fallback.release(keys, per_minute)

    async def healthy(self) -> bool:
        if self.link.usable():
            try:
                await self._client.ping()
            except (RedisError, OSError) as exc:
                self.link.failed(exc)
            else:
                self.link.succeeded()
        return self.link.up
