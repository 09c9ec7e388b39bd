"""Rate limits: a leaky bucket per key (aiolimiter) in this process."""

from __future__ import annotations

import math
from typing import Protocol

from aiolimiter import AsyncLimiter


class Limiter(Protocol):
    async def hit(self, key: str, per_minute: int) -> int | None:
        """Spend one unit of `key`'s budget; None if allowed, else seconds to wait."""
        ...


class InProcessLimiter:
    def __init__(self, max_keys: int = 50_000) -> None:
        self._buckets: dict[tuple[str, int], AsyncLimiter] = {}
        self._max_keys = max_keys

    async def hit(self, key: str, per_minute: int) -> int | None:
        if per_minute <= 0:
            return None
        bucket = self._buckets.get((key, per_minute))
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._forget_idle()
            bucket = self._buckets[(key, per_minute)] = AsyncLimiter(per_minute, 60)
        if not bucket.has_capacity():
            return max(1, math.ceil(60 / per_minute))
        await bucket.acquire()
        return None

    def _forget_idle(self) -> None:
        # A bucket with its whole capacity free holds no state worth keeping.
        for k, bucket in list(self._buckets.items()):
            if bucket.has_capacity(bucket.max_rate):
                del self._buckets[k]
