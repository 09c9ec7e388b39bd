"""Whole-response cache for read-only order queries, and what the view knows about an
operation before running it (its name and type, for logs and metrics).

Only a query whose root fields are among `order`, `orders`, `orderStats` and
`paymentDeadLetters` is cached. The key is the caller's
scope (`orders:user:<id>`, or `orders:all` for an admin, the role as the database has it:
read, or remembered by the instance under the caller's own generation, stamped in the same
round trip), the generation stamp, taken *before* executing, and a hash of the document,
variables and operation name. Every order write bumps the generations of its scopes
(`events.after_commit`), so after a write returns no instance can find an older answer.
Entries are refreshed before they expire by one request while the others serve them
(`fill`, `infra.cache.Flights`).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import random
import re
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

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
from resolvers.context import RequestContext, Services, caller_scope

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


@dataclass(slots=True)
class Lookup:
    """What the read cache holds for a request: `body` to serve now (a hit); else, with
    `stale`, an entry past its refresh time that this request refreshes (and serves if
    the refresh fails); else a miss."""

    key: str
    body: bytes | None
    stale: bytes | None = None


# An entry is stored with the wall-clock times after which it should be refreshed and
# after which it is gone; the refresh time falls at random 10-25% of the TTL before the
# end, so entries stored together do not all go stale together, and a hot entry is
# refreshed by one request while the others still serve it.
_MAGIC = b"\x00rc1"
_TIMES = struct.Struct(">dd")
_HEADER = len(_MAGIC) + _TIMES.size
REFRESH_WINDOW = (0.10, 0.25)
# How long one instance's claim to refresh an entry holds the other instances off (in
# one instance, a claim or a failed refresh holds the others off: Flights' backoff).
REFRESH_CLAIM_SECONDS = 2.0

log = logging.getLogger("order_service.cache")


def pack(body: bytes, now: float, ttl: float, draw: float) -> bytes:
    """The stored form of `body`: refresh at `now + ttl - window`, `draw` (0-1) placing
    the window within REFRESH_WINDOW; gone at `now + ttl`."""
    low, high = REFRESH_WINDOW
    window = ttl * (low + (high - low) * draw)
    return _MAGIC + _TIMES.pack(now + ttl - window, now + ttl) + body


def unpack(value: bytes) -> tuple[float, float, bytes]:
    """(refresh after, gone after, body); an entry without times (stored by a version
    before them) counts as fresh until the store drops it."""
    if not value.startswith(_MAGIC):
        return float("inf"), float("inf"), value
    fresh_until, expires = _TIMES.unpack_from(value, len(_MAGIC))
    return fresh_until, expires, value[_HEADER:]


async def cached_answer(
    ctx: RequestContext,
    query: str,
    variables: dict[str, object] | None,
    operation_name: str | None,
) -> Lookup | None:
    """The key of this caller's answer at the current generation, and what is stored
    under it; None: do not cache.

    The caller's generation is stamped in the same round trip as the answer's scope: a
    caller the instance remembers (resolvers.context.Callers) costs no statement."""
    if ctx.claims is None:
        return None
    try:
        request = orjson.dumps(
            [query, variables or {}, operation_name], option=orjson.OPT_SORT_KEYS
        )
    except (TypeError, orjson.JSONEncodeError):  # e.g. an integer beyond 64 bits
        return None
    ctx.operation_type = "query"
    suffix = ":" + hashlib.sha256(request).hexdigest()
    services = ctx.services
    user_id = ctx.claims.user_id
    for _ in range(2):
        now = services.clock()
        known = services.callers.recall(user_id, now)
        user = known.user if known is not None else await ctx.current_user()
        if user is None:
            return None
        scope = "orders:all" if user.role == Role.ADMIN else f"orders:user:{user.id}"
        prefix = f"resp:{scope}:{user.role}:"
        found = await services.cache.stamped_get([caller_scope(user_id), scope], prefix, suffix)
        if found is None:
            services.metrics.cache_requests.labels("bypass").inc()
            return None
        stamp, value = found
        if known is not None:
            if not stamp.startswith(known.stamp + "."):
                # The caller changed since the instance read them: read them again.
                services.callers.forget(user_id)
                continue
            known.checked_at = now
            ctx.adopt(user)
        return await _lookup(ctx, prefix + stamp + suffix, value, now)
    return None


async def _lookup(ctx: RequestContext, key: str, value: bytes | None, now: float) -> Lookup:
    if value is None:
        return Lookup(key, None)
    fresh_until, expires, body = unpack(value)
    if now < fresh_until:
        return Lookup(key, body)
    if now >= expires:
        return Lookup(key, None)
    flights = ctx.services.flights
    if not flights.may_refresh(key, now):
        return Lookup(key, body)
    claimed = await ctx.services.cache.claim(key, REFRESH_CLAIM_SECONDS)
    # Checked again: another request here may have claimed it while this one waited.
    if claimed and flights.may_refresh(key, now):
        flights.claim(key, now)
        return Lookup(key, None, stale=body)
    return Lookup(key, body)


R = TypeVar("R")


async def fill(
    services: Services,
    lookup: Lookup,
    compute: Callable[[], Awaitable[tuple[R, bytes | None]]],
    ttl: int,
) -> tuple[R | None, bytes | None]:
    """Answer a miss or a refresh: (the execution's result, the answer's bytes if it is
    one to store). One computation per key per instance: a miss while another request
    computes the same key waits for its bytes; a failed refresh serves the stale ones."""
    flights, key = services.flights, lookup.key
    if lookup.stale is None:
        running = flights.running(key)
        if running is not None:
            body = await asyncio.shield(running)
        else:
            body = flights.landed(key, services.clock())
        if body is not None:
            services.metrics.cache_requests.labels("hit").inc()
            return None, body
    leads = flights.running(key) is None
    if leads:
        flights.lead(key)
    services.metrics.cache_requests.labels("miss").inc()
    body = None
    try:
        result, body = await compute()
        if body is not None:
            now = services.clock()
            await services.cache.set(key, pack(body, now, ttl, random.random()), ttl)
    except Exception:
        if lookup.stale is None:
            raise
        _refresh_failed(services, key, "an exception")
        return None, lookup.stale
    finally:
        if leads:
            flights.land(key, body, services.clock())
    if body is not None:
        flights.succeeded(key)
    elif lookup.stale is not None:
        _refresh_failed(services, key, "errors")
        return None, lookup.stale
    return result, body


def _refresh_failed(services: Services, key: str, what: str) -> None:
    if services.flights.failed(key, services.clock()):
        log.warning(
            "refreshing a cached answer failed (%s): the stored answer is served until it expires",
            what,
            exc_info=what == "an exception",
        )
