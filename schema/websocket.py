"""Websocket connections for subscriptions, on both protocols Strawberry speaks.

What both protocols share is in `ConnectionGuard`; the two handler classes only say how
each protocol refuses a connection. Close codes:

- 4403 Forbidden: the `connection_init` payload has no valid token (missing, bad
  signature, expired), or names a user who no longer exists. Strawberry's legacy
  `graphql-ws` handler would answer `connection_error` and close with 1011; here it
  sends `connection_error` and then closes with 4403 as well.
- 4429 Too many connections: the user already holds `WS_MAX_CONNECTIONS_PER_USER` open
  connections to this process. Also used for a second `connection_init`.
- 4401 Token expired: the connection is closed when the token it was opened with
  expires; the client reconnects with a fresh one.
- 4408 Connection initialisation timeout: no `connection_init` in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage as TransportInitMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import (
    ConnectionInitMessage as LegacyInitMessage,
)

from resolvers.context import RequestContext

FORBIDDEN = (4403, "Forbidden")
TOO_MANY_CONNECTIONS = (4429, "Too many connections")
TOO_MANY_INITS = (4429, "Too many initialisation requests")
TOKEN_EXPIRED = (4401, "Token expired")
INIT_TIMEOUT = (4408, "Connection initialisation timeout")


def authorization_param(params: Mapping[str, Any] | None) -> str | None:
    """The `authorization` entry of a connection_init payload, whatever its case."""
    for key, value in (params or {}).items():
        if isinstance(key, str) and key.lower() == "authorization" and isinstance(value, str):
            return value
    return None


class ConnectionRegistry:
    """Open connections of this process, per user (one registry per app)."""

    def __init__(self) -> None:
        self.open = 0
        self._per_user: Counter[int] = Counter()

    def reserve(self, user_id: int, limit: int) -> bool:
        if self._per_user[user_id] >= limit:
            return False
        self._per_user[user_id] += 1
        return True

    def release(self, user_id: int) -> None:
        self._per_user[user_id] -= 1
        if self._per_user[user_id] <= 0:
            del self._per_user[user_id]


class ConnectionGuard:
    """One connection's admission, gauges and token expiry, whichever the protocol."""

    def __init__(self, registry: ConnectionRegistry, context: RequestContext, close: Any) -> None:
        self._registry = registry
        self._context = context
        self._close = close
        self._user_id: int | None = None
        self._timer: asyncio.Task[None] | None = None
        self.initialised = False

    def opened(self, init_timeout: float | None = None) -> None:
        self._registry.open += 1
        self._context.services.metrics.active_connections.inc()
        if init_timeout is not None:
            self._timer = asyncio.create_task(self._close_after(init_timeout, INIT_TIMEOUT))

    async def admit(self, params: dict[str, Any] | None) -> tuple[int, str] | None:
        """None if the connection may go on, else the (code, reason) to close it with."""
        if self.initialised:
            return TOO_MANY_INITS
        self.initialised = True
        self._cancel_timer()
        ctx = self._context
        ctx.connection_params = params
        ctx.authenticate(authorization_param(params))
        user = await ctx.current_user()
        if user is None or user.id is None or ctx.claims is None:
            return FORBIDDEN
        if not self._registry.reserve(user.id, ctx.settings.ws_max_connections_per_user):
            return TOO_MANY_CONNECTIONS
        self._user_id = user.id
        lifetime = ctx.claims.expires_at - time.time()
        self._timer = asyncio.create_task(self._close_after(lifetime, TOKEN_EXPIRED))
        return None

    async def closed(self) -> None:
        self._cancel_timer()
        if self._user_id is not None:
            self._registry.release(self._user_id)
            self._user_id = None
        self._registry.open -= 1
        self._context.services.metrics.active_connections.dec()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _close_after(self, seconds: float, why: tuple[int, str]) -> None:
        await asyncio.sleep(max(0.0, seconds))
        with contextlib.suppress(Exception):
            await self._close(*why)


class TransportWSHandler(BaseGraphQLTransportWSHandler[RequestContext, None]):
    """`graphql-transport-ws`, with the admission rules above."""

    async def handle(self) -> None:
        self.guard = ConnectionGuard(_registry(self.view), self.context, self.websocket.close)
        self.guard.opened()
        try:
            await super().handle()
        finally:
            await self.guard.closed()

    async def handle_connection_init(self, message: TransportInitMessage) -> None:
        # Strawberry's own, but for who may connect and the close codes of a refusal.
        if self.connection_timed_out:
            return
        if self.connection_init_timeout_task:
            self.connection_init_timeout_task.cancel()
        payload = message.get("payload") or {}
        if not isinstance(payload, dict):
            await self.websocket.close(code=4400, reason="Invalid connection init payload")
            return
        self.connection_init_received = True
        refusal = await self.guard.admit(payload)
        if refusal is not None:
            await self.websocket.close(*refusal)
            return
        await self.send_message({"type": "connection_ack"})
        self.connection_acknowledged = True


class LegacyWSHandler(BaseGraphQLWSHandler[RequestContext, None]):
    """The legacy `graphql-ws` (subscriptions-transport-ws) protocol, same rules."""

    async def handle(self) -> None:
        self.guard = ConnectionGuard(_registry(self.view), self.context, self.websocket.close)
        # This protocol has no initialisation timeout of its own.
        self.guard.opened(init_timeout=self.view.connection_init_wait_timeout.total_seconds())
        try:
            await super().handle()
        finally:
            await self.guard.closed()

    async def handle_connection_init(self, message: LegacyInitMessage) -> None:
        payload = message.get("payload")
        if payload is not None and not isinstance(payload, dict):
            await self.send_message({"type": "connection_error"})
            await self.websocket.close(code=4400, reason="Invalid connection init payload")
            return
        refusal = await self.guard.admit(payload)
        if refusal is not None:
            code, reason = refusal
            await self.send_message({"type": "connection_error", "payload": {"message": reason}})
            await self.websocket.close(code=code, reason=reason)
            return
        await self.send_message({"type": "connection_ack"})
        self.connection_acknowledged = True
        if self.keep_alive:
            self.keep_alive_task = asyncio.create_task(self.handle_keep_alive())


def _registry(view: Any) -> ConnectionRegistry:
    registry: ConnectionRegistry = view.connections
    return registry
