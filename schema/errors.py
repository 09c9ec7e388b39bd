"""The one place where failures become `extensions.code`.

Domain errors keep their message and code; GraphQL's own parse and validation errors get
a code of their own; anything else is logged with the request id and masked.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.extensions import SchemaExtension

from infra.logs import failures
from resolvers.errors import DomainError

log = logging.getLogger("order_service.graphql")

MASKED_MESSAGE = "Internal server error."
# graphql-core's did_you_mean(): " Did you mean 'orders' or 'order'?", also with a
# sub-message ("the enum value 'PAID'"). Names cannot hold a question mark.
_SUGGESTION = re.compile(r" ?Did you mean [^?]*\?")


def hide_suggestions(message: str) -> str:
    """The message without graphql-core's "Did you mean ...?" (it names schema members)."""
    return _SUGGESTION.sub("", message) if "Did you mean" in message else message


_TOKEN_LIMIT = re.compile(r"Document contains more than (\d+) tokens\. Parsing aborted\.")


def _token_limit(error: GraphQLError) -> str | None:
    if not isinstance(error, GraphQLSyntaxError) and not error.message.startswith("Syntax Error"):
        return None
    match = _TOKEN_LIMIT.search(error.message)
    return match.group(1) if match else None


def _code_for_graphql_error(error: GraphQLError) -> str:
    if isinstance(error, GraphQLSyntaxError) or error.message.startswith("Syntax Error"):
        # Past the token limit is a document limit like the others, not bad syntax.
        if "Parsing aborted" in error.message:
            return "GRAPHQL_VALIDATION_FAILED"
        return "GRAPHQL_PARSE_FAILED"
    if error.message.startswith("Variable ") or "got invalid value" in error.message:
        return "BAD_USER_INPUT"
    return "GRAPHQL_VALIDATION_FAILED"


def format_error(
    error: GraphQLError, request_id: str | None, *, quiet: bool = False
) -> GraphQLError:
    """The error as a client sees it; `quiet`: without suggestions of schema names."""
    original = error.original_error
    # GraphQLError wraps errors raised in resolvers; unwrap to the first real cause.
    while isinstance(original, GraphQLError) and original.original_error is not None:
        original = original.original_error
    extensions: dict[str, Any]
    if isinstance(original, DomainError):
        message = original.message
        extensions = {"code": original.code, **original.extensions}
    elif (limit := _token_limit(error)) is not None:
        # Strawberry's own parser (FAST_PATHS=off) reports the token limit as bad syntax;
        # answer as server/transport/documents.py does, so both paths give the same bytes.
        return GraphQLError(
            f"The document has more than {limit} tokens.",
            extensions={"code": "GRAPHQL_VALIDATION_FAILED", "limit": "QUERY_MAX_TOKENS"},
        )
    elif original is None or isinstance(original, GraphQLError):
        message = hide_suggestions(error.message) if quiet else error.message
        extensions = {**(error.extensions or {})}
        extensions.setdefault("code", _code_for_graphql_error(error))
    else:
        # One traceback per outage, not per request (infra.logs.RepeatedFailures).
        failures.report(
            log,
            "unexpected error",
            ".".join(str(p) for p in error.path or ()) or "operation",
            original,
            request_id=request_id,
        )
        message = MASKED_MESSAGE
        extensions = {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id}
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions=extensions,
    )


class ErrorCodes(SchemaExtension):
    # Whether messages lose graphql-core's suggestions (validation was told to leave them
    # out; this catches those made while coercing variables, over HTTP and websockets).
    quiet = False

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is None or not result.errors:
            return
        request_id = getattr(self.execution_context.context, "request_id", None)
        result.errors = [format_error(e, request_id, quiet=self.quiet) for e in result.errors]

    def on_stream_result(self, result: Any) -> Iterator[None]:
        # Each result of a subscription is sent as it comes: code its errors now.
        errors = getattr(result, "errors", None)
        if errors:
            request_id = getattr(self.execution_context.context, "request_id", None)
            result.errors = [format_error(e, request_id, quiet=self.quiet) for e in errors]
        yield


class QuietErrorCodes(ErrorCodes):
    """ErrorCodes for production: no suggestions of schema names while introspection is
    off."""

    quiet = True
