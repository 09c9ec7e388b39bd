"""Read cache keyed by generation counters: a write bumps its scopes' generations, so no
reader can be handed an answer computed before that write. The TTL only bounds memory.

A reader takes a `stamp` of the scopes it depends on *before* computing its answer and
stores the answer under that stamp: a write that races the read can only make the entry
unreachable, never make it stale.
"""

from __future__ import annotations

import asyncio
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
    # True when other processes share the generations (Redis): what one of them bumps,
    # the others see on their next read.
    shared: bool

    async def stamped_get(
        self, scopes: list[str], prefix: str, suffix: str
    ) -> tuple[str, bytes | None] | None:
        """The scopes' current generations as one stamp, and the entry stored under
        `prefix + stamp + suffix`, at once (one round trip); None: do not use the cache
        now. An answer computed after this call is stored under the same key."""
        ...

    async def stamp(self, scopes: list[str]) -> str | None:
        """The scopes' current generations as one stamp (one round trip), as
        `stamped_get` would give it; None: the shared store is unreachable. The stamp of
        the first k scopes is a prefix (up to a dot) of the stamp of all of them."""
        ...

    async def claim(self, key: str, seconds: float) -> bool:
        """Whether this instance may refresh the entry at `key` now: at most one
        instance wins in `seconds` (in one process: always; see `Flights`)."""
        ...

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: int) -> None: ...

    async def bump(self, scopes: list[str]) -> None: ...

    async def healthy(self) -> bool:
        """False while the shared store is unreachable (the cache is then bypassed)."""
        ...


LANDED_SECONDS = 1.0
LANDED_KEYS = 256


class Flights:
    """One computation per key at a time in this process: a request that misses while
    another computes the same answer waits for it, and a stale entry is refreshed by
    one request while the others keep serving it. A key whose refresh failed is not
    tried again for `backoff` seconds, and its failure is reported once."""

    def __init__(self, backoff: float = 2.0, max_keys: int = 10_000) -> None:
        self._running: dict[str, asyncio.Future[bytes | None]] = {}
        # Answers just computed (when, bytes): a request whose lookup was answered
        # before the store finished would otherwise compute the same key again.
        self._landed: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        # Keys claimed for a refresh (when), until the refresh runs and lands.
        self._claimed: OrderedDict[str, float] = OrderedDict()
        self._failed: OrderedDict[str, float] = OrderedDict()
        self._backoff = backoff
        self._max_keys = max_keys

    def running(self, key: str) -> asyncio.Future[bytes | None] | None:
        return self._running.get(key)

    def landed(self, key: str, now: float) -> bytes | None:
        """The bytes computed for `key` in the last LANDED_SECONDS, if any."""
        found = self._landed.get(key)
        if found is None or not 0 <= now - found[0] < LANDED_SECONDS:
            return None
        return found[1]

    def lead(self, key: str) -> None:
        """This request computes `key` now; `land` must follow (in a `finally`)."""
        self._running[key] = asyncio.get_running_loop().create_future()

    def land(self, key: str, body: bytes | None, now: float) -> None:
        """The computation of `key` is over: `body` for those who waited (None: compute
        your own)."""
        self._claimed.pop(key, None)
        if body is not None:
            self._landed[key] = (now, body)
            self._landed.move_to_end(key)
            while len(self._landed) > LANDED_KEYS:
                self._landed.popitem(last=False)
        future = self._running.pop(key, None)
        if future is not None and not future.done():
            future.set_result(body)

    def may_refresh(self, key: str, now: float) -> bool:
        if key in self._running:
            return False
        for since in (self._claimed, self._failed):
            at = since.get(key)
            if at is not None and 0 <= now - at < self._backoff:
                return False
        return True

    def claim(self, key: str, now: float) -> None:
        """This request will refresh `key` (a claim never landed lapses after `backoff`)."""
        self._note(self._claimed, key, now)

    def failed(self, key: str, now: float) -> bool:
        """Note a failed refresh; True the first time since the key last succeeded."""
        first = key not in self._failed
        self._note(self._failed, key, now)
        return first

    def succeeded(self, key: str) -> None:
        self._failed.pop(key, None)

    def _note(self, times: OrderedDict[str, float], key: str, now: float) -> None:
        times[key] = now
        times.move_to_end(key)
        while len(times) > self._max_keys:
            times.popitem(last=False)


class MemoryCache:
    """In-process cache for the embedded default (one process)."""

    shared = False

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._generations: dict[str, int] = {}
        self._max_entries = max_entries

    async def stamped_get(
        self, scopes: list[str], prefix: str, suffix: str
    ) -> tuple[str, bytes | None] | None:
        stamp = ".".join(str(self._generations.get(s, 0)) for s in scopes)
        return stamp, await self.get(prefix + stamp + suffix)

    async def stamp(self, scopes: list[str]) -> str | None:
        return ".".join(str(self._generations.get(s, 0)) for s in scopes)

    async def claim(self, key: str, seconds: float) -> bool:
        return True

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

# The stamp alone, as _STAMPED_GET makes it (a caller's generation, checked without an
# entry): missing keys are given their tokens here too, so both stamps agree.
_STAMP = """
local out = {}
for i, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  if not value then
    value = ARGV[i]
    redis.call('SET', key, value, 'EX', ARGV[#KEYS + 1])
  end
  out[i] = value
end
return table.concat(out, '.')
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

    shared = True

    def __init__(
        self, client: Redis, *, prefix: str = "", restarts: ServerRestarts | None = None
    ) -> None:
        self._client = client
        self._prefix = f"{prefix}cache:"
        self._epoch_key = f"{self._prefix}epoch"
        self._stamped_get = client.register_script(_STAMPED_GET)
        self._stamp = client.register_script(_STAMP)
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

    async def stamp(self, scopes: list[str]) -> str | None:
        if not await self._usable():
            return None
        keys = [self._epoch_key, *(f"{self._prefix}gen:{s}" for s in scopes)]
        args: list[str | int] = [*(_token() for _ in keys), GENERATION_TTL_SECONDS]
        try:
            stamp = await tracing.redis(self._stamp(keys=keys, args=args), "EVALSHA")
        except (RedisError, OSError) as exc:
            self.link.failed(exc)
            return None
        return stamp.decode() if isinstance(stamp, bytes) else str(stamp)

    async def claim(self, key: str, seconds: float) -> bool:
        if not self.link.up:
            return False
        marker = f"{self._prefix}refreshing:{key}"
        try:
            won = await tracing.redis(
                self._client.set(marker, b"1", px=max(1, int(seconds * 1000)), nx=True), "SET"
            )
        except (RedisError, OSError) as exc:
            self.link.failed(exc)
            return False
        return bool(won)

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
