"""Parsing and validating operations: the document limits, each document done once.

One Strawberry extension does what Strawberry's MaxTokensLimiter, ParserCache,
AddValidationRules and ValidationCache did together. Strawberry builds every extension
anew for each request and looks up each one's hooks for each of its four stages with
`inspect`: four extensions cost a trivial query about 20 µs before anything ran.

Validation starts with schema/limits.py's linear walk: a document over a limit is refused
before any of graphql-core's rules walks it. Each response says what its operation cost
(`extensions.cost`); an operation over the budget is refused before it runs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from graphql import (
    ASTValidationRule,
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    GraphQLSyntaxError,
    Source,
    parse,
    validate,
)
from strawberry.extensions import SchemaExtension
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from infra.memo import Attached, WeightedCache
from schema.limits import (
    CostMeter,
    LimitExceeded,
    Limits,
    check_document,
    cost_error,
    cost_results,
)

CACHED_DOCUMENTS = 512
# The parse cache keeps documents whose texts add up to at most this many characters
# (a client's own operations are a few KB each; see infra/memo.py for why the
# bound is on what the documents weigh and not only on their number), and none longer
# than REMEMBERED_TEXT.
CACHED_TEXT = 256_000
REMEMBERED_TEXT = 20_000
# The outcomes of the last few texts parsed, whatever their size: the view describes an
# operation before Strawberry parses it, and neither lexes it again.
RECENT_TEXTS = 8
# graphql-core stops after this many validation errors (its default is 100): each error
# works out its line and column in the text, and a client reads the first few anyway.
MAX_VALIDATION_ERRORS = 20
# Strawberry's own rules, which its validate_document adds to every validation.
_STRAWBERRY_RULES = (MaybeNullValidationRule, OneOfInputValidationRule)


def token_limit_error(error: GraphQLSyntaxError, max_tokens: int) -> GraphQLError | None:
    """graphql-core's "Document contains more than N tokens" (a syntax error) as the
    limit it is: GRAPHQL_VALIDATION_FAILED, like every other document limit."""
    if "Parsing aborted" not in error.message:
        return None
    return LimitExceeded(f"The document has more than {max_tokens} tokens.", "QUERY_MAX_TOKENS")


@dataclass(frozen=True, slots=True)
class _Failed:
    """A text that does not parse, kept as what makes its error, and raised as a new error
    each time: a raised error keeps the frames that raised it (the whole request's) for as
    long as anything holds the error, and the cache holds it for as long as the text."""

    source: Source
    position: int
    description: str
    max_tokens: int

    def error(self) -> GraphQLError:
        error = GraphQLSyntaxError(self.source, self.position, self.description)
        return token_limit_error(error, self.max_tokens) or error


def _drop_tracebacks(error: BaseException) -> None:
    """A value's error is the one its scalar raised (or wraps it, `original_error`), and a
    raised error's traceback holds the validation's frames: every rule, its visitors and
    context, and the request's stack above them. Kept with the document's validation, they
    outlived the request by as long as the document (thousands of objects each, in reach
    of every full garbage collection)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        e.__traceback__ = None
        pending += [getattr(e, "original_error", None), e.__cause__, e.__context__]


class DocumentPolicy:
    """The limits every document is held to, and the caches of parsed and validated
    documents and of costs (shared by every request of one schema)."""

    def __init__(
        self,
        *,
        max_tokens: int,
        limits: Limits,
        rules: tuple[type[ASTValidationRule], ...],
        hide_suggestions: bool = False,
    ) -> None:
        self.max_tokens = max_tokens
        self.limits = limits
        self.rules = rules
        self.hide_suggestions = hide_suggestions
        self._meter: CostMeter | None = None
        # Keyed by the text: a repeated document is the same node tree every time, which
        # server/transport/execution.py keeps its compiled plans on.
        self._parsed: WeightedCache[DocumentNode | _Failed] = WeightedCache(
            max_entries=CACHED_DOCUMENTS, max_weight=CACHED_TEXT
        )
        self._recent: OrderedDict[str, DocumentNode | _Failed] = OrderedDict()
        # A document's validation lives as long as the document does.
        self._validated: Attached[dict[Any, list[GraphQLError]]] = Attached(dict)

    def parse(self, text: str) -> DocumentNode:
        """`text` parsed under the token limit, once however often it is asked for: the
        view's description of the operation and the execution share one parse, and a
        text that failed is not lexed again. A failure is raised as GraphQL errors are
        (the token limit as GRAPHQL_VALIDATION_FAILED)."""
        outcome = self._recent.get(text)
        if outcome is None:
            outcome = self._parsed.get(text)
            if outcome is None:
                outcome = self._parse(text)
                if len(text) <= REMEMBERED_TEXT:
                    self._parsed.put(text, outcome)
            self._recent[text] = outcome
            if len(self._recent) > RECENT_TEXTS:
                self._recent.popitem(last=False)
        if isinstance(outcome, _Failed):
            raise outcome.error()
        return outcome

    def _parse(self, text: str) -> DocumentNode | _Failed:
        try:
            return parse(text, max_tokens=self.max_tokens)
        except GraphQLSyntaxError as error:
            return _Failed(
                error.source or Source(text),
                next(iter(error.positions or ()), 0),
                error.description,
                self.max_tokens,
            )

    def validate(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        rules: tuple[type[ASTValidationRule], ...],
    ) -> list[GraphQLError]:
        """The document's errors under the limits, GraphQL's rules and `rules`: worked
        out once per document (a cached document is the same object every time)."""
        known = self._validated.of(document)
        errors = known.get((schema, rules))
        if errors is None:
            errors = self._validate(schema, document, rules)
            for error in errors:
                _drop_tracebacks(error)
            # An error on the document node itself would keep the document alive.
            if not any(node is document for e in errors for node in e.nodes or ()):
                known[schema, rules] = errors
        return errors

    def _validate(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        rules: tuple[type[ASTValidationRule], ...],
    ) -> list[GraphQLError]:
        limited: list[GraphQLError] = list(check_document(document, self.limits))
        if limited:
            return limited
        return validate(
            schema,
            document,
            (*rules, *_STRAWBERRY_RULES),
            max_errors=MAX_VALIDATION_ERRORS,
            hide_suggestions=self.hide_suggestions,
        )

    def cost(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation: str | None,
        variables: Any,
        text: str | None = None,
    ) -> int:
        if self._meter is None or self._meter.schema is not schema:
            self._meter = CostMeter(schema)
        variables = variables if isinstance(variables, dict) else None
        return self._meter.cost(document, operation, variables, text)

    def extension(self) -> DocumentRules:
        return DocumentRules(self)


class DocumentRules(SchemaExtension):
    """Holds an operation's document to the policy: the token limit while parsing, the
    limits and the policy's rules beside GraphQL's own while validating, then the cost."""

    def __init__(self, policy: DocumentPolicy) -> None:
        self.policy = policy
        self.requested: int | None = None

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        context.parse_options["max_tokens"] = self.policy.max_tokens
        context.validation_rules = context.validation_rules + self.policy.rules
        yield

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        assert context.query is not None
        context.graphql_document = self.policy.parse(context.query)
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        assert context.graphql_document is not None
        errors = self.policy.validate(
            context.schema._schema, context.graphql_document, context.validation_rules
        )
        cost = self.policy.cost(
            context.schema._schema,
            context.graphql_document,
            context.operation_name,
            context.variables,
            context.query,
        )
        self.requested = cost
        if not errors and cost > self.policy.limits.max_cost:
            errors = [cost_error(cost, self.policy.limits.max_cost)]
        context.pre_execution_errors = errors
        yield

    def get_results(self) -> dict[str, Any]:
        return cost_results(self.execution_context, self.requested, self.policy.limits.max_cost)
