"""Parsing and validating operations: the document limits, each document done once.

One Strawberry extension does what Strawberry's MaxTokensLimiter, ParserCache,
AddValidationRules and ValidationCache did together. Strawberry builds every extension
anew for each request and looks up each one's hooks for each of its four stages with
`inspect`: four extensions cost a trivial query about 20 µs before anything ran.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache

from graphql import ASTValidationRule, DocumentNode, GraphQLError, GraphQLSchema, parse
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

CACHED_DOCUMENTS = 512


class DocumentPolicy:
    """The limits every document is held to, and the caches of parsed and validated
    documents (shared by every request of one schema)."""

    def __init__(self, *, max_tokens: int, rules: tuple[type[ASTValidationRule], ...]) -> None:
        self.max_tokens = max_tokens
        self.rules = rules
        # Keyed by the text (and the token limit): a repeated document is the same node
        # tree every time, which schema/execution.py keeps its compiled plans on.
        self.parse: Callable[..., DocumentNode] = lru_cache(maxsize=CACHED_DOCUMENTS)(parse)
        self.validate: Callable[
            [GraphQLSchema, DocumentNode, tuple[type[ASTValidationRule], ...]],
            list[GraphQLError],
        ] = lru_cache(maxsize=CACHED_DOCUMENTS)(validate_document)

    def extension(self) -> DocumentRules:
        return DocumentRules(self)


class DocumentRules(SchemaExtension):
    """Holds an operation's document to the policy: the token limit while parsing, the
    policy's rules (depth, aliases, introspection) beside GraphQL's own while validating."""

    def __init__(self, policy: DocumentPolicy) -> None:
        self.policy = policy

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        context.parse_options["max_tokens"] = self.policy.max_tokens
        context.validation_rules = context.validation_rules + self.policy.rules
        yield

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        context.graphql_document = self.policy.parse(context.query, **context.parse_options)
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        assert context.graphql_document is not None
        context.pre_execution_errors = self.policy.validate(
            context.schema._schema, context.graphql_document, context.validation_rules
        )
        yield
