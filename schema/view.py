"""The Strawberry ASGI view: builds each request's context and speaks JSON via orjson."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData, process_result
from strawberry.http.async_base_view import AsyncHTTPRequestAdapter
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.types import ExecutionResult

from resolvers.context import RequestContext, Services
from schema.cache import OperationLabels, cache_key, describe
from schema.errors import format_error
from schema.websocket import ConnectionRegistry, LegacyWSHandler, TransportWSHandler


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


class GraphQLView(GraphQL[RequestContext, None]):
    websocket_adapter_class = TextFrameWebSocketAdapter
    # Websocket admission, limits and token expiry: see schema/websocket.py.
    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections = ConnectionRegistry()
        self._labels = OperationLabels()

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> RequestContext:
        state = request.scope.get("state") or {}
        services: Services = request.app.state.services
        ctx = RequestContext(
            services=services,
            request_id=state.get("request_id") or uuid.uuid4().hex,
            client_ip=state.get("client_ip"),
        )
        if isinstance(request, Request):
            ctx.authenticate(request.headers.get("authorization"))
            ctx.base_url = str(request.base_url)
        return ctx

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: RequestContext,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """Names the operation for logs and metrics, and answers cacheable order reads
        from the read cache (see schema/cache.py)."""
        op = describe(
            request_data.query, request_data.operation_name, context.settings.query_max_tokens
        )
        label = self._labels(op)
        context.operation_name = label
        state = request.scope.setdefault("state", {})
        state["operation_name"] = label  # for the access log
        state["operation_type"] = op.type if op else "unknown"

        async def execute() -> ExecutionResult:
            return await super(GraphQLView, self).execute_single(
                request, request_adapter, sub_response, context, root_value, request_data
            )

        ttl = context.settings.cache_ttl_seconds
        if ttl <= 0 or op is None or not op.cacheable or request_data.query is None:
            return await execute()
        key = await cache_key(
            context, request_data.query, request_data.variables, request_data.operation_name
        )
        if key is None:
            return await execute()
        services = context.services
        body = await services.cache.get(key)
        if body is not None:
            services.metrics.cache_requests.labels("hit").inc()
            return EncodedResult(data=None, errors=None, body=body)
        services.metrics.cache_requests.labels("miss").inc()
        result = await execute()
        if type(result) is not ExecutionResult or result.errors or result.data is None:
            return result
        body = self.encode_json(process_result(result))
        await services.cache.set(key, body, ttl)
        return EncodedResult(data=result.data, errors=None, body=body)

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        state = request.scope.get("state") or {}
        if isinstance(result, EncodedResult):
            self._count(request, "ok")
            return cast(GraphQLHTTPResponse, _EncodedResponse(result.body))
        # Parse errors are raised before the operation's extensions run: code them here.
        if result.errors:
            result.errors = [format_error(e, state.get("request_id")) for e in result.errors]
        outcome = "ok"
        if result.errors:
            outcome = str((result.errors[0].extensions or {}).get("code", "ERROR"))
        self._count(request, outcome)
        return process_result(result)

    def _count(self, request: Request, outcome: str) -> None:
        state = request.scope.get("state") or {}
        services: Services = request.app.state.services
        services.metrics.graphql_operations.labels(
            state.get("operation_name", "unknown"), state.get("operation_type", "unknown"), outcome
        ).inc()

    def encode_json(self, data: object) -> bytes:
        if isinstance(data, _EncodedResponse):
            return data.body
        return orjson.dumps(data)
