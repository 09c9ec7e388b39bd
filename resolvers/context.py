"""The typed context every use case receives: the app's services and who is asking."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infra.broker import Broker
from infra.cache import Cache, Flights
from infra.limiter import Limiter
from infra.metrics import Metrics
from infra.provider import PaymentProviderClient
from infra.security import TokenClaims, decode_access_token
from infra.settings import Settings
from models import queries
from models.db import Database
from models.rows import UserRow
from models.state import Role
from resolvers.errors import Forbidden, Unauthenticated

# A websocket keeps one context for hours: its user (and role) is read again this often.
USER_RECHECK_SECONDS = 30.0
# Rechecks of one user by many contexts within this long share one read.
USER_RECHECK_SHARED_SECONDS = 1.0
_MAX_SHARED_RECHECKS = 10_000


# A remembered caller whose generation was found unchanged is used without asking Redis
# again for this long; a role change waits as long after its bump before it returns, so
# that from then on no instance uses what it remembered (resolvers.accounts.change_role).
CALLER_CHECK_SECONDS = 1.0


def caller_scope(user_id: int) -> str:
    """The cache generation a change to this user (their role) replaces."""
    return f"user:{user_id}"


@dataclass(slots=True)
class Remembered:
    user: UserRow
    stamp: str  # the caller's generation stamp taken before `user` was read
    read_at: float  # when the read started (Services.clock)
    # When the last look at the generation that found `stamp` started.
    checked_at: float = float("-inf")

    def checked_lately(self, now: float) -> bool:
        return 0 <= now - self.checked_at < CALLER_CHECK_SECONDS


class Callers:
    """Who recent callers are, per instance, so that a query need not read its caller's
    row: an entry is used while the caller's generation (`caller_scope`, replaced by a
    role change through the service, on every instance at once) is the one it was read
    under, and for at most `seconds` after the read, which bounds a change made behind
    the service's back (SQL, or a bump lost while Redis was away). LRU, `max_entries`."""

    def __init__(self, seconds: float, max_entries: int = 10_000) -> None:
        self.seconds = seconds
        self._entries: OrderedDict[int, Remembered] = OrderedDict()
        self._max_entries = max_entries

    def recall(self, user_id: int, now: float) -> Remembered | None:
        entry = self._entries.get(user_id)
        if entry is None:
            return None
        if not 0 <= now - entry.read_at <= self.seconds:
            del self._entries[user_id]
            return None
        self._entries.move_to_end(user_id)
        return entry

    def remember(self, user: UserRow, stamp: str, read_at: float) -> None:
        if self.seconds <= 0:
            return
        self._entries[user.id] = Remembered(user, stamp, read_at, checked_at=read_at)
        self._entries.move_to_end(user.id)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def read_fresh(self, user_id: int, user: UserRow | None, read_at: float) -> None:
        """A read of the row made anyway (a write reads its caller): it replaces what is
        remembered, under the same stamp (the row is newer than the stamp)."""
        entry = self._entries.get(user_id)
        if entry is None:
            return
        if user is None:
            del self._entries[user_id]
        elif read_at >= entry.read_at:
            entry.user, entry.read_at = user, read_at

    def forget(self, user_id: int) -> None:
        self._entries.pop(user_id, None)

    def __len__(self) -> int:
        return len(self._entries)


class PublishedMarks:
    """Ids of outbox rows published on the request path and not yet marked published
    (resolvers.events marks them in batches)."""

    def __init__(self) -> None:
        self._ids: list[int] = []
        self._pending = asyncio.Event()

    def add(self, ids: list[int]) -> None:
        if ids:
            self._ids.extend(ids)
            self._pending.set()

    def take(self) -> list[int]:
        ids, self._ids = self._ids, []
        self._pending.clear()
        return ids

    async def wait(self) -> None:
        await self._pending.wait()


@dataclass(eq=False)
class Services:
    """Everything long-lived that the app builds once at startup."""

    settings: Settings
    db: Database
    broker: Broker
    cache: Cache
    limiter: Limiter
    metrics: Metrics
    # None: the built-in simulated provider (PAYMENT_PROVIDER_URL unset).
    provider: PaymentProviderClient | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    published: PublishedMarks = field(default_factory=PublishedMarks)
    # The latest recheck read per user id, with when it started (see current_user).
    user_rechecks: dict[int, tuple[float, asyncio.Future[UserRow | None]]] = field(
        default_factory=dict
    )
    # Wall-clock time for what instances share (cache entries) and what they remember;
    # tests travel in time by replacing it.
    clock: Callable[[], float] = time.time
    callers: Callers = field(init=False)
    # Read-cache computations in flight, one per key (server/transport/cache.py).
    flights: Flights = field(default_factory=Flights)

    def __post_init__(self) -> None:
        self.callers = Callers(self.settings.user_cache_seconds)


@dataclass(eq=False)
class RequestContext:
    services: Services
    request_id: str
    client_ip: str | None = None
    # Where the request came in (scheme, host, root path), worked out only when a use case
    # asks: building it cost every request ~15 µs, and only initiatePayment reads it.
    base_url_of: Callable[[], str] | None = None
    claims: TokenClaims | None = None
    connection_params: dict[str, Any] | None = None
    operation_name: str | None = None
    # "query" for an HTTP query: it may use the instance's remembered caller (Callers);
    # anything else (a write, a websocket) reads its caller's row.
    operation_type: str | None = None
    # Users named by the events this request read (resolvers/history.py), by id.
    actors: dict[int, UserRow | None] | None = None
    _user: asyncio.Future[UserRow | None] | None = None
    _user_loaded_at: float = 0.0

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def base_url(self) -> str | None:
        return self.base_url_of() if self.base_url_of is not None else None

    def authenticate(self, authorization: str | None) -> None:
        """Take the claims of a `Bearer` token; anything else counts as no token."""
        self.claims = None
        self._user = None
        if not authorization:
            return
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return
        self.claims = decode_access_token(
            token.strip(), secret=self.settings.secret_key.get_secret_value()
        )

    async def current_user(self) -> UserRow | None:
        """The user the token names, as the database has it now (role included)."""
        if self._user is None:
            return await self._first_load()
        if self._user_is_stale():
            self._user_loaded_at, self._user = self._recheck()
        return await asyncio.shield(self._user)

    async def _first_load(self) -> UserRow | None:
        """The first lookup runs in the caller's own task (a task of its own cost more
        than the query); sibling fields resolving meanwhile wait for its answer."""
        loaded: asyncio.Future[UserRow | None] = asyncio.get_running_loop().create_future()
        self._user, self._user_loaded_at = loaded, time.monotonic()
        try:
            user = await self._caller()
        except asyncio.CancelledError:
            loaded.cancel()
            raise
        except Exception as exc:
            loaded.set_exception(exc)
            loaded.exception()  # retrieved: the caller raises it; siblings may not exist
            raise
        loaded.set_result(user)
        return user

    def _recheck(self) -> tuple[float, asyncio.Future[UserRow | None]]:
        """Read a long-lived context's user again, sharing the read with every other
        context of the same user that rechecks at about the same time: an event reaching
        10,000 subscriptions of one admin made 10,000 identical queries at once (the pool
        timed out), now one."""
        now = time.monotonic()
        if self.claims is None:
            return now, asyncio.ensure_future(self._load_user())
        rechecks = self.services.user_rechecks
        shared = rechecks.get(self.claims.user_id)
        if shared is not None:
            started, read = shared
            window = min(USER_RECHECK_SHARED_SECONDS, USER_RECHECK_SECONDS)
            failed = read.done() and (read.cancelled() or read.exception() is not None)
            if not failed and (not read.done() or now - started <= window):
                return started, read
        if len(rechecks) >= _MAX_SHARED_RECHECKS:
            rechecks.clear()
        read = asyncio.ensure_future(self._load_user())
        rechecks[self.claims.user_id] = (now, read)
        return now, read

    def _user_is_stale(self) -> bool:
        loaded = self._user
        if loaded is None or not loaded.done():
            return False
        failed = loaded.cancelled() or loaded.exception() is not None
        return failed or time.monotonic() - self._user_loaded_at > USER_RECHECK_SECONDS

    def adopt(self, user: UserRow) -> None:
        """Take `user` as this request's caller (checked by the read cache's lookup)."""
        loaded: asyncio.Future[UserRow | None] = asyncio.get_running_loop().create_future()
        loaded.set_result(user)
        self._user, self._user_loaded_at = loaded, time.monotonic()

    async def _caller(self) -> UserRow | None:
        """The caller, remembered by the instance if this is a query and its generation
        still holds (looked at once per CALLER_CHECK_SECONDS: a cache round trip, no
        statement), else read from the database."""
        if self.claims is None:
            return None
        services, user_id = self.services, self.claims.user_id
        callers = services.callers
        read_at = services.clock()
        if self.operation_type != "query" or callers.seconds <= 0:
            user = await self._load_user()
            callers.read_fresh(user_id, user, read_at)
            return user
        known = callers.recall(user_id, read_at)
        if known is not None and known.checked_lately(read_at):
            return known.user
        stamp = await services.cache.stamp([caller_scope(user_id)])
        if stamp is None:  # the shared store is away: nothing tells a change, so read
            return await self._load_user()
        if known is not None and known.stamp == stamp:
            known.checked_at = read_at
            return known.user
        user = await self._load_user()
        if user is None:
            callers.forget(user_id)
        else:
            callers.remember(user, stamp, read_at)
        return user

    async def _load_user(self) -> UserRow | None:
        if self.claims is None:
            return None
        async with self.services.db.connect() as conn:
            return await queries.user_by_id(conn, self.claims.user_id)

    async def require_user(self) -> UserRow:
        user = await self.current_user()
        if user is None:
            raise Unauthenticated()
        return user

    async def require_admin(self) -> UserRow:
        user = await self.require_user()
        if user.role != Role.ADMIN:
            raise Forbidden("Only an admin can do this.")
        return user
