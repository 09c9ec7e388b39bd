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
- 4408 Connection initialisation timeout: no `connection_ack` in time. Enforced, with the
  caps on sockets not acknowledged yet and the open-socket gauges, by the admission guard
  around the websocket route (server/ws_admission.py), whichever the handlers.

`TransportWSHandler` and `LegacyWSHandler` add only those rules to Strawberry's handlers,
through their public hooks. The `Live...` handlers (FAST_PATHS=on) also name each
operation of their task (`server.transport.live.serve`), so that a subscription can be written to
the socket by the status feed instead of by a task of its own; for that they reach into
Strawberry's bookkeeping (`operation.task`, `tasks`: docs/changing.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import Coroutine, Mapping
from typing import Any, cast

from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage as TransportInitMessage,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    NextMessagePayload,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import (
    ConnectionInitMessage as LegacyInitMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.types import (
    DataMessagePayload,
)

from resolvers.context import RequestContext
from server.transport import live

FORBIDDEN = (4403, "Forbidden")
TOO_MANY_CONNECTIONS = (4429, "Too many connections")
TOO_MANY_INITS = (4429, "Too many initialisation requests")
TOKEN_EXPIRED = (4401, "Token expired")


def authorization_param(params: Mapping[str, Any] | None) -> str | None:
    """The `authorization` entry of a connection_init payload, whatever its case."""
    for key, value in (params or {}).items():
        if isinstance(key, str) and key.lower() == "authorization" and isinstance(value, str):
            return value
    return None


class ConnectionRegistry:
    """Open connections of this process per user, their deadlines, and the subscription
    groups they share (one registry per app)."""

    def __init__(self) -> None:
        self._per_user: Counter[int] = Counter()
        self.deadlines = Deadlines()
        self.groups = live.Groups()

    def reserve(self, user_id: int, limit: int) -> bool:
        if self._per_user[user_id] >= limit:
            return False
        self._per_user[user_id] += 1
        return True

    def release(self, user_id: int) -> None:
        self._per_user[user_id] -= 1
        if self._per_user[user_id] <= 0:
            del self._per_user[user_id]


class Deadlines:
    """When connections are to be closed (their token expires), by whole second of the
    wall clock, under one timer: a timer (or a sleeping task) per connection is a good
    part of an idle connection's memory."""

    def __init__(self) -> None:
        self._due: dict[int, set[ConnectionGuard]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._next: int | None = None

    def add(self, guard: ConnectionGuard, at: float) -> int:
        second = math.ceil(at)
        self._due.setdefault(second, set()).add(guard)
        if self._next is None or second < self._next:
            self._schedule(second)
        return second

    def remove(self, guard: ConnectionGuard, second: int) -> None:
        due = self._due.get(second)
        if due is not None:
            due.discard(guard)
            if not due:
                del self._due[second]

    def _schedule(self, second: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._next = second
        self._timer = loop.call_later(max(0.0, second - time.time()), self._tick)

    def _tick(self) -> None:
        self._timer = self._next = None
        now = time.time()
        for second in sorted(s for s in self._due if s <= now):
            for guard in self._due.pop(second):
                guard.expire()
        if self._due:
            self._schedule(min(self._due))


class ConnectionGuard:
    """One connection's admission (its token, its user's connection limit) and the
    deadline of its token, whichever the protocol."""

    __slots__ = (
        "_close",
        "_closing",
        "_context",
        "_deadline",
        "_registry",
        "_user_id",
        "initialised",
    )

    def __init__(self, registry: ConnectionRegistry, context: RequestContext, close: Any) -> None:
        self._registry = registry
        self._context = context
        self._close = close
        self._user_id: int | None = None
        self._deadline: int | None = None
        self._closing: asyncio.Task[None] | None = None
        self.initialised = False

    async def admit(self, params: dict[str, Any] | None) -> tuple[int, str] | None:
        """None if the connection may go on, else the (code, reason) to close it with."""
        if self.initialised:
            return TOO_MANY_INITS
        self.initialised = True
        ctx = self._context
        ctx.authenticate(authorization_param(params))
        # The rest of the payload, for resolvers; the token, once read into the claims,
        # is not kept for the hours a connection lasts.
        ctx.connection_params = {
            k: v for k, v in (params or {}).items() if str(k).lower() != "authorization"
        }
        user = await ctx.current_user()
        if user is None or user.id is None or ctx.claims is None:
            return FORBIDDEN
        if not self._registry.reserve(user.id, ctx.settings.ws_max_connections_per_user):
            return TOO_MANY_CONNECTIONS
        self._user_id = user.id
        self._arm(ctx.claims.expires_at)
        return None

    async def closed(self) -> None:
        self._disarm()
        if self._user_id is not None:
            self._registry.release(self._user_id)
            self._user_id = None

    def expire(self) -> None:
        """The token expired: close the connection."""
        self._deadline = None
        self._closing = asyncio.ensure_future(self._close_quietly(TOKEN_EXPIRED))

    def _arm(self, at: float) -> None:
        self._disarm()
        self._deadline = self._registry.deadlines.add(self, at)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._registry.deadlines.remove(self, self._deadline)
            self._deadline = None

    async def _close_quietly(self, why: tuple[int, str]) -> None:
        with contextlib.suppress(Exception):
            await self._close(*why)


def _live_operation(
    handler: Any, op_id: str, protocol: str, query: str, name: str | None, variables: Any
) -> live.LiveOperation | None:
    websocket = getattr(handler.websocket, "ws", None)  # Starlette's, under the adapter
    if websocket is None or not isinstance(variables, dict | None):
        return None
    return live.LiveOperation(
        op_id, protocol, websocket, query, name, variables, _registry(handler.view).groups
    )


class _Parking:
    """Operations handed off to the feed (server/transport/live.py), kept by id without a task of
    their own until the client ends them (`unpark`) or the feed does (`finish` then sends
    their last frames, as Strawberry would at the end of a stream)."""

    # Made on first use: most connections of a process have no parked operation.
    _parked: dict[str, live.Parked] | None = None

    def park(self, op_id: str, parked: live.Parked, token: object) -> None:
        if self._parked is None:
            self._parked = {}
        self._parked[op_id] = parked
        parked.park(self, op_id, token)

    def unpark(self, op_id: str, parked: live.Parked | None = None) -> bool:
        """Unsubscribe a parked operation; whether there was one (that one, if given)."""
        mine = self._parked
        if not mine or op_id not in mine or (parked is not None and mine[op_id] is not parked):
            return False
        mine.pop(op_id).close()
        return True

    def parked_ended(self, parked: live.Parked, error: Exception | None) -> None:
        op_id, token = parked.op_id, parked.token
        if self.unpark(op_id, parked):
            task = asyncio.ensure_future(_quietly(self.finish(op_id, token, error)))
            _finishing.add(task)
            task.add_done_callback(_finishing.discard)

    async def finish(self, op_id: str, token: object, error: Exception | None) -> None:
        raise NotImplementedError


class TransportWSHandler(BaseGraphQLTransportWSHandler[RequestContext, None]):
    """`graphql-transport-ws`, with the admission rules above."""

    # Strawberry's first and last steps of a connection, rather than a `handle` of our
    # own around its own: one coroutine frame less per connection, for hours.
    def on_request_accepted(self) -> None:
        # Not Strawberry's initialisation timeout task: the admission guard has the
        # deadline (server/ws_admission.py).
        self.guard = ConnectionGuard(_registry(self.view), self.context, self.websocket.close)

    async def shutdown(self) -> None:
        try:
            await super().shutdown()
        finally:
            await self.guard.closed()

    async def handle_connection_init(self, message: TransportInitMessage) -> None:
        # Strawberry's own, but for who may connect and the close codes of a refusal.
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


class LiveTransportWSHandler(_Parking, TransportWSHandler):
    """The same, with subscriptions handed off to the feed (server/transport/live.py)."""

    async def run_operation(self, operation: Operation[RequestContext, None]) -> None:
        named = _live_operation(
            self,
            operation.id,
            GRAPHQL_TRANSPORT_WS_PROTOCOL,
            operation.query,
            operation.operation_name,
            operation.variables,
        )
        if named is None:
            await super().run_operation(operation)
            return
        live.serve(named)
        try:
            await super().run_operation(operation)
            return
        except live.Handoff as handoff:
            # Out of the except block before anything else: the exception's traceback
            # holds the frames that the handoff unwound.
            parked = handoff.parked
        # The operation stays in Strawberry's bookkeeping (it counts towards the limit;
        # a complete or the disconnect finds it), but not its task, which ends here: a
        # finished coroutine keeps the memory of its frames for as long as it is held.
        operation.task = None
        self.park(operation.id, parked, operation)

    async def cleanup_operation(self, operation_id: str) -> None:
        self.unpark(operation_id)
        operation = self.operations.get(operation_id)
        if operation is not None and operation.task is None:
            del self.operations[operation_id]  # Strawberry's, but for a task to cancel
            return
        await super().cleanup_operation(operation_id)

    async def finish(self, op_id: str, token: object, error: Exception | None) -> None:
        operation = self.operations.get(op_id)
        if operation is None or operation is not token:
            return  # the client ended it meanwhile
        if error is not None:
            payload = cast(NextMessagePayload, live.error_payload(error, self.context.request_id))
            await operation.send_operation_message(
                {"id": op_id, "type": "next", "payload": payload}
            )
        if self.operations.get(op_id) is operation:
            await operation.send_operation_message({"id": op_id, "type": "complete"})


class LegacyWSHandler(BaseGraphQLWSHandler[RequestContext, None]):
    """The legacy `graphql-ws` (subscriptions-transport-ws) protocol, same rules."""

    async def handle(self) -> None:
        self.guard = ConnectionGuard(_registry(self.view), self.context, self.websocket.close)
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


class LiveLegacyWSHandler(_Parking, LegacyWSHandler):
    """The same, with subscriptions handed off to the feed (server/transport/live.py)."""

    async def handle_async_results(
        self,
        operation_id: str,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        named = _live_operation(
            self, operation_id, GRAPHQL_WS_PROTOCOL, query, operation_name, variables
        )
        if named is None:
            await super().handle_async_results(operation_id, query, operation_name, variables)
            return
        live.serve(named)
        try:
            await super().handle_async_results(operation_id, query, operation_name, variables)
            return
        except live.Handoff as handoff:
            parked = handoff.parked  # out of the except block: see TransportWSHandler
        # Strawberry forgot the operation on the way out; this (ending) task stands for it
        # again, so that it counts towards the limit and a stop or the disconnect find it.
        task = asyncio.current_task()
        assert task is not None
        self.tasks[operation_id] = task
        self.park(operation_id, parked, task)

    async def cleanup_operation(self, operation_id: str) -> None:
        if self.unpark(operation_id):
            self.tasks.pop(operation_id, None)
            # As Strawberry answers a stop; on a disconnect, to nobody (and the other
            # operations are still cleaned up).
            await _quietly(self.send_message({"type": "complete", "id": operation_id}))
            return
        await super().cleanup_operation(operation_id)

    async def finish(self, op_id: str, token: object, error: Exception | None) -> None:
        if self.tasks.get(op_id) is not token:
            return  # stopped meanwhile
        del self.tasks[op_id]
        if error is not None:
            encoded = live.error_payload(error, self.context.request_id)
            payload = cast(DataMessagePayload, encoded)
            await self.send_message({"type": "data", "id": op_id, "payload": payload})
        await self.send_message({"type": "complete", "id": op_id})


# The tasks that send the last frames of operations the feed ended (referenced until done).
_finishing: set[asyncio.Task[None]] = set()


async def _quietly(send: Coroutine[Any, Any, None]) -> None:
    # The client may have gone meanwhile: nothing is left to tell it.
    with contextlib.suppress(Exception):
        await send


def _registry(view: Any) -> ConnectionRegistry:
    registry: ConnectionRegistry = view.connections
    return registry
