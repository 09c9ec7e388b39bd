"""Read cache keyed by generation counters: a write bumps its scopes' generations, so no
reader can be handed an answer computed before that write. The TTL only bounds memory.

A reader takes a `stamp` of the scopes it depends on *before* computing its answer and
stores the answer under that stamp: a write that races the read can only make the entry
unreachable, never make it stale.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import RedisError

from infra import tracing
from infra.redis_link import RedisLink, ServerRestarts


class Cache(Protocol):
    async def stamped_get(
        self, scopes: list[str], prefix: str, suffix: str
    ) -> tuple[str, bytes | None] | None:
        """The scopes' current generations as one stamp, and the entry stored under
        `prefix + stamp + suffix`, at once (one round trip); None: do not use the cache
        now. An answer computed after this call is stored under the same key."""
        ...

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: int) -> None: ...

    async def bump(self, scopes: list[str]) -> None: ...

    async def healthy(self) -> bool:
        """False while the shared store is unreachable (the cache is then bypassed)."""
        ...


class MemoryCache:
    """In-process cache for the embedded default (one process)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._generations: dict[str, int] = {}
        self._max_entries = max_entries

    async def stamped_get(
        self, scopes: list[str], prefix: str, suffix: str
    ) -> tuple[str, bytes | None] | None:
        stamp = ".".join(str(self._generations.get(s, 0)) for s in scopes)
        return stamp, await self.get(prefix + stamp + suffix)

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

    async def bump(self, scopes: list[str]) -> None:
        for s in scopes:
            self._generations[s] = self._generations.get(s, 0) + 1

    async def healthy(self) -> bool:
        return True


# Generations are random tokens, not counters: a generation key that was evicted, expired
# or lost in a Redis restart comes back as a fresh token, never as an old value that
# entries may still be stored under. The epoch is one more such token in every stamp.
#
# The stamp is each generation key's value, or (missing) the fresh token given for it in
# ARGV, set with the TTL that follows the tokens; the script then reads the entry stored
# under that stamp (the two ARGV after the TTL: the entry key's prefix and suffix). That
# key is built in the script, so it is not among KEYS: fine on one Redis (what the service
# uses), not on Redis Cluster, where the generation keys would not share a slot anyway.
_STAMPED_GET = """
local n = #KEYS
local out = {}
for i, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  if not value then
    value = ARGV[i]
    redis.call('SET', key, value, 'EX', ARGV[n + 1])
  end
  out[i] = value
end
local stamp = table.concat(out, '.')
return {stamp, redis.call('GET', ARGV[n + 2] .. stamp .. ARGV[n + 3])}
"""

# New generations for every key at once (atomic, like the MULTI/EXEC it replaced, in one
# command instead of four): ARGV holds a fresh token per key, then the TTL.
_BUMP = """
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i], 'EX', ARGV[#KEYS + 1])
end
return #KEYS
"""

GENERATION_TTL_SECONDS = 24 * 3600


def _token() -> str:
    return secrets.token_hex(8)


class RedisCache:
    """Entries and generations in Redis, shared by every instance.

    While Redis is unreachable the cache is bypassed (`stamp` is None) and bumps are lost.
    So that no instance serves an entry that a lost bump should have hidden, the first
    instance to reach Redis again moves everyone to a new epoch: the whole cache is cold.
    A Redis restarted from a snapshot brings back the old epoch with the old entries:
    every instance's first connection to the new server starts a new epoch (`restarts`).
    """

    def __init__(
        self, client: Redis, *, prefix: str = "", restarts: ServerRestarts | None = None
    ) -> None:
        self._client = client
        self._prefix = f"{prefix}cache:"
        self._epoch_key = f"{self._prefix}epoch"
        self._stamped_get = client.register_script(_STAMPED_GET)
        self._bump = client.register_script(_BUMP)
        self.link = RedisLink("read cache")
        if restarts is not None:
            restarts.subscribe(self._new_epoch_on)

    async def _new_epoch_on(self, connection: Connection) -> None:
        await connection.send_command(
            "SET", self._epoch_key, _token(), "EX", GENERATION_TTL_SECONDS
        )
        await connection.read_response()

    async def stamped_get(
        self, scopes: list[str], prefix: str, suffix: str
    ) -> tuple[str, bytes | None] | None:
        if not await self._usable():
            return None
        keys = [self._epoch_key, *(f"{self._prefix}gen:{s}" for s in scopes)]
        args: list[str | int] = [*(_token() for _ in keys), GENERATION_TTL_SECONDS]
        args += [f"{self._prefix}entry:{prefix}", suffix]
        try:
            stamp, value = await tracing.redis(self._stamped_get(keys=keys, args=args), "EVALSHA")
        except (RedisError, OSError) as exc:
            self.link.failed(exc)
            return None
        text = stamp.decode() if isinstance(stamp, bytes) else str(stamp)
        if value is not None and not isinstance(value, bytes):
            value = str(value).encode()
        return text, value

    async def get(self, key: str) -> bytes | None:
        if not self.link.up:
            return None
        try:
            value = await tracing.redis(self._client.get(f"{self._prefix}entry:{key}"), "GET")
        except (RedisError, OSError) as exc:
            self.link.failed(exc)
            return None
        if value is None:
            return None
        return value if isinstance(value, bytes) else str(value).encode()

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        if not self.link.up:
            return
        try:
            await tracing.redis(
                self._client.set(f"{self._prefix}entry:{key}", value, ex=ttl), "SET"
            )
        except (RedisError, OSError) as exc:
            self.link.failed(exc)

    async def bump(self, scopes: list[str]) -> None:
        # Tried even while the link is down: a bump that gets through spares the other
        # instances a stale read; one that does not is covered by the next epoch.
        # No span (tracing.redis): the bump follows every write's commit, and a span of it
        # would add a tenth to a webhook's trace for nothing an operator acts on; a slow
        # Redis shows on the reads' GET/EVALSHA spans (docs/operations.md, "Traces").
        keys = [f"{self._prefix}gen:{s}" for s in scopes]
        try:
            await self._bump(keys=keys, args=[*(_token() for _ in keys), GENERATION_TTL_SECONDS])
        except (RedisError, OSError) as exc:
            self.link.failed(exc)

    async def healthy(self) -> bool:
        if self.link.up:
            try:
                await self._client.ping()
            except (RedisError, OSError) as exc:
                self.link.failed(exc)
        else:
            await self._usable()
        return self.link.up

    async def _usable(self) -> bool:
        if self.link.up:
            return True
        if not self.link.usable():
            return False
        try:
            # Bumps may have been lost while Redis was away: start a new epoch first.
            await self._client.set(self._epoch_key, _token(), ex=GENERATION_TTL_SECONDS)
        except (RedisError, OSError) as exc:
            self.link.failed(exc)
            return False
        self.link.succeeded()
        return True
