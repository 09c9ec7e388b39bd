"""The GraphQL schema: types, roots, limits and error codes. Thin glue to resolvers/."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.types import ExecutionContext

from infra.settings import Settings
from schema.errors import ErrorCodes
from schema.mutation import Mutation
from schema.query import Query
from schema.subscription import Subscription


class OrderSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Errors are classified and logged once, with the request id, by ErrorCodes.
        return None


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    max_depth = settings.query_max_depth if settings else 15
    max_tokens = settings.query_max_tokens if settings else 4000
    max_aliases = settings.query_max_aliases if settings else 30
    extensions: list[Any] = [
        ErrorCodes,
        MaxTokensLimiter(max_token_count=max_tokens),
        ParserCache(maxsize=512),
        QueryDepthLimiter(max_depth=max_depth),
        MaxAliasesLimiter(max_alias_count=max_aliases),
        ValidationCache(maxsize=512),
    ]
    if settings is not None and settings.is_production:
        extensions.append(AddValidationRules([NoSchemaIntrospectionCustomRule]))
    return OrderSchema(
        query=Query, mutation=Mutation, subscription=Subscription, extensions=extensions
    )


def export_sdl() -> str:
    return build_schema().as_str() + "\n"
