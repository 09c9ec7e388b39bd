"""The schema assembled for one app: the roots from schema/, the document limits, error
codes and caches, and (FAST_PATHS=on) the transport's fast executor and live feed."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions import (
    AddValidationRules,
    MaxTokensLimiter,
    ParserCache,
    ValidationCache,
)
from strawberry.types import ExecutionContext

from infra.settings import Settings
from schema.errors import ErrorCodes, QuietErrorCodes
from schema.feed import LiveFeed
from schema.limits import Limits, cost_extension, document_rules
from schema.mutation import Mutation
from schema.query import Query
from schema.subscription import Subscription
from server.transport import live
from server.transport.documents import CACHED_DOCUMENTS, DocumentPolicy
from server.transport.execution import DirectOperation, FastExecutionContext


class OrderSchema(strawberry.Schema):
    # Subscription fields hand their websocket operations to this feed (schema/feed.py);
    # None: each operation streams its own events.
    live_feed: LiveFeed | None = None
    # The parse the view describes operations with (FAST_PATHS=on): the execution's own.
    document_policy: DocumentPolicy | None = None
    # How the view runs an HTTP operation without Strawberry's extension runner
    # (FAST_PATHS=on); None: through `execute`.
    direct: DirectOperation | None = None

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Errors are classified and logged once, with the request id, by ErrorCodes.
        return None


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    max_tokens = settings.query_max_tokens if settings else 4000
    # Depth, aliases, size and cost: schema/limits.py, checked before GraphQL's own rules.
    # The validation cache is keyed by the rules: they are the same objects for every
    # request.
    rules: list[Any] = []
    production = settings is not None and settings.is_production
    if production:
        rules.append(NoSchemaIntrospectionCustomRule)
    limits = Limits.from_settings(settings)
    # Factories: each request gets fresh extension instances; the policies and their
    # caches are shared.
    extensions: list[Any] = [QuietErrorCodes if production else ErrorCodes]
    fast = settings.fast_paths if settings is not None else True
    documents: DocumentPolicy | None = None
    if fast:
        documents = DocumentPolicy(
            max_tokens=max_tokens,
            limits=limits,
            rules=tuple(rules),
            # With introspection off, no "Did you mean 'orders'?" either.
            hide_suggestions=production,
        )
        extensions.append(documents.extension)
    else:
        # FAST_PATHS=off: the same limits, cost and caches from Strawberry's own
        # extensions, and Strawberry's own executor (docs/changing.md, "Library internals
        # we use"). Suggestions are stripped when errors are formatted (QuietErrorCodes).
        stock_rules = [*document_rules(limits), *rules]
        extensions += [
            lambda: MaxTokensLimiter(max_token_count=max_tokens),
            lambda: AddValidationRules(stock_rules),
            lambda: ParserCache(maxsize=CACHED_DOCUMENTS),
            lambda: ValidationCache(maxsize=CACHED_DOCUMENTS),
            cost_extension(limits),
        ]
    schema = OrderSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        execution_context_class=FastExecutionContext if fast else None,
    )
    schema.live_feed = live.FEED if fast else None
    schema.document_policy = documents
    if documents is not None:
        # Valid only for exactly these extensions (ErrorCodes, DocumentRules) and no
        # schema directives: see DirectOperation.
        schema.direct = DirectOperation(schema, documents, quiet=production)
    return schema


def export_sdl() -> str:
    return build_schema().as_str() + "\n"
