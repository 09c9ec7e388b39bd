"""The typed context every use case receives: the app's services and who is asking."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infra.broker import Broker
from infra.cache import Cache
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
            user = await self._load_user()
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
