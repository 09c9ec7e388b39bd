"""The Strawberry ASGI view: builds each request's context and speaks JSON via orjson."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse, process_result
from strawberry.types import ExecutionResult

from resolvers.context import RequestContext, Services
from schema.errors import format_error


def _authorization_param(params: Mapping[str, Any] | None) -> str | None:
    for key, value in (params or {}).items():
        if isinstance(key, str) and key.lower() == "authorization" and isinstance(value, str):
            return value
    return None


class GraphQLView(GraphQL[RequestContext, None]):
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

    async def on_ws_connect(self, context: RequestContext) -> None:
        context.authenticate(_authorization_param(context.connection_params))
        if await context.current_user() is None:
            raise ConnectionRejectionError({"message": "A valid access token is required."})
        return None

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        # Parse errors are raised before the operation's extensions run: code them here.
        if result.errors:
            request_id = (request.scope.get("state") or {}).get("request_id")
            result.errors = [format_error(e, request_id) for e in result.errors]
        return process_result(result)

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)
