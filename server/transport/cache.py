"""Whole-response cache for read-only order queries, and what the view knows about an
operation before running it (its name and type, for logs and metrics).

Only a query whose root fields are among `order`, `orders`, `orderStats` and
`paymentDeadLetters` is cached. The key is the caller's
scope (`orders:user:<id>`, or `orders:all` for an admin, the role read from the database),
that scope's generation stamp, taken *before* executing, and a hash of the document,
variables and operation name. Every order write bumps the generations of its scopes
(`events.after_commit`), so after a write returns no instance can find an older answer.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import orjson
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    parse,
)

from models.state import Role
from resolvers.context import RequestContext

# Reads whose answers change only with writes that bump the caller's scope: order writes
# bump the owner's scope and `orders:all` (an admin's); dead-letter writes `orders:all`.
CACHEABLE_ROOT_FIELDS = frozenset({"order", "orders", "orderStats", "paymentDeadLetters"})
_HARMLESS_ROOT_FIELDS = frozenset({"__typename"})
# Documents longer than this are described without remembering them, and never cached.
_MAX_REMEMBERED_DOCUMENT = 20_000
_LABEL_RE = re.compile(r"^[_A-Za-z][_0-9A-Za-z,]{0,99}$")
_MAX_LABELS = 200


@dataclass(frozen=True, slots=True)
class Operation:
    """What a document's selected operation is, as far as parsing alone can tell."""

    name: str | None
    type: str  # "query", "mutation" or "subscription"
    root_fields: frozenset[str]

    @property
    def cacheable(self) -> bool:
        return (
            self.type == "query"
            and bool(self.root_fields & CACHEABLE_ROOT_FIELDS)
            and self.root_fields <= CACHEABLE_ROOT_FIELDS | _HARMLESS_ROOT_FIELDS
        )

    @property
    def label(self) -> str:
        """The operation's name, or its root fields when it has none."""
        return self.name or ",".join(sorted(self.root_fields)) or "anonymous"


Parse = Callable[[str], DocumentNode]


def describe(
    query: str | None, operation_name: str | None, max_tokens: int, parse: Parse | None = None
) -> Operation | None:
    """The operation that `operation_name` picks, or None when parsing cannot tell.
    `parse`: the schema's own (server/transport/documents.py), so that the execution
    does not parse the text again; without it, graphql-core's under the token limit."""
    if not query:
        return None
    parse = parse or _limited_parser(max_tokens)
    if len(query) > _MAX_REMEMBERED_DOCUMENT:
        op = _describe(query, operation_name, parse)
        # Too long to remember, so too long to cache: describe it as not cacheable.
        return Operation(op.name, op.type, frozenset()) if op else None
    return _describe_remembered(query, operation_name, parse)


@lru_cache(maxsize=8)
def _limited_parser(max_tokens: int) -> Parse:
    # One function per limit: it is part of _describe_remembered's key.
    return functools.partial(_parse_limited, max_tokens=max_tokens)


def _parse_limited(text: str, max_tokens: int) -> DocumentNode:
    return parse(text, no_location=True, max_tokens=max_tokens)


@lru_cache(maxsize=256)
def _describe_remembered(query: str, operation_name: str | None, parse: Parse) -> Operation | None:
    return _describe(query, operation_name, parse)


def _describe(query: str, operation_name: str | None, parse: Parse) -> Operation | None:
    try:
        document = parse(query)
    except GraphQLError:
        return None
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name:
        operations = [o for o in operations if o.name and o.name.value == operation_name]
    if len(operations) != 1:
        return None
    op = operations[0]
    fields = _root_fields(document, op.selection_set, set())
    return Operation(op.name.value if op.name else None, op.operation.value, frozenset(fields))


def _root_fields(
    document: DocumentNode, selection_set: SelectionSetNode, seen: set[str]
) -> set[str]:
    names: set[str] = set()
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            names.add(selection.name.value)
        elif isinstance(selection, InlineFragmentNode):
            names |= _root_fields(document, selection.selection_set, seen)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in seen:  # a cycle: invalid, validation will say so
                continue
            seen.add(name)
            for d in document.definitions:
                if isinstance(d, FragmentDefinitionNode) and d.name.value == name:
                    names |= _root_fields(document, d.selection_set, seen)
    return names


class OperationLabels:
    """Operation names as metric labels: clients choose them, so their number is capped."""

    def __init__(self, limit: int = _MAX_LABELS) -> None:
        self._known: set[str] = set()
        self._limit = limit

    def __call__(self, op: Operation | None) -> str:
        if op is None:
            return "unknown"
        label = op.label
        if not _LABEL_RE.match(label):
            return "other"
        if label not in self._known:
            if len(self._known) >= self._limit:
                return "other"
            self._known.add(label)
        return label


async def cached_answer(
    ctx: RequestContext,
    query: str,
    variables: dict[str, object] | None,
    operation_name: str | None,
) -> tuple[str, bytes | None] | None:
    """The key of this caller's answer at the current generation, and the answer stored
    under it if there is one; None: do not cache."""
    user = await ctx.current_user()
    if user is None:
        return None
    scope = "orders:all" if user.role == Role.ADMIN else f"orders:user:{user.id}"
    try:
        request = orjson.dumps(
            [query, variables or {}, operation_name], option=orjson.OPT_SORT_KEYS
        )
    except (TypeError, orjson.JSONEncodeError):  # e.g. an integer beyond 64 bits
        return None
    prefix = f"resp:{scope}:{user.role}:"
    suffix = ":" + hashlib.sha256(request).hexdigest()
    found = await ctx.services.cache.stamped_get([scope], prefix, suffix)
    if found is None:
        ctx.services.metrics.cache_requests.labels("bypass").inc()
        return None
    stamp, body = found
    return prefix + stamp + suffix, body
