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
from schema.documents import CACHED_DOCUMENTS, DocumentPolicy
from schema.errors import ErrorCodes
from schema.execution import FastExecutionContext
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
    # The limiters make a new rule class per instance, and the validation cache is keyed
    # by the rules: made per request they made every request miss the cache and validate
    # again (most of a trivial request's time). Made once here, they are the same objects
    # for every request.
    rules: list[Any] = [
        *QueryDepthLimiter(max_depth=max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=max_aliases).validation_rules,
    ]
    if settings is not None and settings.is_production:
        rules.append(NoSchemaIntrospectionCustomRule)
    extensions: list[Any] = [ErrorCodes]
    fast = settings.fast_paths if settings is not None else True
    if fast:
        # Factories: each request gets fresh extension instances; the policy and its
        # caches are shared.
        extensions.append(DocumentPolicy(max_tokens=max_tokens, rules=tuple(rules)).extension)
    else:
        # FAST_PATHS=off: the same limits and caches from Strawberry's own extensions,
        # and Strawberry's own executor (docs/changing.md, "Library internals we use").
        extensions += [
            lambda: MaxTokensLimiter(max_token_count=max_tokens),
            lambda: AddValidationRules(rules),
            lambda: ParserCache(maxsize=CACHED_DOCUMENTS),
            lambda: ValidationCache(maxsize=CACHED_DOCUMENTS),
        ]
    return OrderSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        execution_context_class=FastExecutionContext if fast else None,
    )


def export_sdl() -> str:
    return build_schema().as_str() + "\n"
