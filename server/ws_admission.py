"""Websocket admission: who may hold a socket that has not said who it is yet.

An ASGI guard around the websocket route, so that it holds whichever protocol handlers
serve the socket (ours in server/transport/websocket.py or Strawberry's own). A socket is *pending*
from its upgrade request until the server sends `connection_ack`:

- A pending socket is closed with 4408 ("Connection initialisation timeout") when
  `WS_INIT_TIMEOUT_SECONDS` pass without an acknowledgement, on both protocols (a
  `connection_init` that is refused is closed by the handler with its own code).
- At most `WS_MAX_PENDING_PER_ADDRESS` sockets of one client address, and at most
  `WS_MAX_PENDING_PER_INSTANCE` in all, are pending at once: the upgrade request of one
  more is answered with HTTP 429 (and `Retry-After`) instead of being accepted. A server
  without the ASGI `websocket.http.response` extension refuses the upgrade instead
  (uvicorn answers 403); uvicorn has it with every websocket implementation.

The client address is the one the request middleware found (server/middleware.py). The
guard holds no coroutine frame of its own for the hours a socket lasts: it wraps `send`
(inspecting frames only while the socket is pending) and counts the socket out when the
server's task for the connection ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
from collections import Counter
from collections.abc import Awaitable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.metrics import Metrics
from infra.settings import Settings
from server.middleware import client_ip

INIT_TIMEOUT = (4408, "Connection initialisation timeout")
# The reasons of graphql_ws_refused_total.
PER_ADDRESS = "pending_per_address"
PER_INSTANCE = "pending_per_instance"
TIMED_OUT = "init_timeout"
REASONS = (PER_ADDRESS, PER_INSTANCE, TIMED_OUT)

_PENDING, _READY, _ENDED, _EXPIRED, _GONE = range(5)
_NO_CONTEXT = contextvars.Context()


class WebsocketAdmission:
    """The ASGI app to mount at the websocket route, around the GraphQL view."""

    def __init__(self, app: ASGIApp, *, settings: Settings, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.init_timeout = settings.ws_init_timeout_seconds
        self.max_per_address = settings.ws_max_pending_per_address
        self.max_per_instance = settings.ws_max_pending_per_instance
        self.open = 0
        self.pending = 0
        self.pending_by_address: Counter[str | None] = Counter()
        for reason in REASONS:
            metrics.ws_refused.labels(reason)  # exported at 0 from the start

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "websocket":
            return self.app(scope, receive, send)
        state = scope.get("state") or {}
        address: str | None = state.get("client_ip") or client_ip(scope, frozenset())
        if self.pending_by_address[address] >= self.max_per_address:
            return self._refuse(scope, receive, send, PER_ADDRESS)
        if self.pending >= self.max_per_instance:
            return self._refuse(scope, receive, send, PER_INSTANCE)
        socket = _Socket(self, address, send)
        task = asyncio.current_task()
        if task is None:  # not under an asyncio task of its own: count it out in a frame
            return self._guarded(socket, scope, receive)
        # In a context of no variables rather than a copy of this one: ~100 bytes less
        # for each of the hours-long sockets.
        task.add_done_callback(socket.ended, context=_NO_CONTEXT)
        return self.app(scope, receive, socket.send)

    async def _guarded(self, socket: _Socket, scope: Scope, receive: Receive) -> None:
        try:
            await self.app(scope, receive, socket.send)
        finally:
            socket.ended()

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, reason: str) -> None:
        self.metrics.ws_refused.labels(reason).inc()
        message = await receive()
        if message["type"] != "websocket.connect":
            return  # the client went away meanwhile
        if "websocket.http.response" not in (scope.get("extensions") or {}):
            await send({"type": "websocket.close", "code": 4429})  # a 403 from uvicorn
            return
        whose = "this address" if reason == PER_ADDRESS else "all clients"
        body = (
            f"Too many websockets of {whose} are waiting for their connection_init; retry later.\n"
        ).encode()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(math.ceil(self.init_timeout)).encode()),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})


class _Socket:
    """One admitted socket: pending until the server acknowledges it, counted until its
    task ends."""

    __slots__ = ("_address", "_admission", "_send", "_state", "_timer")

    def __init__(self, admission: WebsocketAdmission, address: str | None, send: Send) -> None:
        self._admission = admission
        self._address = address
        self._send = send
        self._state = _PENDING
        admission.open += 1
        admission.pending += 1
        admission.pending_by_address[address] += 1
        admission.metrics.active_connections.inc()
        admission.metrics.pending_connections.inc()
        loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = loop.call_later(
            admission.init_timeout, self._expire
        )

    def send(self, message: Message) -> Awaitable[None]:
        # Not a coroutine: once the socket is acknowledged, a frame costs one call more.
        state = self._state
        if state == _PENDING:
            kind = message["type"]
            if kind == "websocket.send":
                if _is_ack(message.get("text")):
                    self._settle(_READY)
            elif kind in ("websocket.close", "websocket.http.response.start"):
                self._settle(_ENDED)  # the handler refused it (or closed it) itself
        elif state == _EXPIRED:
            return _after_close(message)
        return self._send(message)

    def _settle(self, state: int) -> None:
        """No longer pending: acknowledged, ended, or timed out."""
        self._state = state
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        admission = self._admission
        admission.pending -= 1
        admission.pending_by_address[self._address] -= 1
        if admission.pending_by_address[self._address] <= 0:
            del admission.pending_by_address[self._address]
        admission.metrics.pending_connections.dec()

    def _expire(self) -> None:
        self._timer = None
        if self._state != _PENDING:
            return
        self._settle(_EXPIRED)
        self._admission.metrics.ws_refused.labels(TIMED_OUT).inc()
        code, reason = INIT_TIMEOUT
        closing = asyncio.ensure_future(
            _quietly(self._send({"type": "websocket.close", "code": code, "reason": reason}))
        )
        _closing.add(closing)
        closing.add_done_callback(_closing.discard)

    def ended(self, _: object = None) -> None:
        """The server's task for the connection is over (by a callback: see __call__)."""
        if self._state == _GONE:
            return
        if self._state == _PENDING:
            self._settle(_ENDED)
        self._state = _GONE
        admission = self._admission
        admission.open -= 1
        admission.metrics.active_connections.dec()


def _is_ack(text: object) -> bool:
    if not isinstance(text, str) or "connection_ack" not in text:
        return False
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return isinstance(message, dict) and message.get("type") == "connection_ack"


def _after_close(message: Message) -> Awaitable[None]:
    """What the handler sends after the guard closed the socket: another close (say, its
    own timeout) is moot; a frame fails as a send to a closed socket does."""
    if message["type"] == "websocket.send":
        return _disconnected()
    return _nothing()


async def _disconnected() -> None:
    # Starlette turns an OSError from `send` into WebSocketDisconnect.
    raise OSError("the websocket was closed: no connection_init in time")


async def _nothing() -> None:
    return None


async def _quietly(send: Awaitable[None]) -> None:
    with contextlib.suppress(Exception):  # the client may be gone already
        await send


# The closes under way (referenced until done).
_closing: set[asyncio.Future[None]] = set()
