"""ASGI middleware: request id, client address, body limit, access log and timing."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Awaitable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra import tracing
from infra.logs import log_access
from infra.metrics import Metrics

access_log = logging.getLogger("order_service.access")

_MAX_CACHED_CHILDREN = 64
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def client_ip(scope: Scope, trusted: frozenset[str]) -> str | None:
    """The peer address, or the nearest untrusted hop of X-Forwarded-For when the peer
    is one of our own proxies."""
    peer = (scope.get("client") or (None, None))[0]
    if peer not in trusted:
        return peer
    for name, value in scope.get("headers") or ():
        if name == b"x-forwarded-for":
            hops = [h.strip() for h in value.decode("latin-1").split(",") if h.strip()]
            for hop in reversed(hops):
                if hop not in trusted:
                    return hop
    return peer


class RequestContextMiddleware:
    """Gives every request an id (X-Request-ID taken or generated, echoed back; with
    tracing on, the trace id), the client's address, one access-log line, a duration
    sample and, with tracing on, its server span (`tracing.begin_request`), and refuses
    bodies over `max_body_bytes` with 413, whether declared or streamed (a refusal has its
    id, line, sample and span too). One middleware, not three: each layer is a coroutine
    and a wrapped `send` and `receive` more on every request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        trusted_proxies: frozenset[str],
        max_body_bytes: int,
    ):
        self.app = app
        self.metrics = metrics
        self.trusted = trusted_proxies
        self.max_body_bytes = max_body_bytes
        # The children of the histogram by type, looked up once: `labels()` on every
        # request costs more than the observation.
        self._by_type = {
            t: metrics.operation_duration.labels(t)
            for t in ("query", "mutation", "subscription", "unknown")
        }
        self._by_route: dict[tuple[str, str], Any] = {}

    def _duration_of(self, route: str, method: str) -> Any:
        """The request histogram's child for the route and method, looked up once (a
        client picks the method: past a few dozen pairs, looked up every time)."""
        child = self._by_route.get((route, method))
        if child is None:
            child = self.metrics.request_duration.labels(route, method)
            if len(self._by_route) < _MAX_CACHED_CHILDREN:
                self._by_route[(route, method)] = child
        return child

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine itself: what it only passes on (a websocket, say) runs without a
        # frame of this middleware, kept for as long as a subscription lasts otherwise.
        kind = scope["type"]
        if kind == "http":
            return self._http(scope, receive, send)
        if kind != "websocket":
            return self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        state["request_id"] = _request_id(scope)
        state["client_ip"] = client_ip(scope, self.trusted)
        return self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        # With tracing on, the request's server span (infra/tracing.py) and its id: the
        # request id is the trace id, so the `requestId` of an error (and every log line
        # of the request) leads straight to the trace. Here rather than in an ASGI layer
        # of its own: one coroutine, one wrapped `send`, one walk of the headers less.
        traced = tracing.begin_request(scope, route_label) if tracing.ENABLED else None
        request_id = traced[2] if traced is not None else _request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["client_ip"] = client_ip(scope, self.trusted)
        started = time.perf_counter()
        status = 500
        responded = False
        failure: BaseException | None = None
        max_bytes = self.max_body_bytes
        received = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status = message["status"]
                responded = True
                headers = list(message.get("headers") or [])
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise _BodyTooLarge()
            return message

        try:
            refused = _declared_too_large(scope, max_bytes)
            if refused is not None:
                await _plain(send_with_id, *refused)
                return
            try:
                await self.app(scope, limited_receive, send_with_id)
            except _BodyTooLarge:
                if not responded:
                    await _plain(send_with_id, 413, b"Request body too large")
        except BaseException as exc:
            failure = exc
            raise
        finally:
            try:
                duration = time.perf_counter() - started
                route = route_label(scope["path"])
                self._duration_of(route, scope["method"]).observe(duration)
                if route == "/graphql":
                    op_type = state.get("operation_type", "unknown")
                    by_type = self._by_type.get(op_type) or self.metrics.operation_duration.labels(
                        op_type
                    )
                    by_type.observe(duration)
                extra: dict[str, Any] = {
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(duration * 1000, 2),
                    "client_ip": state.get("client_ip"),
                    "request_id": request_id,
                    "operation": state.get("operation_name"),
                }
                log_access(access_log, scope["method"], scope["path"], status, duration, extra)
            finally:
                if traced is not None:
                    # After the access log: its line carries the trace id.
                    tracing.end_request(traced, status, failure)


def _request_id(scope: Scope) -> str:
    """The client's X-Request-ID when it is a plain token of up to 128 characters (the
    last one sent), or a new one: tracing off, or a request without a server span."""
    request_id = None
    for name, value in scope.get("headers") or ():
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            request_id = candidate if _REQUEST_ID_RE.match(candidate) else None
    return request_id or os.urandom(16).hex()


def route_label(path: str) -> str:
    """The route a path is counted and traced under (a bounded set of labels)."""
    for prefix in ("/graphql", "/payments/webhook", "/payments/simulator", "/admin"):
        if path.startswith(prefix):
            return prefix
    return path if path in ("/health", "/ready", "/metrics", "/") else "other"


def _declared_too_large(scope: Scope, max_bytes: int) -> tuple[int, bytes] | None:
    """The refusal of a request whose Content-Length is over `max_bytes` (413) or not a
    number (400), before anything reads it; a body sent without one is counted as it
    arrives (`limited_receive`)."""
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                return 400, b"Invalid Content-Length"
            if declared > max_bytes:
                return 413, b"Request body too large"
    return None


class _BodyTooLarge(Exception):
    pass


async def _plain(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
