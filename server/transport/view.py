"""The Strawberry ASGI view: builds each request's context and speaks JSON via orjson.

A cached answer (server/transport/cache.py) is served before Strawberry's request handling runs:
on a hit the stored bytes are the whole response, so there is nothing for it to do; on a
miss the context and the cache key found on the way are handed on, not looked up twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson
from cross_web import HTTPException
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import MissingQueryError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData, process_result
from strawberry.http.async_base_view import AsyncHTTPRequestAdapter
from strawberry.http.exceptions import NonJsonMessageReceived, WebSocketDisconnected
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionResult

from infra import tracing
from resolvers.context import RequestContext, Services
from schema.errors import format_error
from server.transport.cache import (
    Lookup,
    Operation,
    OperationLabels,
    cached_answer,
    describe,
    fill,
)
from server.transport.execution import DirectOperation
from server.transport.websocket import (
    ConnectionRegistry,
    LegacyWSHandler,
    LiveLegacyWSHandler,
    LiveTransportWSHandler,
    TransportWSHandler,
)

# No input of the schema takes a long list (an order has at most 50 lines), while turning
# a variable's list into input objects costs Strawberry about 0.1 ms an item on the event
# loop: a 1 MB body of 40 000 lines would hold every other request up for seconds.
MAX_VARIABLE_LIST_ITEMS = 1000
# GraphQL's lexer reads a document a character at a time (about 1 s per MB, twice: once to
# name the operation, once to run it). A document within the token limit is far shorter
# than this unless it carries a huge string or comment.
MAX_DOCUMENT_CHARS = 100_000


def oversized_list(variables: object) -> str | None:
    """The path (`input.items`) of the first list in `variables` longer than
    MAX_VARIABLE_LIST_ITEMS, if any."""
    stack: list[tuple[tuple[str, ...], object]] = [((), variables)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, list):
            if len(value) > MAX_VARIABLE_LIST_ITEMS:
                return ".".join(path)
            stack.extend(((*path, str(i)), v) for i, v in enumerate(value))
        elif isinstance(value, dict):
            stack.extend(((*path, str(k)), v) for k, v in value.items())
    return None


def refusal(query: str | None, variables: object) -> GraphQLError | None:
    """Why a request is refused before it is parsed or run, if it is: too costly to do."""
    if query is not None and len(query) > MAX_DOCUMENT_CHARS:
        return GraphQLError(
            f"The document is longer than {MAX_DOCUMENT_CHARS} characters.",
            extensions={"code": "GRAPHQL_VALIDATION_FAILED"},
        )
    if (path := oversized_list(variables)) is not None:
        message = f"must hold at most {MAX_VARIABLE_LIST_ITEMS} items"
        return GraphQLError(
            f"Invalid input: {path}: {message}",
            extensions={
                "code": "BAD_USER_INPUT",
                "fieldErrors": [{"field": path, "message": message}],
            },
        )
    return None


def _plain_json(headers: Mapping[str, str]) -> bool:
    """A JSON body that asks for one JSON answer (not a multipart or event stream)."""
    content_type = (headers.get("content-type") or "").partition(";")[0].strip().lower()
    if content_type != "application/json":
        return False
    accept = (headers.get("accept") or "").lower()
    return "multipart/mixed" not in accept and "text/event-stream" not in accept


def _request_data(body: dict[str, Any]) -> GraphQLRequestData:
    """Strawberry's checks of a single operation's fields, with its messages."""
    query, variables, extensions = body.get("query"), body.get("variables"), body.get("extensions")
    for name, value, kind in (
        ("query", query, "a string"),
        ("variables", variables, "an object"),
        ("extensions", extensions, "an object"),
    ):
        if value is not None and not isinstance(value, str if name == "query" else dict):
            raise HTTPException(
                400, f"The GraphQL operation's `{name}` must be {kind} or null, if provided."
            )
    return GraphQLRequestData(
        query=query,
        variables=variables,
        operation_name=body.get("operationName"),
        extensions=extensions,
        protocol="http",
    )


_MAX_COUNTERS = 1024
_LOOKED_UP = "cache_lookup"
_DESCRIBED = "described_operation"

GRAPHIQL_NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>GraphiQL not built</title></head>
<body><h1>GraphiQL is not built</h1>
<p>The GraphQL endpoint is here: <code>POST /graphql</code> (JSON
<code>{"query", "variables", "operationName"}</code>), and subscriptions over the websocket
<code>/graphql</code> (<code>graphql-transport-ws</code>).</p>
<p>To use GraphiQL in the browser, build it once: <code>npm --prefix web-admin ci &amp;&amp;
npm --prefix web-admin run build</code>, or start with <code>scripts/start</code>, which does.</p>
</body></html>
"""


def graphiql_page(ide_dir: Path | None) -> Response:
    """The built GraphiQL's index.html, or (503) the page that says how to build it."""
    try:
        html = (ide_dir / "index.html").read_text(encoding="utf-8") if ide_dir else None
    except OSError:
        html = None
    if html is None:
        return HTMLResponse(GRAPHIQL_NOT_BUILT, status_code=503)
    return HTMLResponse(html, headers={"cache-control": "no-cache"})


async def _lookup(
    context: RequestContext, query: str, variables: dict[str, Any] | None, name: str | None
) -> Lookup | None:
    try:
        return await cached_answer(context, query, variables, name)
    except Exception:
        # Looking the caller up failed (the database is down, say). Outside the operation
        # that would be a bare 500; inside it, the same failure is reported as a coded
        # INTERNAL_SERVER_ERROR with the request id, and logged.
        return None


async def _run_direct(
    direct: DirectOperation, context: RequestContext, data: GraphQLRequestData
) -> ExecutionResult:
    """The operation through `direct`, its refusals answered as Strawberry's
    `execute_single` answers them over POST."""
    try:
        return await direct.execute(
            data.query, data.variables, data.operation_name, context, data.extensions
        )
    except CannotGetOperationTypeError as e:
        raise HTTPException(400, e.as_http_error_reason()) from e
    except InvalidOperationTypeError as e:
        raise HTTPException(400, e.as_http_error_reason("POST")) from e
    except MissingQueryError as e:
        raise HTTPException(400, "No GraphQL query found in the request") from e


_JSON_HEADERS = [(b"content-type", b"application/json")]


async def send_json(send: Send, body: bytes) -> None:
    """A 200 with a JSON body, the same messages as Starlette's
    `Response(body, media_type="application/json")` sends."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode()), *_JSON_HEADERS],
        }
    )
    await send({"type": "http.response.body", "body": body})


@dataclass
class EncodedResult(ExecutionResult):
    """A successful answer already encoded: served from the read cache, or just stored."""

    body: bytes = b""


class _EncodedResponse(dict[str, Any]):
    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body


class TextFrameWebSocketAdapter(ASGIWebSocketAdapter):
    """Both websocket protocols speak JSON in text frames; browsers hand binary frames to
    graphql-ws as Blobs, which it cannot parse (it closes with 4400)."""

    async def send_json(self, message: Mapping[str, object]) -> None:
        try:
            await self.ws.send_text(orjson.dumps(message).decode())
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc

    async def iter_json(
        self, *, ignore_parsing_errors: bool = False
    ) -> AsyncGenerator[object, None]:
        # Strawberry's protocol handlers index into every message: one that is JSON but not
        # an operation message raised inside them and dropped the socket without a close
        # code. Refused here like a message that is not JSON: 4400 on graphql-transport-ws,
        # ignored on the legacy protocol.
        async for message in super().iter_json(ignore_parsing_errors=ignore_parsing_errors):
            if is_operation_message(message):
                yield message
            elif not ignore_parsing_errors:
                raise NonJsonMessageReceived


def is_operation_message(message: object) -> bool:
    """An object whose id, if any, is a string and whose payload, if any, is an object
    (a document in it no longer than HTTP allows)."""
    if not isinstance(message, dict):
        return False
    if not isinstance(message.get("id", ""), str):
        return False
    payload = message.get("payload")
    if payload is None:
        return True
    if not isinstance(payload, dict):
        return False
    query = payload.get("query")
    return not (isinstance(query, str) and len(query) > MAX_DOCUMENT_CHARS)


class GraphQLView(GraphQL[RequestContext, None]):
    websocket_adapter_class = TextFrameWebSocketAdapter
    # Websocket admission, limits and token expiry, and the handoff of subscriptions to
    # the feed: see server/transport/websocket.py.
    graphql_transport_ws_handler_class: type[TransportWSHandler] = LiveTransportWSHandler
    graphql_ws_handler_class: type[LegacyWSHandler] = LiveLegacyWSHandler
    # The read cache answered before Strawberry's request handling, and plain JSON bodies
    # read without it (StockGraphQLView: off).
    fast_paths = True

    def __init__(self, *args: Any, ide_dir: Path | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections = ConnectionRegistry()
        self._labels = OperationLabels()
        # graphql_operations_total's children by (name, type, outcome): one view serves
        # one app, whose metrics (app.state.services.metrics) do not change.
        self._counters: dict[tuple[str, str, str], Any] = {}
        self.ide_dir = ide_dir

    async def render_graphql_ide(self, request: Request) -> Response:
        """GraphiQL built from web-admin (vite.graphiql.config.ts), not Strawberry's page,
        which loads it from a CDN: nothing leaves the machine. Unbuilt, a page that says how."""
        return graphiql_page(self.ide_dir)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.fast_paths or scope["type"] != "http" or scope["method"] != "POST":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope=scope, receive=receive)
        try:
            early = await self._cached_response(request)
            if isinstance(early, bytes):
                await send_json(send, early)
                return
            body = await self._direct(request, early)
            if body is not None:
                await send_json(send, body)
                return
            if early is not None:
                response = await self.run(request, context=early)
            else:
                response = await self.run(request)
        except HTTPException as exc:  # as Strawberry's own __call__ answers them
            response = PlainTextResponse(exc.reason, status_code=exc.status_code)
        await response(scope, receive, send)

    async def _direct(self, request: Request, context: RequestContext | None) -> bytes | None:
        """The answer's body, for what nearly every client sends: one operation in a plain
        JSON body. Strawberry's request handling (`run`) is left out: a request adapter,
        a sub-response, the checks for an IDE page, a batch or a stream, and a Response
        object, about 25 µs of a trivial query; the operation runs through the schema's
        DirectOperation. None: anything else, which `run` answers as it always did."""
        direct: DirectOperation | None = getattr(self.schema, "direct", None)
        if direct is None or not _plain_json(request.headers):
            return None
        try:
            data = self.decode_json(await request.body())
        except ValueError:
            return None  # `run` answers it (400)
        if not isinstance(data, dict):
            return None  # a batch
        request_data = _request_data(data)
        if not isinstance(request_data.operation_name, str | None):
            raise HTTPException(
                400, "The GraphQL operation's `operationName` must be a string or null."
            )
        if context is None:
            context = self._new_context(request)
        result = await self.execute_single(
            request,
            cast(AsyncHTTPRequestAdapter, None),
            cast(Response, None),
            context,
            None,
            request_data,
            direct=direct,
        )
        return self.encode_json(await self.process_result(request, result))

    async def _cached_response(self, request: Request) -> bytes | RequestContext | None:
        """The stored answer (the body of a 200) to a cacheable order read, if there is
        one; else the context built on the way (its caller looked up), or None when the
        request is not one."""
        settings = request.app.state.settings
        if settings.cache_ttl_seconds <= 0:
            return None
        if not _plain_json(request.headers):
            return None  # Strawberry answers what is not plain JSON (or wants a stream)
        try:
            data = self.decode_json(await request.body())
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("extensions") is not None:
            return None
        query, variables, name = data.get("query"), data.get("variables"), data.get("operationName")
        if (
            not isinstance(query, str)
            or not isinstance(variables, dict | None)
            or not isinstance(name, str | None)
            or refusal(query, variables) is not None
        ):
            return None
        op = self._describe(request, query, name, settings.query_max_tokens)
        if op is None or not op.cacheable:
            return None
        context = self._new_context(request)
        found = await _lookup(context, query, variables, name)
        state = request.scope.setdefault("state", {})
        if found is None or found.body is None:
            state[_LOOKED_UP] = found
            return context
        label = self._labels(op)
        state["operation_name"] = label  # for the access log
        state["operation_type"] = op.type
        if tracing.active():
            tracing.name_operation(label, op.type)
        context.services.metrics.cache_requests.labels("hit").inc()
        self._count(request, "ok")
        return found.body

    def _describe(
        self, request: Request, query: str | None, name: str | None, max_tokens: int
    ) -> Operation | None:
        """What the operation is, worked out once per request (the read cache's lookup
        and the execution both ask), with the schema's own parse when it has one, so
        that a document is lexed once however it ends."""
        state = request.scope.setdefault("state", {})
        known = state.get(_DESCRIBED)
        if known is not None and known[0] == query and known[1] == name:
            op: Operation | None = known[2]
            return op
        policy = getattr(self.schema, "document_policy", None)
        op = describe(query, name, max_tokens, policy.parse if policy is not None else None)
        state[_DESCRIBED] = (query, name, op)
        return op

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> RequestContext:
        return self._new_context(request)

    def _new_context(self, request: Request | WebSocket) -> RequestContext:
        state = request.scope.get("state") or {}
        services: Services = request.app.state.services
        ctx = RequestContext(
            services=services,
            request_id=state.get("request_id") or os.urandom(16).hex(),
            client_ip=state.get("client_ip"),
        )
        if isinstance(request, Request):
            ctx.authenticate(request.headers.get("authorization"))
            ctx.base_url_of = lambda: str(request.base_url)
        return ctx

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: RequestContext,
        root_value: None,
        request_data: GraphQLRequestData,
        *,
        direct: DirectOperation | None = None,
    ) -> ExecutionResult:
        """Names the operation for logs and metrics, and answers cacheable order reads
        from the read cache (see server/transport/cache.py). `direct`: run the operation
        with it rather than Strawberry's `execute_single` (from `_direct`)."""
        if tracing.active():
            op = self._describe(
                request,
                request_data.query,
                request_data.operation_name,
                context.settings.query_max_tokens,
            )
            label = self._labels(op)
            with tracing.operation_span(label, op.type if op else "unknown"):
                return await self._execute_single(
                    request,
                    request_adapter,
                    sub_response,
                    context,
                    root_value,
                    request_data,
                    direct,
                )
        return await self._execute_single(
            request, request_adapter, sub_response, context, root_value, request_data, direct
        )

    async def _execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: RequestContext,
        root_value: None,
        request_data: GraphQLRequestData,
        direct: DirectOperation | None,
    ) -> ExecutionResult:
        if (error := refusal(request_data.query, request_data.variables)) is not None:
            # Refused before parsing: nothing was measured, but the budget is still said.
            cost = {"requested": None, "limit": context.settings.query_max_cost}
            return ExecutionResult(data=None, errors=[error], extensions={"cost": cost})
        op = self._describe(
            request,
            request_data.query,
            request_data.operation_name,
            context.settings.query_max_tokens,
        )
        if op is not None and op.type == "subscription":
            # Strawberry would run it as a query and fail on the async generator (a 500).
            raise HTTPException(400, "Subscriptions are served over websockets at /graphql.")
        label = self._labels(op)
        context.operation_name = label
        context.operation_type = op.type if op else None
        state = request.scope.setdefault("state", {})
        state["operation_name"] = label  # for the access log
        state["operation_type"] = op.type if op else "unknown"

        async def execute() -> ExecutionResult:
            if direct is not None:
                return await _run_direct(direct, context, request_data)
            return await super(GraphQLView, self).execute_single(
                request, request_adapter, sub_response, context, root_value, request_data
            )

        ttl = context.settings.cache_ttl_seconds
        if ttl <= 0 or op is None or not op.cacheable or request_data.query is None:
            return await execute()
        if _LOOKED_UP in state:  # by _cached_response, on the way here: not again
            found = state.pop(_LOOKED_UP)
        else:
            found = await _lookup(
                context, request_data.query, request_data.variables, request_data.operation_name
            )
        if found is None:
            return await execute()
        if found.body is not None:
            context.services.metrics.cache_requests.labels("hit").inc()
            return EncodedResult(data=None, errors=None, body=found.body)

        async def compute() -> tuple[ExecutionResult, bytes | None]:
            result = await execute()
            if type(result) is not ExecutionResult or result.errors or result.data is None:
                return result, None
            return result, self.encode_json(process_result(result))

        # A miss or a refresh: one computation per key (server/transport/cache.py).
        result, body = await fill(context.services, found, compute, ttl)
        if body is None:
            assert result is not None
            return result
        return EncodedResult(data=result.data if result else None, errors=None, body=body)

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        state = request.scope.get("state") or {}
        if isinstance(result, EncodedResult):
            self._count(request, "ok")
            return cast(GraphQLHTTPResponse, _EncodedResponse(result.body))
        # Parse errors are raised before the operation's extensions run: code them here.
        if result.errors:
            quiet = request.app.state.settings.is_production
            result.errors = [
                format_error(e, state.get("request_id"), quiet=quiet) for e in result.errors
            ]
        outcome = "ok"
        if result.errors:
            outcome = str((result.errors[0].extensions or {}).get("code", "ERROR"))
        self._count(request, outcome)
        return process_result(result)

    def _count(self, request: Request, outcome: str) -> None:
        state = request.scope.get("state") or {}
        key = (
            state.get("operation_name", "unknown"),
            state.get("operation_type", "unknown"),
            outcome,
        )
        counter = self._counters.get(key)
        if counter is None:
            # `labels()` costs more than the increment. The names are capped
            # (OperationLabels), and so are the children kept here.
            services: Services = request.app.state.services
            counter = services.metrics.graphql_operations.labels(*key)
            if len(self._counters) < _MAX_COUNTERS:
                self._counters[key] = counter
        counter.inc()

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        data: GraphQLRequestData | list[GraphQLRequestData] | None = None
        if self.fast_paths and request.method == "POST" and _plain_json(request.headers):
            # What nearly every client sends. Strawberry's own path parses the content
            # type with the email package and looks for a streaming transport on every
            # request: ~25 µs, a tenth of a trivial query.
            body = self.parse_json(await request.get_body())
            if isinstance(body, dict):
                data = _request_data(body)
        if data is None:  # anything else (a batch, a form, a stream): as Strawberry does
            data = await super().parse_http_body(request)
        for item in data if isinstance(data, list) else [data]:
            if not isinstance(item.operation_name, str | None):
                raise HTTPException(
                    400, "The GraphQL operation's `operationName` must be a string or null."
                )
        return data

    def decode_json(self, data: str | bytes) -> object:
        # orjson refuses invalid UTF-8, nesting past 1024 levels, NaN and numbers past a
        # double with a JSONDecodeError (400); the stdlib decoder raised UnicodeDecodeError,
        # RecursionError or ValueError instead, and each became a 500.
        decoded = orjson.loads(data)
        if not isinstance(decoded, dict | list):
            raise json.JSONDecodeError("a GraphQL request is a JSON object", "", 0)
        return decoded

    def encode_json(self, data: object) -> bytes:
        if isinstance(data, _EncodedResponse):
            return data.body
        return orjson.dumps(data)


class StockGraphQLView(GraphQLView):
    """FAST_PATHS=off: the same answers through Strawberry's own request handling and
    websocket handlers (with only the admission rules added), no handoff to the feed."""

    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler
    fast_paths = False
