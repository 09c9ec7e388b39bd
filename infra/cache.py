"""Read cache keyed by generation counters: a write bumps its scopes' generations, so no
reader can be handed an answer computed before that write. The TTL only bounds memory."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Protocol


class Cache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: int) -> None: ...

    async def generations(self, scopes: list[str]) -> list[int] | None: ...

    async def bump(self, scopes: list[str]) -> None: ...


class MemoryCache:
    """In-process cache for the embedded default (one process)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._generations: dict[str, int] = {}
        self._max_entries = max_entries

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires < time.monotonic():
            self._entries.pop(key, None)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        self._entries[key] = (time.monotonic() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    async def generations(self, scopes: list[str]) -> list[int] | None:
        return [self._generations.get(s, 0) for s in scopes]

    async def bump(self, scopes: list[str]) -> None:
        for s in scopes:
            self._generations[s] = self._generations.get(s, 0) + 1
